// The simulated world: N processes, each running the REAL vote node (actors/voteNode.ts: nact
// shard actors, the group committer, recovery), against one shared in-memory database
// (actors/memoryAdapters.ts, which passes the Postgres contract tests) seen through adapters that
// inject faults, on a virtual clock (virtualClock.ts). Every piece of async I/O — commits reaching
// the store and their answers, commit checks, lookups, snapshot writes and reads, batch-id
// reservations — waits for the world's `AsyncWork` scheduler (fast-check's `fc.scheduler` in the
// property tests), which picks the order in which it completes.
//
// The world plays everything outside the node: the clients (who record every answer), the
// lease authority (it bumps epochs when an election moves, as the coordinator does), and the
// process killer. It records what an independent checker needs (properties.ts): every answer
// with the store as it was when the answer left, every row with its writer and the lease epoch at
// its commit, every lease grant.
//
// Processes: `live` (serves the elections it owns), `zombie` (lost its leases while paused: still
// running, still finishing what it had in flight, but owning nothing), `dead` (killed: nothing it
// does reaches the world any more; a commit it had sent may still land, as with a real crash).
//
// Planted bugs (`plantedBug`) are test-only mutations of the adapters, switched on only by the
// test that shows a property catches them.

import { MemoryBatchIdSource, MemoryVoteStore, type StoredRow } from '../../actors/memoryAdapters.ts';
import {
  shardKeyString,
  type BatchIdSource,
  type Journal,
  type JournalBatch,
  type JournalCommitResult,
  type ShardKey,
  type ShardSnapshot,
  type SnapshotStore,
  type StoredVote,
  type StoredVoteReader,
} from '../../actors/ports.ts';
import type { VoteOutcome } from '../../actors/shard.ts';
import { createVoteNode, type VoteNode, type VoteNodeConfig } from '../../actors/voteNode.ts';
import { shardKeyOf } from '../allocation.ts';
import { composeClusterRoles, type ClusterLog, type ClusterRoles } from '../clusterNode.ts';
import type { LinkFailure, Links } from '../links.ts';
import type { ClusterStore, ShardLeases } from '../ports.ts';
import type { CastRequest, LinkEvent, OutcomeAnswer, ReplicateBatches } from '../protocol.ts';
import { SpillGuard } from '../spillGuard.ts';
import { SimClusterState } from './simCluster.ts';
import { VirtualClock } from './virtualClock.ts';

// ---------------------------------------------------------------------------------------------
// The scheduler port: who decides when async work completes

export interface AsyncWork {
  /** Resolves when the scheduler releases this piece of work. */
  schedule(label: string): Promise<void>;
  /** Work waiting to be released. */
  pending(): number;
  /** Releases one piece of work of the scheduler's choosing. */
  releaseOne(): Promise<void>;
}

/** fast-check's scheduler as the world's AsyncWork: it picks, records and replays the order. */
export function asyncWorkOf(scheduler: {
  schedule<T>(task: Promise<T>, label?: string): Promise<T>;
  count(): number;
  waitNext(count: number): Promise<void>;
}): AsyncWork {
  return {
    schedule: (label) => scheduler.schedule(Promise.resolve(), label),
    pending: () => scheduler.count(),
    releaseOne: () => scheduler.waitNext(1),
  };
}

// ---------------------------------------------------------------------------------------------
// Configuration

export type PlantedBug =
  /** The journal answers `committed` and stores nothing. */
  | 'journalAcksWithoutStoring'
  /** The journal commits rows whatever their epoch (no fencing). */
  | 'journalIgnoresFencing'
  /** The snapshot reader returns the tallies but an empty bitmap and watermark 0. */
  | 'snapshotReadLosesBitmap'
  /** The stored-vote lookup answers another voteId than the stored one. */
  | 'lookupAnswersAnotherVoteId'
  /** Recovery's read of stored votes skips the first row. */
  | 'replaySkipsFirstRow'
  /** The lease authority hands an election to a new owner under the same epochs. */
  | 'leaseGrantReusesEpoch'
  /** Cluster mode: owners' committed counts never reach the other nodes. */
  | 'tallyEventsLost'
  /** Cluster mode: the store drops an operation's update to failed (it stays running for good). */
  | 'operationFailuresLost'
  /**
   * Cluster mode: a replicated batch is lost between nodes and the stream numbers the next one as
   * if nothing was missing, so the replica cannot see the gap (and a promotion misses the votes).
   */
  | 'replicationHidesGaps';

export type InjectedFault =
  | 'commitLost'
  | 'commitStoredButReportedFailed'
  | 'commitCheckFails'
  | 'lookupFails'
  | 'snapshotWriteFails'
  /** Cluster mode: the next vote forwarded between nodes is lost on the way. */
  | 'forwardLost'
  /** Cluster mode: the next batches streamed to a replica are lost on the way (a gap it must see). */
  | 'replicateLost'
  /** Cluster mode: the owner handles the next forwarded vote, its answer is lost on the way back. */
  | 'forwardAnswerLost';

/** Cluster mode timings (ms of virtual time). */
export interface ClusterTimings {
  readonly heartbeatIntervalMs: number;
  readonly deadAfterMs: number;
  readonly leaseTtlMs: number;
  readonly movesInFlightMax: number;
  /** Balance on join and leave (LIVEVOTE_AUTO_BALANCE). */
  readonly autoBalance: boolean;
  /** How long the router asks again for a vote whose shard is between owners. */
  readonly routeRetryMs: number;
  /** Warm replicas per shard (LIVEVOTE_REPLICAS): streamed to, caught up, promoted. Cases recorded before replicas have none. */
  readonly replicasPerShard?: number;
}

export interface ElectionSpec {
  readonly shardCount: number;
  readonly candidateCount: number;
}

export interface WorldConfig {
  /**
   * `elections` (default): the world is the lease authority and gives whole elections to
   * processes. `cluster`: every process runs the real cluster roles too — membership, the
   * coordinator, the shard host, the router, the whole-election results — over a simulated
   * cluster store, shard leases and links; the map moves shards, the router forwards votes.
   */
  readonly mode?: 'elections' | 'cluster';
  readonly cluster?: ClusterTimings;
  /** Processes serving at once (a killed one is replaced). */
  readonly nodeCount: number;
  readonly elections: readonly ElectionSpec[];
  readonly node: Partial<VoteNodeConfig>;
  readonly batchIdBlockSize: number;
  readonly plantedBug?: PlantedBug;
}

// ---------------------------------------------------------------------------------------------
// What the world records

export type ProcessStatus = 'live' | 'zombie' | 'dead';

export interface SimProcess {
  /** `n<slot>.<incarnation>`: stable across replays. */
  readonly id: string;
  /** The node id it joins the cluster with: `n<slot>` (a restarted process keeps it). */
  readonly nodeId: string;
  readonly slot: number;
  readonly node: VoteNode;
  /** Cluster mode: the roles production composes (cluster/clusterNode.ts composeClusterRoles). */
  readonly cluster: ClusterRoles | null;
  status: ProcessStatus;
  /** Cut off from the store and the other nodes: its I/O waits until healed. */
  isolated: boolean;
  /** Elections this process has open (or is opening), with the epochs it was given. */
  readonly epochs: Map<string, readonly number[]>;
  readonly opening: Set<string>;
}

export interface SimElection extends ElectionSpec {
  readonly electionId: string;
  closed: boolean;
  /** The process the lease authority gave the election to last. */
  owner: SimProcess;
}

export interface VoteRequest {
  readonly requestId: number;
  readonly electionId: string;
  readonly voterNumber: number;
  readonly candidateIndex: number;
  readonly processId: string;
  readonly sentAtMs: number;
  outcome: VoteOutcome | null;
  /** The process died before answering. */
  lost: boolean;
}

export interface AnswerRecord {
  readonly request: VoteRequest;
  readonly outcome: VoteOutcome;
  readonly atMs: number;
  /** The stored vote of that voter when the answer left (durability before the answer). */
  readonly storedThen: StoredVote | null;
}

export interface RowWrite {
  readonly row: StoredRow;
  readonly writerId: string;
  /** The shard's lease epoch in the store when the row was committed. */
  readonly leaseEpochThen: number | undefined;
}

export interface LeaseGrant {
  readonly key: string;
  readonly epoch: number;
  readonly processId: string;
}

/** What one process counts for one shard it hosts. */
export interface ShownShardTallies {
  readonly processId: string;
  readonly status: ProcessStatus;
  readonly electionId: string;
  readonly shard: number;
  readonly counts: readonly number[];
  /** This process is the shard's owner now (elections mode: the election's; cluster mode: the map's) and serves it. */
  readonly owner: boolean;
}

const never = new Promise<never>(() => {});

/** The links' request timeout (cluster/links.ts requestTimeoutMs), in virtual ms. */
const forwardTimeoutMs = 1_000;

/** A function, so TypeScript does not narrow the status across an await. */
function isDead(process: SimProcess): boolean {
  return process.status === 'dead';
}

// ---------------------------------------------------------------------------------------------

export class World {
  readonly clock = new VirtualClock();
  readonly store = new MemoryVoteStore();
  readonly processes: SimProcess[] = [];
  readonly elections: SimElection[] = [];
  readonly requests: VoteRequest[] = [];
  readonly answers: AnswerRecord[] = [];
  readonly rowWrites: RowWrite[] = [];
  readonly leaseGrants: LeaseGrant[] = [];
  /** Problems the world saw itself (a reply twice, an open that failed). */
  readonly anomalies: string[] = [];
  /** A trace of what happened, printed with a failure. */
  readonly trace: string[] = [];
  readonly config: WorldConfig;
  readonly mode: 'elections' | 'cluster';
  /** Cluster mode: the shared cluster store and lease table. */
  readonly clusterState: SimClusterState;

  private readonly work: AsyncWork;
  private readonly faults: InjectedFault[] = [];
  /** Planted bug `replicationHidesGaps`: batches seen and dropped per stream (sender > receiver / shard / epoch). */
  private readonly hiddenReplicationGaps = new Map<string, { seen: number; dropped: number }>();
  /** Shards taken over from this node's own replica state (warm), over the run. */
  warmPromotions = 0;
  private journalStalled = false;
  private healJournal: (() => void) | null = null;
  private journalHealed: Promise<void> = Promise.resolve();
  private isolationHealed: Promise<void> = Promise.resolve();
  private healIsolation: (() => void) | null = null;
  private incarnations: number[] = [];
  private readonly inFlightForwards = new Set<{ readonly from: SimProcess; readonly toNodeId: string; readonly fail: (failed: LinkFailure['failed']) => void }>();
  private nextRequestId = 1;
  private installed = false;

  constructor(config: WorldConfig, work: AsyncWork) {
    if (!(Number.isInteger(config.nodeCount) && config.nodeCount >= 1)) throw new Error('nodeCount must be >= 1');
    this.config = config;
    this.mode = config.mode ?? 'elections';
    this.work = work;
    this.clusterState = new SimClusterState(this.clock.now, this.store, () => this.elections.map((e) => ({ electionId: e.electionId, shardCount: e.shardCount })));
  }

  get nowMs(): number {
    return this.clock.now();
  }

  private get timings(): ClusterTimings {
    return this.config.cluster ?? { heartbeatIntervalMs: 50, deadAfterMs: 200, leaseTtlMs: 300, movesInFlightMax: 1, autoBalance: true, routeRetryMs: 0, replicasPerShard: 1 };
  }

  // -------------------------------------------------------------------------------------------
  // Lifecycle

  /** Installs the virtual clock, starts the processes and opens the configured elections. */
  async start(): Promise<void> {
    this.clock.install();
    this.installed = true;
    this.incarnations = new Array<number>(this.config.nodeCount).fill(0);
    for (let slot = 0; slot < this.config.nodeCount; slot++) this.spawn(slot);
    for (const spec of this.config.elections) this.openElection(spec);
    await this.runUntil(() => this.electionsServed(), 'initial elections served');
  }

  /** Stops every process's timers by uninstalling the clock; the world is not usable after. */
  dispose(): void {
    for (const process of this.processes) process.status = 'dead';
    if (this.installed) this.clock.uninstall();
    this.installed = false;
  }

  private spawn(slot: number, options: { member?: boolean } = {}): SimProcess {
    const incarnation = ++this.incarnations[slot]!;
    const id = `n${slot}.${incarnation}`;
    const nodeId = `n${slot}`;
    let voteCounter = 0;
    const process = { id, nodeId, slot, status: 'live', isolated: false, epochs: new Map(), opening: new Set(), node: null, cluster: null } as unknown as SimProcess;
    const node = createVoteNode({
      journal: this.journalFor(process),
      snapshots: this.snapshotsFor(process),
      storedVotes: this.storedVotesFor(process),
      batchIds: this.batchIdsFor(process),
      config: this.config.node,
      now: this.clock.now,
      newVoteId: () => `${id}-v${++voteCounter}`,
      onBatchCommitted: (batch) => process.cluster?.replication.streamer.onBatchCommitted(batch),
    });
    (process as { node: VoteNode }).node = node;
    this.processes.push(process);
    this.note(`spawn ${id}`);
    if (this.mode === 'cluster' && options.member !== false) this.startClusterRoles(process);
    return process;
  }

  /**
   * Cluster mode: the node's cluster roles, composed by production's own composeClusterRoles
   * (cluster/clusterNode.ts) over this process's simulated ports; only the timings differ.
   */
  private startClusterRoles(process: SimProcess): void {
    const timings = this.timings;
    const electionInfo = (electionId: string) => {
      const election = this.elections.find((e) => e.electionId === electionId);
      return election === undefined ? undefined : { shardCount: election.shardCount, candidateCount: election.candidateCount, status: election.closed ? ('closed' as const) : ('open' as const) };
    };
    const roles = composeClusterRoles({
      nodeId: process.nodeId,
      az: `az-${process.slot % 3}`,
      secretsFingerprint: 'sim',
      settings: {
        heartbeatIntervalMs: timings.heartbeatIntervalMs,
        deadAfterMs: timings.deadAfterMs,
        leaseTtlMs: timings.leaseTtlMs,
        movesInFlightMax: timings.movesInFlightMax,
        autoBalance: timings.autoBalance,
        routeRetryMs: timings.routeRetryMs,
        replicas: timings.replicasPerShard,
        forwardTimeoutMs,
        retryAfterMs: this.config.node.retryAfterMs ?? 1_000,
        // Faster than production's, so that a run of a few virtual seconds sees several of each.
        viewRefreshMs: 500,
        publishIntervalMs: 50,
        republishIntervalMs: 500,
        replicaReportIntervalMs: 100,
      },
      store: this.clusterStoreFor(process),
      leases: this.shardLeasesFor(process),
      voteNode: process.node,
      snapshots: this.snapshotsFor(process),
      links: this.linksFor(process),
      // No spill queue in the simulation: the guard sees every view and never pauses.
      spillGuard: new SpillGuard({ nodeId: process.nodeId, queueKind: 'off', fileInCluster: 'refuse', deadAfterMs: timings.deadAfterMs }),
      election: electionInfo,
      electionIds: () => this.elections.map((e) => e.electionId),
      // The world tells every vote node of a closed election itself (closeElection).
      reloadElections: async () => {},
      now: this.clock.now,
      log: this.logFor(process),
      hooks: {
        onRecovered: (recoveries) => {
          for (const r of recoveries) if (r.source === 'replica') this.warmPromotions++;
        },
      },
    });
    (process as { cluster: ClusterRoles }).cluster = roles;
    roles.start(`sim://${process.nodeId}`).catch((error: unknown) => this.anomalies.push(`${process.id} failed to join: ${String(error)}`));
  }

  /** What the roles log at warn and error goes to the trace; the rest is dropped. */
  private logFor(process: SimProcess): ClusterLog {
    const log: ClusterLog = {
      debug() {},
      info() {},
      warn: (_fields, message) => this.note(`${process.id} warns: ${message}`),
      error: (_fields, message) => this.note(`${process.id} logs an error: ${message}`),
      child: () => log,
    };
    return log;
  }

  /** The live process serving a slot now. */
  slotProcess(slot: number): SimProcess {
    for (let i = this.processes.length - 1; i >= 0; i--) {
      const process = this.processes[i]!;
      if (process.slot === slot && process.status === 'live') return process;
    }
    throw new Error(`no live process in slot ${slot}`);
  }

  running(): SimProcess[] {
    return this.processes.filter((p) => p.status !== 'dead');
  }

  /** Processes clients may send to: running, members, not cut off (cluster mode); newest per slot first. */
  entryProcesses(): SimProcess[] {
    return this.processes.filter((p) => p.status === 'live' && !p.isolated && p.slot < this.config.nodeCount);
  }

  private note(line: string): void {
    this.trace.push(`t=${this.nowMs - 1_000_000}ms ${line}`);
    if (this.trace.length > 400) this.trace.splice(0, this.trace.length - 400);
  }

  // -------------------------------------------------------------------------------------------
  // Elections

  openElection(spec: ElectionSpec): SimElection {
    const electionId = `e${this.elections.length}`;
    if (this.mode === 'cluster') {
      // Any live process stands as a placeholder owner; the coordinator's map decides.
      const election: SimElection = { ...spec, electionId, closed: false, owner: this.entryProcesses()[0] ?? this.processes[0]! };
      this.elections.push(election);
      this.clusterState.electionsVersion++;
      this.note(`open ${electionId} (${spec.shardCount} shards)`);
      return election;
    }
    const owner = this.slotProcess(this.elections.length % this.config.nodeCount);
    const election: SimElection = { ...spec, electionId, closed: false, owner };
    this.elections.push(election);
    this.grant(election, owner);
    return election;
  }

  closeElection(election: SimElection): void {
    election.closed = true;
    this.note(`close ${election.electionId}`);
    if (this.mode === 'cluster') {
      this.clusterState.electionsVersion++;
      // Every node reloads its elections and tells its vote node (as the gateway's registry does).
      for (const process of this.running()) process.node.closeElection(election.electionId);
      return;
    }
    if (!election.owner.opening.has(election.electionId)) election.owner.node.closeElection(election.electionId);
  }

  /** Elections mode: new epochs for every shard (one more than the store's), then the new owner recovers it. */
  private grant(election: SimElection, to: SimProcess): void {
    const epochs: number[] = [];
    for (let shard = 0; shard < election.shardCount; shard++) {
      const key = { electionId: election.electionId, shard };
      const current = this.store.leaseEpoch(key) ?? 0;
      const epoch = this.config.plantedBug === 'leaseGrantReusesEpoch' && current > 0 ? current : current + 1;
      this.store.setLeaseEpoch(key, epoch);
      this.leaseGrants.push({ key: shardKeyString(key), epoch, processId: to.id });
      epochs.push(epoch);
    }
    election.owner = to;
    to.epochs.set(election.electionId, epochs);
    to.opening.add(election.electionId);
    this.note(`grant ${election.electionId} to ${to.id} epochs [${epochs}]`);
    to.node
      .openElection({ electionId: election.electionId, shardCount: election.shardCount, candidateCount: election.candidateCount, epochs })
      .then(
        () => {
          to.opening.delete(election.electionId);
          if (election.closed) to.node.closeElection(election.electionId);
          this.note(`${to.id} opened ${election.electionId}`);
        },
        (error: unknown) => {
          to.opening.delete(election.electionId);
          if (to.status !== 'dead') this.anomalies.push(`${to.id} failed to open ${election.electionId}: ${String(error)}`);
        },
      );
  }

  /**
   * The process in `slot` stops owning anything.
   * Elections mode: killed (`dead`) or paused past its leases (`zombie`: it runs on with stale
   * state); a fresh process takes the slot, the elections move to the next slot's process (the
   * fresh one when there is one slot) under new epochs.
   * Cluster mode: `kill` — the process is gone; the coordinator declares it dead after
   * deadAfterMs and its shards go to the survivors; a new process with the same node id joins
   * after twice that (and may get shards back by balancing); `pause` — the process is cut off from the store and the other nodes until
   * healed: it fences itself, is declared dead, its shards move, and its late writes are fenced.
   */
  replace(slot: number, how: 'kill' | 'pause'): void {
    const old = [...this.processes].reverse().find((p) => p.slot === slot && p.status === 'live');
    if (old === undefined) return; // cluster: killed, not restarted yet
    if (this.mode === 'cluster') {
      if (how === 'pause') {
        old.isolated = true;
        if (this.healIsolation === null) this.isolationHealed = new Promise((resolve) => (this.healIsolation = resolve));
        this.note(`isolate ${old.id}`);
        return;
      }
      this.kill(old);
      // Restarted later: the others first declare it dead and take its shards over.
      setTimeout(() => {
        if (this.installed) this.spawn(slot);
      }, this.timings.deadAfterMs * 2);
      return;
    }
    if (how === 'kill') this.kill(old);
    else {
      old.status = 'zombie';
      this.note(`pause ${old.id}`);
    }
    const fresh = this.spawn(slot);
    const heir = this.config.nodeCount === 1 ? fresh : this.slotProcess((slot + 1) % this.config.nodeCount);
    for (const election of this.elections) if (election.owner === old) this.grant(election, heir);
  }

  private kill(process: SimProcess): void {
    process.status = 'dead';
    this.note(`kill ${process.id}`);
    this.disconnectFrom(process);
    for (const request of this.requests) if (request.processId === process.id && request.outcome === null) request.lost = true;
  }

  /**
   * Cluster mode: an operator's request (issue 13) — move one shard to the `to`-th node, drain a
   * node, balance — recorded in the store as the API does; the coordinator carries it out.
   */
  async operate(kind: 'move' | 'drain' | 'undrain' | 'balance', election: number, shard: number, node: number): Promise<void> {
    if (this.mode !== 'cluster' || this.elections.length === 0) return;
    const e = this.elections[election % this.elections.length]!;
    const nodeId = `n${node % this.config.nodeCount}`;
    const request =
      kind === 'move' ? { kind, electionId: e.electionId, shard: shard % e.shardCount, toNodeId: nodeId } : kind === 'drain' || kind === 'undrain' ? { kind, nodeId } : { kind };
    try {
      const op = await this.clusterState.store().requestOperation(request);
      this.note(`operator asks ${JSON.stringify(request)}: operation ${op.operationId}`);
    } catch (error) {
      this.note(`operator asks ${JSON.stringify(request)}: refused (${(error as Error).message})`);
    }
  }

  /**
   * Cluster mode: an operator moves a shard and, the moment the map names the new owner (the
   * hand-off under way: the old owner draining, the new one waiting for the lease or recovering),
   * one side of it is killed: the target, or the old owner. Gives up waiting for the map after a
   * few heartbeats (the move may have been refused or overtaken) and kills nobody then.
   */
  async moveThenKill(election: number, shard: number, node: number, victim: 'target' | 'owner'): Promise<void> {
    if (this.mode !== 'cluster' || this.elections.length === 0) return;
    const e = this.elections[election % this.elections.length]!;
    const key = shardKeyOf(e.electionId, shard % e.shardCount);
    const from = this.clusterState.owners.get(key)?.ownerNodeId;
    const to = `n${node % this.config.nodeCount}`;
    if (from === undefined || from === to) return;
    try {
      const op = await this.clusterState.store().requestOperation({ kind: 'move', electionId: e.electionId, shard: shard % e.shardCount, toNodeId: to });
      this.note(`operator moves ${key} ${from} → ${to} (operation ${op.operationId}), to kill the ${victim} mid-move`);
    } catch (error) {
      this.note(`operator moves ${key} ${from} → ${to}: refused (${(error as Error).message})`);
      return;
    }
    const untilMs = this.nowMs + this.timings.heartbeatIntervalMs * 4;
    for (;;) {
      await this.settle();
      if (this.clusterState.owners.get(key)?.ownerNodeId === to) break;
      if (this.work.pending() > 0) {
        await this.work.releaseOne();
        continue;
      }
      const nextMs = this.clock.nextTimerAtMs();
      if (nextMs === null || nextMs > untilMs) return;
      await this.clock.advanceTo(nextMs);
    }
    const slot = Number((victim === 'target' ? to : from).slice(1));
    this.note(`kill the ${victim} (n${slot}) of the move of ${key}, lease with ${this.clusterState.leases.get(key)?.owner ?? 'nobody'}`);
    this.replace(slot, 'kill');
  }

  /** Operators' operations not ended yet (pending or running). */
  openOperations(): string[] {
    return this.clusterState.operations.filter((op) => op.status === 'pending' || op.status === 'running').map((op) => `operation ${op.operationId} ${JSON.stringify(op.request)} still ${op.status}`);
  }

  // -------------------------------------------------------------------------------------------
  // Clients

  /**
   * Sends a vote. Elections mode: to the election's owner, or (`stale`) to an older process that
   * held it. Cluster mode: to any node (`entry` picks one), which routes it to the shard's owner;
   * `stale`: to a node that is cut off, if there is one.
   */
  vote(election: SimElection, voterNumber: number, candidateIndex: number, route: 'owner' | 'stale' = 'owner', entry = 0): VoteRequest {
    let target = election.owner;
    if (this.mode === 'cluster') {
      const entries = this.entryProcesses();
      const isolated = this.processes.filter((p) => p.status === 'live' && p.isolated);
      const chosen = route === 'stale' && isolated.length > 0 ? isolated[entry % isolated.length] : entries[entry % Math.max(1, entries.length)] ?? this.running()[0];
      // Every node is down: the connection is refused, the client sees no answer.
      target = chosen ?? this.processes[this.processes.length - 1]!;
    } else if (route === 'stale') {
      const stale = this.processes.filter((p) => p.status === 'zombie' && p.epochs.has(election.electionId));
      if (stale.length > 0) target = stale[stale.length - 1]!;
    }
    const request: VoteRequest = {
      requestId: this.nextRequestId++,
      electionId: election.electionId,
      voterNumber,
      candidateIndex,
      processId: target.id,
      sentAtMs: this.nowMs,
      outcome: null,
      lost: false,
    };
    this.requests.push(request);
    if (target.status === 'dead') {
      request.lost = true;
      return request;
    }
    const cast = { electionId: election.electionId, voterNumber, candidateIndex };
    const reply = (outcome: VoteOutcome) => this.answered(target, request, outcome);
    if (target.cluster !== null) target.cluster.router.cast(cast, reply);
    else target.node.cast(cast, reply);
    return request;
  }

  private answered(process: SimProcess, request: VoteRequest, outcome: VoteOutcome): void {
    if (process.status === 'dead') return; // the connection died with the process
    if (request.outcome !== null) {
      this.anomalies.push(`request ${request.requestId} answered twice (${request.outcome.kind}, then ${outcome.kind})`);
      return;
    }
    request.outcome = outcome;
    const storedThen = this.store.readStoredVote(request.electionId, request.voterNumber);
    this.answers.push({ request, outcome, atMs: this.nowMs, storedThen });
    const detail = outcome.kind === 'accepted' || outcome.kind === 'already_voted' ? ` ${outcome.voteId}` : outcome.kind === 'unavailable' ? ` ${outcome.reason}` : '';
    this.note(`${process.id} answers #${request.requestId} ${request.electionId}/voter ${request.voterNumber}→${request.candidateIndex}: ${outcome.kind}${detail}`);
  }

  // -------------------------------------------------------------------------------------------
  // Links between nodes (cluster mode): every message waits for the scheduler; faults lose them

  private liveProcessOf(nodeId: string): SimProcess | undefined {
    for (let i = this.processes.length - 1; i >= 0; i--) {
      const process = this.processes[i]!;
      if (process.nodeId === nodeId && process.status !== 'dead') return process;
    }
    return undefined;
  }

  /** The links of one process, as cluster/links.ts offers them to the roles. */
  private linksFor(process: SimProcess): Pick<Links, 'request' | 'send' | 'forget'> {
    return {
      request: (peer, message, onAnswer) => this.forward(process, peer.nodeId, message, onAnswer),
      send: (peer, event) => this.sendEvent(process, peer.nodeId, event),
      // As links.forget: the requests in flight to that peer fail at once.
      forget: (nodeId) => {
        for (const entry of [...this.inFlightForwards]) if (entry.from === process && entry.toNodeId === nodeId) entry.fail('disconnected');
      },
    };
  }

  /**
   * A vote forwarded over the link, as cluster/links.ts promises: `onAnswer` runs exactly once,
   * with the owner's answer, or a failure when the message or its answer is lost, the peer is
   * gone or dies meanwhile ('disconnected'), or no answer came within the request timeout.
   */
  private forward(from: SimProcess, toNodeId: string, message: CastRequest, onAnswer: (answer: OutcomeAnswer | LinkFailure) => void): void {
    let answered = false;
    const answerOnce = (answer: OutcomeAnswer | LinkFailure) => {
      if (answered || isDead(from)) return;
      answered = true;
      clearTimeout(timer);
      this.inFlightForwards.delete(entry);
      onAnswer(answer);
    };
    const fail = (failed: LinkFailure['failed']) => answerOnce({ failed });
    const timer = setTimeout(() => fail('timeout'), forwardTimeoutMs);
    const entry = { from, toNodeId, fail };
    this.inFlightForwards.add(entry);
    void (async () => {
      await this.ioOpen(from);
      await this.work.schedule(`${from.id} forwards ${message.electionId}/voter ${message.voterNumber} to ${toNodeId}`);
      const to = this.liveProcessOf(toNodeId);
      if (to === undefined || to.cluster === null) return fail('unreachable');
      if (to.isolated || this.takeFault('forwardLost')) return; // lost: the timeout answers
      to.cluster.onLinkRequest(from.nodeId, message, (answer) => {
        void (async () => {
          await this.ioOpen(to);
          await this.work.schedule(`${to.id} answers ${from.id} for ${message.electionId}/voter ${message.voterNumber}: ${answer.outcome.kind}`);
          if (isDead(to) || this.takeFault('forwardAnswerLost')) return;
          answerOnce(answer);
        })();
      });
    })();
  }

  /** A process died: its peers' links to it break, their requests in flight fail. */
  private disconnectFrom(process: SimProcess): void {
    for (const entry of [...this.inFlightForwards]) if (entry.toNodeId === process.nodeId) entry.fail('disconnected');
  }

  /**
   * A one-way event over the link to the node's live process: it waits for the scheduler (so
   * events reorder), and is lost when either end died or is cut off, or to a fault or planted bug.
   */
  private sendEvent(from: SimProcess, toNodeId: string, event: LinkEvent): void {
    const to = this.liveProcessOf(toNodeId);
    if (to === undefined || to.cluster === null) return;
    let sent = event;
    let label: string;
    let lost = () => false;
    if (event.t === 'tallies') {
      label = `tells ${to.id} ${event.electionId}/${event.shard} counts [${event.counts}]`;
      lost = () => this.config.plantedBug === 'tallyEventsLost';
    } else if (event.t === 'released') {
      label = `tells ${to.id} it ${event.grantedEpoch === undefined ? 'released' : `handed it`} ${event.electionId}/${event.shard} (epoch ${event.grantedEpoch ?? event.epoch})`;
    } else if (event.t === 'map') {
      label = `tells ${to.id} the map changed`;
    } else {
      sent = event.t === 'replicate' && this.config.plantedBug === 'replicationHidesGaps' ? this.hideReplicationGaps(from, to, event) : event;
      label = `sends ${to.id} ${sent.t === 'replicate' ? `${sent.batches.length} replicated batches` : 'its replicas\' report'}`;
      lost = () => sent.t === 'replicate' && this.takeFault('replicateLost');
    }
    void (async () => {
      await this.ioOpen(from);
      await this.work.schedule(`${from.id} ${label}`);
      if (isDead(from) || isDead(to) || to.isolated || lost()) return;
      to.cluster!.onLinkEvent(from.nodeId, sent);
    })();
  }

  /** Planted bug `replicationHidesGaps`: every second batch of a stream is lost, the later ones renumbered to hide it. */
  private hideReplicationGaps(from: SimProcess, to: SimProcess, event: ReplicateBatches): ReplicateBatches {
    const batches = [];
    for (const batch of event.batches) {
      const key = `${from.id}>${to.id}/${batch.electionId}/${batch.shard}/${batch.epoch}`;
      const hidden = this.hiddenReplicationGaps.get(key) ?? { seen: 0, dropped: 0 };
      this.hiddenReplicationGaps.set(key, hidden);
      if (++hidden.seen % 2 === 0) hidden.dropped++;
      else batches.push({ ...batch, seq: batch.seq - hidden.dropped });
    }
    return { t: 'replicate', batches };
  }

  // -------------------------------------------------------------------------------------------
  // Faults

  /** The next operation of that kind, from any process, fails that way. */
  injectFault(fault: InjectedFault): void {
    this.faults.push(fault);
  }

  private takeFault(fault: InjectedFault): boolean {
    const index = this.faults.indexOf(fault);
    if (index < 0) return false;
    this.faults.splice(index, 1);
    this.note(`fault: ${fault}`);
    return true;
  }

  /** Journal calls (commits and checks) wait, unanswered, until `heal()`. */
  stallJournal(): void {
    if (this.journalStalled) return;
    this.journalStalled = true;
    this.journalHealed = new Promise((resolve) => (this.healJournal = resolve));
    this.note('journal stalls');
  }

  heal(): void {
    this.faults.length = 0;
    if (this.journalStalled) {
      this.journalStalled = false;
      this.healJournal?.();
      this.healJournal = null;
      this.note('journal healed');
    }
    if (this.healIsolation !== null) {
      for (const process of this.processes) process.isolated = false;
      this.healIsolation();
      this.healIsolation = null;
      this.note('isolation healed');
    }
  }

  /** Waits while the process is cut off. */
  private async ioOpen(process: SimProcess): Promise<void> {
    while (process.isolated) await this.isolationHealed;
  }

  // -------------------------------------------------------------------------------------------
  // Driving

  /** Runs everything runnable now (immediates, microtasks), without moving time or releasing I/O. */
  async settle(): Promise<void> {
    await this.clock.runImmediates();
  }

  /** Lets the scheduler complete up to `count` pieces of pending I/O, one at a time. */
  async deliver(count: number): Promise<void> {
    for (let i = 0; i < count && this.work.pending() > 0; i++) {
      await this.work.releaseOne();
      await this.settle();
    }
  }

  async tick(ms: number): Promise<void> {
    await this.clock.advanceTo(this.nowMs + ms);
  }

  /**
   * Heals every fault, then runs the world — releasing I/O, moving time to the next timer —
   * until nothing is owed: every request to a running process answered, every committer idle,
   * every shard served by its owner. Throws past `virtualMsMax` of virtual time.
   */
  async quiesce(virtualMsMax = 120_000): Promise<void> {
    this.heal();
    await this.runUntil(() => this.isQuiet(), 'quiescence', virtualMsMax);
    if (this.mode === 'cluster') {
      // Results travel between nodes: give them a republish interval (500 ms) and its delivery;
      // whether they arrived is the properties' call, not a reason to fail here.
      // Operations end within a few failure-detection rounds (a dead target fails its move; a
      // killed node rejoins at twice deadAfterMs): whether they did is the properties' call.
      // First, so that results are waited for on the cluster as the operations left it.
      const operationsUntilMs = this.nowMs + this.timings.deadAfterMs * 10;
      await this.runUntil(() => this.openOperations().length === 0 || this.nowMs >= operationsUntilMs, 'operations ended', this.timings.deadAfterMs * 20);
      await this.runUntil(() => this.isQuiet(), 'quiescence', virtualMsMax);
      const untilMs = this.nowMs + 1_200;
      const converged = () => this.clusterResults().every((r) => r.tallies.join() === this.storedTallies(r.electionId).join());
      await this.runUntil(() => converged() || this.nowMs >= untilMs, 'results published', 5_000);
    }
  }

  private async runUntil(done: () => boolean, what: string, virtualMsMax = 120_000): Promise<void> {
    const deadlineMs = this.nowMs + virtualMsMax;
    for (;;) {
      await this.settle();
      if (this.work.pending() > 0) {
        await this.work.releaseOne();
        continue;
      }
      if (done()) return;
      const nextMs = this.clock.nextTimerAtMs();
      if (nextMs === null || nextMs > deadlineMs) {
        throw new Error(`no ${what} within ${virtualMsMax} virtual ms: ${this.owedSummary()}\n-- last events of the run --\n${this.trace.slice(-60).join('\n')}`);
      }
      await this.clock.advanceTo(nextMs);
    }
  }

  /** Every election's shards are served: by the election's owner, or (cluster) by the map's owner. */
  private electionsServed(): boolean {
    if (this.mode === 'elections') return this.running().every((p) => p.opening.size === 0);
    return this.elections.every((e) => Array.from({ length: e.shardCount }, (_, shard) => shard).every((shard) => this.mapOwner(e.electionId, shard) !== undefined));
  }

  /** Cluster mode: the process that owns the shard by the map, is alive and serves it. */
  private mapOwner(electionId: string, shard: number): SimProcess | undefined {
    const row = this.clusterState.owners.get(shardKeyOf(electionId, shard));
    if (row === undefined || this.clusterState.nodes.get(row.ownerNodeId)?.status !== 'alive') return undefined;
    const process = this.liveProcessOf(row.ownerNodeId);
    return process !== undefined && process.status === 'live' && process.node.isServing(electionId, shard) ? process : undefined;
  }

  isQuiet(): boolean {
    if (this.requests.some((r) => r.outcome === null && !r.lost)) return false;
    if (!this.electionsServed()) return false;
    for (const process of this.running()) {
      for (const election of this.elections) {
        const stats = process.node.stats(election.electionId);
        if (stats === undefined) continue;
        const { committer } = stats;
        if (committer.bufferedRows > 0 || committer.journalCallsInFlight > 0 || committer.batchesInDoubt > 0) return false;
        if (stats.shards.some((s) => s.backlog > 0 || s.queuedCasts > 0)) return false;
      }
    }
    return true;
  }

  private owedSummary(): string {
    const unanswered = this.requests.filter((r) => r.outcome === null && !r.lost).map((r) => `#${r.requestId}@${r.processId}`);
    const busy = this.running().flatMap((p) =>
      this.elections.flatMap(({ electionId }) => {
        const stats = p.node.stats(electionId);
        if (stats === undefined) return p.opening.has(electionId) ? [`${p.id} opening ${electionId}`] : [];
        const c = stats.committer;
        return [`${p.id}/${electionId}: buffered ${c.bufferedRows}, in flight ${c.journalCallsInFlight}, in doubt ${c.batchesInDoubt}, backlog ${stats.shards.map((s) => s.backlog)}`];
      }),
    );
    const unserved = this.elections.flatMap((e) =>
      Array.from({ length: e.shardCount }, (_, shard) => shard)
        .filter((shard) => this.mode === 'cluster' && this.mapOwner(e.electionId, shard) === undefined)
        .map((shard) => `${e.electionId}/${shard} unserved (map: ${this.clusterState.owners.get(shardKeyOf(e.electionId, shard))?.ownerNodeId ?? 'none'})`),
    );
    return `unanswered [${unanswered.join(' ')}]; ${[...busy, ...unserved].join('; ')}`;
  }

  // -------------------------------------------------------------------------------------------
  // Observations for the properties

  /** Stored votes per candidate of an election (or of one shard), counted from the rows. */
  storedTallies(electionId: string, shard?: number): number[] {
    const election = this.elections.find((e) => e.electionId === electionId)!;
    const tallies = new Array<number>(election.candidateCount).fill(0);
    for (const row of this.store.rowsLog) if (row.electionId === electionId && (shard === undefined || row.shard === shard)) tallies[row.candidateIndex]!++;
    return tallies;
  }

  /** What every running process counts now, per shard it hosts. */
  shownShardTallies(): ShownShardTallies[] {
    const shown: ShownShardTallies[] = [];
    for (const process of this.running()) {
      for (const election of this.elections) {
        for (const tallies of process.node.shardTallies(election.electionId)) {
          const owner =
            process.status === 'live' &&
            process.node.isServing(election.electionId, tallies.shard) &&
            (this.mode === 'cluster' ? this.mapOwner(election.electionId, tallies.shard) === process : election.owner === process);
          shown.push({ processId: process.id, status: process.status, electionId: election.electionId, shard: tallies.shard, counts: tallies.counts, owner });
        }
      }
    }
    return shown;
  }

  /** Cluster mode: the whole-election results every live member shows (ClusterResults). */
  clusterResults(): { processId: string; electionId: string; tallies: readonly number[] }[] {
    const shown: { processId: string; electionId: string; tallies: readonly number[] }[] = [];
    for (const process of this.processes) {
      if (process.status !== 'live' || process.cluster === null) continue;
      for (const election of this.elections) {
        const results = process.cluster.results.results(election.electionId);
        shown.push({ processId: process.id, electionId: election.electionId, tallies: results?.tallies ?? [] });
      }
    }
    return shown;
  }

  /**
   * Crash-recovery check: a fresh process (no cluster member) recovers every election from the
   * store under new epochs and returns what it counts per shard. Call after quiesce().
   */
  async recoverAll(): Promise<ShownShardTallies[]> {
    this.incarnations.push(0);
    const slot = this.incarnations.length - 1;
    const checker = this.spawn(slot, { member: false });
    for (const election of this.elections) this.grant(election, checker);
    await this.runUntil(() => checker.opening.size === 0, 'recovery by a fresh process');
    return this.elections.flatMap((e) =>
      checker.node.shardTallies(e.electionId).map((t) => ({ processId: checker.id, status: checker.status, electionId: e.electionId, shard: t.shard, counts: t.counts, owner: true })),
    );
  }

  // -------------------------------------------------------------------------------------------
  // Cluster store and shard leases of one process: through the scheduler, waiting while cut off

  /** One call of `process` to the cluster's store: waits while it is cut off, then for the scheduler; a dead process's never returns. */
  private async throughScheduler<T>(process: SimProcess, label: string, op: () => Promise<T>): Promise<T> {
    if (isDead(process)) return never;
    await this.ioOpen(process);
    await this.work.schedule(`${process.id} ${label}`);
    if (isDead(process)) return never;
    return op();
  }

  private clusterStoreFor(process: SimProcess): ClusterStore {
    const inner = this.clusterState.store();
    const call = <T>(label: string, op: () => Promise<T>): Promise<T> => this.throughScheduler(process, label, op);
    return {
      join: (request) => call('joins', () => inner.join(request)),
      heartbeat: (nodeId, incarnation, options) => call('heartbeat', () => inner.heartbeat(nodeId, incarnation, options)),
      readView: () => call('reads the view', () => inner.readView()),
      declareSilentNodesDead: (coordinatorNodeId, deadAfterMs) =>
        call('declares silent nodes dead', async () => {
          const dead = await inner.declareSilentNodesDead(coordinatorNodeId, deadAfterMs);
          if (dead !== null && dead.length > 0) this.note(`${process.id} (coordinator) declares dead: ${dead.join(', ')}`);
          return dead;
        }),
      assignShards: (coordinatorNodeId, assignments) =>
        call('assigns shards', async () => {
          const version = await inner.assignShards(coordinatorNodeId, assignments);
          if (version !== null && assignments.length > 0) this.note(`${process.id} (coordinator) map v${version}: ${assignments.map((a) => `${a.electionId}/${a.shard}→${a.ownerNodeId}`).join(' ')}`);
          return version;
        }),
      leave: (nodeId, incarnation) => call('leaves', () => inner.leave(nodeId, incarnation)),
      requestOperation: (request) => call(`requests ${request.kind}`, () => inner.requestOperation(request)),
      listOperations: (limit) => call('lists operations', () => inner.listOperations(limit)),
      getOperation: (operationId) => call(`reads operation ${operationId}`, () => inner.getOperation(operationId)),
      updateOperation: (coordinatorNodeId, operationId, update) =>
        call(`updates operation ${operationId}: ${update.status}`, async () => {
          if (update.status === 'failed' && this.config.plantedBug === 'operationFailuresLost') return true;
          const updated = await inner.updateOperation(coordinatorNodeId, operationId, update);
          if (updated) this.note(`${process.id} (coordinator) operation ${operationId} ${update.status}${update.error ? `: ${update.error}` : ''}`);
          return updated;
        }),
      setDraining: (coordinatorNodeId, nodeId, draining) => call(`marks ${nodeId} draining=${draining}`, () => inner.setDraining(coordinatorNodeId, nodeId, draining)),
    };
  }

  private shardLeasesFor(process: SimProcess): ShardLeases {
    const inner = this.clusterState.leasesFor(
      process.nodeId,
      this.timings.leaseTtlMs,
      (key, epoch) => {
        this.leaseGrants.push({ key: shardKeyString(key), epoch, processId: process.id });
        this.note(`${process.id} takes the lease of ${shardKeyString(key)} at epoch ${epoch}`);
      },
      this.config.plantedBug === 'leaseGrantReusesEpoch',
      (key, epoch, toNodeId) => {
        const to = [...this.processes].reverse().find((p) => p.nodeId === toNodeId && p.status !== 'dead');
        this.leaseGrants.push({ key: shardKeyString(key), epoch, processId: to?.id ?? `${toNodeId} (no process)` });
        this.note(`${process.id} hands the lease of ${shardKeyString(key)} to ${to?.id ?? toNodeId} at epoch ${epoch}`);
      },
    );
    const call = <T>(label: string, op: () => Promise<T>): Promise<T> => this.throughScheduler(process, label, op);
    return {
      acquire: (electionId, shards, takeOver) =>
        call(`acquires leases ${electionId}/[${shards}] (${takeOver})`, async () => {
          const acquired = await inner.acquire(electionId, shards, takeOver);
          if (acquired.length < shards.length) this.note(`${process.id} refused leases ${electionId}/[${shards.filter((s) => !acquired.some((a) => a.shard === s))}] (${takeOver})`);
          return acquired;
        }),
      renew: (electionId, leases) => call(`renews leases ${electionId}`, () => inner.renew(electionId, leases)),
      release: (electionId, leases) => call(`releases leases ${electionId}/[${leases.map((l) => l.shard)}]`, () => inner.release(electionId, leases)),
      handOver: (electionId, lease, toNodeId) => call(`hands the lease of ${electionId}/${lease.shard} to ${toNodeId}`, () => inner.handOver(electionId, lease, toNodeId)),
    };
  }

  // -------------------------------------------------------------------------------------------
  // Adapters: the shared store, seen by one process through the scheduler and the faults

  private journalFor(process: SimProcess): Journal {
    const world = this;
    return {
      async commit(batch: JournalBatch): Promise<JournalCommitResult> {
        if (isDead(process)) return never;
        await world.ioOpen(process);
        await world.journalOpen();
        await world.work.schedule(`${process.id} commit #${batch.batchId} (${batch.rows.length} rows) reaches the store`);
        let result: JournalCommitResult;
        if (world.takeFault('commitLost')) result = { kind: 'failed', message: 'connection lost before COMMIT' };
        else {
          result = world.storeCommit(process, batch);
          if (result.kind === 'committed' && world.takeFault('commitStoredButReportedFailed')) result = { kind: 'failed', message: 'connection lost after COMMIT' };
        }
        world.note(`${process.id} commit #${batch.batchId} [${batch.rows.map((r) => `${r.electionId}/${r.voterNumber}@${r.epoch}`)}]: ${result.kind}`);
        await world.work.schedule(`${process.id} commit #${batch.batchId} answer: ${result.kind}`);
        if (isDead(process)) return never;
        return result;
      },
      async wasCommitted(batchId: number): Promise<boolean> {
        if (isDead(process)) return never;
        await world.ioOpen(process);
        await world.journalOpen();
        await world.work.schedule(`${process.id} check #${batchId}`);
        if (isDead(process)) return never;
        if (world.takeFault('commitCheckFails')) throw new Error('commit check failed');
        return world.store.wasCommitted(batchId);
      },
    };
  }

  private journalOpen(): Promise<void> {
    return this.journalStalled ? this.journalHealed : Promise.resolve();
  }

  private storeCommit(process: SimProcess, batch: JournalBatch): JournalCommitResult {
    const bug = this.config.plantedBug;
    if (bug === 'journalAcksWithoutStoring') return { kind: 'committed', conflicts: [] };
    const leaseThen = new Map<string, number | undefined>();
    for (const row of batch.rows) leaseThen.set(shardKeyString(row), this.store.leaseEpoch(row));
    const restore: [ShardKey, number][] = [];
    if (bug === 'journalIgnoresFencing') {
      for (const row of batch.rows) {
        const current = this.store.leaseEpoch(row);
        if (current !== undefined && current !== row.epoch) {
          restore.push([row, current]);
          this.store.setLeaseEpoch(row, row.epoch);
        }
      }
    }
    const rowsBefore = this.store.rowsLog.length;
    const result = this.store.commitBatch(batch);
    for (const [key, epoch] of restore.reverse()) this.store.setLeaseEpoch(key, epoch);
    for (let i = rowsBefore; i < this.store.rowsLog.length; i++) {
      const row = this.store.rowsLog[i]!;
      this.rowWrites.push({ row, writerId: process.id, leaseEpochThen: leaseThen.get(shardKeyString(row)) });
    }
    return result;
  }

  private storedVotesFor(process: SimProcess): StoredVoteReader {
    const world = this;
    return {
      async readStoredVote(electionId: string, voterNumber: number): Promise<StoredVote | null> {
        if (isDead(process)) return never;
        await world.ioOpen(process);
        await world.work.schedule(`${process.id} lookup ${electionId}/${voterNumber}`);
        if (isDead(process)) return never;
        if (world.takeFault('lookupFails')) throw new Error('lookup failed');
        const stored = world.store.readStoredVote(electionId, voterNumber);
        if (stored !== null && world.config.plantedBug === 'lookupAnswersAnotherVoteId') return { ...stored, voteId: `${stored.voteId}-again` };
        return stored;
      },
    };
  }

  private snapshotsFor(process: SimProcess): SnapshotStore {
    const world = this;
    return {
      async writeSnapshot(snapshot: ShardSnapshot): Promise<void> {
        if (isDead(process)) return never;
        await world.ioOpen(process);
        await world.work.schedule(`${process.id} snapshot ${snapshot.electionId}/${snapshot.shard} @${snapshot.watermarkBatchId}`);
        if (world.takeFault('snapshotWriteFails')) throw new Error('snapshot write failed');
        world.store.writeSnapshot(snapshot);
        world.note(`${process.id} snapshot ${snapshot.electionId}/${snapshot.shard} epoch ${snapshot.epoch} @${snapshot.watermarkBatchId} [${snapshot.tallies}] stored`);
        if (isDead(process)) return never;
      },
      async readLatestSnapshot(key: ShardKey): Promise<ShardSnapshot | null> {
        if (isDead(process)) return never;
        await world.ioOpen(process);
        await world.work.schedule(`${process.id} reads snapshot ${shardKeyString(key)}`);
        if (isDead(process)) return never;
        const snapshot = world.store.readLatestSnapshot(key);
        if (snapshot !== null && world.config.plantedBug === 'snapshotReadLosesBitmap') {
          return { ...snapshot, watermarkBatchId: 0, bitmap: new Uint8Array(snapshot.bitmap.length) };
        }
        return snapshot;
      },
      async readVotesAfter(key, afterBatchId, onRows): Promise<void> {
        if (isDead(process)) return never;
        await world.ioOpen(process);
        await world.work.schedule(`${process.id} reads votes of ${shardKeyString(key)} after #${afterBatchId}`);
        if (isDead(process)) return never;
        let rows = world.store.votesAfter(key, afterBatchId);
        if (world.config.plantedBug === 'replaySkipsFirstRow') rows = rows.slice(1);
        if (rows.length > 0) onRows(rows);
      },
    };
  }

  private batchIdsFor(process: SimProcess): BatchIdSource {
    const world = this;
    const source = new MemoryBatchIdSource(this.store, this.config.batchIdBlockSize);
    return {
      async next(): Promise<number> {
        if (isDead(process)) return never;
        const batchId = source.nextSync();
        await world.ioOpen(process);
        await world.work.schedule(`${process.id} batch id #${batchId}`);
        if (isDead(process)) return never;
        return batchId;
      },
      lastAssigned: () => source.lastAssigned(),
      // A read of the sequence, atomic here: no scheduled step, so recorded schedules replay as they were.
      async reservedCeiling(): Promise<number> {
        if (isDead(process)) return never;
        return source.reservedCeiling();
      },
    };
  }
}
