import {
  clusterStatus,
  countdown,
  formatAge,
  formatBytes,
  formatDuration,
  formatPercent,
  parseCountdown,
  parseDuration,
  ratioPercent,
  sparklinePoints,
  WARN_SECONDS
} from '../src/format';

describe('formatDuration', () => {
  it('writes seconds, minutes, hours and days like the Python side', () => {
    expect(formatDuration(0)).toBe('0s');
    expect(formatDuration(45.9)).toBe('45s');
    expect(formatDuration(245)).toBe('4m 05s');
    expect(formatDuration(3600)).toBe('1h 00m');
    expect(formatDuration(3723)).toBe('1h 02m');
    expect(formatDuration(3723, { seconds: true })).toBe('1h 02m 03s');
    expect(formatDuration(2 * 86400 + 3 * 3600)).toBe('2d 03h');
  });

  it('treats negative and non-finite values as zero', () => {
    expect(formatDuration(-5)).toBe('0s');
    expect(formatDuration(NaN)).toBe('0s');
  });
});

describe('formatAge', () => {
  it('uses the largest whole unit', () => {
    expect(formatAge(1000, 1005)).toBe('5s');
    expect(formatAge(1000, 1000 + 3 * 60 + 59)).toBe('3m');
    expect(formatAge(1000, 1000 + 2 * 3600)).toBe('2h');
    expect(formatAge(1000, 1000 + 86400 * 3)).toBe('3d');
  });

  it('is empty without a time, and never negative (clock skew)', () => {
    expect(formatAge(null, 10)).toBe('');
    expect(formatAge(undefined, 10)).toBe('');
    expect(formatAge(0, 10)).toBe('');
    expect(formatAge(2000, 1990)).toBe('0s');
  });
});

describe('countdown', () => {
  it('counts down to the deadline with seconds', () => {
    const c = countdown(1000 + 3600 + 62, 1000);
    expect(c.text).toBe('1h 01m 02s left');
    expect(c.remaining).toBe(3662);
    expect(c.warning).toBe(false);
    expect(c.expired).toBe(false);
  });

  it('ticks: one second later it shows one second less', () => {
    const a = parseCountdown(countdown(5000, 1000).text);
    const b = parseCountdown(countdown(5000, 1001).text);
    expect(a - b).toBe(1);
  });

  it('warns in the last ten minutes only', () => {
    expect(countdown(1000 + WARN_SECONDS, 1000).warning).toBe(false);
    expect(countdown(1000 + WARN_SECONDS - 1, 1000).warning).toBe(true);
    expect(countdown(1000 + 59, 1000).text).toBe('59s left');
  });

  it('says expired at and after the deadline', () => {
    expect(countdown(1000, 1000)).toEqual({ remaining: 0, text: 'expired', warning: true, expired: true });
    expect(countdown(1000, 2000).text).toBe('expired');
  });

  it('is empty without a deadline (a starting cluster)', () => {
    expect(countdown(null, 1000).text).toBe('');
    expect(countdown(undefined, 1000).warning).toBe(false);
  });
});

describe('parseCountdown and parseDuration', () => {
  it('reads back what countdown writes', () => {
    for (const s of [5, 65, 3599, 3600, 7322, 86400 * 2 + 5]) {
      const text = countdown(s, 0).text;
      const back = parseCountdown(text);
      // days drop the minutes and seconds
      expect(s - back).toBeLessThan(s >= 86400 ? 3600 : 1);
    }
    expect(parseCountdown('expired')).toBeNaN();
  });

  it('parses user durations', () => {
    expect(parseDuration('90')).toBe(90);
    expect(parseDuration('30m')).toBe(1800);
    expect(parseDuration('1h30m')).toBe(5400);
    expect(parseDuration('2h 15m')).toBe(8100);
    expect(parseDuration('1d')).toBe(86400);
    expect(parseDuration('soon')).toBeNaN();
    expect(parseDuration('1h and more')).toBeNaN();
  });
});

describe('formatBytes, formatPercent, ratioPercent', () => {
  it('uses binary units', () => {
    expect(formatBytes(512)).toBe('512 B');
    expect(formatBytes(1536)).toBe('1.5 KiB');
    expect(formatBytes(512 * 1024 * 1024)).toBe('512 MiB');
    expect(formatBytes(8_000_000_000)).toBe('7.5 GiB');
    expect(formatBytes(81_559_000_000)).toBe('76 GiB');
    expect(formatBytes(undefined)).toBe('');
    expect(formatBytes(-1)).toBe('');
  });

  it('rounds percentages and clamps ratios', () => {
    expect(formatPercent(97.5)).toBe('98%');
    expect(formatPercent(null)).toBe('');
    expect(ratioPercent(41, 82)).toBe(50);
    expect(ratioPercent(200, 100)).toBe(100);
    expect(ratioPercent(5, 0)).toBe(0);
    expect(ratioPercent(undefined, 10)).toBe(0);
  });
});

describe('sparklinePoints', () => {
  it('scales values into the box, 0 at the bottom', () => {
    expect(sparklinePoints([0, 50, 100], 60, 16)).toBe('0,16 30,8 60,0');
  });

  it('clamps out-of-range values and needs two points', () => {
    expect(sparklinePoints([-10, 150], 10, 10)).toBe('0,10 10,0');
    expect(sparklinePoints([42], 60, 16)).toBe('');
    expect(sparklinePoints([], 60, 16)).toBe('');
  });
});

describe('clusterStatus', () => {
  it('says a cluster Kueue evicted waits in the queue again, with the reason', () => {
    const why = 'preempted by a higher-priority workload in ClusterQueue team-cq; variables on ' +
      'the agents are lost; it waits in the queue again';
    expect(clusterStatus({ state: 'starting', evicted: why })).toEqual({ text: 'requeued', title: why });
    expect(clusterStatus({ state: 'starting', evicted: null })).toEqual({ text: 'starting', title: '' });
  });

  it('names why an ended cluster ended, and shows a running one as running', () => {
    expect(clusterStatus({ state: 'ended', ended: 'its TTL ran out', evicted: 'x' }))
      .toEqual({ text: 'ended: its TTL ran out', title: 'its TTL ran out' });
    expect(clusterStatus({ state: 'running' })).toEqual({ text: 'running', title: '' });
  });
});
