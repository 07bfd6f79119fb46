// Shard leases, the rules: a node writes a shard only under the epoch it got when it acquired
// the shard's lease (the journal refuses any other in the commit's transaction: invariant 4).
//
//   acquireShardLeases  take every shard of an election (single-node mode, or a node taking
//                       over an election whose other owners are gone); epoch bumped per shard.
//   ShardLeaseKeeper    renews what this node holds, before expiry; reports leases it lost.
//
// Lease life (one shard, one node):
//
//   ┌──────────┐ acquire (free, expired, ours, or takeOver 'any') ┌────────┐ renew (epoch unchanged)
//   │ NOT HELD │ ───────────────────────────────────────────────► │  HELD  │ ◄──────┐
//   └──────────┘ ◄─────────────────────────────────────────────── └────────┘ ───────┘
//        ▲         release (expires now)  /  renewal finds the epoch moved on (lost)
//
// Expiry alone fences nobody: a lease past its expiry is still exclusively ours until another
// node acquires it, and that acquisition (epoch + 1) is what refuses our in-flight batches.
import type { Pool } from '../persistence/db.ts';
import {
  acquireLeases,
  handOverLease,
  leaseTtlMsMax,
  leaseTtlMsMin,
  releaseLeases,
  renewLeases,
  type HeldLease,
  type LeaseRecord,
  type LeaseTakeOver,
} from '../persistence/leases.ts';
import { shardCountMax } from './shardMap.ts';

export type { HeldLease, LeaseRecord, LeaseTakeOver } from '../persistence/leases.ts';

/** Some shards are held by other nodes whose leases have not expired; nothing was acquired. */
export class LeasesUnavailableError extends Error {
  constructor(readonly electionId: string, readonly refused: readonly LeaseRecord[]) {
    const first = refused[0];
    super(
      `${refused.length} shard lease(s) of election ${electionId} are held by other nodes` +
        (first ? ` (shard ${first.shard}: ${first.ownerNode} until ${new Date(first.expiresAtMs).toISOString()})` : ''),
    );
    this.name = 'LeasesUnavailableError';
  }
}

export interface AcquireShardLeasesRequest {
  readonly electionId: string;
  readonly shardCount: number;
  readonly nodeId: string;
  readonly leaseTtlMs: number;
  /**
   * Default 'expired-or-own' (the cluster rule). Single-node mode passes 'any': no other node can
   * legitimately hold a shard, and a previous process of this node (hostname-pid, another id)
   * must be fenced at once rather than waited out.
   */
  readonly takeOver?: LeaseTakeOver;
}

/**
 * Takes every shard lease of the election for this node, all or nothing, bumping each epoch so
 * every earlier writer (an older process of this node included) is fenced from now on.
 * Returns the epochs by shard: `epochs[shard]`. Rejects with LeasesUnavailableError when a
 * shard is held by another live node.
 */
export async function acquireShardLeases(pool: Pool, request: AcquireShardLeasesRequest): Promise<number[]> {
  if (!(Number.isInteger(request.shardCount) && request.shardCount >= 1 && request.shardCount <= shardCountMax)) {
    throw new Error(`shardCount must be 1..${shardCountMax}, got ${request.shardCount}`);
  }
  const shards = Array.from({ length: request.shardCount }, (_, shard) => shard);
  const result = await acquireLeases(pool, {
    electionId: request.electionId,
    shards,
    nodeId: request.nodeId,
    leaseTtlMs: request.leaseTtlMs,
    takeOver: request.takeOver ?? 'expired-or-own',
    allOrNothing: true,
  });
  if (result.refused.length > 0) throw new LeasesUnavailableError(request.electionId, result.refused);
  const epochs = new Array<number>(request.shardCount).fill(0);
  for (const lease of result.acquired) epochs[lease.shard] = lease.epoch;
  // All or nothing: every shard must have come back with an epoch.
  const missing = epochs.findIndex((epoch) => epoch < 1);
  if (missing !== -1) throw new Error(`lease of shard ${missing} neither acquired nor refused`);
  return epochs;
}

export interface ShardLeaseKeeperOptions {
  readonly pool: Pool;
  readonly electionId: string;
  readonly nodeId: string;
  readonly leaseTtlMs: number;
  /** Default a third of the TTL: two renewals can fail before the lease expires. */
  readonly renewIntervalMs?: number;
  readonly leases: readonly HeldLease[];
  /** The epochs of these shards moved on: another node took them; stop writing them. */
  readonly onLost: (shards: readonly number[]) => void;
  /** A renewal could not reach the database; the keeper tries again at the next interval. */
  readonly onError?: (error: Error) => void;
}

/** Renews the leases this node holds on a timer, one renewal at a time. */
export class ShardLeaseKeeper {
  private readonly options: ShardLeaseKeeperOptions;
  private readonly renewIntervalMs: number;
  private readonly held = new Map<number, number>();
  private timer: NodeJS.Timeout | undefined;
  private renewing: Promise<void> | undefined;
  private stopped = false;
  /** Last time (local clock) every held lease was renewed; for health checks. */
  lastRenewedAtMs = 0;

  constructor(options: ShardLeaseKeeperOptions) {
    const renewIntervalMs = options.renewIntervalMs ?? Math.floor(options.leaseTtlMs / 3);
    if (!(Number.isInteger(options.leaseTtlMs) && options.leaseTtlMs >= leaseTtlMsMin && options.leaseTtlMs <= leaseTtlMsMax)) {
      throw new Error(`leaseTtlMs must be ${leaseTtlMsMin}..${leaseTtlMsMax}, got ${options.leaseTtlMs}`);
    }
    if (!(Number.isInteger(renewIntervalMs) && renewIntervalMs >= 1 && renewIntervalMs < options.leaseTtlMs)) {
      throw new Error(`renewIntervalMs must be 1..leaseTtlMs-1, got ${renewIntervalMs}`);
    }
    this.options = options;
    this.renewIntervalMs = renewIntervalMs;
    for (const lease of options.leases) this.held.set(lease.shard, lease.epoch);
  }

  start(): void {
    if (this.stopped) throw new Error('ShardLeaseKeeper was stopped');
    if (this.timer !== undefined) return;
    this.schedule();
  }

  /** The leases still held, by shard. */
  heldLeases(): HeldLease[] {
    return [...this.held].map(([shard, epoch]) => ({ shard, epoch })).sort((a, b) => a.shard - b.shard);
  }

  /** A shard acquired later (rebalancing): renewed from the next round on. */
  add(lease: HeldLease): void {
    this.held.set(lease.shard, lease.epoch);
  }

  /** Stop renewing a shard (handed off); does not release it. */
  remove(shard: number): void {
    this.held.delete(shard);
  }

  /** One renewal round now; what the timer runs. */
  renewNow(): Promise<void> {
    this.renewing ??= this.renewOnce().finally(() => {
      this.renewing = undefined;
    });
    return this.renewing;
  }

  /** Stops renewing; with `release`, gives the leases up so another node can take them at once. */
  async stop(options: { release?: boolean } = {}): Promise<void> {
    this.stopped = true;
    if (this.timer !== undefined) clearTimeout(this.timer);
    this.timer = undefined;
    await this.renewing?.catch(() => undefined);
    if (options.release && this.held.size > 0) {
      await releaseLeases(this.options.pool, { electionId: this.options.electionId, nodeId: this.options.nodeId, leases: this.heldLeases() });
      this.held.clear();
    }
  }

  private schedule(): void {
    if (this.stopped) return;
    this.timer = setTimeout(() => {
      this.renewNow().finally(() => this.schedule());
    }, this.renewIntervalMs);
    // Renewal alone must not keep the process alive.
    this.timer.unref();
  }

  private async renewOnce(): Promise<void> {
    const asked = this.heldLeases();
    if (asked.length === 0) return;
    let renewed: LeaseRecord[];
    try {
      renewed = await renewLeases(this.options.pool, {
        electionId: this.options.electionId,
        nodeId: this.options.nodeId,
        leases: asked,
        leaseTtlMs: this.options.leaseTtlMs,
      });
    } catch (error) {
      this.options.onError?.(error as Error);
      return;
    }
    const renewedShards = new Set(renewed.map((l) => l.shard));
    const lost: number[] = [];
    for (const lease of asked) {
      // Only drop it if it is still the epoch we asked about (not re-added meanwhile).
      if (!renewedShards.has(lease.shard) && this.held.get(lease.shard) === lease.epoch) {
        this.held.delete(lease.shard);
        lost.push(lease.shard);
      }
    }
    if (lost.length === 0) this.lastRenewedAtMs = Date.now();
    else this.options.onLost(lost);
  }
}

/** The shard host's leases (cluster/ports.ts ShardLeases) on Postgres. */
export function createPgShardLeases(pool: Pool, options: { nodeId: string; leaseTtlMs: number }): import('./ports.ts').ShardLeases {
  const { nodeId, leaseTtlMs } = options;
  return {
    async acquire(electionId, shards, takeOver) {
      if (shards.length === 0) return [];
      const result = await acquireLeases(pool, { electionId, shards, nodeId, leaseTtlMs, takeOver });
      return result.acquired.map((l) => ({ shard: l.shard, epoch: l.epoch }));
    },
    async renew(electionId, leases) {
      if (leases.length === 0) return [];
      const renewed = await renewLeases(pool, { electionId, nodeId, leases, leaseTtlMs });
      return renewed.map((l) => ({ shard: l.shard, epoch: l.epoch }));
    },
    async release(electionId, leases) {
      if (leases.length === 0) return;
      await releaseLeases(pool, { electionId, nodeId, leases });
    },
    handOver: (electionId, lease, toNodeId) =>
      handOverLease(pool, { electionId, shard: lease.shard, fromNodeId: nodeId, epoch: lease.epoch, toNodeId, leaseTtlMs }),
  };
}
