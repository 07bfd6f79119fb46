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
   * Resolves an unknown outcome: true when the batch committed. The journal records every
   * committed batch id in the same transaction as its rows, so this is exact. Rejects when the store cannot be reached; the batch then stays in doubt,
   * its voters' bits stay set and its votes uncounted, until a later check answers.
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
}
