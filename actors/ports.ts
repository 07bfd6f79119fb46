// The ports between the vote domain (actors/) and the I/O that serves it (persistence/, cluster/).
// The domain never imports pg, timers or sockets: the node shell (actors/voteNode.ts) and the
// simulated world (cluster/testing/) both plug adapters into these ports, so the same node code
// runs in production and under fast-check's fault-injecting scheduler.

/** Where a vote lives: one actor per (election, shard). `shard = voterNumber % shardCount`. */
export interface ShardKey {
  readonly electionId: string;
  readonly shard: number;
}

export function shardKeyString(key: ShardKey): string {
  return `${key.electionId}/${key.shard}`;
}

/** One vote row as it is made durable. Mirrors the `votes` table (persistence/migrations). */
export interface JournalRow {
  readonly electionId: string;
  readonly shard: number;
  /** The shard's lease epoch when the vote was admitted; the journal refuses a stale one. */
  readonly epoch: number;
  readonly voterNumber: number;
  readonly candidateIndex: number;
  readonly voteId: string;
  readonly acceptedAtMs: number;
}

/** A group-commit batch: rows of many shards, one transaction. */
export interface JournalBatch {
  /** Unique and increasing across every process ever (see BatchIdSource); stored on each row. */
  readonly batchId: number;
  readonly rows: readonly JournalRow[];
}

/**
 * Outcomes are data, ordered by precedence:
 * - `fenced`: a row's epoch was stale; the transaction rolled back and stored nothing.
 * - `failed`: the outcome is UNKNOWN (the connection may have dropped after COMMIT was sent).
 *   The committer must ask `wasCommitted(batchId)` before it tells anyone anything.
 * - `committed`: every row is stored, except `conflicts`: voters whose row was already in the
 *   store (a redelivery); those rows were not written again and must not be counted again.
 */
export type JournalCommitResult =
  | { readonly kind: 'committed'; readonly conflicts: readonly JournalConflict[] }
  | { readonly kind: 'fenced'; readonly staleShards: readonly ShardKey[] }
  | { readonly kind: 'failed'; readonly message: string };

export interface JournalConflict {
  readonly electionId: string;
  readonly voterNumber: number;
}

/** The durable journal of votes (Postgres via COPY in production). */
export interface Journal {
  /**
   * Store every row of the batch in one transaction, checking in that same transaction that
   * each row's epoch equals its shard's lease epoch. Resolves, never rejects.
   */
  commit(batch: JournalBatch): Promise<JournalCommitResult>;
  /**
   * Resolves an unknown outcome: true when the batch is stored (committed, or drained from the
   * spill queue). The journal records every stored batch id in the same transaction as its rows,
   * so this is exact. When it answers false it has also marked the id abandoned, in the same
   * place: a commit of that id still running can no longer land, and the drainer skips a queued
   * copy of it. So false means "never stored", and the rows may be retried under a new id.
   * Rejects when the store cannot be reached; the batch then stays in doubt, its voters' bits
   * set and its votes uncounted, until a later check answers.
   */
  wasCommitted(batchId: number): Promise<boolean>;
}

/** The vote as it was stored, used to answer a retry (same voteId) or a duplicate (409). */
export interface StoredVote {
  readonly electionId: string;
  readonly voterNumber: number;
  readonly candidateIndex: number;
  readonly voteId: string;
  readonly acceptedAtMs: number;
}

export interface StoredVoteReader {
  /** Resolves null when no vote is stored for that voter; rejects on I/O failure. */
  readStoredVote(electionId: string, voterNumber: number): Promise<StoredVote | null>;
}

/** A point-in-time copy of a shard's committed state. */
export interface ShardSnapshot {
  readonly electionId: string;
  readonly shard: number;
  readonly epoch: number;
  /**
   * Every batch with batchId <= watermarkBatchId that touched this shard is reflected in the
   * snapshot. Recovery replays stored votes with batch_id > watermark, skipping voters whose bit
   * is already set (replay is idempotent, so a conservative watermark is safe, only slower).
   */
  readonly watermarkBatchId: number;
  /** Committed tally per candidate index. */
  readonly tallies: readonly number[];
  /** Number of voter slots the bitmap covers (slot = floor(voterNumber / shardCount)). */
  readonly voterSlots: number;
  /** Bitmap bytes, bit `slot % 8` of byte `floor(slot / 8)` set when that slot has voted. */
  readonly bitmap: Uint8Array;
  readonly takenAtMs: number;
}

export interface SnapshotStore {
  writeSnapshot(snapshot: ShardSnapshot): Promise<void>;
  readLatestSnapshot(key: ShardKey): Promise<ShardSnapshot | null>;
  /** Stored votes of the shard with batch_id > afterBatchId, in any order. */
  readVotesAfter(
    key: ShardKey,
    afterBatchId: number,
    onRows: (rows: readonly { voterNumber: number; candidateIndex: number }[]) => void,
  ): Promise<void>;
}

/**
 * Hands out batch ids. Ids are reserved from the database in blocks (a sequence with a large
 * increment), so an id handed out later, by any process, is larger than every id handed out
 * earlier by this one, and a reservation made later by any process is larger than all ids of
 * earlier reservations. `lastAssigned()` is readable synchronously so the shard can record,
 * when it admits a vote, a floor below which that vote's batch id cannot fall.
 */
export interface BatchIdSource {
  /** Next id; rejects only when a new block cannot be reserved. */
  next(): Promise<number>;
  lastAssigned(): number;
  /**
   * At least every id of the blocks reserved so far, by any process. A node that takes a shard
   * over reads it once it holds the lease: the shard's earlier owners used ids of those blocks
   * only, and ids of this node's blocks may lie below theirs, so its new rows get ids above this
   * (shard.ts RaiseBatchIdFloor) and no snapshot an earlier owner wrote covers them.
   */
  reservedCeiling(): Promise<number>;
}

/**
 * A group-commit batch that Postgres did not store within the commit deadline, handed to the
 * spill queue instead. Its votes are answered `accepted` once the queue confirmed it; a drainer
 * later stores it in Postgres with the same batch id, idempotently.
 */
export interface SpilledBatch {
  readonly batchId: number;
  readonly rows: readonly JournalRow[];
  readonly spilledAtMs: number;
}

/** A batch taken from the queue: hidden from other receivers until acked, dead-lettered or its lease ends. */
export interface QueuedBatch {
  readonly batch: SpilledBatch;
  /** The handle to ack or dead-letter this delivery with. */
  readonly receipt: string;
  /** Deliveries of this batch so far, this one included (a batch that keeps failing is poison). */
  readonly receiveCount: number;
}

/** A message the queue holds that cannot be decoded: it goes to the dead letters as it is. */
export interface UndecodableMessage {
  readonly receipt: string;
  readonly receiveCount: number;
  readonly error: string;
}

export interface SpillQueueDepth {
  /** Batches in the queue, received-but-not-acked ones included (approximate for SQS). */
  readonly batches: number;
  /** spilledAtMs of the oldest batch this process knows to be queued; null when none. */
  readonly oldestSpilledAtMs: number | null;
}

/**
 * The durable queue batches spill to when Postgres stalls: Amazon SQS in cluster mode, fsynced
 * files in the data dir in embedded mode (and an in-memory one for the simulation). All pass
 * one contract (actors/spillQueueContract.ts).
 */
export interface SpillQueue {
  /**
   * Resolves once the batch is durable in the queue. Rejects when that was not confirmed: the
   * batch may or may not be queued (the drainer skips a batch the committer marked abandoned).
   */
  send(batch: SpilledBatch): Promise<void>;
  /**
   * Up to `max` batches visible now, each hidden from other receivers for `leaseMs`; resolves an
   * empty list when none is visible. Does not wait for batches to arrive.
   */
  receive(max: number, leaseMs: number): Promise<(QueuedBatch | UndecodableMessage)[]>;
  /** The batch is stored in Postgres: remove it for good. */
  ack(receipt: string): Promise<void>;
  /** Could not store it now: make it visible again at once rather than when the lease ends. */
  release(receipt: string): Promise<void>;
  /** A batch that cannot be stored (poison): move it to the dead letters, with why. */
  deadLetter(receipt: string, reason: string): Promise<void>;
  depth(): Promise<SpillQueueDepth>;
  /** Messages in the dead letters (approximate for SQS). */
  deadLetterCount(): Promise<number>;
  close(): Promise<void>;
}

/**
 * A shard this node holds, with the lease epoch it holds it at: the drainer may store queued rows
 * of this shard, and only of such shards (see SpilledBatchStore).
 */
export interface HeldShard {
  readonly electionId: string;
  readonly shard: number;
  readonly epoch: number;
}

/**
 * What storing a batch from the spill queue did. A batch holds rows of several shards (one node's
 * group commit); after a failover they may belong to different owners, and each owner stores the
 * part of its own shards. The batch stays queued until every part is stored.
 * - `stored`: the parts of `storedShards` were stored now, except rows already stored (same
 *   voteId: a no-op) and `conflicts`, voters stored with ANOTHER vote (counted and logged).
 *   `fencedShards`: held here by this node's view, but the lease says otherwise (lost): not
 *   stored. `shardsLeft`: parts nobody has stored yet (others' shards, or fenced ones); while
 *   above 0 the batch must stay queued for their owners.
 * - `already_stored`: the batch id was committed, or every part was drained; nothing written.
 * - `abandoned`: wasCommitted marked the id abandoned (its votes were answered otherwise): skip it.
 * - `invalid`: the batch can never be stored (bad rows): a poison batch, for the dead letters.
 */
export type SpilledStoreResult =
  | {
      readonly kind: 'stored';
      readonly storedRows: number;
      readonly conflicts: readonly JournalConflict[];
      readonly storedShards: readonly ShardKey[];
      readonly fencedShards: readonly ShardKey[];
      readonly shardsLeft: number;
    }
  | { readonly kind: 'already_stored' }
  | { readonly kind: 'abandoned' }
  | { readonly kind: 'invalid'; readonly message: string };

/**
 * The drainer's write into the journal, fenced like a commit: a part (the rows of one shard) is
 * stored only by the holder of that shard's lease, at the epoch it holds it, checked in the same
 * transaction (the lease row FOR SHARE). The rows keep the epoch they were accepted under. So a
 * node that lost a shard cannot store its queued votes behind the new owner's back (whose bitmap
 * would not know them); the new owner stores them, before it serves the shard, and counts them.
 */
export interface SpilledBatchStore {
  /**
   * Idempotent per (batch id, shard). `held`: the shards this node holds (others are left).
   * Rejects when the store cannot be reached (the batch stays queued).
   */
  storeSpilled(batch: SpilledBatch, held: readonly HeldShard[]): Promise<SpilledStoreResult>;
}

export function isQueuedBatch(item: QueuedBatch | UndecodableMessage): item is QueuedBatch {
  return (item as QueuedBatch).batch !== undefined;
}
