/**
 * The panel's "All users" view for admins: the store (the probe, polling while the view is
 * open, Shut down) and its DOM. The panel shows the toggle only where the store's first `GET
 * admin/clusters` answered 200; everyone else keeps the per-user view and never sees it.
 */

import { Dialog, showDialog, showErrorMessage } from '@jupyterlab/apputils';
import { ISignal, Signal } from '@lumino/signaling';

import * as api from './api';
import { byUser, IAdminState, initialAdminState, summary } from './admin-state';
import { formatAge, notebookLabel } from './format';
import { h } from './panel';
import type { ICluster } from './types';

/** Seconds between two lists while the view is open (admins' view has no stream). */
const POLL_SECONDS = 3;

export class AdminStore {
  get state(): IAdminState {
    return this._state;
  }

  get changed(): ISignal<this, IAdminState> {
    return this._changed;
  }

  /** Ask once whether this user is an admin (the answer decides whether the toggle shows). */
  async probe(): Promise<void> {
    await this.refresh();
  }

  /** Open or close the view; it refreshes every few seconds while open. */
  setOpen(open: boolean): void {
    if (this._state.available !== 'yes' || open === this._state.open) {
      return;
    }
    this._set({ open });
    if (open) {
      void this.refresh();
      this._timer = setInterval(() => void this.refresh(), POLL_SECONDS * 1000);
    } else if (this._timer !== null) {
      clearInterval(this._timer);
      this._timer = null;
    }
  }

  async refresh(): Promise<void> {
    try {
      const clusters = await api.listAllClusters();
      this._set({
        available: 'yes',
        users: byUser(clusters),
        error: null,
        updated: Date.now() / 1000
      });
    } catch (error) {
      const status = error instanceof api.ApiError ? error.status : -1;
      if (status === 403 || status === 404) {
        this.setOpen(false);
        this._set({ available: 'no', users: [] });
      } else {
        this._set({ error: (error as Error).message ?? String(error) });
      }
    }
  }

  async shutdown(user: string, id: string): Promise<void> {
    await api.shutdownUserCluster(user, id);
    await this.refresh();
  }

  dispose(): void {
    if (this._timer !== null) {
      clearInterval(this._timer);
    }
    Signal.clearData(this);
  }

  private _set(change: Partial<IAdminState>): void {
    this._state = { ...this._state, ...change };
    this._changed.emit(this._state);
  }

  private _state: IAdminState = initialAdminState();
  private _changed = new Signal<this, IAdminState>(this);
  private _timer: ReturnType<typeof setInterval> | null = null;
}

/** The header's "All users" toggle; null for non-admins. */
export function adminToggle(store: AdminStore): HTMLElement | null {
  const state = store.state;
  if (state.available !== 'yes') {
    return null;
  }
  const button = h(
    'button',
    {
      className: `jp-kremote-button jp-kremote-admin-toggle jp-mod-styled${state.open ? ' jp-mod-accept' : ''}`,
      type: 'button',
      'aria-pressed': state.open ? 'true' : 'false',
      'data-key': 'admin-toggle',
      title: state.open
        ? 'Back to your own clusters'
        : "Every user's clusters (you are an admin of the kremote service)"
    },
    'All users'
  );
  button.addEventListener('click', () => store.setOpen(!store.state.open));
  return button;
}

/** Every user's clusters, a section per user, each cluster a row with Shut down. */
export function adminView(store: AdminStore): HTMLElement | null {
  const state = store.state;
  if (state.available !== 'yes' || !state.open) {
    return null;
  }
  const now = Date.now() / 1000;
  const view = h(
    'div',
    { className: 'jp-kremote-admin', 'aria-label': 'all users' },
    h('p', { className: 'jp-kremote-admin-summary' }, summary(state.users)),
    state.error ? h('p', { className: 'jp-kremote-error-message', role: 'alert' }, state.error) : null
  );
  if (!state.users.length) {
    view.append(h('p', { className: 'jp-kremote-empty' }, 'No user holds a cluster.'));
  }
  for (const u of state.users) {
    const table = h('table', { className: 'jp-kremote-admin-clusters', 'aria-label': `clusters of ${u.user}` },
      h('thead', {}, h('tr', {}, ...['cluster', 'notebook', 'state', 'pods', 'age', ''].map(t =>
        h('th', { scope: 'col' }, t)))));
    const body = h('tbody');
    for (const c of u.clusters) {
      body.append(row(store, u.user, c, now));
    }
    table.append(body);
    view.append(h(
      'section',
      { className: 'jp-kremote-admin-user', 'data-user': u.user, 'aria-label': `user ${u.user}` },
      h('h3', { className: 'jp-kremote-group-title' },
        h('span', { className: 'jp-kremote-admin-user-name' }, u.user),
        h('span', { className: 'jp-kremote-admin-user-totals' },
          ` ${u.clusters.length} cluster${u.clusters.length === 1 ? '' : 's'} · ` +
          `${u.pods} pod${u.pods === 1 ? '' : 's'}` +
          (u.gpus ? ` · ${u.gpus} GPU` : ''))),
      table));
  }
  return view;
}

function row(store: AdminStore, user: string, c: ICluster, now: number): HTMLElement {
  const shutdown = h(
    'button',
    {
      className: 'jp-kremote-button jp-kremote-shutdown jp-mod-styled jp-mod-warn',
      type: 'button',
      'data-key': `admin:${user}:${c.id}:shutdown`,
      title: `Stop every agent of ${user}'s cluster ${c.id}`
    },
    c.state === 'ended' ? 'Remove' : 'Shut down'
  );
  shutdown.addEventListener('click', () => void confirmShutdown(store, user, c));
  const pods = c.state === 'ended' ? 0 : c.pods?.length || c.count;
  return h(
    'tr',
    { className: `jp-kremote-admin-cluster jp-kremote-card-${c.state}`, 'data-cluster': c.id },
    h('td', { className: 'jp-kremote-name', title: c.id }, c.id),
    h('td', { title: c.notebook }, notebookLabel(c.notebook)),
    h('td', { className: `jp-kremote-status jp-kremote-status-${c.state}`, title: c.ended ?? '' },
      c.state),
    h('td', { className: 'jp-kremote-pod-count' }, `${pods}${c.gpu ? ` × ${c.gpu} GPU` : ''}`),
    h('td', { className: 'jp-kremote-age', 'data-since': c.created }, formatAge(c.created, now)),
    h('td', {}, shutdown)
  );
}

async function confirmShutdown(store: AdminStore, user: string, c: ICluster): Promise<void> {
  const result = await showDialog({
    title: `Shut down ${user}'s cluster "${c.id}"?`,
    body:
      `This stops its agents (${c.backend}); ${user}'s variables and files on them are lost, ` +
      `and ${user}'s next cell says that the cluster was shut down.`,
    buttons: [Dialog.cancelButton(), Dialog.warnButton({ label: 'Shut down' })]
  });
  if (!result.button.accept) {
    return;
  }
  try {
    await store.shutdown(user, c.id);
  } catch (error) {
    void showErrorMessage(`Could not shut down ${user}'s ${c.id}`, (error as Error).message ?? error);
  }
}
