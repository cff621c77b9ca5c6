/**
 * All HTTP to the server extension goes through `request`, over
 * `ServerConnection.makeRequest` (the server's token, cookies and XSRF header).
 */

import { URLExt } from '@jupyterlab/coreutils';
import { ServerConnection } from '@jupyterlab/services';

import type { ICluster, IClusterEvent, IMapSummary, ITelemetrySample } from './types';

/** Path of the API under the server's base URL. */
export const API_PATH = 'kremote/api/v1';

/** A refused request: `status` 0 means the server could not be reached at all. */
export class ApiError extends Error {
  constructor(
    readonly status: number,
    message: string
  ) {
    super(message);
  }
}

export function apiUrl(settings: ServerConnection.ISettings, ...parts: string[]): string {
  return URLExt.join(settings.baseUrl, API_PATH, ...parts);
}

/** The address of a cluster's service (its model's `path`) on this server, behind its login. */
export function serviceUrl(
  path: string,
  settings: ServerConnection.ISettings = ServerConnection.makeSettings()
): string {
  return URLExt.join(settings.baseUrl, path);
}

/** The raw Response of a request to the API; throws ApiError unless it is a 2xx. */
export async function requestRaw(
  path: string,
  init: RequestInit = {},
  settings: ServerConnection.ISettings = ServerConnection.makeSettings()
): Promise<Response> {
  const url = apiUrl(settings, path);
  let response: Response;
  try {
    response = await ServerConnection.makeRequest(url, init, settings);
  } catch (error) {
    throw new ApiError(0, `the Jupyter server is unreachable (${String(error)})`);
  }
  if (!response.ok) {
    let message = `${response.status} ${response.statusText}`;
    try {
      const body = await response.json();
      if (body && typeof body.message === 'string' && body.message) {
        message = body.message;
      }
    } catch {
      // not JSON (e.g. Tornado's 404 page): keep the status line
    }
    throw new ApiError(response.status, message);
  }
  return response;
}

/** A JSON request to the API (`undefined` for a 204). */
export async function request<T>(
  path: string,
  init: RequestInit = {},
  settings?: ServerConnection.ISettings
): Promise<T> {
  const response = await requestRaw(path, init, settings);
  if (response.status === 204) {
    return undefined as T;
  }
  const text = await response.text();
  return (text ? JSON.parse(text) : undefined) as T;
}

export async function listClusters(): Promise<ICluster[]> {
  const body = await request<{ clusters: ICluster[] }>('clusters');
  return body.clusters ?? [];
}

/** Parallel maps per notebook (`GET tasks`); undefined from a server without the endpoint. */
export async function listTasks(): Promise<{ [notebook: string]: IMapSummary[] } | undefined> {
  try {
    return (await request<{ tasks: { [notebook: string]: IMapSummary[] } }>('tasks')).tasks;
  } catch {
    return undefined;
  }
}

export async function extendCluster(id: string, seconds: number): Promise<ICluster> {
  return request<ICluster>(`clusters/${encodeURIComponent(id)}/extend`, {
    method: 'POST',
    body: JSON.stringify({ seconds })
  });
}

export async function shutdownCluster(id: string): Promise<void> {
  await request<void>(`clusters/${encodeURIComponent(id)}`, { method: 'DELETE' });
}

/** Every user's clusters (`GET admin/clusters`): admins only, 403 for everyone else. */
export async function listAllClusters(): Promise<ICluster[]> {
  const body = await request<{ clusters: ICluster[] }>('admin/clusters');
  return body.clusters ?? [];
}

/** Shut down another user's cluster (`DELETE admin/users/<user>/clusters/<id>`): admins only. */
export async function shutdownUserCluster(user: string, id: string): Promise<void> {
  await request<void>(
    `admin/users/${encodeURIComponent(user)}/clusters/${encodeURIComponent(id)}`,
    { method: 'DELETE' }
  );
}

export async function clusterTelemetry(
  id: string
): Promise<{ [rank: string]: ITelemetrySample[] }> {
  const body = await request<{ pods: { [rank: string]: ITelemetrySample[] } }>(
    `clusters/${encodeURIComponent(id)}/telemetry`
  );
  return body.pods ?? {};
}

export async function clusterEvents(id: string): Promise<IClusterEvent[]> {
  const body = await request<{ events: IClusterEvent[] }>(
    `clusters/${encodeURIComponent(id)}/events`
  );
  return body.events ?? [];
}

/** The URL of the `stream` WebSocket, with the token when the server wants it in the URL. */
export function streamUrl(
  settings: ServerConnection.ISettings = ServerConnection.makeSettings()
): string {
  let url = URLExt.join(settings.wsUrl, API_PATH, 'stream');
  if (settings.token && settings.appendToken) {
    url += `?token=${encodeURIComponent(settings.token)}`;
  }
  return url;
}
