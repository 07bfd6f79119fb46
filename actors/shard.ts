// The behaviour of one (election, shard): a pure step function `stepShard(state, msg)`.
//
// A voter's bit, one per voter slot (slot = floor(voterNumber / shardCount)):
//
//   ┌───────┐  CastVote (bit clear, accepting):   ┌───────────┐  BatchCommitted:      ┌───────────┐
//   │ CLEAR │  set bit, pendingTallies[c]++,  ──► │ TENTATIVE │  committedTallies[c]++ │ COMMITTED │
//   │       │  AppendToJournal                    │ (pending) │  waiters answered ───► │ (terminal)│
//   └───────┘ ◄── BatchAbandoned ──────────────── └───────────┘                        └───────────┘
//     ▲   │       (definitely not stored: bit           │                                 ▲   ▲
//     │   │        cleared, pending tally undone,       │ BatchInDoubt                    │   │
//     │   │        waiters told unavailable)            ▼ (waiters told unavailable;      │   │
//     │   │                                       ┌───────────┐ bit stays set, so no      │   │
//     │   │                                       │ IN_DOUBT  │ second vote slips in)     │   │
//     └───┼────────── BatchAbandoned ──────────── │ (pending) │ ── BatchCommitted ────────┘   │
//         │                                       └───────────┘                               │
//         └──── RestoreFromSnapshot / ReplayStoredVotes (recovery: stored votes only) ────────┘
//
//   TENTATIVE / IN_DOUBT ── BatchQueued ──► QUEUED (bit set, counts nothing yet, waiters answered
//   `accepted`: the batch is durable in the spill queue) ── BatchCommitted (drained) ──► COMMITTED.
//   A queued vote is never abandoned: the drainer stores it, whatever happens to this process.
//
//   TENTATIVE ── BatchCommitted listing the voter as a conflict ──► STORED_ELSEWHERE (bit set,
//   counts nothing, waiters answered from a lookup). A conflict means this shard missed a stored
//   row; with leases, fencing and recovery working it never happens, so it is counted and logged.
//
// Retries of a voter: TENTATIVE → they wait for the outcome; IN_DOUBT → unavailable(in_doubt) at
// once; COMMITTED → answered from the stored vote (one lookup per voter): same candidate →
// accepted with the original voteId, another → already_voted. An outcome for a vote that is no
// longer pending (a duplicate, or meant for an older incarnation of the shard: matched by voteId)
// is ignored and counted (staleResolutions); an impossible state throws.
//
// Purity: no I/O, no clock, no randomness. Time, voteIds and batch-id floors arrive in messages,
// and everything the shell must do comes back as effects. The state is MUTATED in place: the
// bitmap of a big shard is megabytes, and copying it per vote is not an option. Callers that need
// an old state (the model test, recovery) rebuild it from a snapshot instead.
//
// Protocol (sender → reply), commands imperative, events past tense:
//   CastVote               shell (gateway request)       → Reply now or later, maybe AppendToJournal/LookupStoredVote
//   BatchCommitted         group committer               → Reply to waiters, TalliesCommitted
//   BatchAbandoned         group committer               → Reply unavailable to waiters (maybe LeaseLost)
//   BatchInDoubt           group committer               → Reply unavailable to waiters
//   BatchQueued            group committer (spill queue confirmed) → Reply accepted to waiters
//   QueuedVotesStored      spill drainer (a part stored under this lease) → as BatchCommitted; an earlier owner's rows counted if their bit is clear
//   StoredVoteFound        shell (StoredVoteReader)      → Reply to lookup waiters
//   StoredVoteLookupFailed shell (StoredVoteReader)      → Reply unavailable to lookup waiters
//   TakeSnapshot           shell (snapshot timer)        → WriteSnapshot
//   RestoreFromSnapshot    shell (recovery, before votes)→ TalliesCommitted (source recovery)
//   ReplayStoredVotes      shell (recovery, before votes)→ TalliesCommitted (source recovery)
//   CloseElection          shell (operator)              → none
//   SetEpoch               shell (lease renewed by THIS node without interruption) → none

import { PagedBitmap, bitmapPageBytesDefault } from './bitmap.ts';
import type { JournalRow, ShardKey, ShardSnapshot, StoredVote } from './ports.ts';

// ---------------------------------------------------------------------------------------------
// Outcomes

export type UnavailableReason =
  /** The commit failed and the vote was definitely not stored: retrying is safe. */
  | 'commit_failed'
  /** This node lost the shard's lease; the vote was not stored. */
  | 'fenced'
  /** The outcome of the commit is unknown for now; retrying gets the truth once it is known. */
  | 'in_doubt'
  /** The stored vote could not be read. */
  | 'lookup_failed'
  /** The bit says the voter voted but no stored vote was found (read replica lag). */
  | 'vote_not_found'
  /** The node is shutting down (set by the shell, never by the shard). */
  | 'node_stopping'
  /** The shard hit a broken invariant and stopped; a restart recovers it (set by the shell). */
  | 'shard_stopped'
  /** The shard is being handed to another node (set by the shell); retry reaches the new owner. */
  | 'shard_moving'
  /** This node does not serve the shard (yet, or any more): the map moved on (set by the cluster). */
  | 'not_owner'
  /** The owner could not be reached over the inter-node link, or did not answer in time (cluster). */
  | 'forward_failed'
  /** This node could not renew its membership and stopped serving, lest it be fenced (cluster). */
  | 'node_fenced';

export type AbandonReason = 'commit_failed' | 'fenced';

export type InvalidVoteReason = 'voter_number_invalid' | 'candidate_index_invalid';

/** Expected outcomes of a vote, as data. Ordered roughly by precedence. */
export type VoteOutcome =
  | { readonly kind: 'accepted'; readonly voteId: string; readonly acceptedAtMs: number; readonly replayed: boolean }
  | { readonly kind: 'already_voted'; readonly voteId: string; readonly acceptedAtMs: number }
  | { readonly kind: 'overloaded'; readonly retryAfterMs: number }
  | { readonly kind: 'unavailable'; readonly reason: UnavailableReason; readonly retryAfterMs: number }
  | { readonly kind: 'election_closed' }
  | { readonly kind: 'unknown_election' }
  /** Bad input, refused before it reaches a shard (the shell validates; the shard asserts). */
  | { readonly kind: 'invalid_vote'; readonly reason: InvalidVoteReason };

export type VoteOutcomeKind = VoteOutcome['kind'];

// ---------------------------------------------------------------------------------------------
// Messages

/** Sender: shell, one per vote request. Reply: a `Reply` effect with the same requestId. */
export interface CastVote {
  readonly kind: 'CastVote';
  readonly requestId: number;
  readonly voterNumber: number;
  readonly candidateIndex: number;
  /** Generated by the shell (UUIDv7); used only if this request becomes the stored vote. */
  readonly voteId: string;
  readonly receivedAtMs: number;
  /** BatchIdSource.lastAssigned() read at admission: this vote's batch id will be larger. */
  readonly batchIdFloor: number;
}

/**
 * Sender: group committer, once the batch holding these rows is known to be stored.
 * Rows (not just voter numbers) so that a late or duplicated resolution can never resolve a
 * newer tentative vote of the same voter: a pending vote is resolved only by its own voteId.
 */
export interface BatchCommitted {
  readonly kind: 'BatchCommitted';
  readonly batchId: number;
  readonly rows: readonly JournalRow[];
  /** Voters whose row was NOT written because a row was already stored for them. */
  readonly conflictVoterNumbers: readonly number[];
}

/**
 * Sender: the spill drainer, once it stored these rows of a queued batch under this shard's lease.
 * Rows this shard queued itself resolve like BatchCommitted (matched by voteId). Rows queued by an
 * earlier owner of the shard (this one took over after they were queued, and a drain before it
 * served did not see them) are counted when their voter's bit is clear, as recovery would; a set
 * bit means this owner took another vote of that voter meanwhile, which the key keeps out of the
 * store (a conflict, counted and logged on the side whose row lost).
 */
export interface QueuedVotesStored {
  readonly kind: 'QueuedVotesStored';
  readonly batchId: number;
  readonly rows: readonly JournalRow[];
  /** Voters whose row was NOT written because a row with another vote was already stored for them. */
  readonly conflictVoterNumbers: readonly number[];
}

/** Sender: group committer, when these rows are definitely NOT stored (rolled back or fenced). */
export interface BatchAbandoned {
  readonly kind: 'BatchAbandoned';
  readonly rows: readonly JournalRow[];
  readonly reason: AbandonReason;
}

/** Sender: group committer, when the commit outcome is unknown and could not be checked yet. */
export interface BatchInDoubt {
  readonly kind: 'BatchInDoubt';
  readonly rows: readonly JournalRow[];
}

/**
 * Sender: group committer, when the spill queue confirmed it holds the batch of these rows: they
 * are durable, and will be stored in Postgres by the drainer (a BatchCommitted then counts them).
 */
export interface BatchQueued {
  readonly kind: 'BatchQueued';
  readonly rows: readonly JournalRow[];
}

/** Sender: shell, answering a LookupStoredVote effect. */
export interface StoredVoteFound {
  readonly kind: 'StoredVoteFound';
  readonly voterNumber: number;
  readonly stored: StoredVote | null;
}

/** Sender: shell, when the StoredVoteReader rejected. */
export interface StoredVoteLookupFailed {
  readonly kind: 'StoredVoteLookupFailed';
  readonly voterNumber: number;
}

/** Sender: shell's snapshot timer. Reply: a WriteSnapshot effect. */
export interface TakeSnapshot {
  readonly kind: 'TakeSnapshot';
  readonly nowMs: number;
  /** BatchIdSource.lastAssigned() read when the snapshot was requested. */
  readonly lastAssignedBatchId: number;
}

/** Sender: shell during recovery, on a fresh state, before any vote. */
export interface RestoreFromSnapshot {
  readonly kind: 'RestoreFromSnapshot';
  readonly snapshot: ShardSnapshot;
}

/** Sender: shell during recovery: stored votes after the snapshot's watermark. Idempotent. */
export interface ReplayStoredVotes {
  readonly kind: 'ReplayStoredVotes';
  readonly rows: readonly { readonly voterNumber: number; readonly candidateIndex: number }[];
}

/**
 * Sender: shell during recovery, once this node holds the lease: BatchIdSource.reservedCeiling().
 * Rows this shard admits from now get batch ids above it. An earlier owner's ids came from blocks
 * reserved before, and may run above this node's: a row of ours with an id below one of theirs
 * would sit under the watermark of a snapshot they wrote, and a recovery from that snapshot
 * (which replays only later batches) would never count it.
 */
export interface RaiseBatchIdFloor {
  readonly kind: 'RaiseBatchIdFloor';
  readonly batchId: number;
}

/** Sender: shell. New voters get `election_closed`; pending votes still resolve. */
export interface CloseElection {
  readonly kind: 'CloseElection';
}

/**
 * Sender: shell, when THIS node renewed the shard's lease with a higher epoch and nobody else
 * held it in between. After losing the lease to another owner the state may miss that owner's
 * votes: the shard must be rebuilt from the store (snapshot + replay), not given a new epoch.
 */
export interface SetEpoch {
  readonly kind: 'SetEpoch';
  readonly epoch: number;
}

export type ShardMsg =
  | CastVote
  | BatchCommitted
  | QueuedVotesStored
  | BatchAbandoned
  | BatchInDoubt
  | BatchQueued
  | StoredVoteFound
  | StoredVoteLookupFailed
  | TakeSnapshot
  | RestoreFromSnapshot
  | ReplayStoredVotes
  | RaiseBatchIdFloor
  | CloseElection
  | SetEpoch;

// ---------------------------------------------------------------------------------------------
// Effects

export type TallySource = 'live' | 'recovery';

export type ShardEffect =
  | { readonly kind: 'Reply'; readonly requestId: number; readonly outcome: VoteOutcome }
  /** Hand the row to the group committer; `batchIdFloor` travels with it (see groupCommit.ts). */
  | { readonly kind: 'AppendToJournal'; readonly row: JournalRow; readonly batchIdFloor: number }
  /** Read the stored vote, answer with StoredVoteFound / StoredVoteLookupFailed. */
  | { readonly kind: 'LookupStoredVote'; readonly key: ShardKey; readonly voterNumber: number }
  /** Committed tally deltas for the election aggregate; `source: 'recovery'` is not new votes. */
  | { readonly kind: 'TalliesCommitted'; readonly key: ShardKey; readonly deltas: readonly number[]; readonly source: TallySource }
  | { readonly kind: 'WriteSnapshot'; readonly snapshot: ShardSnapshot }
  /** A write of the current epoch was fenced: another node owns the shard now. */
  | { readonly kind: 'LeaseLost'; readonly key: ShardKey; readonly epoch: number };

// ---------------------------------------------------------------------------------------------
// State

interface RetryWaiter {
  readonly requestId: number;
  readonly candidateIndex: number;
}

interface PendingVote {
  readonly row: JournalRow;
  readonly batchIdFloor: number;
  /** The request that created the row; -1 once it was answered (in doubt). */
  originalRequestId: number;
  /** Retries that arrived while pending; null until the first one (most votes have none). */
  retries: RetryWaiter[] | null;
  inDoubt: boolean;
  /** Durable in the spill queue and answered: waits only for the drain to count it. */
  queued: boolean;
}

export interface ShardCounters {
  castsReceived: number;
  /** Rows handed to the journal (tentative votes). */
  rowsAppended: number;
  accepted: number;
  acceptedReplayed: number;
  alreadyVoted: number;
  overloaded: number;
  electionClosed: number;
  unavailable: number;
  rowsCommitted: number;
  rowsAbandoned: number;
  rowsInDoubt: number;
  /** Rows answered accepted because the spill queue holds them. */
  rowsQueued: number;
  /** Committed batches listing one of our pending voters as already stored: state divergence. */
  conflicts: number;
  lookups: number;
  /** Resolutions for rows that are no longer pending here (duplicates, or an older incarnation). */
  staleResolutions: number;
  rowsReplayed: number;
  /** Queued rows of an earlier owner, stored by this one's drainer while it served (QueuedVotesStored). */
  rowsInherited: number;
}

export interface ShardConfig {
  /** Admission bound: pending votes + waiting retries + lookup waiters (queued votes not included). */
  readonly pendingVotesMax: number;
  /** Bound on queued votes (answered, waiting for the drain); past it new votes are refused. */
  readonly queuedVotesMax?: number;
  /** Told to clients with `overloaded` / `unavailable`. */
  readonly retryAfterMs: number;
  readonly bitmapPageBytes?: number;
}

export interface ShardState {
  readonly key: ShardKey;
  readonly shardCount: number;
  readonly candidateCount: number;
  epoch: number;
  readonly config: ShardConfig;
  bitmap: PagedBitmap;
  readonly committedTallies: number[];
  /** Tentative votes per candidate: never shown in results. */
  readonly pendingTallies: number[];
  readonly pending: Map<number, PendingVote>;
  /** Voter → requests waiting for the stored vote. One lookup per voter, however many waiters. */
  readonly lookups: Map<number, RetryWaiter[]>;
  retryWaiterCount: number;
  lookupWaiterCount: number;
  /** Pending votes that are queued (counted in `pending`, not in the admission backlog). */
  queuedCount: number;
  /** Bits set for votes stored elsewhere and not counted here (conflicts); normally 0. */
  uncountedBits: number;
  accepting: boolean;
  /** A write with the current epoch was fenced: refuse new votes until SetEpoch. */
  leaseLost: boolean;
  /**
   * New rows get batch ids above this: the watermark of the snapshot this shard was restored
   * from, and the batch ids reserved by the time this node took the shard (RaiseBatchIdFloor).
   * Both come from earlier owners, possibly other processes whose ids run ahead of this one's,
   * and a recovery from their snapshots replays only batches above the watermark. 0: none.
   */
  inheritedBatchIdFloor: number;
  readonly counters: ShardCounters;
  /** Preallocated, they are the replies of the overload path and must be cheap. */
  readonly overloadedOutcome: VoteOutcome;
}

const electionClosedOutcome: VoteOutcome = Object.freeze({ kind: 'election_closed' });

export function createShardState(init: {
  key: ShardKey;
  shardCount: number;
  candidateCount: number;
  epoch: number;
  config: ShardConfig;
}): ShardState {
  const { key, shardCount, candidateCount, epoch, config } = init;
  assert(Number.isInteger(shardCount) && shardCount >= 1, 'shardCount must be a positive integer');
  assert(Number.isInteger(key.shard) && key.shard >= 0 && key.shard < shardCount, 'shard out of range');
  assert(Number.isInteger(candidateCount) && candidateCount >= 1, 'candidateCount must be a positive integer');
  assert(Number.isInteger(epoch) && epoch >= 0, 'epoch must be a non-negative integer');
  assert(Number.isInteger(config.pendingVotesMax) && config.pendingVotesMax >= 1, 'pendingVotesMax must be >= 1');
  return {
    key: { electionId: key.electionId, shard: key.shard },
    shardCount,
    candidateCount,
    epoch,
    config,
    bitmap: new PagedBitmap(config.bitmapPageBytes ?? bitmapPageBytesDefault),
    committedTallies: new Array<number>(candidateCount).fill(0),
    pendingTallies: new Array<number>(candidateCount).fill(0),
    pending: new Map(),
    lookups: new Map(),
    retryWaiterCount: 0,
    lookupWaiterCount: 0,
    queuedCount: 0,
    uncountedBits: 0,
    accepting: true,
    leaseLost: false,
    inheritedBatchIdFloor: 0,
    counters: {
      castsReceived: 0,
      rowsAppended: 0,
      accepted: 0,
      acceptedReplayed: 0,
      alreadyVoted: 0,
      overloaded: 0,
      electionClosed: 0,
      unavailable: 0,
      rowsCommitted: 0,
      rowsAbandoned: 0,
      rowsInDoubt: 0,
      rowsQueued: 0,
      conflicts: 0,
      lookups: 0,
      staleResolutions: 0,
      rowsReplayed: 0,
      rowsInherited: 0,
    },
    overloadedOutcome: Object.freeze({ kind: 'overloaded', retryAfterMs: config.retryAfterMs }),
  };
}

/** What the admission bound counts. */
export function shardBacklog(state: ShardState): number {
  return state.pending.size - state.queuedCount + state.retryWaiterCount + state.lookupWaiterCount;
}

export const queuedVotesMaxDefault = 1_000_000;

export function slotOf(state: ShardState, voterNumber: number): number {
  return Math.floor(voterNumber / state.shardCount);
}

// ---------------------------------------------------------------------------------------------
// Step

/**
 * Steps the shard and returns its effects: appended to `out` when given (the shell steps a run of
 * casts into one array instead of allocating one per vote), else to a new array.
 */
export function stepShard(state: ShardState, msg: ShardMsg, out: ShardEffect[] = []): ShardEffect[] {
  switch (msg.kind) {
    case 'CastVote':
      castVote(state, msg, out);
      break;
    case 'BatchCommitted':
      batchCommitted(state, msg, out);
      break;
    case 'QueuedVotesStored':
      queuedVotesStored(state, msg, out);
      break;
    case 'BatchAbandoned':
      batchAbandoned(state, msg, out);
      break;
    case 'BatchInDoubt':
      batchInDoubt(state, msg, out);
      break;
    case 'BatchQueued':
      batchQueued(state, msg, out);
      break;
    case 'StoredVoteFound':
      storedVoteFound(state, msg, out);
      break;
    case 'StoredVoteLookupFailed':
      storedVoteLookupFailed(state, msg, out);
      break;
    case 'TakeSnapshot':
      out.push({ kind: 'WriteSnapshot', snapshot: takeSnapshot(state, msg) });
      break;
    case 'RestoreFromSnapshot':
      restoreFromSnapshot(state, msg, out);
      break;
    case 'ReplayStoredVotes':
      replayStoredVotes(state, msg, out);
      break;
    case 'CloseElection':
      state.accepting = false;
      break;
    case 'RaiseBatchIdFloor':
      assert(Number.isSafeInteger(msg.batchId) && msg.batchId >= 0, 'RaiseBatchIdFloor needs a batch id');
      if (msg.batchId > state.inheritedBatchIdFloor) state.inheritedBatchIdFloor = msg.batchId;
      break;
    case 'SetEpoch':
      assert(Number.isInteger(msg.epoch) && msg.epoch > state.epoch, `SetEpoch must raise the epoch (${state.epoch} -> ${msg.epoch})`);
      state.epoch = msg.epoch;
      state.leaseLost = false;
      break;
    default:
      assertNever(msg);
  }
  return out;
}

function castVote(state: ShardState, msg: CastVote, out: ShardEffect[]): void {
  const { voterNumber, candidateIndex } = msg;
  assertOwnVoter(state, voterNumber);
  assert(
    Number.isInteger(candidateIndex) && candidateIndex >= 0 && candidateIndex < state.candidateCount,
    'candidateIndex out of range (the shell validates input before dispatch)',
  );
  state.counters.castsReceived++;
  const slot = Math.floor(voterNumber / state.shardCount);

  if (!state.bitmap.has(slot)) {
    if (!state.accepting) {
      state.counters.electionClosed++;
      out.push({ kind: 'Reply', requestId: msg.requestId, outcome: electionClosedOutcome });
      return;
    }
    if (state.leaseLost) {
      replyUnavailable(state, msg.requestId, 'fenced', out);
      return;
    }
    if (shardBacklog(state) >= state.config.pendingVotesMax || state.queuedCount >= (state.config.queuedVotesMax ?? queuedVotesMaxDefault)) {
      replyOverloaded(state, msg.requestId, out);
      return;
    }
    state.bitmap.set(slot);
    state.pendingTallies[candidateIndex]!++;
    const batchIdFloor = Math.max(msg.batchIdFloor, state.inheritedBatchIdFloor);
    const row: JournalRow = {
      electionId: state.key.electionId,
      shard: state.key.shard,
      epoch: state.epoch,
      voterNumber,
      candidateIndex,
      voteId: msg.voteId,
      acceptedAtMs: msg.receivedAtMs,
    };
    state.pending.set(voterNumber, {
      row,
      batchIdFloor,
      originalRequestId: msg.requestId,
      retries: null,
      inDoubt: false,
      queued: false,
    });
    state.counters.rowsAppended++;
    out.push({ kind: 'AppendToJournal', row, batchIdFloor });
    return;
  }

  const pending = state.pending.get(voterNumber);
  if (pending !== undefined) {
    assert(!state.lookups.has(voterNumber), 'a voter cannot be pending and looked up at once');
    if (pending.queued) {
      // Durable in the queue: answered like a stored vote, from the row itself.
      replyFromStored(state, { requestId: msg.requestId, candidateIndex }, pending.row, out);
      return;
    }
    if (pending.inDoubt) {
      // Waiting could take as long as the store is unreachable; the retry will learn the truth.
      replyUnavailable(state, msg.requestId, 'in_doubt', out);
      return;
    }
    if (shardBacklog(state) >= state.config.pendingVotesMax) {
      replyOverloaded(state, msg.requestId, out);
      return;
    }
    (pending.retries ??= []).push({ requestId: msg.requestId, candidateIndex });
    state.retryWaiterCount++;
    return;
  }

  if (shardBacklog(state) >= state.config.pendingVotesMax) {
    replyOverloaded(state, msg.requestId, out);
    return;
  }
  addLookupWaiter(state, voterNumber, { requestId: msg.requestId, candidateIndex }, out);
}

function batchCommitted(state: ShardState, msg: BatchCommitted, out: ShardEffect[]): void {
  const conflicts = msg.conflictVoterNumbers.length === 0 ? null : new Set(msg.conflictVoterNumbers);
  let deltas: number[] | null = null;
  for (const row of msg.rows) {
    const pending = takeMatchingPending(state, row);
    if (pending === null) continue;
    if (conflicts !== null && conflicts.has(row.voterNumber)) {
      // Our row was not written: someone's vote is stored instead. The bit stays set (a vote is
      // stored); every waiter is answered from the stored vote.
      state.counters.conflicts++;
      state.uncountedBits++;
      if (pending.originalRequestId >= 0) {
        addLookupWaiter(state, row.voterNumber, { requestId: pending.originalRequestId, candidateIndex: row.candidateIndex }, out);
      }
      if (pending.retries !== null) {
        for (const retry of pending.retries) addLookupWaiter(state, row.voterNumber, retry, out);
      }
      continue;
    }
    state.committedTallies[row.candidateIndex]!++;
    (deltas ??= new Array<number>(state.candidateCount).fill(0))[row.candidateIndex]!++;
    state.counters.rowsCommitted++;
    if (pending.originalRequestId >= 0) {
      state.counters.accepted++;
      out.push({
        kind: 'Reply',
        requestId: pending.originalRequestId,
        outcome: { kind: 'accepted', voteId: row.voteId, acceptedAtMs: row.acceptedAtMs, replayed: false },
      });
    }
    if (pending.retries !== null) {
      for (const retry of pending.retries) replyFromStored(state, retry, row, out);
    }
  }
  if (deltas !== null) out.push({ kind: 'TalliesCommitted', key: state.key, deltas, source: 'live' });
}

function queuedVotesStored(state: ShardState, msg: QueuedVotesStored, out: ShardEffect[]): void {
  const conflicts = msg.conflictVoterNumbers.length === 0 ? null : new Set(msg.conflictVoterNumbers);
  const inherited: JournalRow[] = [];
  for (const row of msg.rows) {
    const pending = state.pending.get(row.voterNumber);
    if (pending === undefined && !(conflicts !== null && conflicts.has(row.voterNumber))) inherited.push(row);
  }
  // This shard's own queued votes: as a commit of their batch.
  batchCommitted(state, { kind: 'BatchCommitted', batchId: msg.batchId, rows: msg.rows, conflictVoterNumbers: msg.conflictVoterNumbers }, out);
  // A set bit without a pending vote: counted already (the same vote, recovered or drained before).
  const counted = countStoredRows(state, inherited, 'live', out);
  state.counters.rowsInherited += counted;
}

function batchAbandoned(state: ShardState, msg: BatchAbandoned, out: ShardEffect[]): void {
  let fencedCurrentEpoch = false;
  for (const row of msg.rows) {
    if (msg.reason === 'fenced' && row.epoch === state.epoch) fencedCurrentEpoch = true;
    const queued = state.pending.get(row.voterNumber);
    assert(!(queued !== undefined && queued.queued && queued.row.voteId === row.voteId), 'a queued vote cannot be abandoned');
    const pending = takeMatchingPending(state, row);
    if (pending === null) continue;
    const cleared = state.bitmap.clear(Math.floor(row.voterNumber / state.shardCount));
    assert(cleared, 'a pending vote must have its bit set');
    state.counters.rowsAbandoned++;
    if (pending.originalRequestId >= 0) replyUnavailable(state, pending.originalRequestId, msg.reason, out);
    if (pending.retries !== null) {
      for (const retry of pending.retries) replyUnavailable(state, retry.requestId, msg.reason, out);
    }
  }
  if (fencedCurrentEpoch && !state.leaseLost) {
    state.leaseLost = true;
    out.push({ kind: 'LeaseLost', key: state.key, epoch: state.epoch });
  }
}

function batchInDoubt(state: ShardState, msg: BatchInDoubt, out: ShardEffect[]): void {
  for (const row of msg.rows) {
    const pending = state.pending.get(row.voterNumber);
    if (pending === undefined || pending.row.voteId !== row.voteId || pending.queued) {
      state.counters.staleResolutions++;
      continue;
    }
    if (!pending.inDoubt) state.counters.rowsInDoubt++;
    pending.inDoubt = true;
    if (pending.originalRequestId >= 0) {
      replyUnavailable(state, pending.originalRequestId, 'in_doubt', out);
      pending.originalRequestId = -1;
    }
    if (pending.retries !== null) {
      for (const retry of pending.retries) replyUnavailable(state, retry.requestId, 'in_doubt', out);
      state.retryWaiterCount -= pending.retries.length;
      pending.retries = null;
    }
  }
  assert(state.retryWaiterCount >= 0, 'retryWaiterCount went negative');
}

function batchQueued(state: ShardState, msg: BatchQueued, out: ShardEffect[]): void {
  for (const row of msg.rows) {
    const pending = state.pending.get(row.voterNumber);
    if (pending === undefined || pending.row.voteId !== row.voteId || pending.queued) {
      state.counters.staleResolutions++;
      continue;
    }
    pending.queued = true;
    pending.inDoubt = false;
    state.queuedCount++;
    state.counters.rowsQueued++;
    if (pending.originalRequestId >= 0) {
      state.counters.accepted++;
      out.push({
        kind: 'Reply',
        requestId: pending.originalRequestId,
        outcome: { kind: 'accepted', voteId: row.voteId, acceptedAtMs: row.acceptedAtMs, replayed: false },
      });
      pending.originalRequestId = -1;
    }
    if (pending.retries !== null) {
      for (const retry of pending.retries) replyFromStored(state, retry, row, out);
      state.retryWaiterCount -= pending.retries.length;
      pending.retries = null;
    }
  }
  assert(state.retryWaiterCount >= 0, 'retryWaiterCount went negative');
}

function storedVoteFound(state: ShardState, msg: StoredVoteFound, out: ShardEffect[]): void {
  const waiters = takeLookupWaiters(state, msg.voterNumber);
  if (waiters === null) return;
  const stored = msg.stored;
  if (stored === null) {
    for (const waiter of waiters) replyUnavailable(state, waiter.requestId, 'vote_not_found', out);
    return;
  }
  assert(stored.voterNumber === msg.voterNumber && stored.electionId === state.key.electionId, 'stored vote of another voter');
  for (const waiter of waiters) replyFromStored(state, waiter, stored, out);
}

function storedVoteLookupFailed(state: ShardState, msg: StoredVoteLookupFailed, out: ShardEffect[]): void {
  const waiters = takeLookupWaiters(state, msg.voterNumber);
  if (waiters === null) return;
  for (const waiter of waiters) replyUnavailable(state, waiter.requestId, 'lookup_failed', out);
}

/**
 * The snapshot holds COMMITTED state only: tentative bits are cleared in the copy, because a
 * tentative vote may still be rolled back and a restored bit would lock that voter out forever.
 *
 * Watermark: every unresolved row has batch id > its batchIdFloor, and every row admitted later
 * gets a batch id > lastAssignedBatchId (ids handed out later are larger). So every batch with
 * id <= min(floors of unresolved rows, lastAssignedBatchId) that touched this shard has been
 * resolved here, and is reflected in the copy. Taking the min of both is conservative (replay
 * is idempotent), and safe even if the shell read lastAssignedBatchId a little early.
 */
function takeSnapshot(state: ShardState, msg: TakeSnapshot): ShardSnapshot {
  const bitmap = state.bitmap.exportBytes();
  for (const voterNumber of state.pending.keys()) {
    const slot = Math.floor(voterNumber / state.shardCount);
    bitmap[slot >>> 3]! &= ~(1 << (slot & 7));
  }
  const watermarkBatchId = safeWatermarkBatchId(state, msg.lastAssignedBatchId);
  return {
    electionId: state.key.electionId,
    shard: state.key.shard,
    epoch: state.epoch,
    watermarkBatchId,
    tallies: state.committedTallies.slice(),
    voterSlots: state.bitmap.voterSlots(),
    bitmap,
    takenAtMs: msg.nowMs,
  };
}

/**
 * The watermark a snapshot taken now would carry (see takeSnapshot): every batch with an id at or
 * below it that touched this shard is resolved here. Replicas receive it with each committed batch
 * (cluster/replicas.ts), which makes a replica's state as good as a snapshot.
 */
export function safeWatermarkBatchId(state: ShardState, lastAssignedBatchId: number): number {
  let watermarkBatchId = lastAssignedBatchId;
  for (const pending of state.pending.values()) if (pending.batchIdFloor < watermarkBatchId) watermarkBatchId = pending.batchIdFloor;
  return watermarkBatchId;
}

function restoreFromSnapshot(state: ShardState, msg: RestoreFromSnapshot, out: ShardEffect[]): void {
  const { snapshot } = msg;
  assert(state.bitmap.count() === 0 && state.pending.size === 0, 'RestoreFromSnapshot needs a fresh shard state');
  assert(snapshot.electionId === state.key.electionId && snapshot.shard === state.key.shard, 'snapshot of another shard');
  assert(snapshot.tallies.length === state.candidateCount, 'snapshot candidate count differs');
  const bitmap = PagedBitmap.importBytes(snapshot.bitmap, snapshot.voterSlots, state.bitmap.pageBytes);
  let talliesSum = 0;
  for (const tally of snapshot.tallies) {
    assert(Number.isInteger(tally) && tally >= 0, 'snapshot tally must be a non-negative integer');
    talliesSum += tally;
  }
  // Every set bit of a snapshot is a counted vote, or a conflict's uncounted one: more votes
  // than bits means a corrupt snapshot.
  assert(talliesSum <= bitmap.count(), `snapshot tallies (${talliesSum}) exceed its bitmap (${bitmap.count()})`);
  state.bitmap = bitmap;
  state.uncountedBits = bitmap.count() - talliesSum;
  state.inheritedBatchIdFloor = Math.max(state.inheritedBatchIdFloor, snapshot.watermarkBatchId);
  for (let c = 0; c < state.candidateCount; c++) state.committedTallies[c] = snapshot.tallies[c]!;
  out.push({ kind: 'TalliesCommitted', key: state.key, deltas: snapshot.tallies.slice(), source: 'recovery' });
}

function replayStoredVotes(state: ShardState, msg: ReplayStoredVotes, out: ShardEffect[]): void {
  // Bit already set: counted already (restored or replayed), or pending (its resolution counts it).
  state.counters.rowsReplayed += countStoredRows(state, msg.rows, 'recovery', out);
}

/** Counts stored votes whose voter's bit is clear (setting it); returns how many it counted. */
function countStoredRows(
  state: ShardState,
  rows: readonly { readonly voterNumber: number; readonly candidateIndex: number }[],
  source: TallySource,
  out: ShardEffect[],
): number {
  let deltas: number[] | null = null;
  let counted = 0;
  for (const row of rows) {
    assertOwnVoter(state, row.voterNumber);
    assert(Number.isInteger(row.candidateIndex) && row.candidateIndex >= 0 && row.candidateIndex < state.candidateCount, 'stored candidateIndex out of range');
    if (!state.bitmap.set(Math.floor(row.voterNumber / state.shardCount))) continue;
    state.committedTallies[row.candidateIndex]!++;
    (deltas ??= new Array<number>(state.candidateCount).fill(0))[row.candidateIndex]!++;
    counted++;
  }
  if (deltas !== null) out.push({ kind: 'TalliesCommitted', key: state.key, deltas, source });
  return counted;
}

// ---------------------------------------------------------------------------------------------
// Helpers

/** Removes and returns the pending vote this row stands for; null for stale resolutions. */
function takeMatchingPending(state: ShardState, row: JournalRow): PendingVote | null {
  assert(row.electionId === state.key.electionId && row.shard === state.key.shard, 'resolution for a row of another shard');
  const pending = state.pending.get(row.voterNumber);
  if (pending === undefined || pending.row.voteId !== row.voteId) {
    state.counters.staleResolutions++;
    return null;
  }
  state.pending.delete(row.voterNumber);
  if (pending.queued) state.queuedCount--;
  const tally = --state.pendingTallies[row.candidateIndex]!;
  assert(tally >= 0, 'pending tally went negative');
  if (pending.retries !== null) state.retryWaiterCount -= pending.retries.length;
  assert(state.retryWaiterCount >= 0, 'retryWaiterCount went negative');
  return pending;
}

function addLookupWaiter(state: ShardState, voterNumber: number, waiter: RetryWaiter, out: ShardEffect[]): void {
  let waiters = state.lookups.get(voterNumber);
  if (waiters === undefined) {
    waiters = [];
    state.lookups.set(voterNumber, waiters);
    state.counters.lookups++;
    out.push({ kind: 'LookupStoredVote', key: state.key, voterNumber });
  }
  waiters.push(waiter);
  state.lookupWaiterCount++;
}

function takeLookupWaiters(state: ShardState, voterNumber: number): RetryWaiter[] | null {
  const waiters = state.lookups.get(voterNumber);
  if (waiters === undefined) {
    state.counters.staleResolutions++;
    return null;
  }
  state.lookups.delete(voterNumber);
  state.lookupWaiterCount -= waiters.length;
  assert(state.lookupWaiterCount >= 0, 'lookupWaiterCount went negative');
  return waiters;
}

function replyFromStored(
  state: ShardState,
  waiter: RetryWaiter,
  stored: { readonly candidateIndex: number; readonly voteId: string; readonly acceptedAtMs: number },
  out: ShardEffect[],
): void {
  if (waiter.candidateIndex === stored.candidateIndex) {
    state.counters.accepted++;
    state.counters.acceptedReplayed++;
    out.push({
      kind: 'Reply',
      requestId: waiter.requestId,
      outcome: { kind: 'accepted', voteId: stored.voteId, acceptedAtMs: stored.acceptedAtMs, replayed: true },
    });
  } else {
    state.counters.alreadyVoted++;
    out.push({
      kind: 'Reply',
      requestId: waiter.requestId,
      outcome: { kind: 'already_voted', voteId: stored.voteId, acceptedAtMs: stored.acceptedAtMs },
    });
  }
}

function replyOverloaded(state: ShardState, requestId: number, out: ShardEffect[]): void {
  state.counters.overloaded++;
  out.push({ kind: 'Reply', requestId, outcome: state.overloadedOutcome });
}

function replyUnavailable(state: ShardState, requestId: number, reason: UnavailableReason, out: ShardEffect[]): void {
  state.counters.unavailable++;
  out.push({ kind: 'Reply', requestId, outcome: { kind: 'unavailable', reason, retryAfterMs: state.config.retryAfterMs } });
}

function assertOwnVoter(state: ShardState, voterNumber: number): void {
  assert(Number.isSafeInteger(voterNumber) && voterNumber >= 0, 'voterNumber must be a non-negative integer');
  assert(voterNumber % state.shardCount === state.key.shard, 'voter routed to the wrong shard');
}

/**
 * Checks the state's internal invariants; O(pending + candidates). Used by tests and the
 * simulation after every step, not on the hot path.
 */
export function checkShardInvariants(state: ShardState): void {
  let pendingSum = 0;
  let queued = 0;
  const pendingByCandidate = new Array<number>(state.candidateCount).fill(0);
  let retries = 0;
  for (const [voterNumber, pending] of state.pending) {
    assert(state.bitmap.has(Math.floor(voterNumber / state.shardCount)), 'pending voter without its bit');
    assert(pending.row.voterNumber === voterNumber, 'pending entry keyed by the wrong voter');
    assert(!state.lookups.has(voterNumber), 'voter both pending and looked up');
    pendingByCandidate[pending.row.candidateIndex]!++;
    pendingSum++;
    retries += pending.retries?.length ?? 0;
    if (pending.inDoubt || pending.queued) assert(pending.originalRequestId === -1 && pending.retries === null, 'in-doubt or queued vote still has waiters');
    if (pending.queued) queued++;
  }
  assert(queued === state.queuedCount, 'queuedCount drifted');
  let committedSum = 0;
  for (let c = 0; c < state.candidateCount; c++) {
    assert(state.pendingTallies[c] === pendingByCandidate[c], 'pendingTallies disagree with pending votes');
    assert(state.committedTallies[c]! >= 0, 'negative committed tally');
    committedSum += state.committedTallies[c]!;
  }
  assert(retries === state.retryWaiterCount, 'retryWaiterCount drifted');
  let lookupWaiters = 0;
  for (const waiters of state.lookups.values()) lookupWaiters += waiters.length;
  assert(lookupWaiters === state.lookupWaiterCount, 'lookupWaiterCount drifted');
  // Every set bit is a pending vote, a counted vote, or a conflict (stored elsewhere, uncounted).
  assert(
    state.bitmap.count() === pendingSum + committedSum + state.uncountedBits,
    `bit count ${state.bitmap.count()} != pending ${pendingSum} + committed ${committedSum} + uncounted ${state.uncountedBits}`,
  );
}

export function assert(condition: boolean, message: string): asserts condition {
  if (!condition) throw new Error(`invariant violated: ${message}`);
}

function assertNever(value: never): never {
  throw new Error(`invariant violated: unexpected message ${JSON.stringify(value)}`);
}
