/**
 * Pure formatting helpers of the panel (no DOM, no JupyterLab): durations, ages, the TTL
 * countdown, byte sizes, sparklines. Unit-tested in test/format.test.ts.
 */

/** The countdown turns to the warning colour when less than this many seconds are left. */
export const WARN_SECONDS = 600;

function pad2(n: number): string {
  return n < 10 ? `0${n}` : `${n}`;
}

/**
 * A duration as the Python side writes it (`format_duration`): "45s", "4m 05s", "1h 02m",
 * "2d 03h". With `seconds: true` hours keep their seconds ("1h 02m 03s"), so that a
 * countdown visibly ticks.
 */
export function formatDuration(
  total: number,
  options: { seconds?: boolean } = {}
): string {
  if (!Number.isFinite(total) || total < 0) {
    total = 0;
  }
  const s = Math.floor(total);
  const days = Math.floor(s / 86400);
  const hours = Math.floor((s % 86400) / 3600);
  const minutes = Math.floor((s % 3600) / 60);
  const secs = s % 60;
  if (days > 0) {
    return `${days}d ${pad2(hours)}h`;
  }
  if (hours > 0) {
    return options.seconds
      ? `${hours}h ${pad2(minutes)}m ${pad2(secs)}s`
      : `${hours}h ${pad2(minutes)}m`;
  }
  if (minutes > 0) {
    return `${minutes}m ${pad2(secs)}s`;
  }
  return `${secs}s`;
}

/** How long ago `since` (Unix seconds) was, in the largest whole unit: "5s", "3m", "2h", "1d". */
export function formatAge(since: number | null | undefined, now: number): string {
  if (since === null || since === undefined || !Number.isFinite(since) || since <= 0) {
    return '';
  }
  const s = Math.max(0, Math.floor(now - since));
  if (s < 60) {
    return `${s}s`;
  }
  if (s < 3600) {
    return `${Math.floor(s / 60)}m`;
  }
  if (s < 86400) {
    return `${Math.floor(s / 3600)}h`;
  }
  return `${Math.floor(s / 86400)}d`;
}

/** What the TTL countdown shows. */
export interface ICountdown {
  /** Seconds left (never negative). */
  remaining: number;
  /** "59m 58s left", "expired", or "" when there is no deadline yet. */
  text: string;
  /** Less than WARN_SECONDS left (and not yet expired). */
  warning: boolean;
  expired: boolean;
}

/** The countdown to `deadline` (Unix seconds) at `now` (Unix seconds). */
export function countdown(deadline: number | null | undefined, now: number): ICountdown {
  if (deadline === null || deadline === undefined || !Number.isFinite(deadline)) {
    return { remaining: 0, text: '', warning: false, expired: false };
  }
  const remaining = Math.max(0, deadline - now);
  if (remaining <= 0) {
    return { remaining: 0, text: 'expired', warning: true, expired: true };
  }
  return {
    remaining,
    text: `${formatDuration(remaining, { seconds: true })} left`,
    warning: remaining < WARN_SECONDS,
    expired: false
  };
}

/** Seconds of a countdown text ("1h 02m 03s left", "4m 05s left", "45s left"); NaN if none. */
export function parseCountdown(text: string): number {
  const m = /(?:(\d+)d\s*)?(?:(\d+)h\s*)?(?:(\d+)m\s*)?(?:(\d+)s)?\s*left/.exec(text);
  if (!m || !m[0].trim().replace('left', '').trim()) {
    return NaN;
  }
  const [, d, h, mi, s] = m.map(x => (x === undefined ? 0 : Number(x)));
  return d * 86400 + h * 3600 + mi * 60 + s;
}

const UNITS = ['B', 'KiB', 'MiB', 'GiB', 'TiB', 'PiB'];

/** A byte count in binary units: "512 B", "1.5 KiB", "7.5 GiB", "80 GiB". */
export function formatBytes(bytes: number | null | undefined): string {
  if (bytes === null || bytes === undefined || !Number.isFinite(bytes) || bytes < 0) {
    return '';
  }
  let value = bytes;
  let unit = 0;
  while (value >= 1024 && unit < UNITS.length - 1) {
    value /= 1024;
    unit += 1;
  }
  if (unit === 0) {
    return `${Math.round(value)} B`;
  }
  const digits = value >= 100 ? 0 : value >= 10 ? 1 : 1;
  const text = value.toFixed(digits).replace(/\.0$/, '');
  return `${text} ${UNITS[unit]}`;
}

/** A percentage with no decimals ("83%"); "" for a missing value. */
export function formatPercent(value: number | null | undefined): string {
  if (value === null || value === undefined || !Number.isFinite(value)) {
    return '';
  }
  return `${Math.round(value)}%`;
}

/** `part / whole` as a 0..100 percentage, clamped; 0 when `whole` is not positive. */
export function ratioPercent(part: number | undefined, whole: number | undefined): number {
  if (!part || !whole || whole <= 0) {
    return 0;
  }
  return Math.max(0, Math.min(100, (100 * part) / whole));
}

/**
 * SVG polyline points of a sparkline: `values` (oldest first) scaled into a `width` x `height`
 * box, 0 at the bottom and `max` at the top. "" for fewer than two values.
 */
export function sparklinePoints(
  values: number[],
  width: number,
  height: number,
  max = 100
): string {
  const finite = values.filter(v => Number.isFinite(v));
  if (finite.length < 2 || max <= 0) {
    return '';
  }
  const step = width / (finite.length - 1);
  return finite
    .map((v, i) => {
      const clamped = Math.max(0, Math.min(max, v));
      const x = i * step;
      const y = height - (clamped / max) * height;
      return `${+x.toFixed(1)},${+y.toFixed(1)}`;
    })
    .join(' ');
}

/** The notebook's label of a group of cards: its path, or a placeholder for none. */
export function notebookLabel(notebook: string): string {
  return notebook ? notebook : '(no notebook)';
}

/** A duration the user typed ("90", "30m", "1h", "1h30m", "2h 15m") in seconds; NaN if bad. */
export function parseDuration(text: string): number {
  const t = text.trim().toLowerCase();
  if (/^\d+(\.\d+)?$/.test(t)) {
    return Number(t);
  }
  const re = /(\d+(?:\.\d+)?)\s*(d|h|m|s)/g;
  let total = 0;
  let consumed = '';
  let m: RegExpExecArray | null;
  while ((m = re.exec(t)) !== null) {
    const n = Number(m[1]);
    total += n * { d: 86400, h: 3600, m: 60, s: 1 }[m[2] as 'd' | 'h' | 'm' | 's'];
    consumed += m[0];
  }
  if (!consumed || consumed.replace(/\s/g, '') !== t.replace(/\s/g, '')) {
    return NaN;
  }
  return total;
}

/**
 * The card's status badge: the state, why the cluster ended, or that Kueue evicted it and it
 * waits in the queue again (`requeued`, the reason as its tooltip and in the card).
 */
export function clusterStatus(c: {
  state: string;
  ended?: string | null;
  evicted?: string | null;
}): { text: string; title: string } {
  if (c.state === 'ended' && c.ended) {
    return { text: `ended: ${c.ended}`, title: c.ended };
  }
  if (c.state === 'starting' && c.evicted) {
    return { text: 'requeued', title: c.evicted };
  }
  return { text: c.state, title: c.ended ?? '' };
}
