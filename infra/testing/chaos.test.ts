import { describe, expect, it } from 'vitest';
import { clusterDecisions } from './chaos.ts';
import type { TestCluster } from './clusterHarness.ts';

const line = (time: string, msg: string, fields: object = {}) => JSON.stringify({ level: 30, time, pid: 1, hostname: 'h', service: 'livevote', ...fields, msg });

describe('clusterDecisions (what a chaos failure message carries)', () => {
  it('gives the nodes\' deaths, map writes and takeovers in time order, the last ones only, one short line each', () => {
    const nodes = new Map([
      ['b1', { output: () => [
        line('2026-12-03T10:00:01.000Z', 'members declared dead after silence; their shards go to the survivors', { nodes: ['a1'] }),
        line('2026-12-03T10:00:01.100Z', 'an unrelated line'),
        'not json',
        line('2026-12-03T10:00:03.000Z', 'shard map written', { component: 'cluster', nodeId: 'b1', version: 7, silent: ['a2'], writtenAtMs: 1 }),
      ].join('\n') }],
      ['c2', { output: () => line('2026-12-03T10:00:02.000Z', 'shards taken over and served', { electionId: 'e', shards: [2], wantedSinceMs: [1], recovery: [{ shard: 2, path: 'cold', coldBecause: 'no_state_yet' }] }) }],
    ]);
    const cluster = { nodes } as unknown as TestCluster;
    expect(clusterDecisions(cluster)).toEqual([
      '10:00:01.000 b1: members declared dead after silence; their shards go to the survivors {"nodes":["a1"]}',
      '10:00:02.000 c2: shards taken over and served {"shards":[2],"recovery":[{"shard":2,"path":"cold","coldBecause":"no_state_yet"}]}',
      '10:00:03.000 b1: shard map written {"version":7,"silent":["a2"]}',
    ]);
    expect(clusterDecisions(cluster, 1)).toEqual(['10:00:03.000 b1: shard map written {"version":7,"silent":["a2"]}']);
  });
});
