/**
 * The left-sidebar panel "Remote clusters": one card per cluster, grouped by notebook (the
 * open notebook's first), with the TTL countdown, Extend / Shut down, the pods table with
 * telemetry, and the events. Plain DOM, re-rendered from the store's state; a one-second tick
 * updates the countdowns and ages in place.
 */

import { Dialog, showDialog, showErrorMessage } from '@jupyterlab/apputils';
import { ISignal } from '@lumino/signaling';
import { Widget } from '@lumino/widgets';

import {
  clusterStatus,
  countdown,
  formatAge,
  formatBytes,
  formatDuration,
  formatPercent,
  notebookLabel,
  ratioPercent,
  sparklinePoints
} from './format';
import { serviceUrl } from './api';
import { ClusterStore } from './model';
import { groupByNotebook, ICard, IState, mapsOf, mergeEvents } from './state';
import type {
  ICluster,
  IClusterEvent,
  IGpuSample,
  IMapSummary,
  IPodRow,
  IService,
  ITelemetrySample
} from './types';

/** Durations offered by the Extend button's menu, in seconds; the first is the default. */
export const EXTEND_CHOICES = [3600, 1800, 2 * 3600, 4 * 3600, 8 * 3600];
/** Events shown per card before "more". */
const EVENTS_SHOWN = 8;

export interface IPanelOptions {
  store: ClusterStore;
  /** Open rank `rank`'s log of cluster `id` in the main area. */
  openLogs: (cluster: ICluster, pod: IPodRow) => void;
  /** The path of the notebook in focus, or null. */
  currentNotebook: () => string | null;
  /** Admins' "All users" toggle and view (admin.ts); both null for everyone else. */
  admin?: IAdminHook;
}

export interface IAdminHook {
  /** Whether the view is offered: `unknown` until the server answered, then `yes` or `no`. */
  available: () => string;
  toggle: () => HTMLElement | null;
  /** Every user's clusters, shown instead of the per-user cards while toggled on. */
  view: () => HTMLElement | null;
  changed: ISignal<unknown, unknown>;
}

type Attrs = { [key: string]: string | number | boolean | undefined | null };

/** A DOM element with attributes and children ("" and null children are skipped). */
export function h(
  tag: string,
  attrs: Attrs = {},
  ...children: (Node | string | null | undefined | false)[]
): HTMLElement {
  const el = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (v === undefined || v === null || v === false) {
      continue;
    }
    if (k === 'className') {
      el.className = String(v);
    } else {
      el.setAttribute(k, v === true ? '' : String(v));
    }
  }
  for (const c of children) {
    if (c === null || c === undefined || c === false || c === '') {
      continue;
    }
    el.append(typeof c === 'string' ? document.createTextNode(c) : c);
  }
  return el;
}

const SVG = 'http://www.w3.org/2000/svg';

function sparkline(values: number[], label: string): Element | null {
  const points = sparklinePoints(values, 60, 16, 100);
  if (!points) {
    return null;
  }
  const svg = document.createElementNS(SVG, 'svg');
  svg.setAttribute('class', 'jp-kremote-sparkline');
  svg.setAttribute('viewBox', '0 0 60 16');
  svg.setAttribute('width', '60');
  svg.setAttribute('height', '16');
  svg.setAttribute('role', 'img');
  svg.setAttribute('aria-label', label);
  const line = document.createElementNS(SVG, 'polyline');
  line.setAttribute('points', points);
  svg.append(line);
  return svg;
}

function bar(percent: number, text: string, label: string, kind: string): HTMLElement {
  const fill = h('span', {
    className: `jp-kremote-bar-fill jp-kremote-bar-${kind}`,
    style: `width: ${percent.toFixed(0)}%`
  });
  return h(
    'span',
    {
      className: `jp-kremote-bar jp-kremote-bar-${kind}-box`,
      role: 'meter',
      'aria-label': label,
      'aria-valuemin': 0,
      'aria-valuemax': 100,
      'aria-valuenow': Math.round(percent),
      title: `${label}: ${text}`
    },
    fill,
    h('span', { className: 'jp-kremote-bar-text' }, text)
  );
}

export class ClustersPanel extends Widget {
  constructor(options: IPanelOptions) {
    super();
    this._store = options.store;
    this._openLogs = options.openLogs;
    this._currentNotebook = options.currentNotebook;
    this._admin = options.admin ?? null;
    this._admin?.changed.connect(this._render, this);
    this.id = 'jupyter-kremote-panel';
    this.addClass('jp-kremote-panel');
    this.title.caption = 'Remote clusters';
    this._store.changed.connect(this._render, this);
    this._render();
    this._tick = window.setInterval(() => this._updateTimes(), 1000);
  }

  dispose(): void {
    if (this.isDisposed) {
      return;
    }
    window.clearInterval(this._tick);
    this._store.changed.disconnect(this._render, this);
    this._admin?.changed.disconnect(this._render, this);
    super.dispose();
  }

  /** Re-render (also called when the notebook in focus changes). */
  refresh(): void {
    this._render();
  }

  private _render(): void {
    const state = this._store.state;
    const active = document.activeElement as HTMLElement | null;
    const focusKey =
      active && this.node.contains(active) ? active.getAttribute('data-key') : null;
    const scroll = this.node.scrollTop;

    const body = h('div', { className: 'jp-kremote-body' });
    body.append(this._header(state));
    const allUsers = this._admin?.view() ?? null;
    if (allUsers) {
      body.append(allUsers);
    } else if (state.connection === 'error') {
      body.append(this._errorState(state.error ?? ''));
    } else if (state.connection === 'connecting' && !Object.keys(state.clusters).length) {
      body.append(h('div', { className: 'jp-kremote-loading' }, 'Loading clusters…'));
    } else if (!Object.keys(state.clusters).length && !Object.keys(state.tasks).length) {
      body.append(this._emptyState());
    } else {
      for (const group of groupByNotebook(state, this._currentNotebook())) {
        const section = h(
          'section',
          { className: 'jp-kremote-group', 'aria-label': notebookLabel(group.notebook) },
          h('h3', { className: 'jp-kremote-group-title', title: group.notebook },
            notebookLabel(group.notebook))
        );
        for (const card of group.cards) {
          section.append(this._card(card, state));
        }
        // maps of clusters the server does not hold (the Python API's), one box per cluster
        for (const name of [...new Set(group.maps.map(m => m.cluster))].sort()) {
          section.append(h('article',
            { className: 'jp-kremote-card jp-kremote-maps-card', 'aria-label': `maps of ${name}` },
            h('div', { className: 'jp-kremote-card-head' },
              h('span', { className: 'jp-kremote-name' }, name),
              h('span', { className: 'jp-kremote-status' }, 'Python API cluster')),
            this._maps(group.maps.filter(m => m.cluster === name))));
        }
        body.append(section);
      }
    }
    this.node.replaceChildren(body);
    this.node.dataset.admin = this._admin?.available() ?? 'no';
    this.node.scrollTop = scroll;
    if (focusKey) {
      const again = this.node.querySelector<HTMLElement>(
        `[data-key="${CSS.escape(focusKey)}"]`
      );
      again?.focus();
    }
  }

  private _header(state: IState): HTMLElement {
    const live = {
      connecting: ['connecting…', 'Connecting to the server extension'],
      live: ['live', 'Updates arrive live over a WebSocket'],
      polling: ['polling', 'The live stream is down: refreshing every few seconds and reconnecting'],
      error: ['offline', state.error ?? '']
    }[state.connection];
    return h(
      'header',
      { className: 'jp-kremote-header' },
      h('h2', { className: 'jp-kremote-title' }, 'Remote clusters'),
      h(
        'span',
        {
          className: `jp-kremote-connection jp-kremote-connection-${state.connection}`,
          title: live[1]
        },
        live[0]
      ),
      this._admin?.toggle() ?? null
    );
  }

  private _emptyState(): HTMLElement {
    return h(
      'div',
      { className: 'jp-kremote-empty' },
      h('p', {}, 'No remote clusters yet. In a notebook, run:'),
      h('pre', { className: 'jp-kremote-howto' }, '%load_ext jupyter_kremote\n%%remote'),
      h('p', { className: 'jp-kremote-hint' },
        'The first %%remote cell starts a cluster; it shows up here with its pods, events and logs.')
    );
  }

  private _errorState(message: string): HTMLElement {
    const retry = h(
      'button',
      { className: 'jp-kremote-button jp-mod-styled', type: 'button', 'data-key': 'retry' },
      'Retry'
    );
    retry.addEventListener('click', () => void this._store.refresh());
    return h(
      'div',
      { className: 'jp-kremote-error', role: 'alert' },
      h('p', { className: 'jp-kremote-error-title' }, 'Remote clusters are unavailable'),
      h('p', { className: 'jp-kremote-error-message' }, message),
      retry
    );
  }

  private _card(card: ICard, state: IState): HTMLElement {
    const c = card.main;
    const several = card.groups.length > 1 || (c.group ?? 'main') !== 'main';
    const now = Date.now() / 1000;
    const cd = countdown(c.state === 'ended' ? null : c.deadline, now);
    const ttl = h(
      'span',
      {
        className: `jp-kremote-ttl${cd.warning ? ' jp-kremote-warn' : ''}`,
        'data-deadline': c.state === 'ended' ? '' : c.deadline ?? '',
        'aria-label': 'time to live',
        title: c.deadline ? `ends at ${new Date(c.deadline * 1000).toLocaleString()}` : ''
      },
      cd.text
    );
    const badge = clusterStatus(c);
    const status = h(
      'span',
      { className: `jp-kremote-status jp-kremote-status-${c.state}`, title: badge.title },
      badge.text
    );
    const meta = h(
      'dl',
      { className: 'jp-kremote-meta' },
      h('dt', {}, 'backend'),
      h('dd', { className: 'jp-kremote-backend' }, c.namespace ? `${c.backend} (${c.namespace})` : c.backend),
      h('dt', {}, 'templates'),
      h('dd', { className: 'jp-kremote-templates' },
        (c.templates ?? []).length ? (c.templates ?? []).join(', ') : '—'),
      h('dt', {}, 'pods'),
      h('dd', { className: 'jp-kremote-pod-count' }, several
        ? `${card.groups.reduce((n, g) => n + g.count, 0)} in ${card.groups.length} ` +
          `group${card.groups.length === 1 ? '' : 's'}`
        : `${c.count}${c.gpu ? ` × ${c.gpu} GPU` : ''}`),
      h('dt', {}, 'age'),
      h('dd', { className: 'jp-kremote-age', 'data-since': c.created }, formatAge(c.created, now))
    );
    const services = card.groups.flatMap(g => g.services ?? []);
    if (services.length) {
      meta.append(h('dt', {}, 'services'), this._services(services));
    }
    const el = h(
      'article',
      {
        className: `jp-kremote-card jp-kremote-card-${c.state}`,
        'data-cluster': c.id,
        'aria-label': `cluster ${card.name}`
      },
      h(
        'div',
        { className: 'jp-kremote-card-head' },
        h('span', { className: 'jp-kremote-name', title: card.groups.map(g => g.id).join(', ') },
          card.name),
        status,
        ttl
      ),
      meta,
      this._actions(c, card.groups)
    );
    if (c.state === 'starting' && c.evicted) { // the stage moves on to the queue line
      el.append(h('p', { className: 'jp-kremote-evicted' }, c.evicted));
    }
    for (const g of card.groups) {
      for (const w of g.warnings ?? []) {
        el.append(h('p', { className: 'jp-kremote-cluster-warning' }, w));
      }
    }
    if (several) {
      for (const g of card.groups) {
        el.append(this._podGroup(g, state));
      }
    } else {
      el.append(this._pods(c, state));
    }
    const maps = mapsOf(state, card);
    if (maps.length) {
      el.append(this._maps(maps));
    }
    const events = card.groups.reduce(
      (all: IClusterEvent[], g) => mergeEvents(all, g.events ?? []), []);
    el.append(this._events({ ...c, events }));
    return el;
  }

  /** Links to rank 0's services (TensorBoard...), opened in a new tab through this server. */
  private _services(services: IService[]): HTMLElement {
    const dd = h('dd', { className: 'jp-kremote-services' });
    services.forEach((s, i) => {
      if (i) {
        dd.append(', ');
      }
      dd.append(
        h(
          'a',
          {
            className: 'jp-kremote-service',
            href: serviceUrl(s.path),
            target: '_blank',
            rel: 'noopener',
            'data-service': s.name,
            title: `rank 0's port ${s.port}, through this Jupyter server`
          },
          s.name
        )
      );
    });
    return dd;
  }

  /** Parallel maps, newest first: done / running / failed counts and a progress bar. */
  private _maps(maps: IMapSummary[]): HTMLElement {
    const list = h('ol', { className: 'jp-kremote-maps', 'aria-label': 'maps' });
    for (const m of [...maps].reverse()) {
      const pct = m.total ? (100 * m.done) / m.total : 100;
      list.append(
        h(
          'li',
          { className: `jp-kremote-map jp-kremote-map-${m.state}`, 'data-function': m.function },
          h('span', { className: 'jp-kremote-map-function', title: m.function }, m.function),
          bar(pct, `${m.done}/${m.total}`, `${m.function} done`, 'util'),
          h('span', { className: 'jp-kremote-map-counts' },
            `done ${m.done}/${m.total} · running ${m.running} · failed ${m.failed}`),
          h('span', { className: 'jp-kremote-map-state' }, m.state)
        )
      );
    }
    return h('details', { className: 'jp-kremote-maps-box', open: true },
      h('summary', {}, `Maps (${maps.length})`), list);
  }

  /** One pod group of a card: a heading (name, pods, image, resources), then its pods. */
  private _podGroup(g: ICluster, state: IState): HTMLElement {
    const name = g.group ?? 'main';
    const resources = [
      g.cpu ? `${g.cpu} CPU` : '',
      g.mem ? `${g.mem} mem` : '',
      g.gpu ? `${g.gpu} GPU` : ''
    ].filter(Boolean).join(', ');
    const details = [
      `${g.count} pod${g.count === 1 ? '' : 's'}`,
      g.image ?? '',
      resources ? `${resources} each` : '',
      g.state === 'running' ? '' : g.state
    ].filter(Boolean).join(' · ');
    return h(
      'section',
      { className: 'jp-kremote-podgroup', 'data-group': name, 'aria-label': `group ${name}` },
      h('h4', { className: 'jp-kremote-podgroup-title', title: g.id },
        h('span', { className: 'jp-kremote-podgroup-name' }, name),
        h('span', { className: 'jp-kremote-podgroup-details' }, details)),
      this._pods(g, state)
    );
  }

  private _actions(c: ICluster, records: ICluster[]): HTMLElement {
    const ended = c.state !== 'running';
    const chosen = this._extendBy.get(c.id) ?? EXTEND_CHOICES[0];
    const select = h('select', {
      className: 'jp-kremote-extend-by',
      'aria-label': 'extend by',
      'data-key': `${c.id}:extend-by`,
      disabled: ended
    }) as HTMLSelectElement;
    for (const s of [...EXTEND_CHOICES].sort((a, b) => a - b)) {
      select.append(h('option', { value: s, selected: s === chosen }, `+${formatDuration(s)}`));
    }
    select.addEventListener('change', () => this._extendBy.set(c.id, Number(select.value)));
    const extend = h(
      'button',
      {
        className: 'jp-kremote-button jp-kremote-extend jp-mod-styled',
        type: 'button',
        'data-key': `${c.id}:extend`,
        title: `Move the deadline ${formatDuration(chosen)} later`,
        disabled: ended
      },
      'Extend'
    );
    extend.addEventListener('click', () => void this._extend(c, records, extend));
    const shutdown = h(
      'button',
      {
        className: 'jp-kremote-button jp-kremote-shutdown jp-mod-styled jp-mod-warn',
        type: 'button',
        'data-key': `${c.id}:shutdown`,
        title: 'Stop every agent of this cluster'
      },
      c.state === 'ended' ? 'Remove' : 'Shut down'
    );
    shutdown.addEventListener('click', () => void this._shutdown(c, records));
    return h('div', { className: 'jp-kremote-actions' }, extend, select, shutdown);
  }

  /** Extend every group of the card: a cluster has one TTL. */
  private async _extend(c: ICluster, records: ICluster[], button: HTMLElement): Promise<void> {
    const seconds = this._extendBy.get(c.id) ?? EXTEND_CHOICES[0];
    button.setAttribute('disabled', '');
    try {
      for (const r of records.filter(r => r.state === 'running')) {
        await this._store.extend(r.id, seconds);
      }
    } catch (error) {
      void showErrorMessage(`Could not extend ${c.name}`, (error as Error).message ?? error);
    } finally {
      button.removeAttribute('disabled');
    }
  }

  private async _shutdown(c: ICluster, records: ICluster[]): Promise<void> {
    const pods = records.reduce((n, r) => n + (r.pods?.length || r.count), 0);
    const name = String(c.family || c.name);
    const result = await showDialog({
      title: `Shut down cluster "${name}"?`,
      body:
        c.state === 'ended'
          ? `Forget the ended cluster ${name}.`
          : `This stops its ${pods} agent${pods === 1 ? '' : 's'} (${c.backend}); their variables ` +
            'and files are lost. The notebook can start a new cluster with %%remote.',
      buttons: [Dialog.cancelButton(), Dialog.warnButton({ label: 'Shut down' })]
    });
    if (!result.button.accept) {
      return;
    }
    try {
      for (const r of records) {
        await this._store.shutdown(r.id);
      }
    } catch (error) {
      void showErrorMessage(`Could not shut down ${name}`, (error as Error).message ?? error);
    }
  }

  private _pods(c: ICluster, state: IState): HTMLElement {
    const now = Date.now() / 1000;
    const pods = [...(c.pods ?? [])].sort((a, b) => a.rank - b.rank);
    if (!pods.length) {
      return h('p', { className: 'jp-kremote-nopods' },
        c.state === 'starting' ? (c.stage || 'Starting pods…') : 'No pods.');
    }
    const head = h(
      'tr',
      {},
      ...['name', 'rank', 'phase', 'node', 'restarts', 'age', ''].map(t =>
        h('th', { scope: 'col' }, t)
      )
    );
    const table = h('table', { className: 'jp-kremote-pods', 'aria-label': 'pods' },
      h('thead', {}, head));
    const tbody = h('tbody');
    for (const p of pods) {
      const history = state.telemetry[c.id]?.[String(p.rank)] ?? [];
      const logs = h(
        'button',
        {
          className: 'jp-kremote-button jp-kremote-logs jp-mod-styled',
          type: 'button',
          'data-key': `${c.id}:logs:${p.rank}`,
          title: `Open the log of rank ${p.rank}`,
          'aria-label': `logs of rank ${p.rank}`,
          disabled: c.state === 'ended'
        },
        'Logs'
      );
      logs.addEventListener('click', () => this._openLogs(c, p));
      const phase = p.phase ?? '';
      tbody.append(
        h(
          'tr',
          { className: 'jp-kremote-pod', 'data-rank': p.rank },
          h('td', { className: 'jp-kremote-pod-name', title: p.name ?? '' }, p.name ?? `rank-${p.rank}`),
          h('td', { className: 'jp-kremote-pod-rank' }, String(p.rank)),
          h('td', { className: `jp-kremote-pod-phase jp-kremote-phase-${phase.toLowerCase()}`,
            title: p.state ? `agent: ${p.state}` : '' },
            phase || (p.state ?? '')),
          h('td', { className: 'jp-kremote-pod-node', title: p.node ?? '' }, p.node ?? ''),
          h('td', { className: 'jp-kremote-pod-restarts' },
            p.restarts === undefined ? '' : String(p.restarts)),
          h('td', { className: 'jp-kremote-pod-age jp-kremote-age', 'data-since': p.started ?? '' },
            formatAge(p.started, now)),
          h('td', { className: 'jp-kremote-pod-actions' }, logs)
        )
      );
      // telemetry on a row of its own, so that the table fits a narrow sidebar
      const usage = this._usage(p.telemetry ?? null);
      const gpus = this._gpus(p.telemetry ?? null, history);
      if (usage || gpus) {
        tbody.append(
          h(
            'tr',
            { className: 'jp-kremote-pod-telemetry', 'data-rank': p.rank },
            h('td', { colspan: 7 }, usage, gpus)
          )
        );
      }
    }
    table.append(tbody);
    return h('div', { className: 'jp-kremote-pods-wrap' }, table);
  }

  private _usage(sample: ITelemetrySample | null): HTMLElement | null {
    if (!sample) {
      return null;
    }
    const cpu = formatPercent(sample.cpu_percent);
    const mem = sample.mem_bytes === undefined
      ? ''
      : `${formatBytes(sample.mem_bytes)}${sample.mem_total_bytes ? ` / ${formatBytes(sample.mem_total_bytes)}` : ''}`;
    return h(
      'div',
      { className: 'jp-kremote-usage' },
      cpu && h('span', { className: 'jp-kremote-cpu', title: 'CPU (100% = one core)' }, `CPU ${cpu}`),
      mem && h('span', { className: 'jp-kremote-mem', title: 'resident memory / limit' }, `mem ${mem}`)
    );
  }

  /** GPU bars and sparklines; nothing at all where the sample has no `gpus`. */
  private _gpus(sample: ITelemetrySample | null, history: ITelemetrySample[]): HTMLElement | null {
    const gpus: IGpuSample[] | undefined = sample?.gpus;
    if (!gpus || !gpus.length) {
      return null;
    }
    const box = h('div', { className: 'jp-kremote-gpus' });
    for (const g of gpus) {
      const util = g.util_percent ?? 0;
      const memPct = ratioPercent(g.mem_used_bytes, g.mem_total_bytes);
      const series = history
        .map(s => s.gpus?.find(x => x.index === g.index)?.util_percent)
        .filter((v): v is number => typeof v === 'number');
      box.append(
        h(
          'div',
          { className: 'jp-kremote-gpu', title: g.name ?? `GPU ${g.index}` },
          h('span', { className: 'jp-kremote-gpu-index' }, `GPU${g.index}`),
          bar(util, formatPercent(util), `GPU ${g.index} utilisation`, 'util'),
          bar(memPct, `${formatBytes(g.mem_used_bytes)} / ${formatBytes(g.mem_total_bytes)}`,
            `GPU ${g.index} memory`, 'mem'),
          sparkline(series, `GPU ${g.index} utilisation, last minutes`)
        )
      );
    }
    return box;
  }

  private _events(c: ICluster): HTMLElement {
    const events: IClusterEvent[] = [...(c.events ?? [])].sort((a, b) => b.time - a.time);
    const expanded = this._allEvents.has(c.id);
    const shown = expanded ? events : events.slice(0, EVENTS_SHOWN);
    const now = Date.now() / 1000;
    const list = h('ol', { className: 'jp-kremote-events', 'aria-label': 'events' });
    for (const e of shown) {
      const warning = e.type === 'Warning';
      list.append(
        h(
          'li',
          { className: `jp-kremote-event${warning ? ' jp-kremote-event-warning' : ''}`,
            title: e.object ?? '' },
          h('span', { className: 'jp-kremote-event-type' }, e.type),
          h('span', { className: 'jp-kremote-event-reason' }, e.reason),
          h('span', { className: 'jp-kremote-event-message' }, e.message),
          h('span', { className: 'jp-kremote-event-age jp-kremote-age', 'data-since': e.time },
            formatAge(e.time, now))
        )
      );
    }
    const box = h('details', { className: 'jp-kremote-events-box', open: true },
      h('summary', {}, `Events (${events.length})`));
    if (!events.length) {
      box.append(h('p', { className: 'jp-kremote-noevents' }, 'No events yet.'));
      return box;
    }
    box.append(list);
    if (events.length > EVENTS_SHOWN) {
      const more = h('button', {
        className: 'jp-kremote-link', type: 'button', 'data-key': `${c.id}:more-events`
      }, expanded ? 'fewer' : `all ${events.length}`);
      more.addEventListener('click', () => {
        if (expanded) {
          this._allEvents.delete(c.id);
        } else {
          this._allEvents.add(c.id);
        }
        this._render();
      });
      box.append(more);
    }
    return box;
  }

  /** The one-second tick: countdowns and ages, in place (no re-render, focus stays). */
  private _updateTimes(): void {
    if (!this.isVisible) {
      return;
    }
    const now = Date.now() / 1000;
    for (const el of this.node.querySelectorAll<HTMLElement>('.jp-kremote-ttl')) {
      const deadline = el.dataset.deadline ? Number(el.dataset.deadline) : null;
      const cd = countdown(deadline, now);
      el.textContent = cd.text;
      el.classList.toggle('jp-kremote-warn', cd.warning);
    }
    for (const el of this.node.querySelectorAll<HTMLElement>('.jp-kremote-age')) {
      const since = el.dataset.since ? Number(el.dataset.since) : null;
      el.textContent = formatAge(since, now);
    }
  }

  private _store: ClusterStore;
  private _openLogs: IPanelOptions['openLogs'];
  private _currentNotebook: IPanelOptions['currentNotebook'];
  private _admin: IAdminHook | null;
  private _tick: number;
  private _extendBy = new Map<string, number>();
  private _allEvents = new Set<string>();
}
