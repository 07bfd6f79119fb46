// The vote node: the thin shell that runs the pure shard and committer step functions with
// real timers, nact actors and the persistence ports.
//
// - One nact actor per (election, shard). Its only job is to run `stepShard` and interpret the
//   effects; the actor serialises each shard's messages, nothing else.
// - The group committer is not an actor: `stepCommitter` is called synchronously from actor
//   handlers, promise callbacks and its timer. Node runs one callback at a time, so it needs
//   no mailbox, and every rows-appended goes straight into the current buffer.
// - nact mailboxes are unbounded, so admission is decided here, synchronously, before a vote is
//   dispatched: per-shard queued casts, and the committer's buffer bound (`canAdmit`).
// - Replies are callbacks held by request id (ReplyCallbacks): no promise per vote, and the
//   only allocations on the hot path are the message, the row and the pending entry.
// - Messages to one shard go to its actor in runs: ONE nact message (ShardRun) holds every message
//   sent to that shard until the actor starts on it, casts and batch outcomes alike. nact runs
//   each message in a setImmediate of its own with a fresh context, and an actor that finishes
//   one starts the next only in the next turn of the event loop; so the actor's cost is paid once
//   per run, not once per message, and a batch's outcome sent while casts wait for the actor is
//   handled in the same turn as they are, not a turn later. A run is in the order of sending, and
//   a message joins only the run dispatched last: the shard sees every message in the order it
//   was sent.

import { randomFillSync } from 'node:crypto';
import { dispatch, spawn, start, stop, type Ref } from 'nact';
import { ElectionAggregate, type ElectionResults } from './election.ts';
import {
  canAdmit,
  createCommitterState,
  isCommitterIdle,
  journalCallsInFlight,
  stepCommitter,
  type AppendedRow,
  type CommitterConfig,
  type CommitterCounters,
  type CommitterMsg,
  type CommitterState,
} from './groupCommit.ts';
import {
  isQueuedBatch,
  shardKeyString,
  type BatchIdSource,
  type HeldShard,
  type Journal,
  type JournalRow,
  type QueuedBatch,
  type ShardKey,
  type ShardSnapshot,
  type SnapshotStore,
  type SpilledBatchStore,
  type SpillQueue,
  type StoredVoteReader,
} from './ports.ts';
import {
  assert,
  createShardState,
  safeWatermarkBatchId,
  shardBacklog,
  stepShard,
  type CastVote,
  type ShardCounters,
  type ShardEffect,
  type ShardMsg,
  type ShardState,
  type VoteOutcome,
} from './shard.ts';

export interface VoteNodeConfig extends CommitterConfig {
  /** Per-shard admission bound inside the shard: pending votes + waiting retries + lookups. */
  readonly shardPendingVotesMax: number;
  /** Casts dispatched to one shard's mailbox and not yet processed. */
  readonly shardMailboxCastsMax: number;
  /** Told to clients with overloaded / unavailable. */
  readonly retryAfterMs: number;
  /** How often each changed shard writes a snapshot. */
  readonly snapshotIntervalMs: number;
  /**
   * A released shard (hand-off) writes a final snapshot only when more rows than this changed it
   * since its last one: a shorter tail the next owner reads from the journal faster than this
   * node would write the snapshot, and the snapshot's transaction would sit in the shard's pause.
   * The next owner writes one as soon as it serves (a recovery that replayed rows snapshots).
   */
  readonly releaseSnapshotTailRowsMin: number;
  /** How often changed results are handed to onResultsChanged listeners. */
  readonly resultsPublishIntervalMs: number;
  /** close() waits this long for pending votes to resolve before giving up on them. */
  readonly closeTimeoutMs: number;
  /** A batch id reservation not answered in this long counts as failed (a frozen store never answers). */
  readonly batchIdTimeoutMs: number;
  /** How often the drainer looks for spilled batches (when a spill queue is configured). */
  readonly drainIntervalMs: number;
  /** How long a received batch stays hidden from other drainers while this one stores it. */
  readonly drainLeaseMs: number;
}

export const voteNodeConfigDefault: VoteNodeConfig = {
  batchRowsMax: 2_000,
  flushIntervalMs: 5,
  commitsInFlightMax: 4,
  bufferRowsMax: 50_000,
  commitDeadlineMs: 10_000,
  checkRetryIntervalMs: 500,
  inDoubtBatchesMax: 64,
  shardPendingVotesMax: 20_000,
  shardMailboxCastsMax: 20_000,
  retryAfterMs: 1_000,
  snapshotIntervalMs: 30_000,
  releaseSnapshotTailRowsMin: 20_000,
  resultsPublishIntervalMs: 100,
  closeTimeoutMs: 10_000,
  batchIdTimeoutMs: 2_000,
  drainIntervalMs: 250,
  drainLeaseMs: 60_000,
  spillAfterMs: null,
};

/** pino-compatible subset. */
export interface VoteNodeLogger {
  info(obj: object, msg: string): void;
  warn(obj: object, msg: string): void;
  error(obj: object, msg: string): void;
}

export interface VoteNodeDeps {
  readonly journal: Journal;
  readonly snapshots: SnapshotStore;
  readonly storedVotes: StoredVoteReader;
  readonly batchIds: BatchIdSource;
  /**
   * The spill queue and the store the drainer writes its batches into. With it, a batch not
   * stored within `spillAfterMs` (required then) is sent to the queue and answered from there.
   */
  readonly spill?: { readonly queue: SpillQueue; readonly store: SpilledBatchStore };
  readonly config?: Partial<VoteNodeConfig>;
  readonly logger?: VoteNodeLogger;
  /**
   * Called after a shard counted a committed batch (live or drained), in the shard's order: the
   * stored rows (conflicts left out) and the shard's safe watermark. The cluster streams it to the
   * shard's replicas (cluster/replication.ts). Must not throw or block.
   */
  readonly onBatchCommitted?: (batch: CommittedShardBatch) => void;
  /** Wall clock in ms; injectable for tests. */
  readonly now?: () => number;
  readonly newVoteId?: () => string;
}

export interface OpenElectionRequest {
  readonly electionId: string;
  readonly shardCount: number;
  readonly candidateCount: number;
  /** The lease epoch this node holds for each shard, index = shard. */
  readonly epochs: readonly number[];
}

/** One shard's committed batch as its replicas receive it (VoteNodeDeps.onBatchCommitted). */
export interface CommittedShardBatch {
  readonly key: ShardKey;
  readonly epoch: number;
  readonly batchId: number;
  /** Stored rows of this shard, as parallel arrays. */
  readonly voterNumbers: readonly number[];
  readonly candidateIndexes: readonly number[];
  /** safeWatermarkBatchId after this batch (actors/shard.ts). */
  readonly watermarkBatchId: number;
}

/** How one shard was recovered (hostShards' answer): from where, and how much Postgres tail it read. */
export interface ShardRecovery {
  readonly shard: number;
  /** `replica`: this node's warm replica state; `snapshot`: the latest stored snapshot; `empty`: none. */
  readonly source: 'replica' | 'snapshot' | 'empty';
  readonly watermarkBatchId: number;
  /** Stored votes read after the watermark. */
  readonly tailRows: number;
}

/** Some shards of an election, for a node that owns only those (the cluster's shard host). */
export interface HostShardsRequest {
  readonly electionId: string;
  readonly shardCount: number;
  readonly candidateCount: number;
  /**
   * The shards to recover and serve, each with the lease epoch this node holds, and optionally a
   * base to recover from instead of the latest stored snapshot (a warm replica's state, valid as
   * a snapshot: committed votes only, with a safe watermark).
   */
  readonly shards: readonly { readonly shard: number; readonly epoch: number; readonly base?: ShardSnapshot }[];
  /** The election is closed: the shards answer retries only. */
  readonly closed?: boolean;
}

/** How a shard's release went: where a hand-off's time goes (cluster/shardHost.ts logs it). */
export interface ShardRelease {
  /** Refusing new votes → every admitted vote resolved (committed, refused or given up). */
  readonly backlogMs: number;
  /** False: closeTimeoutMs passed first; late outcomes are ignored. */
  readonly backlogResolved: boolean;
  /** The final snapshot's write (0 when none was written). */
  readonly snapshotMs: number;
  readonly snapshotWritten: boolean;
}

/** Committed counts of one hosted shard, what its owner publishes to the other nodes. */
export interface ShardTallies {
  readonly shard: number;
  readonly epoch: number;
  readonly counts: readonly number[];
  /** Votes of the shard answered `accepted` and waiting in the spill queue: not in `counts` yet. */
  readonly queuedVotes: number;
  /** Changes whenever the counts or queuedVotes may have changed. */
  readonly changeMark: number;
}

export interface CastRequest {
  readonly electionId: string;
  readonly voterNumber: number;
  readonly candidateIndex: number;
}

export interface ShardStats {
  readonly shard: number;
  readonly epoch: number;
  readonly leaseLost: boolean;
  readonly accepting: boolean;
  readonly bitmapBytes: number;
  readonly votersWithBit: number;
  readonly backlog: number;
  readonly queuedCasts: number;
  /** Votes answered from the spill queue and not yet drained: accepted, not yet in the results. */
  readonly votesInSpillQueue: number;
  readonly counters: Readonly<ShardCounters>;
}

export interface SpillStats {
  readonly batchesDrained: number;
  readonly rowsDrained: number;
  /** Batches found already stored (committed after all, or drained before). */
  readonly batchesAlreadyStored: number;
  /** Batches skipped because wasCommitted had marked their id abandoned. */
  readonly batchesSkippedAbandoned: number;
  readonly deadLetters: number;
  readonly drainFailures: number;
  /** Drained voters found stored with another vote (never expected). */
  readonly drainConflicts: number;
  /** Batches handed back to the queue with parts left for other owners (shards not held here). */
  readonly batchesLeftForOwners: number;
  /** Parts this node's view held but the lease refused (the shard was taken over meanwhile). */
  readonly partsFenced: number;
}

export interface DrainReport {
  /** Batches finished (acked): every part stored, or skipped. */
  readonly batches: number;
  /** Parts (shards' rows) stored, finished batches or not. */
  readonly parts: number;
  readonly rows: number;
}

export interface CommitterStats {
  readonly bufferedRows: number;
  readonly journalCallsInFlight: number;
  readonly batchesInDoubt: number;
  readonly counters: Readonly<CommitterCounters>;
}

export interface ElectionStats {
  readonly electionId: string;
  readonly results: ElectionResults;
  readonly votesPerSecond: number;
  /** Replies by outcome kind (`unavailable:<reason>` split by reason). */
  readonly outcomes: Record<string, number>;
  readonly shards: readonly ShardStats[];
  readonly committer: CommitterStats;
  /** Node-wide: what the shards' actors have handled, every shard of every election. */
  readonly actors: ShardActorStats;
}

export interface ShardActorStats {
  /** Actor messages (runs: what was sent to a shard until its actor started on it). */
  readonly runs: number;
  /** Shard messages in those runs (casts, batch outcomes, snapshots, …). */
  readonly messages: number;
}

export interface VoteNode {
  /** Restores every shard (latest snapshot + stored votes after its watermark), then accepts votes. */
  openElection(request: OpenElectionRequest): Promise<void>;
  /** Restores the listed shards (as openElection does) and serves them; other shards stay away. */
  hostShards(request: HostShardsRequest): Promise<readonly ShardRecovery[]>;
  /**
   * Stops serving one shard: new votes for it get unavailable(shard_moving), its pending votes
   * resolve (up to closeTimeoutMs), a final snapshot is written if the tail since the last one is
   * long (releaseSnapshotTailRowsMin) and the lease was not lost, and the shard is dropped. Resolves undefined when it was not hosted.
   */
  releaseShard(electionId: string, shard: number): Promise<ShardRelease | undefined>;
  /** The hosted shards of an election and their committed counts. */
  shardTallies(electionId: string): ShardTallies[];
  /** Hosted and taking votes (not released, lease not lost). */
  isServing(electionId: string, shard: number): boolean;
  /** New voters get `election_closed`; retries of stored votes still get their voteId. False if unknown. */
  closeElection(electionId: string): boolean;
  /** `reply` is called exactly once, maybe synchronously (refusals), usually after the commit. */
  cast(vote: CastRequest, reply: (outcome: VoteOutcome) => void): void;
  /** Committed votes only. Undefined for an election this node does not hold. */
  results(electionId: string): ElectionResults | undefined;
  /** Called with an election's results at most every resultsPublishIntervalMs, when they changed. */
  onResultsChanged(listener: (results: ElectionResults) => void): () => void;
  stats(electionId: string): ElectionStats | undefined;
  /**
   * Stores every batch the spill queue holds into the journal, until a receive finds none
   * (resolves at once without a spill queue). Call it before serving a shard this node did not
   * serve a moment ago: queued votes are in no bitmap until they are stored (openElection does).
   * Rejects after `deadlineMs` (epoch ms) if the queue could not be emptied, e.g. the store is down.
   */
  drainSpillQueue(deadlineMs?: number): Promise<DrainReport>;
  /** Drainer counters; undefined without a spill queue. */
  spillStats(): SpillStats | undefined;
  /** Refuses new votes, flushes and resolves pending ones (up to closeTimeoutMs), writes final snapshots, stops. */
  close(): Promise<void>;
}

/** What a shard's actor receives: the messages sent to the shard since the last run started, in order. */
interface ShardRun {
  readonly msgs: ShardMsg[];
  /** How many of msgs are casts (counted out of the admission bounds when the run starts). */
  casts: number;
}

interface ShardCell {
  readonly key: ShardKey;
  readonly state: ShardState;
  readonly election: ElectionCell;
  ref: Ref<ShardRun> | null;
  /** The run dispatched last, while messages may still join it (until the actor starts on it). */
  openRun: ShardRun | null;
  /** releaseShard was called: votes are refused, the shard goes once its backlog is resolved. */
  releasing: boolean;
  queuedCasts: number;
  /** Runs dispatched to the actor and not yet handled. */
  inMailbox: number;
  snapshotInProgress: boolean;
  /** Counters at the last snapshot; equal means nothing committed since. */
  snapshotMark: number;
  /**
   * The safe watermark streamed to replicas, recomputed at most every replicaWatermarkRefreshMs:
   * it walks every pending vote, and an older value stays true (only more conservative).
   */
  replicaWatermarkBatchId: number;
  replicaWatermarkAtMs: number;
}

interface ElectionCell {
  readonly electionId: string;
  readonly shardCount: number;
  readonly candidateCount: number;
  readonly aggregate: ElectionAggregate;
  /** Indexed by shard; undefined where this node does not host the shard. */
  readonly shards: (ShardCell | undefined)[];
  closed: boolean;
}

const unknownElectionOutcome: VoteOutcome = Object.freeze({ kind: 'unknown_election' });
const invalidVoterOutcome: VoteOutcome = Object.freeze({ kind: 'invalid_vote', reason: 'voter_number_invalid' });
const invalidCandidateOutcome: VoteOutcome = Object.freeze({ kind: 'invalid_vote', reason: 'candidate_index_invalid' });

const silentLogger: VoteNodeLogger = { info() {}, warn() {}, error() {} };

/** How stale the watermark streamed to replicas may be (see ShardCell.replicaWatermarkBatchId). */
const replicaWatermarkRefreshMs = 50;

export function createVoteNode(deps: VoteNodeDeps): VoteNode {
  const config: VoteNodeConfig = { ...voteNodeConfigDefault, ...deps.config };
  const { journal, snapshots, storedVotes, batchIds, spill } = deps;
  if (spill !== undefined && config.spillAfterMs == null) throw new Error('a spill queue needs spillAfterMs');
  if (spill === undefined && config.spillAfterMs != null) throw new Error('spillAfterMs needs a spill queue');
  const logger = deps.logger ?? silentLogger;
  const now = deps.now ?? Date.now;
  const newVoteId = deps.newVoteId ?? createUuidV7Generator(now);
  const overloadedOutcome: VoteOutcome = Object.freeze({ kind: 'overloaded', retryAfterMs: config.retryAfterMs });
  const shardStoppedOutcome: VoteOutcome = Object.freeze({ kind: 'unavailable', reason: 'shard_stopped', retryAfterMs: config.retryAfterMs });
  const stoppingOutcome: VoteOutcome = Object.freeze({ kind: 'unavailable', reason: 'node_stopping', retryAfterMs: config.retryAfterMs });
  const movingOutcome: VoteOutcome = Object.freeze({ kind: 'unavailable', reason: 'shard_moving', retryAfterMs: config.retryAfterMs });
  const notOwnerOutcome: VoteOutcome = Object.freeze({ kind: 'unavailable', reason: 'not_owner', retryAfterMs: config.retryAfterMs });

  const system = start();
  const elections = new Map<string, ElectionCell>();
  const opening = new Set<string>();
  const replies = new ReplyCallbacks();
  const listeners = new Set<(results: ElectionResults) => void>();
  const committer: CommitterState = createCommitterState(config);
  let nextRequestId = 1;
  let actorCounter = 0;
  let castsInTransit = 0;
  const actorStats = { runs: 0, messages: 0 };
  let committerTimer: NodeJS.Timeout | null = null;
  /** The batch id request being waited for; a late answer to an earlier, timed-out one is dropped. */
  let batchIdRequest = 0;
  let stopping = false;
  let stopped = false;

  // -------------------------------------------------------------------------------------------
  // Shards

  function send(cell: ShardCell, msg: ShardMsg): void {
    if (cell.ref === null) return;
    const open = cell.openRun;
    if (open !== null) {
      open.msgs.push(msg);
      if (msg.kind === 'CastVote') open.casts++;
      return;
    }
    const run: ShardRun = { msgs: [msg], casts: msg.kind === 'CastVote' ? 1 : 0 };
    cell.openRun = run;
    cell.inMailbox++;
    dispatch(cell.ref, run);
  }

  function handleShardRun(cell: ShardCell, run: ShardRun): void {
    cell.inMailbox--;
    if (cell.openRun === run) cell.openRun = null;
    actorStats.runs++;
    actorStats.messages += run.msgs.length;
    cell.queuedCasts -= run.casts;
    castsInTransit -= run.casts;
    const msgs = run.msgs;
    // The rows the casts append go to the committer in one hand-over per stretch of casts; and one
    // effects array serves such a stretch (a vote's step has one effect, and an array of its own
    // was most of what the step allocated).
    let appended: AppendedRow[] | null = null;
    const effects: ShardEffect[] = [];
    try {
      for (let i = 0; i < msgs.length; i++) {
        const msg = msgs[i]!;
        if (msg.kind === 'CastVote') {
          appended = stepShardMsg(cell, msg, appended, effects);
          continue;
        }
        // Any other message finds the committer as it would have as a message of its own: the
        // rows appended before it handed over first.
        if (appended !== null) {
          runCommitter({ kind: 'RowsAppended', rows: appended, nowMs: now() });
          appended = null;
        }
        const own = stepShardMsg(cell, msg, null, []);
        if (own !== null) runCommitter({ kind: 'RowsAppended', rows: own, nowMs: now() });
      }
    } finally {
      // Also the rows of the casts before one that threw.
      if (appended !== null) runCommitter({ kind: 'RowsAppended', rows: appended, nowMs: now() });
    }
  }

  /**
   * Steps the shard and carries out the effects it appends to `effects` (those already there are
   * done); rows for the journal are added to `appended`.
   */
  function stepShardMsg(cell: ShardCell, msg: ShardMsg, appended: AppendedRow[] | null, effects: ShardEffect[]): AppendedRow[] | null {
    const from = effects.length;
    try {
      stepShard(cell.state, msg, effects);
    } catch (error) {
      // An invariant broke: the shard state can no longer be trusted. nact stops the actor;
      // its waiters get node_stopping on close, and a restart recovers it exactly from the store.
      logger.error({ err: error, shard: cell.key, msgKind: msg.kind }, 'shard invariant violated; shard stopped');
      cell.ref = null;
      cell.inMailbox = 0;
      cell.openRun = null;
      throw error;
    }
    for (let i = from; i < effects.length; i++) {
      const effect = effects[i]!;
      switch (effect.kind) {
        case 'Reply':
          cell.election.aggregate.recordOutcome(effect.outcome);
          deliverReply(effect.requestId, effect.outcome);
          break;
        case 'AppendToJournal':
          (appended ??= []).push(effect);
          break;
        case 'LookupStoredVote':
          lookupStoredVote(cell, effect.voterNumber);
          break;
        case 'TalliesCommitted':
          cell.election.aggregate.applyTallies(cell.key.shard, effect.deltas, effect.source, now());
          break;
        case 'WriteSnapshot':
          writeSnapshot(cell, effect.snapshot);
          break;
        case 'LeaseLost':
          logger.warn({ shard: cell.key, epoch: effect.epoch }, 'shard lease lost: a write was fenced; refusing new votes');
          break;
      }
    }
    // Only queue-related messages move the count; a CastVote (the hot path) never does.
    if (msg.kind !== 'CastVote') cell.election.aggregate.setQueuedVotes(cell.key.shard, cell.state.queuedCount);
    // Drained parts too: a drained batch leaves the shard's pending votes, so the next report's
    // safe watermark passes its id, and a replica that never got its rows would be promoted
    // without them (counts short of count(*) for good, voters missing from the bitmap).
    if ((msg.kind === 'BatchCommitted' || msg.kind === 'QueuedVotesStored') && deps.onBatchCommitted !== undefined) reportCommitted(cell, msg);
    return appended;
  }

  function reportCommitted(cell: ShardCell, msg: Extract<ShardMsg, { kind: 'BatchCommitted' | 'QueuedVotesStored' }>): void {
    const conflicts = msg.conflictVoterNumbers.length === 0 ? null : new Set(msg.conflictVoterNumbers);
    const voterNumbers: number[] = [];
    const candidateIndexes: number[] = [];
    for (const row of msg.rows) {
      if (conflicts !== null && conflicts.has(row.voterNumber)) continue;
      voterNumbers.push(row.voterNumber);
      candidateIndexes.push(row.candidateIndex);
    }
    if (voterNumbers.length === 0) return;
    const nowMs = now();
    if (nowMs - cell.replicaWatermarkAtMs >= replicaWatermarkRefreshMs) {
      cell.replicaWatermarkBatchId = safeWatermarkBatchId(cell.state, batchIds.lastAssigned());
      cell.replicaWatermarkAtMs = nowMs;
    }
    try {
      deps.onBatchCommitted!({
        key: cell.key, epoch: cell.state.epoch, batchId: msg.batchId, voterNumbers, candidateIndexes, watermarkBatchId: cell.replicaWatermarkBatchId,
      });
    } catch (error) {
      logger.error({ err: error, shard: cell.key }, 'onBatchCommitted listener threw');
    }
  }

  /**
   * Answers the requests of a committed batch's stored rows as soon as the commit is read, before
   * their shards' turns: a row in the batch's committed answer is stored, and its request's
   * answer is `accepted` with the row's own id and time, exactly what its shard answers when it
   * handles the batch (shard.ts batchCommitted). The shard still does everything else then (the
   * bit, the tallies, counting the outcome, the waiting retries, the conflicts), and its reply to
   * a request answered here finds no callback. Waiting for the shards' turns held every answer
   * for one more turn of the event loop, behind the requests that arrived meanwhile. Only the
   * shard's state is read here, never changed.
   */
  function answerCommitted(rows: readonly JournalRow[], conflicts: readonly { electionId: string; voterNumber: number }[]): void {
    const conflicted = conflicts.length === 0 ? null : new Set(conflicts.map((c) => `${c.electionId}/${c.voterNumber}`));
    let election: ElectionCell | undefined;
    for (const row of rows) {
      if (conflicted !== null && conflicted.has(`${row.electionId}/${row.voterNumber}`)) continue;
      if (election === undefined || election.electionId !== row.electionId) election = elections.get(row.electionId);
      const pending = election?.shards[row.shard]?.state.pending.get(row.voterNumber);
      if (pending === undefined || pending.originalRequestId < 0 || pending.row.voteId !== row.voteId) continue;
      deliverReply(pending.originalRequestId, { kind: 'accepted', voteId: row.voteId, acceptedAtMs: row.acceptedAtMs, replayed: false });
    }
  }

  function deliverReply(requestId: number, outcome: VoteOutcome): void {
    const reply = replies.take(requestId);
    if (reply === undefined) return; // answered already (close gave up on it)
    try {
      reply(outcome);
    } catch (error) {
      logger.error({ err: error }, 'vote reply callback threw');
    }
  }

  function lookupStoredVote(cell: ShardCell, voterNumber: number): void {
    Promise.resolve()
      .then(() => storedVotes.readStoredVote(cell.key.electionId, voterNumber))
      .then(
        (stored) => send(cell, { kind: 'StoredVoteFound', voterNumber, stored }),
        (error: unknown) => {
          logger.warn({ err: error, shard: cell.key, voterNumber }, 'stored vote lookup failed');
          send(cell, { kind: 'StoredVoteLookupFailed', voterNumber });
        },
      );
  }

  function writeSnapshot(cell: ShardCell, snapshot: ShardSnapshot): void {
    Promise.resolve()
      .then(() => snapshots.writeSnapshot(snapshot))
      .then(
        () => {
          cell.snapshotInProgress = false;
        },
        (error: unknown) => {
          cell.snapshotInProgress = false;
          cell.snapshotMark = -1; // try again next interval
          logger.warn({ err: error, shard: cell.key }, 'snapshot write failed');
        },
      );
  }

  function changeMark(state: ShardState): number {
    // rowsQueued too: a vote entering the spill queue changes what results say is queued.
    return state.counters.rowsCommitted + state.counters.conflicts + state.counters.rowsReplayed + state.counters.rowsQueued + state.counters.rowsInherited;
  }

  function requestSnapshot(cell: ShardCell, force: boolean): void {
    if (cell.snapshotInProgress || cell.ref === null) return;
    const mark = changeMark(cell.state);
    if (!force && mark === cell.snapshotMark) return;
    cell.snapshotInProgress = true;
    cell.snapshotMark = mark;
    send(cell, { kind: 'TakeSnapshot', nowMs: now(), lastAssignedBatchId: batchIds.lastAssigned() });
  }

  // -------------------------------------------------------------------------------------------
  // Group committer

  function runCommitter(msg: CommitterMsg): void {
    if (stopped) return;
    const effects = stepCommitter(committer, msg);
    for (const effect of effects) {
      switch (effect.kind) {
        case 'RequestBatchId': {
          const request = ++batchIdRequest;
          const timer = setTimeout(() => {
            if (batchIdRequest !== request) return;
            batchIdRequest++;
            logger.warn({ timeoutMs: config.batchIdTimeoutMs }, 'batch id reservation timed out');
            runCommitter({ kind: 'BatchIdFailed', message: 'timed out', nowMs: now() });
          }, config.batchIdTimeoutMs);
          Promise.resolve()
            .then(() => batchIds.next())
            .then(
              (batchId) => {
                clearTimeout(timer);
                if (batchIdRequest === request) runCommitter({ kind: 'BatchIdAssigned', batchId, nowMs: now() });
              },
              (error: unknown) => {
                clearTimeout(timer);
                if (batchIdRequest !== request) return;
                logger.warn({ err: error }, 'batch id reservation failed');
                runCommitter({ kind: 'BatchIdFailed', message: String(error), nowMs: now() });
              },
            );
          break;
        }
        case 'SpillBatch': {
          const batchId = effect.batch.batchId;
          const rows = effect.batch.rows;
          Promise.resolve()
            .then(() => spill!.queue.send({ batchId, rows, spilledAtMs: now() }))
            .then(
              () => runCommitter({ kind: 'SpillFinished', batchId, confirmed: true, nowMs: now() }),
              (error: unknown) => {
                logger.warn({ err: error, batchId, rows: rows.length }, 'spill to the queue not confirmed');
                runCommitter({ kind: 'SpillFinished', batchId, confirmed: false, nowMs: now() });
              },
            );
          break;
        }
        case 'StartCommit': {
          const batchId = effect.batch.batchId;
          Promise.resolve()
            .then(() => journal.commit(effect.batch))
            .then(
              (result) => {
                if (result.kind === 'committed') answerCommitted(effect.batch.rows, result.conflicts);
                runCommitter({ kind: 'CommitFinished', batchId, result, nowMs: now() });
              },
              // commit() must not reject; if it does, the outcome is unknown like `failed`.
              (error: unknown) =>
                runCommitter({ kind: 'CommitFinished', batchId, result: { kind: 'failed', message: String(error) }, nowMs: now() }),
            );
          break;
        }
        case 'CheckCommit': {
          const batchId = effect.batchId;
          Promise.resolve()
            .then(() => journal.wasCommitted(batchId))
            .then(
              (committed) => runCommitter({ kind: 'CommitCheckFinished', batchId, outcome: committed ? 'committed' : 'not_committed', nowMs: now() }),
              (error: unknown) => {
                logger.warn({ err: error, batchId }, 'commit check failed; batch stays in doubt');
                runCommitter({ kind: 'CommitCheckFinished', batchId, outcome: 'error', nowMs: now() });
              },
            );
          break;
        }
        case 'DeliverToShard': {
          const cell = elections.get(effect.key.electionId)?.shards[effect.key.shard];
          if (cell === undefined) logger.error({ shard: effect.key }, 'batch outcome for a shard this node does not hold');
          else send(cell, effect.msg);
          break;
        }
        case 'ArmTimer': {
          if (committerTimer !== null) clearTimeout(committerTimer);
          committerTimer = setTimeout(() => {
            committerTimer = null;
            runCommitter({ kind: 'TimerFired', nowMs: now() });
          }, Math.max(0, effect.atMs - now()));
          break;
        }
      }
    }
  }

  // -------------------------------------------------------------------------------------------
  // Spill drainer: stores queued batches into the journal, then tells the shards held here.

  const spillCounters = {
    batchesDrained: 0,
    rowsDrained: 0,
    batchesAlreadyStored: 0,
    batchesSkippedAbandoned: 0,
    deadLetters: 0,
    drainFailures: 0,
    drainConflicts: 0,
    batchesLeftForOwners: 0,
    partsFenced: 0,
  };
  let drainRound: Promise<DrainReport> | null = null;
  /**
   * Shards being opened here (hostShards), by key, with the epoch taken: their parts may be stored
   * by the drain hostShards runs before recovering them (recovery then reads them from the store).
   */
  const openingEpochs = new Map<string, number>();
  /** Receives per drain round at most: a queue full of others' batches must not keep it going. */
  const drainReceivesPerRoundMax = 100;

  /** The shards of `rows` this node holds now (serving, releasing or opening), with their epochs. */
  function heldShardsOf(rows: readonly JournalRow[]): HeldShard[] {
    const held = new Map<string, HeldShard>();
    for (const row of rows) {
      const key = shardKeyString(row);
      if (held.has(key)) continue;
      const cell = elections.get(row.electionId)?.shards[row.shard];
      if (cell !== undefined && cell.ref !== null && !cell.state.leaseLost) held.set(key, { electionId: row.electionId, shard: row.shard, epoch: cell.state.epoch });
      else {
        const opening = openingEpochs.get(key);
        if (opening !== undefined) held.set(key, { electionId: row.electionId, shard: row.shard, epoch: opening });
      }
    }
    return [...held.values()];
  }

  /**
   * Receives and stores until a receive finds nothing, or nothing it had not seen this round (the
   * batches left are others' to store), or a store fails.
   */
  async function drainUntilEmpty(): Promise<DrainReport> {
    let batches = 0;
    let parts = 0;
    let rows = 0;
    const leftThisRound = new Set<number>();
    for (let receives = 0; receives < drainReceivesPerRoundMax; receives++) {
      if (spill === undefined || stopped) break;
      const items = await spill.queue.receive(10, config.drainLeaseMs);
      if (items.length === 0) break;
      let fresh = 0;
      // One at a time: one connection, so a drain never starves the commits beside it.
      for (let i = 0; i < items.length; i++) {
        const item = items[i]!;
        if (isQueuedBatch(item) && leftThisRound.has(item.batch.batchId)) {
          await spill.queue.release(item.receipt).catch(() => undefined);
          continue;
        }
        fresh++;
        const drained = await drainItem(item);
        if (drained === null) {
          // The store is failing: hand this and the rest back now, not when their leases end.
          await Promise.all(items.slice(i).map((rest) => spill.queue.release(rest.receipt).catch(() => undefined)));
          throw new Error('a spilled batch could not be stored; it stays queued');
        }
        parts += drained.parts;
        rows += drained.rows;
        if (drained.finished) batches++;
        else if (isQueuedBatch(item)) leftThisRound.add(item.batch.batchId);
      }
      if (fresh === 0) break;
    }
    return { batches, parts, rows };
  }

  /** What draining one item did; null when the store failed (the batch stays queued, redelivered later). */
  async function drainItem(item: Awaited<ReturnType<SpillQueue['receive']>>[number]): Promise<{ finished: boolean; parts: number; rows: number } | null> {
    const queue = spill!.queue;
    if (!isQueuedBatch(item)) {
      spillCounters.deadLetters++;
      logger.error({ error: item.error, receiveCount: item.receiveCount }, 'undecodable spilled batch sent to the dead letters');
      await queue.deadLetter(item.receipt, `undecodable: ${item.error}`);
      return { finished: true, parts: 0, rows: 0 };
    }
    const held = heldShardsOf(item.batch.rows);
    if (held.length === 0) {
      // None of its shards is ours: back to the queue at once, for their owners.
      spillCounters.batchesLeftForOwners++;
      await queue.release(item.receipt);
      return { finished: false, parts: 0, rows: 0 };
    }
    let result;
    try {
      result = await spill!.store.storeSpilled(item.batch, held);
    } catch (error) {
      spillCounters.drainFailures++;
      logger.warn({ err: error, batchId: item.batch.batchId, receiveCount: item.receiveCount }, 'storing a spilled batch failed; it stays queued');
      return null;
    }
    switch (result.kind) {
      case 'invalid':
        spillCounters.deadLetters++;
        logger.error({ batchId: item.batch.batchId, reason: result.message }, 'poison spilled batch sent to the dead letters');
        await queue.deadLetter(item.receipt, result.message);
        return { finished: true, parts: 0, rows: 0 };
      case 'abandoned':
        spillCounters.batchesSkippedAbandoned++;
        break;
      case 'already_stored':
        spillCounters.batchesAlreadyStored++;
        // A queued vote of ours whose batch was committed after all: counted now.
        deliverDrained(item, held, [], 'committed');
        break;
      case 'stored': {
        spillCounters.rowsDrained += result.storedRows;
        spillCounters.drainConflicts += result.conflicts.length;
        spillCounters.partsFenced += result.fencedShards.length;
        if (result.conflicts.length > 0) logger.error({ batchId: item.batch.batchId, conflicts: result.conflicts.length }, 'drained voters were stored with another vote');
        if (result.fencedShards.length > 0) logger.warn({ batchId: item.batch.batchId, shards: result.fencedShards }, 'queued votes of shards whose lease moved on are left for their owner');
        deliverDrained(item, result.storedShards, result.conflicts.map((c) => `${c.electionId.toLowerCase()}\u0000${c.voterNumber}`), 'stored');
        const rowsStored = item.batch.rows.filter((r) => result.storedShards.some((k) => k.shard === r.shard && k.electionId === r.electionId)).length;
        if (result.shardsLeft > 0) {
          // Parts of shards other nodes hold now: back to the queue at once, for them.
          spillCounters.batchesLeftForOwners++;
          await queue.release(item.receipt);
          return { finished: false, parts: result.storedShards.length, rows: rowsStored };
        }
        spillCounters.batchesDrained++;
        await queue.ack(item.receipt);
        return { finished: true, parts: result.storedShards.length, rows: rowsStored };
      }
    }
    await queue.ack(item.receipt);
    return { finished: true, parts: 0, rows: 0 };
  }

  /** Tells the serving cells of `shards` that their rows of the batch are stored; opening ones recover them from the store. */
  function deliverDrained(item: QueuedBatch, shards: readonly ShardKey[], conflictKeys: readonly string[], how: 'stored' | 'committed'): void {
    const conflicts = new Set(conflictKeys);
    const wanted = new Set(shards.map((k) => shardKeyString(k)));
    const byShard = new Map<string, JournalRow[]>();
    for (const row of item.batch.rows) {
      const key = shardKeyString(row);
      if (!wanted.has(key)) continue;
      let rows = byShard.get(key);
      if (rows === undefined) byShard.set(key, (rows = []));
      rows.push(row);
    }
    for (const rows of byShard.values()) {
      const first = rows[0]!;
      const cell = elections.get(first.electionId)?.shards[first.shard];
      if (cell === undefined) continue;
      const conflictVoterNumbers = rows.filter((r) => conflicts.has(`${r.electionId.toLowerCase()}\u0000${r.voterNumber}`)).map((r) => r.voterNumber);
      const batchId = item.batch.batchId;
      send(cell, how === 'stored' ? { kind: 'QueuedVotesStored', batchId, rows, conflictVoterNumbers } : { kind: 'BatchCommitted', batchId, rows, conflictVoterNumbers });
    }
  }

  function startDrainRound(): Promise<DrainReport> {
    drainRound ??= drainUntilEmpty().finally(() => {
      drainRound = null;
    });
    return drainRound;
  }

  async function drainSpillQueue(deadlineMs = Date.now() + 60_000): Promise<DrainReport> {
    let batches = 0;
    let parts = 0;
    let rows = 0;
    if (spill === undefined) return { batches, parts, rows };
    for (;;) {
      // A round already running may have passed batches by before the caller's shards counted as
      // held here: let it finish, then run one that started after the call.
      if (drainRound !== null) await drainRound.catch(() => undefined);
      try {
        const report = await startDrainRound();
        batches += report.batches;
        parts += report.parts;
        rows += report.rows;
        if (report.parts === 0 && report.batches === 0) return { batches, parts, rows };
      } catch (error) {
        if (Date.now() >= deadlineMs) throw error;
        await new Promise((resolve) => setTimeout(resolve, config.drainIntervalMs));
      }
    }
  }

  const drainTimer =
    spill === undefined
      ? null
      : setInterval(() => {
          startDrainRound().catch(() => undefined);
        }, config.drainIntervalMs);
  drainTimer?.unref();

  // -------------------------------------------------------------------------------------------
  // Periodic work

  const snapshotTimer = setInterval(() => {
    for (const cell of allShards()) requestSnapshot(cell, false);
  }, config.snapshotIntervalMs);
  snapshotTimer.unref();

  function publishResults(): void {
    if (listeners.size === 0) return;
    for (const election of elections.values()) {
      const changed = election.aggregate.takeChanged();
      if (changed === null) continue;
      for (const listener of listeners) {
        try {
          listener(changed);
        } catch (error) {
          logger.error({ err: error }, 'results listener threw');
        }
      }
    }
  }
  const publishTimer = setInterval(publishResults, config.resultsPublishIntervalMs);
  publishTimer.unref();

  // -------------------------------------------------------------------------------------------
  // API

  async function openElection(request: OpenElectionRequest): Promise<void> {
    const { electionId, shardCount, epochs } = request;
    if (elections.has(electionId)) throw new Error(`election ${electionId} is already open on this node`);
    if (epochs.length !== shardCount) throw new Error(`one epoch per shard expected (${shardCount}), got ${epochs.length}`);
    await hostShards({ ...request, shards: epochs.map((epoch, shard) => ({ shard, epoch })) });
  }

  async function hostShards(request: HostShardsRequest): Promise<readonly ShardRecovery[]> {
    const { electionId, shardCount, candidateCount } = request;
    if (stopping) throw new Error('vote node is stopping');
    if (!Number.isInteger(shardCount) || shardCount < 1) throw new Error('shardCount must be a positive integer');
    let election = elections.get(electionId);
    if (election !== undefined && (election.shardCount !== shardCount || election.candidateCount !== candidateCount)) {
      throw new Error(`election ${electionId} is hosted with other dimensions`);
    }
    for (const { shard } of request.shards) {
      if (!(Number.isInteger(shard) && shard >= 0 && shard < shardCount)) throw new Error(`shard must be 0..${shardCount - 1}, got ${shard}`);
      const key = `${electionId}/${shard}`;
      if (election?.shards[shard] !== undefined || opening.has(key)) throw new Error(`shard ${key} is already hosted on this node`);
    }
    if (election === undefined) {
      election = {
        electionId,
        shardCount,
        candidateCount,
        aggregate: new ElectionAggregate({ electionId, candidateCount, shardCount }),
        shards: new Array<ShardCell | undefined>(shardCount).fill(undefined),
        closed: false,
      };
      elections.set(electionId, election);
    }
    const cellElection = election;
    if (request.closed) cellElection.closed = true;
    const keys = request.shards.map(({ shard }) => `${electionId}/${shard}`);
    for (const key of keys) opening.add(key);
    try {
      // Queued votes are in no bitmap until stored: store them first (this node now holds these
      // shards' leases, so their parts are its to store, whoever queued them), then recover.
      for (const { shard, epoch } of request.shards) openingEpochs.set(shardKeyString({ electionId, shard }), epoch);
      try {
        await drainSpillQueue();
      } finally {
        for (const { shard } of request.shards) openingEpochs.delete(shardKeyString({ electionId, shard }));
      }
      // Read now that this node holds the leases: the shards' earlier owners are fenced, so every id
      // they used is at most this (shard.ts RaiseBatchIdFloor). A shard at epoch 1 had no earlier
      // owner, and its rows need no floor (the committer would pass over the ids below it one by one).
      const reservedCeiling = request.shards.some(({ epoch }) => epoch > 1) ? await batchIds.reservedCeiling() : 0;
      const recovered = await Promise.all(request.shards.map(({ shard, epoch, base }) =>
        recoverShard(cellElection, { electionId, shard }, epoch, base, epoch > 1 ? reservedCeiling : 0)));
      for (const { state } of recovered) {
        const cell: ShardCell = {
          key: state.key,
          state,
          election: cellElection,
          ref: null,
          openRun: null,
          releasing: false,
          queuedCasts: 0,
          inMailbox: 0,
          snapshotInProgress: false,
          snapshotMark: changeMark(state),
          replicaWatermarkBatchId: 0,
          replicaWatermarkAtMs: -Infinity,
        };
        cell.ref = spawn(
          system,
          (actorCell: ShardCell, run: ShardRun) => {
            handleShardRun(actorCell, run);
            return actorCell;
          },
          `shard-${++actorCounter}-${state.key.shard}`,
          { initialState: cell },
        );
        cellElection.shards[state.key.shard] = cell;
        if (cellElection.closed) send(cell, { kind: 'CloseElection' });
        // The previous owner may have left its tail unsnapshotted (releaseSnapshotTailRowsMin):
        // snapshot now, after serving, so the next recovery reads little.
        if (state.counters.rowsReplayed > 0) requestSnapshot(cell, true);
      }
      logger.info(
        { electionId, shards: request.shards.map((s) => s.shard), committedVotes: cellElection.aggregate.results().total },
        'shards served on this node',
      );
      return recovered.map((r) => r.recovery);
    } finally {
      for (const key of keys) opening.delete(key);
    }
  }

  async function releaseShard(electionId: string, shard: number): Promise<ShardRelease | undefined> {
    const election = elections.get(electionId);
    const cell = election?.shards[shard];
    if (election === undefined || cell === undefined || cell.releasing) return undefined;
    cell.releasing = true;
    const startedMs = Date.now();
    const deadlineMs = startedMs + config.closeTimeoutMs;
    const idle = () => cell.inMailbox === 0 && shardBacklog(cell.state) === 0;
    const drained = await waitUntil(() => {
      if (idle()) return true;
      if (committer.buffer.length > 0 && !committer.flushAll) runCommitter({ kind: 'FlushRequested', nowMs: now() });
      return false;
    }, deadlineMs);
    if (!drained) logger.warn({ shard: cell.key, backlog: shardBacklog(cell.state) }, 'shard released before its backlog resolved; late outcomes are ignored');
    // Its queued votes are this node's to store while it holds the lease: stored now, the next
    // owner recovers them (a file queue is drainable here only). Bounded: a database that does not
    // answer leaves them queued for the next owner to store before it serves.
    if (spill !== undefined && cell.state.queuedCount > 0 && !cell.state.leaseLost) {
      await drainSpillQueue(deadlineMs).catch((error: unknown) => logger.warn({ err: error, shard: cell.key }, 'queued votes of a shard being released could not be stored; its next owner stores them'));
    }
    const drainedMs = Date.now();
    let snapshotWritten = false;
    const tailRows = changeMark(cell.state) - cell.snapshotMark;
    if (!cell.state.leaseLost && cell.ref !== null && (cell.snapshotMark < 0 || tailRows > config.releaseSnapshotTailRowsMin)) {
      requestSnapshot(cell, false);
      snapshotWritten = cell.snapshotInProgress;
      await waitUntil(() => !cell.snapshotInProgress, deadlineMs + 1_000);
    }
    if (cell.ref !== null) stop(cell.ref);
    cell.ref = null;
    if (election.shards[shard] === cell) {
      election.shards[shard] = undefined;
      // Its queued votes are its next owner's to report (it drains them before serving).
      election.aggregate.setQueuedVotes(shard, 0);
    }
    return { backlogMs: drainedMs - startedMs, backlogResolved: drained, snapshotMs: Date.now() - drainedMs, snapshotWritten };
  }

  function shardTallies(electionId: string): ShardTallies[] {
    const out: ShardTallies[] = [];
    for (const cell of elections.get(electionId)?.shards ?? []) {
      if (cell === undefined || cell.releasing) continue;
      out.push({
        shard: cell.key.shard, epoch: cell.state.epoch, counts: cell.state.committedTallies, queuedVotes: cell.state.queuedCount, changeMark: changeMark(cell.state),
      });
    }
    return out;
  }

  function isServing(electionId: string, shard: number): boolean {
    const cell = elections.get(electionId)?.shards[shard];
    return cell !== undefined && cell.ref !== null && !cell.releasing && !cell.state.leaseLost;
  }

  /**
   * Restores from `base` or else the latest snapshot, then replays the stored votes after its
   * watermark; its new rows get batch ids above `inheritedBatchIdFloor` (0: none) too.
   */
  async function recoverShard(
    election: ElectionCell, key: ShardKey, epoch: number, base: ShardSnapshot | undefined, inheritedBatchIdFloor: number,
  ): Promise<{ state: ShardState; recovery: ShardRecovery }> {
    const state = createShardState({
      key,
      shardCount: election.shardCount,
      candidateCount: election.candidateCount,
      epoch,
      config: { pendingVotesMax: config.shardPendingVotesMax, retryAfterMs: config.retryAfterMs },
    });
    const apply = (msg: ShardMsg): void => {
      for (const effect of stepShard(state, msg)) {
        if (effect.kind !== 'TalliesCommitted') throw new Error(`unexpected effect ${effect.kind} during recovery`);
        election.aggregate.applyTallies(key.shard, effect.deltas, effect.source, now());
      }
    };
    const snapshot = base ?? (await snapshots.readLatestSnapshot(key));
    let watermarkBatchId = 0;
    if (snapshot !== null) {
      apply({ kind: 'RestoreFromSnapshot', snapshot });
      watermarkBatchId = snapshot.watermarkBatchId;
    }
    let tailRows = 0;
    await snapshots.readVotesAfter(key, watermarkBatchId, (rows) => {
      tailRows += rows.length;
      apply({ kind: 'ReplayStoredVotes', rows });
    });
    apply({ kind: 'RaiseBatchIdFloor', batchId: inheritedBatchIdFloor });
    const source = base !== undefined ? 'replica' : snapshot !== null ? 'snapshot' : 'empty';
    return { state, recovery: { shard: key.shard, source, watermarkBatchId, tailRows } };
  }

  function closeElection(electionId: string): boolean {
    const election = elections.get(electionId);
    if (election === undefined) return false;
    election.closed = true;
    for (const cell of election.shards) if (cell !== undefined) send(cell, { kind: 'CloseElection' });
    return true;
  }

  function cast(vote: CastRequest, reply: (outcome: VoteOutcome) => void): void {
    const election = elections.get(vote.electionId);
    if (election === undefined) return reply(unknownElectionOutcome);
    const { voterNumber, candidateIndex } = vote;
    if (!Number.isSafeInteger(voterNumber) || voterNumber < 0) return reply(invalidVoterOutcome);
    if (!Number.isInteger(candidateIndex) || candidateIndex < 0 || candidateIndex >= election.candidateCount) {
      return reply(invalidCandidateOutcome);
    }
    if (stopping) {
      election.aggregate.recordOutcome(stoppingOutcome);
      return reply(stoppingOutcome);
    }
    const cell = election.shards[voterNumber % election.shardCount];
    if (cell === undefined) {
      election.aggregate.recordOutcome(notOwnerOutcome);
      return reply(notOwnerOutcome);
    }
    if (cell.releasing) {
      election.aggregate.recordOutcome(movingOutcome);
      return reply(movingOutcome);
    }
    if (cell.ref === null) {
      election.aggregate.recordOutcome(shardStoppedOutcome);
      return reply(shardStoppedOutcome);
    }
    if (cell.queuedCasts >= config.shardMailboxCastsMax || !canAdmit(committer, castsInTransit)) {
      election.aggregate.recordOutcome(overloadedOutcome);
      return reply(overloadedOutcome);
    }
    const requestId = nextRequestId++;
    replies.set(requestId, reply);
    cell.queuedCasts++;
    castsInTransit++;
    send(cell, {
      kind: 'CastVote',
      requestId,
      voterNumber,
      candidateIndex,
      voteId: newVoteId(),
      receivedAtMs: now(),
      batchIdFloor: batchIds.lastAssigned(),
    });
  }

  function results(electionId: string): ElectionResults | undefined {
    return elections.get(electionId)?.aggregate.results();
  }

  function onResultsChanged(listener: (results: ElectionResults) => void): () => void {
    listeners.add(listener);
    return () => listeners.delete(listener);
  }

  function stats(electionId: string): ElectionStats | undefined {
    const election = elections.get(electionId);
    if (election === undefined) return undefined;
    return {
      electionId,
      results: election.aggregate.results(),
      votesPerSecond: election.aggregate.votesPerSecond(now()),
      outcomes: election.aggregate.outcomes(),
      shards: election.shards.filter((cell) => cell !== undefined).map((cell) => ({
        shard: cell.key.shard,
        epoch: cell.state.epoch,
        leaseLost: cell.state.leaseLost,
        accepting: cell.state.accepting,
        bitmapBytes: cell.state.bitmap.byteLength(),
        votersWithBit: cell.state.bitmap.count(),
        backlog: shardBacklog(cell.state),
        queuedCasts: cell.queuedCasts,
        votesInSpillQueue: cell.state.queuedCount,
        counters: { ...cell.state.counters },
      })),
      committer: {
        bufferedRows: committer.buffer.length,
        journalCallsInFlight: journalCallsInFlight(committer),
        batchesInDoubt: committer.inDoubt.size,
        counters: { ...committer.counters },
      },
      actors: { ...actorStats },
    };
  }

  function allShards(): ShardCell[] {
    return [...elections.values()].flatMap((election) => election.shards.filter((cell) => cell !== undefined));
  }

  async function waitUntil(condition: () => boolean, deadlineMs: number): Promise<boolean> {
    while (!condition()) {
      if (Date.now() >= deadlineMs) return false;
      await new Promise((resolve) => setTimeout(resolve, 2));
    }
    return true;
  }

  async function close(): Promise<void> {
    if (stopping) return;
    stopping = true;
    clearInterval(snapshotTimer);
    const deadlineMs = Date.now() + config.closeTimeoutMs;
    const mailboxesEmpty = () => allShards().every((cell) => cell.inMailbox === 0);
    // Casts already admitted reach their shards, their rows are flushed, and the outcomes
    // delivered; repeat until nothing moves (a retry can append rows again).
    const drained = await waitUntil(() => {
      if (!mailboxesEmpty()) return false;
      if (!isCommitterIdle(committer)) {
        if (committer.buffer.length > 0 && !committer.flushAll) runCommitter({ kind: 'FlushRequested', nowMs: now() });
        return false;
      }
      return mailboxesEmpty();
    }, deadlineMs);
    if (!drained) {
      logger.warn(
        { bufferedRows: committer.buffer.length, batchesInDoubt: committer.inDoubt.size, waitingReplies: replies.size },
        'vote node closed before every pending vote resolved',
      );
    }
    // Final snapshots: a restart then replays little.
    for (const cell of allShards()) requestSnapshot(cell, false);
    await waitUntil(() => mailboxesEmpty() && allShards().every((cell) => !cell.snapshotInProgress), deadlineMs + 1_000);
    publishResults();
    clearInterval(publishTimer);
    if (drainTimer !== null) clearInterval(drainTimer);
    await drainRound?.catch(() => undefined);
    stopped = true;
    if (committerTimer !== null) clearTimeout(committerTimer);
    // Whoever still waits (in doubt, lookups, a store that never answered) must hear something.
    for (const requestId of replies.requestIds()) deliverReply(requestId, stoppingOutcome);
    for (const cell of allShards()) cell.ref = null;
    stop(system);
  }

  function spillStats(): SpillStats | undefined {
    return spill === undefined ? undefined : { ...spillCounters };
  }

  return {
    openElection, hostShards, releaseShard, shardTallies, isServing, closeElection, cast, results, onResultsChanged, stats, drainSpillQueue, spillStats, close,
  };
}

// ---------------------------------------------------------------------------------------------
// Reply callbacks

/** Slots of the ring (a power of two): more than the votes a node has waiting at once, normally. */
const replySlotsDefault = 4096;

/**
 * The reply callbacks of the votes waiting for their outcome, by request id. Ids only grow, so a
 * ring of slots indexed by the id's low bits holds nearly all of them: a Map taking one insert and
 * one delete per vote rebuilt its table every few hundred votes (~50-100 B of garbage per vote,
 * bench/castPath.ts). An id whose slot is still held by an older vote (one waiting long: a lookup,
 * a batch in doubt) goes to an overflow Map. A slot remembers its id, so an outcome for an id
 * answered already, or for an older id of the same slot, finds nothing.
 */
export class ReplyCallbacks {
  private readonly ids: Float64Array;
  private readonly callbacks: (((outcome: VoteOutcome) => void) | undefined)[];
  private readonly overflow = new Map<number, (outcome: VoteOutcome) => void>();
  private readonly mask: number;
  /** Callbacks held now. */
  size = 0;

  constructor(slots = replySlotsDefault) {
    assert(Number.isInteger(slots) && slots >= 1 && (slots & (slots - 1)) === 0, 'reply slots must be a power of two');
    this.ids = new Float64Array(slots).fill(-1);
    this.callbacks = new Array<undefined>(slots).fill(undefined);
    this.mask = slots - 1;
  }

  /** `requestId`: a non-negative safe integer never used before. */
  set(requestId: number, callback: (outcome: VoteOutcome) => void): void {
    const slot = requestId & this.mask;
    if (this.callbacks[slot] === undefined) {
      this.ids[slot] = requestId;
      this.callbacks[slot] = callback;
    } else {
      this.overflow.set(requestId, callback);
    }
    this.size++;
  }

  /** The callback of `requestId`, removed; undefined when it was taken already (or never set). */
  take(requestId: number): ((outcome: VoteOutcome) => void) | undefined {
    const slot = requestId & this.mask;
    let callback: ((outcome: VoteOutcome) => void) | undefined;
    if (this.ids[slot] === requestId) {
      callback = this.callbacks[slot];
      this.callbacks[slot] = undefined;
    } else {
      callback = this.overflow.get(requestId);
      if (callback !== undefined) this.overflow.delete(requestId);
    }
    if (callback !== undefined) this.size--;
    return callback;
  }

  /** The ids of every callback held now. */
  requestIds(): number[] {
    const ids: number[] = [...this.overflow.keys()];
    for (let slot = 0; slot < this.callbacks.length; slot++) if (this.callbacks[slot] !== undefined) ids.push(this.ids[slot]!);
    return ids;
  }
}

// ---------------------------------------------------------------------------------------------
// Vote ids

/** ASCII hex digits, by value. */
const hexDigits = new TextEncoder().encode('0123456789abcdef');

/**
 * UUIDv7 (RFC 9562): 48-bit ms timestamp, version 7, 74 random bits. Time-ordered, so the
 * votes table's index stays append-mostly. Randomness is drawn from node:crypto in blocks to
 * keep the hot path cheap, and the text is written into one buffer and read out as one string:
 * built with `+` from 20 two-digit pieces it was ~600 bytes of short-lived rope per vote, the
 * largest allocation of the cast path (bench/castPath.ts).
 */
export function createUuidV7Generator(now: () => number = Date.now): () => string {
  const pool = new Uint8Array(16 * 512);
  let offset = pool.length;
  const text = Buffer.alloc(36);
  const writeByte = (at: number, byte: number): void => {
    text[at] = hexDigits[byte >>> 4]!;
    text[at + 1] = hexDigits[byte & 0x0f]!;
  };
  text[8] = text[13] = text[18] = text[23] = 0x2d; // '-'
  return () => {
    if (offset + 10 > pool.length) {
      randomFillSync(pool);
      offset = 0;
    }
    const ms = now();
    const high = Math.floor(ms / 0x1_0000_0000);
    const low = ms >>> 0;
    const r = offset;
    offset += 10;
    writeByte(0, (high >>> 8) & 0xff);
    writeByte(2, high & 0xff);
    writeByte(4, (low >>> 24) & 0xff);
    writeByte(6, (low >>> 16) & 0xff);
    writeByte(9, (low >>> 8) & 0xff);
    writeByte(11, low & 0xff);
    writeByte(14, 0x70 | (pool[r]! & 0x0f));
    writeByte(16, pool[r + 1]!);
    writeByte(19, 0x80 | (pool[r + 2]! & 0x3f));
    writeByte(21, pool[r + 3]!);
    for (let i = 4; i < 10; i++) writeByte(24 + 2 * (i - 4), pool[r + i]!);
    return text.toString('latin1', 0, 36);
  };
}
