// `npm run bench`: livevote against the ceiling (bare uWebSockets.js) and against the baseline a
// team would otherwise write (node:http + one INSERT per vote), in one run on this machine, then
// reads, fan-out, the durable floor (what storing before answering alone allows here), memory and
// recovery. Writes bench/RESULTS.md and bench/results.json (never by
// hand) and exits non-zero when a correctness check fails (stored votes ≠ 200 answers).
//
// Every write run has the same shape: wrk, 1 thread, the same connections, POST /api/v1/votes
// with {electionId, candidateId, userId} and a bearer token, every request the next voter of a
// file of pre-registered voters (bench/lua/votes.lua). Order:
//   livevote up (embedded Postgres) → voters → ceiling → livevote against the durable floor
//   (alternating pairs at 100, then at 400 connections) → reads → fan-out → baseline (and its
//   saturation) → journal → recovery → livevote down → memory → livevote restarted under
//   --cpu-prof → profiled write run → abuse controls on → report.
//
// The targets compare livevote with the durable floor. On a shared machine the load changes from
// one minute to the next, so the two are measured in PAIRS, one right after the other (which one
// goes first alternates), BENCH_PAIRS times at each connection count; the ratio reported is the
// median of the pairs' ratios, and the runs shown for each side are those of the median pair.
import { copyFile, mkdir, readdir, rm } from 'node:fs/promises';
import { execFileSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { readFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { createVoters, type TestVoter } from '../infra/testing/voters.ts';
import { loadConfig } from '../infra/config.ts';
import { createPool, type Pool } from '../persistence/db.ts';
import { summariseCpuProfile, type ProfileSummary } from './lib/cpuProfile.ts';
import { runFanout, type FanoutResult } from './lib/fanout.ts';
import {
  adminLogin,
  benchWorkDir,
  buildLivevote,
  counterDelta,
  createOpenElection,
  livevoteCommand,
  startLivevote,
  stopLivevote,
  voteCounters,
  floorStageSums,
  livevoteStageSums,
  voteStagesMs,
  type BenchElection,
  type LivevoteUnderTest,
  type VoteCounters,
} from './lib/livevote.ts';
import { cpuPercent, createQuietWaiter, processTree, repoRoot, runNodeScript, sampleCpu, startBenchServer, type BenchServer, type CpuGroups, type CpuSample } from './lib/proc.ts';
import { writeResults, type BenchResults, type PairReport, type PairsReport, type WriteRunReport } from './lib/report.ts';
import { votesScriptArgs, writeVoterFile, voterLineWidth } from './lib/voterFile.ts';
import { abuseControlsOnEnv } from './lib/writeRuns.ts';
import { ensureWrk, runWrk, type WrkRun } from './lib/wrk.ts';

// ---------------------------------------------------------------------------------------------
// Settings (env overrides for quick local runs; the recorded run uses the defaults)

function intFromEnv(name: string, fallback: number, min: number, max: number): number {
  const value = Number(process.env[name] ?? fallback);
  if (!(Number.isInteger(value) && value >= min && value <= max)) throw new Error(`${name} must be ${min}..${max}`);
  return value;
}

const settings = {
  connections: intFromEnv('BENCH_CONNECTIONS', 100, 1, 10_000),
  writeActiveS: intFromEnv('BENCH_WRITE_S', 8, 2, 600),
  /** livevote / floor pairs per connection count (the ratio is their median). */
  pairs: intFromEnv('BENCH_PAIRS', 3, 1, 15),
  pairActiveS: intFromEnv('BENCH_PAIR_S', 5, 2, 600),
  warmupS: intFromEnv('BENCH_WARMUP_S', 2, 1, 60),
  drainS: 3,
  saturationConnections: intFromEnv('BENCH_SATURATION_CONNECTIONS', 400, 1, 10_000),
  saturationActiveS: intFromEnv('BENCH_SATURATION_S', 6, 2, 600),
  readS: intFromEnv('BENCH_READ_S', 10, 2, 600),
  subscribers: intFromEnv('BENCH_SUBSCRIBERS', 5000, 1, 50_000),
  fanoutActiveS: intFromEnv('BENCH_FANOUT_S', 10, 4, 600),
  profileActiveS: intFromEnv('BENCH_PROFILE_S', 8, 2, 600),
  voters: intFromEnv('BENCH_VOTERS', 300_000, 80_000, 5_000_000),
  recoveryVotes: intFromEnv('BENCH_RECOVERY_VOTES', 1_000_000, 1000, 100_000_000),
  /** Commits per variant of bench/journalFeatures.ts (the cost of each part of the commit statement). */
  featureCommits: intFromEnv('BENCH_FEATURE_COMMITS', 450, 30, 100_000),
  candidates: 4,
  shardCount: 8,
  baselinePoolMax: intFromEnv('BENCH_BASELINE_POOL_MAX', 32, 1, 200),
};
/** Lines [warmupFirst, warmupFirst + warmupLines) warm servers up; the last markerLines are fan-out markers. */
const warmupLines = 59_000;
const markerLines = 400;
const measuredLines = settings.voters - warmupLines - 1000;
const warmupFirst = measuredLines;
const markerFirst = settings.voters - markerLines;
const adminEmail = 'bench-admin@livevote.local';
const adminPassword = randomBytes(18).toString('base64url');
const jwtSecret = randomBytes(48).toString('base64url');

const startedMs = performance.now();
const elapsedS = () => ((performance.now() - startedMs) / 1000).toFixed(1).padStart(5);
const progress = (line: string) => process.stdout.write(`[${elapsedS()} s] ${line}\n`);

// Livevote's environment: embedded mode, generated secrets we know, abuse controls that would
// throttle one synthetic client address switched off explicitly (and said so in RESULTS.md).
const livevoteEnv: Record<string, string | undefined> = {
  LOG_LEVEL: 'info',
  HOST: '127.0.0.1',
  LIVEVOTE_JWT_SECRET: jwtSecret,
  LIVEVOTE_ADMIN_EMAIL: adminEmail,
  LIVEVOTE_ADMIN_PASSWORD: adminPassword,
  LIVEVOTE_RATE_LIMIT_VOTE: 'user=off,ip=off,network=off',
  LIVEVOTE_FRAUD_VOTE_BURST: 'off',
  LIVEVOTE_FRAUD_EMPTY_UA: 'off',
  LIVEVOTE_FRAUD_AUTOMATION_UA: 'off',
  NODE_OPTIONS: undefined,
};
/**
 * The abuse-controls run: the vote rate limits and fraud rules at their defaults (memory backend),
 * and a trusted proxy on loopback whose X-Forwarded-For gives each voter an address of its own
 * (votes.lua also sends a browser's User-Agent then).
 */
const abuseEnv: Record<string, string | undefined> = { ...livevoteEnv, ...abuseControlsOnEnv };
const abuseShownEnv = ['LIVEVOTE_RATE_LIMIT_BACKEND=memory', 'LIVEVOTE_TRUSTED_PROXIES=127.0.0.1'];
const shownEnv = Object.entries(livevoteEnv)
  .filter(([key, value]) => value !== undefined && !/SECRET|PASSWORD/.test(key))
  .map(([key, value]) => `${key}=${value}`);

// ---------------------------------------------------------------------------------------------
// Process bookkeeping: everything started here is stopped here, by pid.

const running = new Set<{ stop: () => Promise<unknown> }>();
function track<T extends { stop: () => Promise<unknown> }>(handle: T): T {
  running.add(handle);
  return handle;
}
async function untrackAndStop(handle: { stop: () => Promise<unknown> }): Promise<unknown> {
  running.delete(handle);
  return handle.stop();
}
async function stopEverything(): Promise<void> {
  for (const handle of [...running].reverse()) {
    running.delete(handle);
    await handle.stop().catch(() => undefined);
  }
}
for (const signal of ['SIGINT', 'SIGTERM'] as const) {
  process.once(signal, () => {
    progress(`${signal}: stopping what the benchmark started`);
    void stopEverything().finally(() => process.exit(130));
  });
}

// ---------------------------------------------------------------------------------------------
// Helpers

function ensureFdLimit(needed: number): { soft: number; raised: boolean } {
  const soft = () => {
    const line = readFileSync('/proc/self/limits', 'utf8').split('\n').find((l) => l.startsWith('Max open files'));
    const value = line?.split(/\s{2,}/)[1];
    return value === 'unlimited' ? Number.MAX_SAFE_INTEGER : Number(value);
  };
  const before = soft();
  if (before >= needed) return { soft: before, raised: false };
  // Children inherit the limit, so raising ours (before anything starts) covers the servers too.
  execFileSync('prlimit', ['--pid', String(process.pid), `--nofile=${Math.max(needed, 65_536)}:${Math.max(needed, 65_536)}`]);
  const after = soft();
  if (after < needed) throw new Error(`open files limit is ${after}, ${needed} needed for ${settings.subscribers} subscribers; raise ulimit -n`);
  return { soft: after, raised: true };
}

function msFromUs(us: number): number {
  return Math.round(us / 10) / 100;
}

/** Samples CPU by group over the middle of a run's active window. */
function cpuWindow(groups: CpuGroups, activeMs: number): { onStart: () => void; result: () => Record<string, number> } {
  let first: CpuSample | undefined;
  let last: CpuSample | undefined;
  return {
    onStart() {
      const lead = Math.min(1000, activeMs * 0.15);
      setTimeout(() => { first = sampleCpu(groups); }, lead).unref();
      setTimeout(() => { last = sampleCpu(groups); }, Math.max(lead + 500, activeMs - 300)).unref();
    },
    result: () => (first && last ? cpuPercent(first, last) : {}),
  };
}

// Bounded, and short: on a box shared all day waiting rarely finds it quiet (2026-12-01: 25 s of
// waiting bought nothing); the pairs, not waiting, keep the load's drift out of the ratios.
const quiet = createQuietWaiter(6_000, progress);
const waitForQuiet = (label: string) => quiet.wait(label);

interface WriteRunOptions {
  readonly label: string;
  readonly port: number;
  readonly election: BenchElection;
  readonly connections: number;
  readonly activeS: number;
  readonly firstLine: number;
  readonly lineCount: number;
  readonly wrap: boolean;
  readonly cpuGroups: (wrkPid: () => number) => CpuGroups;
  readonly candidateIds?: readonly string[];
  /** Each voter's request from an address of its own, in X-Forwarded-For, with a browser's User-Agent (votes.lua). */
  readonly forwardedFor?: boolean;
}

let voterFile = '';

async function writeRun(options: WriteRunOptions): Promise<{ run: WrkRun; cpu: Record<string, number> }> {
  let wrkPid = 0;
  const activeMs = options.activeS * 1000;
  const cpu = cpuWindow(options.cpuGroups(() => wrkPid), activeMs);
  const run = await runWrk({
    url: `http://127.0.0.1:${options.port}/api/v1/votes`,
    connections: options.connections,
    durationS: options.activeS + settings.drainS,
    script: 'votes.lua',
    scriptArgs: votesScriptArgs({
      voterFile, firstLine: options.firstLine, lineCount: options.lineCount, electionId: options.election.electionId,
      candidateIds: options.candidateIds ?? options.election.candidateIds, activeMs, wrap: options.wrap, port: options.port, forwardedFor: options.forwardedFor,
    }),
    onStart: (child) => {
      wrkPid = child.pid ?? 0;
      cpu.onStart();
    },
  });
  return { run, cpu: cpu.result() };
}

function writeRunReport(label: string, connections: number, activeS: number, run: WrkRun, cpu: Record<string, number>): WriteRunReport {
  const l = run.result.latencyUs;
  return {
    label,
    command: run.command,
    connections,
    activeS: Math.round(run.result.activeMs) / 1000,
    requests: run.result.requests,
    ok: run.okCount,
    non2xx: run.result.non2xx,
    socketErrors: run.result.connectErrors + run.result.readErrors + run.result.writeErrors + run.result.timeouts,
    // votes.lua's request() runs once more than requests are sent: wrk calls it to verify the script.
    unanswered: Math.max(0, run.result.sent - 1 - run.result.requests),
    repeats: run.result.repeats,
    votersExhausted: run.result.exhausted === 1,
    rps: Math.round(run.rps),
    okPerS: Math.round(run.okCount / (run.result.activeMs / 1000)),
    latencyMs: { mean: msFromUs(l.mean), p50: msFromUs(l.p50), p90: msFromUs(l.p90), p99: msFromUs(l.p99), p999: msFromUs(l.p999), max: msFromUs(l.max) },
    cpuPercent: cpu,
    loadAverage: run.loadAverageAtStart,
  };
}

async function countStored(pool: Pool, table: 'votes' | 'baseline_votes' | 'floor_votes', electionId: string): Promise<number> {
  const result = await pool.query<{ n: number }>(`SELECT count(*)::int AS n FROM ${table} WHERE election_id = $1`, [electionId]);
  return result.rows[0]!.n;
}

/** Stored rows must equal the 200s wrk saw, with every request answered: else the run fails. */
function countCheck(report: WriteRunReport, stored: number, server?: { before: VoteCounters; after: VoteCounters }): WriteRunReport {
  const problems: string[] = [];
  if (stored !== report.ok) problems.push(`stored ${stored} ≠ ${report.ok} answered 200`);
  if (report.unanswered > 0) problems.push(`${report.unanswered} requests sent and never answered`);
  if (report.repeats > 0) problems.push(`${report.repeats} voters sent twice`);
  let serverOutcomes: Record<string, number> | undefined;
  let serverHttpStatus: Record<string, number> | undefined;
  if (server) {
    serverOutcomes = { ...counterDelta(server.after.outcomes, server.before.outcomes), ...prefixKeys('gateway:', counterDelta(server.after.rejectedAtGateway, server.before.rejectedAtGateway)) };
    serverHttpStatus = counterDelta(server.after.voteHttpStatus, server.before.voteHttpStatus);
    if ((serverHttpStatus['200'] ?? 0) !== report.ok) problems.push(`server answered ${serverHttpStatus['200'] ?? 0} with 200, wrk saw ${report.ok}`);
  }
  return { ...report, stored, countOk: problems.length === 0, countProblems: problems, serverOutcomes, serverHttpStatus };
}

function prefixKeys(prefix: string, record: Record<string, number>): Record<string, number> {
  return Object.fromEntries(Object.entries(record).map(([k, v]) => [`${prefix}${k}`, v]));
}

function gitState(): { commit: string; productChangesUncommitted: number } {
  try {
    const commit = execFileSync('git', ['rev-parse', '--short', 'HEAD'], { cwd: repoRoot, encoding: 'utf8' }).trim();
    const dirty = execFileSync('git', ['status', '--porcelain', '--', 'actors', 'gateway', 'persistence', 'cluster', 'infra'], { cwd: repoRoot, encoding: 'utf8' });
    return { commit, productChangesUncommitted: dirty.split('\n').filter((l) => l.trim() !== '').length };
  } catch {
    return { commit: 'unknown', productChangesUncommitted: -1 };
  }
}

// ---------------------------------------------------------------------------------------------
// The run

async function main(): Promise<number> {
  progress(`livevote benchmark: ${os.availableParallelism()} cores, ${(os.totalmem() / 2 ** 30).toFixed(1)} GiB, Node ${process.version}`);
  const fd = ensureFdLimit(settings.subscribers + 2000);
  const wrkVersionText = ensureWrk(progress);
  progress(`${wrkVersionText}; open files limit ${fd.soft}${fd.raised ? ' (raised)' : ''}`);
  const git = gitState();
  const workDir = await benchWorkDir('livevote-bench-');
  const dataDir = path.join(workDir, 'data');
  const profileDir = path.join(workDir, 'profile');
  voterFile = path.join(workDir, 'voters.txt');
  const config = loadConfig({ ...livevoteEnv, LIVEVOTE_DATA_DIR: dataDir } as NodeJS.ProcessEnv);

  let pool: Pool | undefined;
  try {
    // --- livevote (embedded) and the voters ------------------------------------------------
    buildLivevote(progress);
    progress('starting livevote in embedded mode (DATABASE_URL unset, a fresh LIVEVOTE_DATA_DIR: embedded Postgres)');
    const lvStartMs = performance.now();
    let lv: LivevoteUnderTest = await startLivevote(livevoteEnv, dataDir);
    const lvHandle = track({ stop: () => stopLivevote(lv) });
    progress(`livevote listening on ${lv.port} after ${((performance.now() - lvStartMs) / 1000).toFixed(1)} s`);
    pool = createPool(lv.databaseUrl, 4, 'livevote-bench');
    const postgresVersion = (await pool.query<{ version: string }>('SELECT version()')).rows[0]!.version;
    const postgresSettings = Object.fromEntries(
      (await pool.query<{ name: string; setting: string }>(
        "SELECT name, setting FROM pg_settings WHERE name IN ('fsync','synchronous_commit','full_page_writes','shared_buffers','max_wal_size','wal_level','max_connections')",
      )).rows.map((r) => [r.name, r.setting]),
    );

    progress(`registering ${settings.voters} voters in bulk (infra/testing/voters.ts) and minting their tokens`);
    const votersStartMs = performance.now();
    const half = Math.ceil(settings.voters / 2);
    const voters: TestVoter[] = (await Promise.all([createVoters(pool, half, jwtSecret), createVoters(pool, settings.voters - half, jwtSecret)])).flat();
    await writeVoterFile(voterFile, voters);
    await pool.query('CHECKPOINT');
    const votersS = (performance.now() - votersStartMs) / 1000;
    progress(`${voters.length} voters ready in ${votersS.toFixed(1)} s`);

    const admin = await adminLogin(lv.baseUrl, adminEmail, adminPassword);
    const electionA = await createOpenElection(lv.baseUrl, admin, 'Bench: livevote', settings.candidates, settings.shardCount);
    const electionWarm = await createOpenElection(lv.baseUrl, admin, 'Bench: warm-up', settings.candidates, settings.shardCount);
    const electionB = await createOpenElection(lv.baseUrl, admin, 'Bench: fan-out', settings.candidates, settings.shardCount);
    let postmaster = await lv.postmasterPid();
    const livevoteGroups = (wrkPid: () => number): CpuGroups => ({
      livevote: () => [lv.process.child.pid!],
      postgres: () => processTree(postmaster),
      wrk: () => (wrkPid() ? [wrkPid()] : []),
    });

    // --- ceiling -------------------------------------------------------------------------------
    progress('ceiling: bare uWebSockets.js server, fixed JSON answer');
    const ceilingServer = track(await startBenchServer('bench/servers/ceiling.ts', { PORT: '0' }));
    const ceilingGroups = (wrkPid: () => number): CpuGroups => ({ server: () => [ceilingServer.child.pid!], wrk: () => (wrkPid() ? [wrkPid()] : []) });
    const common = { election: electionA, connections: settings.connections, wrap: true } as const;
    await writeRun({ ...common, label: 'ceiling warm-up', port: ceilingServer.port, activeS: settings.warmupS, firstLine: warmupFirst, lineCount: warmupLines, cpuGroups: ceilingGroups });
    await waitForQuiet('ceiling');
    const ceilingRaw = await writeRun({ ...common, label: 'ceiling', port: ceilingServer.port, activeS: settings.writeActiveS, firstLine: 0, lineCount: measuredLines, cpuGroups: ceilingGroups });
    await untrackAndStop(ceilingServer);
    const ceiling = writeRunReport('ceiling', settings.connections, settings.writeActiveS, ceilingRaw.run, ceilingRaw.cpu);
    progress(`ceiling: ${ceiling.rps} req/s, p99 ${ceiling.latencyMs.p99} ms (wrk CPU ${ceiling.cpuPercent.wrk}%, server ${ceiling.cpuPercent.server}%)`);

    // --- livevote against the durable floor, in pairs ----------------------------------------------
    /**
     * A comparison server writing to a database of its own on livevote's Postgres server, started
     * and warmed up on the warm-up lines. Those rows stay: `stored()` is net of them.
     */
    const startStoringServer = async (label: string, script: string, database: string, table: 'baseline_votes' | 'floor_votes', env: Record<string, string>, nodeArgs: string[] = []) => {
      const databaseUrl = lv.databaseUrl.replace(/\/livevote$/, `/${database}`);
      const server: BenchServer = track(await startBenchServer(script, { PORT: '0', DATABASE_URL: databaseUrl, ...env }, { nodeArgs }));
      const groups = (wrkPid: () => number): CpuGroups => ({ server: () => [server.child.pid!], postgres: () => processTree(postmaster), wrk: () => (wrkPid() ? [wrkPid()] : []) });
      await writeRun({ label: `${label} warm-up`, port: server.port, election: electionA, connections: settings.connections, activeS: settings.warmupS, firstLine: warmupFirst, lineCount: warmupLines, wrap: false, cpuGroups: groups });
      const countPool = createPool(databaseUrl, 2, 'livevote-bench');
      const warmupRows = await countStored(countPool, table, electionA.electionId);
      await pool!.query('CHECKPOINT');
      return {
        server,
        groups,
        stored: async (electionId = electionA.electionId) => (await countStored(countPool, table, electionId)) - (electionId === electionA.electionId ? warmupRows : 0),
        end: () => countPool.end(),
      };
    };
    progress('durable floor: bare uWebSockets.js + group-committed INSERT per batch, nothing else, same Postgres (bench/servers/floor.ts)');
    await pool.query('CREATE DATABASE bench_floor');
    // The V8 flag livevote's entry sets (infra/main.ts): the floor gets every process-level tuning livevote has.
    const floorSide = await startStoringServer('floor', 'bench/servers/floor.ts', 'bench_floor', 'floor_votes', {}, ['--no-lazy-feedback-allocation']);
    progress(`livevote: POST /api/v1/votes, every request a new voter; against the floor in ${settings.pairs} pairs at ${settings.connections} and at ${settings.saturationConnections} connections`);
    await writeRun({ label: 'livevote warm-up', port: lv.port, election: electionWarm, connections: settings.connections, activeS: settings.warmupS, firstLine: 0, lineCount: measuredLines, wrap: false, cpuGroups: livevoteGroups });
    const pairElections: BenchElection[] = [];
    /** One livevote run, its stored rows and livevote's own counters checked against wrk's 200s. */
    const livevoteRun = async (label: string, election: BenchElection, connections: number, activeS: number): Promise<WriteRunReport> => {
      const before = await voteCounters(lv.baseUrl);
      const stagesBefore = await livevoteStageSums(lv.baseUrl);
      const raw = await writeRun({ label, port: lv.port, election, connections, activeS, firstLine: 0, lineCount: measuredLines, wrap: false, cpuGroups: livevoteGroups });
      await new Promise((resolve) => setTimeout(resolve, 500));
      const report = { ...writeRunReport(label, connections, activeS, raw.run, raw.cpu), voteStagesMs: voteStagesMs(stagesBefore, await livevoteStageSums(lv.baseUrl)) };
      return countCheck(report, await countStored(pool!, 'votes', election.electionId), { before, after: await voteCounters(lv.baseUrl) });
    };
    const floorRun = async (label: string, election: BenchElection, connections: number, activeS: number): Promise<WriteRunReport> => {
      const stagesBefore = await floorStageSums(floorSide.server.port);
      const raw = await writeRun({ label, port: floorSide.server.port, election, connections, activeS, firstLine: 0, lineCount: measuredLines, wrap: false, cpuGroups: floorSide.groups });
      const report = { ...writeRunReport(label, connections, activeS, raw.run, raw.cpu), voteStagesMs: voteStagesMs(stagesBefore, await floorStageSums(floorSide.server.port)) };
      return countCheck(report, await floorSide.stored(election.electionId));
    };
    const runPairs = async (connections: number, name: string): Promise<PairsReport> => {
      await waitForQuiet(`pairs at ${connections} connections`);
      const pairs: PairReport[] = [];
      for (let k = 1; k <= settings.pairs; k++) {
        // A fresh election per pair; the floor stores the same voters under the same id in its own table.
        const election = await createOpenElection(lv.baseUrl, admin, `Bench: ${name} ${k}`, settings.candidates, settings.shardCount);
        pairElections.push(election);
        const runLivevote = () => livevoteRun(`${name} ${k}`, election, connections, settings.pairActiveS);
        const runFloor = () => floorRun(`durable floor${connections === settings.connections ? '' : ' saturation'} ${k}`, election, connections, settings.pairActiveS);
        // Which side goes first alternates, so a drift of the machine's load reaches both alike.
        const livevoteFirst = k % 2 === 1;
        const first = livevoteFirst ? await runLivevote() : await runFloor();
        const second = livevoteFirst ? await runFloor() : await runLivevote();
        const livevote = livevoteFirst ? first : second;
        const floor = livevoteFirst ? second : first;
        pairs.push({ livevote, floor, ratio: livevote.okPerS / Math.max(1, floor.okPerS) });
        progress(`pair ${k} at ${connections} connections: livevote ${livevote.okPerS} votes/s (p99 ${livevote.latencyMs.p99} ms), floor ${floor.okPerS} votes/s: ${(livevote.okPerS / Math.max(1, floor.okPerS)).toFixed(3)}×; load average ${livevote.loadAverage}; counts ${livevote.countOk && floor.countOk ? 'ok' : 'FAILED'}`);
      }
      const byRatio = [...pairs].sort((a, b) => a.ratio - b.ratio);
      const median = byRatio[Math.floor((byRatio.length - 1) / 2)]!;
      return { connections, pairs, medianRatio: median.ratio, median };
    };
    const pairs100 = await runPairs(settings.connections, 'livevote');
    const pairs400 = await runPairs(settings.saturationConnections, 'livevote saturation');
    await untrackAndStop(floorSide.server);
    await floorSide.end();
    const livevote = pairs100.median.livevote;
    const floor = pairs100.median.floor;
    const saturation = pairs400.median.livevote;
    const floorSaturation = pairs400.median.floor;
    progress(`livevote / floor, median of ${settings.pairs} pairs: ${pairs100.medianRatio.toFixed(3)} at ${settings.connections} connections, ${pairs400.medianRatio.toFixed(3)} at ${settings.saturationConnections}`);

    // --- reads ---------------------------------------------------------------------------------
    progress(`reads: GET /api/v1/results/live/{id}, ${settings.connections} connections`);
    const readUrl = `${lv.baseUrl}/api/v1/results/live/${pairElections[0]!.electionId}`;
    await runWrk({ url: readUrl, connections: settings.connections, durationS: 1, script: 'report.lua' });
    await waitForQuiet('reads');
    let readWrkPid = 0;
    const readCpu = cpuWindow(livevoteGroups(() => readWrkPid), settings.readS * 1000);
    const readRun = await runWrk({ url: readUrl, connections: settings.connections, durationS: settings.readS, script: 'report.lua', onStart: (c) => { readWrkPid = c.pid ?? 0; readCpu.onStart(); } });
    const reads = writeRunReport('reads', settings.connections, settings.readS, readRun, readCpu.result());
    progress(`reads: ${reads.rps} req/s, p99 ${reads.latencyMs.p99} ms, non-2xx ${reads.non2xx}`);

    // --- fan-out -------------------------------------------------------------------------------
    progress(`fan-out: ${settings.subscribers} WebSocket subscribers on one election while votes flow (${settings.connections} connections)`);
    await waitForQuiet('fan-out');
    let fanoutWrk: { run: WrkRun; cpu: Record<string, number> } | undefined;
    const fanout: FanoutResult = await runFanout({
      port: lv.port,
      electionId: electionB.electionId,
      markerCandidateId: electionB.candidateIds[settings.candidates - 1]!,
      subscriberToken: voters[markerFirst - 1]!.token,
      subscribers: settings.subscribers,
      markerVoters: voters.slice(markerFirst),
      markerWindowMs: { startMs: 1000, endMs: settings.fanoutActiveS * 1000 - 500 },
      log: progress,
      load: async () => {
        fanoutWrk = await writeRun({
          label: 'fan-out load', port: lv.port, election: electionB, connections: settings.connections, activeS: settings.fanoutActiveS,
          firstLine: 0, lineCount: measuredLines, wrap: false, candidateIds: electionB.candidateIds.slice(0, settings.candidates - 1),
          cpuGroups: (wrkPid) => ({ ...livevoteGroups(wrkPid), 'bench (subscribers)': () => [process.pid] }),
        });
        return fanoutWrk;
      },
    });
    const fanoutLoad = writeRunReport('fan-out load', settings.connections, settings.fanoutActiveS, fanoutWrk!.run, fanoutWrk!.cpu);
    progress(`fan-out: commit→delivery p50 ${fanout.commitToDeliveryMs.p50.toFixed(0)} ms, p99 ${fanout.commitToDeliveryMs.p99.toFixed(0)} ms over ${fanout.commitToDeliveryMs.count} deliveries (${fanout.markers} markers); votes flowing at ${fanoutLoad.okPerS}/s`);

    // --- baseline ------------------------------------------------------------------------------
    progress('baseline: node:http + the same JWT verifier + INSERT … ON CONFLICT DO NOTHING per vote, same Postgres');
    await pool.query('CREATE DATABASE bench_baseline');
    await pool.query('CHECKPOINT');
    const baselineSide = await startStoringServer('baseline', 'bench/servers/baseline.ts', 'bench_baseline', 'baseline_votes', {
      LIVEVOTE_JWT_SECRET: jwtSecret, BASELINE_ELECTION_ID: electionA.electionId,
      BASELINE_CANDIDATE_IDS: electionA.candidateIds.join(','), BASELINE_POOL_MAX: String(settings.baselinePoolMax),
    });
    const { server: baselineServer, groups: baselineGroups } = baselineSide;
    await waitForQuiet('baseline');
    // Its two runs share one election: each walks half of the voter lines.
    const halfLines = Math.floor(measuredLines / 2);
    const baseRaw = await writeRun({ label: 'baseline', port: baselineServer.port, election: electionA, connections: settings.connections, activeS: settings.writeActiveS, firstLine: 0, lineCount: halfLines, wrap: false, cpuGroups: baselineGroups });
    const afterFirst = await baselineSide.stored();
    const baseline = countCheck(writeRunReport('baseline', settings.connections, settings.writeActiveS, baseRaw.run, baseRaw.cpu), afterFirst);
    progress(`baseline: ${baseline.okPerS} votes/s, p99 ${baseline.latencyMs.p99} ms; stored ${baseline.stored} = 200s ${baseline.ok}: ${baseline.countOk ? 'ok' : 'FAILED'}`);
    await waitForQuiet('baseline saturation');
    const baseSatRaw = await writeRun({ label: 'baseline saturation', port: baselineServer.port, election: electionA, connections: settings.saturationConnections, activeS: settings.saturationActiveS, firstLine: halfLines, lineCount: measuredLines - halfLines, wrap: false, cpuGroups: baselineGroups });
    await untrackAndStop(baselineServer);
    const baselineSaturation = countCheck(
      writeRunReport('baseline saturation', settings.saturationConnections, settings.saturationActiveS, baseSatRaw.run, baseSatRaw.cpu),
      (await baselineSide.stored()) - afterFirst,
    );
    await baselineSide.end();
    progress(`baseline saturation: ${baselineSaturation.okPerS} votes/s, p99 ${baselineSaturation.latencyMs.p99} ms; count ${baselineSaturation.countOk ? 'ok' : 'FAILED'}`);

    // --- journal (bench/journal.ts: the persistence path alone) ----------------------------------
    progress('journal: PgJournal alone (bench/journal.ts), 200,000 rows in batches of 2,000, 2 commits in flight');
    const serverUrl = lv.databaseUrl.replace(/\/livevote$/, '/postgres');
    const journalOut = await runNodeScript('bench/journal.ts', { DATABASE_URL: serverUrl, LIVEVOTE_TEST_SERVER_URL: undefined });
    const journal = JSON.parse(journalOut.trim().split('\n').pop()!) as Record<string, number>;
    progress(`journal: ${journal.rowsPerS} rows/s, commit p50 ${journal.commitLatencyMsP50} ms, p99 ${journal.commitLatencyMsP99} ms`);

    // --- what each part of storing a vote costs Postgres (bench/journalFeatures.ts) ---------------
    progress('journal features: the commit statement with and without the audit chain and the fence, the floor insert, the metadata COPY (bench/journalFeatures.ts)');
    const featuresOut = await runNodeScript('bench/journalFeatures.ts', {
      DATABASE_URL: serverUrl, LIVEVOTE_TEST_SERVER_URL: undefined, BENCH_BATCH_ROWS: '32', BENCH_COMMITS: String(settings.featureCommits), BENCH_ROUNDS: '3',
    });
    const journalFeatures = JSON.parse(/BENCH_JOURNAL_FEATURES_JSON (.*)/.exec(featuresOut)![1]!) as BenchResults['journalFeatures'];
    progress(`journal features: ${journalFeatures.variants.map((v) => `${v.name} ${v.postgresUsPerVote} µs`).join(', ')}`);

    // --- recovery ------------------------------------------------------------------------------
    progress(`recovery: ${settings.recoveryVotes.toLocaleString('en')} stored votes, snapshot + tail through VoteNode.openElection (bench/recovery.ts)`);
    const recoveryOut = await runNodeScript('bench/recovery.ts', {
      DATABASE_URL: serverUrl, LIVEVOTE_TEST_SERVER_URL: undefined, RECOVERY_VOTES: String(settings.recoveryVotes), RECOVERY_FULL_REPLAY: '1',
    });
    const recovery = JSON.parse(/BENCH_RECOVERY_JSON (.*)/.exec(recoveryOut)![1]!) as BenchResults['recovery'];
    progress(`recovery: ${recovery.recoveryS.toFixed(2)} s from snapshot + ${recovery.tailVotes.toLocaleString('en')}-vote tail; ${recovery.fullReplayS?.toFixed(2)} s with no snapshot`);

    // --- livevote down, memory -------------------------------------------------------------------
    const electionNames = new Map([
      [electionA.electionId, 'ceiling and comparison servers\' warm-up'], [electionWarm.electionId, 'warm-up'], [electionB.electionId, 'fan-out'],
      ...pairElections.map((election, i) => [election.electionId, i < settings.pairs ? `livevote pair ${i + 1}` : `saturation pair ${i - settings.pairs + 1}`] as const),
    ]);
    const storedByElection = new Map(
      (await pool.query<{ election_id: string; n: number }>('SELECT election_id::text, count(*)::int AS n FROM votes GROUP BY election_id')).rows.map((row) => [row.election_id, row.n]),
    );
    await pool.end();
    pool = undefined;
    running.delete(lvHandle);
    const firstExit = await stopLivevote(lv);
    progress(`livevote stopped (exit ${firstExit})`);

    progress('memory: shard state of a 300M-voter election, votes spread over every shard (bench/memory.ts)');
    const memoryOut = await runNodeScript('bench/memory.ts', {}, ['--expose-gc', '--max-semi-space-size=1']);
    const memory = JSON.parse(/BENCH_MEMORY_JSON (.*)/.exec(memoryOut)![1]!) as BenchResults['memory'];
    progress(`memory: bitmaps ${(memory.bitmapBytes / 1e6).toFixed(2)} MB for ${memory.voters.toLocaleString('en')} voters (ideal ${(memory.idealBytes / 1e6).toFixed(2)} MB, ×${memory.ratio.toFixed(3)}), RSS +${(memory.rssDeltaBytes / 1e6).toFixed(1)} MB`);

    // --- profile: livevote restarted under --cpu-prof ----------------------------------------------
    progress(`profile: livevote restarted under node --cpu-prof (it recovers its elections), one more write run at ${settings.saturationConnections} connections`);
    await mkdir(profileDir, { recursive: true });
    const restartMs = performance.now();
    lv = await startLivevote(livevoteEnv, dataDir, ['--cpu-prof', `--cpu-prof-dir=${profileDir}`]);
    const profiledHandle = track({ stop: () => stopLivevote(lv) });
    postmaster = await lv.postmasterPid();
    const restartS = (performance.now() - restartMs) / 1000;
    const restartRecovery = [...lv.process.output().matchAll(/^.*"election served".*$/gm)].map((m) => {
      const line = JSON.parse(m[0]) as { electionId: string; recoveryMs: number };
      return { electionId: line.electionId, name: electionNames.get(line.electionId) ?? '?', votes: storedByElection.get(line.electionId) ?? 0, recoveryMs: line.recoveryMs };
    });
    const profAdmin = await adminLogin(lv.baseUrl, adminEmail, adminPassword);
    const electionC = await createOpenElection(lv.baseUrl, profAdmin, 'Bench: profile', settings.candidates, settings.shardCount);
    await waitForQuiet('profile');
    const windowFromUs = Number(process.hrtime.bigint() / 1000n) + 1_000_000;
    const profRaw = await writeRun({
      label: 'livevote (profiled)', port: lv.port, election: electionC, connections: settings.saturationConnections, activeS: settings.profileActiveS,
      firstLine: 0, lineCount: measuredLines, wrap: false, cpuGroups: livevoteGroups,
    });
    const windowToUs = windowFromUs - 1_000_000 + Math.round(profRaw.run.result.activeMs * 1000);
    const profiled = writeRunReport('livevote (profiled)', settings.saturationConnections, settings.profileActiveS, profRaw.run, profRaw.cpu);
    running.delete(profiledHandle);
    const secondExit = await stopLivevote(lv);
    const profilePid = lv.process.child.pid;
    const profileFile = (await readdir(profileDir)).find((f) => f.includes(`.${profilePid}.`) && f.endsWith('.cpuprofile'));
    if (!profileFile) throw new Error(`no CPU profile of pid ${profilePid} in ${profileDir}`);
    const profile: ProfileSummary = await summariseCpuProfile(path.join(profileDir, profileFile), { fromUs: windowFromUs, toUs: windowToUs });
    // Kept outside the work dir (which is removed) for a closer look in Chrome DevTools or speedscope.
    const keptProfile = path.join(os.tmpdir(), `livevote-bench-${new Date().toISOString().replace(/[:.]/g, '-')}.cpuprofile`);
    await copyFile(path.join(profileDir, profileFile), keptProfile);
    progress(`profile kept at ${keptProfile}`);
    progress(`profile: ${profiled.okPerS} votes/s under the profiler; ${profile.samples} samples, ${profile.idlePercent}% idle; livevote stopped (exit ${secondExit})`);

    // --- abuse controls on: rate limits and fraud rules as configured by default -------------------
    progress(`abuse controls on: livevote restarted with its default rate limits and fraud rules (memory backend), each voter from an address of its own through a trusted proxy, with a browser's User-Agent`);
    lv = await startLivevote(abuseEnv, dataDir);
    const abuseHandle = track({ stop: () => stopLivevote(lv) });
    postmaster = await lv.postmasterPid();
    const abuseAdmin = await adminLogin(lv.baseUrl, adminEmail, adminPassword);
    const electionAbuseWarm = await createOpenElection(lv.baseUrl, abuseAdmin, 'Bench: abuse controls on, warm-up', settings.candidates, settings.shardCount);
    const electionAbuse = await createOpenElection(lv.baseUrl, abuseAdmin, 'Bench: abuse controls on', settings.candidates, settings.shardCount);
    await writeRun({ label: 'abuse warm-up', port: lv.port, election: electionAbuseWarm, connections: settings.connections, activeS: settings.warmupS, firstLine: 0, lineCount: measuredLines, wrap: false, forwardedFor: true, cpuGroups: livevoteGroups });
    await waitForQuiet('abuse controls on');
    const abuseBefore = await voteCounters(lv.baseUrl);
    const abuseRaw = await writeRun({ label: 'livevote, abuse controls on', port: lv.port, election: electionAbuse, connections: settings.connections, activeS: settings.saturationActiveS, firstLine: 0, lineCount: measuredLines, wrap: false, forwardedFor: true, cpuGroups: livevoteGroups });
    await new Promise((resolve) => setTimeout(resolve, 500));
    const abuseCountPool = createPool(lv.databaseUrl, 2, 'livevote-bench');
    const abuseOn = countCheck(
      writeRunReport('livevote, abuse controls on', settings.connections, settings.saturationActiveS, abuseRaw.run, abuseRaw.cpu),
      await countStored(abuseCountPool, 'votes', electionAbuse.electionId),
      { before: abuseBefore, after: await voteCounters(lv.baseUrl) },
    );
    await abuseCountPool.end();
    running.delete(abuseHandle);
    await stopLivevote(lv);
    progress(`abuse controls on: ${abuseOn.okPerS} votes/s, p99 ${abuseOn.latencyMs.p99} ms, ≥400 ${abuseOn.non2xx}; count ${abuseOn.countOk ? 'ok' : 'FAILED'}`);

    // --- report --------------------------------------------------------------------------------
    const totalS = (performance.now() - startedMs) / 1000;
    const results: BenchResults = {
      generatedAt: new Date().toISOString(),
      totalS,
      git,
      machine: {
        cpuModel: os.cpus()[0]?.model ?? 'unknown',
        cores: os.availableParallelism(),
        memoryGiB: Math.round((os.totalmem() / 2 ** 30) * 10) / 10,
        kernel: `${os.type()} ${os.release()}`,
        node: process.version,
        postgres: postgresVersion,
        postgresSettings,
        wrk: wrkVersionText,
        uws: (JSON.parse(readFileSync(path.join(repoRoot, 'node_modules/uWebSockets.js/package.json'), 'utf8')) as { version: string }).version,
        openFilesLimit: fd.soft,
        loadAverageAtEnd: os.loadavg().map((v) => Math.round(v * 100) / 100),
      },
      settings: { ...settings, voterLineWidth, measuredLines, drainS: settings.drainS },
      livevoteConfig: {
        command: ['node', ...livevoteCommand([]).slice(1).map((arg) => (path.isAbsolute(arg) ? path.relative(repoRoot, arg) : arg))].join(' '),
        env: shownEnv,
        flushIntervalMs: config.flushIntervalMs,
        batchRowsMax: config.batchRowsMax,
        commitsInFlightMax: config.commitsInFlightMax,
        commitDeadlineMs: config.commitDeadlineMs,
        pendingVotesMax: config.pendingVotesMax,
        snapshotIntervalMs: config.snapshotIntervalMs,
        dbPoolMax: config.dbPoolMax,
      },
      votersS,
      quietWaitedS: quiet.waitedMs() / 1000,
      ceiling,
      livevote,
      saturation,
      baseline,
      baselineSaturation,
      floor,
      floorSaturation,
      pairs: [pairs100, pairs400],
      abuseOn,
      abuseEnv: abuseShownEnv,
      reads,
      fanout: { ...fanout, loadResult: undefined, load: fanoutLoad },
      journal,
      journalFeatures: { ...journalFeatures, loadAverage: Math.round(os.loadavg()[0]! * 100) / 100 },
      recovery,
      memory,
      restart: { startS: restartS, elections: restartRecovery, exitCodes: [firstExit, secondExit] },
      profiled,
      profile,
    };
    const verdict = await writeResults(results, path.join(repoRoot, 'bench'));
    progress(`wrote bench/RESULTS.md and bench/results.json in ${totalS.toFixed(0)} s`);
    for (const line of verdict.lines) progress(line);
    return verdict.failed ? 1 : 0;
  } finally {
    await pool?.end().catch(() => undefined);
    await stopEverything();
    await rm(workDir, { recursive: true, force: true }).catch(() => undefined);
  }
}

main().then(
  (code) => process.exit(code),
  async (error: unknown) => {
    process.stderr.write(`benchmark failed: ${error instanceof Error ? (error.stack ?? error.message) : String(error)}\n`);
    await stopEverything();
    process.exit(1);
  },
);
