// SQL for shard leases (table shard_leases, migration 002). The rules (who may take what, when
// to renew) live in cluster/leases.ts; this file only states them in SQL, atomically.
//
// Every acquisition bumps the epoch, even a re-acquisition by the same node: a restarted process
// must fence the writes its dead predecessor may still have in flight. Rows are locked in shard
// order everywhere (the journal's fence locks them in (election, shard) order too), so two
// acquirers, or an acquirer and a renewer, cannot deadlock. All times are the database's clock:
// one clock for the whole cluster.
import { inTransaction, uuidPattern, type Pool, type PoolClient } from './db.ts';

/** Shards per election (elections.shard_count is 1..1024). */
export const leaseShardsMax = 1024;
/** A lease lives between 100 ms and 10 minutes: shorter flaps, longer makes failover slow. */
export const leaseTtlMsMin = 100;
export const leaseTtlMsMax = 600_000;
/** Taking over waits for in-flight commits (they hold the rows FOR SHARE); not forever. */
export const leaseLockTimeoutMsDefault = 10_000;
/** Postgres ends a lease transaction whose client stays silent this long inside it (its locks go with it). */
export const leaseIdleInTransactionMs = 2_000;

export interface LeaseRecord {
  readonly electionId: string;
  readonly shard: number;
  readonly epoch: number;
  readonly ownerNode: string;
  readonly acquiredAtMs: number;
  readonly renewedAtMs: number;
  readonly expiresAtMs: number;
}

/**
 * - `expired-or-own`: take a shard only when nobody holds it, its lease expired, or this node
 *   already owns it (the cluster rule).
 * - `any`: take it whatever its state. Only for single-node mode, where no other node can
 *   legitimately own a shard (a previous process of this node had another id, hostname-pid).
 */
export type LeaseTakeOver = 'expired-or-own' | 'any';

export interface AcquireLeasesRequest {
  readonly electionId: string;
  readonly shards: readonly number[];
  readonly nodeId: string;
  readonly leaseTtlMs: number;
  readonly takeOver: LeaseTakeOver;
  /** When set and any shard is refused, nothing is acquired (the transaction rolls back). */
  readonly allOrNothing?: boolean;
  readonly lockTimeoutMs?: number;
}

export interface AcquireLeasesResult {
  /** Shards now held by this node, each with its new (bumped) epoch. */
  readonly acquired: readonly LeaseRecord[];
  /** Shards held by another node whose lease has not expired, as they stand. */
  readonly refused: readonly LeaseRecord[];
}

export interface HeldLease {
  readonly shard: number;
  readonly epoch: number;
}

interface LeaseRow {
  election_id: string;
  shard: number;
  epoch: number;
  owner_node: string;
  acquired_at_ms: number;
  renewed_at_ms: number;
  expires_at_ms: number;
}

/** The columns of a LeaseRow; qualified with `table` where a join makes names ambiguous. */
function leaseColumns(table = 'shard_leases'): string {
  return `${table}.election_id::text AS election_id, ${table}.shard, ${table}.epoch, ${table}.owner_node,
  (extract(epoch FROM ${table}.acquired_at) * 1000)::bigint AS acquired_at_ms,
  (extract(epoch FROM ${table}.renewed_at) * 1000)::bigint AS renewed_at_ms,
  (extract(epoch FROM ${table}.expires_at) * 1000)::bigint AS expires_at_ms`;
}

function toRecord(row: LeaseRow): LeaseRecord {
  return {
    electionId: row.election_id,
    shard: row.shard,
    epoch: row.epoch,
    ownerNode: row.owner_node,
    acquiredAtMs: row.acquired_at_ms,
    renewedAtMs: row.renewed_at_ms,
    expiresAtMs: row.expires_at_ms,
  };
}


function assertElectionId(electionId: string): void {
  if (!uuidPattern.test(electionId)) throw new Error(`electionId is not a uuid: ${JSON.stringify(electionId)}`);
}

function assertTtl(leaseTtlMs: number): void {
  if (!(Number.isInteger(leaseTtlMs) && leaseTtlMs >= leaseTtlMsMin && leaseTtlMs <= leaseTtlMsMax)) {
    throw new Error(`leaseTtlMs must be ${leaseTtlMsMin}..${leaseTtlMsMax}, got ${leaseTtlMs}`);
  }
}

function assertNodeId(nodeId: string): void {
  if (!(nodeId.length >= 1 && nodeId.length <= 100)) throw new Error(`nodeId must be 1..100 characters, got ${JSON.stringify(nodeId)}`);
}


/** Sorted, distinct, each 0..1023: the lock order every statement here relies on. */
function sortedShards(shards: readonly number[]): number[] {
  if (shards.length > leaseShardsMax) throw new Error(`${shards.length} shards, more than ${leaseShardsMax}`);
  for (const shard of shards) {
    if (!(Number.isInteger(shard) && shard >= 0 && shard < leaseShardsMax)) throw new Error(`shard must be 0..${leaseShardsMax - 1}, got ${shard}`);
  }
  return [...new Set(shards)].sort((a, b) => a - b);
}

async function lockInOrder(client: PoolClient, electionId: string, shards: readonly number[], lockTimeoutMs: number): Promise<void> {
  if (!(Number.isInteger(lockTimeoutMs) && lockTimeoutMs >= 1)) throw new Error(`lockTimeoutMs must be a positive integer, got ${lockTimeoutMs}`);
  // The idle bound: a node paused (SIGSTOP, a long GC) between two statements of this
  // transaction would otherwise hold these rows locked until it resumes, and every takeover of
  // them (the failover of a paused node's shards) would wait for it.
  await client.query(`SET LOCAL lock_timeout = ${lockTimeoutMs}; SET LOCAL idle_in_transaction_session_timeout = ${leaseIdleInTransactionMs}`);
  await client.query('SELECT 1 FROM shard_leases WHERE election_id = $1 AND shard = ANY($2::integer[]) ORDER BY shard FOR UPDATE', [
    electionId, shards,
  ]);
}

/** Takes the shards this node may take (see LeaseTakeOver), bumping each one's epoch. */
export async function acquireLeases(pool: Pool, request: AcquireLeasesRequest): Promise<AcquireLeasesResult> {
  assertElectionId(request.electionId);
  assertTtl(request.leaseTtlMs);
  assertNodeId(request.nodeId);
  const shards = sortedShards(request.shards);
  if (shards.length === 0) return { acquired: [], refused: [] };
  const takeOverCondition =
    request.takeOver === 'any' ? 'true' : 'shard_leases.owner_node = excluded.owner_node OR shard_leases.expires_at <= now()';
  try {
    return await inTransaction(pool, async (client) => {
      await lockInOrder(client, request.electionId, shards, request.lockTimeoutMs ?? leaseLockTimeoutMsDefault);
      const taken = await client.query<LeaseRow>(
        `INSERT INTO shard_leases AS shard_leases (election_id, shard, epoch, owner_node, acquired_at, renewed_at, expires_at)
         SELECT $1, s, 1, $2, now(), now(), now() + $3 * interval '1 millisecond'
           FROM unnest($4::integer[]) AS s ORDER BY s
         ON CONFLICT (election_id, shard) DO UPDATE SET
           epoch = shard_leases.epoch + 1, owner_node = excluded.owner_node,
           acquired_at = now(), renewed_at = now(), expires_at = excluded.expires_at
         WHERE ${takeOverCondition}
         RETURNING ${leaseColumns()}`,
        [request.electionId, request.nodeId, request.leaseTtlMs, shards],
      );
      const acquired = taken.rows.map(toRecord).sort((a, b) => a.shard - b.shard);
      const takenShards = new Set(acquired.map((l) => l.shard));
      const missing = shards.filter((s) => !takenShards.has(s));
      let refused: LeaseRecord[] = [];
      if (missing.length > 0) {
        const held = await client.query<LeaseRow>(
          `SELECT ${leaseColumns()} FROM shard_leases WHERE election_id = $1 AND shard = ANY($2::integer[]) ORDER BY shard`,
          [request.electionId, missing],
        );
        refused = held.rows.map(toRecord);
        if (request.allOrNothing) throw new AllOrNothingRefused(refused);
      }
      return { acquired, refused };
    });
  } catch (error) {
    if (error instanceof AllOrNothingRefused) return { acquired: [], refused: error.refused };
    throw error;
  }
}

/** Thrown inside the transaction to roll an all-or-nothing acquisition back; never escapes. */
class AllOrNothingRefused extends Error {
  constructor(readonly refused: LeaseRecord[]) {
    super('some shards are held by another node');
  }
}

/**
 * Extends the leases this node still holds under the given epochs. Returns the renewed ones; a
 * lease missing from the answer was taken over (its epoch moved on) and is lost for good.
 */
export async function renewLeases(
  pool: Pool,
  request: { electionId: string; nodeId: string; leases: readonly HeldLease[]; leaseTtlMs: number; lockTimeoutMs?: number },
): Promise<LeaseRecord[]> {
  assertElectionId(request.electionId);
  assertTtl(request.leaseTtlMs);
  assertNodeId(request.nodeId);
  const shards = sortedShards(request.leases.map((l) => l.shard));
  if (shards.length !== request.leases.length) throw new Error('renewLeases: a shard is listed twice');
  if (shards.length === 0) return [];
  return inTransaction(pool, async (client) => {
    await lockInOrder(client, request.electionId, shards, request.lockTimeoutMs ?? leaseLockTimeoutMsDefault);
    // An expired lease nobody took over is still ours: its epoch did not move, so renewing it is
    // safe and spares a needless epoch bump (which would refuse the shard's in-flight batches).
    const renewed = await client.query<LeaseRow>(
      `UPDATE shard_leases SET renewed_at = now(), expires_at = now() + $3 * interval '1 millisecond'
         FROM unnest($4::integer[], $5::bigint[]) AS held(shard, epoch)
        WHERE shard_leases.election_id = $1 AND shard_leases.owner_node = $2
          AND shard_leases.shard = held.shard AND shard_leases.epoch = held.epoch
        RETURNING ${leaseColumns()}`,
      [request.electionId, request.nodeId, request.leaseTtlMs, request.leases.map((l) => l.shard), request.leases.map((l) => l.epoch)],
    );
    return renewed.rows.map(toRecord).sort((a, b) => a.shard - b.shard);
  });
}

/**
 * Gives leases up (handoff, shutdown): they expire now, so another node can take them at once.
 * The epoch is kept; the next acquirer bumps it. Returns the shards actually released.
 */
export async function releaseLeases(
  pool: Pool,
  request: { electionId: string; nodeId: string; leases: readonly HeldLease[] },
): Promise<number[]> {
  assertElectionId(request.electionId);
  assertNodeId(request.nodeId);
  const shards = sortedShards(request.leases.map((l) => l.shard));
  if (shards.length === 0) return [];
  return inTransaction(pool, async (client) => {
    await lockInOrder(client, request.electionId, shards, leaseLockTimeoutMsDefault);
    const released = await client.query<{ shard: number }>(
      `UPDATE shard_leases SET expires_at = now()
         FROM unnest($3::integer[], $4::bigint[]) AS held(shard, epoch)
        WHERE shard_leases.election_id = $1 AND shard_leases.owner_node = $2
          AND shard_leases.shard = held.shard AND shard_leases.epoch = held.epoch
        RETURNING shard_leases.shard`,
      [request.electionId, request.nodeId, request.leases.map((l) => l.shard), request.leases.map((l) => l.epoch)],
    );
    return released.rows.map((r) => r.shard).sort((a, b) => a - b);
  });
}

/**
 * A hand-off in one statement: the holder gives its lease of one shard to the next owner, epoch + 1
 * (which fences anything the holder still has in flight, as any acquisition does), so the next
 * owner needs no transaction of its own before it recovers the shard. Returns the next owner's
 * epoch, or null when the holder no longer held the lease under `epoch` (nothing changed).
 * One autocommitted UPDATE (one round trip, on the shard's pause): it locks one row only, so it
 * cannot deadlock with the acquisitions' ordered locks, and it waits at most as long as a lease
 * transaction may hold that row (leaseIdleInTransactionMs between its statements).
 */
export async function handOverLease(
  pool: Pool,
  request: { electionId: string; shard: number; fromNodeId: string; epoch: number; toNodeId: string; leaseTtlMs: number },
): Promise<number | null> {
  assertElectionId(request.electionId);
  assertTtl(request.leaseTtlMs);
  assertNodeId(request.fromNodeId);
  assertNodeId(request.toNodeId);
  const [shard] = sortedShards([request.shard]);
  const handed = await pool.query<{ epoch: number }>(
    `UPDATE shard_leases SET epoch = epoch + 1, owner_node = $5, acquired_at = now(), renewed_at = now(),
            expires_at = now() + $6 * interval '1 millisecond'
      WHERE election_id = $1 AND shard = $2 AND owner_node = $3 AND epoch = $4
      RETURNING epoch`,
    [request.electionId, shard, request.fromNodeId, request.epoch, request.toNodeId, request.leaseTtlMs],
  );
  return handed.rows[0]?.epoch ?? null;
}

/** Every lease of the election, by shard. */
export async function readLeases(pool: Pool, electionId: string): Promise<LeaseRecord[]> {
  assertElectionId(electionId);
  const result = await pool.query<LeaseRow>(`SELECT ${leaseColumns()} FROM shard_leases WHERE election_id = $1 ORDER BY shard`, [electionId]);
  return result.rows.map(toRecord);
}
