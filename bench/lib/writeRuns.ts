// The write run of `npm run bench` (wrk, every request a new voter) once per livevote
// configuration, each on a freshly started process over one embedded data dir, with the CPU of
// livevote, Postgres and wrk sampled over the measured window. Shared by bench/knobs.ts (a sweep)
// and bench/quick.ts (one run while working on the hot path); bench/abBuilds.ts uses its one run
// (runVotes) against processes it keeps.
import { rm } from 'node:fs/promises';
import { randomBytes } from 'node:crypto';
import path from 'node:path';
import { createVoters, remintAccessTokens, type TestVoter } from '../../infra/testing/voters.ts';
import { accessTokenTtlS } from '../../gateway/auth/jwt.ts';
import { createPool } from '../../persistence/db.ts';
import { adminLogin, benchWorkDir, createOpenElection, fetchMetricsText, metricSamples, noVoteStageSums, stageSumsFromMetrics, startLivevote, stopLivevote, voteStagesMs, type BenchElection, type LivevoteUnderTest } from './livevote.ts';
import { cpuPercent, mainThreadCpuS, processTree, sampleCpu, type CpuSample } from './proc.ts';
import { votesScriptArgs, writeVoterFile } from './voterFile.ts';
import { ensureWrk, runWrk, type WrkRun } from './wrk.ts';

export interface WriteRun {
  readonly env: Record<string, string | undefined>;
  readonly votesPerS: number;
  readonly latencyMs: { p50: number; p90: number; p99: number; mean: number };
  /** Percent of one core per process group over the measured window. */
  readonly cpuPercent: Record<string, number>;
  readonly non2xx: number;
  /** The machine's 1-minute load average when the measured wrk started. */
  readonly loadAverageAtStart: number;
  /** livevote's own event-loop delay over its life (prom-client's default metrics), in ms. */
  readonly eventLoopDelayMs: { p50: number; p99: number; max: number };
  /** Group commits over livevote's life (its /metrics): mean duration and rows per batch. */
  readonly commits: { count: number; meanMs: number; meanRows: number };
  /**
   * A stored vote's mean time on the server over livevote's life (its /metrics), in ms: buffered
   * (the vote node's receipt → its batch's commit starts), committing (its batch's commit), and
   * the rest of the request's time (`POST /api/v1/votes` answered 200: the way in and the way
   * back, the cast's shard turn and the reply).
   */
  readonly voteStagesMs: { buffered: number; committing: number; rest: number };
  /** Shard actor messages (runs) and shard messages per vote stored, over livevote's life (its /metrics). */
  readonly actors: { runsPerVote: number; messagesPerRun: number };
}

export interface WriteRunOptions {
  /** Over writeRunBaseEnv; undefined takes a setting back to livevote's default. */
  readonly configs: readonly Record<string, string | undefined>[];
  readonly connections: number;
  readonly activeS: number;
  /** wrk's run before the measured one, on an election of its own (default 4 s). */
  readonly warmUpS?: number;
  /** wrk's time after the measured window for the answers still in flight (default 3 s). */
  readonly drainS?: number;
  readonly voterCount: number;
  /** Called before each measured run (e.g. to wait for a quiet machine). */
  readonly beforeRun?: (env: Record<string, string | undefined>) => Promise<void>;
  /** Called with each run once it is measured (progress). */
  readonly afterRun?: (run: WriteRun) => void;
  /** Node flags for the livevote process (e.g. --cpu-prof). */
  readonly nodeArgs?: readonly string[];
  /** Each voter from an address of its own, in X-Forwarded-For, with a browser's User-Agent (votes.lua); pair with LIVEVOTE_TRUSTED_PROXIES=127.0.0.1. */
  readonly forwardedFor?: boolean;
  readonly log: (line: string) => void;
}

export function describeConfig(env: Record<string, string | undefined>): string {
  return Object.keys(env).length === 0 ? 'defaults (flush 4 ms, 2 in flight)' : Object.entries(env).map(([k, v]) => `${k}=${v ?? '(default)'}`).join(' ');
}

/** livevote's settings for a write run, with a new JWT secret and admin password. */
export function writeRunBaseEnv() {
  return {
    LOG_LEVEL: 'info',
    LIVEVOTE_JWT_SECRET: randomBytes(48).toString('base64url'),
    LIVEVOTE_ADMIN_EMAIL: 'bench-admin@livevote.local',
    LIVEVOTE_ADMIN_PASSWORD: randomBytes(18).toString('base64url'),
    // One client address sends everything: per-IP limits and client rules would refuse it.
    LIVEVOTE_RATE_LIMIT_VOTE: 'user=off,ip=off,network=off',
    LIVEVOTE_FRAUD_VOTE_BURST: 'off',
    LIVEVOTE_FRAUD_EMPTY_UA: 'off',
    LIVEVOTE_FRAUD_AUTOMATION_UA: 'off',
  };
}

/**
 * Over writeRunBaseEnv: the vote rate limits and fraud rules at their defaults (memory backend),
 * behind a trusted proxy on loopback, so that with `forwardedFor` each voter comes from an address
 * of its own, with a browser's User-Agent (npm run bench's abuse-controls run, quick.ts and abBuilds.ts with BENCH_ABUSE_ON=1).
 */
export const abuseControlsOnEnv: Record<string, string | undefined> = {
  LIVEVOTE_RATE_LIMIT_VOTE: undefined,
  LIVEVOTE_FRAUD_VOTE_BURST: undefined,
  LIVEVOTE_FRAUD_EMPTY_UA: undefined,
  LIVEVOTE_FRAUD_AUTOMATION_UA: undefined,
  LIVEVOTE_RATE_LIMIT_BACKEND: 'memory',
  LIVEVOTE_TRUSTED_PROXIES: '127.0.0.1',
};

export async function measureWriteRuns(options: WriteRunOptions): Promise<WriteRun[]> {
  const { connections, activeS, voterCount, log } = options;
  const baseEnv = writeRunBaseEnv();
  const { LIVEVOTE_JWT_SECRET: jwtSecret, LIVEVOTE_ADMIN_PASSWORD: adminPassword } = baseEnv;
  ensureWrk(log);
  const workDir = await benchWorkDir('livevote-writes-');
  const voterFile = path.join(workDir, 'voters.txt');
  const runs: WriteRun[] = [];
  let voters: TestVoter[] = [];
  let tokensMintedAtMs = 0;
  let lv: LivevoteUnderTest | undefined;
  try {
    for (const env of options.configs) {
      lv = await startLivevote({ ...baseEnv, ...env }, path.join(workDir, 'data'), options.nodeArgs ?? []);
      const current = lv;
      if (runs.length === 0) {
        const pool = createPool(current.databaseUrl, 4, 'livevote-bench');
        voters = await createVoters(pool, voterCount, jwtSecret);
        tokensMintedAtMs = Date.now();
        await writeVoterFile(voterFile, voters);
        await pool.end();
      } else if (Date.now() - tokensMintedAtMs > (accessTokenTtlS * 1000) / 2) {
        // Runs of a long series (bench:features: ~20 minutes at 6 pairs) outlive the tokens,
        // which would then be refused 401 and leave nothing to measure.
        voters = remintAccessTokens(voters, jwtSecret);
        tokensMintedAtMs = Date.now();
        await writeVoterFile(voterFile, voters);
      }
      const admin = await adminLogin(current.baseUrl, baseEnv.LIVEVOTE_ADMIN_EMAIL, adminPassword);
      const voterLines = { voterFile, voterCount, forwardedFor: options.forwardedFor };
      const warmUpS = options.warmUpS ?? 4;
      await runVotes(current, { ...voterLines, election: await createOpenElection(current.baseUrl, admin, 'Writes: warm-up', 4, 8), connections, activeS: warmUpS / 2, drainS: warmUpS / 2 });
      const election = await createOpenElection(current.baseUrl, admin, 'Writes', 4, 8);
      await options.beforeRun?.(env);
      const { run, cpuPercent: cpu } = await runVotes(current, { ...voterLines, election, connections, activeS, drainS: options.drainS ?? 3 });
      const l = run.result.latencyUs;
      const metrics = await fetchMetricsText(current.baseUrl);
      const sample = (name: string, outcome?: string) =>
        metricSamples(metrics, name).find((s) => s.labels.outcome === outcome)?.value ?? Number.NaN;
      const gauge = (name: string) => sample(name) * 1000;
      const commitCount = sample('livevote_commit_duration_seconds_count', 'committed');
      runs.push({
        env,
        votesPerS: Math.round(run.okCount / (run.result.activeMs / 1000)),
        latencyMs: { p50: l.p50 / 1000, p90: l.p90 / 1000, p99: l.p99 / 1000, mean: Math.round(l.mean) / 1000 },
        cpuPercent: cpu,
        non2xx: run.result.non2xx,
        loadAverageAtStart: run.loadAverageAtStart,
        commits: {
          count: commitCount,
          meanMs: Math.round((sample('livevote_commit_duration_seconds_sum', 'committed') / commitCount) * 1e6) / 1000,
          meanRows: Math.round(sample('livevote_commit_batch_rows_sum') / sample('livevote_commit_batch_rows_count')),
        },
        voteStagesMs: voteStagesMs(noVoteStageSums, stageSumsFromMetrics(metrics)) ?? { buffered: Number.NaN, committing: Number.NaN, rest: Number.NaN },
        actors: {
          runsPerVote: Math.round((sample('livevote_shard_actor_runs_total') / sample('livevote_commit_batch_rows_sum')) * 1000) / 1000,
          messagesPerRun: Math.round((sample('livevote_shard_actor_messages_total') / sample('livevote_shard_actor_runs_total')) * 100) / 100,
        },
        eventLoopDelayMs: {
          p50: gauge('livevote_nodejs_eventloop_lag_p50_seconds'),
          p99: gauge('livevote_nodejs_eventloop_lag_p99_seconds'),
          max: gauge('livevote_nodejs_eventloop_lag_max_seconds'),
        },
      });
      options.afterRun?.(runs.at(-1)!);
      await stopLivevote(current);
      lv = undefined;
    }
  } finally {
    if (lv) await stopLivevote(lv);
    await rm(workDir, { recursive: true, force: true });
  }
  return runs;
}

export interface VotesRunOptions {
  readonly election: BenchElection;
  readonly voterFile: string;
  readonly voterCount: number;
  readonly connections: number;
  /** The measured window; wrk runs drainS longer, so every request sent is answered. */
  readonly activeS: number;
  readonly drainS: number;
  readonly forwardedFor?: boolean;
  /** CPU sampled from this long after wrk starts to this long before the window ends (default 1000 and 300 ms). */
  readonly cpuWindowMarginsMs?: { readonly afterStart: number; readonly beforeEnd: number };
}

/**
 * One wrk run of votes.lua against a running livevote, every request the next voter of the file,
 * with the CPU of livevote (and of its main thread: the event loop's own share, livevote's process
 * CPU also counting V8's and libuv's threads), its Postgres and wrk sampled inside the window.
 */
export async function runVotes(lv: LivevoteUnderTest, options: VotesRunOptions): Promise<{ run: WrkRun; cpuPercent: Record<string, number> }> {
  const { election, activeS } = options;
  const margins = options.cpuWindowMarginsMs ?? { afterStart: 1000, beforeEnd: 300 };
  const postmaster = await lv.postmasterPid();
  let wrkPid = 0;
  let first: CpuSample | undefined;
  let last: CpuSample | undefined;
  const groups = { livevote: () => [lv.process.child.pid!], postgres: () => processTree(postmaster), wrk: () => (wrkPid ? [wrkPid] : []) };
  const threads = { livevoteMainThread: () => mainThreadCpuS(lv.process.child.pid!) };
  const run = await runWrk({
    url: `${lv.baseUrl}/api/v1/votes`, connections: options.connections, durationS: activeS + options.drainS, script: 'votes.lua',
    scriptArgs: votesScriptArgs({
      voterFile: options.voterFile, firstLine: 0, lineCount: options.voterCount, electionId: election.electionId, candidateIds: election.candidateIds,
      activeMs: activeS * 1000, port: lv.port, forwardedFor: options.forwardedFor,
    }),
    onStart: (child) => {
      wrkPid = child.pid ?? 0;
      setTimeout(() => { first = sampleCpu(groups, threads); }, margins.afterStart).unref();
      setTimeout(() => { last = sampleCpu(groups, threads); }, activeS * 1000 - margins.beforeEnd).unref();
    },
  });
  return { run, cpuPercent: first && last ? cpuPercent(first, last) : {} };
}
