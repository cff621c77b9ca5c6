/**
 * The panel's state and its reducer: every change (a WebSocket message, a REST answer, the
 * connection going up or down) is an action applied by `reduce`, a pure function, so that
 * the logic is unit-tested without a browser (test/state.test.ts).
 */

import type {
  ICluster,
  IClusterEvent,
  IPodRow,
  IMapSummary,
  ITelemetrySample,
  StreamMessage
} from './types';

/** Events kept per cluster (the server sends at most 100). */
export const MAX_EVENTS = 100;
/** Telemetry samples kept per pod for the sparklines (5 minutes at the default 2 s). */
export const MAX_SAMPLES = 150;

/**
 * How the panel gets its data: `connecting` (first load), `live` (WebSocket open), `polling`
 * (no WebSocket: REST every few seconds while reconnecting), `error` (the server extension is
 * missing or unreachable; `error` says why).
 */
export type Connection = 'connecting' | 'live' | 'polling' | 'error';

export interface IState {
  clusters: { [id: string]: ICluster };
  /** Samples per cluster id, then per rank, oldest first. */
  telemetry: { [id: string]: { [rank: string]: ITelemetrySample[] } };
  /** Parallel maps per notebook, as its kernel last reported them, oldest first. */
  tasks: { [notebook: string]: IMapSummary[] };
  connection: Connection;
  error: string | null;
}

/** Actions beyond the WebSocket's own messages. */
export type Action =
  | StreamMessage
  | { type: 'list'; clusters: ICluster[]; tasks?: { [notebook: string]: IMapSummary[] } } // GET clusters and tasks (polling): same as a snapshot
  | { type: 'history'; id: string; pods: { [rank: string]: ITelemetrySample[] } }
  | { type: 'connection'; connection: Connection; error?: string | null };

export function initialState(): IState {
  return { clusters: {}, telemetry: {}, tasks: {}, connection: 'connecting', error: null };
}

function eventKey(e: IClusterEvent): string {
  return `${e.time}|${e.type}|${e.reason}|${e.object ?? ''}|${e.message}`;
}

/** Events newest first, without duplicates, at most MAX_EVENTS. */
export function mergeEvents(
  current: IClusterEvent[] | undefined,
  incoming: IClusterEvent[]
): IClusterEvent[] {
  const seen = new Set<string>();
  const out: IClusterEvent[] = [];
  for (const e of [...incoming, ...(current ?? [])]) {
    const k = eventKey(e);
    if (!seen.has(k)) {
      seen.add(k);
      out.push(e);
    }
  }
  out.sort((a, b) => b.time - a.time);
  return out.slice(0, MAX_EVENTS);
}

/** Samples oldest first, without two of the same time, at most MAX_SAMPLES. */
export function mergeSamples(
  current: ITelemetrySample[] | undefined,
  incoming: ITelemetrySample[]
): ITelemetrySample[] {
  const byTime = new Map<number, ITelemetrySample>();
  for (const s of [...(current ?? []), ...incoming]) {
    if (s && Number.isFinite(s.time)) {
      byTime.set(s.time, s);
    }
  }
  return [...byTime.values()].sort((a, b) => a.time - b.time).slice(-MAX_SAMPLES);
}

/**
 * A cluster as it arrives, keeping what the panel learnt in between: events sent one by one
 * and pods' latest telemetry when the new model has none.
 */
function mergeCluster(old: ICluster | undefined, fresh: ICluster): ICluster {
  const events = mergeEvents(old?.events, fresh.events ?? []);
  const pods: IPodRow[] = (fresh.pods ?? []).map(p => {
    if (p.telemetry) {
      return p;
    }
    const before = old?.pods?.find(q => q.rank === p.rank);
    return before?.telemetry ? { ...p, telemetry: before.telemetry } : p;
  });
  return { ...fresh, events, pods };
}

/** Record the telemetry carried by pod rows, so that polling alone still draws sparklines. */
function samplesFromRows(
  telemetry: IState['telemetry'],
  cluster: ICluster
): IState['telemetry'] {
  const rows = (cluster.pods ?? []).filter(p => p.telemetry);
  if (!rows.length) {
    return telemetry;
  }
  const perRank = { ...(telemetry[cluster.id] ?? {}) };
  for (const p of rows) {
    perRank[String(p.rank)] = mergeSamples(perRank[String(p.rank)], [p.telemetry!]);
  }
  return { ...telemetry, [cluster.id]: perRank };
}

function replaceAll(state: IState, clusters: ICluster[]): IState {
  const next: IState['clusters'] = {};
  let telemetry: IState['telemetry'] = {};
  for (const c of clusters) {
    next[c.id] = mergeCluster(state.clusters[c.id], c);
    if (state.telemetry[c.id]) {
      telemetry[c.id] = state.telemetry[c.id];
    }
    telemetry = samplesFromRows(telemetry, c);
  }
  return { ...state, clusters: next, telemetry };
}

/** The state after `action`; `state` itself is never changed. */
export function reduce(state: IState, action: Action): IState {
  switch (action.type) {
    case 'snapshot':
    case 'list': {
      const next = replaceAll(state, action.clusters ?? []);
      return action.tasks ? { ...next, tasks: { ...action.tasks } } : next;
    }
    case 'tasks': {
      if (typeof action.notebook !== 'string' || !Array.isArray(action.maps)) {
        return state;
      }
      const tasks = { ...state.tasks };
      if (action.maps.length) {
        tasks[action.notebook] = action.maps;
      } else {
        delete tasks[action.notebook];
      }
      return { ...state, tasks };
    }
    case 'cluster': {
      const c = action.cluster;
      if (!c || !c.id) {
        return state;
      }
      return {
        ...state,
        clusters: { ...state.clusters, [c.id]: mergeCluster(state.clusters[c.id], c) },
        telemetry: samplesFromRows(state.telemetry, c)
      };
    }
    case 'removed': {
      if (!(action.id in state.clusters) && !(action.id in state.telemetry)) {
        return state;
      }
      const clusters = { ...state.clusters };
      const telemetry = { ...state.telemetry };
      delete clusters[action.id];
      delete telemetry[action.id];
      return { ...state, clusters, telemetry };
    }
    case 'event': {
      const c = state.clusters[action.id];
      if (!c || !action.event) {
        return state;
      }
      const events = mergeEvents(c.events, [action.event]);
      return { ...state, clusters: { ...state.clusters, [c.id]: { ...c, events } } };
    }
    case 'telemetry': {
      const c = state.clusters[action.id];
      if (!c || !action.sample) {
        return state;
      }
      const rank = String(action.rank);
      const perRank = { ...(state.telemetry[c.id] ?? {}) };
      perRank[rank] = mergeSamples(perRank[rank], [action.sample]);
      const pods = (c.pods ?? []).map(p =>
        String(p.rank) === rank ? { ...p, telemetry: action.sample } : p
      );
      return {
        ...state,
        clusters: { ...state.clusters, [c.id]: { ...c, pods } },
        telemetry: { ...state.telemetry, [c.id]: perRank }
      };
    }
    case 'history': {
      if (!state.clusters[action.id]) {
        return state;
      }
      const perRank = { ...(state.telemetry[action.id] ?? {}) };
      for (const [rank, samples] of Object.entries(action.pods ?? {})) {
        perRank[rank] = mergeSamples(perRank[rank], samples ?? []);
      }
      return { ...state, telemetry: { ...state.telemetry, [action.id]: perRank } };
    }
    case 'ended': {
      const c = state.clusters[action.id];
      if (!c) {
        return state;
      }
      const ended = { ...c, state: 'ended', ended: action.reason ?? c.ended ?? null };
      return { ...state, clusters: { ...state.clusters, [c.id]: ended } };
    }
    case 'connection':
      return {
        ...state,
        connection: action.connection,
        error: action.connection === 'error' ? action.error ?? 'unreachable' : null
      };
    default:
      return state;
  }
}

/** Parse one WebSocket text frame; null for anything that is not a known message. */
export function parseMessage(data: unknown): StreamMessage | null {
  if (typeof data !== 'string') {
    return null;
  }
  let msg: unknown;
  try {
    msg = JSON.parse(data);
  } catch {
    return null;
  }
  if (!msg || typeof msg !== 'object') {
    return null;
  }
  const type = (msg as { type?: unknown }).type;
  const known = ['snapshot', 'cluster', 'removed', 'event', 'telemetry', 'ended', 'tasks'];
  return typeof type === 'string' && known.includes(type) ? (msg as StreamMessage) : null;
}

/**
 * One card: a cluster with its pod groups. The server holds each group as a record of its
 * own (group `train` of `swimmy` is `swimmy-train`) that shares `family`; the `main` group
 * (or else the first by name) speaks for the card.
 */
export interface ICard {
  key: string;
  name: string;
  main: ICluster;
  groups: ICluster[];
}

/** A group of cards: the clusters of one notebook. */
export interface IGroup {
  notebook: string;
  clusters: ICluster[];
  cards: ICard[];
  /** The notebook's maps whose cluster has no card (the Python API's own clusters). */
  maps: IMapSummary[];
}

/** A card's maps: those its notebook's kernel ran on a cluster of the card's name. */
export function mapsOf(state: IState, card: ICard): IMapSummary[] {
  return (state.tasks[card.main.notebook ?? ''] ?? []).filter(m => m.cluster === card.name);
}

/** The records of one notebook's clusters as cards, one per cluster, by name. */
export function cardsOf(clusters: ICluster[]): ICard[] {
  const byFamily = new Map<string, ICluster[]>();
  for (const c of clusters) {
    const family = c.family || c.name;
    byFamily.set(family, [...(byFamily.get(family) ?? []), c]);
  }
  const order = (c: ICluster): string => `${(c.group ?? 'main') === 'main' ? 0 : 1}${c.group ?? ''}`;
  return [...byFamily.entries()]
    .sort(([a], [b]) => a.localeCompare(b))
    .map(([name, records]) => {
      const groups = records.sort((x, y) => order(x).localeCompare(order(y)) || x.id.localeCompare(y.id));
      return { key: `${groups[0].notebook ?? ''}|${name}`, name, main: groups[0], groups };
    });
}

/**
 * Clusters grouped by notebook: the open notebook's group first, then the others by path
 * ("" last); within a group, by name.
 */
export function groupByNotebook(state: IState, current: string | null): IGroup[] {
  const groups = new Map<string, ICluster[]>();
  for (const c of Object.values(state.clusters)) {
    const list = groups.get(c.notebook ?? '') ?? [];
    list.push(c);
    groups.set(c.notebook ?? '', list);
  }
  for (const notebook of Object.keys(state.tasks)) {
    if (!groups.has(notebook)) {
      groups.set(notebook, []);
    }
  }
  const rank = (nb: string): number => (nb === current ? 0 : nb === '' ? 2 : 1);
  return [...groups.entries()]
    .sort(([a], [b]) => rank(a) - rank(b) || a.localeCompare(b))
    .map(([notebook, clusters]) => {
      const cards = cardsOf(clusters);
      const names = new Set(cards.map(c => c.name));
      return {
        notebook,
        clusters: clusters.sort((x, y) => x.name.localeCompare(y.name) || x.id.localeCompare(y.id)),
        cards,
        maps: (state.tasks[notebook] ?? []).filter(m => !names.has(m.cluster))
      };
    });
}

/** Pods running now, over all clusters that are not ended (the status bar's count). */
export function runningPods(state: IState): number {
  let n = 0;
  for (const c of Object.values(state.clusters)) {
    if (c.state === 'ended') {
      continue;
    }
    for (const p of c.pods ?? []) {
      if (p.phase ? p.phase === 'Running' : c.state === 'running') {
        n += 1;
      }
    }
  }
  return n;
}
