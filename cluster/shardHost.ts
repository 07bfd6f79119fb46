// The shard host: makes this node serve exactly the shards the map gives it (Akka's ShardRegion
// hosting its Shards). On every new view it reconciles, one round at a time:
//
//   map says mine, not hosted ──► take the lease (epoch + 1 fences every earlier writer)
//                                 ──► recover (snapshot + tail) ──► serve
//   hosted, map says another's ──► stop taking votes (503 shard_moving), resolve the backlog
//                                 ──► hand the lease to the node the map names (one statement:
//                                 owner and epoch + 1) ──► `released` with that epoch: the new
//                                 owner serves under it with no lease transaction of its own
//                                 (no final snapshot on this path unless the tail since the last
//                                 one is long: the new owner reads the tail). If the hand-over
//                                 fails, the lease is released and the new owner acquires it
//   hosted, lease lost          ──► drop it (its writes are fenced); take it again if still mine
//
// The lease is taken with `any` when its holder is not a live member (dead, left, or an
// earlier process of this node); otherwise only once the holder released it or it expired, so a
// live old owner always finishes its backlog before the new owner recovers the shard. While it
// waits it looks again every holderPollMs, or at once when the holder says it released
// (`holderReleased`, the link's `released` event): the shard's pause does not wait for a poll.
// A handed lease the new owner will not use (a newer map names another node, or it could not
// serve within a third of the TTL, so the lease may be near expiry) is released at once; a lost
// `released` costs only time: the view shows the lease as this node's, which it then acquires.
import { shardKeyOf } from './allocation.ts';
import type { ClusterView, HeldShardLease, ShardLeases } from './ports.ts';
import type { ShardRecovery, VoteNode } from '../actors/voteNode.ts';
import type { PromotionBase } from './replication.ts';

export interface HostedElectionInfo {
  readonly shardCount: number;
  readonly candidateCount: number;
  readonly status: 'draft' | 'open' | 'closed';
}

/** What an old owner tells the new one when it let a shard go (protocol `released`). */
export interface HandOffNotice {
  readonly electionId: string;
  readonly shard: number;
  /** The epoch the old owner held. */
  readonly epoch: number;
  /** The lease was handed to the receiver under this epoch (no acquisition of its own needed). */
  readonly grantedEpoch?: number;
  /** The map version the old owner acted on. */
  readonly mapVersion?: number;
}

export interface ShardHostOptions {
  readonly nodeId: string;
  readonly voteNode: VoteNode;
  readonly leases: ShardLeases;
  /** The elections this node has loaded; undefined until the registry knows it. */
  readonly election: (electionId: string) => HostedElectionInfo | undefined;
  readonly leaseTtlMs: number;
  readonly log: { info(obj: object, msg: string): void; warn(obj: object, msg: string): void; error(obj: object, msg: string): void };
  /** A shard started or stopped being served here. */
  readonly onChange?: () => void;
  /** Leases found taken by another node at renewal (counted in livevote_leases_lost_total). */
  readonly onLeasesLost?: (count: number) => void;
  /** A shard's lease was released in a hand-off to `toNodeId`: tell that node (protocol `released`). */
  readonly onReleased?: (toNodeId: string, released: HandOffNotice) => void;
  /** While a live holder hands a shard over: how often to try its lease (default 50 ms; `released` cuts the wait). */
  readonly holderPollMs?: number;
  /**
   * False while this node may not serve votes (self-fenced, or declared dead): a lease taken
   * then, on a view that may be stale, would only fence the shard's live owner.
   */
  readonly mayTakeShards?: () => boolean;
  /**
   * After a reconcile round fails (a lease statement timed out, a recovery read failed), the
   * latest view is tried again this long after, doubling per failure in a row up to
   * reconcileRetryMaxMs (defaults 100 ms and 1 s). Without it the next try waited for the next
   * view read (up to viewRefreshMs, 2 s), which alone breaks a 3 s failover.
   */
  readonly reconcileRetryMs?: number;
  readonly reconcileRetryMaxMs?: number;
  /** A warm replica's state to recover a shard from, once its lease is taken under `epoch` (replication.ts). */
  readonly promotionBase?: (electionId: string, shard: number, epoch: number) => PromotionBase;
  /** How each shard taken was recovered (warm from a replica, or cold), for metrics. */
  readonly onRecovered?: (recoveries: readonly ShardRecovery[]) => void;
}

export class ShardHost {
  private readonly options: ShardHostOptions;
  /** Leases held, by election, shard → epoch. */
  private readonly held = new Map<string, Map<number, number>>();
  private latestView: ClusterView | undefined;
  /** When the map first named this node for a shard it does not hold yet (hand-off timelines). */
  private readonly wantedSinceMs = new Map<string, number>();
  private reconciling: Promise<void> | undefined;
  private again = false;
  private renewTimer: NodeJS.Timeout | undefined;
  /** The retry of a failed reconcile round, while one is due. */
  private retryTimer: NodeJS.Timeout | undefined;
  /** Reconcile rounds failed in a row (the retry's backoff). */
  private roundsFailed = 0;
  private stopped = false;
  /** Declared dead: nothing is taken until resume() (the node rejoined with a fresh view). */
  private suspended = false;
  /** The renewal round under way, if any (a release waits for it: see releaseOne). */
  private renewing: Promise<void> | undefined;
  /** Ends the wait between two looks at a holder's lease early. */
  private wakeWaiter: (() => void) | undefined;
  /** A `released` arrived since the last lease attempt began: look again without waiting. */
  private releaseHeard = false;
  /**
   * Leases handed to this node by an old owner, by shard key, until a reconcile serves the shard
   * under them (or gives them back: the map names another node). At most one per shard.
   */
  private readonly grants = new Map<string, { electionId: string; shard: number; epoch: number; mapVersion: number; atMs: number }>();
  /**
   * By shard key: the vote node's serve or release of the shard while it is under way (settled,
   * never rejected). A release waits for it: see releaseNow.
   */
  private readonly hostingChanges = new Map<string, Promise<void>>();
  /**
   * By shard key: the epoch of a lost lease whose release (releaseLost) is under way. `held` names
   * the shard until it ends; renewals leave it out, else each would find it lost again.
   */
  private readonly releasingLost = new Map<string, number>();
  /** By shard key: the last release asked for, until it has ended (settled, never rejected). See releaseOne. */
  private readonly releases = new Map<string, Promise<void>>();

  constructor(options: ShardHostOptions) {
    this.options = options;
  }

  start(): void {
    const renewEveryMs = Math.floor(this.options.leaseTtlMs / 3);
    const tick = () => {
      this.renewTimer = setTimeout(() => {
        this.renewing = this.renewAll().catch((error: unknown) => this.options.log.error({ err: error }, 'lease renewal round failed')).finally(() => {
          this.renewing = undefined;
          if (!this.stopped) tick();
        });
      }, renewEveryMs);
      this.renewTimer.unref();
    };
    tick();
  }

  /** Held shards, for the admin view and tests. */
  heldShards(): { electionId: string; shard: number; epoch: number }[] {
    return [...this.held].flatMap(([electionId, shards]) => [...shards].map(([shard, epoch]) => ({ electionId, shard, epoch })));
  }

  /** Reconcile with this view (the latest wins; rounds never overlap). Resolves when it is applied. */
  apply(view: ClusterView): Promise<void> {
    this.latestView = view;
    if (this.reconciling) {
      this.again = true;
      return this.reconciling;
    }
    if (this.retryTimer !== undefined) {
      clearTimeout(this.retryTimer);
      this.retryTimer = undefined;
    }
    this.reconciling = (async () => {
      let failed = false;
      do {
        this.again = false;
        try {
          await this.reconcile(this.latestView!);
          failed = false;
        } catch (error) {
          failed = true;
          this.options.log.warn({ err: error, roundsFailed: this.roundsFailed + 1 }, 'shard reconcile failed; retrying shortly with the latest view');
        }
      } while (this.again && !this.stopped && !this.suspended);
      this.roundsFailed = failed ? this.roundsFailed + 1 : 0;
      if (failed) this.scheduleRetry();
    })().finally(() => {
      this.reconciling = undefined;
      // A view applied after the loop's last look at `again` (a renewal's, right after it released
      // a lost lease) found `reconciling` still set and only asked for another round: run it.
      if (this.again && !this.stopped && !this.suspended) void this.apply(this.latestView!);
    });
    return this.reconciling;
  }

  /** Tries the latest view again after a failed round; a view arriving meanwhile supersedes it. */
  private scheduleRetry(): void {
    if (this.stopped || this.suspended || this.retryTimer !== undefined) return;
    const firstMs = this.options.reconcileRetryMs ?? 100;
    const maxMs = this.options.reconcileRetryMaxMs ?? 1_000;
    const delayMs = Math.min(maxMs, firstMs * 2 ** Math.min(this.roundsFailed - 1, 20));
    this.retryTimer = setTimeout(() => {
      this.retryTimer = undefined;
      if (!this.stopped && !this.suspended && this.latestView !== undefined) void this.apply(this.latestView);
    }, delayMs);
    this.retryTimer.unref();
  }

  /**
   * The holder of a shard says it released the lease to this node (`released` event): look now.
   * A hint only: without a reconcile waiting on a holder, the next view does the work.
   */
  holderReleased(notice?: HandOffNotice): void {
    if (notice?.grantedEpoch !== undefined) {
      const key = shardKeyOf(notice.electionId, notice.shard);
      const earlier = this.grants.get(key);
      if (earlier === undefined || earlier.epoch < notice.grantedEpoch) {
        this.grants.set(key, { electionId: notice.electionId, shard: notice.shard, epoch: notice.grantedEpoch, mapVersion: notice.mapVersion ?? 0, atMs: Date.now() });
      }
      // Not waiting on a holder (this node's view may not name it yet): the next view uses it.
      if (this.wakeWaiter === undefined && this.reconciling === undefined && this.latestView !== undefined) void this.apply(this.latestView);
    }
    this.releaseHeard = true;
    this.wakeWaiter?.();
  }

  /** Graceful stop: every hosted shard is drained and its lease released for the next owner. */
  async stop(): Promise<void> {
    this.stopped = true;
    if (this.renewTimer !== undefined) clearTimeout(this.renewTimer);
    if (this.retryTimer !== undefined) clearTimeout(this.retryTimer);
    await this.reconciling?.catch(() => undefined);
    // All at once: each waits only for its own backlog and snapshot, and the new owners wait
    // for these releases (the router holds their votes meanwhile).
    const owners = new Map(this.latestView?.shards.map((row) => [shardKeyOf(row.electionId, row.shard), row.ownerNodeId]));
    await Promise.all([...this.held].flatMap(([electionId, shards]) =>
      [...shards.keys()].map((shard) => this.releaseOne(electionId, shard, { toNodeId: owners.get(shardKeyOf(electionId, shard)) }))));
  }

  /**
   * Declared dead: every shard is someone else's now; drop them all, releasing no lease, and
   * take nothing until resume(): the views this node holds are stale, and a round retaking a
   * shard on one would fence its new owner (and could keep this wait from ever ending).
   */
  async dropAll(): Promise<void> {
    this.suspended = true;
    await this.reconciling?.catch(() => undefined);
    for (const [electionId, shards] of [...this.held]) {
      for (const shard of [...shards.keys()]) await this.releaseOne(electionId, shard, { leaseLost: true });
    }
  }

  /** After dropAll, once the node rejoined: reconcile with the latest view again. */
  resume(): void {
    this.suspended = false;
    if (this.latestView) void this.apply(this.latestView);
  }

  private async reconcile(view: ClusterView): Promise<void> {
    if (this.stopped || this.suspended) return;
    const { nodeId, voteNode } = this.options;
    const alive = new Set(view.nodes.filter((n) => n.status === 'alive').map((n) => n.nodeId));
    const leftNodes = new Set(view.nodes.filter((n) => n.status === 'left').map((n) => n.nodeId));
    const mine = new Map<string, typeof view.shards[number][]>();
    const ownerByKey = new Map<string, string>();
    for (const row of view.shards) {
      ownerByKey.set(shardKeyOf(row.electionId, row.shard), row.ownerNodeId);
      if (row.ownerNodeId !== nodeId) continue;
      let list = mine.get(row.electionId);
      if (!list) mine.set(row.electionId, (list = []));
      list.push(row);
    }

    for (const key of this.wantedSinceMs.keys()) if (ownerByKey.get(key) !== nodeId) this.wantedSinceMs.delete(key);

    // Handed leases this node will not use: a newer map names another node, or it waited too long
    // (past a third of the TTL the lease may be near expiry; an acquisition is the safe way then).
    for (const [key, grant] of [...this.grants]) {
      const givenAway = ownerByKey.get(key) !== nodeId && view.version > grant.mapVersion;
      const stale = Date.now() - grant.atMs > this.options.leaseTtlMs / 3;
      if (!givenAway && !stale) continue;
      this.grants.delete(key);
      if (this.held.get(grant.electionId)?.has(grant.shard)) continue;
      // Given back at once, so that the node the map names does not wait out the TTL.
      await this.options.leases.release(grant.electionId, [{ shard: grant.shard, epoch: grant.epoch }]).catch(() => undefined);
    }

    // Shards to give up: the map moved them, or their lease was lost (fenced).
    for (const [electionId, shards] of [...this.held]) {
      for (const shard of [...shards.keys()]) {
        const moved = ownerByKey.get(shardKeyOf(electionId, shard)) !== nodeId;
        const fenced = !voteNode.isServing(electionId, shard);
        if (moved || fenced) await this.releaseOne(electionId, shard, { leaseLost: !moved && fenced, toNodeId: ownerByKey.get(shardKeyOf(electionId, shard)) });
      }
    }

    // Shards to take: the leases election by election (short transactions on the cluster's own
    // small pool, which the heartbeat shares), then every election's recovery at once (the vote
    // path's pool): a failover of many elections' shards costs the slowest recovery, not their sum.
    if (this.options.mayTakeShards !== undefined && !this.options.mayTakeShards()) return;
    this.releaseHeard = false;
    const taken: { electionId: string; info: HostedElectionInfo; acquired: HeldShardLease[]; acquireStartedMs: number; acquiredAtMs: number }[] = [];
    for (const [electionId, rows] of mine) {
      const info = this.options.election(electionId);
      if (info === undefined || info.status === 'draft') continue;
      const heldHere = this.held.get(electionId);
      const wanted = rows.filter((row) => !heldHere?.has(row.shard));
      if (wanted.length === 0) continue;
      const takeAny: number[] = [];
      const waitForHolder: number[] = [];
      for (const row of wanted) {
        // A holder that left on purpose is still draining: wait for its release (or expiry).
        const holderLive = row.leaseNodeId !== null && row.leaseNodeId !== nodeId && row.leaseExpiresAtMs > view.readAtMs &&
          (alive.has(row.leaseNodeId) || leftNodes.has(row.leaseNodeId));
        (holderLive ? waitForHolder : takeAny).push(row.shard);
      }
      for (const shard of wanted) if (!this.wantedSinceMs.has(shardKeyOf(electionId, shard.shard))) this.wantedSinceMs.set(shardKeyOf(electionId, shard.shard), Date.now());
      const acquireStartedMs = Date.now();
      // Leases the old owner handed over: served under the granted epoch, no acquisition.
      const granted: HeldShardLease[] = [];
      for (const list of [takeAny, waitForHolder]) {
        for (let i = list.length - 1; i >= 0; i--) {
          const grant = this.grants.get(shardKeyOf(electionId, list[i]!));
          if (grant === undefined) continue;
          this.grants.delete(shardKeyOf(electionId, list[i]!));
          granted.push({ shard: grant.shard, epoch: grant.epoch });
          list.splice(i, 1);
        }
      }
      const acquired: HeldShardLease[] = [
        ...granted,
        ...(await this.options.leases.acquire(electionId, takeAny, 'any')),
      ];
      const fromHolder = await this.options.leases.acquire(electionId, waitForHolder, 'expired-or-own');
      if (waitForHolder.length > fromHolder.length) this.again = true; // the old owner is draining: look again soon
      acquired.push(...fromHolder);
      for (const lease of acquired) this.grants.delete(shardKeyOf(electionId, lease.shard));
      if (acquired.length === 0) continue;
      let heldMap = this.held.get(electionId);
      if (!heldMap) this.held.set(electionId, (heldMap = new Map()));
      for (const lease of acquired) heldMap.set(lease.shard, lease.epoch);
      taken.push({ electionId, info, acquired, acquireStartedMs, acquiredAtMs: Date.now() });
    }
    const outcomes = await Promise.allSettled(taken.map((t) => this.serveTaken(t.electionId, t.info, t.acquired, t.acquireStartedMs, t.acquiredAtMs)));
    const failed = outcomes.find((o): o is PromiseRejectedResult => o.status === 'rejected');
    if (failed !== undefined) throw failed.reason;
    // A live holder is draining the shard for us: look again after holderPollMs, or at once when
    // it says it released (the pause of a move waits on this).
    if (this.again && !this.releaseHeard) {
      await new Promise<void>((resolve) => {
        const timer = setTimeout(() => this.wakeWaiter?.(), this.options.holderPollMs ?? 50);
        this.wakeWaiter = () => {
          clearTimeout(timer);
          this.wakeWaiter = undefined;
          resolve();
        };
      });
    }
  }

  /** Recovers and serves shards whose leases this node just took; on failure gives the leases back. */
  private async serveTaken(electionId: string, info: HostedElectionInfo, acquired: readonly HeldShardLease[], acquireStartedMs: number, acquiredAtMs: number): Promise<void> {
    const { voteNode } = this.options;
    const started = Date.now();
    const promotions = acquired.map((lease) => this.options.promotionBase?.(electionId, lease.shard, lease.epoch));
    let recoveries: readonly ShardRecovery[];
    try {
      recoveries = await this.changingHosting(electionId, acquired.map((lease) => lease.shard), voteNode.hostShards({
        electionId, shardCount: info.shardCount, candidateCount: info.candidateCount, closed: info.status === 'closed',
        shards: acquired.map((lease, i) => ({ ...lease, base: promotions[i]?.kind === 'warm' ? promotions[i].base : undefined })),
      }));
    } catch (error) {
      const heldMap = this.held.get(electionId);
      for (const lease of acquired) heldMap?.delete(lease.shard);
      if (heldMap?.size === 0) this.held.delete(electionId);
      await this.options.leases.release(electionId, acquired).catch(() => undefined);
      throw error;
    }
    // The new owner's half of a hand-off's timeline: since the map named this node (wantedSinceMs),
    // the last lease attempt, recovery (warm: this node's replica state + the votes after its
    // watermark; cold: the latest snapshot + the votes after it), serving.
    const servedAtMs = Date.now();
    const wantedSince = acquired.map((l) => this.wantedSinceMs.get(shardKeyOf(electionId, l.shard)) ?? acquireStartedMs);
    for (const lease of acquired) this.wantedSinceMs.delete(shardKeyOf(electionId, lease.shard));
    this.options.log.info(
      {
        electionId, shards: acquired.map((l) => l.shard), epochs: acquired.map((l) => l.epoch), wantedSinceMs: wantedSince,
        acquireMs: acquiredAtMs - acquireStartedMs, acquiredAtMs, recoveryMs: servedAtMs - started, servedAtMs,
        recovery: recoveries.map((r, i) => ({
          shard: r.shard, path: r.source === 'replica' ? 'warm' : 'cold', tailRows: r.tailRows, watermarkBatchId: r.watermarkBatchId,
          ...(promotions[i]?.kind === 'cold' ? { coldBecause: promotions[i].reason, replicaEpoch: promotions[i].replicaEpoch } : {}),
          ...(promotions[i]?.kind === 'warm' ? { replicaCaughtUp: promotions[i].caughtUp } : {}),
        })),
      },
      'shards taken over and served',
    );
    this.options.onRecovered?.(recoveries);
    this.options.onChange?.();
  }

  /** Records `change` (a serve or release by the vote node) as under way for these shards until it settles. */
  private changingHosting<T>(electionId: string, shards: readonly number[], change: Promise<T>): Promise<T> {
    recordUnderWay(this.hostingChanges, shards.map((shard) => shardKeyOf(electionId, shard)), change);
    return change;
  }

  /**
   * Releases of one shard run one after another: each starts once the one asked for before it has
   * ended, and finds the shard released already if that one released it. The renewal releases a
   * lost lease off its loop, so the self-fence's dropAll, a round or stop can ask for the same
   * shard meanwhile; asked for in the same turn, both found it held and released it twice
   * (chaos.fence failed on 9fedc87, reverted in fdc27e4; cluster/shardHost.test.ts has the case).
   * `epoch`: release only the lease held under it (a round may have taken the shard again since).
   */
  private releaseOne(electionId: string, shard: number, options: { leaseLost?: boolean; toNodeId?: string; epoch?: number } = {}): Promise<void> {
    const key = shardKeyOf(electionId, shard);
    const before = this.releases.get(key);
    const release = before === undefined ? this.releaseNow(electionId, shard, options) : before.then(() => this.releaseNow(electionId, shard, options));
    recordUnderWay(this.releases, [key], release);
    return release;
  }

  private async releaseNow(electionId: string, shard: number, options: { leaseLost?: boolean; toNodeId?: string; epoch?: number }): Promise<void> {
    // Another change of this shard may be under way: a round still recovering it when a renewal
    // finds its lease lost, or a renewal's release still waiting for its backlog when a round
    // releases it. Released at once, the vote node would answer that it hosts nothing yet (or that
    // the shard is going already), the shard would leave `held`, and the vote node would host it
    // on, unknown to this host: every later round would take its lease again (epoch + 1) and fail
    // on "already hosted", for good in the first case (nothing ever releases that shard), until
    // the other release ends in the second. So the change under way ends first.
    await this.hostingChanges.get(shardKeyOf(electionId, shard));
    const epoch = this.held.get(electionId)?.get(shard);
    if (epoch === undefined || (options.epoch !== undefined && epoch !== options.epoch)) return;
    const stoppedAdmittingAtMs = Date.now();
    const release = await this.changingHosting(electionId, [shard], this.options.voteNode.releaseShard(electionId, shard));
    // `held` read again, not the election's map as it was before the wait: that one may have left
    // `held` meanwhile (emptied, and a round's new one in its place). Deleting the election's entry
    // because the old map is empty would drop a shard served since, which the vote node hosts and
    // no later round could take again ("already hosted", for good).
    const heldNow = this.held.get(electionId);
    if (heldNow?.get(shard) === epoch) heldNow.delete(shard);
    if (heldNow?.size === 0) this.held.delete(electionId);
    const leaseReleaseStartedMs = Date.now();
    let released = false;
    let grantedEpoch: number | null = null;
    const toNodeId = options.toNodeId !== undefined && options.toNodeId !== this.options.nodeId ? options.toNodeId : undefined;
    if (!options.leaseLost) {
      // A renewal round that started before the shard left `held` may still renew its lease:
      // landing after the release, it would give the lease a whole TTL again, and the new owner
      // would wait that long. It asked for this shard only if it started before: wait for it.
      await this.renewing;
      // To the node the map names: handed over (epoch + 1, its own from now), so that it serves
      // without a transaction of its own; otherwise (or if that fails) released for anyone.
      if (toNodeId !== undefined) grantedEpoch = await this.options.leases.handOver(electionId, { shard, epoch }, toNodeId).catch(() => null);
      released = grantedEpoch !== null || (await this.options.leases.release(electionId, [{ shard, epoch }]).then(() => true, () => false));
    }
    const releasedAtMs = Date.now();
    if (released && toNodeId !== undefined) {
      this.options.onReleased?.(toNodeId, { electionId, shard, epoch, ...(grantedEpoch === null ? {} : { grantedEpoch, mapVersion: this.latestView?.version ?? 0 }) });
    }
    // The old owner's half of a hand-off's timeline (bench/moves.ts joins it with the new owner's).
    this.options.log.info({
      electionId, shard, epoch, leaseLost: options.leaseLost ?? false, toNodeId: options.toNodeId,
      stoppedAdmittingAtMs, backlogMs: release?.backlogMs, snapshotMs: release?.snapshotMs, snapshotWritten: release?.snapshotWritten,
      leaseReleaseMs: releasedAtMs - leaseReleaseStartedMs, releasedAtMs, handedOverEpoch: grantedEpoch ?? undefined,
    }, 'shard released');
    this.options.onChange?.();
  }

  private async renewAll(): Promise<void> {
    for (const [electionId, shards] of [...this.held]) {
      const asked = [...shards]
        .filter(([shard, epoch]) => this.releasingLost.get(shardKeyOf(electionId, shard)) !== epoch)
        .map(([shard, epoch]) => ({ shard, epoch }));
      if (asked.length === 0) continue;
      let renewed: readonly HeldShardLease[];
      try {
        renewed = await this.options.leases.renew(electionId, asked);
      } catch (error) {
        this.options.log.warn({ err: error, electionId }, 'lease renewal failed; retrying');
        continue;
      }
      const still = new Set(renewed.map((l) => l.shard));
      const lost = asked.filter((l) => !still.has(l.shard) && shards.get(l.shard) === l.epoch);
      if (lost.length > 0) {
        this.options.log.error({ electionId, shards: lost.map((l) => l.shard) }, 'shard leases lost to another node; their writes are fenced');
        this.options.onLeasesLost?.(lost.length);
        for (const lease of lost) this.releasingLost.set(shardKeyOf(electionId, lease.shard), lease.epoch);
        // Not awaited: the release waits for a recovery of the shard under way, or for its backlog
        // (up to the vote node's close timeout), and the other elections' leases, renewed after
        // this one, would expire meanwhile and be taken over: one lost lease would cost many.
        void this.releaseLost(electionId, lost);
      }
    }
  }

  /** Drops an election's lost leases in order, then reconciles: the map may still name this node. */
  private async releaseLost(electionId: string, lost: readonly HeldShardLease[]): Promise<void> {
    for (const lease of lost) {
      const key = shardKeyOf(electionId, lease.shard);
      try {
        await this.releaseOne(electionId, lease.shard, { leaseLost: true, epoch: lease.epoch });
      } catch (error) {
        // Still in `held`: the next renewal finds it lost again and tries again.
        this.options.log.error({ err: error, electionId, shard: lease.shard }, 'releasing a lost shard lease failed');
      } finally {
        if (this.releasingLost.get(key) === lease.epoch) this.releasingLost.delete(key);
      }
    }
    if (this.latestView && !this.suspended && !this.stopped) void this.apply(this.latestView);
  }
}

/**
 * Keeps `change`, settled (never rejected), under each of `keys` in `underWay` until it settles;
 * a later change recorded under a key meanwhile stays.
 */
function recordUnderWay(underWay: Map<string, Promise<void>>, keys: readonly string[], change: Promise<unknown>): void {
  const settled = change.then(() => undefined, () => undefined);
  for (const key of keys) underWay.set(key, settled);
  void settled.then(() => {
    for (const key of keys) if (underWay.get(key) === settled) underWay.delete(key);
  });
}
