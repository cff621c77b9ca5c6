import {
  cardsOf,
  groupByNotebook,
  mapsOf,
  initialState,
  IState,
  MAX_EVENTS,
  MAX_SAMPLES,
  mergeEvents,
  parseMessage,
  reduce,
  runningPods
} from '../src/state';
import type { ICluster, IClusterEvent, ITelemetrySample } from '../src/types';

function cluster(id: string, extra: Partial<ICluster> = {}): ICluster {
  return {
    id,
    name: id,
    notebook: 'work/train.ipynb',
    backend: 'local',
    count: 2,
    gpu: 0,
    state: 'running',
    created: 1000,
    deadline: 4600,
    ttl: 3600,
    pods: [
      { rank: 0, name: `${id}-0`, phase: 'Running', node: 'n1', restarts: 0, started: 1001, state: 'idle', telemetry: null },
      { rank: 1, name: `${id}-1`, phase: 'Running', node: 'n2', restarts: 0, started: 1001, state: 'idle', telemetry: null }
    ],
    events: [],
    ...extra
  };
}

function event(time: number, reason = 'Started', type = 'Normal'): IClusterEvent {
  return { time, type, reason, object: 'pod/x', message: `${reason} at ${time}` };
}

function sample(time: number, util?: number): ITelemetrySample {
  const s: ITelemetrySample = { time, cpu_percent: 50, mem_bytes: 1e9, mem_total_bytes: 8e9 };
  if (util !== undefined) {
    s.gpus = [{ index: 0, util_percent: util, mem_used_bytes: 1e9, mem_total_bytes: 8e10 }];
  }
  return s;
}

function withSnapshot(...clusters: ICluster[]): IState {
  return reduce(initialState(), { type: 'snapshot', clusters });
}

describe('reduce: WebSocket messages', () => {
  it('snapshot replaces every cluster', () => {
    let s = withSnapshot(cluster('a'), cluster('b'));
    expect(Object.keys(s.clusters).sort()).toEqual(['a', 'b']);
    s = reduce(s, { type: 'snapshot', clusters: [cluster('c')] });
    expect(Object.keys(s.clusters)).toEqual(['c']);
  });

  it('cluster adds or updates one cluster and keeps events learnt since', () => {
    let s = withSnapshot(cluster('a'));
    s = reduce(s, { type: 'event', id: 'a', event: event(1100, 'Pulled') });
    s = reduce(s, { type: 'cluster', cluster: cluster('a', { deadline: 8200 }) });
    expect(s.clusters.a.deadline).toBe(8200);
    expect(s.clusters.a.events!.map(e => e.reason)).toEqual(['Pulled']);
    s = reduce(s, { type: 'cluster', cluster: cluster('b') });
    expect(Object.keys(s.clusters).sort()).toEqual(['a', 'b']);
  });

  it('removed forgets the cluster and its telemetry; unknown ids change nothing', () => {
    let s = withSnapshot(cluster('a'), cluster('b'));
    s = reduce(s, { type: 'telemetry', id: 'a', rank: 0, sample: sample(1, 10) });
    s = reduce(s, { type: 'removed', id: 'a' });
    expect(Object.keys(s.clusters)).toEqual(['b']);
    expect(s.telemetry.a).toBeUndefined();
    expect(reduce(s, { type: 'removed', id: 'zzz' })).toBe(s);
  });

  it('event prepends, newest first, without duplicates, capped', () => {
    let s = withSnapshot(cluster('a', { events: [event(1000, 'Created')] }));
    s = reduce(s, { type: 'event', id: 'a', event: event(1010, 'BackOff', 'Warning') });
    s = reduce(s, { type: 'event', id: 'a', event: event(1010, 'BackOff', 'Warning') });
    expect(s.clusters.a.events!.map(e => e.reason)).toEqual(['BackOff', 'Created']);
    const many = Array.from({ length: MAX_EVENTS + 20 }, (_, i) => event(2000 + i));
    expect(mergeEvents([], many)).toHaveLength(MAX_EVENTS);
    expect(mergeEvents([], many)[0].time).toBe(2000 + MAX_EVENTS + 19);
  });

  it('event of an unknown cluster is ignored', () => {
    const s = withSnapshot(cluster('a'));
    expect(reduce(s, { type: 'event', id: 'x', event: event(1) })).toBe(s);
  });

  it('telemetry sets the pod row and appends to the history, capped', () => {
    let s = withSnapshot(cluster('a'));
    for (let t = 0; t < MAX_SAMPLES + 10; t++) {
      s = reduce(s, { type: 'telemetry', id: 'a', rank: 1, sample: sample(t, t % 100) });
    }
    expect(s.telemetry.a['1']).toHaveLength(MAX_SAMPLES);
    expect(s.telemetry.a['1'][0].time).toBe(10);
    expect(s.clusters.a.pods[1].telemetry!.time).toBe(MAX_SAMPLES + 9);
    expect(s.clusters.a.pods[0].telemetry).toBeNull();
    // rank given as a string (JSON object keys) lands on the same pod
    s = reduce(s, { type: 'telemetry', id: 'a', rank: '0', sample: sample(5000) });
    expect(s.clusters.a.pods[0].telemetry!.time).toBe(5000);
  });

  it('a new cluster model without telemetry keeps the pods\' latest sample', () => {
    let s = withSnapshot(cluster('a'));
    s = reduce(s, { type: 'telemetry', id: 'a', rank: 0, sample: sample(7, 33) });
    s = reduce(s, { type: 'cluster', cluster: cluster('a') });
    expect(s.clusters.a.pods[0].telemetry!.time).toBe(7);
  });

  it('ended marks the cluster ended with the reason', () => {
    let s = withSnapshot(cluster('a'));
    s = reduce(s, { type: 'ended', id: 'a', reason: 'its TTL ran out' });
    expect(s.clusters.a.state).toBe('ended');
    expect(s.clusters.a.ended).toBe('its TTL ran out');
  });

  it('history merges samples by time, oldest first', () => {
    let s = withSnapshot(cluster('a'));
    s = reduce(s, { type: 'telemetry', id: 'a', rank: 0, sample: sample(30, 3) });
    s = reduce(s, { type: 'history', id: 'a', pods: { '0': [sample(10, 1), sample(20, 2), sample(30, 3)] } });
    expect(s.telemetry.a['0'].map(x => x.time)).toEqual([10, 20, 30]);
  });

  it('polling (list) keeps samples that pod rows carry', () => {
    const c = cluster('a');
    c.pods[0].telemetry = sample(1, 10);
    let s = reduce(initialState(), { type: 'list', clusters: [c] });
    const c2 = cluster('a');
    c2.pods[0].telemetry = sample(2, 20);
    s = reduce(s, { type: 'list', clusters: [c2] });
    expect(s.telemetry.a['0'].map(x => x.time)).toEqual([1, 2]);
  });

  it('connection changes; error carries the reason, others clear it', () => {
    let s = reduce(initialState(), { type: 'connection', connection: 'error', error: 'no extension' });
    expect(s.connection).toBe('error');
    expect(s.error).toBe('no extension');
    s = reduce(s, { type: 'connection', connection: 'live' });
    expect(s.error).toBeNull();
  });

  it('never mutates the state it is given', () => {
    const s = withSnapshot(cluster('a'));
    const frozen = JSON.stringify(s);
    reduce(s, { type: 'event', id: 'a', event: event(5) });
    reduce(s, { type: 'telemetry', id: 'a', rank: 0, sample: sample(5, 5) });
    reduce(s, { type: 'ended', id: 'a', reason: 'x' });
    reduce(s, { type: 'removed', id: 'a' });
    expect(JSON.stringify(s)).toBe(frozen);
  });
});

describe('parseMessage', () => {
  it('accepts the known message types only', () => {
    expect(parseMessage('{"type": "removed", "id": "a"}')).toEqual({ type: 'removed', id: 'a' });
    expect(parseMessage('{"type": "other"}')).toBeNull();
    expect(parseMessage('not json')).toBeNull();
    expect(parseMessage('42')).toBeNull();
    expect(parseMessage(new ArrayBuffer(2))).toBeNull();
  });
});

describe('groupByNotebook and runningPods', () => {
  it('puts the open notebook first, then by path, no notebook last', () => {
    const s = withSnapshot(
      cluster('x', { notebook: '' }),
      cluster('b2', { notebook: 'b.ipynb', name: 'zeta' }),
      cluster('b1', { notebook: 'b.ipynb', name: 'alpha' }),
      cluster('a', { notebook: 'a.ipynb' }),
      cluster('c', { notebook: 'c.ipynb' })
    );
    const groups = groupByNotebook(s, 'c.ipynb');
    expect(groups.map(g => g.notebook)).toEqual(['c.ipynb', 'a.ipynb', 'b.ipynb', '']);
    expect(groups[2].clusters.map(c => c.name)).toEqual(['alpha', 'zeta']);
    expect(groupByNotebook(s, null)[0].notebook).toBe('a.ipynb');
  });

  it('shows the pod groups of one cluster as one card, main group first', () => {
    const s = withSnapshot(
      cluster('nb-swimmy-train', { name: 'swimmy-train', family: 'swimmy', group: 'train', gpu: 1 }),
      cluster('nb-swimmy', { name: 'swimmy', family: 'swimmy', group: 'main' }),
      cluster('nb-swimmy-prep', { name: 'swimmy-prep', family: 'swimmy', group: 'prep' }),
      cluster('nb-other', { name: 'other' })
    );
    const [group] = groupByNotebook(s, null);
    expect(group.cards.map(c => c.name)).toEqual(['other', 'swimmy']);
    const card = group.cards[1];
    expect(card.main.id).toBe('nb-swimmy');
    expect(card.groups.map(g => g.group)).toEqual(['main', 'prep', 'train']);
    expect(group.cards[0].groups.map(g => g.id)).toEqual(['nb-other']);
  });

  it('keeps the cards of two notebooks apart and a lone group as its own card', () => {
    const cards = cardsOf([
      cluster('a-train', { name: 'a-train', family: 'a', group: 'train' }),
      cluster('b', { name: 'b' })
    ]);
    expect(cards.map(c => [c.name, c.main.id])).toEqual([['a', 'a-train'], ['b', 'b']]);
  });

  it('keeps the latest maps per notebook: on the card of their cluster, else apart', () => {
    const map = (cluster: string, done: number) => ({
      cluster, function: 'square', total: 20, done, running: 20 - done, failed: 0,
      started: 1000, state: done === 20 ? 'done' : 'running'
    });
    let s = withSnapshot(cluster('nb-swimmy', { name: 'swimmy', family: 'swimmy' }));
    s = reduce(s, { type: 'tasks', notebook: 'work/train.ipynb', maps: [map('swimmy', 4)] });
    s = reduce(s, { type: 'tasks', notebook: 'work/train.ipynb',
      maps: [map('swimmy', 20), map('api', 3)] });
    const [group] = groupByNotebook(s, null);
    expect(mapsOf(s, group.cards[0]).map(m => [m.done, m.state])).toEqual([[20, 'done']]);
    expect(group.maps.map(m => m.cluster)).toEqual(['api']);
    // a notebook with maps but no server-held cluster still gets its section
    s = reduce(s, { type: 'tasks', notebook: 'other.ipynb', maps: [map('api', 1)] });
    expect(groupByNotebook(s, null).map(g => [g.notebook, g.maps.length])).toEqual([
      ['other.ipynb', 1], ['work/train.ipynb', 1]]);
    // an empty report forgets the notebook's maps; a snapshot brings the server's
    s = reduce(s, { type: 'tasks', notebook: 'other.ipynb', maps: [] });
    expect(Object.keys(s.tasks)).toEqual(['work/train.ipynb']);
    s = reduce(s, { type: 'snapshot', clusters: [], tasks: { 'x.ipynb': [map('api', 2)] } });
    expect(s.tasks).toEqual({ 'x.ipynb': [map('api', 2)] });
    // polling (GET clusters and tasks) does the same; a server without tasks keeps them
    s = reduce(s, { type: 'list', clusters: [], tasks: { 'y.ipynb': [map('api', 5)] } });
    expect(Object.keys(s.tasks)).toEqual(['y.ipynb']);
    s = reduce(s, { type: 'list', clusters: [] });
    expect(Object.keys(s.tasks)).toEqual(['y.ipynb']);
    expect(parseMessage(JSON.stringify({ type: 'tasks', notebook: 'x', maps: [] }))).not.toBeNull();
  });

  it('counts Running pods of clusters that did not end', () => {
    const pending = cluster('p');
    pending.pods[1].phase = 'Pending';
    const s = withSnapshot(cluster('a'), pending, cluster('e', { state: 'ended' }));
    expect(runningPods(s)).toBe(3);
    const noPhase = cluster('l');
    noPhase.pods = noPhase.pods.map(({ phase, ...rest }) => rest);
    expect(runningPods(withSnapshot(noPhase))).toBe(2);
  });
});
