/**
 * The panel's model: one WebSocket to `stream` (reconnected with back-off after a drop), REST
 * polling while the socket is down, and the state that `reduce` computes from both. Views
 * listen to `changed`; they never talk to the server themselves except through the actions
 * here.
 */

import { ServerConnection } from '@jupyterlab/services';
import { ISignal, Signal } from '@lumino/signaling';

import * as api from './api';
import { Action, IState, initialState, parseMessage, reduce } from './state';

/** Seconds between two REST polls while the WebSocket is down. */
const POLL_SECONDS = 3;
/** Reconnect back-off: first and largest delay in seconds. */
const RECONNECT_FIRST = 1;
const RECONNECT_MAX = 15;

export class ClusterStore {
  constructor(settings?: ServerConnection.ISettings) {
    this._settings = settings ?? ServerConnection.makeSettings();
  }

  get state(): IState {
    return this._state;
  }

  /** Emitted after every change of `state`. */
  get changed(): ISignal<this, IState> {
    return this._changed;
  }

  /** Connect (idempotent): the first REST list, then the WebSocket. */
  start(): void {
    if (this._started) {
      return;
    }
    this._started = true;
    void this.refresh();
    this._connect();
  }

  dispose(): void {
    this._disposed = true;
    this._stopPolling();
    if (this._reconnectTimer !== null) {
      clearTimeout(this._reconnectTimer);
    }
    this._socket?.close();
    this._socket = null;
    Signal.clearData(this);
  }

  dispatch(action: Action): void {
    const next = reduce(this._state, action);
    if (next !== this._state) {
      this._state = next;
      this._changed.emit(next);
    }
  }

  /** One REST list (the polling step, and "Retry" of the error state). */
  async refresh(): Promise<void> {
    try {
      const [clusters, tasks] = await Promise.all([api.listClusters(), api.listTasks()]);
      this.dispatch({ type: 'list', clusters, tasks });
      if (this._state.connection !== 'live') {
        this.dispatch({ type: 'connection', connection: 'polling' });
      }
      void this._loadHistory();
    } catch (error) {
      this.dispatch({ type: 'connection', connection: 'error', error: describe(error) });
    }
  }

  async extend(id: string, seconds: number): Promise<void> {
    const cluster = await api.extendCluster(id, seconds);
    this.dispatch({ type: 'cluster', cluster });
  }

  async shutdown(id: string): Promise<void> {
    await api.shutdownCluster(id);
    this.dispatch({ type: 'removed', id });
  }

  /** Telemetry history of clusters not loaded yet (sparklines after a (re)connect). */
  private async _loadHistory(): Promise<void> {
    for (const c of Object.values(this._state.clusters)) {
      if (c.state !== 'running' || this._history.has(c.id)) {
        continue;
      }
      this._history.add(c.id);
      try {
        const pods = await api.clusterTelemetry(c.id);
        this.dispatch({ type: 'history', id: c.id, pods });
      } catch {
        // not served (yet) or the cluster went away: live samples still arrive
      }
    }
  }

  private _connect(): void {
    if (this._disposed) {
      return;
    }
    let socket: WebSocket;
    try {
      socket = new WebSocket(api.streamUrl(this._settings));
    } catch {
      this._scheduleReconnect();
      return;
    }
    this._socket = socket;
    socket.onopen = () => {
      this._delay = RECONNECT_FIRST;
      this._stopPolling();
      this._history.clear();
      this.dispatch({ type: 'connection', connection: 'live' });
    };
    socket.onmessage = (event: MessageEvent) => {
      const msg = parseMessage(event.data);
      if (msg) {
        this.dispatch(msg);
        if (msg.type === 'snapshot' || msg.type === 'cluster') {
          void this._loadHistory();
        }
      }
    };
    socket.onclose = () => {
      if (this._socket !== socket) {
        return;
      }
      this._socket = null;
      if (this._state.connection === 'live') {
        this.dispatch({ type: 'connection', connection: 'polling' });
      }
      this._startPolling();
      this._scheduleReconnect();
    };
  }

  private _scheduleReconnect(): void {
    if (this._disposed || this._reconnectTimer !== null) {
      return;
    }
    const delay = this._delay;
    this._delay = Math.min(RECONNECT_MAX, this._delay * 2);
    this._reconnectTimer = setTimeout(() => {
      this._reconnectTimer = null;
      this._connect();
    }, delay * 1000);
  }

  private _startPolling(): void {
    if (this._pollTimer !== null || this._disposed) {
      return;
    }
    this._pollTimer = setInterval(() => void this.refresh(), POLL_SECONDS * 1000);
  }

  private _stopPolling(): void {
    if (this._pollTimer !== null) {
      clearInterval(this._pollTimer);
      this._pollTimer = null;
    }
  }

  private _settings: ServerConnection.ISettings;
  private _state: IState = initialState();
  private _changed = new Signal<this, IState>(this);
  private _socket: WebSocket | null = null;
  private _started = false;
  private _disposed = false;
  private _delay = RECONNECT_FIRST;
  private _reconnectTimer: ReturnType<typeof setTimeout> | null = null;
  private _pollTimer: ReturnType<typeof setInterval> | null = null;
  private _history = new Set<string>();
}

/** One line saying why the panel has no data. */
export function describe(error: unknown): string {
  if (error instanceof api.ApiError) {
    if (error.status === 404) {
      return (
        'The jupyter-kremote server extension is not enabled on this Jupyter server ' +
        '(kremote/api/v1 answers 404). Install jupyter-kremote in the server\'s environment, ' +
        'check `jupyter server extension list`, and restart JupyterLab.'
      );
    }
    if (error.status === 0) {
      return `The Jupyter server cannot be reached: ${error.message}`;
    }
    return `The jupyter-kremote server extension answered ${error.status}: ${error.message}`;
  }
  return `The jupyter-kremote server extension failed: ${String(error)}`;
}
