// The one Prometheus text parser of the benchmarks (bench/lib/livevote.ts), on prom-client's own
// output, so a format it does not read fails here rather than as a silent 0 in a bench report.
import { Counter, Gauge, Histogram, Registry } from 'prom-client';
import { expect, it } from 'vitest';
import { metricSamples } from './livevote.ts';

it('reads labelled and unlabelled samples of exactly the metric named, as prom-client writes them', async () => {
  const registry = new Registry();
  const routed = new Counter({ name: 'livevote_votes_routed_total', help: 'h', labelNames: ['route', 'outcome'], registers: [registry] });
  routed.inc({ route: 'local', outcome: 'accepted' }, 12);
  routed.inc({ route: 'forwarded', outcome: 'accepted' }, 3);
  routed.inc({ route: 'local', outcome: 'already_voted' }, 1e21);
  new Gauge({ name: 'livevote_votes_routed_total_shadow', help: 'h', registers: [registry] }).set(99);
  const lag = new Gauge({ name: 'livevote_lag_seconds', help: 'h', registers: [registry] });
  lag.set(0.0125);
  const commits = new Histogram({ name: 'livevote_commit_duration_seconds', help: 'h', labelNames: ['outcome'], buckets: [0.01], registers: [registry] });
  commits.observe({ outcome: 'committed' }, 0.004);
  const text = await registry.metrics();

  expect(metricSamples(text, 'livevote_votes_routed_total')).toEqual([
    { labels: { route: 'local', outcome: 'accepted' }, value: 12 },
    { labels: { route: 'forwarded', outcome: 'accepted' }, value: 3 },
    { labels: { route: 'local', outcome: 'already_voted' }, value: 1e21 },
  ]);
  expect(metricSamples(text, 'livevote_lag_seconds')).toEqual([{ labels: {}, value: 0.0125 }]);
  expect(metricSamples(text, 'livevote_commit_duration_seconds_count')).toEqual([{ labels: { outcome: 'committed' }, value: 1 }]);
  expect(metricSamples(text, 'livevote_commit_duration_seconds')).toEqual([]);
  expect(metricSamples(text, 'livevote_missing_total')).toEqual([]);
});
