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
  | 'leaseGrantReusesEpoch';

export type InjectedFault = 'commitLost' | 'commitStoredButReportedFailed' | 'commitCheckFails' | 'lookupFails' | 'snapshotWriteFails';

export interface ElectionSpec {
  readonly shardCount: number;
  readonly candidateCount: number;
}

export interface WorldConfig {
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
  readonly slot: number;
  readonly node: VoteNode;
  status: ProcessStatus;
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

export interface NodeSnapshotOfResults {
  readonly processId: string;
  readonly status: ProcessStatus;
  readonly electionId: string;
  readonly tallies: readonly number[];
}

const never = new Promise<never>(() => {});

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

  private readonly work: AsyncWork;
  private readonly faults: InjectedFault[] = [];
  private journalStalled = false;
  private healJournal: (() => void) | null = null;
  private journalHealed: Promise<void> = Promise.resolve();
  private incarnations: number[] = [];
  private nextRequestId = 1;
  private installed = false;

  constructor(config: WorldConfig, work: AsyncWork) {
    if (!(Number.isInteger(config.nodeCount) && config.nodeCount >= 1)) throw new Error('nodeCount must be >= 1');
    this.config = config;
    this.work = work;
  }

  get nowMs(): number {
    return this.clock.now();
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
    await this.runUntil(() => this.processes.every((p) => p.opening.size === 0), 'initial elections open');
  }

  /** Stops every process's timers by uninstalling the clock; the world is not usable after. */
  dispose(): void {
    for (const process of this.processes) process.status = 'dead';
    if (this.installed) this.clock.uninstall();
    this.installed = false;
  }

  private spawn(slot: number): SimProcess {
    const incarnation = ++this.incarnations[slot]!;
    const id = `n${slot}.${incarnation}`;
    let voteCounter = 0;
    const process: SimProcess = {
      id,
      slot,
      status: 'live',
      epochs: new Map(),
      opening: new Set(),
      node: null as unknown as VoteNode,
    };
    const node = createVoteNode({
      journal: this.journalFor(process),
      snapshots: this.snapshotsFor(process),
      storedVotes: this.storedVotesFor(process),
      batchIds: this.batchIdsFor(process),
      config: this.config.node,
      now: this.clock.now,
      newVoteId: () => `${id}-v${++voteCounter}`,
    });
    (process as { node: VoteNode }).node = node;
    this.processes.push(process);
    this.note(`spawn ${id}`);
    return process;
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

  private note(line: string): void {
    this.trace.push(`t=${this.nowMs - 1_000_000}ms ${line}`);
    if (this.trace.length > 400) this.trace.splice(0, this.trace.length - 400);
  }

  // -------------------------------------------------------------------------------------------
  // The lease authority: elections given to processes

  openElection(spec: ElectionSpec): SimElection {
    const electionId = `e${this.elections.length}`;
    const owner = this.slotProcess(this.elections.length % this.config.nodeCount);
    const election: SimElection = { ...spec, electionId, closed: false, owner };
    this.elections.push(election);
    this.grant(election, owner);
    return election;
  }

  closeElection(election: SimElection): void {
    election.closed = true;
    this.note(`close ${election.electionId} on ${election.owner.id}`);
    if (!election.owner.opening.has(election.electionId)) election.owner.node.closeElection(election.electionId);
  }

  /** New epochs for every shard (one more than the store's), then the new owner recovers it. */
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
   * The process in `slot` stops owning anything: killed (`dead`) or paused past its leases
   * (`zombie`: it runs on with stale state). A fresh process takes the slot; the elections move
   * to the next slot's process (to the fresh one when there is one slot) under new epochs.
   */
  replace(slot: number, how: 'kill' | 'pause'): void {
    const old = this.slotProcess(slot);
    old.status = how === 'kill' ? 'dead' : 'zombie';
    this.note(`${how} ${old.id}`);
    if (how === 'kill') {
      for (const request of this.requests) if (request.processId === old.id && request.outcome === null) request.lost = true;
    }
    const fresh = this.spawn(slot);
    const heir = this.config.nodeCount === 1 ? fresh : this.slotProcess((slot + 1) % this.config.nodeCount);
    for (const election of this.elections) if (election.owner === old) this.grant(election, heir);
  }

  // -------------------------------------------------------------------------------------------
  // Clients

  /** Sends a vote to the election's owner, or (`stale`) to an older process that held it. */
  vote(election: SimElection, voterNumber: number, candidateIndex: number, route: 'owner' | 'stale' = 'owner'): VoteRequest {
    let target = election.owner;
    if (route === 'stale') {
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
    target.node.cast({ electionId: election.electionId, voterNumber, candidateIndex }, (outcome) => this.answered(target, request, outcome));
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
   * every election open. Throws past `virtualMsMax` of virtual time.
   */
  async quiesce(virtualMsMax = 120_000): Promise<void> {
    this.heal();
    await this.runUntil(() => this.isQuiet(), 'quiescence', virtualMsMax);
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
        throw new Error(`no ${what} within ${virtualMsMax} virtual ms: ${this.owedSummary()}`);
      }
      await this.clock.advanceTo(nextMs);
    }
  }

  isQuiet(): boolean {
    if (this.requests.some((r) => r.outcome === null && !r.lost)) return false;
    for (const process of this.running()) {
      if (process.opening.size > 0) return false;
      for (const electionId of process.epochs.keys()) {
        const stats = process.node.stats(electionId);
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
      [...p.epochs.keys()].flatMap((electionId) => {
        const stats = p.node.stats(electionId);
        if (stats === undefined) return p.opening.has(electionId) ? [`${p.id} opening ${electionId}`] : [];
        const c = stats.committer;
        return [`${p.id}/${electionId}: buffered ${c.bufferedRows}, in flight ${c.journalCallsInFlight}, in doubt ${c.batchesInDoubt}, backlog ${stats.shards.map((s) => s.backlog)}`];
      }),
    );
    return `unanswered [${unanswered.join(' ')}]; ${busy.join('; ')}`;
  }

  // -------------------------------------------------------------------------------------------
  // Observations for the properties

  /** Stored votes per candidate of an election, counted from the rows. */
  storedTallies(electionId: string): number[] {
    const election = this.elections.find((e) => e.electionId === electionId)!;
    const tallies = new Array<number>(election.candidateCount).fill(0);
    for (const row of this.store.rowsLog) if (row.electionId === electionId) tallies[row.candidateIndex]!++;
    return tallies;
  }

  /** The results every running process shows now, for each election it holds open. */
  shownResults(): NodeSnapshotOfResults[] {
    const shown: NodeSnapshotOfResults[] = [];
    for (const process of this.running()) {
      for (const electionId of process.epochs.keys()) {
        const results = process.node.results(electionId);
        if (results !== undefined) shown.push({ processId: process.id, status: process.status, electionId, tallies: results.tallies });
      }
    }
    return shown;
  }

  /**
   * Crash-recovery check: a fresh process in a new slot recovers every election from the store
   * (new epochs) and returns what it counts. Call after quiesce().
   */
  async recoverAll(): Promise<NodeSnapshotOfResults[]> {
    this.incarnations.push(0);
    const slot = this.incarnations.length - 1;
    const checker = this.spawn(slot);
    for (const election of this.elections) this.grant(election, checker);
    await this.runUntil(() => checker.opening.size === 0, 'recovery by a fresh process');
    return this.elections.map((e) => ({ processId: checker.id, status: checker.status, electionId: e.electionId, tallies: checker.node.results(e.electionId)?.tallies ?? [] }));
  }

  // -------------------------------------------------------------------------------------------
  // Adapters: the shared store, seen by one process through the scheduler and the faults

  private journalFor(process: SimProcess): Journal {
    const world = this;
    return {
      async commit(batch: JournalBatch): Promise<JournalCommitResult> {
        if (isDead(process)) return never;
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
        await world.work.schedule(`${process.id} snapshot ${snapshot.electionId}/${snapshot.shard} @${snapshot.watermarkBatchId}`);
        if (world.takeFault('snapshotWriteFails')) throw new Error('snapshot write failed');
        world.store.writeSnapshot(snapshot);
        world.note(`${process.id} snapshot ${snapshot.electionId}/${snapshot.shard} epoch ${snapshot.epoch} @${snapshot.watermarkBatchId} [${snapshot.tallies}] stored`);
        if (isDead(process)) return never;
      },
      async readLatestSnapshot(key: ShardKey): Promise<ShardSnapshot | null> {
        if (isDead(process)) return never;
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
        await world.work.schedule(`${process.id} batch id #${batchId}`);
        if (isDead(process)) return never;
        return batchId;
      },
      lastAssigned: () => source.lastAssigned(),
    };
  }
}
