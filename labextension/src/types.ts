/**
 * The models of the server extension's API (docs/api.md, "The cluster model" and
 * "Live data"). Only what the panel reads is typed; unknown keys are kept as they come.
 */

/** One GPU of a telemetry sample; absent from a sample where there is no GPU or no NVML. */
export interface IGpuSample {
  index: number;
  name?: string;
  util_percent: number;
  mem_used_bytes: number;
  mem_total_bytes: number;
}

/** One telemetry sample of one agent. */
export interface ITelemetrySample {
  time: number;
  cpu_percent?: number;
  mem_bytes?: number;
  mem_total_bytes?: number;
  gpus?: IGpuSample[];
}

/** One pod (rank) row of a cluster. */
export interface IPodRow {
  rank: number;
  name?: string;
  phase?: string;
  node?: string;
  restarts?: number;
  started?: number;
  state?: string;
  telemetry?: ITelemetrySample | null;
  group?: string;
  [key: string]: unknown;
}

/** One event of a cluster (Kubernetes events and the cluster's own). */
export interface IClusterEvent {
  time: number;
  type: string; // "Normal" | "Warning"
  reason: string;
  object?: string;
  message: string;
}

/** A service of rank 0 (a port named `kremote-<name>`), reached through the server's proxy. */
export interface IService {
  name: string;
  port: number;
  /** `kremote/proxy/<id>/<name>/`, relative to the server's base URL. */
  path: string;
}

/** The cluster model. */
export interface ICluster {
  id: string;
  name: string;
  notebook: string;
  backend: string;
  count: number;
  gpu: number;
  state: string; // "starting" | "running" | "ended"
  stage?: string | null; // while starting: the latest stage ("queued in team (ClusterQueue q), position 2: ...")
  created: number;
  deadline: number | null;
  ttl: number;
  last_activity?: number | null;
  ended?: string | null;
  ended_at?: number | null;
  /** Why Kueue evicted it while it waits to be admitted again (--on-preempt requeue). */
  evicted?: string | null;
  pods: IPodRow[];
  warnings?: string[];
  events?: IClusterEvent[];
  services?: IService[];
  templates?: string[];
  namespace?: string | null;
  /** This record's pod group ("main" by default); the groups of a cluster share `family`. */
  group?: string;
  family?: string;
  image?: string | null;
  cpu?: string | null;
  mem?: string | null;
  [key: string]: unknown;
}

/** One parallel map's counts, as the notebook's kernel reports them (`PUT tasks`). */
export interface IMapSummary {
  cluster: string;
  function: string;
  total: number;
  done: number;
  running: number;
  failed: number;
  retried?: number;
  rerun?: number;
  speculative?: number;
  started: number;
  finished?: number | null;
  state: string; // "running" | "done" | "failed" | "cancelled"
}

/** Messages of the `stream` WebSocket. */
export type StreamMessage =
  | { type: 'snapshot'; clusters: ICluster[]; tasks?: { [notebook: string]: IMapSummary[] } }
  | { type: 'tasks'; notebook: string; maps: IMapSummary[] }
  | { type: 'cluster'; cluster: ICluster }
  | { type: 'removed'; id: string }
  | { type: 'event'; id: string; event: IClusterEvent }
  | { type: 'telemetry'; id: string; rank: number | string; sample: ITelemetrySample }
  | { type: 'ended'; id: string; reason: string };
