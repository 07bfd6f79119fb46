// Batch ids from Postgres in blocks: nextval on vote_batch_seq (INCREMENT BY 1000) reserves
// [value, value + 999] for this process. Ids of one source increase; any reservation made later,
// by any process, is above every id of an earlier one (a sequence never goes back), so batch ids
// order batches across processes well enough for snapshot watermarks.
//
// The next block is reserved ahead, once half of the current one is used: each batch needs an id,
// a spilled one too, and while Postgres stalls only a block already reserved lets the committer go
// on spilling. Without it, an outage that began near the end of a block stopped the spill at once
// (a chaos test saw 9 votes queued, then 503s). Using a block reserved earlier orders nothing
// differently: the current block is in the same position, reserved before others' later ones.
import type { BatchIdSource } from '../actors/ports.ts';
import { withClientTimeout, type Pool } from './db.ts';

/** Must equal vote_batch_seq's INCREMENT BY (migration 002); checked when a source is created. */
export const batchIdBlockSize = 1000;
/** Callers waiting on one reservation could in theory drain a fresh block; retry this often at most. */
const reservationAttemptsMax = 1000;

export interface PgBatchIdSourceOptions {
  readonly pool: Pool;
  /** A reservation gives up after this (a frozen server never answers); the committer retries. */
  readonly reserveTimeoutMs?: number;
}

const reserveStatement = { name: 'livevote_batch_id_reserve', text: "SELECT nextval('vote_batch_seq') AS block_start" };
// A sequence's last_value is read outside transactions: it counts every nextval, committed or not.
const ceilingStatement = { name: 'livevote_batch_id_ceiling', text: 'SELECT last_value::text AS last_value, is_called FROM vote_batch_seq' };

export class PgBatchIdSource implements BatchIdSource {
  private readonly pool: Pool;
  private readonly reserveTimeoutMs: number;
  private nextId: number;
  /** Last id of the current block, inclusive. */
  private blockEnd: number;
  /** The reservation in flight: concurrent callers share it instead of reserving blocks each. */
  private reserving: Promise<void> | undefined;
  /** The block reserved ahead (its first id), used once the current one runs out. */
  private spareBlockStart: number | undefined;

  private constructor(pool: Pool, blockStart: number, reserveTimeoutMs: number) {
    this.pool = pool;
    this.reserveTimeoutMs = reserveTimeoutMs;
    this.nextId = blockStart;
    this.blockEnd = blockStart + batchIdBlockSize - 1;
  }

  /** Reserves the first block, so lastAssigned() is meaningful (blockStart - 1) before next(). */
  static async create(options: PgBatchIdSourceOptions): Promise<PgBatchIdSource> {
    const result = await options.pool.query<{ block_start: number; increment_by: number | null }>(
      `SELECT nextval('vote_batch_seq') AS block_start,
              (SELECT increment_by FROM pg_sequences
                WHERE sequencename = 'vote_batch_seq' AND schemaname = current_schema()) AS increment_by`,
    );
    const row = result.rows[0];
    if (row === undefined) throw new Error('nextval returned no row');
    if (row.increment_by !== batchIdBlockSize) {
      throw new Error(`vote_batch_seq increments by ${row.increment_by}, not ${batchIdBlockSize}: blocks would overlap`);
    }
    return new PgBatchIdSource(options.pool, row.block_start, options.reserveTimeoutMs ?? 2_000);
  }

  async next(): Promise<number> {
    for (let attempt = 0; attempt < reservationAttemptsMax; attempt++) {
      if (this.nextId <= this.blockEnd) {
        const id = this.nextId;
        this.nextId += 1;
        if (this.spareBlockStart === undefined && this.reserving === undefined && this.blockEnd - id < batchIdBlockSize / 2) {
          // Failure is not this caller's: the next call past the half tries again.
          void this.reservation().catch(() => undefined);
        }
        return id;
      }
      if (this.spareBlockStart !== undefined) {
        this.nextId = this.spareBlockStart;
        this.blockEnd = this.spareBlockStart + batchIdBlockSize - 1;
        this.spareBlockStart = undefined;
        continue;
      }
      await this.reservation();
    }
    throw new Error(`no batch id after ${reservationAttemptsMax} block reservations`);
  }

  lastAssigned(): number {
    return this.nextId - 1;
  }

  /** The last id of the block nextval handed out last, by any process (blocks start there). */
  async reservedCeiling(): Promise<number> {
    const result = await withClientTimeout(this.pool, this.reserveTimeoutMs, (client) =>
      client.query<{ last_value: string; is_called: boolean }>(ceilingStatement));
    const row = result.rows[0];
    if (row === undefined) throw new Error('vote_batch_seq returned no row');
    const lastValue = Number(row.last_value);
    return row.is_called ? lastValue + batchIdBlockSize - 1 : lastValue - 1;
  }

  /** True while a block is reserved ahead of the current one. */
  hasSpareBlock(): boolean {
    return this.spareBlockStart !== undefined;
  }

  private reservation(): Promise<void> {
    this.reserving ??= this.reserve().finally(() => {
      this.reserving = undefined;
    });
    return this.reserving;
  }

  /** Reserves the spare block (next() moves to it when the current one runs out). */
  private async reserve(): Promise<void> {
    const result = await withClientTimeout(this.pool, this.reserveTimeoutMs, (client) => client.query<{ block_start: number }>(reserveStatement));
    const blockStart = result.rows[0]?.block_start;
    if (blockStart === undefined) throw new Error('nextval returned no row');
    // A sequence only grows; anything else means it was reset and ids could repeat.
    if (!(blockStart > this.blockEnd)) throw new Error(`vote_batch_seq went back: block ${blockStart} after ${this.blockEnd}`);
    this.spareBlockStart = blockStart;
  }
}

export function createPgBatchIdSource(options: PgBatchIdSourceOptions): Promise<PgBatchIdSource> {
  return PgBatchIdSource.create(options);
}
