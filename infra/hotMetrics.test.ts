import { Counter, Histogram, Registry } from 'prom-client';
import { describe, expect, it } from 'vitest';
import { HotCounter, HotHistogram } from './hotMetrics.ts';

describe('hot metrics export exactly what prom-client exports for the same updates', () => {
  it('histogram: buckets, sum and count per label set', async () => {
    const ours = new Registry();
    const theirs = new Registry();
    const options = { name: 'x_seconds', help: 'A duration', labelNames: ['route', 'status'] as const, buckets: [0.001, 0.01, 0.1, 1] };
    const hot = new HotHistogram({ ...options, registers: [ours] });
    const reference = new Histogram({ ...options, registers: [theirs] });
    const values = [0, 0.001, 0.0011, 0.01, 0.05, 0.1, 0.5, 1, 2, 100, 0.0005];
    for (const [i, v] of values.entries()) {
      const labels = { route: i % 2 ? '/a' : '/b', status: '200' };
      hot.labels(labels).observe(v);
      reference.observe(labels, v);
    }
    expect(await ours.metrics()).toBe(await theirs.metrics());
  });

  it('counter: one series per label set, inc by one or more', async () => {
    const ours = new Registry();
    const theirs = new Registry();
    const options = { name: 'x_total', help: 'A count', labelNames: ['outcome'] as const };
    const hot = new HotCounter({ ...options, registers: [ours] });
    const reference = new Counter({ ...options, registers: [theirs] });
    const accepted = hot.labels({ outcome: 'accepted' });
    expect(hot.labels({ outcome: 'accepted' })).toBe(accepted);
    accepted.inc();
    accepted.inc(2);
    hot.labels({ outcome: 'overloaded' }).inc();
    reference.inc({ outcome: 'accepted' });
    reference.inc({ outcome: 'accepted' }, 2);
    reference.inc({ outcome: 'overloaded' });
    expect(await ours.metrics()).toBe(await theirs.metrics());
  });

  it('refuses unknown labels, more series than allowed, and a clashing name', () => {
    const registry = new Registry();
    const counter = new HotCounter({ name: 'y_total', help: 'h', labelNames: ['a'] as const, registers: [registry], seriesMax: 2 });
    expect(() => counter.labels({ a: '1', b: '2' } as never)).toThrow(/unknown label b/);
    counter.labels({ a: '1' });
    counter.labels({ a: '2' });
    counter.labels({ a: '1' }); // existing: no new series
    expect(() => counter.labels({ a: '3' })).toThrow(/more than 2/);
    expect(() => new HotCounter({ name: 'y_total', help: 'h', labelNames: [], registers: [registry] })).toThrow(/already been registered/);
  });

  it('ignores non-finite observations instead of poisoning the sum', async () => {
    const registry = new Registry();
    const histogram = new HotHistogram({ name: 'z_seconds', help: 'h', labelNames: [], buckets: [1], registers: [registry] });
    const series = histogram.labels({});
    series.observe(Number.NaN);
    series.observe(0.5);
    expect(await registry.metrics()).toContain('z_seconds_sum 0.5\nz_seconds_count 1');
  });
});
