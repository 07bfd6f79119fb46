import { randomUUID } from 'node:crypto';
import { afterAll, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { acquireLeases, handOverLease, readLeases, releaseLeases, renewLeases } from '../persistence/leases.ts';
import { createTestDatabase, type TestDatabase } from '../persistence/testDatabase.ts';
import { acquireShardLeases, LeasesUnavailableError, ShardLeaseKeeper } from './leases.ts';

let db: TestDatabase;
let electionId: string;

beforeAll(async () => {
  db = await createTestDatabase();
});

afterAll(async () => {
  await db?.drop();
});

beforeEach(() => {
  electionId = randomUUID();
});

async function expireNow(shards: readonly number[]): Promise<void> {
  await db.pool.query("UPDATE shard_leases SET expires_at = now() - interval '1 second' WHERE election_id = $1 AND shard = ANY($2::integer[])", [electionId, shards]);
}

describe('acquireShardLeases', () => {
  it('takes every shard at epoch 1, and bumps every epoch on each later acquisition', async () => {
    expect(await acquireShardLeases(db.pool, { electionId, shardCount: 4, nodeId: 'node-a', leaseTtlMs: 60_000 })).toEqual([1, 1, 1, 1]);
    // The same node again (a restarted process with the same id): fenced its predecessor.
    expect(await acquireShardLeases(db.pool, { electionId, shardCount: 4, nodeId: 'node-a', leaseTtlMs: 60_000 })).toEqual([2, 2, 2, 2]);
    const leases = await readLeases(db.pool, electionId);
    expect(leases.map((l) => [l.shard, l.epoch, l.ownerNode])).toEqual([0, 1, 2, 3].map((s) => [s, 2, 'node-a']));
    expect(leases[0]!.expiresAtMs - leases[0]!.renewedAtMs).toBe(60_000);
  });

  it('refuses, all or nothing, while another node holds a live lease; takes over once it expired', async () => {
    await acquireShardLeases(db.pool, { electionId, shardCount: 3, nodeId: 'node-a', leaseTtlMs: 60_000 });
    await expireNow([0, 2]);
    const refused = acquireShardLeases(db.pool, { electionId, shardCount: 3, nodeId: 'node-b', leaseTtlMs: 60_000 });
    await expect(refused).rejects.toBeInstanceOf(LeasesUnavailableError);
    await expect(refused).rejects.toMatchObject({ refused: [{ shard: 1, ownerNode: 'node-a', epoch: 1 }] });
    // Nothing was taken, not even the expired shards.
    expect((await readLeases(db.pool, electionId)).map((l) => [l.ownerNode, l.epoch])).toEqual([['node-a', 1], ['node-a', 1], ['node-a', 1]]);
    await expireNow([1]);
    expect(await acquireShardLeases(db.pool, { electionId, shardCount: 3, nodeId: 'node-b', leaseTtlMs: 60_000 })).toEqual([2, 2, 2]);
  });

  it("takeOver 'any' (single-node mode) takes live leases of another id at once", async () => {
    await acquireShardLeases(db.pool, { electionId, shardCount: 2, nodeId: 'host-111', leaseTtlMs: 60_000 });
    expect(await acquireShardLeases(db.pool, { electionId, shardCount: 2, nodeId: 'host-222', leaseTtlMs: 60_000, takeOver: 'any' })).toEqual([2, 2]);
  });

  it('refuses bad requests', async () => {
    await expect(acquireShardLeases(db.pool, { electionId, shardCount: 0, nodeId: 'n', leaseTtlMs: 60_000 })).rejects.toThrow(/shardCount/);
    await expect(acquireShardLeases(db.pool, { electionId, shardCount: 1, nodeId: 'n', leaseTtlMs: 5 })).rejects.toThrow(/leaseTtlMs/);
    await expect(acquireShardLeases(db.pool, { electionId: 'nope', shardCount: 1, nodeId: 'n', leaseTtlMs: 60_000 })).rejects.toThrow(/uuid/);
  });
});

describe('lease SQL', () => {
  it('acquireLeases without allOrNothing takes what it may and reports the rest', async () => {
    await acquireLeases(db.pool, { electionId, shards: [1], nodeId: 'node-a', leaseTtlMs: 60_000, takeOver: 'expired-or-own' });
    const result = await acquireLeases(db.pool, { electionId, shards: [2, 1, 0, 2], nodeId: 'node-b', leaseTtlMs: 60_000, takeOver: 'expired-or-own' });
    expect(result.acquired.map((l) => [l.shard, l.epoch])).toEqual([[0, 1], [2, 1]]);
    expect(result.refused.map((l) => [l.shard, l.ownerNode])).toEqual([[1, 'node-a']]);
  });

  it('renews only leases still held under the same epoch, keeping the epoch; an expired one nobody took is renewed', async () => {
    const epochs = await acquireShardLeases(db.pool, { electionId, shardCount: 2, nodeId: 'node-a', leaseTtlMs: 60_000 });
    await expireNow([0]);
    const renewed = await renewLeases(db.pool, { electionId, nodeId: 'node-a', leaseTtlMs: 30_000, leases: epochs.map((epoch, shard) => ({ shard, epoch })) });
    expect(renewed.map((l) => [l.shard, l.epoch])).toEqual([[0, 1], [1, 1]]);
    expect(renewed.every((l) => l.expiresAtMs > Date.now())).toBe(true);
    // Taken over meanwhile: the renewal of that shard finds nothing.
    await expireNow([1]);
    await acquireLeases(db.pool, { electionId, shards: [1], nodeId: 'node-b', leaseTtlMs: 60_000, takeOver: 'expired-or-own' });
    const again = await renewLeases(db.pool, { electionId, nodeId: 'node-a', leaseTtlMs: 30_000, leases: [{ shard: 0, epoch: 1 }, { shard: 1, epoch: 1 }] });
    expect(again.map((l) => l.shard)).toEqual([0]);
  });

  it('release makes a lease takeable by another node at once, which bumps the epoch', async () => {
    await acquireShardLeases(db.pool, { electionId, shardCount: 2, nodeId: 'node-a', leaseTtlMs: 60_000 });
    expect(await releaseLeases(db.pool, { electionId, nodeId: 'node-a', leases: [{ shard: 0, epoch: 1 }, { shard: 1, epoch: 7 }] })).toEqual([0]);
    const result = await acquireLeases(db.pool, { electionId, shards: [0, 1], nodeId: 'node-b', leaseTtlMs: 60_000, takeOver: 'expired-or-own' });
    expect(result.acquired.map((l) => [l.shard, l.epoch])).toEqual([[0, 2]]);
    expect(result.refused.map((l) => l.shard)).toEqual([1]);
  });
});

describe('ShardLeaseKeeper', () => {
  it('renews on its timer, keeping leases alive past their TTL, and reports one lost to a takeover', async () => {
    const leaseTtlMs = 60_000;
    const epochs = await acquireShardLeases(db.pool, { electionId, shardCount: 2, nodeId: 'node-a', leaseTtlMs });
    // As if the TTL had run out before a renewal: expired, and nobody took them (yet).
    await expireNow([0, 1]);
    const lost: number[][] = [];
    const keeper = new ShardLeaseKeeper({
      pool: db.pool,
      electionId,
      nodeId: 'node-a',
      leaseTtlMs,
      renewIntervalMs: 50,
      leases: epochs.map((epoch, shard) => ({ shard, epoch })),
      onLost: (shards) => lost.push([...shards]),
    });
    keeper.start();
    try {
      // Rounds, counted: each successful one moves lastRenewedAtMs (rounds are 50 ms apart).
      const rounds = new Set<number>();
      await expect.poll(() => rounds.add(keeper.lastRenewedAtMs).size, { timeout: 60_000, interval: 10 }).toBeGreaterThanOrEqual(4);
      // Alive past their TTL: held again, expiring a TTL from the last renewal; another node is refused.
      expect((await readLeases(db.pool, electionId)).every((l) => l.ownerNode === 'node-a' && l.expiresAtMs > Date.now())).toBe(true);
      await expect(acquireShardLeases(db.pool, { electionId, shardCount: 2, nodeId: 'node-b', leaseTtlMs })).rejects.toBeInstanceOf(LeasesUnavailableError);
      // An operator (or the failover logic) takes shard 1 by force: the keeper notices.
      await acquireLeases(db.pool, { electionId, shards: [1], nodeId: 'node-b', leaseTtlMs: 60_000, takeOver: 'any' });
      await expect.poll(() => lost, { timeout: 60_000, interval: 10 }).toEqual([[1]]);
      expect(keeper.heldLeases()).toEqual([{ shard: 0, epoch: 1 }]);
    } finally {
      await keeper.stop({ release: true });
    }
    const leases = await readLeases(db.pool, electionId);
    expect(leases[0]!.expiresAtMs).toBeLessThanOrEqual(Date.now() + 50);
    expect(leases[1]!.ownerNode).toBe('node-b');
  });
});


describe('handOverLease', () => {
  it('gives the holder\'s lease to the next owner under epoch + 1 in one statement; a stale holder changes nothing', async () => {
    await acquireLeases(db.pool, { electionId, shards: [0], nodeId: 'node-a', leaseTtlMs: 60_000, takeOver: 'expired-or-own' });
    expect(await handOverLease(db.pool, { electionId, shard: 0, fromNodeId: 'node-a', epoch: 1, toNodeId: 'node-b', leaseTtlMs: 60_000 })).toBe(2);
    const [lease] = await readLeases(db.pool, electionId);
    expect([lease!.epoch, lease!.ownerNode, lease!.expiresAtMs - lease!.renewedAtMs]).toEqual([2, 'node-b', 60_000]);
    // The old holder again (a second hand-off, or a renewal under its epoch): refused, nothing moves.
    expect(await handOverLease(db.pool, { electionId, shard: 0, fromNodeId: 'node-a', epoch: 1, toNodeId: 'node-c', leaseTtlMs: 60_000 })).toBe(null);
    expect(await renewLeases(db.pool, { electionId, nodeId: 'node-a', leases: [{ shard: 0, epoch: 1 }], leaseTtlMs: 60_000 })).toEqual([]);
    // The new owner holds it as if it had acquired it: it renews and releases it under epoch 2.
    expect((await renewLeases(db.pool, { electionId, nodeId: 'node-b', leases: [{ shard: 0, epoch: 2 }], leaseTtlMs: 60_000 })).map((l) => l.epoch)).toEqual([2]);
    expect(await releaseLeases(db.pool, { electionId, nodeId: 'node-b', leases: [{ shard: 0, epoch: 2 }] })).toEqual([0]);
  });
});
