// Two livevote builds, A and B, compared in short interleaved slices: both run at once (each its
// own process and embedded Postgres, idle while the other is measured), and wrk alternates
// between them, a new election each slice, the order flipped every slice. Not part of
// `npm run bench`; prints one line per slice and a summary, and writes no files.
//
// Why: on this shared 2-core host the speed drifts by ±25% over minutes (a run of one build,
// started afresh, takes ~40 s), so build-against-build runs one after the other (bench/quick.ts
// with BENCH_LIVEVOTE_DIST) could not resolve a change of a few percent, and once gave 8 of 8
// pairs to one side and then the other side 5 of 6 (bench/README.md, "Fifteenth look"). Slices
// of a few seconds, alternated, put both builds under the same drift. What it resolves is still
// coarse: one build against itself gave single slices 0.91-1.48 apart and medians of 12 within
// ~5% (votes/s 1.006, CPU 0.956; 0.949 at 6 slices, 0.797 at 2), so a change smaller than that
// needs a microbenchmark.
//
//   node infra/build.mjs --out-dir bench/out/dist-a   (in a checkout of A; likewise B)
//   AB_A=bench/out/dist-a AB_B=bench/out/dist-b node --import tsx bench/abBuilds.ts
//   options (env): BENCH_CONNECTIONS (100), AB_SLICES (12, per build), AB_SLICE_S (3),
//   AB_ENV_A / AB_ENV_B (JSON objects of LIVEVOTE_* variables for that side's process),
//   BENCH_ABUSE_ON=1 (both sides with the abuse controls on, each voter from an address of its own
//   through a trusted proxy, as npm run bench's abuse-controls run)
import { rm } from 'node:fs/promises';
import path from 'node:path';
import { createVoters } from '../infra/testing/voters.ts';
import { createPool } from '../persistence/db.ts';
import { intFromEnv } from './lib/common.ts';
import { adminLogin, benchWorkDir, createOpenElection, startLivevote, stopLivevote, type LivevoteUnderTest } from './lib/livevote.ts';
import { writeVoterFile } from './lib/voterFile.ts';
import { abuseControlsOnEnv, runVotes, writeRunBaseEnv } from './lib/writeRuns.ts';
import { ensureWrk } from './lib/wrk.ts';

const connections = intFromEnv('BENCH_CONNECTIONS', 100, 10_000);
const slices = intFromEnv('AB_SLICES', 12, 1000);
const sliceS = intFromEnv('AB_SLICE_S', 3, 600);
const voterCount = 150_000;
const abuseOn = process.env.BENCH_ABUSE_ON === '1';
const log = (line: string) => process.stdout.write(`${line}\n`);

interface Side {
  readonly name: 'A' | 'B';
  readonly buildDir: string;
  readonly env: Record<string, string | undefined>;
  lv?: LivevoteUnderTest;
  admin?: string;
  readonly slices: { votesPerS: number; livevoteUs: number; postgresUs: number; wrkUs: number }[];
}

function sideFromEnv(name: 'A' | 'B'): Side {
  const buildDir = process.env[`AB_${name}`];
  if (!buildDir) throw new Error(`AB_${name} must name a livevote build directory (node infra/build.mjs --out-dir …)`);
  return { name, buildDir, env: JSON.parse(process.env[`AB_ENV_${name}`] ?? '{}') as Record<string, string>, slices: [] };
}

const sides = [sideFromEnv('A'), sideFromEnv('B')] as const;
const baseEnv = writeRunBaseEnv();
const { LIVEVOTE_JWT_SECRET: jwtSecret, LIVEVOTE_ADMIN_PASSWORD: adminPassword } = baseEnv;

ensureWrk(log);
const workDir = await benchWorkDir('livevote-ab-');
const voterFile = path.join(workDir, 'voters.txt');
try {
  for (const side of sides) {
    side.lv = await startLivevote({ ...baseEnv, ...(abuseOn ? abuseControlsOnEnv : {}), ...side.env }, path.join(workDir, `data-${side.name}`), [], side.buildDir);
    side.admin = await adminLogin(side.lv.baseUrl, baseEnv.LIVEVOTE_ADMIN_EMAIL, adminPassword);
  }
  // The tokens carry the voter number and are signed with the secret both share: one file serves
  // both, and each slice's election is new, so every request is a new voter there.
  const pool = createPool(sides[0].lv!.databaseUrl, 4, 'livevote-bench');
  await writeVoterFile(voterFile, await createVoters(pool, voterCount, jwtSecret));
  await pool.end();

  const measure = async (side: Side, activeS: number, record: boolean) => {
    const lv = side.lv!;
    const election = await createOpenElection(lv.baseUrl, side.admin!, `A/B ${side.name}`, 4, 8);
    const { run, cpuPercent: cpu } = await runVotes(lv, {
      election, voterFile, voterCount, connections, activeS, drainS: 2, forwardedFor: abuseOn, cpuWindowMarginsMs: { afterStart: 500, beforeEnd: 200 },
    });
    if (run.result.non2xx > 0) throw new Error(`${side.name}: ${run.result.non2xx} answers were not 2xx`);
    if (!record || cpu.livevote === undefined) return;
    const votesPerS = run.okCount / (run.result.activeMs / 1000);
    const us = (group: string) => Math.round(((cpu[group] ?? 0) / 100) * 1e6 / votesPerS * 10) / 10;
    const slice = { votesPerS: Math.round(votesPerS), livevoteUs: us('livevote'), postgresUs: us('postgres'), wrkUs: us('wrk') };
    side.slices.push(slice);
    log(`slice ${side.slices.length} ${side.name}: ${slice.votesPerS} votes/s, µs a vote: livevote ${slice.livevoteUs}, Postgres ${slice.postgresUs}, wrk ${slice.wrkUs}; other ${cpu.other}%`);
  };

  for (const side of sides) await measure(side, 4, false); // warm-up: JIT, pools, caches
  for (let i = 0; i < slices; i++) {
    for (const side of i % 2 === 0 ? sides : [sides[1], sides[0]]) await measure(side, sliceS, true);
  }

  const median = (values: number[]) => {
    const sorted = [...values].sort((a, b) => a - b);
    const mid = sorted.length >> 1;
    return sorted.length % 2 === 1 ? sorted[mid]! : (sorted[mid - 1]! + sorted[mid]!) / 2;
  };
  const [a, b] = sides;
  const ratios = a.slices.map((s, i) => b.slices[i]!.votesPerS / s.votesPerS);
  const cpuRatios = a.slices.map((s, i) => (b.slices[i]!.livevoteUs + b.slices[i]!.postgresUs) / (s.livevoteUs + s.postgresUs));
  for (const side of sides) {
    const pick = (k: 'votesPerS' | 'livevoteUs' | 'postgresUs' | 'wrkUs') => Math.round(median(side.slices.map((s) => s[k])) * 10) / 10;
    log(`${side.name} (${side.buildDir}${Object.keys(side.env).length ? ` ${JSON.stringify(side.env)}` : ''}): median ${pick('votesPerS')} votes/s, µs a vote livevote ${pick('livevoteUs')} + Postgres ${pick('postgresUs')} (wrk ${pick('wrkUs')})`);
  }
  log(`B / A votes/s, slice by slice: ${ratios.map((r) => r.toFixed(3)).join(' ')}; median ${median(ratios).toFixed(3)}, B ahead in ${ratios.filter((r) => r > 1).length} of ${ratios.length}`);
  log(`B / A livevote + Postgres µs a vote: median ${median(cpuRatios).toFixed(3)}, B cheaper in ${cpuRatios.filter((r) => r < 1).length} of ${cpuRatios.length}`);
} finally {
  for (const side of sides) if (side.lv) await stopLivevote(side.lv);
  await rm(workDir, { recursive: true, force: true });
}
