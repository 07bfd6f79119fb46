// Group-commit knobs: livevote's write run (same shape as `npm run bench`: wrk -t1 -c100, every
// request a new voter) once per configuration of LIVEVOTE_FLUSH_INTERVAL_MS and
// LIVEVOTE_COMMITS_IN_FLIGHT_MAX, each on a freshly started process over the same embedded data dir.
// Writes bench/KNOBS.md and bench/knobs.json (never by hand). About 2 minutes.
//
//   node --import tsx bench/knobs.ts
import { chmod, mkdtemp, rm, writeFile } from 'node:fs/promises';
import { randomBytes } from 'node:crypto';
import os from 'node:os';
import path from 'node:path';
import { createVoters } from '../infra/testing/voters.ts';
import { createPool } from '../persistence/db.ts';
import { adminLogin, createOpenElection, startLivevote, stopLivevote, type LivevoteUnderTest } from './lib/livevote.ts';
import { cpuPercent, createQuietWaiter, processTree, repoRoot, sampleCpu, type CpuSample } from './lib/proc.ts';
import { voterLineWidth, writeVoterFile } from './lib/voterFile.ts';
import { ensureWrk, runWrk } from './lib/wrk.ts';

const connections = 100;
const activeS = 8;
const voterCount = 150_000;
const configs: readonly Record<string, string>[] = [
  {},
  { LIVEVOTE_FLUSH_INTERVAL_MS: '1' },
  { LIVEVOTE_FLUSH_INTERVAL_MS: '2' },
  { LIVEVOTE_COMMITS_IN_FLIGHT_MAX: '4' },
  { LIVEVOTE_FLUSH_INTERVAL_MS: '1', LIVEVOTE_COMMITS_IN_FLIGHT_MAX: '4' },
  { LIVEVOTE_FLUSH_INTERVAL_MS: '1', LIVEVOTE_COMMITS_IN_FLIGHT_MAX: '8' },
];

interface KnobRun {
  readonly env: Record<string, string>;
  readonly votesPerS: number;
  readonly latencyMs: { p50: number; p90: number; p99: number; mean: number };
  readonly cpuPercent: Record<string, number>;
  readonly non2xx: number;
}

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
const quiet = createQuietWaiter(60_000, log);
const label = (env: Record<string, string>) => (Object.keys(env).length === 0 ? 'defaults (flush 4 ms, 2 in flight)' : Object.entries(env).map(([k, v]) => `${k}=${v}`).join(' '));
const workDir = await mkdtemp(path.join(os.tmpdir(), 'livevote-knobs-'));
await chmod(workDir, 0o711);
const voterFile = path.join(workDir, 'voters.txt');
const runs: KnobRun[] = [];
let lv: LivevoteUnderTest | undefined;
try {
  for (const env of configs) {
    lv = await startLivevote({ ...baseEnv, ...env }, path.join(workDir, 'data'));
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
    await quiet.wait(label(env));
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
    const result: KnobRun = {
      env,
      votesPerS: Math.round(run.okCount / (run.result.activeMs / 1000)),
      latencyMs: { p50: l.p50 / 1000, p90: l.p90 / 1000, p99: l.p99 / 1000, mean: Math.round(l.mean) / 1000 },
      cpuPercent: first && last ? cpuPercent(first, last) : {},
      non2xx: run.result.non2xx,
    };
    runs.push(result);
    log(`${JSON.stringify(env)}: ${result.votesPerS} votes/s, p50 ${result.latencyMs.p50} ms, p99 ${result.latencyMs.p99} ms`);
    await stopLivevote(current);
    lv = undefined;
  }
} finally {
  if (lv) await stopLivevote(lv);
  await rm(workDir, { recursive: true, force: true });
}

const markdown = `# Group-commit knobs

Generated by \`node --import tsx bench/knobs.ts\` at ${new Date().toISOString()}; do not edit by hand. livevote in embedded mode,
${os.availableParallelism()} cores, wrk \`-t1 -c${connections}\`, ${activeS} s per configuration after a warm-up, every request a new voter
(the write run of \`npm run bench\`), one freshly started livevote process per configuration.

| configuration | votes/s | p50 ms | p90 ms | p99 ms | mean ms | ≥400 | CPU (% of one core) |
|---|---|---|---|---|---|---|---|
${runs.map((r) => `| ${label(r.env)}${(r.cpuPercent.other ?? 0) > 25 ? ' ⚠' : ''} | **${r.votesPerS.toLocaleString('en-US')}** | ${r.latencyMs.p50} | ${r.latencyMs.p90} | ${r.latencyMs.p99} | ${r.latencyMs.mean} | ${r.non2xx} | ${Object.entries(r.cpuPercent).filter(([k]) => k !== 'machine').map(([k, v]) => `${k} ${v}%`).join(', ')} |`).join('\n')}

⚠: other work on the machine used more than 25% of a core during that run ("other").

With a fixed number of connections each waiting for its answer, votes/s = connections / mean latency:
what a knob does to the time a vote waits for its commit is what it does to throughput here.
`;
await writeFile(path.join(repoRoot, 'bench/KNOBS.md'), markdown);
await writeFile(path.join(repoRoot, 'bench/knobs.json'), `${JSON.stringify({ generatedAt: new Date().toISOString(), connections, activeS, runs }, null, 2)}\n`);
log('wrote bench/KNOBS.md and bench/knobs.json');
