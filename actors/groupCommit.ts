// The node-level group committer, as a pure step function `stepCommitter(state, msg)`.
//
// Rows of every shard on the node go into one buffer; a batch leaves at once when no journal call
// is in flight (there is nothing to amortise against: waiting would only add latency), else when
// `batchRowsMax` rows are buffered or the oldest has waited `flushIntervalMs`. Under load that is
// classic group commit: each batch is what arrived while the previous one was committing. Every row is in exactly one place
// at a time: the buffer, one in-flight batch, or one in-doubt batch. That is what makes
// retrying safe: a row is only retried once its previous batch is known NOT to be stored.
//
//   buffer ──BatchIdAssigned──► committing ──committed──► DeliverToShard(BatchCommitted)
//     ▲                            │  │
//     │                 fenced ────┘  └── failed ──► checking ──committed──► BatchCommitted
//     │   (stale shards' rows: BatchAbandoned(fenced); other rows back to the buffer)
//     │                                   │  └── error ──► in doubt: BatchInDoubt now,
//     │                                   │                re-checked on later timer ticks
//     └───────── not committed, within commitDeadlineMs of the first attempt ◄──┘
//                (past the deadline: BatchAbandoned(commit_failed))
//
// Protocol (sender → reply):
//   RowsAppended        shell, from shards' AppendToJournal effects → maybe RequestBatchId/ArmTimer
//   TimerFired          shell timer armed by ArmTimer               → maybe RequestBatchId/CheckCommit
//   BatchIdAssigned     shell, BatchIdSource.next() resolved         → StartCommit
//   BatchIdFailed       shell, BatchIdSource.next() rejected         → retried on a later tick
//   CommitFinished      shell, Journal.commit() resolved             → DeliverToShard / CheckCommit
//   CommitCheckFinished shell, Journal.wasCommitted() settled        → DeliverToShard / retry
//   FlushRequested      shell, on close: flush without waiting for the interval
//   SpillFinished       shell, SpillQueue.send() settled            → DeliverToShard(BatchQueued) / CheckCommit
//
// The deadline (`commitDeadlineMs`, counted from when a row arrived): every row is answered by
// then. A row still in the buffer is abandoned (it was never sent anywhere, or its batch is known
// not stored); a row whose batch is in flight is answered in doubt (BatchInDoubt: 503, its bit
// stays set, a retry learns the truth), and the batch goes on resolving behind it.
//
// Spilling (`spillAfterMs`, when a spill queue is configured): a batch still committing that long
// after its oldest row arrived is also sent to the spill queue, and rows waiting that long in the
// buffer (no commit slot free: the journal is stalled) leave in a batch that goes only to the
// queue. When the queue confirms, the rows are answered accepted (BatchQueued); the drainer later
// stores the batch under the same id, idempotently, and a commit that lands after all is counted
// once (the batch id is the primary key of vote_batches).
//
//   committing ──spill due──► committing + spill sending ──confirmed──► BatchQueued (answered);
//                                          │                 the commit's outcome: committed → BatchCommitted,
//                                          │                 anything else → nothing (the drain stores it)
//                                          └──not confirmed──► resolved only through wasCommitted
//
// A commit that fails (outcome unknown) is spilled at once when a queue is configured, rather
// than checked: a database that failed it would not answer the check either, and the drain's
// claim on the batch id settles the outcome as well. Only an unconfirmed spill goes to the check.
//
// Safety rules, each asserted: a batch whose check (wasCommitted) has started is never spilled,
// and a batch with a spill in flight or confirmed is never checked, because wasCommitted marks
// an uncommitted batch abandoned, and the drainer skips an abandoned batch: checking a queued
// batch would lose votes answered accepted. A spill that was not confirmed may still sit in the
// queue, so its batch is resolved through wasCommitted, whose abandoned mark keeps the drainer off it.
//
// No client-side timeout here: the Journal adapter bounds each call itself and resolves `failed`
// (commit) or rejects (check); a commit given up on may still land, which wasCommitted's abandoned
// mark makes safe (the late commit then fails on the batch id).

import type { BatchAbandoned, BatchCommitted, BatchInDoubt, BatchQueued } from './shard.ts';
import { assert } from './shard.ts';
import type { JournalBatch, JournalCommitResult, JournalRow, ShardKey } from './ports.ts';
import { shardKeyString } from './ports.ts';

export interface CommitterConfig {
  /** Rows per batch; a full batch leaves at once. */
  readonly batchRowsMax: number;
  /** A partial batch leaves when its oldest row has waited this long. */
  readonly flushIntervalMs: number;
  /** Journal calls (commits and checks) in flight at once. */
  readonly commitsInFlightMax: number;
  /** Admission bound on buffered rows (checked by the shell before a vote reaches a shard). */
  readonly bufferRowsMax: number;
  /** A row not stored this long after its first attempt is abandoned (its voter may vote again). */
  readonly commitDeadlineMs: number;
  /** Delay before re-checking an in-doubt batch, and before retrying a failed batch-id request. */
  readonly checkRetryIntervalMs: number;
  /** In-doubt batches kept; at the bound, no new vote is admitted and no new batch starts. */
  readonly inDoubtBatchesMax: number;
  /**
   * Rows not stored this long after they arrived go to the spill queue; null: no spill queue.
   * Must be below commitDeadlineMs, leaving the queue time to confirm.
   */
  readonly spillAfterMs?: number | null;
}

/** A row as the shard handed it over (the AppendToJournal effect has exactly this shape). */
export interface AppendedRow {
  readonly row: JournalRow;
  readonly batchIdFloor: number;
}

export type CommitCheckOutcome = 'committed' | 'not_committed' | 'error';

export type CommitterMsg =
  | { readonly kind: 'RowsAppended'; readonly rows: readonly AppendedRow[]; readonly nowMs: number }
  | { readonly kind: 'TimerFired'; readonly nowMs: number }
  | { readonly kind: 'BatchIdAssigned'; readonly batchId: number; readonly nowMs: number }
  | { readonly kind: 'BatchIdFailed'; readonly message: string; readonly nowMs: number }
  | { readonly kind: 'CommitFinished'; readonly batchId: number; readonly result: JournalCommitResult; readonly nowMs: number }
  | { readonly kind: 'CommitCheckFinished'; readonly batchId: number; readonly outcome: CommitCheckOutcome; readonly nowMs: number }
  | { readonly kind: 'FlushRequested'; readonly nowMs: number }
  | { readonly kind: 'SpillFinished'; readonly batchId: number; readonly confirmed: boolean; readonly nowMs: number };

export type ShardResolution = BatchCommitted | BatchAbandoned | BatchInDoubt | BatchQueued;

export type CommitterEffect =
  /** Call BatchIdSource.next(), answer BatchIdAssigned / BatchIdFailed. One at a time. */
  | { readonly kind: 'RequestBatchId' }
  /** Call Journal.commit(batch), answer CommitFinished. */
  | { readonly kind: 'StartCommit'; readonly batch: JournalBatch }
  /** Call Journal.wasCommitted(batchId), answer CommitCheckFinished. */
  | { readonly kind: 'CheckCommit'; readonly batchId: number }
  | { readonly kind: 'DeliverToShard'; readonly key: ShardKey; readonly msg: ShardResolution }
  /** Deliver TimerFired at or after atMs, replacing any timer armed before. */
  | { readonly kind: 'ArmTimer'; readonly atMs: number }
  /** Call SpillQueue.send(batch), answer SpillFinished (confirmed only when it resolved). */
  | { readonly kind: 'SpillBatch'; readonly batch: JournalBatch };

interface BufferedRow {
  readonly row: JournalRow;
  readonly batchIdFloor: number;
  /** When the row reached the committer; the deadline and the spill count from here. */
  readonly arrivedAtMs: number;
  /** Whether the row has been in a batch (then it may only be retried once that batch is known not stored). */
  attempted: boolean;
}

type SpillState = 'none' | 'sending' | 'queued' | 'unconfirmed';

interface OpenBatch {
  readonly batch: JournalBatch;
  readonly entries: BufferedRow[];
  /** The earliest arrivedAtMs of its rows. */
  readonly oldestArrivedAtMs: number;
  /** Its rows were answered (queued, or in doubt at the deadline): nothing more to tell clients. */
  answered: boolean;
  spill: SpillState;
  /** A commit outcome that came while the spill was in flight, kept until the spill settles. */
  heldResult: JournalCommitResult | null;
}

interface InDoubtBatch extends OpenBatch {
  nextCheckAtMs: number;
  checking: boolean;
}

export interface CommitterCounters {
  rowsAppended: number;
  /** Rows appended while the buffer was at its bound (admitted earlier, or retried). */
  rowsAppendedOverBound: number;
  batchesStarted: number;
  batchesCommitted: number;
  rowsCommitted: number;
  rowsConflicted: number;
  batchesFenced: number;
  rowsAbandonedFenced: number;
  rowsAbandonedDeadline: number;
  commitsFailed: number;
  checksFailed: number;
  batchesInDoubt: number;
  rowsRetried: number;
  /** Batch ids that arrived when no buffered row could use them (all floors too high). */
  batchIdsUnused: number;
  batchIdFailures: number;
  batchesSpilled: number;
  rowsSpilled: number;
  rowsQueued: number;
  spillsUnconfirmed: number;
  /** Rows answered in doubt because the deadline came while their batch was unresolved. */
  rowsInDoubtAtDeadline: number;
  /** Queued batches whose own commit then failed or was fenced: only the drain stores them. */
  batchesLeftToDrain: number;
}

export interface CommitterState {
  readonly config: CommitterConfig;
  buffer: BufferedRow[];
  /** When the oldest buffered row entered the buffer (meaningless when it is empty). */
  bufferSinceMs: number;
  batchIdRequested: boolean;
  batchIdRetryAtMs: number;
  lastBatchId: number;
  /** Batches whose commit or first check is in flight. */
  readonly inFlight: Map<number, OpenBatch & { phase: 'committing' | 'checking' }>;
  /** Batches sent only to the spill queue (the journal was stalled), until the queue answers. */
  readonly spillOnly: Map<number, OpenBatch>;
  readonly inDoubt: Map<number, InDoubtBatch>;
  inDoubtChecksInFlight: number;
  /** The timer the shell holds, if any. */
  timerAtMs: number | null;
  flushAll: boolean;
  readonly counters: CommitterCounters;
}

export function createCommitterState(config: CommitterConfig): CommitterState {
  for (const [name, value] of Object.entries(config)) {
    if (name === 'spillAfterMs' && (value === null || value === undefined)) continue;
    assert(typeof value === 'number' && Number.isFinite(value) && value >= 0, `committer config ${name} must be a non-negative number`);
  }
  assert(config.spillAfterMs == null || config.spillAfterMs < config.commitDeadlineMs, 'spillAfterMs must be below commitDeadlineMs');
  assert(config.batchRowsMax >= 1 && config.commitsInFlightMax >= 1, 'batchRowsMax and commitsInFlightMax must be >= 1');
  assert(config.bufferRowsMax >= config.batchRowsMax, 'bufferRowsMax must hold at least one batch');
  assert(config.inDoubtBatchesMax >= 1, 'inDoubtBatchesMax must be >= 1');
  return {
    config,
    buffer: [],
    bufferSinceMs: 0,
    batchIdRequested: false,
    batchIdRetryAtMs: 0,
    lastBatchId: 0,
    inFlight: new Map(),
    spillOnly: new Map(),
    inDoubt: new Map(),
    inDoubtChecksInFlight: 0,
    timerAtMs: null,
    flushAll: false,
    counters: {
      rowsAppended: 0,
      rowsAppendedOverBound: 0,
      batchesStarted: 0,
      batchesCommitted: 0,
      rowsCommitted: 0,
      rowsConflicted: 0,
      batchesFenced: 0,
      rowsAbandonedFenced: 0,
      rowsAbandonedDeadline: 0,
      commitsFailed: 0,
      checksFailed: 0,
      batchesInDoubt: 0,
      rowsRetried: 0,
      batchIdsUnused: 0,
      batchIdFailures: 0,
      batchesSpilled: 0,
      rowsSpilled: 0,
      rowsQueued: 0,
      spillsUnconfirmed: 0,
      rowsInDoubtAtDeadline: 0,
      batchesLeftToDrain: 0,
    },
  };
}

/**
 * Whether `rowsInTransit` more rows (admitted by the shell, not yet appended) plus one fit.
 * The shell asks before a vote reaches a shard, because nact mailboxes are unbounded.
 */
export function canAdmit(state: CommitterState, rowsInTransit: number): boolean {
  return state.buffer.length + rowsInTransit < state.config.bufferRowsMax && state.inDoubt.size < state.config.inDoubtBatchesMax;
}

/** Nothing buffered, nothing in flight, nothing in doubt: safe to stop. */
export function isCommitterIdle(state: CommitterState): boolean {
  return state.buffer.length === 0 && state.inFlight.size === 0 && state.spillOnly.size === 0 && state.inDoubt.size === 0 && !state.batchIdRequested;
}

export function journalCallsInFlight(state: CommitterState): number {
  return state.inFlight.size + state.inDoubtChecksInFlight;
}

export function stepCommitter(state: CommitterState, msg: CommitterMsg): CommitterEffect[] {
  const out: CommitterEffect[] = [];
  const nowMs = msg.nowMs;
  switch (msg.kind) {
    case 'RowsAppended':
      rowsAppended(state, msg.rows, nowMs);
      break;
    case 'TimerFired':
      state.timerAtMs = null;
      break;
    case 'FlushRequested':
      state.flushAll = true;
      break;
    case 'BatchIdAssigned':
      batchIdAssigned(state, msg.batchId, nowMs, out);
      break;
    case 'BatchIdFailed':
      assert(state.batchIdRequested, 'BatchIdFailed without a request');
      state.batchIdRequested = false;
      state.counters.batchIdFailures++;
      state.batchIdRetryAtMs = nowMs + state.config.checkRetryIntervalMs;
      break;
    case 'CommitFinished':
      commitFinished(state, msg.batchId, msg.result, nowMs, out);
      break;
    case 'CommitCheckFinished':
      commitCheckFinished(state, msg.batchId, msg.outcome, nowMs, out);
      break;
    case 'SpillFinished':
      spillFinished(state, msg.batchId, msg.confirmed, nowMs, out);
      break;
    default:
      assertNever(msg);
  }
  pump(state, nowMs, out);
  return out;
}

function rowsAppended(state: CommitterState, rows: readonly AppendedRow[], nowMs: number): void {
  if (rows.length === 0) return;
  if (state.buffer.length === 0) state.bufferSinceMs = nowMs;
  for (const appended of rows) {
    if (state.buffer.length >= state.config.bufferRowsMax) state.counters.rowsAppendedOverBound++;
    state.buffer.push({ row: appended.row, batchIdFloor: appended.batchIdFloor, arrivedAtMs: nowMs, attempted: false });
  }
  state.counters.rowsAppended += rows.length;
}

/**
 * Takes up to batchRowsMax buffered rows whose floor is below the id. A row admitted after this
 * id was handed out has floor >= id; putting it in this batch would break the snapshot
 * watermark (shard.ts takeSnapshot), so it waits for the next id.
 */
function batchIdAssigned(state: CommitterState, batchId: number, nowMs: number, out: CommitterEffect[]): void {
  assert(state.batchIdRequested, 'BatchIdAssigned without a request');
  assert(Number.isSafeInteger(batchId) && batchId > state.lastBatchId, `batch ids must increase (${state.lastBatchId} -> ${batchId})`);
  state.batchIdRequested = false;
  state.lastBatchId = batchId;
  // Requested for a commit or for a spill-only batch; which one is decided by the room now.
  const commitRoom = journalCallsInFlight(state) < state.config.commitsInFlightMax && state.inDoubt.size < state.config.inDoubtBatchesMax;
  const toQueueOnly = !commitRoom;
  if (toQueueOnly && !(spillEnabled(state) && state.spillOnly.size < state.config.commitsInFlightMax)) {
    state.counters.batchIdsUnused++;
    return;
  }
  const taken: BufferedRow[] = [];
  const kept: BufferedRow[] = [];
  const buffer = state.buffer;
  let index = 0;
  for (; index < buffer.length && taken.length < state.config.batchRowsMax; index++) {
    const entry = buffer[index]!;
    if (entry.batchIdFloor < batchId) taken.push(entry);
    else kept.push(entry);
  }
  if (taken.length === 0) {
    state.counters.batchIdsUnused++;
    return;
  }
  state.buffer = kept.length === 0 ? buffer.slice(index) : kept.concat(buffer.slice(index));
  // bufferSinceMs is kept: rows left behind after a full batch are due at once, which is the
  // point (a backlog should drain at the journal's pace, not the interval's).
  const rows = new Array<JournalRow>(taken.length);
  let oldestArrivedAtMs = Infinity;
  for (let i = 0; i < taken.length; i++) {
    const entry = taken[i]!;
    entry.attempted = true;
    if (entry.arrivedAtMs < oldestArrivedAtMs) oldestArrivedAtMs = entry.arrivedAtMs;
    rows[i] = entry.row;
  }
  const batch: JournalBatch = { batchId, rows };
  const open: OpenBatch = { batch, entries: taken, oldestArrivedAtMs, answered: false, spill: 'none', heldResult: null };
  if (toQueueOnly) {
    // The journal has had no free slot for these rows for spillAfterMs: only the queue takes them.
    open.spill = 'sending';
    state.spillOnly.set(batchId, open);
    countSpill(state, open);
    out.push({ kind: 'SpillBatch', batch });
    return;
  }
  state.inFlight.set(batchId, { ...open, phase: 'committing' });
  state.counters.batchesStarted++;
  out.push({ kind: 'StartCommit', batch });
}

function countSpill(state: CommitterState, open: OpenBatch): void {
  state.counters.batchesSpilled++;
  state.counters.rowsSpilled += open.entries.length;
}

function spillEnabled(state: CommitterState): boolean {
  return state.config.spillAfterMs != null;
}

/** Buffered rows have waited spillAfterMs and the journal has no slot for them. */
function spillOnlyDue(state: CommitterState, nowMs: number): boolean {
  if (!spillEnabled(state) || state.buffer.length === 0) return false;
  const noCommitSlot = journalCallsInFlight(state) >= state.config.commitsInFlightMax || state.inDoubt.size >= state.config.inDoubtBatchesMax;
  return noCommitSlot && state.buffer[0]!.arrivedAtMs + state.config.spillAfterMs! <= nowMs && state.spillOnly.size < state.config.commitsInFlightMax;
}

function commitFinished(state: CommitterState, batchId: number, result: JournalCommitResult, nowMs: number, out: CommitterEffect[]): void {
  const open = state.inFlight.get(batchId);
  assert(open !== undefined && open.phase === 'committing', `CommitFinished for batch ${batchId} that is not committing`);
  if (result.kind !== 'committed') {
    if (open.spill === 'sending') {
      // Decided once the queue answers: confirmed makes this outcome moot.
      open.heldResult = result;
      return;
    }
    if (open.spill === 'queued') {
      // Answered already, and the drain stores it (fenced or not: it was accepted under its epoch).
      state.inFlight.delete(batchId);
      state.counters.batchesLeftToDrain++;
      return;
    }
    if (open.spill === 'unconfirmed') {
      // It may sit in the queue: only wasCommitted (which marks it abandoned) can settle it.
      state.counters.commitsFailed++;
      open.phase = 'checking';
      out.push({ kind: 'CheckCommit', batchId });
      return;
    }
  }
  switch (result.kind) {
    case 'committed':
      state.inFlight.delete(batchId);
      deliverCommitted(state, open, result.conflicts, out);
      break;
    case 'fenced': {
      state.inFlight.delete(batchId);
      state.counters.batchesFenced++;
      assert(result.staleShards.length > 0, 'a fenced commit must name its stale shards');
      const stale = new Set(result.staleShards.map(shardKeyString));
      const fenced: BufferedRow[] = [];
      const retry: BufferedRow[] = [];
      for (const entry of open.entries) (stale.has(shardKeyString(entry.row)) ? fenced : retry).push(entry);
      assert(fenced.length > 0, 'fenced shards must have rows in the batch');
      state.counters.rowsAbandonedFenced += fenced.length;
      deliverPerShard(fenced, (rows) => ({ kind: 'BatchAbandoned', rows, reason: 'fenced' }), out);
      // The transaction stored nothing: the other rows are retried (the deadline still applies).
      retryOrAbandon(state, retry, nowMs, out);
      break;
    }
    case 'failed':
      state.counters.commitsFailed++;
      if (spillEnabled(state) && open.spill === 'none') {
        // The outcome is unknown, and a database that failed the commit (crashed, failing over,
        // refusing connections) would not answer a check either: the batch goes to the queue now
        // rather than wait there for the deadline. Its drain settles the outcome as a check would:
        // it claims the batch id, and finds the commit's row if the commit did land.
        open.spill = 'sending';
        open.heldResult = result;
        countSpill(state, open);
        out.push({ kind: 'SpillBatch', batch: open.batch });
        break;
      }
      open.phase = 'checking';
      out.push({ kind: 'CheckCommit', batchId });
      break;
    default:
      assertNever(result);
  }
}

function commitCheckFinished(state: CommitterState, batchId: number, outcome: CommitCheckOutcome, nowMs: number, out: CommitterEffect[]): void {
  const open = state.inFlight.get(batchId);
  if (open !== undefined) {
    assert(open.phase === 'checking', `CommitCheckFinished for batch ${batchId} that is committing`);
    assert(open.spill === 'none' || open.spill === 'unconfirmed', `batch ${batchId} was checked while its spill was ${open.spill}`);
    state.inFlight.delete(batchId);
    if (outcome === 'committed') deliverCommitted(state, open, [], out);
    else if (outcome === 'not_committed') retryOrAbandon(state, open.entries, nowMs, out);
    else {
      state.counters.checksFailed++;
      state.counters.batchesInDoubt++;
      putInDoubt(state, open, nowMs, out);
    }
    return;
  }
  const doubt = state.inDoubt.get(batchId);
  assert(doubt !== undefined && doubt.checking, `CommitCheckFinished for batch ${batchId} that is not being checked`);
  doubt.checking = false;
  state.inDoubtChecksInFlight--;
  assert(state.inDoubtChecksInFlight >= 0, 'inDoubtChecksInFlight went negative');
  if (outcome === 'error') {
    state.counters.checksFailed++;
    doubt.nextCheckAtMs = nowMs + state.config.checkRetryIntervalMs;
    return;
  }
  state.inDoubt.delete(batchId);
  if (outcome === 'committed') deliverCommitted(state, doubt, [], out);
  else retryOrAbandon(state, doubt.entries, nowMs, out);
}

function putInDoubt(state: CommitterState, open: OpenBatch, nowMs: number, out: CommitterEffect[]): void {
  state.inDoubt.set(open.batch.batchId, { ...open, nextCheckAtMs: nowMs + state.config.checkRetryIntervalMs, checking: false });
  if (!open.answered) deliverPerShard(open.entries, (rows) => ({ kind: 'BatchInDoubt', rows }), out);
}

function spillFinished(state: CommitterState, batchId: number, confirmed: boolean, nowMs: number, out: CommitterEffect[]): void {
  if (!confirmed) state.counters.spillsUnconfirmed++;
  const spillOnly = state.spillOnly.get(batchId);
  if (spillOnly !== undefined) {
    assert(spillOnly.spill === 'sending', `spill-only batch ${batchId} was not sending`);
    state.spillOnly.delete(batchId);
    if (confirmed) {
      deliverQueued(state, spillOnly, out);
      return;
    }
    // It may sit in the queue after all: settled through wasCommitted, from the in-doubt set.
    spillOnly.spill = 'unconfirmed';
    state.counters.batchesInDoubt++;
    putInDoubt(state, spillOnly, nowMs - state.config.checkRetryIntervalMs, out);
    return;
  }
  const open = state.inFlight.get(batchId);
  // The commit landed first and the batch is done: the queue's copy drains as a no-op.
  if (open === undefined) return;
  assert(open.spill === 'sending', `spill of batch ${batchId} finished while ${open.spill}`);
  const held = open.heldResult;
  open.heldResult = null;
  if (confirmed) {
    open.spill = 'queued';
    deliverQueued(state, open, out);
    if (held !== null) {
      state.inFlight.delete(batchId);
      state.counters.batchesLeftToDrain++;
    }
    return;
  }
  open.spill = 'unconfirmed';
  if (held !== null) commitFinished(state, batchId, held, nowMs, out);
}

function deliverQueued(state: CommitterState, open: OpenBatch, out: CommitterEffect[]): void {
  state.counters.rowsQueued += open.entries.length;
  open.answered = true;
  deliverPerShard(open.entries, (rows) => ({ kind: 'BatchQueued', rows }), out);
}

/**
 * Known limitation: after a `failed` commit that a check finds committed, the conflicts of that
 * batch are unknown (wasCommitted says only yes/no), so every row is reported committed. A
 * conflict only happens when a shard missed a stored row, which fencing and recovery prevent.
 */
function deliverCommitted(state: CommitterState, open: OpenBatch, conflicts: readonly { electionId: string; voterNumber: number }[], out: CommitterEffect[]): void {
  state.counters.batchesCommitted++;
  state.counters.rowsCommitted += open.entries.length - conflicts.length;
  state.counters.rowsConflicted += conflicts.length;
  const batchId = open.batch.batchId;
  if (conflicts.length === 0) {
    deliverPerShard(open.entries, (rows) => ({ kind: 'BatchCommitted', batchId, rows, conflictVoterNumbers: [] }), out);
    return;
  }
  const conflictKeys = new Set(conflicts.map((c) => `${c.electionId}\u0000${c.voterNumber}`));
  deliverPerShard(
    open.entries,
    (rows) => ({
      kind: 'BatchCommitted',
      batchId,
      rows,
      conflictVoterNumbers: rows.filter((r) => conflictKeys.has(`${r.electionId}\u0000${r.voterNumber}`)).map((r) => r.voterNumber),
    }),
    out,
  );
}

function retryOrAbandon(state: CommitterState, entries: readonly BufferedRow[], nowMs: number, out: CommitterEffect[]): void {
  const retry: BufferedRow[] = [];
  const abandon: BufferedRow[] = [];
  for (const entry of entries) {
    assert(entry.attempted, 'a row leaving a batch must have been attempted');
    (nowMs - entry.arrivedAtMs < state.config.commitDeadlineMs ? retry : abandon).push(entry);
  }
  if (abandon.length > 0) {
    state.counters.rowsAbandonedDeadline += abandon.length;
    deliverPerShard(abandon, (rows) => ({ kind: 'BatchAbandoned', rows, reason: 'commit_failed' }), out);
  }
  if (retry.length > 0) {
    state.counters.rowsRetried += retry.length;
    // In front and due at once: they are the oldest votes, and their clients are still waiting.
    const wasEmpty = state.buffer.length === 0;
    state.buffer = retry.concat(state.buffer);
    const dueAtMs = nowMs - state.config.flushIntervalMs;
    state.bufferSinceMs = wasEmpty ? dueAtMs : Math.min(state.bufferSinceMs, dueAtMs);
  }
}

function deliverPerShard(entries: readonly BufferedRow[], makeMsg: (rows: JournalRow[]) => ShardResolution, out: CommitterEffect[]): void {
  // By election, then by shard number: no key string per row (a batch is one or a few elections).
  const byElection = new Map<string, ({ key: ShardKey; rows: JournalRow[] } | undefined)[]>();
  const groups: { key: ShardKey; rows: JournalRow[] }[] = [];
  let electionId: string | undefined;
  let byShard: ({ key: ShardKey; rows: JournalRow[] } | undefined)[] = [];
  for (const entry of entries) {
    const row = entry.row;
    if (row.electionId !== electionId) {
      electionId = row.electionId;
      const known = byElection.get(electionId);
      if (known === undefined) byElection.set(electionId, (byShard = []));
      else byShard = known;
    }
    let group = byShard[row.shard];
    if (group === undefined) {
      group = { key: { electionId: row.electionId, shard: row.shard }, rows: [] };
      byShard[row.shard] = group;
      groups.push(group);
    }
    group.rows.push(row);
  }
  for (const group of groups) out.push({ kind: 'DeliverToShard', key: group.key, msg: makeMsg(group.rows) });
}

/** Starts whatever is due, then makes sure a timer is armed for the next thing that will be. */
function pump(state: CommitterState, nowMs: number, out: CommitterEffect[]): void {
  const config = state.config;
  let wakeAtMs = Infinity;

  // The deadline of batches still unresolved: answered in doubt now, resolved later.
  for (const open of state.inFlight.values()) {
    if (spillEnabled(state) && open.phase === 'committing' && open.spill === 'none') {
      const spillAtMs = open.oldestArrivedAtMs + config.spillAfterMs!;
      if (spillAtMs <= nowMs) {
        open.spill = 'sending';
        countSpill(state, open);
        out.push({ kind: 'SpillBatch', batch: open.batch });
      } else {
        wakeAtMs = Math.min(wakeAtMs, spillAtMs);
      }
    }
    wakeAtMs = Math.min(wakeAtMs, answerAtDeadline(state, open, nowMs, out));
  }
  for (const open of state.spillOnly.values()) wakeAtMs = Math.min(wakeAtMs, answerAtDeadline(state, open, nowMs, out));
  // Buffered rows past the deadline are in no batch that could still be stored: abandoned.
  if (state.buffer.length > 0 && state.buffer[0]!.arrivedAtMs + config.commitDeadlineMs <= nowMs) {
    const expired = state.buffer.filter((entry) => entry.arrivedAtMs + config.commitDeadlineMs <= nowMs);
    state.buffer = state.buffer.filter((entry) => entry.arrivedAtMs + config.commitDeadlineMs > nowMs);
    state.counters.rowsAbandonedDeadline += expired.length;
    deliverPerShard(expired, (rows) => ({ kind: 'BatchAbandoned', rows, reason: 'commit_failed' }), out);
  }
  if (state.buffer.length > 0) {
    const oldestArrivedAtMs = state.buffer[0]!.arrivedAtMs;
    wakeAtMs = Math.min(wakeAtMs, oldestArrivedAtMs + config.commitDeadlineMs);
    if (spillEnabled(state)) {
      const spillAtMs = oldestArrivedAtMs + config.spillAfterMs!;
      // Already due: a spill-only batch starts below, or a finishing call pumps again.
      if (spillAtMs > nowMs) wakeAtMs = Math.min(wakeAtMs, spillAtMs);
      else if (state.batchIdRetryAtMs > nowMs) wakeAtMs = Math.min(wakeAtMs, state.batchIdRetryAtMs);
    }
  }

  for (const [batchId, doubt] of state.inDoubt) {
    if (doubt.checking) continue;
    if (doubt.nextCheckAtMs > nowMs) {
      wakeAtMs = Math.min(wakeAtMs, doubt.nextCheckAtMs);
      continue;
    }
    // Leave room for a batch id already requested, so its batch can always start.
    if (journalCallsInFlight(state) + (state.batchIdRequested ? 1 : 0) >= config.commitsInFlightMax) break;
    doubt.checking = true;
    state.inDoubtChecksInFlight++;
    out.push({ kind: 'CheckCommit', batchId });
  }

  if (state.buffer.length === 0) {
    state.flushAll = false;
  } else if (!state.batchIdRequested) {
    const journalIdle = journalCallsInFlight(state) === 0;
    const flushAtMs = state.flushAll || journalIdle || state.buffer.length >= config.batchRowsMax ? nowMs : state.bufferSinceMs + config.flushIntervalMs;
    const startAtMs = Math.max(flushAtMs, state.batchIdRetryAtMs);
    const roomForCommit = journalCallsInFlight(state) < config.commitsInFlightMax && state.inDoubt.size < config.inDoubtBatchesMax;
    if (spillOnlyDue(state, nowMs) && state.batchIdRetryAtMs <= nowMs) {
      state.batchIdRequested = true;
      out.push({ kind: 'RequestBatchId' });
    } else if (roomForCommit && startAtMs <= nowMs) {
      state.batchIdRequested = true;
      out.push({ kind: 'RequestBatchId' });
    } else if (roomForCommit) {
      wakeAtMs = Math.min(wakeAtMs, startAtMs);
    }
    // No room: a finishing journal call pumps again, no timer needed.
  }

  assert(journalCallsInFlight(state) <= config.commitsInFlightMax, 'more journal calls in flight than commitsInFlightMax');
  assert(state.inDoubt.size <= config.inDoubtBatchesMax + config.commitsInFlightMax, 'in-doubt set beyond its bound');
  if (wakeAtMs !== Infinity && (state.timerAtMs === null || wakeAtMs < state.timerAtMs)) {
    state.timerAtMs = wakeAtMs;
    out.push({ kind: 'ArmTimer', atMs: wakeAtMs });
  }
}

/** Answers an unresolved batch in doubt once its deadline passed; returns when to look again. */
function answerAtDeadline(state: CommitterState, open: OpenBatch, nowMs: number, out: CommitterEffect[]): number {
  if (open.answered) return Infinity;
  const deadlineMs = open.oldestArrivedAtMs + state.config.commitDeadlineMs;
  if (deadlineMs > nowMs) return deadlineMs;
  open.answered = true;
  state.counters.rowsInDoubtAtDeadline += open.entries.length;
  deliverPerShard(open.entries, (rows) => ({ kind: 'BatchInDoubt', rows }), out);
  return Infinity;
}

function assertNever(value: never): never {
  throw new Error(`invariant violated: unexpected value ${JSON.stringify(value)}`);
}
