// A livevote cluster for the benchmarks: one embedded Postgres started by the bench process itself
// (so a node killed with SIGKILL never takes the database with it), node processes of the
// compiled build on it (bench/lib/livevote.ts), each with its own LIVEVOTE_NODE_ID and AZ, and the
// membership and shard map read straight from Postgres (persistence/clusterStore.ts).
import { rm } from 'node:fs/promises';
import { randomBytes } from 'node:crypto';
import type { ClusterView } from '../../cluster/ports.ts';
import { loadConfig } from '../../infra/config.ts';
import { silentLogger } from '../../infra/logger.ts';
import { loadOrCreateSecrets } from '../../infra/secrets.ts';
import { startLivevoteProcess, type LivevoteProcess } from '../../infra/testing/processHarness.ts';
import { createPgClusterStore } from '../../persistence/clusterStore.ts';
import { createPool, endPool, type Pool } from '../../persistence/db.ts';
import { startEmbeddedPostgres, type EmbeddedPostgresHandle } from '../../persistence/embeddedPostgres.ts';
import { migrate } from '../../persistence/migrate.ts';
import { benchWorkDir, buildLivevote, fetchMetricsText, livevoteCommand, metricSamples } from './livevote.ts';

export interface BenchNode {
  readonly nodeId: string;
  readonly az: string;
  readonly process: LivevoteProcess;
  readonly baseUrl: string;
  readonly port: number;
  readonly pid: number;
}

export interface BenchCluster {
  readonly databaseUrl: string;
  readonly postmasterPid: number;
  /** The bench's own small pool: voters, counts, the cluster view. */
  readonly pool: Pool;
  readonly jwtSecret: string;
  readonly adminEmail: string;
  readonly adminPassword: string;
  /** The environment every node gets, secrets left out (for the report). */
  readonly shownEnv: readonly string[];
  /** The latest process of each node id. */
  readonly nodes: Map<string, BenchNode>;
  liveNodes(): BenchNode[];
  /** Starts (or restarts) a node, with `env` over the common environment (default: its last one); resolves once it listens. */
  startNode(nodeId: string, az: string, env?: Record<string, string>): Promise<BenchNode>;
  /** SIGTERM (the node hands its shards off first), then waits for the exit; resolves its exit code (or signal), undefined if it was not running. */
  stopNode(nodeId: string): Promise<number | string | undefined>;
  /** SIGKILL, then waits for the exit. Returns the time of the kill (performance.now()). */
  killNode(nodeId: string): Promise<number>;
  view(): Promise<ClusterView>;
  close(): Promise<void>;
}

const isLive = (node: BenchNode) => node.process.child.exitCode === null && node.process.child.signalCode === null;

export async function startBenchCluster(extraEnv: Record<string, string | undefined> = {}): Promise<BenchCluster> {
  const workDir = await benchWorkDir('livevote-cbench-');
  const jwtSecret = randomBytes(48).toString('base64url');
  const adminEmail = 'bench-admin@livevote.local';
  const adminPassword = randomBytes(18).toString('base64url');
  const shown: Record<string, string | undefined> = {
    LOG_LEVEL: 'info',
    HOST: '127.0.0.1',
    // One client address sends everything: per-IP limits and client rules would refuse it.
    LIVEVOTE_RATE_LIMIT_VOTE: 'user=off,ip=off,network=off',
    LIVEVOTE_FRAUD_VOTE_BURST: 'off',
    LIVEVOTE_FRAUD_EMPTY_UA: 'off',
    LIVEVOTE_FRAUD_AUTOMATION_UA: 'off',
    // Nodes on one machine, restarted with their ids: each keeps its file spill queue (README).
    LIVEVOTE_SPILL_FILE_IN_CLUSTER: 'allow',
    ...extraEnv,
  };
  const baseEnv: Record<string, string | undefined> = {
    ...shown,
    NODE_OPTIONS: undefined,
    LIVEVOTE_DATA_DIR: workDir,
    LIVEVOTE_JWT_SECRET: jwtSecret,
    LIVEVOTE_ADMIN_EMAIL: adminEmail,
    LIVEVOTE_ADMIN_PASSWORD: adminPassword,
  };
  let postgres: EmbeddedPostgresHandle | undefined;
  let pool: Pool | undefined;
  const nodes = new Map<string, BenchNode>();
  const killAll = () => {
    for (const node of nodes.values()) if (isLive(node)) node.process.child.kill('SIGKILL');
  };
  try {
    // The secrets file first, so the nodes read one set rather than race to create several.
    const { secrets } = await loadOrCreateSecrets(loadConfig(baseEnv as NodeJS.ProcessEnv));
    postgres = await startEmbeddedPostgres({ dataDir: workDir, password: secrets.embeddedDbPassword, log: silentLogger(), durable: true });
    pool = createPool(postgres.url, 4, 'livevote-bench');
    await migrate(pool);
    buildLivevote();
  } catch (error) {
    if (pool) await endPool(pool).catch(() => undefined);
    await postgres?.stop().catch(() => undefined);
    await rm(workDir, { recursive: true, force: true }).catch(() => undefined);
    throw error;
  }
  // However the bench process ends (an uncaught error too), no node it started outlives it.
  process.on('exit', killAll);
  const databaseUrl = postgres.url;
  /** Each node's environment overrides, kept for its restarts. */
  const overridesByNode = new Map<string, Record<string, string>>();
  const ownPool = pool;
  // Patient: the bench reads the map while the box is saturated; the nodes keep their 1 s limit.
  const store = createPgClusterStore(ownPool, { statementTimeoutMs: 10_000 });
  const db = postgres;
  return {
    databaseUrl,
    postmasterPid: db.pid,
    pool: ownPool,
    jwtSecret,
    adminEmail,
    adminPassword,
    shownEnv: Object.entries(shown).filter(([, v]) => v !== undefined).map(([k, v]) => `${k}=${v}`),
    nodes,
    liveNodes: () => [...nodes.values()].filter(isLive),
    async startNode(nodeId, az, overrides = overridesByNode.get(nodeId) ?? {}) {
      overridesByNode.set(nodeId, overrides);
      // Its spill queue: <data dir>/spill/<node id> by default, so a restarted node finds its own again.
      const env = { ...baseEnv, ...overrides, DATABASE_URL: databaseUrl, LIVEVOTE_NODE_ID: nodeId, LIVEVOTE_AZ: az };
      const started = await startLivevoteProcess(env, 120_000, [], { command: livevoteCommand([]) });
      const node: BenchNode = { nodeId, az, process: started, baseUrl: started.baseUrl, port: started.port, pid: started.child.pid! };
      nodes.set(nodeId, node);
      return node;
    },
    async stopNode(nodeId) {
      const node = nodes.get(nodeId);
      if (!node || !isLive(node)) return undefined;
      node.process.child.kill('SIGTERM');
      return node.process.exited();
    },
    async killNode(nodeId) {
      const node = nodes.get(nodeId);
      if (!node || !isLive(node)) throw new Error(`${nodeId} is not running`);
      const killedAtMs = performance.now();
      node.process.child.kill('SIGKILL');
      await node.process.exited();
      return killedAtMs;
    },
    view: () => store.readView(),
    async close() {
      process.off('exit', killAll);
      killAll();
      await Promise.all([...nodes.values()].map((n) => n.process.exited()));
      await endPool(ownPool).catch(() => undefined);
      await db.stop().catch(() => undefined);
      await rm(workDir, { recursive: true, force: true }).catch(() => undefined);
    },
  };
}

/** Polls until `check` returns a value (not undefined), or throws after `timeoutMs`: the tests' own helper. */
export { eventually as waitFor } from '../../infra/testing/clusterHarness.ts';

/**
 * The map is at rest: `nodeIds` alive, every shard owned by one of them and leased by its owner,
 * shard counts within one of each other.
 */
export function isSettled(view: ClusterView, nodeIds: readonly string[]): boolean {
  const alive = new Set(view.nodes.filter((n) => n.status === 'alive').map((n) => n.nodeId));
  if (alive.size !== nodeIds.length || nodeIds.some((id) => !alive.has(id))) return false;
  const owned = new Map(nodeIds.map((id) => [id, 0]));
  for (const shard of view.shards) {
    if (!alive.has(shard.ownerNodeId) || shard.leaseNodeId !== shard.ownerNodeId) return false;
    owned.set(shard.ownerNodeId, owned.get(shard.ownerNodeId)! + 1);
  }
  const counts = [...owned.values()];
  const expectedShards = view.elections.reduce((sum, e) => sum + e.shardCount, 0);
  return view.shards.length === expectedShards && Math.max(...counts) - Math.min(...counts) <= 1;
}

/** livevote_shard_recoveries_total by path (warm: from the node's own replica; cold: snapshot + tail). */
export async function recoveryCounters(baseUrl: string): Promise<{ warm: number; cold: number; warmTailRows: number; coldTailRows: number }> {
  const text = await fetchMetricsText(baseUrl);
  const value = (name: string, path: string) => metricSamples(text, name).find((s) => s.labels.path === path)?.value ?? 0;
  return {
    warm: value('livevote_shard_recoveries_total', 'warm'),
    cold: value('livevote_shard_recoveries_total', 'cold'),
    warmTailRows: value('livevote_shard_recovery_tail_rows_total', 'warm'),
    coldTailRows: value('livevote_shard_recovery_tail_rows_total', 'cold'),
  };
}

/** livevote_votes_routed_total by route (local | forwarded | received), summed over outcomes, and by route:outcome. */
export async function routedCounters(baseUrl: string): Promise<Record<string, number>> {
  const out: Record<string, number> = {};
  for (const { labels, value } of metricSamples(await fetchMetricsText(baseUrl), 'livevote_votes_routed_total')) {
    const { route, outcome } = labels;
    if (!route || !outcome) continue;
    out[route] = (out[route] ?? 0) + value;
    out[`${route}:${outcome}`] = value;
  }
  return out;
}
