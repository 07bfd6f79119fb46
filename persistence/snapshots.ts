// Shard snapshots in Postgres, and the stored votes recovery replays on top of them.
//
// writeSnapshot: one transaction — fence on the shard's lease (a snapshot is a durable write
// too: a stale owner's snapshot with a high watermark would hide the new owner's votes from
// recovery), COPY into a TEMP staging table, upsert the latest row only if it is not older.
// readVotesAfter: COPY … TO STDOUT parsed byte by byte and handed out in chunks, so replaying
// millions of votes never holds more than one chunk of row objects.
import { Readable, Writable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { from as copyFrom, to as copyTo } from 'pg-copy-streams';
import type { ShardKey, ShardSnapshot, SnapshotStore } from '../actors/ports.ts';
import { uuidPattern, withClient, type Pool } from './db.ts';

/** Rows per onRows call in readVotesAfter. */
export const replayChunkRowsDefault = 10_000;
/** 2^32 slots per shard (actors/bitmap.ts bitmapSlotsMax): a 512 MiB bitmap at most. */
export const snapshotVoterSlotsMax = 2 ** 32;
/** Candidate indexes are 0..63. */
export const snapshotTalliesMax = 64;
/** Hex characters per COPY data chunk when streaming a bitmap: 1 MiB. */
const bitmapHexChunkChars = 1 << 20;
/** Snapshots can be big (a 300M-voter shard is 4.7 MB): give them more time than a vote batch. */
export const snapshotStatementTimeoutMsDefault = 60_000;
/** Postgres ends a snapshot transaction whose client stays silent this long inside it. */
export const snapshotIdleInTransactionMs = 2_000;


export interface PgSnapshotStoreOptions {
  readonly pool: Pool;
  /** Only the lease owner may write a shard's snapshot. */
  readonly nodeId: string;
  readonly replayChunkRows?: number;
  readonly statementTimeoutMs?: number;
}

/** The snapshot's epoch is not the shard's current lease epoch (or this node does not own it). */
export class SnapshotFencedError extends Error {
  constructor(readonly key: ShardKey, readonly snapshotEpoch: number, readonly leaseEpoch: number | null) {
    super(`snapshot of ${key.electionId}/${key.shard} at epoch ${snapshotEpoch} fenced (lease epoch ${leaseEpoch ?? 'none'})`);
    this.name = 'SnapshotFencedError';
  }
}

// ON COMMIT DROP: snapshots are rare (one per shard every few seconds), so a staging table per
// write costs little and leaves nothing behind on the pooled connection, whatever happens.
const stagingDdl = `CREATE TEMP TABLE snapshot_staging (LIKE shard_snapshots) ON COMMIT DROP`;
const copyText =
  'COPY snapshot_staging (election_id, shard, epoch, watermark_batch_id, voter_slots, tallies, bitmap, taken_at) FROM STDIN';
// Never replace a newer snapshot by an older one (two writes of one shard finishing out of order).
const upsertText = `INSERT INTO shard_snapshots SELECT * FROM snapshot_staging
  ON CONFLICT (election_id, shard) DO UPDATE SET
    epoch = excluded.epoch, watermark_batch_id = excluded.watermark_batch_id, voter_slots = excluded.voter_slots,
    tallies = excluded.tallies, bitmap = excluded.bitmap, taken_at = excluded.taken_at
  WHERE (excluded.epoch, excluded.watermark_batch_id) >= (shard_snapshots.epoch, shard_snapshots.watermark_batch_id)`;
const fenceText = 'SELECT epoch, owner_node FROM shard_leases WHERE election_id = $1 AND shard = $2 FOR SHARE';

interface SnapshotRow {
  epoch: number;
  watermark_batch_id: number;
  voter_slots: number;
  tallies: number[];
  bitmap: Buffer;
  taken_at_ms: number;
}

export class PgSnapshotStore implements SnapshotStore {
  private readonly pool: Pool;
  private readonly nodeId: string;
  private readonly replayChunkRows: number;
  private readonly statementTimeoutMs: number;

  constructor(options: PgSnapshotStoreOptions) {
    this.pool = options.pool;
    this.nodeId = options.nodeId;
    this.replayChunkRows = options.replayChunkRows ?? replayChunkRowsDefault;
    this.statementTimeoutMs = options.statementTimeoutMs ?? snapshotStatementTimeoutMsDefault;
    if (!(Number.isInteger(this.replayChunkRows) && this.replayChunkRows >= 1)) throw new Error(`replayChunkRows must be a positive integer, got ${this.replayChunkRows}`);
    if (!(Number.isInteger(this.statementTimeoutMs) && this.statementTimeoutMs >= 1)) throw new Error(`statementTimeoutMs must be a positive integer, got ${this.statementTimeoutMs}`);
    if (this.nodeId.length === 0) throw new Error('nodeId must not be empty');
  }

  async writeSnapshot(snapshot: ShardSnapshot): Promise<void> {
    validateSnapshot(snapshot);
    await withClient(this.pool, async (client, discard) => {
      // The lease row is locked (FOR SHARE, which a takeover waits for) only after the bitmap
      // was copied, and Postgres ends the transaction if this client goes silent inside it: a
      // node paused mid-snapshot must not hold up the failover of its shard.
      await client.query(
        `BEGIN; SET LOCAL statement_timeout = ${this.statementTimeoutMs}; SET LOCAL idle_in_transaction_session_timeout = ${snapshotIdleInTransactionMs}`,
      );
      try {
        await client.query(stagingDdl);
        await pipeline(Readable.from(snapshotCopyChunks(snapshot)), client.query(copyFrom(copyText)));
        const lease = await client.query<{ epoch: number; owner_node: string }>(fenceText, [snapshot.electionId, snapshot.shard]);
        const row = lease.rows[0];
        if (row === undefined || row.epoch !== snapshot.epoch || row.owner_node !== this.nodeId) {
          throw new SnapshotFencedError({ electionId: snapshot.electionId, shard: snapshot.shard }, snapshot.epoch, row?.epoch ?? null);
        }
        await client.query(upsertText);
        await client.query('COMMIT');
      } catch (error) {
        await client.query('ROLLBACK').catch(discard);
        throw error;
      }
    });
  }

  async readLatestSnapshot(key: ShardKey): Promise<ShardSnapshot | null> {
    if (!isValidKey(key)) return null;
    const result = await this.pool.query<SnapshotRow>(
      `SELECT epoch, watermark_batch_id, voter_slots, array_to_json(tallies) AS tallies, bitmap,
              (extract(epoch FROM taken_at) * 1000)::bigint AS taken_at_ms
         FROM shard_snapshots WHERE election_id = $1 AND shard = $2`,
      [key.electionId, key.shard],
    );
    const row = result.rows[0];
    if (row === undefined) return null;
    return {
      electionId: key.electionId,
      shard: key.shard,
      epoch: row.epoch,
      watermarkBatchId: row.watermark_batch_id,
      tallies: row.tallies,
      voterSlots: row.voter_slots,
      bitmap: new Uint8Array(row.bitmap.buffer, row.bitmap.byteOffset, row.bitmap.byteLength),
      takenAtMs: row.taken_at_ms,
    };
  }

  async readVotesAfter(
    key: ShardKey,
    afterBatchId: number,
    onRows: (rows: readonly { voterNumber: number; candidateIndex: number }[]) => void,
  ): Promise<void> {
    if (!Number.isSafeInteger(afterBatchId)) throw new Error(`afterBatchId must be a safe integer, got ${afterBatchId}`);
    if (!isValidKey(key)) return;
    // COPY takes no parameters: the values are inlined, and were validated just above (a uuid and
    // two integers cannot carry SQL).
    await this.copyOut(
      `COPY (SELECT voter_number, candidate_index FROM votes
              WHERE election_id = '${key.electionId}' AND shard = ${key.shard} AND batch_id > ${afterBatchId})
        TO STDOUT`,
      voteRowParser(this.replayChunkRows, onRows),
    );
  }

  /**
   * Every shard of an election at once: stored votes of shard s with batch_id >
   * afterBatchIdByShard[s], in any order. For recovering a whole election from little or no
   * snapshot: votes of all shards share heap pages, so one readVotesAfter per shard would read
   * the table's pages once per shard, and this reads them once.
   */
  async readElectionVotesAfter(
    electionId: string,
    afterBatchIdByShard: readonly number[],
    onRows: (rows: readonly { shard: number; voterNumber: number; candidateIndex: number }[]) => void,
  ): Promise<void> {
    if (afterBatchIdByShard.length < 1 || afterBatchIdByShard.length > 1024) throw new Error(`afterBatchIdByShard must hold 1..1024 watermarks, got ${afterBatchIdByShard.length}`);
    for (const w of afterBatchIdByShard) if (!Number.isSafeInteger(w)) throw new Error(`watermarks must be safe integers, got ${w}`);
    if (!uuidPattern.test(electionId)) return;
    const lowest = Math.min(...afterBatchIdByShard);
    await this.copyOut(
      `COPY (SELECT shard, voter_number, candidate_index FROM votes
              WHERE election_id = '${electionId}' AND shard < ${afterBatchIdByShard.length} AND batch_id > ${lowest}
                AND batch_id > ('{${afterBatchIdByShard.join(',')}}'::bigint[])[shard + 1])
        TO STDOUT`,
      new IntegerRowParser(3, this.replayChunkRows, (v) => ({ shard: v[0]!, voterNumber: v[1]!, candidateIndex: v[2]! }), onRows),
    );
  }

  /** Streams a COPY … TO STDOUT through a parser, on a client of its own. */
  private async copyOut(text: string, parser: { push(chunk: Uint8Array): void; end(): void }): Promise<void> {
    await withClient(this.pool, async (client, discard) => {
      try {
        await pipeline(
          client.query(copyTo(text)),
          new Writable({
            write(chunk: Buffer, _encoding, callback) {
              try {
                parser.push(chunk);
                callback();
              } catch (error) {
                callback(error as Error);
              }
            },
            final(callback) {
              try {
                parser.end();
                callback();
              } catch (error) {
                callback(error as Error);
              }
            },
          }),
        );
      } catch (error) {
        // A COPY abandoned half-way leaves the connection mid-protocol: never reuse it.
        discard(error as Error);
        throw error;
      }
    });
  }
}

export function createPgSnapshotStore(options: PgSnapshotStoreOptions): PgSnapshotStore {
  return new PgSnapshotStore(options);
}

function isValidKey(key: ShardKey): boolean {
  return uuidPattern.test(key.electionId) && Number.isInteger(key.shard) && key.shard >= 0 && key.shard <= 1023;
}

function validateSnapshot(s: ShardSnapshot): void {
  if (!isValidKey(s)) throw new Error(`snapshot key is invalid: ${JSON.stringify({ electionId: s.electionId, shard: s.shard })}`);
  if (!(Number.isSafeInteger(s.epoch) && s.epoch >= 1)) throw new Error(`snapshot epoch must be a positive safe integer, got ${s.epoch}`);
  if (!Number.isSafeInteger(s.watermarkBatchId)) throw new Error(`watermarkBatchId must be a safe integer, got ${s.watermarkBatchId}`);
  if (!(Number.isInteger(s.voterSlots) && s.voterSlots >= 0 && s.voterSlots <= snapshotVoterSlotsMax)) throw new Error(`voterSlots must be 0..2^32, got ${s.voterSlots}`);
  if (s.bitmap.byteLength * 8 < s.voterSlots) throw new Error(`${s.bitmap.byteLength} bitmap bytes cannot cover ${s.voterSlots} slots`);
  if (s.tallies.length > snapshotTalliesMax) throw new Error(`${s.tallies.length} tallies, more than ${snapshotTalliesMax}`);
  for (const t of s.tallies) if (!(Number.isSafeInteger(t) && t >= 0)) throw new Error(`tallies must be non-negative safe integers, got ${t}`);
  if (!(Number.isSafeInteger(s.takenAtMs) && s.takenAtMs >= 0)) throw new Error(`takenAtMs must be a non-negative safe integer, got ${s.takenAtMs}`);
}

/** One COPY text row; the bitmap as bytea hex (`\\x…`: the backslash escaped for COPY), streamed. */
function* snapshotCopyChunks(s: ShardSnapshot): Generator<Buffer> {
  const taken = new Date(s.takenAtMs).toISOString();
  yield Buffer.from(`${s.electionId}\t${s.shard}\t${s.epoch}\t${s.watermarkBatchId}\t${s.voterSlots}\t{${s.tallies.join(',')}}\t\\\\x`);
  const bytes = Buffer.from(s.bitmap.buffer, s.bitmap.byteOffset, s.bitmap.byteLength);
  const bytesPerChunk = bitmapHexChunkChars / 2;
  for (let start = 0; start < bytes.length; start += bytesPerChunk) {
    yield Buffer.from(bytes.subarray(start, start + bytesPerChunk).toString('hex'), 'latin1');
  }
  yield Buffer.from(`\t${taken}\n`);
}

const tab = 0x09;
const newline = 0x0a;
const digit0 = 0x30;
const digit9 = 0x39;

/**
 * Parses COPY text of non-negative integer columns (`a \t b \n`) as it streams in, across
 * chunk boundaries, without making strings; turns each row into an object with `makeRow` and
 * hands rows out `chunkRows` at a time.
 */
export class IntegerRowParser<T> {
  private rows: T[] = [];
  private readonly values: number[];
  private column = 0;
  private digits = 0;

  constructor(
    private readonly columnCount: number,
    private readonly chunkRows: number,
    private readonly makeRow: (values: readonly number[]) => T,
    private readonly onRows: (rows: readonly T[]) => void,
  ) {
    if (!(Number.isInteger(columnCount) && columnCount >= 1 && columnCount <= 8)) throw new Error(`columnCount must be 1..8, got ${columnCount}`);
    if (!(Number.isInteger(chunkRows) && chunkRows >= 1)) throw new Error(`chunkRows must be a positive integer, got ${chunkRows}`);
    this.values = new Array<number>(columnCount).fill(0);
  }

  push(chunk: Uint8Array): void {
    const values = this.values;
    const last = this.columnCount - 1;
    for (let i = 0; i < chunk.length; i++) {
      const byte = chunk[i]!;
      if (byte >= digit0 && byte <= digit9) {
        values[this.column] = values[this.column]! * 10 + (byte - digit0);
        // 16 digits: every column here (voter numbers, shards, candidate indexes) stays far below 2^53.
        if (++this.digits > 16) throw new Error('number too long in COPY output');
      } else if (byte === tab && this.column < last && this.digits > 0) {
        this.column++;
        this.digits = 0;
      } else if (byte === newline && this.column === last && this.digits > 0) {
        this.rows.push(this.makeRow(values));
        values.fill(0);
        this.column = 0;
        this.digits = 0;
        if (this.rows.length >= this.chunkRows) this.flush();
      } else {
        throw new Error(`unexpected byte ${byte} in COPY output`);
      }
    }
  }

  end(): void {
    if (this.column !== 0 || this.digits !== 0) throw new Error('COPY output ended in the middle of a row');
    this.flush();
  }

  private flush(): void {
    if (this.rows.length === 0) return;
    const rows = this.rows;
    this.rows = [];
    this.onRows(rows);
  }
}

/** `voter_number \t candidate_index` rows, as readVotesAfter hands them out. */
export function voteRowParser(
  chunkRows: number,
  onRows: (rows: readonly { voterNumber: number; candidateIndex: number }[]) => void,
): IntegerRowParser<{ voterNumber: number; candidateIndex: number }> {
  return new IntegerRowParser(2, chunkRows, (v) => ({ voterNumber: v[0]!, candidateIndex: v[1]! }), onRows);
}
