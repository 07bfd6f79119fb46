// One livevote write run, for working on the hot path: the write step of `npm run bench`
// (every request a new voter) at BENCH_CONNECTIONS (default 400) for BENCH_WRITE_S (default 8),
// printing votes/s, latency and CPU per vote of livevote, Postgres and wrk. Writes no files.
// Extra livevote settings as LIVEVOTE_* variables pass through; BENCH_PROFILE_DIR=dir writes a
// CPU profile of the livevote process there.
//
//   BENCH_CONNECTIONS=400 node --import tsx bench/quick.ts
import { chmod, mkdtemp, rm } from 'node:fs/promises';
import { randomBytes } from 'node:crypto';
import os from 'node:os';
import path from 'node:path';
import { createVoters } from '../infra/testing/voters.ts';
import { createPool } from '../persistence/db.ts';
import { adminLogin, createOpenElection, startLivevote, stopLivevote, type LivevoteUnderTest } from './lib/livevote.ts';
import { cpuPercent, processTree, sampleCpu, type CpuSample } from './lib/proc.ts';
import { voterLineWidth, writeVoterFile } from './lib/voterFile.ts';
import { ensureWrk, runWrk } from './lib/wrk.ts';

const connections = Number(process.env.BENCH_CONNECTIONS ?? 400);
const activeS = Number(process.env.BENCH_WRITE_S ?? 8);
const voterCount = 200_000;
const passThrough = Object.fromEntries(Object.entries(process.env).filter(([k]) => k.startsWith('LIVEVOTE_')) as [string, string][]);
const configs: readonly Record<string, string>[] = [passThrough];

const log = (line: string) => process.stdout.write(`${line}\n`);
const adminPassword = randomBytes(18).toString('base64url');
const jwtSecret = randomBytes(48).toString('base64url');
const baseEnv = {
  LOG_LEVEL: 'info',
  LIVEVOTE_JWT_SECRET: jwtSecret,
  LIVEVOTE_ADMIN_EMAIL: 'bench-admin@livevote.local',
  LIVEVOTE_ADMIN_PASSWORD: adminPassword,
  LIVEVOTE_RATE_LIMIT_VOTE: 'user=off,ip=off,network=off',
  LIVEVOTE_FRAUD_VOTE_BURST: 'off',
  LIVEVOTE_FRAUD_EMPTY_UA: 'off',
  LIVEVOTE_FRAUD_AUTOMATION_UA: 'off',
};

ensureWrk(log);
const label = (env: Record<string, string>) => (Object.keys(env).length === 0 ? 'defaults (flush 4 ms, 2 in flight)' : Object.entries(env).map(([k, v]) => `${k}=${v}`).join(' '));
const workDir = await mkdtemp(path.join(os.tmpdir(), 'livevote-knobs-'));
await chmod(workDir, 0o711);
const voterFile = path.join(workDir, 'voters.txt');
const runs: { votesPerS: number }[] = [];
let lv: LivevoteUnderTest | undefined;
try {
  for (const env of configs) {
    const profileDir = process.env.BENCH_PROFILE_DIR;
    lv = await startLivevote({ ...baseEnv, ...env }, path.join(workDir, 'data'), profileDir ? ['--cpu-prof', `--cpu-prof-dir=${profileDir}`] : []);
    const current = lv;
    if (runs.length === 0) {
      const pool = createPool(current.databaseUrl, 4, 'livevote-bench');
      await writeVoterFile(voterFile, await createVoters(pool, voterCount, jwtSecret));
      await pool.end();
    }
    const admin = await adminLogin(current.baseUrl, baseEnv.LIVEVOTE_ADMIN_EMAIL, adminPassword);
    const args = (electionId: string, candidateIds: readonly string[], ms: number) =>
      [voterFile, String(voterLineWidth), '0', String(voterCount), electionId, candidateIds.join(','), String(ms), '0', `127.0.0.1:${current.port}`];
    const warm = await createOpenElection(current.baseUrl, admin, 'Knobs: warm-up', 4, 8);
    await runWrk({ url: `${current.baseUrl}/api/v1/votes`, connections, durationS: 4, script: 'votes.lua', scriptArgs: args(warm.electionId, warm.candidateIds, 2000) });
    const election = await createOpenElection(current.baseUrl, admin, 'Knobs', 4, 8);
    const postmaster = await current.postmasterPid();
    let wrkPid = 0;
    let first: CpuSample | undefined;
    let last: CpuSample | undefined;
    const groups = { livevote: () => [current.process.child.pid!], postgres: () => processTree(postmaster), wrk: () => (wrkPid ? [wrkPid] : []) };
    const run = await runWrk({
      url: `${current.baseUrl}/api/v1/votes`, connections, durationS: activeS + 3, script: 'votes.lua', scriptArgs: args(election.electionId, election.candidateIds, activeS * 1000),
      onStart: (child) => {
        wrkPid = child.pid ?? 0;
        setTimeout(() => { first = sampleCpu(groups); }, 1000).unref();
        setTimeout(() => { last = sampleCpu(groups); }, activeS * 1000 - 300).unref();
      },
    });
    const l = run.result.latencyUs;
    const result = {
      env,
      votesPerS: Math.round(run.okCount / (run.result.activeMs / 1000)),
      latencyMs: { p50: l.p50 / 1000, p90: l.p90 / 1000, p99: l.p99 / 1000, mean: Math.round(l.mean) / 1000 },
      cpuPercent: first && last ? cpuPercent(first, last) : {},
      non2xx: run.result.non2xx,
    };
    runs.push(result);
    const cpuPerVoteUs = Object.fromEntries(Object.entries(result.cpuPercent).filter(([k]) => k !== 'machine').map(([k, v]) => [k, Math.round((v / 100) * 1e6 / result.votesPerS)]));
    log(`${label(env)} at ${connections} connections: ${result.votesPerS} votes/s, p50 ${result.latencyMs.p50} ms, p99 ${result.latencyMs.p99} ms, non-2xx ${result.non2xx}`);
    log(`CPU % of a core: ${JSON.stringify(result.cpuPercent)}; CPU µs per vote: ${JSON.stringify(cpuPerVoteUs)}`);
    await stopLivevote(current);
    lv = undefined;
  }
} finally {
  if (lv) await stopLivevote(lv);
  await rm(workDir, { recursive: true, force: true });
}

