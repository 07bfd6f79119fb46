// Drives a livevote process in embedded mode (DATABASE_URL unset, a temp LIVEVOTE_DATA_DIR), the
// way production runs it: the compiled build (`npm run build`, infra/build.mjs, into bench/out/dist
// so a dist/ in use is left alone), `node bench/out/dist/infra/main.js`, through the process harness
// the tests use (node flags such as --cpu-prof, which NODE_OPTIONS refuses, go in front of the
// entry point). BENCH_FROM_SOURCE=1 runs `node --import tsx infra/main.ts` instead, to compare;
// BENCH_LIVEVOTE_DIST=<dir> runs a build made elsewhere (another commit's), for A/B runs.
// Adds what a benchmark needs around it: the embedded Postgres' URL, an admin session,
// elections, and the vote counters from /metrics.
import { execFileSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import { existsSync, readdirSync, readFileSync, writeFileSync } from 'node:fs';
import { chmod, mkdtemp, readFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { root, startLivevoteProcess, type LivevoteProcess } from '../../infra/testing/processHarness.ts';
import { embeddedDatabaseUrl } from '../../persistence/embeddedPostgres.ts';

export interface LivevoteUnderTest {
  readonly process: LivevoteProcess;
  readonly baseUrl: string;
  readonly port: number;
  /** postgres:// URL of the embedded server, database `livevote`. */
  readonly databaseUrl: string;
  /** The postmaster's pid (its tree is "postgres" in the CPU figures). */
  postmasterPid(): Promise<number>;
}

/** Where the bench builds livevote (inside the repository, so node_modules is found from it). */
export const benchBuildDir = process.env.BENCH_LIVEVOTE_DIST ? path.resolve(process.env.BENCH_LIVEVOTE_DIST) : path.join(root, 'bench/out/dist');
export const fromSource = process.env.BENCH_FROM_SOURCE === '1';
/** BENCH_LIVEVOTE_DIST=<dir>: a build made elsewhere (another commit's, to compare two), used as it is. */
let built = process.env.BENCH_LIVEVOTE_DIST !== undefined;

/** What the production build is made of: a build of the same bytes is the same build. */
const buildInputDirs = ['actors', 'cluster', 'gateway', 'infra', 'persistence'];
const buildInputFiles = ['package.json', 'package-lock.json', 'tsconfig.json', 'tsconfig.build.json'];
const buildHashFile = '.bench-build-inputs.sha256';

/** SHA-256 over the path and bytes of every file the build reads (tests included: cheap, and never stale). */
export function buildInputsHash(): string {
  const hash = createHash('sha256');
  const files: string[] = [...buildInputFiles];
  const walk = (dir: string): void => {
    for (const entry of readdirSync(path.join(root, dir), { withFileTypes: true })) {
      const relative = path.join(dir, entry.name);
      if (entry.isDirectory()) walk(relative);
      else if (entry.isFile()) files.push(relative);
    }
  };
  for (const dir of buildInputDirs) walk(dir);
  for (const file of files.sort()) hash.update(`${file}\0`).update(readFileSync(path.join(root, file))).update('\0');
  return hash.digest('hex');
}

/**
 * `node infra/build.mjs --out-dir bench/out/dist`, once per bench process (10-50 s of tsc on this
 * box), unless the build there was made from exactly the files there are now (the hash of every
 * build input, written beside it): then it is that build, and rebuilding would only cost time.
 */
export function buildLivevote(log: (line: string) => void = () => undefined): void {
  if (built || fromSource) return;
  const inputs = buildInputsHash();
  const hashPath = path.join(benchBuildDir, buildHashFile);
  if (existsSync(hashPath) && readFileSync(hashPath, 'utf8').trim() === inputs) {
    log(`livevote build in ${path.relative(root, benchBuildDir)} is of these sources (build inputs sha256 ${inputs.slice(0, 12)}): not rebuilt`);
  } else {
    execFileSync(process.execPath, [path.join(root, 'infra/build.mjs'), '--out-dir', benchBuildDir], { cwd: root, stdio: ['ignore', 'ignore', 'inherit'] });
    writeFileSync(hashPath, `${inputs}\n`);
  }
  built = true;
}

/**
 * The command that starts livevote: the compiled build, or the sources under tsx (BENCH_FROM_SOURCE=1).
 * `buildDir`: a build made elsewhere, used as it is (bench/abBuilds.ts runs two at once).
 */
export function livevoteCommand(nodeArgs: readonly string[], buildDir?: string): [string, ...string[]] {
  if (buildDir !== undefined) return [process.execPath, ...nodeArgs, path.join(path.resolve(buildDir), 'infra/main.js')];
  return fromSource
    ? [process.execPath, ...nodeArgs, '--import', 'tsx', path.join(root, 'infra/main.ts')]
    : [process.execPath, ...nodeArgs, path.join(benchBuildDir, 'infra/main.js')];
}

/**
 * A new directory under the system's temp dir for a benchmark's data (embedded Postgres data
 * dirs, voter files). Embedded Postgres runs as the postgres user when we are root: it must
 * traverse (not list) this, hence 0711.
 */
export async function benchWorkDir(prefix: string): Promise<string> {
  const workDir = await mkdtemp(path.join(os.tmpdir(), prefix));
  await chmod(workDir, 0o711);
  return workDir;
}

export async function startLivevote(env: Record<string, string | undefined>, dataDir: string, nodeArgs: readonly string[] = [], buildDir?: string): Promise<LivevoteUnderTest> {
  // Each stop here follows a load run whose clients have closed their connections: a stop that
  // waited for idle keep-alive connections would wait 12.5 s for none (bench/moves.ts, which
  // measures stops, keeps the default).
  const fullEnv = { LIVEVOTE_STOP_AWAITS_IDLE_CONNECTIONS: 'off', ...env, DATABASE_URL: undefined, LIVEVOTE_DATA_DIR: dataDir };
  if (buildDir === undefined) buildLivevote();
  const started = await startLivevoteProcess(fullEnv, 120_000, nodeArgs, { command: livevoteCommand(nodeArgs, buildDir) });
  const pgPort = /"port":(\d+)[^\n]*embedded Postgres started/.exec(started.output())?.[1];
  if (!pgPort) throw new Error(`livevote did not log its embedded Postgres port:\n${started.output().slice(-3000)}`);
  const secrets = JSON.parse(await readFile(path.join(dataDir, 'secrets.json'), 'utf8')) as { embeddedDbPassword: string };
  return {
    process: started,
    baseUrl: started.baseUrl,
    port: started.port,
    // The same connection livevote itself uses (its Unix socket when the path fits), so the
    // baseline and the other steps pay what livevote pays per round trip.
    databaseUrl: embeddedDatabaseUrl(path.join(dataDir, 'postgres'), Number(pgPort), secrets.embeddedDbPassword, 'livevote'),
    async postmasterPid() {
      const pidFile = await readFile(path.join(dataDir, 'postgres', 'postmaster.pid'), 'utf8');
      return Number(pidFile.split('\n')[0]);
    },
  };
}

/** Stops livevote with SIGTERM (graceful: flush, final snapshots, embedded Postgres stopped). */
export async function stopLivevote(lv: LivevoteUnderTest, graceMs = 60_000): Promise<number | string> {
  const child = lv.process.child;
  if (child.exitCode !== null || child.signalCode !== null) return lv.process.exited();
  child.kill('SIGTERM');
  const timer = setTimeout(() => child.kill('SIGKILL'), graceMs);
  try {
    return await lv.process.exited();
  } finally {
    clearTimeout(timer);
  }
}

async function api<T>(baseUrl: string, method: string, route: string, token: string | undefined, body?: unknown): Promise<T> {
  const response = await fetch(`${baseUrl}${route}`, {
    method,
    headers: { ...(token ? { authorization: `Bearer ${token}` } : {}), ...(body !== undefined ? { 'content-type': 'application/json' } : {}) },
    body: body !== undefined ? JSON.stringify(body) : undefined,
  });
  const text = await response.text();
  if (!response.ok) throw new Error(`${method} ${route}: ${response.status} ${text}`);
  return JSON.parse(text) as T;
}

export async function adminLogin(baseUrl: string, email: string, password: string): Promise<string> {
  const session = await api<{ accessToken: string }>(baseUrl, 'POST', '/api/v1/auth/login', undefined, { email, password });
  return session.accessToken;
}

export interface BenchElection {
  readonly electionId: string;
  readonly candidateIds: readonly string[];
  readonly shardCount: number;
}

/** Creates and opens an election, then waits until this node serves it (leases taken, shards recovered). */
export async function createOpenElection(baseUrl: string, adminToken: string, title: string, candidateCount: number, shardCount: number): Promise<BenchElection> {
  const created = await api<{ electionId: string; candidates: { candidateId: string }[] }>(baseUrl, 'POST', '/api/v1/admin/elections', adminToken, {
    title,
    candidates: Array.from({ length: candidateCount }, (_, i) => ({ name: `Candidate ${i + 1}` })),
    shardCount,
  });
  await api(baseUrl, 'POST', `/api/v1/admin/elections/${created.electionId}/open`, adminToken);
  const deadline = Date.now() + 30_000;
  for (;;) {
    const response = await fetch(`${baseUrl}/api/v1/results/${created.electionId}`);
    await response.text();
    if (response.ok) break;
    if (Date.now() > deadline) throw new Error(`election ${created.electionId} not served after 30 s (${response.status})`);
    await new Promise((resolve) => setTimeout(resolve, 50));
  }
  return { electionId: created.electionId, candidateIds: created.candidates.map((c) => c.candidateId), shardCount };
}

/** Sums of the vote counters in /metrics: replies by outcome and gateway refusals by code. */
export interface VoteCounters {
  /** livevote_votes_total: replies of the vote node by outcome. */
  readonly outcomes: Record<string, number>;
  /** livevote_votes_rejected_at_gateway_total by error code. */
  readonly rejectedAtGateway: Record<string, number>;
  /** livevote_http_requests_total of POST /api/v1/votes by status code. */
  readonly voteHttpStatus: Record<string, number>;
}

export async function voteCounters(baseUrl: string): Promise<VoteCounters> {
  const text = await fetchMetricsText(baseUrl);
  const by = (name: string, label: string, keep: (labels: Record<string, string>) => boolean = () => true) =>
    Object.fromEntries(metricSamples(text, name).filter((s) => keep(s.labels) && s.labels[label] !== undefined).map((s) => [s.labels[label]!, s.value]));
  return {
    outcomes: by('livevote_votes_total', 'outcome'),
    rejectedAtGateway: by('livevote_votes_rejected_at_gateway_total', 'code'),
    voteHttpStatus: by('livevote_http_requests_total', 'status', (l) => l.method === 'POST' && l.route === '/api/v1/votes'),
  };
}

/** Sums over stored votes, in ms: their wait for their batch's commit, its commit, their request. */
export interface VoteStageSums {
  readonly votes: number;
  readonly bufferedMs: number;
  readonly committingMs: number;
  readonly requests: number;
  readonly requestMs: number;
}

/** No votes yet: the sums a reading over a process's whole life is taken against. */
export const noVoteStageSums: VoteStageSums = { votes: 0, bufferedMs: 0, committingMs: 0, requests: 0, requestMs: 0 };

/** livevote's sums (its /metrics: the vote stage counters and the vote route's 200 durations). */
export async function livevoteStageSums(baseUrl: string): Promise<VoteStageSums> {
  return stageSumsFromMetrics(await fetchMetricsText(baseUrl));
}

/** The same sums, from a /metrics text already read. */
export function stageSumsFromMetrics(text: string): VoteStageSums {
  const one = (name: string) => metricSamples(text, name)[0]?.value ?? 0;
  const route = (name: string) => metricSamples(text, name).find((s) => s.labels.method === 'POST' && s.labels.route === '/api/v1/votes' && s.labels.status === '200')?.value ?? 0;
  return {
    votes: one('livevote_commit_batch_rows_sum'),
    bufferedMs: one('livevote_vote_buffered_seconds_total') * 1000,
    committingMs: one('livevote_vote_committing_seconds_total') * 1000,
    requests: route('livevote_http_request_duration_seconds_count'),
    requestMs: route('livevote_http_request_duration_seconds_sum') * 1000,
  };
}

/** The durable floor's sums (bench/servers/floor.ts GET /stats). */
export async function floorStageSums(port: number): Promise<VoteStageSums> {
  const sums = (await (await fetch(`http://127.0.0.1:${port}/stats`)).json()) as { votes: number; bufferedMs: number; committingMs: number; requestMs: number };
  return { ...sums, requests: sums.votes };
}

/** Mean ms per stored vote between two readings: buffered, committing, and the rest of its request. */
export function voteStagesMs(before: VoteStageSums, after: VoteStageSums): { buffered: number; committing: number; rest: number } | undefined {
  const votes = after.votes - before.votes;
  const requests = after.requests - before.requests;
  if (!(votes > 0 && requests > 0)) return undefined;
  const buffered = (after.bufferedMs - before.bufferedMs) / votes;
  const committing = (after.committingMs - before.committingMs) / votes;
  const round = (ms: number) => Math.round(ms * 100) / 100;
  return { buffered: round(buffered), committing: round(committing), rest: round((after.requestMs - before.requestMs) / requests - buffered - committing) };
}

export async function fetchMetricsText(baseUrl: string): Promise<string> {
  return (await fetch(`${baseUrl}/metrics`)).text();
}

/** One sample of a metric in the Prometheus text format: its labels and its value. */
export interface MetricSample {
  readonly labels: Readonly<Record<string, string>>;
  readonly value: number;
}

/** Every sample of the metric `name` (exactly that name: no _bucket/_sum suffixes) in `text`. */
export function metricSamples(text: string, name: string): MetricSample[] {
  const samples: MetricSample[] = [];
  for (const line of text.split('\n')) {
    if (!line.startsWith(name) || (line[name.length] !== '{' && line[name.length] !== ' ')) continue;
    const labelsEnd = line[name.length] === '{' ? line.lastIndexOf('}') : name.length - 1;
    const labels: Record<string, string> = {};
    for (const m of line.slice(name.length + 1, Math.max(name.length + 1, labelsEnd)).matchAll(/(\w+)="((?:[^"\\]|\\.)*)"/g)) labels[m[1]!] = m[2]!;
    samples.push({ labels, value: Number(line.slice(labelsEnd + 1).trim().split(' ')[0]) });
  }
  return samples;
}

/** a − b per key. */
export function counterDelta(after: Record<string, number>, before: Record<string, number>): Record<string, number> {
  const out: Record<string, number> = {};
  for (const [key, value] of Object.entries(after)) {
    const delta = value - (before[key] ?? 0);
    if (delta !== 0) out[key] = delta;
  }
  return out;
}
