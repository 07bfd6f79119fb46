// One livevote write run, for working on the hot path: the write step of `npm run bench`
// (every request a new voter) at BENCH_CONNECTIONS (default 400) for BENCH_WRITE_S (default 8),
// printing votes/s, latency and CPU per vote of livevote, Postgres and wrk, and of livevote's main
// thread alone (`livevoteMainThread`, part of `livevote`: the event loop, without V8's compiler
// and GC threads or a worker). Writes no files.
// LIVEVOTE_* variables pass through to livevote; BENCH_PROFILE_DIR=dir writes a CPU profile of
// the livevote process there; BENCH_NODE_ARGS adds node flags (e.g. "--max-semi-space-size=64");
// BENCH_ABUSE_ON=1 runs with the vote rate limits and fraud rules at their defaults, each voter
// from an address of its own through a trusted proxy (as the abuse-controls run of npm run bench).
//
//   BENCH_CONNECTIONS=400 node --import tsx bench/quick.ts
import { abuseControlsOnEnv, describeConfig, measureWriteRuns } from './lib/writeRuns.ts';

const connections = Number(process.env.BENCH_CONNECTIONS ?? 400);
const profileDir = process.env.BENCH_PROFILE_DIR;
const abuseOn = process.env.BENCH_ABUSE_ON === '1';
const passThrough = {
  ...(abuseOn ? abuseControlsOnEnv : {}),
  ...Object.fromEntries(Object.entries(process.env).filter(([k]) => k.startsWith('LIVEVOTE_')) as [string, string][]),
};
const log = (line: string) => process.stdout.write(`${line}\n`);

const [run] = await measureWriteRuns({
  configs: [passThrough],
  connections,
  activeS: Number(process.env.BENCH_WRITE_S ?? 8),
  voterCount: 200_000,
  forwardedFor: abuseOn,
  nodeArgs: [
    ...(process.env.BENCH_NODE_ARGS ?? '').split(' ').filter((a) => a !== ''),
    ...(profileDir ? ['--cpu-prof', `--cpu-prof-dir=${profileDir}`] : []),
  ],
  log,
});
if (!run) throw new Error('no run');
const cpuPerVoteUs = Object.fromEntries(Object.entries(run.cpuPercent).filter(([k]) => k !== 'machine').map(([k, v]) => [k, Math.round(((v / 100) * 1e6) / run.votesPerS)]));
log(`${describeConfig(run.env)} at ${connections} connections: ${run.votesPerS} votes/s, p50 ${run.latencyMs.p50} ms, p99 ${run.latencyMs.p99} ms, non-2xx ${run.non2xx}`);
log(`CPU % of a core: ${JSON.stringify(run.cpuPercent)}; CPU µs per vote: ${JSON.stringify(cpuPerVoteUs)}`);
log(`livevote event-loop delay ms: ${JSON.stringify(run.eventLoopDelayMs)}; group commits: ${JSON.stringify(run.commits)}; a stored vote's mean ms on the server: ${JSON.stringify(run.voteStagesMs)}; shard actors: ${JSON.stringify(run.actors)}`);
