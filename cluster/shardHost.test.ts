import { describe, expect, it, vi } from 'vitest';
import { ShardHost } from './shardHost.ts';
import type { ClusterView, ShardLeases } from './ports.ts';
import type { VoteNode } from '../actors/voteNode.ts';

const electionId = '00000000-0000-4000-8000-000000000001';
const silent = { info() {}, warn() {}, error() {} };

describe('ShardHost', () => {
  it('takes the shards the map gives it, and reports leases found taken at renewal', async () => {
    const hosted = new Set<number>();
    const voteNode = {
      hostShards: vi.fn(async (r: { shards: readonly { shard: number }[] }) => { for (const s of r.shards) hosted.add(s.shard); }),
      releaseShard: vi.fn(async (_e: string, shard: number) => hosted.delete(shard)),
      isServing: (_e: string, shard: number) => hosted.has(shard),
    } as unknown as VoteNode;
    const leases: ShardLeases = {
      acquire: async (_e, shards) => shards.map((shard) => ({ shard, epoch: 7 })),
      renew: async () => [], // every lease was taken by another node
      release: async () => undefined,
    };
    const lost: number[] = [];
    const host = new ShardHost({
      nodeId: 'n1', voteNode, leases, leaseTtlMs: 30, log: silent,
      election: () => ({ shardCount: 2, candidateCount: 2, status: 'open' }),
      onLeasesLost: (count) => { lost.push(count); },
    });
    const row = (shard: number) => ({ electionId, shard, ownerNodeId: 'n2', mapVersion: 1, epoch: 6, leaseNodeId: null, leaseExpiresAtMs: 0, pinned: false, replicaNodeIds: [] });
    const view: ClusterView = {
      version: 1, electionsVersion: 1, coordinatorNodeId: 'n1', readAtMs: 0, operations: [],
      nodes: [{ nodeId: 'n1', az: 'a', url: 'http://x', status: 'alive', incarnation: 1, startedAtMs: 0, lastHeartbeatAtMs: 0, draining: false }],
      shards: [{ ...row(0), ownerNodeId: 'n1' }, row(1)],
      elections: [{ electionId, shardCount: 2 }],
    };
    await host.apply(view);
    expect(host.heldShards()).toEqual([{ electionId, shard: 0, epoch: 7 }]);
    host.start();
    // The map still names this node, so it takes the shard again (and, with this store, loses it again).
    await expect.poll(() => lost.length, { timeout: 10_000 }).toBeGreaterThan(0);
    expect(lost.every((count) => count === 1)).toBe(true);
    expect(voteNode.releaseShard).toHaveBeenCalledWith(electionId, 0);
    await host.stop();
  });
});
