// A deterministic simulation of one vote node (after TigerBeetle's VOPR): the real shard and
// committer step functions, a fake clock, a seeded scheduler, and a fault-injecting in-memory
// database. No nact, no real timers: every effect becomes an event at a seeded time, so a seed
// replays exactly. An independent checker then holds the run against DESIGN.md's invariants,
// looking only at what left the node (replies), what the database stored, and the live tallies.
//
// Faults: commits rejected (nothing stored), commits stored but reported failed, commit checks
// failing (batches in doubt), slow commits finishing out of order, batch-id reservations
// failing, lookups failing, duplicated batch outcomes, leases taken over mid-run (fencing), and
// crashes (all node memory lost; recovery from the snapshot store + journal).

import { ElectionAggregate } from './election.ts';
import {
  canAdmit,
  createCommitterState,
  isCommitterIdle,
  stepCommitter,
  type AppendedRow,
  type CommitterMsg,
  type CommitterState,
} from './groupCommit.ts';
import { MemoryVoteStore } from './memoryAdapters.ts';
import { shardKeyString, type JournalBatch, type JournalCommitResult, type ShardKey } from './ports.ts';
import { createShardState, stepShard, type ShardMsg, type ShardState, type VoteOutcome } from './shard.ts';

// ---------------------------------------------------------------------------------------------
// Seeded randomness

/** sfc32, seeded through splitmix32: small, fast, good enough for scheduling. */
export class Prng {
  private a: number;
  private b: number;
  private c: number;
  private d: number;

  constructor(seed: number) {
    let state = seed >>> 0;
    const splitmix = (): number => {
      state = (state + 0x9e3779b9) >>> 0;
      let z = state;
      z = Math.imul(z ^ (z >>> 16), 0x85ebca6b) >>> 0;
      z = Math.imul(z ^ (z >>> 13), 0xc2b2ae35) >>> 0;
      return (z ^ (z >>> 16)) >>> 0;
    };
    this.a = splitmix();
    this.b = splitmix();
    this.c = splitmix();
    this.d = splitmix();
    for (let i = 0; i < 12; i++) this.next();
  }

  /** Uniform in [0, 1). */
  next(): number {
    const t = (((this.a + this.b) >>> 0) + this.d) >>> 0;
    this.d = (this.d + 1) >>> 0;
    this.a = this.b ^ (this.b >>> 9);
    this.b = (this.c + (this.c << 3)) >>> 0;
    this.c = ((this.c << 21) | (this.c >>> 11)) >>> 0;
    this.c = (this.c + t) >>> 0;
    return t / 0x1_0000_0000;
  }

  /** Uniform integer in [min, max]. */
  int(min: number, max: number): number {
    return min + Math.floor(this.next() * (max - min + 1));
  }

  chance(probability: number): boolean {
    return this.next() < probability;
  }
}

// ---------------------------------------------------------------------------------------------
// Scheduler: a binary heap of events ordered by (time, insertion)

interface SimEvent {
  readonly atMs: number;
  readonly seq: number;
  readonly run: () => void;
}

class EventQueue {
  private readonly heap: SimEvent[] = [];

  get size(): number {
    return this.heap.length;
  }

  push(event: SimEvent): void {
    const heap = this.heap;
    heap.push(event);
    let i = heap.length - 1;
    while (i > 0) {
      const parent = (i - 1) >> 1;
      if (!before(heap[i]!, heap[parent]!)) break;
      [heap[i], heap[parent]] = [heap[parent]!, heap[i]!];
      i = parent;
    }
  }

  pop(): SimEvent | undefined {
    const heap = this.heap;
    if (heap.length === 0) return undefined;
    const top = heap[0]!;
    const last = heap.pop()!;
    if (heap.length > 0) {
      heap[0] = last;
      let i = 0;
      for (;;) {
        const left = 2 * i + 1;
        const right = left + 1;
        let smallest = i;
        if (left < heap.length && before(heap[left]!, heap[smallest]!)) smallest = left;
        if (right < heap.length && before(heap[right]!, heap[smallest]!)) smallest = right;
        if (smallest === i) break;
        [heap[i], heap[smallest]] = [heap[smallest]!, heap[i]!];
        i = smallest;
      }
    }
    return top;
  }
}

function before(x: SimEvent, y: SimEvent): boolean {
  return x.atMs < y.atMs || (x.atMs === y.atMs && x.seq < y.seq);
}

// ---------------------------------------------------------------------------------------------
// Parameters (drawn from the seed)

/** Deliberately broken journals, to prove the checker can fail. */
export type BrokenJournal = 'none' | 'commit_without_store' | 'ignore_fencing';

export interface SimulationOptions {
  readonly seed: number;
  readonly brokenJournal?: BrokenJournal;
  /** Stops the run (and reports a violation) past this many events. */
  readonly eventsMax?: number;
}

interface ElectionSpec {
  readonly electionId: string;
  readonly shardCount: number;
  readonly candidateCount: number;
  readonly voterCount: number;
  closed: boolean;
}

interface Params {
  readonly elections: ElectionSpec[];
  readonly castsPlanned: number;
  readonly activeMs: number;
  readonly pendingVotesMax: number;
  readonly committer: {
    batchRowsMax: number;
    flushIntervalMs: number;
    commitsInFlightMax: number;
    bufferRowsMax: number;
    commitDeadlineMs: number;
    checkRetryIntervalMs: number;
    inDoubtBatchesMax: number;
  };
  readonly batchIdBlockSize: number;
  readonly snapshotIntervalMs: number;
  readonly retryAfterMs: number;
  readonly clientTimeoutMs: number;
  readonly commitRejectChance: number;
  readonly commitAckLostChance: number;
  readonly checkFailChance: number;
  readonly slowCommitChance: number;
  readonly lookupFailChance: number;
  readonly batchIdFailChance: number;
  readonly duplicateDeliveryChance: number;
  readonly leaseTakeovers: number;
  readonly crashes: number;
}

function drawParams(prng: Prng): Params {
  const elections: ElectionSpec[] = [];
  const electionCount = prng.int(1, 3);
  for (let i = 0; i < electionCount; i++) {
    elections.push({
      electionId: `election-${i}`,
      shardCount: prng.int(1, 4),
      candidateCount: prng.int(2, 4),
      voterCount: prng.int(8, 60),
      closed: false,
    });
  }
  const batchRowsMax = prng.int(1, 16);
  const faulty = prng.chance(0.85);
  const level = (max: number): number => (faulty ? prng.next() * max : 0);
  return {
    elections,
    castsPlanned: prng.int(60, 300),
    activeMs: 3_000,
    pendingVotesMax: prng.int(3, 40),
    committer: {
      batchRowsMax,
      flushIntervalMs: prng.int(1, 10),
      commitsInFlightMax: prng.int(1, 3),
      bufferRowsMax: batchRowsMax * prng.int(1, 6),
      commitDeadlineMs: prng.int(30, 1_500),
      checkRetryIntervalMs: prng.int(5, 60),
      inDoubtBatchesMax: prng.int(1, 4),
    },
    batchIdBlockSize: prng.int(1, 8),
    snapshotIntervalMs: prng.int(50, 600),
    retryAfterMs: prng.int(10, 200),
    clientTimeoutMs: prng.int(300, 1_200),
    commitRejectChance: level(0.25),
    commitAckLostChance: level(0.25),
    checkFailChance: level(0.4),
    slowCommitChance: level(0.2),
    lookupFailChance: level(0.15),
    batchIdFailChance: level(0.1),
    duplicateDeliveryChance: level(0.1),
    leaseTakeovers: faulty ? prng.int(0, 3) : 0,
    crashes: faulty ? prng.int(0, 2) : 0,
  };
}

// ---------------------------------------------------------------------------------------------
// The simulated node: everything in here is lost on a crash

interface SimShard {
  state: ShardState;
  snapshotInProgress: boolean;
  reacquiring: boolean;
}

interface PendingRequest {
  readonly client: ClientRequest;
  readonly key: string;
  /** The shard has stepped the CastVote (it may hold the request as a waiter). */
  delivered: boolean;
}

interface SimNode {
  readonly incarnation: number;
  readonly shards: Map<string, SimShard>;
  /** Per shard key: time of the last message scheduled, so each mailbox stays FIFO. */
  readonly mailboxTailAtMs: Map<string, number>;
  readonly aggregates: Map<string, ElectionAggregate>;
  readonly committer: CommitterState;
  readonly batchIds: { next: number; end: number; last: number };
  readonly requests: Map<number, PendingRequest>;
  timerToken: number;
  castsInTransit: number;
  nextRequestId: number;
  nextVoteId: number;
}

// ---------------------------------------------------------------------------------------------
// Clients and what they were told

interface ClientRequest {
  readonly electionId: string;
  readonly voterNumber: number;
  readonly candidateIndex: number;
  readonly attempt: number;
  answered: boolean;
}

export interface ReplyRecord {
  readonly electionId: string;
  readonly voterNumber: number;
  readonly candidateIndex: number;
  readonly outcome: VoteOutcome;
  readonly atMs: number;
}

export interface SimulationSummary {
  readonly events: number;
  readonly castsSent: number;
  readonly replies: Record<string, number>;
  readonly rowsStored: number;
  readonly crashes: number;
  readonly leaseTakeovers: number;
  readonly commitsFailed: number;
  readonly batchesInDoubt: number;
  readonly rowsAbandoned: number;
  readonly endedAtMs: number;
}

export interface SimulationResult {
  readonly seed: number;
  readonly violations: string[];
  readonly summary: SimulationSummary;
}

const clientAttemptsMax = 6;

class Simulation {
  private readonly prng: Prng;
  private readonly params: Params;
  private readonly queue = new EventQueue();
  private nowMs = 0;
  private seq = 0;
  private events = 0;
  private readonly eventsMax: number;
  private readonly brokenJournal: BrokenJournal;

  // The database: survives crashes.
  private readonly store = new MemoryVoteStore();
  /**
   * Lease epochs over database time, per shard key: the checker's own record, not the store's.
   * Database time is a counter of database writes, so "the lease when this row was written" is
   * exact even for writes in the same millisecond.
   */
  private readonly leaseHistory = new Map<string, { dbSeq: number; epoch: number }[]>();
  private dbSeq = 0;
  private readonly rowCommittedAtDbSeq: number[] = [];
  private readonly storedPerCandidate = new Map<string, number[]>();
  private readonly storedPerShard = new Map<string, number[]>();

  private node: SimNode | null = null;
  private incarnations = 0;
  private crashCount = 0;
  private takeoverCount = 0;
  private castsSent = 0;
  private commitsFailed = 0;
  private batchesInDoubt = 0;
  private rowsAbandoned = 0;

  readonly replies: ReplyRecord[] = [];
  readonly violations: string[] = [];

  constructor(options: SimulationOptions) {
    this.prng = new Prng(options.seed);
    this.params = drawParams(this.prng);
    this.eventsMax = options.eventsMax ?? 400_000;
    this.brokenJournal = options.brokenJournal ?? 'none';
  }

  run(): SimulationSummary {
    for (const election of this.params.elections) {
      this.storedPerCandidate.set(election.electionId, new Array<number>(election.candidateCount).fill(0));
      for (let shard = 0; shard < election.shardCount; shard++) {
        this.storedPerShard.set(shardKeyString({ electionId: election.electionId, shard }), new Array<number>(election.candidateCount).fill(0));
      }
    }
    this.startNode();
    this.planClients();
    this.planFaults();
    this.scheduleSnapshots();

    while (this.queue.size > 0) {
      if (++this.events > this.eventsMax) {
        this.violate(`no quiescence after ${this.eventsMax} events (t=${this.nowMs}ms)`);
        break;
      }
      const event = this.queue.pop()!;
      this.nowMs = event.atMs;
      event.run();
      this.checkCountedIsStored();
      if (this.violations.length > 20) break;
    }

    this.checkQuiescent();
    this.checkHistory();
    this.crashAndRecoverForCheck();
    return {
      events: this.events,
      castsSent: this.castsSent,
      replies: this.replyCounts(),
      rowsStored: this.store.rowsLog.length,
      crashes: this.crashCount,
      leaseTakeovers: this.takeoverCount,
      commitsFailed: this.commitsFailed,
      batchesInDoubt: this.batchesInDoubt,
      rowsAbandoned: this.rowsAbandoned,
      endedAtMs: this.nowMs,
    };
  }

  // -------------------------------------------------------------------------------------------
  // Scheduling

  private at(delayMs: number, run: () => void): void {
    this.queue.push({ atMs: this.nowMs + delayMs, seq: this.seq++, run });
  }

  /** An event of the node's memory: dropped if the node crashed meanwhile. */
  private onNode(node: SimNode, delayMs: number, run: () => void): void {
    this.at(delayMs, () => {
      if (this.node === node) run();
    });
  }

  private get active(): boolean {
    return this.nowMs < this.params.activeMs;
  }

  private violate(message: string): void {
    this.violations.push(`t=${this.nowMs}ms: ${message}`);
  }

  // -------------------------------------------------------------------------------------------
  // Leases (the database's lease table, and the checker's record of it)

  private setLease(key: ShardKey, epoch: number): void {
    const keyString = shardKeyString(key);
    this.store.setLeaseEpoch(key, epoch);
    let history = this.leaseHistory.get(keyString);
    if (history === undefined) this.leaseHistory.set(keyString, (history = []));
    history.push({ dbSeq: ++this.dbSeq, epoch });
  }

  private leaseEpochAt(keyString: string, dbSeq: number): number | undefined {
    let epoch: number | undefined;
    for (const entry of this.leaseHistory.get(keyString) ?? []) if (entry.dbSeq < dbSeq) epoch = entry.epoch;
    return epoch;
  }

  private bumpLease(key: ShardKey): number {
    const epoch = (this.store.leaseEpoch(key) ?? 0) + 1;
    this.setLease(key, epoch);
    return epoch;
  }

  // -------------------------------------------------------------------------------------------
  // Node lifecycle

  private startNode(): void {
    const node: SimNode = {
      incarnation: ++this.incarnations,
      shards: new Map(),
      mailboxTailAtMs: new Map(),
      aggregates: new Map(),
      committer: createCommitterState(this.params.committer),
      batchIds: { next: 0, end: 0, last: 0 },
      requests: new Map(),
      timerToken: 0,
      castsInTransit: 0,
      nextRequestId: 1,
      nextVoteId: 1,
    };
    for (const election of this.params.elections) {
      for (let shard = 0; shard < election.shardCount; shard++) {
        const key = { electionId: election.electionId, shard };
        // Taking the lease first fences every write still in flight from a previous life.
        const epoch = this.bumpLease(key);
        node.shards.set(shardKeyString(key), { state: this.recoverShard(election, key, epoch), snapshotInProgress: false, reacquiring: false });
      }
      this.rebuildAggregate(node, election);
    }
    this.node = node;
  }

  /** Snapshot + replay of stored votes after its watermark, read from the database now. */
  private recoverShard(election: ElectionSpec, key: ShardKey, epoch: number): ShardState {
    const state = createShardState({
      key,
      shardCount: election.shardCount,
      candidateCount: election.candidateCount,
      epoch,
      config: { pendingVotesMax: this.params.pendingVotesMax, retryAfterMs: this.params.retryAfterMs, bitmapPageBytes: 8 },
    });
    const snapshot = this.store.readLatestSnapshot(key);
    let watermark = 0;
    if (snapshot !== null) {
      stepShard(state, { kind: 'RestoreFromSnapshot', snapshot });
      watermark = snapshot.watermarkBatchId;
    }
    const rows = this.store.votesAfter(key, watermark);
    stepShard(state, { kind: 'ReplayStoredVotes', rows });
    // Redelivery: replaying again must change nothing.
    if (this.prng.chance(this.params.duplicateDeliveryChance * 3)) stepShard(state, { kind: 'ReplayStoredVotes', rows });
    if (election.closed) stepShard(state, { kind: 'CloseElection' });
    return state;
  }

  /** Results = sum of the shards' committed tallies (recovery, so not counted as votes/s). */
  private rebuildAggregate(node: SimNode, election: ElectionSpec): void {
    const aggregate = new ElectionAggregate({ electionId: election.electionId, candidateCount: election.candidateCount, shardCount: election.shardCount });
    for (let shard = 0; shard < election.shardCount; shard++) {
      const simShard = node.shards.get(shardKeyString({ electionId: election.electionId, shard }))!;
      aggregate.applyTallies(shard, simShard.state.committedTallies, 'recovery', this.nowMs);
    }
    node.aggregates.set(election.electionId, aggregate);
  }

  private crash(): void {
    if (this.node === null) return;
    this.crashCount++;
    // Every reply still owed is lost with the process; clients time out.
    this.node = null;
    this.at(this.prng.int(20, 400), () => this.startNode());
  }

  // -------------------------------------------------------------------------------------------
  // Clients

  private planClients(): void {
    for (let i = 0; i < this.params.castsPlanned; i++) {
      const election = this.params.elections[this.prng.int(0, this.params.elections.length - 1)]!;
      // A few voters get most of the traffic, so retries and duplicates are common.
      const voterNumber = this.prng.chance(0.4) ? this.prng.int(0, 4) : this.prng.int(0, election.voterCount - 1);
      const candidateIndex = this.favouriteCandidate(election, voterNumber);
      this.at(this.prng.int(0, this.params.activeMs), () => this.send({ electionId: election.electionId, voterNumber, candidateIndex, attempt: 1, answered: false }));
    }
  }

  private favouriteCandidate(election: ElectionSpec, voterNumber: number): number {
    // Mostly the voter's own favourite (retries look identical), sometimes another one.
    return this.prng.chance(0.8) ? voterNumber % election.candidateCount : this.prng.int(0, election.candidateCount - 1);
  }

  private send(client: ClientRequest): void {
    if (!this.active) return;
    this.castsSent++;
    const node = this.node;
    this.at(this.params.clientTimeoutMs, () => {
      if (!client.answered) this.retry(client, client.candidateIndex);
    });
    if (node === null) return; // connection refused: the timeout retries
    this.cast(node, client);
  }

  private retry(client: ClientRequest, candidateIndex: number): void {
    if (!this.active || client.attempt >= clientAttemptsMax) return;
    this.send({ electionId: client.electionId, voterNumber: client.voterNumber, candidateIndex, attempt: client.attempt + 1, answered: false });
  }

  private answer(client: ClientRequest, outcome: VoteOutcome): void {
    if (client.answered) {
      this.violate(`request of voter ${client.voterNumber} answered twice`);
      return;
    }
    client.answered = true;
    this.checkReply(client, outcome);
    const election = this.params.elections.find((e) => e.electionId === client.electionId)!;
    switch (outcome.kind) {
      case 'accepted':
        // Clients that did not see the answer in time retry an accepted vote too.
        if (this.prng.chance(0.15)) this.at(this.prng.int(1, 300), () => this.retry(client, client.candidateIndex));
        else if (this.prng.chance(0.05)) this.at(this.prng.int(1, 300), () => this.retry(client, this.favouriteCandidate(election, client.voterNumber)));
        break;
      case 'overloaded':
      case 'unavailable':
        if (this.prng.chance(0.85)) this.at(outcome.retryAfterMs + this.prng.int(0, 100), () => this.retry(client, client.candidateIndex));
        break;
      default:
        break;
    }
  }

  // -------------------------------------------------------------------------------------------
  // The node's shell: the same interpretation of effects as voteNode.ts, on the fake clock

  private cast(node: SimNode, client: ClientRequest): void {
    const election = this.params.elections.find((e) => e.electionId === client.electionId)!;
    const key = { electionId: election.electionId, shard: client.voterNumber % election.shardCount };
    if (!canAdmit(node.committer, node.castsInTransit)) {
      this.answer(client, { kind: 'overloaded', retryAfterMs: this.params.retryAfterMs });
      return;
    }
    const requestId = node.nextRequestId++;
    node.requests.set(requestId, { client, key: shardKeyString(key), delivered: false });
    node.castsInTransit++;
    this.toShard(node, key, {
      kind: 'CastVote',
      requestId,
      voterNumber: client.voterNumber,
      candidateIndex: client.candidateIndex,
      voteId: `vote-${node.incarnation}-${node.nextVoteId++}`,
      receivedAtMs: this.nowMs,
      batchIdFloor: node.batchIds.last,
    });
  }

  /** FIFO per shard mailbox, random delays otherwise: shards interleave in a seeded order. */
  private toShard(node: SimNode, key: ShardKey, msg: ShardMsg): void {
    const keyString = shardKeyString(key);
    const atMs = Math.max(this.nowMs + this.prng.int(0, 3), node.mailboxTailAtMs.get(keyString) ?? 0);
    node.mailboxTailAtMs.set(keyString, atMs);
    this.onNode(node, atMs - this.nowMs, () => this.handleShardMsg(node, keyString, msg));
  }

  private handleShardMsg(node: SimNode, keyString: string, msg: ShardMsg): void {
    const shard = node.shards.get(keyString)!;
    if (msg.kind === 'CastVote') {
      node.castsInTransit--;
      node.requests.get(msg.requestId)!.delivered = true;
    }
    const effects = stepShard(shard.state, msg);
    let appended: AppendedRow[] | null = null;
    for (const effect of effects) {
      switch (effect.kind) {
        case 'Reply': {
          const request = node.requests.get(effect.requestId);
          if (request === undefined) {
            this.violate(`reply to unknown request ${effect.requestId}`);
            break;
          }
          node.requests.delete(effect.requestId);
          node.aggregates.get(shard.state.key.electionId)!.recordOutcome(effect.outcome);
          this.answer(request.client, effect.outcome);
          break;
        }
        case 'AppendToJournal':
          (appended ??= []).push(effect);
          break;
        case 'LookupStoredVote': {
          const { electionId } = effect.key;
          const voterNumber = effect.voterNumber;
          this.at(this.prng.int(1, 20), () => {
            const failed = this.prng.chance(this.params.lookupFailChance);
            const stored = failed ? null : this.store.readStoredVote(electionId, voterNumber);
            this.onNode(node, this.prng.int(0, 5), () =>
              this.toShard(node, effect.key, failed ? { kind: 'StoredVoteLookupFailed', voterNumber } : { kind: 'StoredVoteFound', voterNumber, stored }),
            );
          });
          break;
        }
        case 'TalliesCommitted':
          node.aggregates.get(effect.key.electionId)!.applyTallies(effect.key.shard, effect.deltas, effect.source, this.nowMs);
          break;
        case 'WriteSnapshot': {
          const snapshot = effect.snapshot;
          // The write is the database's: it lands even if the node dies meanwhile.
          this.at(this.prng.int(1, 40), () => {
            this.store.writeSnapshot(snapshot);
            this.onNode(node, 1, () => (shard.snapshotInProgress = false));
          });
          break;
        }
        case 'LeaseLost':
          this.reacquireLater(node, effect.key);
          break;
      }
    }
    if (appended !== null) this.runCommitter(node, { kind: 'RowsAppended', rows: appended, nowMs: this.nowMs });
  }

  /**
   * After a takeover, this node gets the shard back (the other owner let go): a new lease with
   * a higher epoch, and the shard rebuilt from the database, since the other owner may have
   * written votes this node never saw. Outcomes still in flight for the old shard reach the
   * new one and must not touch its votes (they are matched by voteId).
   */
  private reacquireLater(node: SimNode, key: ShardKey): void {
    const keyString = shardKeyString(key);
    const shard = node.shards.get(keyString)!;
    if (shard.reacquiring) return;
    shard.reacquiring = true;
    this.onNode(node, this.prng.int(10, 200), () => {
      const election = this.params.elections.find((e) => e.electionId === key.electionId)!;
      const epoch = this.bumpLease(key);
      // Requests waiting in the old shard die with it, as on a handoff; clients time out.
      // Casts still in its mailbox reach the new shard.
      for (const [requestId, request] of node.requests) {
        if (request.key === keyString && request.delivered) node.requests.delete(requestId);
      }
      node.shards.set(keyString, { state: this.recoverShard(election, key, epoch), snapshotInProgress: false, reacquiring: false });
      this.rebuildAggregate(node, election);
    });
  }

  private runCommitter(node: SimNode, msg: CommitterMsg): void {
    for (const effect of stepCommitter(node.committer, msg)) {
      switch (effect.kind) {
        case 'RequestBatchId':
          this.requestBatchId(node);
          break;
        case 'StartCommit':
          this.startCommit(node, effect.batch);
          break;
        case 'CheckCommit': {
          const batchId = effect.batchId;
          this.at(this.prng.int(1, 30), () => {
            const outcome = this.prng.chance(this.params.checkFailChance)
              ? 'error'
              : this.store.wasCommitted(batchId)
                ? 'committed'
                : 'not_committed';
            if (outcome === 'error') this.batchesInDoubt++;
            this.onNode(node, this.prng.int(0, 5), () => this.runCommitter(node, { kind: 'CommitCheckFinished', batchId, outcome, nowMs: this.nowMs }));
          });
          break;
        }
        case 'DeliverToShard':
          if (effect.msg.kind === 'BatchAbandoned') this.rowsAbandoned += effect.msg.rows.length;
          this.toShard(node, effect.key, effect.msg);
          if (this.prng.chance(this.params.duplicateDeliveryChance)) {
            const duplicate = effect.msg;
            this.onNode(node, this.prng.int(1, 500), () => this.toShard(node, effect.key, duplicate));
          }
          break;
        case 'ArmTimer': {
          const token = ++node.timerToken;
          this.onNode(node, Math.max(0, effect.atMs - this.nowMs), () => {
            if (token === node.timerToken) this.runCommitter(node, { kind: 'TimerFired', nowMs: this.nowMs });
          });
          break;
        }
      }
    }
  }

  /** Block reservation, as MemoryBatchIdSource, but with the reservation as a database event. */
  private requestBatchId(node: SimNode): void {
    const ids = node.batchIds;
    const handOut = (): void => {
      const batchId = ids.next++;
      ids.last = batchId;
      // The id reaches the committer a little later, while more rows are admitted: those rows
      // have floors >= this id and must wait for the next batch (groupCommit.ts).
      this.onNode(node, this.prng.int(0, 20), () => this.runCommitter(node, { kind: 'BatchIdAssigned', batchId, nowMs: this.nowMs }));
    };
    if (ids.next < ids.end) {
      handOut();
      return;
    }
    this.at(this.prng.int(1, 20), () => {
      if (this.prng.chance(this.params.batchIdFailChance)) {
        this.onNode(node, 1, () => this.runCommitter(node, { kind: 'BatchIdFailed', message: 'sequence unavailable', nowMs: this.nowMs }));
        return;
      }
      const first = this.store.reserveBatchIds(this.params.batchIdBlockSize);
      this.onNode(node, this.prng.int(0, 3), () => {
        ids.next = first;
        ids.end = first + this.params.batchIdBlockSize;
        handOut();
      });
    });
  }

  private startCommit(node: SimNode, batch: JournalBatch): void {
    const slow = this.prng.chance(this.params.slowCommitChance);
    this.at(slow ? this.prng.int(100, 800) : this.prng.int(1, 25), () => {
      let result: JournalCommitResult;
      if (this.prng.chance(this.params.commitRejectChance)) {
        result = { kind: 'failed', message: 'rejected: nothing stored' };
      } else {
        result = this.applyCommit(batch);
        if (result.kind === 'committed' && this.prng.chance(this.params.commitAckLostChance)) {
          result = { kind: 'failed', message: 'connection lost after COMMIT' };
        }
      }
      if (result.kind === 'failed') this.commitsFailed++;
      const reported = result;
      this.onNode(node, this.prng.int(0, 10), () => this.runCommitter(node, { kind: 'CommitFinished', batchId: batch.batchId, result: reported, nowMs: this.nowMs }));
    });
  }

  /** The database transaction, or one of the deliberately broken ones. */
  private applyCommit(batch: JournalBatch): JournalCommitResult {
    if (this.brokenJournal === 'commit_without_store') return { kind: 'committed', conflicts: [] };
    const restore: [ShardKey, number | undefined][] = [];
    if (this.brokenJournal === 'ignore_fencing') {
      for (const row of batch.rows) {
        const current = this.store.leaseEpoch(row);
        if (current !== row.epoch) {
          restore.push([row, current]);
          this.store.setLeaseEpoch(row, row.epoch);
        }
      }
    }
    const rowsBefore = this.store.rowsLog.length;
    const commitDbSeq = ++this.dbSeq;
    const result = this.store.commitBatch(batch);
    for (const [key, epoch] of restore.reverse()) if (epoch !== undefined) this.store.setLeaseEpoch(key, epoch);
    for (let i = rowsBefore; i < this.store.rowsLog.length; i++) {
      const row = this.store.rowsLog[i]!;
      this.rowCommittedAtDbSeq[i] = commitDbSeq;
      this.storedPerCandidate.get(row.electionId)![row.candidateIndex]!++;
      this.storedPerShard.get(shardKeyString(row))![row.candidateIndex]!++;
    }
    return result;
  }

  // -------------------------------------------------------------------------------------------
  // Faults and periodic work

  private planFaults(): void {
    for (let i = 0; i < this.params.leaseTakeovers; i++) {
      this.at(this.prng.int(100, this.params.activeMs), () => {
        const election = this.params.elections[this.prng.int(0, this.params.elections.length - 1)]!;
        this.takeoverCount++;
        // Another node takes the shard over: the epoch moves on without us.
        this.bumpLease({ electionId: election.electionId, shard: this.prng.int(0, election.shardCount - 1) });
      });
    }
    for (let i = 0; i < this.params.crashes; i++) this.at(this.prng.int(100, this.params.activeMs), () => this.crash());
    if (this.prng.chance(0.2)) {
      this.at(this.prng.int(this.params.activeMs / 2, this.params.activeMs), () => {
        const election = this.params.elections[0]!;
        election.closed = true;
        const node = this.node;
        if (node === null) return;
        for (let shard = 0; shard < election.shardCount; shard++) this.toShard(node, { electionId: election.electionId, shard }, { kind: 'CloseElection' });
      });
    }
  }

  private scheduleSnapshots(): void {
    this.at(this.params.snapshotIntervalMs, () => {
      if (!this.active) return; // stop, so the run can reach quiescence
      const node = this.node;
      if (node !== null) {
        for (const shard of node.shards.values()) {
          if (shard.snapshotInProgress || !this.prng.chance(0.7)) continue;
          shard.snapshotInProgress = true;
          this.toShard(node, shard.state.key, { kind: 'TakeSnapshot', nowMs: this.nowMs, lastAssignedBatchId: node.batchIds.last });
        }
      }
      this.scheduleSnapshots();
    });
  }

  // -------------------------------------------------------------------------------------------
  // The checker: replies, the database's rows, the lease history, the live tallies

  /** Invariant 2 (and 5): `accepted` leaves only with its row stored under that voteId. */
  private checkReply(client: ClientRequest, outcome: VoteOutcome): void {
    this.replies.push({ electionId: client.electionId, voterNumber: client.voterNumber, candidateIndex: client.candidateIndex, outcome, atMs: this.nowMs });
    if (outcome.kind !== 'accepted' && outcome.kind !== 'already_voted') return;
    const stored = this.store.readStoredVote(client.electionId, client.voterNumber);
    const who = `${client.electionId}/voter ${client.voterNumber}`;
    if (stored === null) {
      this.violate(`${outcome.kind} for ${who} with voteId ${outcome.voteId}, but no vote is stored`);
      return;
    }
    if (stored.voteId !== outcome.voteId) this.violate(`${outcome.kind} for ${who} says voteId ${outcome.voteId}, stored is ${stored.voteId}`);
    if (outcome.kind === 'accepted' && stored.candidateIndex !== client.candidateIndex) {
      this.violate(`accepted for ${who} candidate ${client.candidateIndex}, stored candidate is ${stored.candidateIndex}`);
    }
    if (outcome.kind === 'already_voted' && stored.candidateIndex === client.candidateIndex) {
      this.violate(`already_voted for ${who} although the stored vote is for the same candidate`);
    }
  }

  /** Invariant 3, the safe half, after every event: nothing is counted that is not stored. */
  private checkCountedIsStored(): void {
    const node = this.node;
    if (node === null) return;
    for (const [electionId, aggregate] of node.aggregates) {
      const stored = this.storedPerCandidate.get(electionId)!;
      const counted = aggregate.results().tallies;
      for (let c = 0; c < stored.length; c++) {
        if (counted[c]! > stored[c]!) {
          this.violate(`${electionId} candidate ${c}: results show ${counted[c]} votes, only ${stored[c]} stored`);
          return;
        }
      }
    }
    for (const [keyString, shard] of node.shards) {
      const stored = this.storedPerShard.get(keyString)!;
      for (let c = 0; c < stored.length; c++) {
        if (shard.state.committedTallies[c]! > stored[c]!) {
          this.violate(`shard ${keyString} candidate ${c}: counts ${shard.state.committedTallies[c]}, only ${stored[c]} stored`);
          return;
        }
      }
    }
  }

  /** Invariant 3, the live half: once nothing moves, live tallies equal the stored rows. */
  private checkQuiescent(): void {
    const node = this.node;
    if (node === null) {
      this.violate('node down at the end of the run');
      return;
    }
    if (!isCommitterIdle(node.committer)) this.violate('committer not idle at quiescence');
    for (const [keyString, shard] of node.shards) {
      if (shard.state.pending.size > 0) this.violate(`shard ${keyString} still has ${shard.state.pending.size} pending votes at quiescence`);
      if (shard.state.counters.conflicts > 0) this.violate(`shard ${keyString} saw ${shard.state.counters.conflicts} conflicts (it missed stored rows)`);
      const stored = this.storedPerShard.get(keyString)!;
      if (shard.state.committedTallies.join() !== stored.join()) {
        this.violate(`shard ${keyString} live tallies [${shard.state.committedTallies}] != stored [${stored}]`);
      }
    }
    for (const [electionId, aggregate] of node.aggregates) {
      const stored = this.storedPerCandidate.get(electionId)!;
      if (aggregate.results().tallies.join() !== stored.join()) {
        this.violate(`${electionId} results [${aggregate.results().tallies}] != stored [${stored}]`);
      }
    }
    if (node.requests.size > 0) this.violate(`${node.requests.size} requests never answered by a live node`);
  }

  /** Invariants 1, 4 and 5 over the whole history. */
  private checkHistory(): void {
    const seen = new Set<string>();
    const rows = this.store.rowsLog;
    for (let i = 0; i < rows.length; i++) {
      const row = rows[i]!;
      const voterKey = `${row.electionId}/${row.voterNumber}`;
      if (seen.has(voterKey)) this.violate(`two stored votes for ${voterKey}`);
      seen.add(voterKey);
      const epochThen = this.leaseEpochAt(shardKeyString(row), this.rowCommittedAtDbSeq[i]!);
      if (row.epoch !== epochThen) this.violate(`${voterKey} stored with epoch ${row.epoch}, the lease's epoch was ${epochThen}`);
    }
    const acceptedVoteIds = new Map<string, Set<string>>();
    const originals = new Map<string, number>();
    for (const reply of this.replies) {
      if (reply.outcome.kind !== 'accepted') continue;
      const voterKey = `${reply.electionId}/${reply.voterNumber}`;
      let ids = acceptedVoteIds.get(voterKey);
      if (ids === undefined) acceptedVoteIds.set(voterKey, (ids = new Set()));
      ids.add(reply.outcome.voteId);
      if (!reply.outcome.replayed) originals.set(voterKey, (originals.get(voterKey) ?? 0) + 1);
    }
    for (const [voterKey, ids] of acceptedVoteIds) {
      if (ids.size > 1) this.violate(`${voterKey} accepted with ${ids.size} different voteIds: ${[...ids].join(', ')}`);
    }
    for (const [voterKey, count] of originals) if (count > 1) this.violate(`${voterKey} accepted as new ${count} times`);
  }

  /** Invariant 2 after a crash: recovery from snapshots + journal gives exactly the stored votes. */
  private crashAndRecoverForCheck(): void {
    this.node = null;
    this.startNode();
    const node = this.node as SimNode | null;
    if (node === null) return;
    for (const [keyString, shard] of node.shards) {
      const stored = this.storedPerShard.get(keyString)!;
      if (shard.state.committedTallies.join() !== stored.join()) {
        this.violate(`after recovery, shard ${keyString} tallies [${shard.state.committedTallies}] != stored [${stored}]`);
      }
      const storedVoters = stored.reduce((a, b) => a + b, 0);
      if (shard.state.bitmap.count() !== storedVoters) {
        this.violate(`after recovery, shard ${keyString} has ${shard.state.bitmap.count()} voters marked, ${storedVoters} stored`);
      }
    }
  }

  private replyCounts(): Record<string, number> {
    const counts: Record<string, number> = {};
    for (const reply of this.replies) {
      const key = reply.outcome.kind === 'unavailable' ? `unavailable:${reply.outcome.reason}` : reply.outcome.kind;
      counts[key] = (counts[key] ?? 0) + 1;
    }
    return counts;
  }
}

export function runSimulation(options: SimulationOptions): SimulationResult {
  const simulation = new Simulation(options);
  let summary: SimulationSummary;
  try {
    summary = simulation.run();
  } catch (error) {
    // An assertion inside the domain is a failure of the run, reported with its seed.
    simulation.violations.push(`threw: ${error instanceof Error ? (error.stack ?? error.message) : String(error)}`);
    summary = { events: 0, castsSent: 0, replies: {}, rowsStored: 0, crashes: 0, leaseTakeovers: 0, commitsFailed: 0, batchesInDoubt: 0, rowsAbandoned: 0, endedAtMs: 0 };
  }
  return { seed: options.seed, violations: simulation.violations, summary };
}
