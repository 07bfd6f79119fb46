// In-memory implementations of the persistence ports, for fast tests and the simulated world
// (cluster/testing/). `MemoryVoteStore` is the synchronous "database": the simulated world
// calls it when its scheduler lets a commit land; the async adapters below wrap it for the node
// shell. The same behaviour is pinned for the Postgres adapters by journalContract.ts.

import { assert } from './shard.ts';
import type {
  BatchIdSource,
  HeldShard,
  Journal,
  JournalBatch,
  JournalCommitResult,
  JournalConflict,
  JournalRow,
  QueuedBatch,
  ShardKey,
  ShardSnapshot,
  SnapshotStore,
  SpilledBatch,
  SpilledStoreResult,
  SpillQueue,
  SpillQueueDepth,
  StoredVote,
  StoredVoteReader,
  UndecodableMessage,
} from './ports.ts';
import { shardKeyString } from './ports.ts';

/** A journal row as stored: with the batch that stored it. */
export interface StoredRow extends JournalRow {
  readonly batchId: number;
}

function voterKey(electionId: string, voterNumber: number): string {
  return `${electionId}\u0000${voterNumber}`;
}

export class MemoryVoteStore {
  /** The lease table: shard → epoch of its current owner. */
  private readonly leases = new Map<string, number>();
  /** Every row ever stored, in commit order (append-only, like the table's heap). */
  readonly rowsLog: StoredRow[] = [];
  /** The primary key (electionId, voterNumber). */
  private readonly rowsByVoter = new Map<string, StoredRow>();
  /** vote_batches: what became of each batch id (migration 008). */
  private readonly batchOutcomes = new Map<number, 'committed' | 'drained' | 'abandoned'>();
  /** Drained batches: the shards whose part is stored (spill_drained_shards), and how many it has. */
  private readonly drainedParts = new Map<number, Set<string>>();
  private readonly drainShardsTotal = new Map<number, number>();
  private readonly snapshots = new Map<string, ShardSnapshot>();
  /** The batch-id sequence; reservations take blocks from it. */
  private sequenceLast = 0;

  setLeaseEpoch(key: ShardKey, epoch: number): void {
    assert(Number.isInteger(epoch) && epoch >= 0, 'epoch must be a non-negative integer');
    this.leases.set(shardKeyString(key), epoch);
  }

  leaseEpoch(key: ShardKey): number | undefined {
    return this.leases.get(shardKeyString(key));
  }

  /** One transaction: fence check for every row, then insert with ON CONFLICT DO NOTHING. */
  commitBatch(batch: JournalBatch): JournalCommitResult {
    assert(Number.isSafeInteger(batch.batchId) && batch.batchId > 0, 'batch id must be a positive integer');
    // Marked abandoned by wasCommitted: the late commit fails on the batch id, like Postgres's key.
    if (this.batchOutcomes.get(batch.batchId) === 'abandoned') return { kind: 'failed', message: `batch ${batch.batchId} was abandoned` };
    assert(!this.batchOutcomes.has(batch.batchId), `batch id ${batch.batchId} committed twice`);
    const staleShards = new Map<string, ShardKey>();
    for (const row of batch.rows) {
      const keyString = shardKeyString(row);
      // No lease means no owner, so no writer may write.
      if (this.leases.get(keyString) !== row.epoch && !staleShards.has(keyString)) {
        staleShards.set(keyString, { electionId: row.electionId, shard: row.shard });
      }
    }
    if (staleShards.size > 0) return { kind: 'fenced', staleShards: [...staleShards.values()] };
    const conflicts: JournalConflict[] = [];
    for (const row of batch.rows) {
      const key = voterKey(row.electionId, row.voterNumber);
      if (this.rowsByVoter.has(key)) {
        conflicts.push({ electionId: row.electionId, voterNumber: row.voterNumber });
        continue;
      }
      const stored: StoredRow = {
        electionId: row.electionId,
        shard: row.shard,
        epoch: row.epoch,
        voterNumber: row.voterNumber,
        candidateIndex: row.candidateIndex,
        voteId: row.voteId,
        acceptedAtMs: row.acceptedAtMs,
        batchId: batch.batchId,
      };
      this.rowsByVoter.set(key, stored);
      this.rowsLog.push(stored);
    }
    this.batchOutcomes.set(batch.batchId, 'committed');
    return { kind: 'committed', conflicts };
  }

  /** True when stored (committed or drained); otherwise marks the id abandoned, for good. */
  wasCommitted(batchId: number): boolean {
    const outcome = this.batchOutcomes.get(batchId);
    if (outcome === undefined) {
      this.batchOutcomes.set(batchId, 'abandoned');
      return false;
    }
    // Claimed by the drainer with parts left for other owners: in doubt until they are stored.
    if (outcome === 'drained' && (this.drainedParts.get(batchId)?.size ?? 0) < (this.drainShardsTotal.get(batchId) ?? 0)) {
      throw new Error(`batch ${batchId}: drained in part`);
    }
    return outcome !== 'abandoned';
  }

  /**
   * The drainer's write, as Postgres (persistence/voteJournal.ts): claim the id, then store each
   * part (a shard's rows) that `held` names at the shard's current lease epoch, once.
   */
  storeSpilled(batch: SpilledBatch, held: readonly HeldShard[]): SpilledStoreResult {
    const outcome = this.batchOutcomes.get(batch.batchId);
    if (outcome === 'abandoned') return { kind: 'abandoned' };
    if (outcome === 'committed') return { kind: 'already_stored' };
    const keys = new Map<string, ShardKey>();
    for (const row of batch.rows) if (!keys.has(shardKeyString(row))) keys.set(shardKeyString(row), { electionId: row.electionId, shard: row.shard });
    let parts = this.drainedParts.get(batch.batchId);
    if (outcome === 'drained' && parts !== undefined && parts.size === keys.size) return { kind: 'already_stored' };
    this.batchOutcomes.set(batch.batchId, 'drained');
    this.drainShardsTotal.set(batch.batchId, keys.size);
    if (parts === undefined) this.drainedParts.set(batch.batchId, (parts = new Set()));
    const heldEpochs = new Map(held.map((h) => [shardKeyString(h), h.epoch]));
    const storing = new Set<string>();
    const fencedShards: ShardKey[] = [];
    for (const [keyString, key] of keys) {
      const heldEpoch = heldEpochs.get(keyString);
      if (heldEpoch === undefined || parts.has(keyString)) continue;
      // The epoch names its holder: equal epochs, same holder.
      if (this.leases.get(keyString) === heldEpoch) storing.add(keyString);
      else fencedShards.push(key);
    }
    const conflicts: JournalConflict[] = [];
    let storedRows = 0;
    for (const row of batch.rows) {
      if (!storing.has(shardKeyString(row))) continue;
      const key = voterKey(row.electionId, row.voterNumber);
      const existing = this.rowsByVoter.get(key);
      if (existing !== undefined) {
        if (existing.voteId !== row.voteId) conflicts.push({ electionId: row.electionId, voterNumber: row.voterNumber });
        continue;
      }
      const stored: StoredRow = { ...row, batchId: batch.batchId };
      this.rowsByVoter.set(key, stored);
      this.rowsLog.push(stored);
      storedRows++;
    }
    for (const keyString of storing) parts.add(keyString);
    return {
      kind: 'stored', storedRows, conflicts, storedShards: [...storing].map((k) => keys.get(k)!), fencedShards, shardsLeft: keys.size - parts.size,
    };
  }

  readStoredVote(electionId: string, voterNumber: number): StoredVote | null {
    const row = this.rowsByVoter.get(voterKey(electionId, voterNumber));
    if (row === undefined) return null;
    return {
      electionId: row.electionId,
      voterNumber: row.voterNumber,
      candidateIndex: row.candidateIndex,
      voteId: row.voteId,
      acceptedAtMs: row.acceptedAtMs,
    };
  }

  /**
   * As Postgres (persistence/snapshots.ts): fenced on the shard's lease like vote rows — a stale
   * owner's snapshot could hide the new owner's votes from recovery — and the stored snapshot is
   * the highest by (epoch, watermark), so a slow older write never wins.
   */
  writeSnapshot(snapshot: ShardSnapshot): void {
    const keyString = shardKeyString(snapshot);
    const leaseEpoch = this.leases.get(keyString);
    if (leaseEpoch !== snapshot.epoch) {
      throw new Error(`snapshot of ${keyString} at epoch ${snapshot.epoch} fenced (lease epoch ${leaseEpoch ?? 'none'})`);
    }
    const existing = this.snapshots.get(keyString);
    if (existing !== undefined && (existing.epoch > snapshot.epoch || (existing.epoch === snapshot.epoch && existing.watermarkBatchId > snapshot.watermarkBatchId))) return;
    this.snapshots.set(keyString, copySnapshot(snapshot));
  }

  readLatestSnapshot(key: ShardKey): ShardSnapshot | null {
    const snapshot = this.snapshots.get(shardKeyString(key));
    return snapshot === undefined ? null : copySnapshot(snapshot);
  }

  votesAfter(key: ShardKey, afterBatchId: number): { voterNumber: number; candidateIndex: number }[] {
    const rows: { voterNumber: number; candidateIndex: number }[] = [];
    for (const row of this.rowsLog) {
      if (row.batchId > afterBatchId && row.shard === key.shard && row.electionId === key.electionId) {
        rows.push({ voterNumber: row.voterNumber, candidateIndex: row.candidateIndex });
      }
    }
    return rows;
  }

  /** The last id of the blocks reserved so far (0: none). */
  reservedBatchIdCeiling(): number {
    return this.sequenceLast;
  }

  /** Reserves `size` ids; returns the first. Later reservations are always larger. */
  reserveBatchIds(size: number): number {
    assert(Number.isInteger(size) && size >= 1, 'reservation size must be >= 1');
    const first = this.sequenceLast + 1;
    this.sequenceLast += size;
    return first;
  }
}

function copySnapshot(snapshot: ShardSnapshot): ShardSnapshot {
  return { ...snapshot, tallies: snapshot.tallies.slice(), bitmap: snapshot.bitmap.slice() };
}

export class MemoryJournal implements Journal {
  constructor(private readonly store: MemoryVoteStore) {}

  async commit(batch: JournalBatch): Promise<JournalCommitResult> {
    return this.store.commitBatch(batch);
  }

  async wasCommitted(batchId: number): Promise<boolean> {
    return this.store.wasCommitted(batchId);
  }

  async storeSpilled(batch: SpilledBatch, held: readonly HeldShard[]): Promise<SpilledStoreResult> {
    return this.store.storeSpilled(batch, held);
  }
}

export class MemoryStoredVoteReader implements StoredVoteReader {
  constructor(private readonly store: MemoryVoteStore) {}

  async readStoredVote(electionId: string, voterNumber: number): Promise<StoredVote | null> {
    return this.store.readStoredVote(electionId, voterNumber);
  }
}

export class MemorySnapshotStore implements SnapshotStore {
  constructor(private readonly store: MemoryVoteStore) {}

  async writeSnapshot(snapshot: ShardSnapshot): Promise<void> {
    this.store.writeSnapshot(snapshot);
  }

  async readLatestSnapshot(key: ShardKey): Promise<ShardSnapshot | null> {
    return this.store.readLatestSnapshot(key);
  }

  async readVotesAfter(
    key: ShardKey,
    afterBatchId: number,
    onRows: (rows: readonly { voterNumber: number; candidateIndex: number }[]) => void,
  ): Promise<void> {
    const rows = this.store.votesAfter(key, afterBatchId);
    // Chunked like a cursor would be, so callers cannot assume a single callback.
    const chunkRowsMax = 1000;
    for (let start = 0; start < rows.length; start += chunkRowsMax) onRows(rows.slice(start, start + chunkRowsMax));
  }
}

/**
 * Block reservation: ids come from blocks of `blockSize` reserved from the store's sequence, so
 * this source hands out increasing ids, and a source created later (another process, a restart)
 * starts above every id reserved before. An id is handed out, and `lastAssigned` moves, at the
 * moment `next()` is called.
 */
export class MemoryBatchIdSource implements BatchIdSource {
  private blockNext = 0;
  private blockEnd = 0;
  private last = 0;

  constructor(
    private readonly store: MemoryVoteStore,
    private readonly blockSize = 1000,
  ) {
    assert(Number.isInteger(blockSize) && blockSize >= 1, 'blockSize must be >= 1');
  }

  async next(): Promise<number> {
    return this.nextSync();
  }

  nextSync(): number {
    if (this.blockNext >= this.blockEnd) {
      this.blockNext = this.store.reserveBatchIds(this.blockSize);
      this.blockEnd = this.blockNext + this.blockSize;
    }
    const id = this.blockNext++;
    assert(id > this.last, 'batch ids must increase');
    this.last = id;
    return id;
  }

  lastAssigned(): number {
    return this.last;
  }

  async reservedCeiling(): Promise<number> {
    return this.store.reservedBatchIdCeiling();
  }
}

export interface MemoryAdapters {
  readonly store: MemoryVoteStore;
  readonly journal: MemoryJournal;
  readonly snapshots: MemorySnapshotStore;
  readonly storedVotes: MemoryStoredVoteReader;
  readonly batchIds: MemoryBatchIdSource;
}

/** A fresh in-memory "database" with its adapters. Pass `store` to share one between "processes". */
export function createMemoryAdapters(options: { store?: MemoryVoteStore; batchIdBlockSize?: number } = {}): MemoryAdapters {
  const store = options.store ?? new MemoryVoteStore();
  return {
    store,
    journal: new MemoryJournal(store),
    snapshots: new MemorySnapshotStore(store),
    storedVotes: new MemoryStoredVoteReader(store),
    batchIds: new MemoryBatchIdSource(store, options.batchIdBlockSize ?? 1000),
  };
}

// ---------------------------------------------------------------------------------------------
// Spill queue

interface IndexedItem<T> {
  readonly id: number;
  readonly value: T;
  readonly spilledAtMs: number;
  leasedUntilMs: number;
  receiveCount: number;
}

/**
 * The bookkeeping of a single-process queue: visible items in arrival order, leases, receive
 * counts. The in-memory queue is just this; the file queue (persistence/fileSpillQueue.ts) is
 * this plus an fsynced log it rebuilds it from.
 */
export class SpillQueueIndex<T> {
  private readonly items = new Map<number, IndexedItem<T>>();

  constructor(private readonly now: () => number) {}

  add(id: number, value: T, spilledAtMs: number): void {
    assert(!this.items.has(id), `queue item ${id} added twice`);
    this.items.set(id, { id, value, spilledAtMs, leasedUntilMs: 0, receiveCount: 0 });
  }

  has(id: number): boolean {
    return this.items.has(id);
  }

  /** Leases up to `max` visible items, oldest first (a Map iterates in insertion order). */
  lease(max: number, leaseMs: number): { id: number; value: T; receiveCount: number }[] {
    assert(Number.isInteger(max) && max >= 1, 'receive max must be >= 1');
    const nowMs = this.now();
    const out: { id: number; value: T; receiveCount: number }[] = [];
    for (const item of this.items.values()) {
      if (out.length >= max) break;
      if (item.leasedUntilMs > nowMs) continue;
      item.leasedUntilMs = nowMs + leaseMs;
      item.receiveCount++;
      out.push({ id: item.id, value: item.value, receiveCount: item.receiveCount });
    }
    return out;
  }

  /** Ends the lease of an item now. */
  release(id: number): void {
    const item = this.items.get(id);
    if (item !== undefined) item.leasedUntilMs = 0;
  }

  remove(id: number): T | undefined {
    const item = this.items.get(id);
    this.items.delete(id);
    return item?.value;
  }

  depth(): SpillQueueDepth {
    let oldest: number | null = null;
    for (const item of this.items.values()) if (oldest === null || item.spilledAtMs < oldest) oldest = item.spilledAtMs;
    return { batches: this.items.size, oldestSpilledAtMs: oldest };
  }
}

export function spillReceipt(id: number, receiveCount: number): string {
  return `${id}:${receiveCount}`;
}

/** The item id of a receipt made by spillReceipt; NaN for anything else. */
export function spillReceiptId(receipt: string): number {
  const id = Number(receipt.slice(0, receipt.indexOf(':')));
  return Number.isSafeInteger(id) ? id : Number.NaN;
}

function copySpilledBatch(batch: SpilledBatch): SpilledBatch {
  return { batchId: batch.batchId, spilledAtMs: batch.spilledAtMs, rows: batch.rows.map((row) => ({ ...row })) };
}

/**
 * Durable only as long as the object lives: for the simulation and unit tests, and to pin the
 * contract (actors/spillQueueContract.ts) the durable queues pass too. `failSends` makes send
 * reject (a queue that is down).
 */
export class MemorySpillQueue implements SpillQueue {
  private readonly index: SpillQueueIndex<SpilledBatch>;
  private readonly deadLetters: { batch: SpilledBatch | null; reason: string }[] = [];
  private nextId = 1;
  failSends = false;
  sent = 0;

  constructor(now: () => number = Date.now) {
    this.index = new SpillQueueIndex(now);
  }

  async send(batch: SpilledBatch): Promise<void> {
    if (this.failSends) throw new Error('spill queue unavailable');
    this.index.add(this.nextId++, copySpilledBatch(batch), batch.spilledAtMs);
    this.sent++;
  }

  async receive(max: number, leaseMs: number): Promise<(QueuedBatch | UndecodableMessage)[]> {
    return this.index
      .lease(max, leaseMs)
      .map((item) => ({ batch: copySpilledBatch(item.value), receipt: spillReceipt(item.id, item.receiveCount), receiveCount: item.receiveCount }));
  }

  async ack(receipt: string): Promise<void> {
    this.index.remove(spillReceiptId(receipt));
  }

  async release(receipt: string): Promise<void> {
    this.index.release(spillReceiptId(receipt));
  }

  async deadLetter(receipt: string, reason: string): Promise<void> {
    const batch = this.index.remove(spillReceiptId(receipt));
    if (batch !== undefined) this.deadLetters.push({ batch, reason });
  }

  async depth(): Promise<SpillQueueDepth> {
    return this.index.depth();
  }

  async deadLetterCount(): Promise<number> {
    return this.deadLetters.length;
  }

  async close(): Promise<void> {}
}
