// `livevote <command>`: operator commands that run against the database, not the HTTP API.
//
//   npm run livevote -- audit verify [electionId]
//   npm run livevote -- audit heads [electionId]
//   npm run livevote -- retention purge
//   npm run livevote -- cluster --nodes 3 --azs a,b,c
//   npm run livevote -- cluster status
//   npm run livevote -- cluster move <electionId> <shard> <nodeId> [--wait]
//   npm run livevote -- cluster drain <nodeId> [--wait]
//   npm run livevote -- cluster undrain <nodeId> [--wait]
//   npm run livevote -- cluster balance [--wait]
//   npm run livevote -- cluster operations [--limit N]
//   npm run livevote -- <group> [command] --help
//
// The database is DATABASE_URL when set. Otherwise it is the embedded Postgres of
// LIVEVOTE_DATA_DIR (./.livevote): when a livevote node is running on it, the command connects to
// that server; when none is, it starts the server for the command and stops it afterwards.
// Exit status: 0 done (audit intact, operation recorded or done, or help asked for), 1 audit broken
// or operation failed, 2 usage, configuration or database error, an election id that names
// nothing, or a cluster operation refused (no such node or shard, ...).
import { existsSync } from 'node:fs';
import { readFile } from 'node:fs/promises';
import path from 'node:path';
import pino from 'pino';
import { auditFingerprint, formatAuditReport, readAuditHeads, verifyAudit, type AuditReport } from '../persistence/audit.ts';
import { createPool, endPool, type Pool } from '../persistence/db.ts';
import { startEmbeddedPostgres } from '../persistence/embeddedPostgres.ts';
import { findElection } from '../persistence/elections.ts';
import { purgeExpiredMetadata } from '../persistence/privacy.ts';
import { ConfigError, loadConfig, type Config } from './config.ts';
import type { Logger } from './logger.ts';
import {
  clusterStatus, launchCluster, operationCommands, parseLaunchOptions, parseOperationCommand, pgClusterOperations, runOperationCommand,
  type OperationCommandName,
} from './clusterCli.ts';

/** Every command, with its help: `usage`, `<group> --help` and `<group> <command> --help` are made from it. */
const commands = [
  {
    group: 'audit', name: 'verify', synopsis: 'audit verify [electionId]',
    help: `recompute every audit hash chain (or one election's) against the
stored votes; report the first broken link of each shard.
exit 0 intact, 1 broken, 2 when the election does not exist`,
  },
  {
    group: 'audit', name: 'heads', synopsis: 'audit heads [electionId]',
    help: `print each chain's head hash and each election's fingerprint, to
publish after the show (a rewritten chain then no longer matches;
verify prints the fingerprint it recomputes)`,
  },
  {
    group: 'cluster', name: 'status', synopsis: 'cluster status',
    help: 'print the members (status, AZ, URL, last heartbeat, shards) and the shard map',
  },
  {
    group: 'cluster', name: 'move', synopsis: 'cluster move <electionId> <shard> <nodeId> [--wait]',
    help: `move one shard to a live node (recorded here, carried out by the
running cluster's coordinator); --wait prints its progress until
done (exit 0) or failed (exit 1); exit 2 when refused`,
  },
  {
    group: 'cluster', name: 'drain', synopsis: 'cluster drain <nodeId> [--wait]',
    help: `move every shard off a node, a few at a time; it then owns none
and can stop. --wait and exit status as for move`,
  },
  {
    group: 'cluster', name: 'undrain', synopsis: 'cluster undrain <nodeId> [--wait]',
    help: `end a drain: the node receives shards again (balancing brings
them back); a drain of it still running ends failed. --wait and
exit status as for move`,
  },
  {
    group: 'cluster', name: 'balance', synopsis: 'cluster balance [--wait]',
    help: 'spread the shards evenly over the live nodes and AZs. --wait as for move',
  },
  {
    group: 'cluster', name: 'operations', synopsis: 'cluster operations [--limit N]',
    help: 'the latest operations (default 20), newest first, with their progress',
  },
  {
    group: 'cluster', name: '--nodes', synopsis: 'cluster --nodes N --azs a,b,c',
    help: `start N nodes on this machine sharing one Postgres (the embedded
one when DATABASE_URL is unset), on ports PORT, PORT+1, ...; print
each node's id, AZ, URL and PID; Ctrl-C stops them all`,
  },
  {
    group: 'retention', name: 'purge', synopsis: 'retention purge',
    help: 'delete request metadata older than LIVEVOTE_METADATA_RETENTION_DAYS',
  },
] as const;

const databaseNote = 'The database is DATABASE_URL, else the embedded Postgres in LIVEVOTE_DATA_DIR (./.livevote).\n';

function describe(listed: readonly (typeof commands)[number][]): string {
  const indent = ' '.repeat(30);
  // A synopsis too long for the column gets a line of its own.
  const head = (synopsis: string) => (synopsis.length > 26 ? `  ${synopsis}\n${indent}` : `  ${synopsis.padEnd(26)}  `);
  return listed.map((c) => `${head(c.synopsis)}${c.help.replaceAll('\n', `\n${indent}`)}\n`).join('');
}

const usage = `usage: livevote <command>\n\n${describe(commands)}\n${databaseNote}`;

/** The usage of one group (`audit --help`) or one command (`audit verify --help`); undefined when it names none. */
function usageOf(group: string, command: string | undefined): string | undefined {
  const inGroup = commands.filter((c) => c.group === group);
  if (inGroup.length === 0) return undefined;
  const one = inGroup.find((c) => c.name === command);
  if (one) return `usage: livevote ${one.synopsis}\n\n${describe([one])}\n${databaseNote}`;
  const names = inGroup.map((c) => c.name);
  const argument = inGroup.every((c) => c.synopsis.endsWith('[electionId]')) ? ' [electionId]' : '';
  const synopsis = names.length === 1 ? `${group} ${names[0]}` : `${group} <${names.join('|')}>${argument}`;
  return `usage: livevote ${synopsis}\n\n${describe(inGroup)}\n${databaseNote}`;
}

const isHelp = (arg: string | undefined) => arg === '--help' || arg === '-h' || arg === 'help';

/** [group, command] when argv asks for help about them: `help audit`, `audit --help`, `audit verify -h`. */
function helpRequest(argv: readonly string[]): [string, string | undefined] | undefined {
  const [first = '', second, ...rest] = argv;
  if (isHelp(first)) return [second ?? '', rest[0]];
  if (!argv.some(isHelp)) return undefined;
  return [first, isHelp(second) ? undefined : second];
}

export const exitIntact = 0;
export const exitBroken = 1;
export const exitError = 2;

class UsageError extends Error {}

interface CliOutput {
  out(text: string): void;
  err(text: string): void;
}

const processOutput: CliOutput = {
  out: (text) => process.stdout.write(text),
  err: (text) => process.stderr.write(text),
};

/** Runs one command; resolves with the exit status. Exported for tests. */
export async function runCli(argv: readonly string[], env: NodeJS.ProcessEnv = process.env, io: CliOutput = processOutput): Promise<number> {
  const [group, command, ...rest] = argv;
  if (group === undefined || (isHelp(group) && command === undefined)) {
    io.out(usage);
    return group === undefined ? exitError : exitIntact;
  }
  // Help needs no configuration and no database.
  const help = helpRequest(argv);
  if (help) {
    const text = usageOf(...help);
    if (text === undefined) {
      io.err(`livevote: unknown command: ${help[0]}\n\n${usage}`);
      return exitError;
    }
    io.out(text);
    return exitIntact;
  }
  let config: Config;
  try {
    config = loadConfig(env);
  } catch (error) {
    if (error instanceof ConfigError) {
      io.err(`livevote: ${error.message}\n`);
      return exitError;
    }
    throw error;
  }
  // Logs go to stderr: stdout is the report.
  const log = pino({ level: config.logLevel === 'info' ? 'warn' : config.logLevel, base: { service: 'livevote-cli' } }, pino.destination(2));
  try {
    // The launcher runs until Ctrl-C and brings its own Postgres: not a database command.
    if (group === 'cluster' && command !== 'status' && !isOperationCommand(command)) {
      return await launchCluster(parseLaunchOptions(argv.slice(1)), config, log, io, env);
    }
    const run = commandFor(group, command, rest, config, io);
    return await withDatabase(config, log, run);
  } catch (error) {
    if (error instanceof UsageError) {
      io.err(`livevote: ${error.message}\n\n${usage}`);
      return exitError;
    }
    io.err(`livevote: ${error instanceof Error ? error.message : String(error)}\n`);
    return exitError;
  }
}

function commandFor(group: string, command: string | undefined, rest: readonly string[], config: Config, io: CliOutput): (pool: Pool) => Promise<number> {
  const electionArg = (): string | undefined => {
    if (rest.length > 1) throw new UsageError(`too many arguments: ${rest.join(' ')}`);
    return rest[0];
  };
  // An id that names no election, and has no votes or chain records either, is a mistake (a
  // typo, another database): saying INTACT for it would vouch for nothing.
  const unknownElection = (electionId: string) => {
    io.err(`livevote: no election ${electionId}: no such election, and no votes or audit records under that id\n`);
    return exitError;
  };
  if (group === 'audit' && command === 'verify') {
    const electionId = electionArg();
    return async (pool) => {
      await requireSchema(pool);
      const report: AuditReport = await verifyAudit(pool, { electionId });
      if (electionId !== undefined && report.elections.every((e) => e.shards.length === 0) && !(await findElection(pool, electionId))) {
        return unknownElection(electionId);
      }
      io.out(formatAuditReport(report));
      return report.intact ? exitIntact : exitBroken;
    };
  }
  if (group === 'audit' && command === 'heads') {
    const electionId = electionArg();
    return async (pool) => {
      await requireSchema(pool);
      const heads = await readAuditHeads(pool, electionId);
      if (heads.length === 0 && electionId !== undefined) {
        if (!(await findElection(pool, electionId))) return unknownElection(electionId);
        io.out(`election ${electionId}: no votes yet, no audit chains\n`);
        return exitIntact;
      }
      if (heads.length === 0) io.out('No audit chains found.\n');
      for (const id of [...new Set(heads.map((h) => h.electionId))]) {
        const own = heads.filter((h) => h.electionId === id);
        io.out(`election ${id} fingerprint ${auditFingerprint(own)}\n`);
        for (const head of own) io.out(`  shard ${head.shard} seq ${head.seq} ${head.hash} ${head.recordedAt.toISOString()}\n`);
      }
      return exitIntact;
    };
  }
  if (group === 'cluster' && command === 'status') {
    if (rest.length > 0) throw new UsageError(`too many arguments: ${rest.join(' ')}`);
    return async (pool) => {
      const found = await pool.query<{ ok: boolean }>("SELECT to_regclass('cluster_nodes') IS NOT NULL AS ok");
      if (!found.rows[0]?.ok) throw new Error('this database has no cluster tables (migration 007): start livevote once on it');
      io.out(await clusterStatus(pool));
      return exitIntact;
    };
  }
  if (group === 'cluster' && isOperationCommand(command)) {
    let parsed: ReturnType<typeof parseOperationCommand>;
    try {
      parsed = parseOperationCommand(command, rest);
    } catch (error) {
      throw new UsageError((error as Error).message);
    }
    return async (pool) => {
      const found = await pool.query<{ ok: boolean }>("SELECT to_regclass('cluster_operations') IS NOT NULL AS ok");
      if (!found.rows[0]?.ok) throw new Error('this database has no cluster operations table (migration 009): start livevote once on it');
      return runOperationCommand(pgClusterOperations(pool), parsed, io);
    };
  }
  if (group === 'retention' && command === 'purge') {
    if (rest.length > 0) throw new UsageError(`too many arguments: ${rest.join(' ')}`);
    return async (pool) => {
      await requireSchema(pool);
      const result = await purgeExpiredMetadata(pool, { retentionDays: config.privacy.metadataRetentionDays, nowMs: Date.now() });
      io.out(
        `retention purge: deleted ${result.voteMetadataDeleted} vote metadata and ${result.accountMetadataDeleted} account metadata rows ` +
          `recorded before ${result.before.toISOString()} (retention ${config.privacy.metadataRetentionDays} days)` +
          `${result.incomplete ? '; more remain, run it again' : ''}\n`,
      );
      return exitIntact;
    };
  }
  throw new UsageError(`unknown command: ${[group, command].filter((p) => p !== undefined).join(' ')}`);
}

function isOperationCommand(command: string | undefined): command is OperationCommandName {
  return (operationCommands as readonly (string | undefined)[]).includes(command);
}

async function requireSchema(pool: Pool): Promise<void> {
  const found = await pool.query<{ ok: boolean }>("SELECT to_regclass('audit_records') IS NOT NULL AND to_regclass('vote_metadata') IS NOT NULL AS ok");
  if (!found.rows[0]?.ok) {
    throw new Error('this database has no audit/privacy tables (migration 005): start livevote once on it, it migrates at start-up');
  }
}

/** Connects as the command needs (see the top of this file); always closes what it opened. */
async function withDatabase(config: Config, log: Logger, work: (pool: Pool) => Promise<number>): Promise<number> {
  let url = config.databaseUrl;
  let stopEmbedded: (() => Promise<void>) | undefined;
  if (url === undefined) {
    const databaseDir = path.join(config.dataDir, 'postgres');
    if (!existsSync(path.join(databaseDir, 'PG_VERSION'))) {
      throw new Error(`no database: DATABASE_URL is unset and ${config.dataDir} holds no embedded Postgres (start livevote once, or set LIVEVOTE_DATA_DIR)`);
    }
    const password = await embeddedPassword(config.dataDir);
    const runningPort = await runningEmbeddedPort(databaseDir);
    if (runningPort !== undefined) {
      url = `postgres://postgres:${encodeURIComponent(password)}@127.0.0.1:${runningPort}/livevote`;
    } else {
      const embedded = await startEmbeddedPostgres({ dataDir: config.dataDir, password, log, durable: true });
      url = embedded.url;
      stopEmbedded = () => embedded.stop();
    }
  }
  const pool = createPool(url, 2, 'livevote-cli');
  pool.on('error', (error) => log.warn({ err: error }, 'idle database connection failed'));
  try {
    return await work(pool);
  } finally {
    await endPool(pool).catch(() => undefined);
    await stopEmbedded?.();
  }
}

/** The embedded superuser's password, from the secrets file livevote generated (never created here). */
async function embeddedPassword(dataDir: string): Promise<string> {
  const file = path.join(dataDir, 'secrets.json');
  let parsed: { embeddedDbPassword?: unknown };
  try {
    parsed = JSON.parse(await readFile(file, 'utf8')) as { embeddedDbPassword?: unknown };
  } catch (error) {
    throw new Error(`cannot read ${file}: ${(error as Error).message}`);
  }
  if (typeof parsed.embeddedDbPassword !== 'string') throw new Error(`${file} has no embeddedDbPassword`);
  return parsed.embeddedDbPassword;
}

/**
 * The port of the embedded Postgres already running on this data dir (a livevote node's), from
 * its postmaster.pid: line 1 the pid, line 4 the port. Starting a second server there would
 * stop the node's (embeddedPostgres.ts stops a server it takes for an orphan).
 */
async function runningEmbeddedPort(databaseDir: string): Promise<number | undefined> {
  const pidFile = path.join(databaseDir, 'postmaster.pid');
  if (!existsSync(pidFile)) return undefined;
  const lines = (await readFile(pidFile, 'utf8')).split('\n');
  const pid = Number(lines[0]);
  const port = Number(lines[3]);
  if (!Number.isInteger(pid) || pid <= 0 || !Number.isInteger(port) || port <= 0) return undefined;
  try {
    process.kill(pid, 0);
  } catch {
    return undefined;
  }
  return port;
}

// Run when executed (node --import tsx infra/cli.ts …), not when imported by a test.
if (process.argv[1] !== undefined && path.resolve(process.argv[1]) === path.resolve(new URL(import.meta.url).pathname)) {
  runCli(process.argv.slice(2)).then(
    (status) => process.exit(status),
    (error: unknown) => {
      process.stderr.write(`livevote: ${error instanceof Error ? (error.stack ?? error.message) : String(error)}\n`);
      process.exit(exitError);
    },
  );
}
