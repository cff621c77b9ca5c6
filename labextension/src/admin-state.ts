/**
 * The "All users" view's data, for admins: every user's clusters as `GET admin/clusters`
 * returns them, grouped by user. Pure functions, unit-tested without a browser
 * (test/admin.test.ts).
 */

import type { ICluster } from './types';

/** One user's clusters, sorted by notebook then id. */
export interface IUserClusters {
  user: string;
  clusters: ICluster[];
  pods: number;
  gpus: number;
}

/**
 * Whether the view is offered: `unknown` before the first answer, `yes` when `GET
 * admin/clusters` answered 200, `no` for a 403 (not an admin) or a 404 (no admin routes).
 */
export type Availability = 'unknown' | 'yes' | 'no';

export interface IAdminState {
  available: Availability;
  open: boolean;
  users: IUserClusters[];
  error: string | null;
  /** Unix time of the last answer, for "as of" in the view. */
  updated: number | null;
}

export function initialAdminState(): IAdminState {
  return { available: 'unknown', open: false, users: [], error: null, updated: null };
}

/** Pods a cluster record holds: its pod rows while running, else what it asked for. */
function podsOf(c: ICluster): number {
  if (c.state === 'ended') {
    return 0;
  }
  return c.pods?.length || c.count;
}

/** Clusters grouped by their `user`, users sorted by name; each with its pod and GPU count. */
export function byUser(clusters: ICluster[]): IUserClusters[] {
  const users = new Map<string, ICluster[]>();
  for (const c of clusters) {
    const user = String(c.user ?? '') || '(unknown)';
    users.set(user, [...(users.get(user) ?? []), c]);
  }
  return [...users.entries()]
    .sort(([a], [b]) => a.localeCompare(b))
    .map(([user, list]) => {
      const sorted = [...list].sort(
        (a, b) => a.notebook.localeCompare(b.notebook) || a.id.localeCompare(b.id)
      );
      return {
        user,
        clusters: sorted,
        pods: sorted.reduce((n, c) => n + podsOf(c), 0),
        gpus: sorted.reduce((n, c) => n + (c.state === 'ended' ? 0 : c.gpu * c.count), 0)
      };
    });
}

/** One line over all users: "2 users · 3 clusters · 4 pods · 1 GPU". */
export function summary(users: IUserClusters[]): string {
  const plural = (n: number, what: string): string => `${n} ${what}${n === 1 ? '' : 's'}`;
  const clusters = users.reduce((n, u) => n + u.clusters.length, 0);
  const pods = users.reduce((n, u) => n + u.pods, 0);
  const gpus = users.reduce((n, u) => n + u.gpus, 0);
  return [
    plural(users.length, 'user'),
    plural(clusters, 'cluster'),
    plural(pods, 'pod'),
    plural(gpus, 'GPU')
  ].join(' · ');
}
