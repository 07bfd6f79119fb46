// `livevote cluster …`: a local cluster on one machine, and the cluster's state as a table.
//
//   npm run livevote -- cluster --nodes 3 --azs a,b,c   start 3 nodes sharing one Postgres (the
//                                                       embedded one when DATABASE_URL is unset),
//                                                       on ports PORT, PORT+1, …; Ctrl-C stops all
//   npm run livevote -- cluster status                  members and shard map, from the database
import { spawn, type ChildProcess } from 'node:child_process';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import type { ClusterView } from '../cluster/ports.ts';
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
    const flag = args[i];
    const value = args[i + 1];
    if (flag === '--nodes' && value !== undefined) {
      nodes = Number(value);
      if (!(Number.isInteger(nodes) && nodes >= 1 && nodes <= nodesMax)) throw new Error(`--nodes must be 1..${nodesMax}, got ${value}`);
      i++;
    } else if (flag === '--azs' && value !== undefined) {
      azs = value.split(',').map((az) => az.trim()).filter((az) => az !== '');
      if (azs.length === 0 || azs.some((az) => !/^[a-z0-9-]{1,40}$/.test(az))) throw new Error(`--azs must be a comma-separated list of a-z, 0-9, -: ${value}`);
      i++;
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
    n.nodeId + (n.nodeId === view.coordinatorNodeId ? ' *' : ''), n.az, n.status, n.url,
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

export async function clusterStatus(pool: Parameters<typeof createPgClusterStore>[0]): Promise<string> {
  return formatClusterTable(await createPgClusterStore(pool).readView());
}

const mainScript = path.join(path.dirname(fileURLToPath(import.meta.url)), 'main.ts');

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
      },
      stdio: ['ignore', 'inherit', 'inherit'],
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
