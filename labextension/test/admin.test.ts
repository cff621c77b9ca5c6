import { byUser, summary } from '../src/admin-state';
import type { ICluster } from '../src/types';

function cluster(user: string, id: string, extra: Partial<ICluster> = {}): ICluster {
  return {
    id,
    name: id,
    notebook: 'work/train.ipynb',
    backend: 'kubernetes',
    count: 1,
    gpu: 0,
    state: 'running',
    created: 1000,
    deadline: 4600,
    ttl: 3600,
    pods: [{ rank: 0 }],
    user,
    ...extra
  };
}

describe('byUser', () => {
  it('groups every user\'s clusters by user, sorted, with pods and GPUs in use', () => {
    const users = byUser([
      cluster('bob', 'b-2', { notebook: 'z.ipynb' }),
      cluster('alice', 'a-1', { gpu: 2, count: 2, pods: [{ rank: 0 }, { rank: 1 }] }),
      cluster('bob', 'b-1', { notebook: 'a.ipynb' }),
      cluster('alice', 'a-old', { state: 'ended', gpu: 4, pods: [] })
    ]);
    expect(users.map(u => u.user)).toEqual(['alice', 'bob']);
    expect(users[0].clusters.map(c => c.id)).toEqual(['a-1', 'a-old']);
    expect(users[1].clusters.map(c => c.id)).toEqual(['b-1', 'b-2']);
    // an ended cluster holds nothing
    expect([users[0].pods, users[0].gpus]).toEqual([2, 4]);
    expect([users[1].pods, users[1].gpus]).toEqual([2, 0]);
    expect(summary(users)).toBe('2 users · 4 clusters · 4 pods · 4 GPUs');
  });

  it('counts a starting cluster by what it asked for, and names a missing user', () => {
    const users = byUser([cluster('', 'x', { state: 'starting', pods: [], count: 3 })]);
    expect(users[0].user).toBe('(unknown)');
    expect(users[0].pods).toBe(3);
    expect(summary(users)).toBe('1 user · 1 cluster · 3 pods · 0 GPUs');
    expect(summary([])).toBe('0 users · 0 clusters · 0 pods · 0 GPUs');
  });
});
