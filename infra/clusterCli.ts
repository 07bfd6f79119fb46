// `livevote cluster …`: a local cluster on one machine, and the cluster's state as a table.
//
//   npm run livevote -- cluster --nodes 3 --azs a,b,c   start 3 nodes sharing one Postgres (the
//                                                       embedded one when DATABASE_URL is unset),
//                                                       on ports PORT, PORT+1, …; Ctrl-C stops all
//   npm run livevote -- cluster status                  members and shard map, from the database
//   npm run livevote -- cluster move <electionId> <shard> <nodeId> [--wait]
//   npm run livevote -- cluster drain <nodeId> [--wait]
//   npm run livevote -- cluster undrain <nodeId> [--wait]
//   npm run livevote -- cluster balance [--wait]      record an operation (the coordinator of the
//                                                       running cluster carries it out); --wait
//                                                       prints its progress until done or failed
//   npm run livevote -- cluster operations [--limit N] the latest operations, newest first
import { spawn, type ChildProcess } from 'node:child_process';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { ClusterOperationRefused, type ClusterOperation, type ClusterOperationRequest, type ClusterOperations, type ClusterView } from '../cluster/ports.ts';
import { createPgClusterStore } from '../persistence/clusterStore.ts';
import { createPool, endPool } from '../persistence/db.ts';
import { startEmbeddedPostgres, type EmbeddedPostgresHandle } from '../persistence/embeddedPostgres.ts';
import { migrate } from '../persistence/migrate.ts';
import type { Config } from './config.ts';
import type { Logger } from './logger.ts';
import { loadOrCreateSecrets } from './secrets.ts';

export const nodesMax = 32;

export interface LaunchOptions {
  readonly nodes: number;
  readonly azs: readonly string[];
}

/** `--nodes N --azs a,b,c`; throws a message for the usage line. */
export function parseLaunchOptions(args: readonly string[]): LaunchOptions {
  let nodes = 3;
  let azs = ['a', 'b', 'c'];
  for (let i = 0; i < args.length; i++) {
    const flag = args[i]!;
    const value = args[i + 1];
    if ((flag === '--nodes' || flag === '--azs') && value === undefined) throw new Error(`${flag} needs a value`);
    if (flag === '--nodes' && value !== undefined) {
      nodes = Number(value);
      if (!(Number.isInteger(nodes) && nodes >= 1 && nodes <= nodesMax)) throw new Error(`--nodes must be 1..${nodesMax}, got ${value}`);
      i++;
    } else if (flag === '--azs' && value !== undefined) {
      azs = value.split(',').map((az) => az.trim()).filter((az) => az !== '');
      if (azs.length === 0 || azs.some((az) => !/^[a-z0-9-]{1,40}$/.test(az))) throw new Error(`--azs must be a comma-separated list of a-z, 0-9, -: ${value}`);
      i++;
    } else if (i === 0 && !flag.startsWith('-')) {
      // `cluster stauts`: a mistyped command, not an argument of the launcher.
      throw new Error(`unknown command: cluster ${flag} (cluster takes status, ${operationCommands.join(', ')}, or --nodes N --azs a,b,c)`);
    } else {
      throw new Error(`unknown argument: ${flag}`);
    }
  }
  return { nodes, azs };
}

/** The plan: one node per port from `basePort`, AZs round-robin. */
export function planNodes(options: LaunchOptions, host: string, basePort: number): { nodeId: string; az: string; port: number; url: string }[] {
  return Array.from({ length: options.nodes }, (_, i) => ({
    nodeId: `node-${i + 1}`,
    az: options.azs[i % options.azs.length]!,
    port: basePort + i,
    url: `http://${host === '0.0.0.0' || host === '::' ? '127.0.0.1' : host}:${basePort + i}`,
  }));
}

export function formatClusterTable(view: ClusterView): string {
  const owned = new Map<string, number>();
  for (const row of view.shards) owned.set(row.ownerNodeId, (owned.get(row.ownerNodeId) ?? 0) + 1);
  const rows = view.nodes.map((n) => [
    n.nodeId + (n.nodeId === view.coordinatorNodeId ? ' *' : ''), n.az, n.status + (n.draining ? ', draining' : ''), n.url,
    `${Math.max(0, view.readAtMs - n.lastHeartbeatAtMs)} ms ago`, String(owned.get(n.nodeId) ?? 0),
  ]);
  const header = ['NODE', 'AZ', 'STATUS', 'URL', 'HEARTBEAT', 'SHARDS'];
  const widths = header.map((h, i) => Math.max(h.length, ...rows.map((r) => r[i]!.length)));
  const line = (cells: string[]) => cells.map((c, i) => c.padEnd(widths[i]!)).join('  ').trimEnd() + '\n';
  let out = `cluster version ${view.version}, coordinator ${view.coordinatorNodeId ?? '(none)'} (*)\n\n`;
  out += line(header) + rows.map(line).join('');
  const byElection = new Map<string, typeof view.shards[number][]>();
  for (const row of view.shards) {
    let list = byElection.get(row.electionId);
    if (!list) byElection.set(row.electionId, (list = []));
    list.push(row);
  }
  for (const [electionId, shards] of byElection) {
    out += `\nelection ${electionId}: ${shards.length} shards\n`;
    out += shards.map((s) => `  shard ${String(s.shard).padStart(4)}  ${s.ownerNodeId.padEnd(widths[0]!)}  epoch ${s.epoch}${s.leaseNodeId !== null && s.leaseNodeId !== s.ownerNodeId ? `  (lease still with ${s.leaseNodeId})` : ''}`).join('\n') + '\n';
  }
  return out;
}

/** The operations port over the store, for the CLI (no running node needed to record a request). */
export function pgClusterOperations(pool: Parameters<typeof createPgClusterStore>[0]): ClusterOperations {
  const store = createPgClusterStore(pool);
  return {
    request: (request) => store.requestOperation(request),
    list: (limit = operationsListLimitDefault) => store.listOperations(limit),
    get: (operationId) => store.getOperation(operationId),
  };
}

export async function clusterStatus(pool: Parameters<typeof createPgClusterStore>[0]): Promise<string> {
  return formatClusterTable(await createPgClusterStore(pool).readView());
}

export const operationCommands = ['move', 'drain', 'undrain', 'balance', 'operations'] as const;
export type OperationCommandName = (typeof operationCommands)[number];

export type OperationCommand =
  | { readonly kind: 'request'; readonly request: ClusterOperationRequest; readonly wait: boolean }
  | { readonly kind: 'list'; readonly limit: number };

export const operationsListLimitDefault = 20;
const operationsListLimitMax = 200;
const uuidPattern = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i;
const nodeIdPattern = /^[a-z0-9-]{1,40}$/;

/** `move <electionId> <shard> <nodeId> [--wait]`, `drain <nodeId> [--wait]`, `undrain <nodeId> [--wait]`, `balance [--wait]`, `operations [--limit N]`; throws a message for the usage line. */
export function parseOperationCommand(command: OperationCommandName, args: readonly string[]): OperationCommand {
  if (command === 'operations') {
    let limit = operationsListLimitDefault;
    for (let i = 0; i < args.length; i++) {
      const value = args[i + 1];
      if (args[i] === '--limit' && value === undefined) throw new Error('--limit needs a value');
      if (args[i] === '--limit' && value !== undefined) {
        limit = Number(value);
        if (!(/^\d+$/.test(value) && limit >= 1 && limit <= operationsListLimitMax)) throw new Error(`--limit must be 1..${operationsListLimitMax}, got ${value}`);
        i++;
      } else {
        throw new Error(`unknown argument: ${args[i]}`);
      }
    }
    return { kind: 'list', limit };
  }
  const wait = args.includes('--wait');
  const positional = args.filter((arg) => arg !== '--wait');
  const flag = positional.find((arg) => arg.startsWith('-'));
  if (flag !== undefined) throw new Error(`unknown argument: ${flag}`);
  const expected = { move: ['electionId', 'shard', 'nodeId'], drain: ['nodeId'], undrain: ['nodeId'], balance: [] }[command];
  if (positional.length !== expected.length) {
    throw new Error(`cluster ${command} takes ${expected.length === 0 ? 'no arguments' : expected.map((name) => `<${name}>`).join(' ')}, got ${positional.length === 0 ? 'none' : positional.join(' ')}`);
  }
  const nodeId = (value: string) => {
    if (!nodeIdPattern.test(value)) throw new Error(`nodeId must be 1-40 of a-z, 0-9, -: ${value}`);
    return value;
  };
  if (command === 'balance') return { kind: 'request', request: { kind: 'balance' }, wait };
  if (command === 'drain' || command === 'undrain') return { kind: 'request', request: { kind: command, nodeId: nodeId(positional[0]!) }, wait };
  const [electionId, shardText, toNodeId] = positional as [string, string, string];
  if (!uuidPattern.test(electionId)) throw new Error(`electionId must be a UUID: ${electionId}`);
  const shard = Number(shardText);
  if (!/^\d{1,4}$/.test(shardText)) throw new Error(`shard must be a shard number (0, 1, ...): ${shardText}`);
  return { kind: 'request', request: { kind: 'move', electionId: electionId.toLowerCase(), shard, toNodeId: nodeId(toNodeId) }, wait };
}

function describeRequest(request: ClusterOperationRequest): string {
  if (request.kind === 'move') return `move shard ${request.shard} of ${request.electionId} to ${request.toNodeId}`;
  if (request.kind === 'drain') return `drain ${request.nodeId}`;
  if (request.kind === 'undrain') return `undrain ${request.nodeId}`;
  return 'balance';
}

function progressOf(operation: ClusterOperation): string {
  const shards = operation.shardsTotal > 0 || operation.status !== 'pending' ? `, ${operation.shardsMoved}/${operation.shardsTotal} shards moved` : '';
  return `${operation.status}${shards}${operation.error === null ? '' : `: ${operation.error}`}`;
}

/** One line: `operation 7  drain node-2  running, 3/8 shards moved`. */
export function formatOperation(operation: ClusterOperation): string {
  return `operation ${operation.operationId}  ${describeRequest(operation.request)}  ${progressOf(operation)}`;
}

export function formatOperationsTable(operations: readonly ClusterOperation[]): string {
  if (operations.length === 0) return 'No cluster operations yet.\n';
  const rows = operations.map((o) => [
    String(o.operationId), o.request.kind, describeRequest(o.request), o.status, `${o.shardsMoved}/${o.shardsTotal}`,
    new Date(o.requestedAtMs).toISOString(), o.finishedAtMs === null ? '' : `${((o.finishedAtMs - o.requestedAtMs) / 1000).toFixed(1)} s`, o.error ?? '',
  ]);
  const header = ['ID', 'KIND', 'WHAT', 'STATUS', 'MOVED', 'REQUESTED', 'TOOK', 'ERROR'];
  const widths = header.map((h, i) => Math.max(h.length, ...rows.map((r) => r[i]!.length)));
  const line = (cells: string[]) => cells.map((c, i) => c.padEnd(widths[i]!)).join('  ').trimEnd() + '\n';
  return line(header) + rows.map(line).join('');
}

export const exitOperationDone = 0;
export const exitOperationFailed = 1;
/** Refused before anything was recorded (no such node or shard, ...), like a usage error. */
export const exitOperationRefused = 2;

export interface OperationWaitOptions {
  readonly pollIntervalMs: number;
  /** After this long still pending, say that a running node must carry it out (once). */
  readonly pendingHintAfterMs: number;
  readonly sleep?: (ms: number) => Promise<void>;
  readonly nowMs?: () => number;
}

export const operationWaitDefaults: OperationWaitOptions = { pollIntervalMs: 500, pendingHintAfterMs: 10_000 };

/**
 * Runs `cluster move|drain|undrain|balance|operations` against the operations port; resolves with the
 * exit status. With --wait it prints a line whenever the operation's progress changes, and ends
 * when it is done (0) or failed (1); it waits as long as the operation takes (Ctrl-C stops
 * waiting, not the operation).
 */
export async function runOperationCommand(
  operations: ClusterOperations,
  command: OperationCommand,
  io: { out(text: string): void; err(text: string): void },
  options: OperationWaitOptions = operationWaitDefaults,
): Promise<number> {
  if (command.kind === 'list') {
    io.out(formatOperationsTable(await operations.list(command.limit)));
    return exitOperationDone;
  }
  let operation: ClusterOperation;
  try {
    operation = await operations.request(command.request);
  } catch (error) {
    if (!(error instanceof ClusterOperationRefused)) throw error;
    io.err(`livevote: refused (${error.reason}): ${error.message}; nothing was recorded\n`);
    return exitOperationRefused;
  }
  io.out(`${formatOperation(operation)}\n`);
  if (!command.wait) {
    if (operation.status === 'failed') return exitOperationFailed;
    io.out(`recorded; follow it with: livevote cluster operations (or --wait)\n`);
    return exitOperationDone;
  }
  const sleep = options.sleep ?? ((ms: number) => new Promise<void>((resolve) => setTimeout(resolve, ms)));
  const nowMs = options.nowMs ?? Date.now;
  const startedMs = nowMs();
  let hinted = false;
  let last = progressOf(operation);
  while (operation.status === 'pending' || operation.status === 'running') {
    await sleep(options.pollIntervalMs);
    const latest = await operations.get(operation.operationId);
    if (latest === undefined) throw new Error(`operation ${operation.operationId} is no longer in the store`);
    operation = latest;
    const progress = progressOf(operation);
    if (progress !== last) io.out(`${formatOperation(operation)}\n`);
    last = progress;
    if (!hinted && operation.status === 'pending' && nowMs() - startedMs >= options.pendingHintAfterMs) {
      hinted = true;
      io.err('livevote: still pending: the cluster\'s coordinator carries operations out; is a livevote node running on this database?\n');
    }
  }
  return operation.status === 'done' ? exitOperationDone : exitOperationFailed;
}

// The node entry point beside this file, with this file's extension: main.ts when run through tsx,
// main.js in the production build (dist/ has no .ts files: a fixed main.ts started no node there).
const thisFile = fileURLToPath(import.meta.url);
const mainScript = path.join(path.dirname(thisFile), `main${path.extname(thisFile)}`);

/**
 * Starts the nodes and resolves when they have all stopped (after SIGINT/SIGTERM, or each on its
 * own). Exit code: 0 when every node stopped cleanly.
 */
export async function launchCluster(
  options: LaunchOptions,
  config: Config,
  log: Logger,
  io: { out(text: string): void; err(text: string): void },
  env: NodeJS.ProcessEnv = process.env,
): Promise<number> {
  // Every node reads the same secrets file: create it once, before any node can race to.
  const { secrets, generatedAdminPassword } = await loadOrCreateSecrets(config);
  let embedded: EmbeddedPostgresHandle | undefined;
  let databaseUrl = config.databaseUrl;
  if (databaseUrl === undefined) {
    embedded = await startEmbeddedPostgres({ dataDir: config.dataDir, password: secrets.embeddedDbPassword, log, durable: true });
    databaseUrl = embedded.url;
  }
  const pool = createPool(databaseUrl, 2, 'livevote-launcher');
  try {
    await migrate(pool);
  } finally {
    await endPool(pool);
  }
  const plan = planNodes(options, config.host, config.port === 0 ? 8080 : config.port);
  const children: { nodeId: string; child: ChildProcess; exited: Promise<number> }[] = [];
  let stopping = false;
  for (const node of plan) {
    const child = spawn(process.execPath, [...process.execArgv, mainScript], {
      env: {
        ...env,
        DATABASE_URL: databaseUrl,
        PORT: String(node.port),
        LIVEVOTE_NODE_ID: node.nodeId,
        LIVEVOTE_AZ: node.az,
        LIVEVOTE_ADVERTISE_URL: node.url,
        LIVEVOTE_DATA_DIR: config.dataDir,
        // Every node on this one machine, each restartable with its id: a node's file spill queue
        // (the default) stays readable by it, so the launcher accepts the file queue in a cluster
        // unless told otherwise (README, LIVEVOTE_SPILL_FILE_IN_CLUSTER).
        LIVEVOTE_SPILL_FILE_IN_CLUSTER: env.LIVEVOTE_SPILL_FILE_IN_CLUSTER ?? 'allow',
      },
      // The IPC channel is how a node learns the launcher is gone, even by kill -9 (main.ts).
      stdio: ['ignore', 'inherit', 'inherit', 'ipc'],
    });
    const exited = new Promise<number>((resolve) => {
      child.on('exit', (code, signal) => {
        if (!stopping) io.err(`livevote cluster: ${node.nodeId} (pid ${child.pid}) exited ${signal ?? code}; the others take over its shards\n`);
        resolve(code ?? 1);
      });
    });
    children.push({ nodeId: node.nodeId, child, exited });
  }
  io.out(
    `livevote cluster: ${plan.length} nodes on ${embedded ? 'an embedded Postgres' : 'DATABASE_URL'}\n` +
      plan.map((n, i) => `  ${n.nodeId}  az ${n.az}  ${n.url}  pid ${children[i]!.child.pid}\n`).join('') +
      (generatedAdminPassword ? `  First start: admin ${secrets.adminEmail} / ${generatedAdminPassword} (shown once)\n` : '') +
      '  Ctrl-C stops them all.\n',
  );
  const stopAll = (signal: NodeJS.Signals) => {
    if (stopping) return;
    stopping = true;
    io.err(`livevote cluster: ${signal}: stopping every node\n`);
    for (const { child } of children) if (child.exitCode === null) child.kill('SIGTERM');
  };
  process.on('SIGINT', stopAll);
  process.on('SIGTERM', stopAll);
  const codes = await Promise.all(children.map((c) => c.exited));
  process.off('SIGINT', stopAll);
  process.off('SIGTERM', stopAll);
  await embedded?.stop();
  return stopping && codes.every((code) => code === 0) ? 0 : 1;
}
