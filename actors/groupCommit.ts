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
//
// No client-side commit timeout on purpose: a commit given up on while its transaction may still
// land would make `wasCommitted` answer false too early. The Journal adapter bounds its own time
// (statement timeout) and resolves `failed`.

import type { BatchAbandoned, BatchCommitted, BatchInDoubt } from './shard.ts';
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
  | { readonly kind: 'FlushRequested'; readonly nowMs: number };

export type ShardResolution = BatchCommitted | BatchAbandoned | BatchInDoubt;

export type CommitterEffect =
  /** Call BatchIdSource.next(), answer BatchIdAssigned / BatchIdFailed. One at a time. */
  | { readonly kind: 'RequestBatchId' }
  /** Call Journal.commit(batch), answer CommitFinished. */
  | { readonly kind: 'StartCommit'; readonly batch: JournalBatch }
  /** Call Journal.wasCommitted(batchId), answer CommitCheckFinished. */
  | { readonly kind: 'CheckCommit'; readonly batchId: number }
  | { readonly kind: 'DeliverToShard'; readonly key: ShardKey; readonly msg: ShardResolution }
  /** Deliver TimerFired at or after atMs, replacing any timer armed before. */
  | { readonly kind: 'ArmTimer'; readonly atMs: number };

interface BufferedRow {
  readonly row: JournalRow;
  readonly batchIdFloor: number;
  /** When the row first went into a batch; -1 before. The commit deadline counts from here. */
  firstAttemptAtMs: number;
}

interface OpenBatch {
  readonly batch: JournalBatch;
  readonly entries: BufferedRow[];
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
  readonly inDoubt: Map<number, InDoubtBatch>;
  inDoubtChecksInFlight: number;
  /** The timer the shell holds, if any. */
  timerAtMs: number | null;
  flushAll: boolean;
  readonly counters: CommitterCounters;
}

export function createCommitterState(config: CommitterConfig): CommitterState {
  for (const [name, value] of Object.entries(config)) {
    assert(typeof value === 'number' && Number.isFinite(value) && value >= 0, `committer config ${name} must be a non-negative number`);
  }
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
  return state.buffer.length === 0 && state.inFlight.size === 0 && state.inDoubt.size === 0 && !state.batchIdRequested;
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
    state.buffer.push({ row: appended.row, batchIdFloor: appended.batchIdFloor, firstAttemptAtMs: -1 });
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
  for (let i = 0; i < taken.length; i++) {
    const entry = taken[i]!;
    if (entry.firstAttemptAtMs < 0) entry.firstAttemptAtMs = nowMs;
    rows[i] = entry.row;
  }
  const batch: JournalBatch = { batchId, rows };
  state.inFlight.set(batchId, { batch, entries: taken, phase: 'committing' });
  state.counters.batchesStarted++;
  out.push({ kind: 'StartCommit', batch });
}

function commitFinished(state: CommitterState, batchId: number, result: JournalCommitResult, nowMs: number, out: CommitterEffect[]): void {
  const open = state.inFlight.get(batchId);
  assert(open !== undefined && open.phase === 'committing', `CommitFinished for batch ${batchId} that is not committing`);
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
    state.inFlight.delete(batchId);
    if (outcome === 'committed') deliverCommitted(state, open, [], out);
    else if (outcome === 'not_committed') retryOrAbandon(state, open.entries, nowMs, out);
    else {
      state.counters.checksFailed++;
      state.counters.batchesInDoubt++;
      state.inDoubt.set(batchId, { batch: open.batch, entries: open.entries, nextCheckAtMs: nowMs + state.config.checkRetryIntervalMs, checking: false });
      deliverPerShard(open.entries, (rows) => ({ kind: 'BatchInDoubt', rows }), out);
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
    assert(entry.firstAttemptAtMs >= 0, 'a row leaving a batch must have been attempted');
    (nowMs - entry.firstAttemptAtMs < state.config.commitDeadlineMs ? retry : abandon).push(entry);
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
  const byShard = new Map<string, { key: ShardKey; rows: JournalRow[] }>();
  for (const entry of entries) {
    const row = entry.row;
    const keyString = shardKeyString(row);
    let group = byShard.get(keyString);
    if (group === undefined) {
      group = { key: { electionId: row.electionId, shard: row.shard }, rows: [] };
      byShard.set(keyString, group);
    }
    group.rows.push(row);
  }
  for (const group of byShard.values()) out.push({ kind: 'DeliverToShard', key: group.key, msg: makeMsg(group.rows) });
}

/** Starts whatever is due, then makes sure a timer is armed for the next thing that will be. */
function pump(state: CommitterState, nowMs: number, out: CommitterEffect[]): void {
  const config = state.config;
  let wakeAtMs = Infinity;

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
    if (roomForCommit && startAtMs <= nowMs) {
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

function assertNever(value: never): never {
  throw new Error(`invariant violated: unexpected value ${JSON.stringify(value)}`);
}
