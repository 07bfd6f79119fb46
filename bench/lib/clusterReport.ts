// The cluster benchmark's figures (bench/cluster.ts): the "Cluster" section of bench/RESULTS.md,
// between markers, and the `cluster` key of bench/results.json. `npm run bench` rewrites both files
// and keeps this section and key as they were (preservedClusterSection, preservedClusterJson).
import { readFile, writeFile } from 'node:fs/promises';
import path from 'node:path';

export interface ThroughputRun {
  readonly label: string;
  readonly nodes: number;
  /** The window the votes/s are over, in s. */
  readonly activeS: number;
  /** Nodes wrk sent votes to (one wrk process each). */
  readonly targets: readonly string[];
  readonly commands: readonly string[];
  readonly votesPerS: number;
  readonly ok: number;
  readonly non2xx: number;
  /** livevote_votes_total of every node: replies by outcome (unavailable = 503). */
  readonly serverOutcomes: Record<string, number>;
  readonly stored: number;
  readonly countOk: boolean;
  readonly countProblems: readonly string[];
  /** The worst of the wrk processes' percentiles (their histograms cannot be merged). */
  readonly latencyMsP50Max: number;
  readonly latencyMsP99Max: number;
  /** forwarded / (local + forwarded): of the votes the nodes took in, the share sent to another owner. */
  readonly forwardedShare: number;
  readonly cpuPercent: Record<string, number>;
  /** Over 3 s with no votes, just before the run. */
  readonly idleCpuPercent: Record<string, number>;
  /** nodesNet: the node processes less their idle CPU. */
  readonly cpuUsPerVote: { readonly nodes: number; readonly nodesNet: number; readonly postgres: number; readonly wrk: number };
  readonly perNode: readonly {
    readonly nodeId: string;
    readonly answered200: number;
    readonly local: number;
    readonly forwarded: number;
    readonly received: number;
    readonly idleCpuPercent: number;
    readonly routedOutcomes: Record<string, number>;
    readonly cpuPercent: number;
    readonly cpuUsPerHandledVote: number;
  }[];
}

export interface KillResult {
  readonly kill: number;
  readonly victim: string;
  readonly az: string;
  readonly victimWasCoordinator: boolean;
  readonly shardsOwned: number;
  readonly shardsOwnedInLoadElection: number;
  /** Kill → first accepted vote, per shard the victim owned (null: none within the deadline). */
  readonly perShardMs: readonly (number | null)[];
  readonly allServedMs: number | null;
  readonly declaredDeadMs: number | null;
  readonly reassignedMs: number | null;
  readonly probeAttempts: number;
  readonly probeOutcomes: Record<string, number>;
  readonly load: { readonly ok: number; readonly unavailable: number; readonly other: number };
  /** Shards the survivors took over from their own replica (warm) or from snapshot + tail (cold), with the tail rows each read. */
  readonly recoveries?: { readonly warm: number; readonly cold: number; readonly warmTailRows: number; readonly coldTailRows: number };
}

/** The same 3 nodes measured without replicas and with them (bench/cluster.ts, step `replication`). */
export interface ReplicationResult {
  readonly replicas: number;
  readonly without: ThroughputRun;
  readonly with: ThroughputRun;
  /** Node CPU per vote (net of idle) with replicas less without. */
  readonly cpuUsPerVoteAdded: number;
  /** Samples of GET /api/v1/admin/cluster on node-1 during the run with replicas, every replica of every shard. */
  readonly lag: {
    readonly samples: number;
    readonly replicaEntries: number;
    /** Share of replica entries whose replica reported itself live (applying the stream, not catching up). */
    readonly liveShare: number;
    /** The owner's published votes less the replica's at its last report (reports every 500 ms, counts every 100 ms). */
    readonly votesBehind: Stat;
    /** votesBehind over the shard's share of the run's votes/s: about how far behind in time. */
    readonly approxMsBehind: Stat;
  };
}

export interface Stat {
  readonly p50: number;
  readonly p99: number;
  readonly max: number;
}

/** p50, p99 (nearest rank) and max of `values`, in any order; NaN for none. */
export function statOf(values: readonly number[]): Stat {
  const sorted = [...values].sort((a, b) => a - b);
  const at = (p: number) => (sorted.length === 0 ? Number.NaN : sorted[Math.min(sorted.length - 1, Math.ceil((p / 100) * sorted.length) - 1)]!);
  return { p50: at(50), p99: at(99), max: sorted.length === 0 ? Number.NaN : sorted[sorted.length - 1]! };
}

export interface FailoverResult {
  /** LIVEVOTE_REPLICAS of the nodes during the kills (0: every takeover cold). */
  readonly replicas?: number;
  readonly kills: readonly KillResult[];
  readonly probeIntervalMs: number;
  readonly shardSamples: number;
  readonly firstAcceptedMs: Stat;
  readonly allServedMs: Stat;
  readonly declaredDeadMs: Stat;
  readonly reassignedMs: Stat;
  readonly acknowledged: number;
  readonly stored: number;
  readonly storedUnacknowledged: number;
  /** What those stored-but-not-acknowledged votes were answered, by status and error code. */
  readonly storedUnacknowledgedAnswers: Record<string, number>;
  readonly countOk: boolean;
  readonly countProblems: readonly string[];
}

export interface ClusterResults {
  readonly generatedAt: string;
  readonly command: string;
  readonly git: string;
  readonly machine: Record<string, unknown>;
  readonly settings: Record<string, number>;
  readonly nodeEnv: readonly string[];
  readonly throughput: ThroughputRun[];
  failover?: FailoverResult;
  /** Every node of one AZ killed at once (two nodes per AZ). */
  azFailover?: FailoverResult;
  replication?: ReplicationResult;
  totalS: number;
}

/** What a forwarded vote costs against a local one, from the runs (µs of CPU per vote). */
export interface ForwardCost {
  /** CPU of the node processes per vote with one node: every vote local. */
  readonly localUs: number;
  /** From the run with every vote into node-1 of two: node-1's extra per forwarded vote, and node-2's per received vote. */
  readonly split?: { readonly senderUs: number; readonly ownerUs: number; readonly forwardedUs: number; readonly ratio: number };
  /** From the spread runs: (cluster CPU per vote − one node's) / forwarded share, added to a local vote. */
  readonly spread: readonly { readonly nodes: number; readonly forwardedShare: number; readonly forwardedUs: number; readonly ratio: number; readonly ratioWithPostgres: number }[];
}

export function forwardCost(runs: readonly ThroughputRun[]): ForwardCost | undefined {
  const single = runs.find((r) => r.nodes === 1);
  if (!single) return undefined;
  // Net of each node's idle CPU: what the votes cost, not what a node costs doing nothing.
  const localUs = single.cpuUsPerVote.nodesNet;
  const localWithPostgres = localUs + single.cpuUsPerVote.postgres;
  const spread = runs.filter((r) => r.nodes > 1 && r.targets.length === r.nodes && r.forwardedShare > 0).map((r) => {
    const extra = (r.cpuUsPerVote.nodesNet - localUs) / r.forwardedShare;
    const extraWithPostgres = (r.cpuUsPerVote.nodesNet + r.cpuUsPerVote.postgres - localWithPostgres) / r.forwardedShare;
    return {
      nodes: r.nodes,
      forwardedShare: r.forwardedShare,
      forwardedUs: Math.round(localUs + extra),
      ratio: round3((localUs + extra) / localUs),
      ratioWithPostgres: round3((localWithPostgres + extraWithPostgres) / localWithPostgres),
    };
  });
  let split: ForwardCost['split'];
  const one = runs.find((r) => r.nodes === 2 && r.targets.length === 1);
  const sender = one?.perNode.find((n) => n.nodeId === one.targets[0]);
  const owner = one?.perNode.find((n) => n.nodeId !== one.targets[0]);
  if (one && sender && owner && sender.forwarded > 0 && owner.received > 0) {
    // The sender's CPU over the window, less its local votes at the one-node cost: its share of
    // the forwarded votes. The owner took no request of its own: all its CPU is theirs.
    const senderCpuUs = (Math.max(0, sender.cpuPercent - sender.idleCpuPercent) / 100) * 1e6 * one.activeS;
    const senderUs = Math.round((senderCpuUs - sender.local * localUs) / sender.forwarded);
    const ownerUs = Math.round(((Math.max(0, owner.cpuPercent - owner.idleCpuPercent) / 100) * 1e6 * one.activeS) / owner.received);
    split = { senderUs, ownerUs, forwardedUs: senderUs + ownerUs, ratio: round3((senderUs + ownerUs) / localUs) };
  }
  return { localUs, split, spread };
}

const round3 = (x: number) => Math.round(x * 1000) / 1000;
const fmt = (n: number) => n.toLocaleString('en');
const beginMarker = '<!-- cluster-bench:begin (written by npm run bench:cluster; npm run bench keeps it) -->';
const endMarker = '<!-- cluster-bench:end -->';

export function renderClusterSection(r: ClusterResults): string {
  const lines: string[] = [beginMarker, '## Cluster: the cost of being a cluster, and failover', ''];
  lines.push(
    `Generated by \`${r.command}\` (\`bench/cluster.ts\`, \`bench/failover.ts\`) at ${r.generatedAt}, commit \`${r.git}\`, in ${r.totalS} s;`,
    `${r.machine.cores} cores, Node ${r.machine.node}, load average at start ${(r.machine.loadAverageAtStart as number[]).join(' / ')}. Node processes of the compiled`,
    `build on one embedded Postgres the benchmark starts (durable: fsync on), all on the same cores as wrk and Postgres:`,
    `the figures are the cost of being a cluster, not its capacity. ${r.settings.shardCount} shards per election; node environment`,
    `\`${r.nodeEnv.join(' ')}\`, failure detection at its defaults (heartbeat 250 ms, LIVEVOTE_DEAD_AFTER_MS 1500).`,
    '',
  );
  if (r.throughput.length > 0) {
    lines.push('### Votes/s and CPU per vote through 1, 2 and 3 nodes', '');
    lines.push(`wrk \`-t1\`, ${r.settings.connections} connections split between one wrk per node, ${r.settings.activeS} s after a warm-up, every request a new voter (\`bench/lua/votes.lua\`).`, '');
    lines.push('| run | votes/s | p50 ms (worst wrk) | p99 ms (worst wrk) | forwarded | CPU µs/vote: nodes (net of idle) | Postgres | wrk | other work on the box | per node: CPU % of a core, idle %, accepted votes local / forwarded / received | stored vs 200s |');
    lines.push('|---|---|---|---|---|---|---|---|---|---|---|');
    for (const run of r.throughput) {
      const nodes = run.perNode.map((n) => `${n.nodeId} ${n.cpuPercent}%, idle ${n.idleCpuPercent}%, ${fmt(n.local)} / ${fmt(n.forwarded)} / ${fmt(n.received)}`).join('; ');
      const extra = run.stored - run.ok;
      const count = !run.countOk ? `**FAILED**: ${run.countProblems.join('; ')}` : extra === 0 ? `${fmt(run.stored)} = ${fmt(run.ok)}` : `${fmt(run.stored)} = ${fmt(run.ok)} + ${extra} answered 503 and stored (of ${run.serverOutcomes.unavailable ?? 0} 503s)`;
      lines.push(`| ${run.label} | **${fmt(run.votesPerS)}** | ${run.latencyMsP50Max} | ${run.latencyMsP99Max} | ${(run.forwardedShare * 100).toFixed(1)}% | ${run.cpuUsPerVote.nodes} (${run.cpuUsPerVote.nodesNet}) | ${run.cpuUsPerVote.postgres} | ${run.cpuUsPerVote.wrk} | ${run.cpuPercent.other ?? '?'}% of a core | ${nodes} | ${count} |`);
    }
    lines.push('', '"forwarded": accepted votes sent to their shard\'s owner on another node / all accepted votes taken in. A vote answered 503 may still be stored when its forward timed out after the owner committed: never a false `accepted`, and a retry gets the original; the check is that every 200 is stored and nothing beyond the 200s and the 503s.');
    lines.push('', 'Commands (one wrk per target node, run at once):', '');
    for (const run of r.throughput) lines.push(`- ${run.label}: \`${run.commands[0]}\`${run.commands.length > 1 ? ` (+${run.commands.length - 1} alike)` : ''}`);
    const cost = forwardCost(r.throughput);
    if (cost) {
      lines.push('', '**What a forwarded vote costs** (target: at most 1.2× the CPU of a local one):', '');
      lines.push(`- a local vote: ${cost.localUs} µs of node CPU, net of its idle CPU (one node, every vote local). All figures below are net of idle too.`);
      if (cost.split) {
        lines.push(
          `- measured by sides (two nodes, every vote sent to node-1, so node-2 only serves what node-1 forwards): the receiving node spends ` +
            `${cost.split.senderUs} µs per forwarded vote (its CPU less its local votes at ${cost.localUs} µs each), the owner ${cost.split.ownerUs} µs per ` +
            `received vote: **${cost.split.forwardedUs} µs = ${cost.split.ratio}× a local vote** — ${cost.split.ratio <= 1.2 ? 'target met' : 'target **missed**'}.`,
        );
      }
      for (const s of cost.spread) {
        lines.push(`- from the ${s.nodes}-node spread run (${(s.forwardedShare * 100).toFixed(1)}% forwarded): (node CPU per vote − one node's) / forwarded share + a local vote = ${s.forwardedUs} µs = **${s.ratio}×** a local vote; with Postgres counted in both, ${s.ratioWithPostgres}×.`);
      }
      lines.push('', 'The cross-run figures carry the run-to-run noise of a shared 2-core box (±10-20%), and more nodes on the same cores also commit in smaller batches; the by-sides figure is the direct one.');
    }
    lines.push('');
  }
  const rep = r.replication;
  if (rep) {
    lines.push(`### Replication: cost and lag (LIVEVOTE_REPLICAS=${rep.replicas})`, '');
    lines.push(
      `The same three nodes, votes spread over all of them as above: first without replicas (LIVEVOTE_REPLICAS=0), then restarted one by one`,
      `(SIGTERM, hand-off) with ${rep.replicas} replica per shard in another AZ. Every committed batch is streamed to the shard's replica over the links.`,
      '',
      '| run | votes/s | p99 ms (worst wrk) | CPU µs/vote: nodes (net of idle) | Postgres | stored vs 200s |',
      '|---|---|---|---|---|---|',
    );
    for (const run of [rep.without, rep.with]) {
      lines.push(`| ${run.label} | ${fmt(run.votesPerS)} | ${run.latencyMsP99Max} | ${run.cpuUsPerVote.nodes} (${run.cpuUsPerVote.nodesNet}) | ${run.cpuUsPerVote.postgres} | ${run.countOk ? `${fmt(run.stored)} = ${fmt(run.ok)}${run.stored > run.ok ? ' + 503s stored' : ''}` : `**FAILED**: ${run.countProblems.join('; ')}`} |`);
    }
    const l = rep.lag;
    lines.push(
      '',
      `- **Cost of replication**: ${rep.cpuUsPerVoteAdded >= 0 ? '+' : ''}${rep.cpuUsPerVoteAdded} µs of node CPU per vote (net of idle) against the run without replicas, on the same box minutes apart (run-to-run noise ±10-20%).`,
      `- **Lag under that load** (${l.samples} samples of \`GET /api/v1/admin/cluster\` on node-1, ${fmt(l.replicaEntries)} replica entries): ${(l.liveShare * 100).toFixed(1)}% live (applying the stream); votes behind p50 ${l.votesBehind.p50}, p99 ${l.votesBehind.p99}, max ${l.votesBehind.max}; ` +
        `about ${l.approxMsBehind.p50} / ${l.approxMsBehind.p99} / ${l.approxMsBehind.max} ms behind at the shard's rate. The figure is an upper bound: it compares the owner's counts as published (every 100 ms) with the replica's as reported (every 500 ms).`,
      '',
      `Commands: \`${rep.without.commands[0]}\` (+${rep.without.commands.length - 1} alike), the same for the run with replicas.`,
      '',
    );
  }
  const replicasText = (f: FailoverResult) =>
    f.replicas ? `${f.replicas} warm replica per shard in another AZ (LIVEVOTE_REPLICAS=${f.replicas})` : 'no replicas (every takeover cold: snapshot + tail from Postgres)';
  if (r.failover) {
    const f = r.failover;
    lines.push('### Failover: kill -9 of an owner under load', '');
    renderFailover(lines, f, [
      `Three nodes in AZs a, b, c, ${replicasText(f)}; a steady load (${8} workers, ≤ 1 vote each per 8 ms) through the two that stay up; \`kill -9\` of one owner,`,
      `${f.kills.length} times (node-1, node-2, node-3 in turn, each restarted and the map at rest before the next kill). For every shard the killed node`,
      `owned, of every election, probes with fresh voters of that shard go through the survivors every ${f.probeIntervalMs} ms (503 → the next voter)`,
      `until one is accepted; kill → that answer is the shard's failover time. ${f.shardSamples} shard failovers measured.`,
    ]);
  }
  if (r.azFailover) {
    const f = r.azFailover;
    lines.push('### Failover: kill -9 of every node of one AZ at once', '');
    renderFailover(lines, f, [
      `Six nodes, two in each of AZs a, b, c, ${replicasText(f)}; the same load and probes as above through the four that stay up; \`kill -9\` of both`,
      `nodes of one AZ at once, ${f.kills.length} times (a, b, c in turn, restarted and the map at rest before the next). ${f.shardSamples} shard failovers measured.`,
    ]);
  }
  lines.push(endMarker);
  return lines.join('\n');
}

function renderFailover(lines: string[], f: FailoverResult, intro: readonly string[]): void {
  lines.push(
    ...intro,
    '',
    '| figure | p50 | p99 | max | target |',
    '|---|---|---|---|---|',
    `| kill → first accepted vote, per shard | ${f.firstAcceptedMs.p50} ms | **${f.firstAcceptedMs.p99} ms** | ${f.firstAcceptedMs.max} ms | p99 < 3,000 ms: ${f.firstAcceptedMs.p99 < 3000 ? 'met' : '**missed**'} |`,
    `| kill → every shard of the killed nodes served | ${f.allServedMs.p50} ms | ${f.allServedMs.p99} ms | ${f.allServedMs.max} ms | |`,
    `| kill → declared dead (map in Postgres) | ${f.declaredDeadMs.p50} ms | ${f.declaredDeadMs.p99} ms | ${f.declaredDeadMs.max} ms | |`,
    `| kill → their shards reassigned (map in Postgres) | ${f.reassignedMs.p50} ms | ${f.reassignedMs.p99} ms | ${f.reassignedMs.max} ms | |`,
    '',
    `Votes: ${fmt(f.acknowledged)} acknowledged (load and probes), every one stored with its candidate: ${f.countOk ? 'yes' : `**NO**: ${f.countProblems.join('; ')}`}; ` +
      `${fmt(f.storedUnacknowledged)} stored that were not acknowledged (${Object.entries(f.storedUnacknowledgedAnswers).map(([k, v]) => `${v} × ${k}`).join(', ') || 'none'}; allowed when the owner died between its commit and its answer: never a false \`accepted\`, and a retry gets the original); tallies on every node = count(*): ${f.countOk ? 'yes' : 'see above'}.`,
    '',
    '| kill | node | coordinator | shards | declared dead ms | reassigned ms | first accepted ms (min–max) | all served ms | taken over warm / cold (tail rows read) | load: ok / 503 / other |',
    '|---|---|---|---|---|---|---|---|---|---|',
  );
  for (const k of f.kills) {
    const served = k.perShardMs.filter((ms): ms is number => ms !== null);
    const taken = k.recoveries ? `${k.recoveries.warm} / ${k.recoveries.cold} (${fmt(k.recoveries.warmTailRows)} / ${fmt(k.recoveries.coldTailRows)})` : '–';
    lines.push(`| ${k.kill} | ${k.victim} (${k.az}) | ${k.victimWasCoordinator ? 'yes' : ''} | ${k.shardsOwned} | ${k.declaredDeadMs ?? '–'} | ${k.reassignedMs ?? '–'} | ${served.length > 0 ? `${Math.min(...served)}–${Math.max(...served)}` : '–'} | ${k.allServedMs ?? '**not all**'} | ${taken} | ${k.load.ok} / ${k.load.unavailable} / ${k.load.other} |`);
  }
  lines.push('');
}

/** The cluster section of an existing RESULTS.md, markers included, or undefined. */
export function preservedClusterSection(markdown: string): string | undefined {
  const begin = markdown.indexOf(beginMarker);
  const end = markdown.indexOf(endMarker);
  return begin >= 0 && end > begin ? markdown.slice(begin, end + endMarker.length) : undefined;
}

/** `markdown` with its cluster section replaced by `section` (appended when it has none). */
export function withClusterSection(markdown: string, section: string): string {
  const existing = preservedClusterSection(markdown);
  if (existing) return markdown.replace(existing, () => section);
  return `${markdown.trimEnd()}\n\n${section}\n`;
}

export async function readFileOr(file: string, fallback: string): Promise<string> {
  try {
    return await readFile(file, 'utf8');
  } catch {
    return fallback;
  }
}

/** The `cluster` key of an existing results.json, or undefined. */
export async function preservedClusterJson(dir: string): Promise<unknown> {
  return preservedResultsKey(dir, 'cluster');
}

/** One key of an existing results.json (a section another script writes), or undefined. */
export async function preservedResultsKey(dir: string, key: string): Promise<unknown> {
  try {
    return (JSON.parse(await readFile(path.join(dir, 'results.json'), 'utf8')) as Record<string, unknown>)[key];
  } catch {
    return undefined;
  }
}

export async function writeClusterResults(r: ClusterResults, dir: string): Promise<{ failed: boolean; lines: string[] }> {
  const mdFile = path.join(dir, 'RESULTS.md');
  const jsonFile = path.join(dir, 'results.json');
  await writeFile(mdFile, withClusterSection(await readFileOr(mdFile, '# livevote benchmark results\n'), renderClusterSection(r)));
  const json = JSON.parse(await readFileOr(jsonFile, '{}')) as Record<string, unknown>;
  const cost = forwardCost(r.throughput);
  json.cluster = {
    generated_at: r.generatedAt,
    command: r.command,
    votes_per_s_by_nodes: Object.fromEntries(r.throughput.filter((t) => t.targets.length === t.nodes).map((t) => [t.nodes, t.votesPerS])),
    forwarded_vote_cpu_ratio: cost?.split?.ratio ?? null,
    failover_first_accepted_ms: r.failover?.firstAcceptedMs ?? null,
    failover_all_served_ms: r.failover?.allServedMs ?? null,
    az_failover_first_accepted_ms: r.azFailover?.firstAcceptedMs ?? null,
    replication_cpu_us_per_vote_added: r.replication?.cpuUsPerVoteAdded ?? null,
    replication_votes_behind: r.replication?.lag.votesBehind ?? null,
    counts_ok: r.throughput.every((t) => t.countOk) && (r.failover?.countOk ?? true) && (r.azFailover?.countOk ?? true),
    forward_cost: cost ?? null,
    details: r,
  };
  await writeFile(jsonFile, `${JSON.stringify(json, null, 2)}\n`);
  const lines: string[] = [];
  for (const t of r.throughput) lines.push(`${t.label}: ${t.votesPerS} votes/s, forwarded ${(t.forwardedShare * 100).toFixed(1)}%, count ${t.countOk ? 'ok' : 'FAILED'}`);
  if (cost?.split) lines.push(`forwarded vote: ${cost.split.forwardedUs} µs (sender ${cost.split.senderUs} + owner ${cost.split.ownerUs}) = ${cost.split.ratio}× a local vote (${cost.localUs} µs); target ≤ 1.2×`);
  if (r.replication) lines.push(`replication: ${r.replication.cpuUsPerVoteAdded >= 0 ? "+" : ""}${r.replication.cpuUsPerVoteAdded} µs/vote; votes behind p50 ${r.replication.lag.votesBehind.p50} p99 ${r.replication.lag.votesBehind.p99}; ${(r.replication.lag.liveShare * 100).toFixed(1)}% live`);
  if (r.failover) lines.push(`failover: kill → first accepted vote per shard p50 ${r.failover.firstAcceptedMs.p50} ms, p99 ${r.failover.firstAcceptedMs.p99} ms, max ${r.failover.firstAcceptedMs.max} ms over ${r.failover.shardSamples} shards; all served p99 ${r.failover.allServedMs.p99} ms; counts ${r.failover.countOk ? 'ok' : 'FAILED'}`);
  if (r.azFailover) lines.push(`AZ failover: kill → first accepted vote per shard p50 ${r.azFailover.firstAcceptedMs.p50} ms, p99 ${r.azFailover.firstAcceptedMs.p99} ms, max ${r.azFailover.firstAcceptedMs.max} ms over ${r.azFailover.shardSamples} shards; counts ${r.azFailover.countOk ? 'ok' : 'FAILED'}`);
  const failed = !(r.throughput.every((t) => t.countOk) && (r.failover?.countOk ?? true) && (r.azFailover?.countOk ?? true) && (r.replication?.with.countOk ?? true));
  return { failed, lines };
}
