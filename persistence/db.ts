import pg from 'pg';

export type Pool = pg.Pool;

/**
 * A uuid in any letter case: what every adapter checks ids against before a query, and what makes
 * ids safe to inline into COPY text or SQL literals (no quote, tab, comma or backslash can pass).
 */
export const uuidPattern = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i;
export type PoolClient = pg.PoolClient;

// bigint columns (voter numbers, batch ids, counts) come back as JS numbers: every value we
// store in them stays far below 2^53, and numbers keep the hot path free of BigInt.
pg.types.setTypeParser(pg.types.builtins.INT8, (value: string) => Number(value));

/**
 * The server ended the session because it is shutting down or restarting (SQLSTATE class 57:
 * admin_shutdown, crash_shutdown, cannot_connect_now): expected whenever Postgres stops, not a
 * fault of this process.
 */
export function isServerShutdownError(error: unknown): boolean {
  const code = (error as { code?: unknown } | null)?.code;
  return code === '57P01' || code === '57P02' || code === '57P03';
}

/**
 * An idle pooled connection can fail at any time (the server restarted, a test dropped its
 * database): the pool emits 'error', which unheard crashes the process. The pool has already
 * discarded that client; the next query opens a new one, so reporting it is all there is to do.
 */
export function createPool(
  url: string,
  max: number,
  applicationName = 'livevote',
  onIdleClientError: (error: Error) => void = () => undefined,
): Pool {
  const pool = new pg.Pool({
    connectionString: url,
    max,
    application_name: applicationName,
    // A stuck connection attempt must not hang start-up or a request forever.
    connectionTimeoutMillis: 10_000,
    idleTimeoutMillis: 30_000,
  });
  pool.on('error', onIdleClientError);
  const open = new Set<Promise<void>>();
  clientsClosing.set(pool, open);
  pool.on('connect', (client) => {
    const closed: Promise<void> = new Promise((resolve) => client.once('end', () => {
      open.delete(closed);
      resolve();
    }));
    open.add(closed);
  });
  return pool;
}

/** The URL a pool connects to: for a second, small pool to the same database (pg keeps it, untyped). */
export function poolUrl(pool: Pool): string {
  const url = (pool as unknown as { options?: { connectionString?: unknown } }).options?.connectionString;
  if (typeof url !== 'string') throw new Error('this pool was not made from a connection string');
  return url;
}

/** Per pool made by createPool: one promise per connection, settled when its socket has closed. */
const clientsClosing = new WeakMap<Pool, Set<Promise<void>>>();

/**
 * Ends the pool and waits until every connection has closed. pool.end() resolves once each
 * connection has been asked to close, not once it has: a server stopped right after (the embedded
 * one, at shutdown) would still find sessions of ours and terminate them, each an error event.
 */
export async function endPool(pool: Pool): Promise<void> {
  await pool.end();
  await Promise.all(clientsClosing.get(pool) ?? []);
}

/**
 * Run `work` on one pooled client. While the client is checked out it has an 'error' listener:
 * a connection lost mid-use emits 'error' on the client, and unheard that crashes the process.
 * A client that saw an error, or that `work` discarded (its session state is unknown: a failed
 * ROLLBACK or COMMIT, a COPY abandoned half-way), is released as broken so the pool drops it.
 */
export async function withClient<T>(
  pool: Pool,
  work: (client: PoolClient, discard: (reason: Error) => void) => Promise<T>,
): Promise<T> {
  const client = await pool.connect();
  let broken: Error | undefined;
  const onConnectionError = (error: Error) => {
    broken = error;
  };
  client.on('error', onConnectionError);
  try {
    return await work(client, onConnectionError);
  } finally {
    client.removeListener('error', onConnectionError);
    client.release(broken);
  }
}

/**
 * Run `work` in one transaction on one pooled client; roll back on any error. With `timeoutMs`,
 * through withClientTimeout: the transaction is given up on (and may still commit) after it.
 */
export function inTransaction<T>(pool: Pool, work: (client: PoolClient) => Promise<T>, timeoutMs?: number): Promise<T> {
  const run = async (client: PoolClient): Promise<T> => {
    await client.query('BEGIN');
    try {
      const result = await work(client);
      await client.query('COMMIT');
      return result;
    } catch (error) {
      await client.query('ROLLBACK').catch(() => undefined);
      throw error;
    }
  };
  return timeoutMs === undefined ? withClient(pool, run) : withClientTimeout(pool, timeoutMs, run);
}

/**
 * Like withClient, but gives up after `timeoutMs`, however the server behaves: a frozen or
 * unreachable Postgres never answers, and a server-side statement_timeout cannot fire in a server
 * that does not run. On timeout the connection is destroyed (so the pool drops it and the query
 * cannot complete later on a connection someone else gets) and the promise rejects. A
 * transaction given up on this way may still commit on the server: callers on the vote path
 * settle such outcomes by batch id (Journal.wasCommitted).
 */
export async function withClientTimeout<T>(
  pool: Pool,
  timeoutMs: number,
  work: (client: PoolClient, discard: (reason: Error) => void) => Promise<T>,
): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  let client: PoolClient | undefined;
  let timedOut = false;
  const timeout = new Promise<never>((_, reject) => {
    timer = setTimeout(() => {
      timedOut = true;
      if (client !== undefined) destroyConnection(client);
      reject(new PostgresTimeoutError(`no answer from Postgres within ${timeoutMs} ms`));
    }, timeoutMs);
  });
  const run = withClient(pool, (checkedOut, discard) => {
    client = checkedOut;
    if (timedOut) {
      destroyConnection(checkedOut);
      return Promise.reject(new PostgresTimeoutError('connection came after the deadline'));
    }
    return work(checkedOut, discard);
  });
  run.catch(() => undefined); // settled by the race below, or after it (then nobody listens)
  try {
    return await Promise.race([run, timeout]);
  } finally {
    clearTimeout(timer);
  }
}

export class PostgresTimeoutError extends Error {
  override readonly name = 'PostgresTimeoutError';
}

/** pg has no public destroy: end the socket now, without the goodbye a frozen server never reads. */
function destroyConnection(client: PoolClient): void {
  const stream = (client as unknown as { connection?: { stream?: { destroy(): void } } }).connection?.stream;
  stream?.destroy();
}
