// Per-node votes/s from two readings of each node's metrics text: the counter lines that count,
// the reuse of a fresh reading, a restarted node, a node that does not answer, a stale reading.
import { describe, expect, it } from 'vitest';
import { NodeVoteRates, nodeRateDefaults, votesHandledTotal } from './nodeRates.ts';

const metricsText = (local: number, received: number, forwarded = 0) => [
  '# HELP livevote_votes_routed_total Votes by route',
  '# TYPE livevote_votes_routed_total counter',
  `livevote_votes_routed_total{route="local",outcome="accepted"} ${local}`,
  `livevote_votes_routed_total{route="local",outcome="already_voted"} 0`,
  `livevote_votes_routed_total{route="received",outcome="accepted"} ${received}`,
  `livevote_votes_routed_total{route="forwarded",outcome="accepted"} ${forwarded}`,
  'livevote_shards_served 4',
  '',
].join('\n');

describe('per-node votes/s', () => {
  it('counts the votes its shards handled (local + received, any outcome), not the ones it forwarded', () => {
    expect(votesHandledTotal(metricsText(10, 5, 1000))).toBe(15);
    expect(votesHandledTotal('# HELP livevote_votes_routed_total Votes by route\n')).toBe(0);
  });

  it('turns two readings into a rate, reuses a fresh one, and shows null for a silent, restarted or dead node', async () => {
    let nowMs = 1_000_000;
    const totals = new Map<string, number>([['http://a', 100], ['http://b', 0]]);
    const fetched: string[] = [];
    const rates = new NodeVoteRates({
      nowMs: () => nowMs,
      fetchMetrics: async (url) => {
        fetched.push(url);
        const total = totals.get(url.replace('/metrics', ''));
        if (total === undefined) throw new Error('connection refused');
        return metricsText(total, 0);
      },
    });
    const nodes = [
      { nodeId: 'a', url: 'http://a', status: 'alive' },
      { nodeId: 'b', url: 'http://b/', status: 'alive' },
      { nodeId: 'c', url: 'http://c', status: 'alive' },
      { nodeId: 'd', url: 'http://d', status: 'dead' },
    ];
    expect(Object.fromEntries(await rates.ratesOf(nodes))).toEqual({ a: null, b: null, c: null });
    expect(fetched).toEqual(['http://a/metrics', 'http://b/metrics', 'http://c/metrics']);

    nowMs += 2_000;
    totals.set('http://a', 1_100);
    expect(Object.fromEntries(await rates.ratesOf(nodes))).toEqual({ a: 500, b: 0, c: null });
    // Within the sample interval: the same answer, no fetch.
    fetched.length = 0;
    nowMs += nodeRateDefaults.sampleIntervalMs - 1;
    expect(Object.fromEntries(await rates.ratesOf(nodes))).toEqual({ a: 500, b: 0, c: null });
    expect(fetched).toEqual(['http://c/metrics']); // c had no reading to reuse

    // a restarted (its counter went back): no rate from that pair, then a rate again.
    nowMs += 1_000;
    totals.set('http://a', 30);
    expect((await rates.ratesOf(nodes)).get('a')).toBe(null);
    nowMs += 1_000;
    totals.set('http://a', 60);
    expect((await rates.ratesOf(nodes)).get('a')).toBe(30);
    // A reading older than sampleAgeMaxMs gives no rate.
    nowMs += nodeRateDefaults.sampleAgeMaxMs + 1;
    expect((await rates.ratesOf(nodes)).get('a')).toBe(null);
  });

  it('fetches each node once however many callers ask at the same time', async () => {
    let fetches = 0;
    const rates = new NodeVoteRates({ nowMs: () => 0, fetchMetrics: async () => { fetches++; await new Promise((r) => setTimeout(r, 10)); return metricsText(1, 1); } });
    const nodes = [{ nodeId: 'a', url: 'http://a', status: 'alive' }];
    await Promise.all([rates.ratesOf(nodes), rates.ratesOf(nodes), rates.ratesOf(nodes)]);
    expect(fetches).toBe(1);
  });
});
