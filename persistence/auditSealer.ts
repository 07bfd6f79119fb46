// The audit sealer: appends committed batches to the shards' hash chains, after their commits.
//
// A commit keeps, in its own vote_batches row and in the same statement as its votes, the rows
// digest of each (election, shard, epoch) part it stored (audit.ts auditPartsCte; migration 014).
// A seal takes the pending batches, and appends for each (election, shard, epoch) among them ONE
// v2 record covering all of its batches (audit.ts has the format), advances the chain head, and
// clears the batches' pending parts: all in one transaction, so a batch is sealed exactly once.
//
// Every node runs a sealer (start()); a seal first takes a transaction-scoped advisory lock and
// skips the round when another node's seal holds it, so seals never race for a chain head. A
// node killed before sealing leaves its batches pending, and the next seal of any node (or of
// its restart) appends them: a committed batch is in its chain within about one interval of the
// first sealer that runs. Batches are taken FOR UPDATE, so the drainer's append of a later part
// of a spilled batch waits for the seal and then starts a new pending list for it.
//
// Off the vote path: a failed seal is logged and counted, and the next interval tries again; no
// vote waits for a seal.
import { Counter, Gauge, type Registry } from 'prom-client';
import type { Logger } from '../infra/logger.ts';
import { auditGenesisHash, auditRecordHash } from './audit.ts';
import type { Pool, PoolClient } from './db.ts';
import { inTransaction } from './db.ts';

export const auditSealIntervalMsDefault = 1000;
/**
 * A seal gives up after this (client side; its connection is destroyed): a frozen Postgres must not
 * hold a pool connection, nor a node's stop, for longer. A seal given up on may still commit; if it
 * did not, its batches stay pending for the next.
 */
export const auditSealTimeoutMsDefault = 10_000;
/** Batches one seal transaction takes at most; a backlog is sealed in several, back to back. */
export const auditSealBatchesMaxDefault = 5000;
/** The advisory lock every seal takes (pg_try_advisory_xact_lock): one seal at a time, cluster-wide. */
const sealLockKey = 0x6c76_6175; // 'lvau'

export interface SealResult {
  /** Batches sealed (their pending parts cleared). */
  readonly batches: number;
  /** Records appended. */
  readonly records: number;
  /** Another seal held the lock: nothing was done. */
  readonly skipped: boolean;
  /** More pending batches than one seal takes were found: seal again. */
  readonly more: boolean;
}

/** One (election, shard, epoch) among the batches a seal took: what its record covers. */
interface ChainPartRow {
  election_id: string;
  shard: number;
  epoch: string;
  /** Its batches, ascending (bigint[] as text: '{1,2,3}', parsed here, not by pg-types). */
  batch_ids: string;
  row_count: string;
  /** auditSealedDigest of its batches' digests, in batch order (computed by the statement). */
  rows_digest: Buffer;
  /** Batches the seal took (the same on every row). */
  batches: number;
}

interface SealedRecord {
  readonly electionId: string;
  readonly shard: number;
  readonly seq: number;
  readonly batchIds: number[];
  readonly epoch: number;
  readonly rowCount: number;
  readonly rowsDigest: Buffer;
  readonly prevHash: Buffer;
  readonly hash: Buffer;
}

// Takes up to $1 pending batches (FOR UPDATE, in batch order), clears their pending parts, and
// answers their parts grouped by (election, shard, epoch) with each group's sealed digest. The
// grouping and the digest are done here, not in the process: a seal takes every batch committed
// since the last (~250 a second at 100 connections, ~8 parts each), and parsing their five arrays
// with pg-types cost the node's event loop 130-280 µs a batch, where the grouped answer is a row
// per shard. The pending CTE is read with the statement's snapshot, so it still holds the parts
// that the UPDATE beside it clears. The UPDATE finds its rows by primary key (ANY of an array):
// joined to the CTE instead, its plan could scan every batch ever recorded. ORDER BY batch_id, ord
// keeps a batch's parts in the order its commit and drain steps appended them (auditSealedDigest
// hashes in batch order).
const takePendingText = `
  WITH pending AS MATERIALIZED (
         SELECT batch_id, audit_election_ids, audit_shards, audit_epochs, audit_row_counts, audit_digests
           FROM vote_batches WHERE audit_shards IS NOT NULL
          ORDER BY batch_id LIMIT $1 FOR UPDATE),
       cleared AS (
         UPDATE vote_batches b
            SET audit_election_ids = NULL, audit_shards = NULL, audit_epochs = NULL, audit_row_counts = NULL, audit_digests = NULL
          WHERE b.batch_id = ANY (ARRAY(SELECT batch_id FROM pending))
         RETURNING 1),
       parts AS (
         SELECT p.batch_id, u.election_id, u.shard, u.epoch, u.row_count, u.digest, u.ord
           FROM pending p,
                unnest(p.audit_election_ids, p.audit_shards, p.audit_epochs, p.audit_row_counts, p.audit_digests)
                  WITH ORDINALITY AS u(election_id, shard, epoch, row_count, digest, ord))
  SELECT election_id::text AS election_id, shard, epoch,
         array_agg(batch_id ORDER BY batch_id, ord)::text AS batch_ids,
         sum(row_count) AS row_count,
         sha256(string_agg(digest, ''::bytea ORDER BY batch_id, ord)) AS rows_digest,
         (SELECT count(*) FROM cleared)::integer AS batches
    FROM parts
   GROUP BY election_id, shard, epoch
   ORDER BY election_id, shard, epoch`;

/** Seals what is pending now, up to `batchesMax` batches, in one transaction. */
export async function sealAuditChains(pool: Pool, batchesMax = auditSealBatchesMaxDefault, timeoutMs = auditSealTimeoutMsDefault): Promise<SealResult> {
  return inTransaction(pool, seal, timeoutMs);

  async function seal(client: PoolClient): Promise<SealResult> {
    const locked = await client.query<{ locked: boolean; now_us: string }>(
      'SELECT pg_try_advisory_xact_lock($1) AS locked, (extract(epoch FROM now()) * 1000000)::bigint AS now_us',
      [sealLockKey],
    );
    const lockRow = locked.rows[0]!;
    if (!lockRow.locked) return { batches: 0, records: 0, skipped: true, more: false };
    const taken = await client.query<ChainPartRow>({ name: 'livevote_audit_take_pending', text: takePendingText, values: [batchesMax] });
    if (taken.rows.length === 0) return { batches: 0, records: 0, skipped: false, more: false };
    const batches = taken.rows[0]!.batches;
    const records = await appendRecords(client, taken.rows);
    return { batches, records, skipped: false, more: batches === batchesMax };

    async function appendRecords(c: PoolClient, parts: readonly ChainPartRow[]): Promise<number> {
      // parts are in (election, shard, epoch) order: each chain's parts are adjacent, epochs ascending.
      const chains: { electionId: string; shard: number }[] = [];
      for (const part of parts) {
        const last = chains[chains.length - 1];
        if (last === undefined || last.electionId !== part.election_id || last.shard !== part.shard) chains.push({ electionId: part.election_id, shard: part.shard });
      }
      const heads = await c.query<{ election_id: string; shard: number; seq: string; hash: Buffer }>({
        name: 'livevote_audit_heads_for_seal',
        text: `SELECT election_id::text, shard, seq, hash FROM audit_chain_heads
                WHERE (election_id, shard) IN (SELECT * FROM unnest($1::uuid[], $2::integer[]))
                ORDER BY election_id, shard FOR UPDATE`,
        values: [chains.map((k) => k.electionId), chains.map((k) => k.shard)],
      });
      const headByChain = new Map(heads.rows.map((h) => [chainKey(h.election_id, h.shard), { seq: Number(h.seq), hash: h.hash }]));
      const recordedAtUs = Number(lockRow.now_us);
      // rounds[i]: the i-th record of each chain (a chain gets one per epoch among its batches).
      const rounds: SealedRecord[][] = [];
      let chain = '';
      let head: { seq: number; hash: Buffer } | undefined;
      let round = 0;
      for (const part of parts) {
        const key = chainKey(part.election_id, part.shard);
        if (key !== chain) {
          chain = key;
          head = headByChain.get(key);
          round = 0;
        }
        const batchIds = part.batch_ids.slice(1, -1).split(',').map(Number);
        const fields = {
          electionId: part.election_id, shard: part.shard, seq: (head?.seq ?? 0) + 1, batchId: batchIds[batchIds.length - 1]!, batchIds,
          epoch: Number(part.epoch), rowCount: Number(part.row_count), rowsDigest: part.rows_digest, recordedAtUs,
        };
        const prevHash = head?.hash ?? auditGenesisHash;
        const record: SealedRecord = { ...fields, prevHash, hash: auditRecordHash(prevHash, fields) };
        (rounds[round++] ??= []).push(record);
        head = { seq: record.seq, hash: record.hash };
      }
      let appended = 0;
      for (const records of rounds) {
        // One statement a round: a head row may advance only once per statement (and by one record).
        await c.query({ name: 'livevote_audit_append', text: appendText, values: recordColumns(records) });
        appended += records.length;
      }
      return appended;
    }
  }
}

// $1..$10 the records as columns; batch ids travel as array literals ('{1,2}'), one a record.
// recorded_at is now(): the transaction's start, the same instant the hashes were computed with.
const appendText = `
  WITH input AS (
         SELECT election_id, shard, seq, batch_ids::bigint[] AS batch_ids, epoch, row_count, rows_digest, prev_hash, hash
           FROM unnest($1::uuid[], $2::integer[], $3::bigint[], $4::text[], $5::bigint[], $6::integer[], $7::bytea[], $8::bytea[], $9::bytea[])
                AS i(election_id, shard, seq, batch_ids, epoch, row_count, rows_digest, prev_hash, hash)),
       records AS (
         INSERT INTO audit_records (election_id, shard, seq, batch_id, batch_ids, epoch, row_count, rows_digest, prev_hash, hash, recorded_at)
         SELECT election_id, shard, seq, batch_ids[cardinality(batch_ids)], batch_ids, epoch, row_count, rows_digest, prev_hash, hash, now()
           FROM input
         RETURNING 1)
  INSERT INTO audit_chain_heads AS h (election_id, shard, seq, batch_id, batch_ids, epoch, row_count, rows_digest, prev_hash, hash, recorded_at)
  SELECT election_id, shard, seq, batch_ids[cardinality(batch_ids)], batch_ids, epoch, row_count, rows_digest, prev_hash, hash, now()
    FROM input ORDER BY election_id, shard
  ON CONFLICT (election_id, shard) DO UPDATE SET
    seq = excluded.seq, batch_id = excluded.batch_id, batch_ids = excluded.batch_ids, epoch = excluded.epoch,
    row_count = excluded.row_count, rows_digest = excluded.rows_digest, prev_hash = excluded.prev_hash,
    hash = excluded.hash, recorded_at = excluded.recorded_at`;

function recordColumns(records: readonly SealedRecord[]): unknown[] {
  return [
    records.map((r) => r.electionId),
    records.map((r) => r.shard),
    records.map((r) => r.seq),
    records.map((r) => `{${r.batchIds.join(',')}}`),
    records.map((r) => r.epoch),
    records.map((r) => r.rowCount),
    records.map((r) => r.rowsDigest),
    records.map((r) => r.prevHash),
    records.map((r) => r.hash),
  ];
}

function chainKey(electionId: string, shard: number): string {
  return `${electionId.toLowerCase()}/${shard}`;
}



export interface AuditSealerOptions {
  readonly pool: Pool;
  readonly intervalMs?: number;
  readonly batchesMax?: number;
  readonly timeoutMs?: number;
  readonly log?: Logger;
  readonly metricsRegistry?: Registry;
}

export interface AuditSealerStats {
  readonly seals: number;
  readonly batches: number;
  readonly records: number;
  readonly failures: number;
}

export interface AuditSealer {
  start(): void;
  /** Stops the timer and seals what is pending (a clean stop leaves nothing unsealed). */
  stop(): Promise<void>;
  /** Seals everything pending now (tests, shutdown); resolves when done or failed. */
  sealNow(): Promise<void>;
  stats(): AuditSealerStats;
}

export function createAuditSealer(options: AuditSealerOptions): AuditSealer {
  const intervalMs = options.intervalMs ?? auditSealIntervalMsDefault;
  const batchesMax = options.batchesMax ?? auditSealBatchesMaxDefault;
  if (!(Number.isInteger(intervalMs) && intervalMs >= 1)) throw new Error(`audit seal interval must be a positive integer, got ${intervalMs}`);
  if (!(Number.isInteger(batchesMax) && batchesMax >= 1)) throw new Error(`audit seal batches max must be a positive integer, got ${batchesMax}`);
  const counters = options.metricsRegistry
    ? {
        batches: new Counter({ name: 'livevote_audit_sealed_batches_total', help: 'Committed batches appended to the audit chains by this node\'s sealer', registers: [options.metricsRegistry] }),
        records: new Counter({ name: 'livevote_audit_records_total', help: 'Audit chain records appended by this node\'s sealer', registers: [options.metricsRegistry] }),
        failures: new Counter({ name: 'livevote_audit_seal_failures_total', help: 'Seals that failed (retried at the next interval)', registers: [options.metricsRegistry] }),
        lastSeal: new Gauge({ name: 'livevote_audit_last_seal_timestamp_seconds', help: 'When this node last completed a seal (0: not yet); another node\'s seal in progress does not count', registers: [options.metricsRegistry] }),
      }
    : undefined;
  let timer: NodeJS.Timeout | undefined;
  let running: Promise<void> | undefined;
  const stats = { seals: 0, batches: 0, records: 0, failures: 0 };

  async function sealPending(): Promise<void> {
    try {
      for (;;) {
        const result = await sealAuditChains(options.pool, batchesMax, options.timeoutMs);
        if (result.skipped) return;
        stats.seals++;
        stats.batches += result.batches;
        stats.records += result.records;
        counters?.batches.inc(result.batches);
        counters?.records.inc(result.records);
        if (!result.more) {
          counters?.lastSeal.set(Date.now() / 1000);
          return;
        }
      }
    } catch (error) {
      stats.failures++;
      counters?.failures.inc();
      options.log?.warn({ err: error }, 'audit seal failed; the next interval tries again');
    }
  }

  /** One seal at a time in this process; this one starts after any running now has ended. */
  async function sealNow(): Promise<void> {
    while (running) await running;
    running = sealPending().finally(() => {
      running = undefined;
    });
    return running;
  }

  return {
    start() {
      if (timer) return;
      // A tick that finds a seal running leaves it be: that seal or the next tick takes the rest.
      timer = setInterval(() => {
        if (!running) void sealNow();
      }, intervalMs);
      timer.unref();
    },
    async stop() {
      if (timer) clearInterval(timer);
      timer = undefined;
      await running;
      await sealNow();
    },
    sealNow,
    stats: () => ({ ...stats }),
  };
}
