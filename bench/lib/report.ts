// Writes bench/RESULTS.md and bench/results.json from one run's figures. Everything in both
// files comes from the run; nothing here is typed in by hand but the explanations of method.
import { writeFile } from 'node:fs/promises';
import path from 'node:path';
import { preservedClusterJson, preservedClusterSection, readFileOr, withClusterSection } from './clusterReport.ts';
import { preservedMovesSection, withMovesSection } from './movesReport.ts';
import { featuresSection as knobRunsSection, preservedFeaturesJson } from './featuresReport.ts';
import type { FanoutResult } from './fanout.ts';
import type { ProfileSummary } from './cpuProfile.ts';
// PairReport, PairsReport: declared below.

export interface WriteRunReport {
  readonly label: string;
  readonly command: string;
  readonly connections: number;
  readonly activeS: number;
  /** Answers received (any status). */
  readonly requests: number;
  /** Answers with status < 400 (all 200 here). */
  readonly ok: number;
  readonly non2xx: number;
  readonly socketErrors: number;
  readonly unanswered: number;
  readonly repeats: number;
  readonly votersExhausted: boolean;
  /** Answers per second of the active window. */
  readonly rps: number;
  /** 200 answers (accepted, durable votes) per second of the active window. */
  readonly okPerS: number;
  readonly latencyMs: { readonly mean: number; readonly p50: number; readonly p90: number; readonly p99: number; readonly p999: number; readonly max: number };
  /** Percent of one core, by process group, over the middle of the active window. */
  readonly cpuPercent: Record<string, number>;
  /** The machine's 1-minute load average when the run started. */
  readonly loadAverage?: number;
  readonly stored?: number;
  readonly countOk?: boolean;
  readonly countProblems?: readonly string[];
  readonly serverOutcomes?: Record<string, number>;
  readonly serverHttpStatus?: Record<string, number>;
  /**
   * A stored vote's mean time on the server in this run, in ms (livevote: its vote stage metrics;
   * the floor: its GET /stats): waiting for its batch's commit to start, the commit, and the rest
   * of its request (the way in, the way back, the reply).
   */
  readonly voteStagesMs?: { readonly buffered: number; readonly committing: number; readonly rest: number };
}

/** livevote and the durable floor, one right after the other at one connection count. */
export interface PairReport {
  readonly livevote: WriteRunReport;
  readonly floor: WriteRunReport;
  /** livevote votes/s / floor votes/s. */
  readonly ratio: number;
}

export interface PairsReport {
  readonly connections: number;
  readonly pairs: readonly PairReport[];
  /** The median of the pairs' ratios: what the targets compare. */
  readonly medianRatio: number;
  /** The pair whose ratio is the median: its runs are the ones shown for livevote and the floor. */
  readonly median: PairReport;
}

export interface BenchSettings {
  readonly connections: number;
  readonly writeActiveS: number;
  readonly pairs: number;
  readonly pairActiveS: number;
  readonly warmupS: number;
  readonly drainS: number;
  readonly saturationConnections: number;
  readonly saturationActiveS: number;
  readonly readS: number;
  readonly subscribers: number;
  readonly fanoutActiveS: number;
  readonly profileActiveS: number;
  readonly voters: number;
  readonly recoveryVotes: number;
  readonly featureCommits: number;
  readonly candidates: number;
  readonly shardCount: number;
  readonly baselinePoolMax: number;
  readonly voterLineWidth: number;
  readonly measuredLines: number;
}

export interface BenchResults {
  readonly generatedAt: string;
  readonly totalS: number;
  readonly git: { readonly commit: string; readonly productChangesUncommitted: number };
  readonly machine: {
    readonly cpuModel: string;
    readonly cores: number;
    readonly memoryGiB: number;
    readonly kernel: string;
    readonly node: string;
    readonly postgres: string;
    readonly postgresSettings: Record<string, string>;
    readonly wrk: string;
    readonly uws: string;
    readonly openFilesLimit: number;
    readonly loadAverageAtEnd: readonly number[];
  };
  readonly settings: BenchSettings;
  readonly livevoteConfig: { readonly env: readonly string[]; readonly command?: string } & Record<string, unknown>;
  readonly votersS: number;
  /** Time spent waiting for other work on the machine to settle before measured runs. */
  readonly quietWaitedS: number;
  readonly ceiling: WriteRunReport;
  readonly livevote: WriteRunReport;
  readonly saturation: WriteRunReport;
  readonly baseline: WriteRunReport;
  readonly baselineSaturation: WriteRunReport;
  /** bench/servers/floor.ts: bare uWS + a group-committed INSERT per batch, nothing else. */
  readonly floor: WriteRunReport;
  /** The floor at the saturation connection count (livevote's 400-connection run is compared with it). */
  readonly floorSaturation: WriteRunReport;
  /** livevote against the floor, in pairs, at the two connection counts (livevote, floor, saturation and floorSaturation are the median pairs' runs). */
  readonly pairs: readonly PairsReport[];
  /** livevote restarted with its abuse controls on, each voter from its own address (trusted proxy). */
  readonly abuseOn: WriteRunReport;
  readonly abuseEnv: readonly string[];
  readonly reads: WriteRunReport;
  readonly fanout: Omit<FanoutResult, 'loadResult'> & { readonly loadResult: undefined; readonly load: WriteRunReport };
  readonly journal: Record<string, number>;
  /** bench/journalFeatures.ts on the embedded Postgres: Postgres CPU per vote of each variant of the commit statement. */
  readonly journalFeatures: {
    readonly batchRows: number;
    readonly shardCount: number;
    readonly commits: number;
    readonly loadAverage: number;
    readonly variants: readonly { readonly name: string; readonly postgresUsPerVote: number; readonly clientUsPerVote: number }[];
  };
  readonly recovery: {
    readonly votesTotal: number;
    readonly shardCount: number;
    readonly candidateCount: number;
    readonly batchRows: number;
    readonly snapshotFraction: number;
    readonly watermarkBatchId: number;
    readonly coveredVotes: number;
    readonly tailVotes: number;
    readonly snapshotBytes: number;
    readonly insertS: number;
    readonly snapshotWriteS: number;
    readonly recoveryS: number;
    readonly rowsReplayed: number;
    readonly fullReplayS: number | null;
    readonly fullReplayRows: number | null;
  };
  readonly memory: {
    readonly voters: number;
    readonly shardCount: number;
    readonly stride: number;
    readonly votes: number;
    readonly bitsSet: number;
    readonly slotsCovered: number;
    readonly pageBytes: number;
    readonly bitmapBytes: number;
    readonly idealBytes: number;
    readonly ratio: number;
    readonly rssDeltaBytes: number;
    readonly arrayBuffersDeltaBytes: number;
    readonly heapUsedDeltaBytes: number;
    readonly fillMs: number;
  };
  readonly restart: {
    readonly startS: number;
    readonly elections: readonly { electionId: string; name: string; votes: number; recoveryMs: number }[];
    readonly exitCodes: readonly (number | string)[];
  };
  readonly profiled: WriteRunReport;
  readonly profile: ProfileSummary;
}

interface Target {
  readonly name: string;
  readonly actual: string;
  readonly target: string;
  readonly met: boolean;
  readonly margin: string;
}

const fmt = (n: number, digits = 0) => n.toLocaleString('en-US', { minimumFractionDigits: digits, maximumFractionDigits: digits });
const mb = (bytes: number) => `${fmt(bytes / 1e6, 2)} MB`;
const pct = (record: Record<string, number>) =>
  Object.entries(record)
    .filter(([k]) => k !== 'machine')
    .map(([k, v]) => `${k} ${v}%`)
    .join(', ');

function targets(r: BenchResults): Target[] {
  const baseRatio = r.livevote.okPerS / r.baseline.okPerS;
  const bitmapAllowance = 1.1 * r.memory.idealBytes + r.memory.shardCount * r.memory.pageBytes;
  const floorTarget = (pairs: PairsReport): Target => {
    const ratio = pairs.medianRatio;
    const { livevote: run, floor } = pairs.median;
    return {
      name: `livevote ≥ 0.8× durable floor at ${pairs.connections} connections`,
      actual: `${ratio.toFixed(3)}×, the median of ${pairs.pairs.length} pairs (${pairs.pairs.map((x) => x.ratio.toFixed(2)).join(', ')}); median pair: ${fmt(run.okPerS)} against ${fmt(floor.okPerS)} votes/s, load average ${run.loadAverage ?? '?'}`,
      target: '≥ 0.8×',
      met: ratio >= 0.8,
      margin: ratio >= 0.8 ? `${(ratio / 0.8).toFixed(2)}× the target` : `missed: ${(0.8 / ratio).toFixed(2)}× short`,
    };
  };
  const cpuTarget = (group: 'server' | 'postgres', limitUs: number): Target => {
    const us = perAnswerUs(r.livevote, group) ?? Number.NaN;
    return {
      name: `CPU per vote, ${group === 'server' ? 'livevote' : 'Postgres'} ≤ ${limitUs} µs (${r.livevote.connections} connections)`,
      actual: `${fmt(us)} µs (the floor: ${fmt(perAnswerUs(r.floor, group) ?? 0)} µs)`,
      target: `≤ ${limitUs} µs`,
      met: us <= limitUs,
      margin: us <= limitUs ? `${fmt(limitUs - us)} µs to spare` : `missed: ${(us / limitUs).toFixed(2)}× over (${fmt(us - limitUs)} µs too many)`,
    };
  };
  const out: Target[] = [
    ...r.pairs.map(floorTarget),
    {
      name: 'livevote p99 < 150 ms',
      actual: `${r.livevote.latencyMs.p99} ms (${r.saturation.latencyMs.p99} ms at ${r.saturation.connections} connections)`,
      target: '< 150 ms',
      met: r.livevote.latencyMs.p99 < 150 && r.saturation.latencyMs.p99 < 150,
      margin: Math.max(r.livevote.latencyMs.p99, r.saturation.latencyMs.p99) < 150
        ? `${fmt(150 - Math.max(r.livevote.latencyMs.p99, r.saturation.latencyMs.p99), 1)} ms to spare`
        : `missed by ${fmt(Math.max(r.livevote.latencyMs.p99, r.saturation.latencyMs.p99) - 150, 1)} ms`,
    },
    cpuTarget('server', 35),
    cpuTarget('postgres', 25),
    {
      name: 'livevote ≥ 4× baseline',
      actual: `${baseRatio.toFixed(2)}× (${fmt(r.livevote.okPerS)} vs ${fmt(r.baseline.okPerS)} votes/s)`,
      target: `≥ ${fmt(4 * r.baseline.okPerS)} votes/s`,
      met: baseRatio >= 4,
      margin: baseRatio >= 4 ? `${(baseRatio / 4).toFixed(2)}× the target` : `missed: ${(4 / baseRatio).toFixed(2)}× short`,
    },
    {
      name: 'reads p99 < 200 ms',
      actual: `${r.reads.latencyMs.p99} ms at ${fmt(r.reads.rps)} req/s`,
      target: '< 200 ms',
      met: r.reads.latencyMs.p99 < 200 && r.reads.non2xx === 0,
      margin: r.reads.latencyMs.p99 < 200 ? `${fmt(200 - r.reads.latencyMs.p99, 1)} ms to spare` : `missed by ${fmt(r.reads.latencyMs.p99 - 200, 1)} ms`,
    },
    {
      name: 'fan-out p99 < 1 s (commit → delivery)',
      actual: `${fmt(r.fanout.commitToDeliveryMs.p99)} ms to ${fmt(r.fanout.subscribersConnected)} subscribers`,
      target: '< 1,000 ms',
      met: r.fanout.commitToDeliveryMs.p99 < 1000 && r.fanout.subscribersConnected === r.settings.subscribers && r.fanout.missed === 0,
      margin: r.fanout.commitToDeliveryMs.p99 < 1000 ? `${fmt(1000 - r.fanout.commitToDeliveryMs.p99)} ms to spare` : `missed by ${fmt(r.fanout.commitToDeliveryMs.p99 - 1000)} ms`,
    },
    {
      name: 'bitmap ≤ 1.1× ceil(voters/8) + fixed overhead',
      actual: `${mb(r.memory.bitmapBytes)} = ${r.memory.ratio.toFixed(4)}× ${mb(r.memory.idealBytes)}`,
      target: `≤ ${mb(bitmapAllowance)} (1.1× + one ${r.memory.pageBytes / 1024} KiB page per shard × ${r.memory.shardCount})`,
      met: r.memory.bitmapBytes <= bitmapAllowance,
      margin: r.memory.bitmapBytes <= bitmapAllowance ? `${mb(bitmapAllowance - r.memory.bitmapBytes)} to spare` : `missed by ${mb(r.memory.bitmapBytes - bitmapAllowance)}`,
    },
    {
      name: `recovery of ${fmt(r.recovery.votesTotal)} votes < 5 s`,
      actual: `${r.recovery.recoveryS.toFixed(2)} s`,
      target: '< 5 s',
      met: r.recovery.recoveryS < 5,
      margin: r.recovery.recoveryS < 5 ? `${(5 - r.recovery.recoveryS).toFixed(2)} s to spare` : `missed by ${(r.recovery.recoveryS - 5).toFixed(2)} s`,
    },
    {
      name: 'npm run bench < 6 min',
      actual: `${fmt(r.totalS)} s`,
      target: '< 360 s',
      met: r.totalS < 360,
      margin: r.totalS < 360 ? `${fmt(360 - r.totalS)} s to spare` : `missed by ${fmt(r.totalS - 360)} s`,
    },
  ];
  return out;
}

/** Which vote-path feature a profile area (a project file or package, bench/lib/cpuProfile.ts) belongs to. */
const featureOfArea: readonly (readonly [RegExp, string])[] = [
  [/^gateway\/auth\//, 'token check (JWT HS256, claims)'],
  [/^gateway\/abuse\/|^pkg ioredis$/, 'abuse controls (rate limits, fraud rules)'],
  [/^gateway\/votes\/|^pkg zod$|^gateway\/elections\//, 'vote route: body check, election and candidate lookup, outcome → answer'],
  [/^gateway\/http\.js$|^gateway\/uws|^gateway\/app\.js$/, 'HTTP layer (uWS request intake, reply write: the send syscalls)'],
  [/^infra\/hotMetrics|^infra\/metrics|^pkg prom-client$/, 'metrics'],
  [/^persistence\/voteMetadata|^persistence\/privacy|^gateway\/privacy\/|^pkg pg-copy-streams$/, 'request metadata (privacy recorder, COPY)'],
  [/^actors\/(shard|bitmap|voteNode|election)\.js$|^pkg nact$/, 'shard actors (nact, bitmap, tallies)'],
  [/^actors\/groupCommit|^persistence\/voteJournal|^persistence\/audit|^persistence\/batchIds|^persistence\/db\.js$|^pkg pg$|^pkg pg-protocol$|^pkg pg-pool$/, 'group commit and journal client (commit text, pg client)'],
  [/^cluster\//, 'cluster (router, results publication, membership)'],
  [/^\(garbage collector\)$/, 'garbage collection'],
];

function journalFeatureRows(r: BenchResults): string[] {
  const us = (name: string) => r.journalFeatures.variants.find((v) => v.name === name)?.postgresUsPerVote ?? Number.NaN;
  const all = us('journal');
  return [
    `| the commit statement livevote runs (fence, insert, audit digests, batch record, conflicts) and the audit seal | ${fmt(all, 1)} | — |`,
    `| audit chain (per-shard digests in the commit; the seal, once per round of the variant's batches, as a node seals once a second) | ${fmt(all - us('without audit'), 1)} | ${fmt(all, 1)} → ${fmt(us('without audit'), 1)} |`,
    `| fence (lease rows FOR SHARE, epoch check) | ${fmt(all - us('without fence'), 1)} | ${fmt(all, 1)} → ${fmt(us('without fence'), 1)} |`,
    `| the rest: the wider row, its second index, the batch record, the conflict answer (against the floor's insert) | ${fmt(us('without fence and audit') - us('floor insert'), 1)} | ${fmt(us('without fence and audit'), 1)} → ${fmt(us('floor insert'), 1)} (the floor's insert) |`,
    `| request metadata (its COPY, once a second in livevote) | ${fmt(us('metadata'), 1)} | beside the commit |`,
  ];
}

/** The profiled run's server CPU per vote, split by feature in proportion to the profile's busy samples. */
function featureCostRows(r: BenchResults): { feature: string; percent: number; us: number }[] {
  const serverUs = perAnswerUs(r.profiled, 'server') ?? 0;
  const byFeature = new Map<string, number>();
  for (const area of r.profile.areas) {
    const feature = featureOfArea.find(([pattern]) => pattern.test(area.area))?.[1] ?? 'Node and V8 (sockets, timers, promises, builtins) not attributable to one feature';
    byFeature.set(feature, (byFeature.get(feature) ?? 0) + area.percent);
  }
  return [...byFeature].sort((a, b) => b[1] - a[1]).map(([feature, percent]) => ({ feature, percent, us: (percent / 100) * serverUs }));
}

/** Runs during which other work on the machine used more than this (percent of one core) are flagged. */
const disturbedOtherPercent = 25;

function perAnswerUs(run: WriteRunReport, group: string): number | undefined {
  const percent = group === 'server' ? (run.cpuPercent.livevote ?? run.cpuPercent.server) : run.cpuPercent[group];
  return percent === undefined ? undefined : (percent / 100) * 1e6 / Math.max(1, run.rps);
}

function budgetTotal(run: WriteRunReport): number {
  return (perAnswerUs(run, 'server') ?? 0) + (perAnswerUs(run, 'postgres') ?? 0) + (perAnswerUs(run, 'wrk') ?? 0);
}

function budgetRow(run: WriteRunReport, cores: number): string {
  const cell = (v: number | undefined) => (v === undefined ? '—' : fmt(v));
  const total = budgetTotal(run);
  return `| ${run.label} | ${cell(perAnswerUs(run, 'server'))} | ${cell(perAnswerUs(run, 'postgres'))} | ${cell(perAnswerUs(run, 'wrk'))} | ${fmt(total)} | ${fmt((cores * 1e6) / total)} /s |`;
}

/** CPU microseconds per answer of the server process and of Postgres. */
function cpuPerAnswer(run: WriteRunReport): string {
  const perAnswer = (percent: number | undefined) => (percent === undefined ? undefined : Math.round((percent / 100) * 1e6 / Math.max(1, run.rps)));
  const server = perAnswer(run.cpuPercent.livevote ?? run.cpuPercent.server);
  const postgres = perAnswer(run.cpuPercent.postgres);
  return [server === undefined ? '' : `${server}`, postgres === undefined ? '' : ` + ${postgres} pg`].join('');
}

function runRow(run: WriteRunReport): string {
  const l = run.latencyMs;
  const disturbed = (run.cpuPercent.other ?? 0) > disturbedOtherPercent ? ' ⚠' : '';
  return `| ${run.label}${disturbed} | ${run.loadAverage ?? '—'} | ${run.connections} | ${run.activeS.toFixed(1)} | ${fmt(run.requests)} | ${fmt(run.ok)} | ${fmt(run.non2xx)} | **${fmt(run.okPerS)}** | ${l.p50} | ${l.p90} | **${l.p99}** | ${l.p999} | ${l.max} | ${pct(run.cpuPercent)} | ${cpuPerAnswer(run)} |`;
}

function countRow(run: WriteRunReport): string {
  const outcomes = run.serverOutcomes ? Object.entries(run.serverOutcomes).map(([k, v]) => `${k} ${fmt(v)}`).join(', ') : '—';
  return `| ${run.label} | ${fmt(run.ok)} | ${run.stored === undefined ? '—' : fmt(run.stored)} | ${fmt(run.unanswered)} | ${fmt(run.repeats)} | ${run.votersExhausted ? 'yes' : 'no'} | ${outcomes} | ${run.countOk ? 'pass' : `**FAIL**: ${run.countProblems?.join('; ')}`} |`;
}

function frameTable(rows: ProfileSummary['selfTop'], kind: 'areas' | 'self' | 'inclusive'): string {
  if (kind === 'areas') return ['| # | area | ms | % of busy |', '|---|---|---|---|', ...rows.map((r, i) => `| ${i + 1} | ${r.area} | ${fmt(r.ms)} | ${r.percent} |`)].join('\n');
  if (kind === 'inclusive') return ['| # | frame | ms | % of busy |', '|---|---|---|---|', ...rows.map((r, i) => `| ${i + 1} | \`${r.frame}\` | ${fmt(r.ms)} | ${r.percent} |`)].join('\n');
  return [
    '| # | frame | ms | % of busy | mostly called from (share of its time) |',
    '|---|---|---|---|---|',
    ...rows.map((r, i) => `| ${i + 1} | \`${r.frame}\` | ${fmt(r.ms)} | ${r.percent} | ${r.calledFrom ? `\`${r.calledFrom}\` (${r.calledFromPercent}%)` : ''} |`),
  ].join('\n');
}

/** The write runs whose stored rows are counted against their 200 answers. */
function countCheckedRuns(r: BenchResults): WriteRunReport[] {
  return [...pairRuns(r), r.baseline, r.baselineSaturation, r.abuseOn];
}

/** Every livevote and floor run of the pairs, in the order they ran. */
function pairRuns(r: BenchResults): WriteRunReport[] {
  return r.pairs.flatMap((p) => p.pairs.flatMap((x, i) => (i % 2 === 0 ? [x.livevote, x.floor] : [x.floor, x.livevote])));
}

export function renderMarkdown(r: BenchResults): string {
  const t = targets(r);
  const lvRatio = r.livevote.okPerS / r.ceiling.rps;
  const baseRatio = r.livevote.okPerS / r.baseline.okPerS;
  const littleLv = r.livevote.connections / (r.livevote.latencyMs.mean / 1000);
  const littleBase = r.baseline.connections / (r.baseline.latencyMs.mean / 1000);
  const wrkCeiling = r.ceiling.cpuPercent.wrk ?? 0;
  const wrkLv = r.livevote.cpuPercent.wrk ?? 0;
  const otherMax = Math.max(...[r.ceiling, ...pairRuns(r), r.baseline, r.baselineSaturation, r.abuseOn, r.reads, r.fanout.load].map((run) => run.cpuPercent.other ?? 0));
  const fo = r.fanout;
  const counts = countCheckedRuns(r);
  const allCountsOk = counts.every((c) => c.countOk);
  const p = (x: number) => fmt(x, 1);

  return `# livevote benchmark results

Generated by \`npm run bench\` (\`bench/run.ts\`) at ${r.generatedAt}, commit \`${r.git.commit}\`${r.git.productChangesUncommitted > 0 ? ` (with ${r.git.productChangesUncommitted} uncommitted product files in the working tree at the time)` : ''}, in ${fmt(r.totalS)} s.
**Do not edit by hand**: rerun \`npm run bench\`; \`bench/results.json\` holds the same figures.

## Summary

| target | measured | target value | verdict |
|---|---|---|---|
${t.map((x) => `| ${x.name} | ${x.actual} | ${x.target} | ${x.met ? 'met' : '**missed**'}: ${x.margin} |`).join('\n')}
| stored votes = 200 answers | ${counts.map((c) => `${c.label}: ${fmt(c.stored ?? 0)} = ${fmt(c.ok)}`).join('; ')} | equal, every request answered | ${allCountsOk ? 'pass' : '**FAIL** (the run exits non-zero)'} |

Ratios (same machine, same wrk, same request shape, ${r.settings.connections} connections):
- **livevote / ceiling = ${lvRatio.toFixed(3)}** (${fmt(r.livevote.okPerS)} durable votes/s vs ${fmt(r.ceiling.rps)} fixed answers/s)
- **livevote / baseline = ${baseRatio.toFixed(2)}** (${fmt(r.livevote.okPerS)} vs ${fmt(r.baseline.okPerS)} durable votes/s)
- **livevote / durable floor = ${r.pairs[0]!.medianRatio.toFixed(3)}** at ${r.pairs[0]!.connections} connections, **${r.pairs[1]!.medianRatio.toFixed(3)}** at ${r.pairs[1]!.connections}
  (medians of ${r.settings.pairs} alternating pairs each; in the median pair at ${r.pairs[1]!.connections}, the floor ${fmt(r.floorSaturation.okPerS)} votes/s); durable floor / ceiling = ${(r.floor.okPerS / r.ceiling.rps).toFixed(3)} (the floor: ${fmt(r.floor.okPerS)} votes/s,
  p99 ${r.floor.latencyMs.p99} ms, from bare uWebSockets.js storing each vote in the same Postgres before answering and
  doing nothing else; see "The durable floor" below)
- abuse controls on (vote rate limits and fraud rules at their defaults, ${r.abuseEnv.join(', ')}; each voter from an address of its own, with a browser's User-Agent): ${fmt(r.abuseOn.okPerS)} votes/s at ${r.abuseOn.connections} connections,
  CPU per vote ${cpuPerAnswer(r.abuseOn)} µs against ${cpuPerAnswer(r.livevote)} with them off
- at ${r.saturation.connections} connections (each at its peak): livevote ${fmt(r.saturation.okPerS)} votes/s (p99 ${r.saturation.latencyMs.p99} ms), baseline
  ${fmt(r.baselineSaturation.okPerS)} votes/s (p99 ${r.baselineSaturation.latencyMs.p99} ms): **livevote / baseline = ${(r.saturation.okPerS / r.baselineSaturation.okPerS).toFixed(2)}**, livevote / ceiling = ${(r.saturation.okPerS / r.ceiling.rps).toFixed(3)}

## Machine

| | |
|---|---|
| CPU | ${r.machine.cores} cores, ${r.machine.cpuModel} |
| memory | ${r.machine.memoryGiB} GiB |
| OS | ${r.machine.kernel} |
| Node.js | ${r.machine.node} |
| Postgres | ${r.machine.postgres} (the embedded server livevote started; ${Object.entries(r.machine.postgresSettings).map(([k, v]) => `${k}=${v}`).join(', ')}) |
| wrk | ${r.machine.wrk}, 1 thread |
| uWebSockets.js | ${r.machine.uws} (native binary, loaded as \`gateway/uws.ts\` does) |
| open files limit | ${fmt(r.machine.openFilesLimit)} |
| load average at the end | ${r.machine.loadAverageAtEnd.join(', ')} |

Load generator, servers and Postgres share these ${r.machine.cores} cores. The CPU columns below say who used them
(percent of one core; "other" is everything on the machine outside the benchmark's processes, i.e. other work
sharing the box during the run: up to ${otherMax}% of a core in a measured window this time; runs with more than
${disturbedOtherPercent}% are marked ⚠).

## How it was run

- **livevote** runs as its own process in **embedded mode** (\`DATABASE_URL\` unset, a fresh temporary
  \`LIVEVOTE_DATA_DIR\`): \`${r.livevoteConfig.command ?? 'node --import tsx infra/main.ts'}\` (the compiled build production runs, \`npm run build\`) started by \`infra/testing/processHarness.ts\`, with its
  embedded ${r.machine.postgres.split(' on ')[0]} (durable: fsync on). The **baseline** writes to **the same Postgres server** (a
  database of its own, \`bench_baseline\`), so both pay the same fsync.
- Voters: ${fmt(r.settings.voters)} users inserted in bulk and their access tokens minted with the node's JWT secret by
  \`infra/testing/voters.ts\` (${p(r.votersS)} s), written to a file of fixed-width lines that \`bench/lua/votes.lua\` walks:
  every request is the next voter, none is sent twice in one election (checked: "repeats" below). Warm-ups use
  voters of their own (livevote: a separate election; baseline: separate lines, subtracted from the count).
- Every write run: \`wrk -t1 -c${r.settings.connections}\`, POST \`/api/v1/votes\` \`{electionId, candidateId, userId}\` with
  \`Authorization: Bearer <token>\`, candidates in rotation, ${r.settings.warmupS} s warm-up, then ${r.settings.writeActiveS} s measured
  (the livevote / floor pairs: ${r.settings.pairActiveS} s each; the ${r.settings.saturationConnections}-connection runs of the baseline: ${r.settings.saturationActiveS} s).
  votes.lua quiesces at the end of the window (connections park once answered) and wrk runs ${r.settings.drainS} s longer, so
  every request sent is answered: the 200s wrk counted are exactly the acknowledged votes, and votes/s =
  200 answers / active window. Latency percentiles are wrk's (\`done()\` → \`latency:percentile\`).
- After each livevote and baseline run: \`SELECT count(*)\` of that election's stored rows must equal the 200s,
  every request must have been answered, and livevote's own counters (\`/metrics\`) must agree; else the run
  fails and \`npm run bench\` exits non-zero.
- Abuse controls: livevote's vote rate limits and fraud rules would throttle one synthetic client address, so the
  run sets them off explicitly: ${r.livevoteConfig.env.filter((e) => /RATE_LIMIT|FRAUD/.test(e)).map((e) => `\`${e}\``).join(', ')}. No CAPTCHA token is sent.
- livevote configuration: ${r.livevoteConfig.env.map((e) => `\`${e}\``).join(', ')}; group commit as configured by default:
  flush interval ${r.livevoteConfig.flushIntervalMs} ms, batch ${r.livevoteConfig.batchRowsMax} rows, ${r.livevoteConfig.commitsInFlightMax} commits in flight,
  pending votes per shard ${r.livevoteConfig.pendingVotesMax}, pool ${r.livevoteConfig.dbPoolMax}, snapshots every ${r.livevoteConfig.snapshotIntervalMs} ms.
  Elections: ${r.settings.candidates} candidates, ${r.settings.shardCount} shards.
- Baseline: \`bench/servers/baseline.ts\`, pg pool of ${r.settings.baselinePoolMax}.
- Durable floor: \`node --no-lazy-feedback-allocation --import tsx bench/servers/floor.ts\` (the V8 flag livevote's entry sets) on the same Postgres server (database \`bench_floor\`), the same voters under
  the same election id as the livevote run of its pair, into a table of its own; its warm-up used separate lines.
- Not part of this run: how the group-commit knobs move the write figure is in [KNOBS.md](KNOBS.md)
  (\`node --import tsx bench/knobs.ts\`, about 2 minutes).

Commands (the voter file is a temporary path; the trailing arguments are votes.lua's):

\`\`\`
${[r.ceiling, ...pairRuns(r), r.baseline, r.baselineSaturation, r.abuseOn, r.reads, r.fanout.load, r.profiled].map((run) => `# ${run.label} (load average ${run.loadAverage ?? '?'})\n${run.command}`).join('\n')}
# journal
DATABASE_URL=<embedded server>/postgres node --import tsx bench/journal.ts
# recovery
DATABASE_URL=<embedded server>/postgres RECOVERY_VOTES=${r.recovery.votesTotal} RECOVERY_FULL_REPLAY=1 node --import tsx bench/recovery.ts
# memory
node --expose-gc --max-semi-space-size=1 --import tsx bench/memory.ts
\`\`\`

## Writes

| run | load average | conns | active s | answered | 200 | ≥400 | **votes/s** (200/s) | p50 ms | p90 ms | **p99 ms** | p99.9 ms | max ms | CPU (% of one core) | CPU µs per answer (server + pg) |
|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|
${[r.ceiling, ...pairRuns(r), r.baseline, r.baselineSaturation, r.abuseOn, r.fanout.load, r.profiled].map(runRow).join('\n')}

"load average" is the machine's 1-minute load average when the run started (2 cores: above 2, other work waited for a core).
livevote and the durable floor ran in pairs, one right after the other (which first alternates), ${r.settings.pairs} pairs at each
connection count, ${r.settings.pairActiveS} s each: the ratio the targets use is the median of the pairs' ratios
(${r.pairs.map((p) => `${p.connections} connections: ${p.pairs.map((x) => x.ratio.toFixed(3)).join(', ')} → **${p.medianRatio.toFixed(3)}**`).join('; ')}),
and the rows "livevote", "durable floor" elsewhere in this page are the runs of the median pair.

The ceiling row counts fixed answers (nothing stored). "fan-out load" is the write load during the fan-out
measurement (${fmt(r.fanout.subscribersConnected)} subscribers connected); "livevote (profiled)" ran under \`--cpu-prof\` after a restart.
⚠ marks a run during which other work on the machine used more than ${disturbedOtherPercent}% of a core ("other").
Before each measured run the benchmark waited for the machine to settle (${fmt(r.quietWaitedS)} s in total this time).

Closed loop: with ${r.livevote.connections} connections, votes/s ≈ connections / mean latency (Little's law):
livevote ${fmt(littleLv)} (${r.livevote.connections} / ${r.livevote.latencyMs.mean} ms), baseline ${fmt(littleBase)} (${r.baseline.connections} / ${r.baseline.latencyMs.mean} ms).
During the livevote run the livevote process used ${r.livevote.cpuPercent.livevote ?? '?'}% of a core and Postgres ${r.livevote.cpuPercent.postgres ?? '?'}%;
at ${r.saturation.connections} connections ${r.saturation.cpuPercent.livevote ?? '?'}% and ${r.saturation.cpuPercent.postgres ?? '?'}%.

Where a stored vote's time on the server went, in the median pairs (mean ms per vote; livevote's from its
\`livevote_vote_buffered_seconds_total\`, \`livevote_vote_committing_seconds_total\` and the vote route's request
duration, the floor's from the same three sums it keeps; wrk's mean latency also holds the client's side and the network):

| run | waiting for its batch's commit | the commit | the rest of the request | server total | wrk mean |
|---|---|---|---|---|---|
${[r.livevote, r.floor, r.saturation, r.floorSaturation].filter((run) => run.voteStagesMs !== undefined).map(stagesRow).join('\n')}

### CPU per vote

CPU time per answer, from each process's own CPU counters (\`/proc\`), so other work on the machine does not inflate it:

| run | server µs | Postgres µs | wrk µs | total µs | two cores carry at most |
|---|---|---|---|---|---|
${[r.ceiling, r.livevote, r.saturation, r.baseline, r.baselineSaturation, r.floor, r.floorSaturation, r.abuseOn].map((run) => budgetRow(run, r.machine.cores)).join('\n')}

0.8× the durable floor is ${fmt(0.8 * r.floor.okPerS)} votes/s: on ${r.machine.cores} cores that leaves **${fmt((r.machine.cores * 1e6) / (0.8 * r.floor.okPerS), 1)} µs of CPU per vote for
livevote, Postgres and wrk together**; at ${r.livevote.connections} connections they used ${fmt(budgetTotal(r.livevote))} µs
(${(budgetTotal(r.livevote) / ((r.machine.cores * 1e6) / (0.8 * r.floor.okPerS))).toFixed(1)}× that), of which Postgres alone ${fmt(perAnswerUs(r.livevote, 'postgres') ?? 0)} µs and wrk ${fmt(perAnswerUs(r.livevote, 'wrk') ?? 0)} µs.

### The durable floor

\`bench/servers/floor.ts\` is the ceiling server plus the one thing every server measured here must also do: store
each vote in this Postgres before answering. It parses the body and group-commits the rows the cheapest way we
know (one \`INSERT … SELECT FROM unnest(arrays) ON CONFLICT DO NOTHING\` per batch into a primary-keyed table, a
prepared statement, two commits in flight) and answers after COMMIT. It checks no token and validates nothing,
and has no fencing, audit chain, metadata, actors or metrics, so it is not a vote server, only the bound for one.

It answered **${fmt(r.floor.okPerS)} votes/s** (p99 ${r.floor.latencyMs.p99} ms) = **${(r.floor.okPerS / r.ceiling.rps).toFixed(3)}× the ceiling**, using
${fmt(perAnswerUs(r.floor, 'server') ?? 0)} µs of server CPU and ${fmt(perAnswerUs(r.floor, 'postgres') ?? 0)} µs of Postgres per vote. livevote used ${fmt(perAnswerUs(r.livevote, 'server') ?? 0)} µs and ${fmt(perAnswerUs(r.livevote, 'postgres') ?? 0)} µs per vote
and reached ${r.pairs[0]!.medianRatio.toFixed(2)}× the floor (median of the pairs). ${r.floor.okPerS >= 0.5 * r.ceiling.rps
    ? 'Storing before answering alone does not rule out 0.5× the ceiling here: what separates livevote from the target is its own work per vote (the two CPU figures above).'
    : `Even storing alone stays below 0.5× the ceiling (${fmt(0.5 * r.ceiling.rps)} votes/s) here, by ${fmt(0.5 * r.ceiling.rps - r.floor.okPerS)} votes/s; the rest of the gap is livevote's own work per vote.`}

### Stored votes against answers

| run | 200 answers | stored rows | unanswered | repeated voters | voters ran out | livevote's outcomes (/metrics) | check |
|---|---|---|---|---|---|---|---|
${counts.map(countRow).join('\n')}

### Is wrk the bottleneck?

wrk used ${wrkCeiling}% of a core to drive ${fmt(r.ceiling.rps)} req/s against the ceiling with this same script, and
${wrkLv}% during the livevote run at ${fmt(r.livevote.rps)} req/s. The load generator can issue ${(r.ceiling.rps / Math.max(1, r.livevote.rps)).toFixed(1)}× livevote's rate
on this machine, so livevote's figure is livevote's, not wrk's.
${wrkCeiling >= 90
    ? `The ceiling run itself is bounded by wrk: its one thread used ${wrkCeiling}% of a core (${pct(r.ceiling.cpuPercent)}).
So the ceiling is the ceiling of this load tool on this box, a lower bound of what bare uWebSockets.js can
answer; ratios to it flatter livevote slightly, never the other way round.`
    : `The ceiling run left wrk headroom (${pct(r.ceiling.cpuPercent)}): it is bare uWebSockets.js' own limit here.`}

## Reads

\`GET /api/v1/results/live/{electionId}\` on the election of the livevote run (${fmt(r.livevote.stored ?? 0)} votes), wrk
\`-t1 -c${r.reads.connections}\`, ${r.reads.activeS} s: **${fmt(r.reads.rps)} req/s**, p50 ${r.reads.latencyMs.p50} ms, p90 ${r.reads.latencyMs.p90} ms,
**p99 ${r.reads.latencyMs.p99} ms**, p99.9 ${r.reads.latencyMs.p999} ms, ${fmt(r.reads.non2xx)} non-2xx. CPU: ${pct(r.reads.cpuPercent)}.

## Fan-out

${fmt(fo.subscribersConnected)} of ${fmt(r.settings.subscribers)} WebSocket subscribers (the \`ws\` package, in the benchmark process) on
\`/api/v1/results/stream/{electionId}\`, connected in ${p(fo.connectMs / 1000)} s (${fo.connectFailures} failures), while wrk wrote
${fmt(fo.load.okPerS)} votes/s into the same election (${fo.load.connections} connections).

Method: wrk votes for every candidate but the last. A marker sender in the benchmark process casts one vote at
a time for the last candidate, each from a fresh voter, noting when it sent it and when the 200 came back.
livevote answers only after COMMIT, so the commit lies between the two. Every subscriber notes when it first
sees the marker candidate's count reach k. **commit → delivery** = first seen − 200 received, per (marker,
subscriber); it can only understate by the 200's own trip (a frame that arrived before the 200 is counted as
0 ms: ${fmt(fo.beforeAck)} times). send → delivery is the upper bound (it includes the marker's own commit wait).
publish → delivery is receive time − the frame's \`asOf\` (when the server serialised it), over every frame.

| measure | samples | p50 ms | p90 ms | **p99 ms** | p99.9 ms | max ms |
|---|---|---|---|---|---|---|
| commit → delivery | ${fmt(fo.commitToDeliveryMs.count)} | ${p(fo.commitToDeliveryMs.p50)} | ${p(fo.commitToDeliveryMs.p90)} | **${p(fo.commitToDeliveryMs.p99)}** | ${p(fo.commitToDeliveryMs.p999)} | ${p(fo.commitToDeliveryMs.max)} |
| send → delivery (upper bound) | ${fmt(fo.sendToDeliveryMs.count)} | ${p(fo.sendToDeliveryMs.p50)} | ${p(fo.sendToDeliveryMs.p90)} | ${p(fo.sendToDeliveryMs.p99)} | ${p(fo.sendToDeliveryMs.p999)} | ${p(fo.sendToDeliveryMs.max)} |
| publish (\`asOf\`) → delivery | ${fmt(fo.publishToDeliveryMs.count)} | ${p(fo.publishToDeliveryMs.p50)} | ${p(fo.publishToDeliveryMs.p90)} | ${p(fo.publishToDeliveryMs.p99)} | ${p(fo.publishToDeliveryMs.p999)} | ${p(fo.publishToDeliveryMs.max)} |

${fo.markers} markers; ${fmt(fo.framesReceived)} frames received; (marker, subscriber) pairs never delivered: ${fmt(fo.missed)};
subscribers dropped during the run: ${fo.subscribersLost}. The measuring process's own event-loop delay p99 was
${p(fo.clientLoopDelayMsP99)} ms (it is part of every figure above). CPU during the run: ${pct(fo.load.cpuPercent)}.

## Memory

Shard state of one election sized for **${fmt(r.memory.voters)} voters** over ${r.memory.shardCount} shards, built through the real
shard step function (\`createShardState\` + \`stepShard\` \`ReplayStoredVotes\`) with ${fmt(r.memory.votes)} votes spread over the whole
voter range (every ${r.memory.stride}th voter of every shard, and the last voter), so every bitmap page is allocated
(\`bench/memory.ts\`, a fresh process).

| | bytes |
|---|---|
| ceil(voters / 8) | ${fmt(r.memory.idealBytes)} |
| **bitmap bytes** (sum of \`PagedBitmap.byteLength()\`, ${r.memory.pageBytes / 1024} KiB pages) | **${fmt(r.memory.bitmapBytes)}** (${r.memory.ratio.toFixed(4)}×) |
| process RSS delta | ${fmt(r.memory.rssDeltaBytes)} |
| ArrayBuffer memory delta | ${fmt(r.memory.arrayBuffersDeltaBytes)} |
| JS heap used delta | ${fmt(r.memory.heapUsedDeltaBytes)} |

Bits set ${fmt(r.memory.bitsSet)}, slots covered ${fmt(r.memory.slotsCovered)}, filled in ${fmt(r.memory.fillMs)} ms. Run with
\`--max-semi-space-size=1\` so transient row objects do not leave a grown young generation in the RSS delta.

## Recovery

\`bench/recovery.ts\`: a throwaway database (the product's migrations) on the same Postgres, ${fmt(r.recovery.votesTotal)} vote rows
inserted by \`generate_series\` (${p(r.recovery.insertS)} s; voters 0..N−1, shard = voter % ${r.recovery.shardCount}, batch ids rising every
${fmt(r.recovery.batchRows)} rows), then one snapshot per shard written through the real \`PgSnapshotStore\` under real leases,
covering ${fmt(r.recovery.coveredVotes)} votes (watermark batch ${fmt(r.recovery.watermarkBatchId)}; ${mb(r.recovery.snapshotBytes)} of bitmaps, written in ${r.recovery.snapshotWriteS.toFixed(2)} s).
Timed: \`VoteNode.openElection\` on the Postgres adapters (latest snapshot per shard + stored votes after the watermark),
all ${r.recovery.shardCount} shards, checked against the expected total and tallies.

| | seconds | rows replayed |
|---|---|---|
| **snapshot + tail** | **${r.recovery.recoveryS.toFixed(2)}** | ${fmt(r.recovery.rowsReplayed)} |
| no snapshot (everything replayed) | ${r.recovery.fullReplayS === null ? '—' : r.recovery.fullReplayS.toFixed(2)} | ${r.recovery.fullReplayRows === null ? '—' : fmt(r.recovery.fullReplayRows)} |

Postgres' caches are warm (the rows were just written), as after a process crash on a live database server.
A real restart of livevote (the profiled run's process, same data dir) took ${p(r.restart.startS)} s to listen, recovering
${r.restart.elections.length} elections: ${r.restart.elections.map((e) => `${e.name} (${fmt(e.votes)} votes) in ${fmt(e.recoveryMs)} ms`).join(', ')}. Exit codes of the
graceful stops: ${r.restart.exitCodes.join(', ')}.

## Journal alone

\`bench/journal.ts\` (PgJournal without HTTP or actors: one statement per batch that fences, inserts, keeps the audit digests and records the batch, one round trip, with the audit sealer running beside it) on the same
Postgres: **${fmt(r.journal.rowsPerS ?? 0)} rows/s** with batches of ${fmt(r.journal.batchRows ?? 0)} rows and ${r.journal.inFlightMax} commits in flight, commit
latency p50 ${r.journal.commitLatencyMsP50} ms, p99 ${r.journal.commitLatencyMsP99} ms.

## Cost per feature

What each part of a vote costs, every figure measured in this run (none estimated):

**Postgres**, by switching each part of the commit statement off (\`bench/journalFeatures.ts\` on the embedded
Postgres: ${fmt(r.journalFeatures.commits)} commits per variant of ${r.journalFeatures.batchRows} rows over ${r.journalFeatures.shardCount} shards, variants alternating in rounds, the
backend's own CPU from \`/proc\`; load average ${r.journalFeatures.loadAverage}). A batch is ~${r.journalFeatures.batchRows} votes at ${r.settings.connections} connections; bigger batches cost less per vote.

| part | Postgres µs per vote | what switching it off saves |
|---|---|---|
${journalFeatureRows(r).join('\n')}

**Abuse controls**, by a knob run (livevote restarted with them on, against the median ${r.settings.connections}-connection pair's run with them off):
${cpuPerAnswer(r.abuseOn)} µs of CPU per vote (server + Postgres) against ${cpuPerAnswer(r.livevote)}: the controls cost
${fmt((perAnswerUs(r.abuseOn, 'server') ?? 0) - (perAnswerUs(r.livevote, 'server') ?? 0))} µs of server and ${fmt((perAnswerUs(r.abuseOn, 'postgres') ?? 0) - (perAnswerUs(r.livevote, 'postgres') ?? 0))} µs of Postgres CPU per vote here
(two runs minutes apart, load average ${r.abuseOn.loadAverage ?? '?'} and ${r.livevote.loadAverage ?? '?'}: per-vote CPU moves with the machine's load, so read it with that).
${fmt(r.abuseOn.okPerS)} votes/s against ${fmt(r.livevote.okPerS)}, p99 ${r.abuseOn.latencyMs.p99} ms against ${r.livevote.latencyMs.p99} ms.

**The server's features by knob runs** (each switched off with the measurement-only \`LIVEVOTE_MEASURE_WITHOUT\`,
in pairs of write runs): the section "Cost per feature, by knob runs", written by \`npm run bench:features\` (not part of
this run: it takes ~12 minutes). Where the profile below puts each feature's files, for comparison (the profiled run's
${fmt(perAnswerUs(r.profiled, 'server') ?? 0)} µs of server CPU per vote at ${r.profiled.connections} connections, split in proportion to the busy samples of each feature's
files; profiling adds its own cost; a share of samples is not what switching a feature off saves):

| feature | % of busy samples | µs per vote |
|---|---|---|
${featureCostRows(r).map((x) => `| ${x.feature} | ${x.percent.toFixed(1)} | ${fmt(x.us, 1)} |`).join('\n')}

## CPU profile of the livevote hot path

livevote restarted as \`${(r.livevoteConfig.command ?? 'node --import tsx infra/main.ts').replace(/^node /, 'node --cpu-prof ')}\` (same data dir and settings), then one ${r.profiled.activeS} s write run of ${r.profiled.connections} connections
(${fmt(r.profiled.okPerS)} votes/s under the profiler); only the samples inside the load window are counted
(${fmt(r.profile.samples)} samples over ${fmt(r.profile.windowMs)} ms; ${r.profile.idlePercent}% idle). Percentages are of the busy samples.

Self time by area:

${frameTable(r.profile.areas.slice(0, 15), 'areas')}

Top self-time frames:

${frameTable(r.profile.selfTop, 'self')}

Top inclusive frames (a frame's own time plus everything it called):

${frameTable(r.profile.inclusiveTop.slice(0, 20), 'inclusive')}
`;
}

export interface Verdict {
  readonly failed: boolean;
  readonly lines: readonly string[];
}

export async function writeResults(r: BenchResults, dir: string): Promise<Verdict> {
  const t = targets(r);
  const json = {
    ceiling_rps: r.ceiling.rps,
    livevote_votes_per_s: r.livevote.okPerS,
    livevote_p50_ms: r.livevote.latencyMs.p50,
    livevote_p99_ms: r.livevote.latencyMs.p99,
    livevote_p999_ms: r.livevote.latencyMs.p999,
    livevote_saturation_votes_per_s: r.saturation.okPerS,
    livevote_saturation_p99_ms: r.saturation.latencyMs.p99,
    baseline_votes_per_s: r.baseline.okPerS,
    baseline_p99_ms: r.baseline.latencyMs.p99,
    baseline_saturation_votes_per_s: r.baselineSaturation.okPerS,
    ratio_livevote_baseline_at_saturation: Math.round((r.saturation.okPerS / r.baselineSaturation.okPerS) * 100) / 100,
    ratio_livevote_ceiling: Math.round((r.livevote.okPerS / r.ceiling.rps) * 1000) / 1000,
    ratio_livevote_baseline: Math.round((r.livevote.okPerS / r.baseline.okPerS) * 100) / 100,
    read_rps: r.reads.rps,
    read_p99_ms: r.reads.latencyMs.p99,
    fanout_subscribers: r.fanout.subscribersConnected,
    fanout_p50_ms: Math.round(r.fanout.commitToDeliveryMs.p50 * 10) / 10,
    fanout_p99_ms: Math.round(r.fanout.commitToDeliveryMs.p99 * 10) / 10,
    bitmap_bytes_300m: r.memory.bitmapBytes,
    bitmap_ideal_bytes_300m: r.memory.idealBytes,
    memory_rss_delta_bytes_300m: r.memory.rssDeltaBytes,
    recovery_10m_s: Math.round(r.recovery.recoveryS * 1000) / 1000,
    recovery_full_replay_s: r.recovery.fullReplayS === null ? null : Math.round(r.recovery.fullReplayS * 1000) / 1000,
    journal_rows_per_s: r.journal.rowsPerS,
    floor_votes_per_s: r.floor.okPerS,
    floor_p99_ms: r.floor.latencyMs.p99,
    ratio_floor_ceiling: Math.round((r.floor.okPerS / r.ceiling.rps) * 1000) / 1000,
    ratio_livevote_floor: Math.round(r.pairs[0]!.medianRatio * 1000) / 1000,
    floor_saturation_votes_per_s: r.floorSaturation.okPerS,
    ratio_livevote_floor_at_saturation: Math.round(r.pairs[1]!.medianRatio * 1000) / 1000,
    livevote_abuse_on_votes_per_s: r.abuseOn.okPerS,
    livevote_cpu_us_per_vote: Math.round(perAnswerUs(r.livevote, 'server') ?? -1),
    postgres_cpu_us_per_vote: Math.round(perAnswerUs(r.livevote, 'postgres') ?? -1),
    livevote_abuse_on_cpu_us_per_vote: Math.round(perAnswerUs(r.abuseOn, 'server') ?? -1),
    counts_ok: countCheckedRuns(r).every((c) => c.countOk),
    targets: Object.fromEntries(t.map((x) => [x.name, { met: x.met, measured: x.actual, target: x.target, margin: x.margin }])),
    details: r,
  };
  // The cluster section is written by `npm run bench:cluster` (bench/cluster.ts): kept as it was.
  const clusterJson = await preservedClusterJson(dir);
  const previous = await readFileOr(path.join(dir, 'RESULTS.md'), '');
  const clusterSection = preservedClusterSection(previous);
  // The moves section is written by bench/moves.ts: kept as it was, like the cluster section.
  const movesSection = preservedMovesSection(previous);
  // The per-feature knob runs are written by `npm run bench:features` (bench/features.ts): kept too.
  const featuresJson = await preservedFeaturesJson(dir);
  const featuresSection = knobRunsSection.preserved(previous);
  await writeFile(path.join(dir, 'results.json'), `${JSON.stringify({
    ...json,
    ...(clusterJson === undefined ? {} : { cluster: clusterJson }),
    ...(featuresJson === undefined ? {} : { features: featuresJson }),
  }, null, 2)}\n`);
  const markdown = renderMarkdown(r);
  const withCluster = clusterSection === undefined ? markdown : withClusterSection(markdown, clusterSection);
  await writeFile(path.join(dir, 'RESULTS.md'), knobRunsSection.replaced(withMovesSection(withCluster, movesSection), featuresSection));
  const failed = !json.counts_ok;
  return {
    failed,
    lines: [
      ...t.map((x) => `${x.met ? 'met    ' : 'MISSED '} ${x.name}: ${x.actual} (${x.margin})`),
      failed ? 'FAILED: stored votes do not match the 200 answers (see RESULTS.md)' : 'stored votes = 200 answers in every write run',
    ],
  };
}

function stagesRow(run: WriteRunReport): string {
  const st = run.voteStagesMs!;
  return `| ${run.label} | ${st.buffered.toFixed(2)} | ${st.committing.toFixed(2)} | ${st.rest.toFixed(2)} | ${(st.buffered + st.committing + st.rest).toFixed(2)} | ${run.latencyMs.mean} |`;
}
