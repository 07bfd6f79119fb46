import { afterEach, describe, expect, it, vi } from 'vitest';
import { ShardHost } from './shardHost.ts';
import type { ClusterView, ShardLeases } from './ports.ts';
import { SimClusterState } from './testing/simCluster.ts';
import { createMemoryAdapters, MemorySnapshotStore } from '../actors/memoryAdapters.ts';
import { createVoteNode, type VoteNode } from '../actors/voteNode.ts';
import type { VoteOutcome } from '../actors/shard.ts';

const electionId = '00000000-0000-4000-8000-000000000001';
const silent = { info() {}, warn() {}, error() {} };

describe('ShardHost', () => {
  it('takes the shards the map gives it, and reports leases found taken at renewal', async () => {
    const hosted = new Set<number>();
    const voteNode = {
      hostShards: vi.fn(async (r: { shards: readonly { shard: number }[] }) => { for (const s of r.shards) hosted.add(s.shard); return []; }),
      releaseShard: vi.fn(async (_e: string, shard: number) => hosted.delete(shard)),
      isServing: (_e: string, shard: number) => hosted.has(shard),
    } as unknown as VoteNode;
    const leases: ShardLeases = {
      acquire: async (_e, shards) => shards.map((shard) => ({ shard, epoch: 7 })),
      renew: async () => [], // every lease was taken by another node
      release: async () => undefined,
      handOver: async () => null,
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

describe('ShardHost hand-offs', () => {
  const node = (nodeId: string) => ({ nodeId, az: 'a', url: `http://${nodeId}`, status: 'alive' as const, incarnation: 1, startedAtMs: 0, lastHeartbeatAtMs: 0, draining: false });
  const viewOf = (owner: string, leaseNodeId: string | null): ClusterView => ({
    version: 1, electionsVersion: 1, coordinatorNodeId: 'n1', readAtMs: 0, operations: [],
    nodes: [node('n1'), node('n2')],
    shards: [{ electionId, shard: 0, ownerNodeId: owner, mapVersion: 1, epoch: 6, leaseNodeId, leaseExpiresAtMs: leaseNodeId === null ? 0 : 60_000, pinned: false, replicaNodeIds: [] }],
    elections: [{ electionId, shardCount: 1 }],
  });
  const fakeVoteNode = () => {
    const hosted = new Set<number>();
    return {
      hostShards: vi.fn(async (r: { shards: readonly { shard: number }[] }) => { for (const s of r.shards) hosted.add(s.shard); }),
      releaseShard: vi.fn(async (_e: string, shard: number) => (hosted.delete(shard) ? { backlogMs: 0, backlogResolved: true, snapshotMs: 0, snapshotWritten: false } : undefined)),
      isServing: (_e: string, shard: number) => hosted.has(shard),
    } as unknown as VoteNode;
  };

  it('the old owner releases the lease of a shard the map moved, then tells the new owner (released)', async () => {
    const released: unknown[] = [];
    const calls: string[] = [];
    const host = new ShardHost({
      nodeId: 'n1', voteNode: fakeVoteNode(), leaseTtlMs: 60_000, log: silent,
      leases: {
        acquire: async (_e, shards) => shards.map((shard) => ({ shard, epoch: 7 })),
        renew: async (_e, leases) => leases,
        release: async () => { calls.push('lease released'); },
        handOver: async () => null,
      },
      election: () => ({ shardCount: 1, candidateCount: 2, status: 'open' }),
      onReleased: (toNodeId, event) => { calls.push('told'); released.push({ toNodeId, ...event }); },
    });
    await host.apply(viewOf('n1', null));
    expect(host.heldShards()).toEqual([{ electionId, shard: 0, epoch: 7 }]);
    await host.apply(viewOf('n2', 'n1'));
    expect(host.heldShards()).toEqual([]);
    expect(calls).toEqual(['lease released', 'told']);
    expect(released).toEqual([{ toNodeId: 'n2', electionId, shard: 0, epoch: 7 }]);
    await host.stop();
  });

  it('the new owner waiting for a live holder takes the lease as soon as it hears the holder released it', async () => {
    let holderReleased = false;
    const attempts: number[] = [];
    const host = new ShardHost({
      nodeId: 'n2', voteNode: fakeVoteNode(), leaseTtlMs: 60_000, log: silent,
      // A poll far longer than the test's patience: only the `released` hint can end the wait.
      holderPollMs: 600_000,
      leases: {
        acquire: async (_e, shards, takeOver) => {
          attempts.push(shards.length);
          return takeOver === 'expired-or-own' && holderReleased ? shards.map((shard) => ({ shard, epoch: 8 })) : [];
        },
        renew: async (_e, leases) => leases,
        release: async () => undefined,
        handOver: async () => null,
      },
      election: () => ({ shardCount: 1, candidateCount: 2, status: 'open' }),
    });
    const applied = host.apply(viewOf('n2', 'n1'));
    await expect.poll(() => attempts.filter((n) => n > 0).length, { timeout: 10_000 }).toBe(1);
    holderReleased = true;
    host.holderReleased();
    await applied;
    expect(host.heldShards()).toEqual([{ electionId, shard: 0, epoch: 8 }]);
    await host.stop();
  });
});

describe('ShardHost: a release never races a renewal', () => {
  it('a renewal round in flight when a shard is handed off finishes before its lease is released (else it would extend the released lease by a TTL)', async () => {
    const hosted = new Set<number>();
    const voteNode = {
      hostShards: vi.fn(async (r: { shards: readonly { shard: number }[] }) => { for (const s of r.shards) hosted.add(s.shard); }),
      releaseShard: vi.fn(async (_e: string, shard: number) => (hosted.delete(shard) ? { backlogMs: 0, backlogResolved: true, snapshotMs: 0, snapshotWritten: false } : undefined)),
      isServing: (_e: string, shard: number) => hosted.has(shard),
    } as unknown as VoteNode;
    const events: string[] = [];
    let openRenewal: (() => void) | undefined;
    const host = new ShardHost({
      nodeId: 'n1', voteNode, leaseTtlMs: 30, log: silent,
      leases: {
        acquire: async (_e, shards) => shards.map((shard) => ({ shard, epoch: 7 })),
        renew: async (_e, leases) => {
          events.push('renew asked');
          await new Promise<void>((resolve) => { openRenewal = resolve; });
          events.push('renewed');
          return leases;
        },
        release: async () => { events.push('released'); },
        handOver: async () => null,
      },
      election: () => ({ shardCount: 1, candidateCount: 2, status: 'open' }),
    });
    const node = (nodeId: string) => ({ nodeId, az: 'a', url: `http://${nodeId}`, status: 'alive' as const, incarnation: 1, startedAtMs: 0, lastHeartbeatAtMs: 0, draining: false });
    const viewOf = (owner: string): ClusterView => ({
      version: 1, electionsVersion: 1, coordinatorNodeId: 'n1', readAtMs: 0, operations: [], nodes: [node('n1'), node('n2')],
      shards: [{ electionId, shard: 0, ownerNodeId: owner, mapVersion: 1, epoch: 6, leaseNodeId: null, leaseExpiresAtMs: 0, pinned: false, replicaNodeIds: [] }],
      elections: [{ electionId, shardCount: 1 }],
    });
    await host.apply(viewOf('n1'));
    host.start();
    await expect.poll(() => openRenewal !== undefined, { timeout: 10_000 }).toBe(true);
    const handedOff = host.apply(viewOf('n2'));
    await expect.poll(() => (voteNode.releaseShard as ReturnType<typeof vi.fn>).mock.calls.length, { timeout: 10_000 }).toBe(1);
    expect(events).toEqual(['renew asked']);
    openRenewal!();
    await handedOff;
    expect(events.slice(0, 3)).toEqual(['renew asked', 'renewed', 'released']);
    await host.stop();
  });
});

describe('ShardHost: leases handed over', () => {
  const node = (nodeId: string) => ({ nodeId, az: 'a', url: `http://${nodeId}`, status: 'alive' as const, incarnation: 1, startedAtMs: 0, lastHeartbeatAtMs: 0, draining: false });
  const viewOf = (owner: string, version = 1): ClusterView => ({
    version, electionsVersion: 1, coordinatorNodeId: 'n1', readAtMs: 0, operations: [], nodes: [node('n1'), node('n2'), node('n3')],
    shards: [{ electionId, shard: 0, ownerNodeId: owner, mapVersion: version, epoch: 6, leaseNodeId: 'n1', leaseExpiresAtMs: 60_000, pinned: false, replicaNodeIds: [] }],
    elections: [{ electionId, shardCount: 1 }],
  });
  const fakeVoteNode = () => {
    const hosted = new Map<number, number>();
    return {
      hosted,
      voteNode: {
        hostShards: vi.fn(async (r: { shards: readonly { shard: number; epoch: number }[] }) => { for (const s of r.shards) hosted.set(s.shard, s.epoch); return []; }),
        releaseShard: vi.fn(async (_e: string, shard: number) => (hosted.delete(shard) ? { backlogMs: 0, backlogResolved: true, snapshotMs: 0, snapshotWritten: false } : undefined)),
        isServing: (_e: string, shard: number) => hosted.has(shard),
      } as unknown as VoteNode,
    };
  };

  it('the old owner hands the lease to the node the map names (no release), and says under which epoch', async () => {
    const calls: string[] = [];
    const notices: unknown[] = [];
    const { voteNode } = fakeVoteNode();
    const host = new ShardHost({
      nodeId: 'n1', voteNode, leaseTtlMs: 60_000, log: silent,
      leases: {
        acquire: async (_e, shards) => shards.map((shard) => ({ shard, epoch: 7 })),
        renew: async (_e, leases) => leases,
        release: async () => { calls.push('released'); },
        handOver: async (_e, lease, to) => { calls.push(`handed ${lease.shard}@${lease.epoch} to ${to}`); return lease.epoch + 1; },
      },
      election: () => ({ shardCount: 1, candidateCount: 2, status: 'open' }),
      onReleased: (toNodeId, notice) => notices.push({ toNodeId, ...notice }),
    });
    await host.apply({ ...viewOf('n1'), shards: [{ ...viewOf('n1').shards[0]!, leaseNodeId: null, leaseExpiresAtMs: 0 }] });
    await host.apply(viewOf('n2', 2));
    expect(calls).toEqual(['handed 0@7 to n2']);
    expect(notices).toEqual([{ toNodeId: 'n2', electionId, shard: 0, epoch: 7, grantedEpoch: 8, mapVersion: 2 }]);
    await host.stop();
  });

  it('the new owner serves under a handed lease without acquiring it; one the newer map gives to another node is given back', async () => {
    const acquireCalls: number[][] = [];
    const releases: string[] = [];
    const { voteNode, hosted } = fakeVoteNode();
    const host = new ShardHost({
      nodeId: 'n2', voteNode, leaseTtlMs: 60_000, log: silent,
      // A poll far longer than the test's patience: only the notice can end the wait.
      holderPollMs: 600_000,
      leases: {
        acquire: async (_e, shards) => { acquireCalls.push([...shards]); return []; },
        renew: async (_e, leases) => leases,
        release: async (_e, leases) => { releases.push(leases.map((l) => `${l.shard}@${l.epoch}`).join()); },
        handOver: async () => null,
      },
      election: () => ({ shardCount: 1, candidateCount: 2, status: 'open' }),
    });
    const applied = host.apply(viewOf('n2'));
    await expect.poll(() => acquireCalls.length, { timeout: 10_000 }).toBeGreaterThan(0);
    const acquiredBefore = acquireCalls.length;
    host.holderReleased({ electionId, shard: 0, epoch: 7, grantedEpoch: 8, mapVersion: 1 });
    await applied;
    expect(hosted.get(0)).toBe(8);
    expect(host.heldShards()).toEqual([{ electionId, shard: 0, epoch: 8 }]);
    expect(acquireCalls.slice(acquiredBefore).every((shards) => shards.length === 0)).toBe(true);
    await host.stop();

    // Another node, whose newer map (version 3) names n3: the grant (of map version 2) goes back.
    const other = new ShardHost({
      nodeId: 'n2', voteNode: fakeVoteNode().voteNode, leaseTtlMs: 60_000, log: silent,
      leases: { acquire: async () => [], renew: async (_e, leases) => leases, release: async (_e, leases) => { releases.push(leases.map((l) => `${l.shard}@${l.epoch}`).join()); }, handOver: async () => null },
      election: () => ({ shardCount: 1, candidateCount: 2, status: 'open' }),
    });
    other.holderReleased({ electionId, shard: 0, epoch: 8, grantedEpoch: 9, mapVersion: 2 });
    await other.apply(viewOf('n3', 3));
    expect(releases).toContain('0@9');
    expect(other.heldShards()).toEqual([]);
    await other.stop();
  });
});

describe('ShardHost: a failed round is tried again without waiting for the next view', () => {
  const view: ClusterView = {
    version: 1, electionsVersion: 1, coordinatorNodeId: 'n1', readAtMs: 0, operations: [],
    nodes: [{ nodeId: 'n1', az: 'a', url: 'http://n1', status: 'alive', incarnation: 1, startedAtMs: 0, lastHeartbeatAtMs: 0, draining: false }],
    shards: [{ electionId, shard: 0, ownerNodeId: 'n1', mapVersion: 1, epoch: 6, leaseNodeId: null, leaseExpiresAtMs: 0, pinned: false, replicaNodeIds: [] }],
    elections: [{ electionId, shardCount: 1 }],
  };
  const voteNode = () => {
    const hosted = new Set<number>();
    return {
      hostShards: vi.fn(async (r: { shards: readonly { shard: number }[] }) => { for (const s of r.shards) hosted.add(s.shard); return []; }),
      releaseShard: vi.fn(async (_e: string, shard: number) => hosted.delete(shard)),
      isServing: (_e: string, shard: number) => hosted.has(shard),
    } as unknown as VoteNode;
  };

  it('a lease statement that failed (a timeout, say) is retried with backoff on the same view until it succeeds', async () => {
    const attemptsAtMs: number[] = [];
    const host = new ShardHost({
      nodeId: 'n1', voteNode: voteNode(), leaseTtlMs: 60_000, log: silent, reconcileRetryMs: 20, reconcileRetryMaxMs: 80,
      leases: {
        acquire: async (_e, shards) => {
          if (shards.length === 0) return [];
          attemptsAtMs.push(performance.now());
          if (attemptsAtMs.length <= 3) throw new Error('Query read timeout');
          return shards.map((shard) => ({ shard, epoch: 7 }));
        },
        renew: async (_e, leases) => leases,
        release: async () => undefined,
        handOver: async () => null,
      },
      election: () => ({ shardCount: 1, candidateCount: 2, status: 'open' }),
    });
    await host.apply(view); // fails; no other view ever arrives
    expect(host.heldShards()).toEqual([]);
    await expect.poll(() => host.heldShards(), { timeout: 10_000 }).toEqual([{ electionId, shard: 0, epoch: 7 }]);
    expect(attemptsAtMs).toHaveLength(4);
    // Backoff: each wait at least the configured delay, doubling (20, 40, 80 ms): a lower bound only.
    const waits = attemptsAtMs.slice(1).map((atMs, i) => atMs - attemptsAtMs[i]!);
    expect(waits[0]).toBeGreaterThanOrEqual(19);
    expect(waits[1]).toBeGreaterThanOrEqual(39);
    expect(waits[2]).toBeGreaterThanOrEqual(79);
    await host.stop();
  });

  it('no retry after stop', async () => {
    let attempts = 0;
    const host = new ShardHost({
      nodeId: 'n1', voteNode: voteNode(), leaseTtlMs: 60_000, log: silent, reconcileRetryMs: 10,
      leases: {
        acquire: async () => { attempts++; throw new Error('Query read timeout'); },
        renew: async (_e, leases) => leases,
        release: async () => undefined,
        handOver: async () => null,
      },
      election: () => ({ shardCount: 1, candidateCount: 2, status: 'open' }),
    });
    await host.apply(view);
    await host.stop();
    const attemptsAtStop = attempts;
    await new Promise((resolve) => setTimeout(resolve, 100));
    expect(attempts).toBe(attemptsAtStop);
  });
});

describe('ShardHost on the real vote node: a shard whose write was fenced or whose lease was lost is served again', () => {
  // The real vote node on the in-memory store, whose lease epochs fence its journal, and the
  // shard leases of two nodes as persistence/leases.ts states them (simCluster.ts).
  const shardCount = 2;
  const cleanups: (() => Promise<void>)[] = [];
  afterEach(async () => {
    for (const cleanup of cleanups.splice(0)) await cleanup();
  });

  /** A promise the test settles: a gate that what it guards waits at. */
  class Gate {
    private opened: Promise<void> | null = null;
    private openIt: () => void = () => undefined;
    waiting = 0;
    close(): void {
      this.opened = new Promise((resolve) => { this.openIt = resolve; });
    }
    open(): void {
      this.opened = null;
      this.openIt();
    }
    async pass(): Promise<void> {
      if (this.opened === null) return;
      this.waiting++;
      await this.opened;
    }
  }

  /**
   * The map names B for every shard of `electionIds`; `recoveries` holds the first election's only.
   * The leases expire on `nowMs` (the test's clock, if it wants one).
   */
  function clusterOfTwo({ electionIds = [electionId], nowMs = () => Date.now() }: { electionIds?: readonly string[]; nowMs?: () => number } = {}) {
    const adapters = createMemoryAdapters();
    const sim = new SimClusterState(nowMs, adapters.store, () => electionIds.map((id) => ({ electionId: id, shardCount })));
    for (const id of electionIds) {
      for (let shard = 0; shard < shardCount; shard++) {
        sim.owners.set(`${id}/${shard}`, { electionId: id, shard, ownerNodeId: 'B', mapVersion: 1, pinned: false, replicaNodeIds: [] });
      }
    }
    const commits = new Gate();
    const recoveries = new Gate();
    const snapshots = new MemorySnapshotStore(adapters.store);
    const voteNode = createVoteNode({
      journal: {
        commit: async (batch) => { await commits.pass(); return adapters.journal.commit(batch); },
        wasCommitted: (batchId) => adapters.journal.wasCommitted(batchId),
      },
      snapshots: {
        writeSnapshot: (snapshot) => snapshots.writeSnapshot(snapshot),
        readLatestSnapshot: async (key) => {
          if (key.electionId === electionIds[0]) await recoveries.pass();
          return snapshots.readLatestSnapshot(key);
        },
        readVotesAfter: (key, afterBatchId, onRows) => snapshots.readVotesAfter(key, afterBatchId, onRows),
      },
      storedVotes: adapters.storedVotes,
      batchIds: adapters.batchIds,
      // Long enough that a release always waits for its backlog, never gives up on it.
      config: { flushIntervalMs: 1, closeTimeoutMs: 60_000 },
    });
    const warnings: string[] = [];
    /** Each 'shard released' log line's shard key, in order. */
    const released: string[] = [];
    let leasesLost = 0;
    const leaseTtlMs = 300;
    const leases = sim.leasesFor('B', leaseTtlMs, () => undefined);
    /** The election of each renewal asked for, as it is asked (its leases' new expiry is read then). */
    const renewals: string[] = [];
    const host = new ShardHost({
      nodeId: 'B', voteNode, leaseTtlMs, reconcileRetryMs: 10, reconcileRetryMaxMs: 50,
      leases: { ...leases, renew: (id, held) => { renewals.push(id); return leases.renew(id, held); } },
      log: {
        ...silent,
        warn: (obj: object, msg: string) => warnings.push(`${msg}: ${(obj as { err?: Error }).err?.message ?? ''}`),
        info: (obj: object, msg: string) => {
          if (msg === 'shard released') released.push(`${(obj as { electionId: string }).electionId}/${(obj as { shard: number }).shard}`);
        },
      },
      election: () => ({ shardCount, candidateCount: 2, status: 'open' }),
      onLeasesLost: (count) => { leasesLost += count; },
    });
    cleanups.push(async () => {
      commits.open();
      recoveries.open();
      await host.stop();
      await voteNode.close();
    });
    const node = (nodeId: string) => ({ nodeId, az: 'a', url: `http://${nodeId}`, status: 'alive' as const, incarnation: 1, startedAtMs: 0, lastHeartbeatAtMs: 0, draining: false });
    let version = 1;
    let voterNumber = 0;
    return {
      store: adapters.store, voteNode, host, commits, recoveries, warnings, released, leaseTtlMs,
      leasesLost: () => leasesLost,
      renewalsOf: (id: string) => renewals.filter((r) => r === id).length,
      /** Node C's leases: it takes shard 0 over (its view showed B dead, say), then lets it go. */
      other: sim.leasesFor('C', leaseTtlMs, () => undefined),
      epoch: (shard: number, id = electionId) => adapters.store.leaseEpoch({ electionId: id, shard }),
      /** The map names B for every shard, with the leases as they stand now. */
      view: (): ClusterView => ({ ...sim.view(), version: ++version, nodes: [node('B'), node('C')] }),
      cast: (voter: number, id = electionId) => new Promise<VoteOutcome>((resolve) => voteNode.cast({ electionId: id, voterNumber: voter, candidateIndex: 0 }, resolve)),
      /**
       * Closes the commit gate and casts voter 0 (shard 0); once the write waits at the gate, its
       * answer to come (wrapped: an async function's result would wait for it).
       */
      writeInFlightOnShard0: async (): Promise<{ answer: Promise<VoteOutcome> }> => {
        commits.close();
        const answer = new Promise<VoteOutcome>((resolve) => voteNode.cast({ electionId, voterNumber: 0, candidateIndex: 0 }, resolve));
        await expect.poll(() => commits.waiting, { timeout: 10_000 }).toBe(1);
        return { answer };
      },
      /**
       * A vote for shard 0 of the first election (a new voter each time); for a poll, whose
       * failure shows the last answer, the lease epoch by then and the rounds failed "already hosted".
       */
      castOnShard0: async () => ({
        answer: (await new Promise<VoteOutcome>((resolve) => voteNode.cast({ electionId, voterNumber: (voterNumber += shardCount), candidateIndex: 0 }, resolve))).kind,
        leaseEpoch: adapters.store.leaseEpoch({ electionId, shard: 0 }),
        alreadyHosted: warnings.filter((w) => w.includes('already hosted')).length,
      }),
    };
  }

  it('a write fenced while the map still names this node: the next round drops the shard and serves it again from the store, at a new epoch', async () => {
    const cluster = clusterOfTwo();
    await cluster.host.apply(cluster.view());
    expect(await cluster.cast(0)).toMatchObject({ kind: 'accepted' });
    // An operator's (or a node's) epoch bump: the lease row names this node still, at epoch 2.
    cluster.store.setLeaseEpoch({ electionId, shard: 0 }, 2);
    expect(await cluster.cast(2)).toMatchObject({ kind: 'unavailable', reason: 'fenced' });
    expect(cluster.voteNode.isServing(electionId, 0)).toBe(false);
    await cluster.host.apply(cluster.view());
    expect(cluster.host.heldShards()).toEqual(expect.arrayContaining([{ electionId, shard: 0, epoch: 3 }]));
    expect(await cluster.cast(4)).toMatchObject({ kind: 'accepted' });
    // Rebuilt from the store: the vote stored before the fence is counted, the fenced one is not.
    await expect.poll(() => cluster.voteNode.results(electionId)?.total, { timeout: 10_000 }).toBe(2);
    expect(cluster.warnings.filter((w) => w.includes('already hosted'))).toEqual([]);
  });

  it('lost during its recovery: the shard is released once served, and served again at a new epoch when the lease comes back', async () => {
    const cluster = clusterOfTwo();
    cluster.recoveries.close();
    const applied = cluster.host.apply(cluster.view());
    await expect.poll(() => cluster.recoveries.waiting, { timeout: 10_000 }).toBe(shardCount);
    expect(cluster.epoch(0)).toBe(1);
    await cluster.other.acquire(electionId, [0], 'any');
    cluster.host.start();
    await expect.poll(() => cluster.leasesLost(), { timeout: 10_000 }).toBe(1);
    await cluster.other.release(electionId, [{ shard: 0, epoch: 2 }]);
    cluster.recoveries.open();
    await applied;
    // The next round takes the lease once (epoch 3) and serves the shard under it: a vote is stored.
    await expect.poll(cluster.castOnShard0, { timeout: 10_000 }).toMatchObject({ answer: 'accepted', alreadyHosted: 0 });
    expect(cluster.epoch(0)).toBe(3);
    expect(cluster.voteNode.stats(electionId)?.shards.find((s) => s.shard === 0)?.epoch).toBe(3);
    expect(cluster.host.heldShards()).toEqual(expect.arrayContaining([{ electionId, shard: 0, epoch: 3 }]));
  });

  it('lost with a write in flight: a reconcile round waits for the release under way (its backlog) before it takes the shard again', async () => {
    const cluster = clusterOfTwo();
    await cluster.host.apply(cluster.view());
    const { answer: pendingVote } = await cluster.writeInFlightOnShard0();
    await cluster.other.acquire(electionId, [0], 'any');
    cluster.host.start();
    // The renewal's release waits for the vote at the commit gate (its backlog).
    await expect.poll(() => cluster.leasesLost(), { timeout: 10_000 }).toBe(1);
    await cluster.other.release(electionId, [{ shard: 0, epoch: 2 }]);
    const applied = cluster.host.apply(cluster.view());
    cluster.commits.open();
    expect(await pendingVote).toMatchObject({ kind: 'unavailable', reason: 'fenced' });
    await applied;
    expect(cluster.warnings.filter((w) => w.includes('already hosted'))).toEqual([]);
    expect(cluster.epoch(0)).toBe(3);
    expect(cluster.host.heldShards()).toEqual(expect.arrayContaining([{ electionId, shard: 0, epoch: 3 }]));
    expect(await cluster.cast(2)).toMatchObject({ kind: 'accepted' });
  });

  it('lost while its recovery is held up: the renewals of the other elections\' leases go on meanwhile (they would expire, one lost lease costing many), and the shard is released once served', async () => {
    const otherElectionId = '00000000-0000-4000-8000-000000000002';
    let simNowMs = 1_000;
    const cluster = clusterOfTwo({ electionIds: [electionId, otherElectionId], nowMs: () => simNowMs });
    cluster.recoveries.close();
    const applied = cluster.host.apply(cluster.view());
    await expect.poll(() => cluster.recoveries.waiting, { timeout: 10_000 }).toBe(shardCount);
    expect(await cluster.cast(0, otherElectionId)).toMatchObject({ kind: 'accepted' });
    await cluster.other.acquire(electionId, [0], 'any');
    cluster.host.start();
    await expect.poll(() => cluster.leasesLost(), { timeout: 10_000 }).toBe(1);
    // More than a TTL on the leases' clock, one renewal interval at a time, each step ending at a
    // renewal of the other election's leases (on main none came: the renewal waited for the release).
    for (let step = 0; step <= 3; step++) {
      const renewedBefore = cluster.renewalsOf(otherElectionId);
      simNowMs += cluster.leaseTtlMs / 3;
      await expect.poll(() => cluster.renewalsOf(otherElectionId), { timeout: 10_000 }).toBeGreaterThan(renewedBefore);
    }
    expect(await cluster.other.acquire(otherElectionId, [0, 1], 'expired-or-own')).toEqual([]);
    // The lost shard's release still waits for its recovery; found lost once, not at each renewal.
    expect(cluster.host.heldShards()).toEqual(expect.arrayContaining([{ electionId, shard: 0, epoch: 1 }]));
    expect(cluster.leasesLost()).toBe(1);

    await cluster.other.release(electionId, [{ shard: 0, epoch: 2 }]);
    cluster.recoveries.open();
    await applied;
    await expect.poll(cluster.castOnShard0, { timeout: 10_000 }).toMatchObject({ answer: 'accepted', alreadyHosted: 0 });
    expect(cluster.epoch(0)).toBe(3);
    expect(cluster.host.heldShards()).toEqual(expect.arrayContaining([{ electionId, shard: 0, epoch: 3 }]));
    expect(cluster.epoch(0, otherElectionId)).toBe(1);
    expect(cluster.leasesLost()).toBe(1);
    expect(await cluster.cast(2, otherElectionId)).toMatchObject({ kind: 'accepted' });
  });

  it('lost leases released off the renewal loop while the node fences itself (dropAll): each shard is released once, and a shard served afterwards stays held', async () => {
    const cluster = clusterOfTwo();
    await cluster.host.apply(cluster.view());
    // The release of shard 0's lost lease waits for this write.
    const { answer: pendingVote } = await cluster.writeInFlightOnShard0();
    await cluster.other.acquire(electionId, [0, 1], 'any');
    cluster.host.start();
    await expect.poll(() => cluster.leasesLost(), { timeout: 10_000 }).toBe(2);
    // Declared dead meanwhile: dropAll asks for both shards too. Its release of shard 1 and the
    // renewal's were asked for in the same turn once shard 0's ended; both found it held.
    const dropped = cluster.host.dropAll();
    cluster.commits.open();
    expect(await pendingVote).toMatchObject({ kind: 'unavailable', reason: 'fenced' });
    await dropped;
    await expect.poll(() => cluster.host.heldShards(), { timeout: 10_000 }).toEqual([]);
    await new Promise((resolve) => setTimeout(resolve, 50));
    expect([...cluster.released].sort()).toEqual([`${electionId}/0`, `${electionId}/1`]);
    // Back in the cluster with the leases free again: both shards served, and held.
    await cluster.other.release(electionId, [{ shard: 0, epoch: 2 }, { shard: 1, epoch: 2 }]);
    cluster.host.resume();
    await cluster.host.apply(cluster.view());
    await expect.poll(cluster.castOnShard0, { timeout: 10_000 }).toMatchObject({ answer: 'accepted', alreadyHosted: 0 });
    expect(cluster.host.heldShards()).toEqual(expect.arrayContaining([{ electionId, shard: 0, epoch: 3 }, { electionId, shard: 1, epoch: 3 }]));
  });
});
