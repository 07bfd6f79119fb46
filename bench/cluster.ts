// `npm run bench:cluster`: the cost of being a cluster (issue 11) and failover time (issue 12),
// with real node processes of the compiled build on one embedded Postgres, all on this machine's
// cores. Writes the "Cluster" section of bench/RESULTS.md and the `cluster` key of
// bench/results.json (`npm run bench` keeps both when it rewrites those files), and exits 1 when a
// stored count is wrong or an acknowledged vote is missing.
//
// Throughput: votes/s and CPU per vote through 1, 2 and 3 nodes, wrk (bench/lua/votes.lua, one
// process per node, the connections split between them) spreading the votes over every node's
// port; the share of votes forwarded to their shard's owner, CPU per vote of every process. Then
// one run with every vote sent to node-1 of two: node-2 then only serves forwarded votes, which
// splits a forwarded vote's cost between its two sides. Those runs have no replicas
// (LIVEVOTE_REPLICAS=0): forwarding is measured alone. Replication: the three nodes restarted one
// by one with a replica per shard, the same run again, its CPU per vote against the run without,
// and the replicas' lag sampled from the admin view meanwhile. Failover (bench/failover.ts) then
// runs with replicas: a dead owner's shards are taken over warm. AZ failover: three more nodes
// (two per AZ), then both nodes of one AZ killed at once, each AZ in turn.
//
//   npm run bench:cluster
//   options (env): BENCH_CLUSTER_STEPS=throughput,replication,failover,azfailover  BENCH_CONNECTIONS (100)  BENCH_WRITE_S (8)
//                  BENCH_KILLS (10)  BENCH_AZ_KILLS (3)  BENCH_VOTERS (300000)
import { execFileSync } from 'node:child_process';
import os from 'node:os';
import path from 'node:path';
import { mkdtemp, rm } from 'node:fs/promises';
import { createVoters, type TestVoter } from '../infra/testing/voters.ts';
import { startBenchCluster, isSettled, routedCounters, waitFor, type BenchCluster, type BenchNode } from './lib/benchCluster.ts';
import { intFromEnv } from './lib/common.ts';
import { adminLogin, counterDelta, createOpenElection, voteCounters, type BenchElection } from './lib/livevote.ts';
import { cpuPercent, createQuietWaiter, processTree, repoRoot, sampleCpu, type CpuGroups, type CpuSample } from './lib/proc.ts';
import { statOf, writeClusterResults, type ClusterResults, type ReplicationResult, type ThroughputRun } from './lib/clusterReport.ts';
import { votesScriptArgs, writeVoterFile } from './lib/voterFile.ts';
import { ensureWrk, runWrk, type WrkRun } from './lib/wrk.ts';
import { measureFailover } from './failover.ts';

const steps = new Set((process.env.BENCH_CLUSTER_STEPS ?? 'throughput,replication,failover,azfailover').split(','));
/** Replicas per shard in the replication step and the failover after it. */
const replicas = 1;
const withReplicas = { LIVEVOTE_REPLICAS: String(replicas) };
/** Nodes started with withReplicas (a restart keeps its environment). */
const replicatingNodes = new Set<string>();
const settings = {
  connections: intFromEnv('BENCH_CONNECTIONS', 100, 10_000),
  activeS: intFromEnv('BENCH_WRITE_S', 8, 600),
  warmupS: 2,
  drainS: 3,
  kills: intFromEnv('BENCH_KILLS', 10, 1000),
  azKills: intFromEnv('BENCH_AZ_KILLS', 3, 1000),
  voters: intFromEnv('BENCH_VOTERS', 300_000, 5_000_000),
  /** Divisible by 1, 2 and 3 nodes: every node owns as many shards in every run. */
  shardCount: 12,
  candidates: 4,
};
/** Voter lines [0, wrkLines) feed wrk (every run a new election, so the same voters); the rest failover. */
const wrkLines = Math.floor(settings.voters * 0.5);

const startedMs = performance.now();
const log = (line: string) => process.stdout.write(`[${((performance.now() - startedMs) / 1000).toFixed(1).padStart(5)} s] ${line}\n`);
const quiet = createQuietWaiter(30_000, log);
const azs = ['a', 'b', 'c'];

async function countStored(cluster: BenchCluster, electionId: string): Promise<number> {
  return (await cluster.pool.query<{ n: number }>('SELECT count(*)::int AS n FROM votes WHERE election_id = $1', [electionId])).rows[0]!.n;
}

/** Waits until `nodeIds` are the live members and the map is at rest, then until each serves `electionId`. */
async function settle(cluster: BenchCluster, nodeIds: readonly string[], electionId?: string): Promise<void> {
  await waitFor(async () => (isSettled(await cluster.view(), nodeIds) ? true : undefined), 120_000, `the map to settle on ${nodeIds.join(', ')}`, 200);
  if (!electionId) return;
  for (const node of cluster.liveNodes()) {
    await waitFor(async () => {
      const response = await fetch(`${node.baseUrl}/api/v1/results/${electionId}`);
      await response.text();
      return response.ok ? true : undefined;
    }, 30_000, `${node.nodeId} to serve ${electionId}`);
  }
}

/** One wrk per target node, the connections and the voter lines split between them, all at once. */
async function spreadRun(
  cluster: BenchCluster, voterFile: string, label: string, targets: readonly BenchNode[], election: BenchElection, activeS: number, measure: boolean,
): Promise<ThroughputRun | undefined> {
  const nodes = cluster.liveNodes();
  const wrkPids: number[] = [];
  const groups: CpuGroups = {
    ...Object.fromEntries(nodes.map((n) => [n.nodeId, () => [n.pid]])),
    postgres: () => processTree(cluster.postmasterPid),
    wrk: () => wrkPids,
  };
  // Each process's CPU with no votes at all (heartbeats, map reads, metrics): at the low rates of a
  // busy box it is a large part of a node's CPU, so per-vote figures are given net of it too.
  let idle: Record<string, number> = {};
  if (measure) {
    const idleFirst = sampleCpu(groups);
    await new Promise((resolve) => setTimeout(resolve, 3000));
    idle = cpuPercent(idleFirst, sampleCpu(groups));
  }
  const countersBefore = measure ? await Promise.all(nodes.map((n) => voteCounters(n.baseUrl))) : [];
  const routedBefore = measure ? await Promise.all(nodes.map((n) => routedCounters(n.baseUrl))) : [];
  const activeMs = activeS * 1000;
  let first: CpuSample | undefined;
  let last: CpuSample | undefined;
  let sampling = false;
  const linesEach = Math.floor(wrkLines / targets.length);
  const runs: WrkRun[] = await Promise.all(targets.map((node, i) => {
    const connections = Math.floor(settings.connections / targets.length) + (i < settings.connections % targets.length ? 1 : 0);
    return runWrk({
      url: `${node.baseUrl}/api/v1/votes`,
      connections,
      durationS: activeS + settings.drainS,
      script: 'votes.lua',
      scriptArgs: votesScriptArgs({ voterFile, firstLine: i * linesEach, lineCount: linesEach, electionId: election.electionId, candidateIds: election.candidateIds, activeMs, port: node.port }),
      onStart: (child) => {
        wrkPids.push(child.pid ?? 0);
        if (sampling) return;
        sampling = true;
        setTimeout(() => { first = sampleCpu(groups); }, 1000).unref();
        setTimeout(() => { last = sampleCpu(groups); }, activeMs - 300).unref();
      },
    });
  }));
  if (!measure) return undefined;
  await new Promise((resolve) => setTimeout(resolve, 500));
  const countersAfter = await Promise.all(nodes.map((n) => voteCounters(n.baseUrl)));
  const routedAfter = await Promise.all(nodes.map((n) => routedCounters(n.baseUrl)));
  const stored = await countStored(cluster, election.electionId);
  const cpu = first && last ? cpuPercent(first, last) : {};
  const activeWindowS = Math.max(...runs.map((r) => r.result.activeMs)) / 1000;
  const ok = runs.reduce((sum, r) => sum + r.okCount, 0);
  const problems: string[] = [];
  const serverOutcomes: Record<string, number> = {};
  for (const [i] of nodes.entries()) {
    for (const [outcome, n] of Object.entries(counterDelta(countersAfter[i]!.outcomes, countersBefore[i]!.outcomes))) serverOutcomes[outcome] = (serverOutcomes[outcome] ?? 0) + n;
  }
  const non2xx = runs.reduce((sum, r) => sum + r.result.non2xx, 0);
  // A vote answered 503 may still be stored (its forward timed out while the owner committed):
  // never a false `accepted`, and a retry gets the original. So: every 200 stored, and nothing
  // stored beyond the 200s and the 503s.
  if (stored < ok) problems.push(`stored ${stored} < ${ok} answered 200: acknowledged votes missing`);
  if (stored > ok + (serverOutcomes.unavailable ?? 0)) problems.push(`stored ${stored} > ${ok} answered 200 + ${serverOutcomes.unavailable ?? 0} answered unavailable`);
  const perNode = nodes.map((node, i) => {
    const http = counterDelta(countersAfter[i]!.voteHttpStatus, countersBefore[i]!.voteHttpStatus);
    const routed = counterDelta(routedAfter[i]!, routedBefore[i]!);
    const targetIndex = targets.findIndex((t) => t.nodeId === node.nodeId);
    const wrkOk = targetIndex >= 0 ? runs[targetIndex]!.okCount : 0;
    if ((http['200'] ?? 0) !== wrkOk) problems.push(`${node.nodeId} answered ${http['200'] ?? 0} with 200, its wrk saw ${wrkOk}`);
    const cpuPercentOfCore = cpu[node.nodeId] ?? 0;
    // Accepted votes only: the router retries a vote whose shard is between owners or whose node
    // is fenced for a moment (cluster/router.ts), and every attempt is counted; the CPU of the
    // retries belongs to the votes they end in.
    const local = routed['local:accepted'] ?? 0;
    const forwarded = routed['forwarded:accepted'] ?? 0;
    const received = routed['received:accepted'] ?? 0;
    const handled = local + forwarded + received;
    const idlePercent = idle[node.nodeId] ?? 0;
    return {
      nodeId: node.nodeId,
      answered200: http['200'] ?? 0,
      local,
      forwarded,
      received,
      idleCpuPercent: idlePercent,
      routedOutcomes: Object.fromEntries(Object.entries(routed).filter(([k]) => k.includes(':'))),
      cpuPercent: cpuPercentOfCore,
      /** CPU µs per vote this node had a hand in (local, forwarded out or received). */
      cpuUsPerHandledVote: handled > 0 ? Math.round(((cpuPercentOfCore / 100) * 1e6) / (handled / activeWindowS)) : 0,
    };
  });
  for (const run of runs) {
    const unanswered = Math.max(0, run.result.sent - 1 - run.result.requests);
    if (unanswered > 0) problems.push(`${unanswered} requests sent and never answered`);
    if (run.result.repeats > 0) problems.push(`${run.result.repeats} voters sent twice`);
  }
  const votesPerS = ok / activeWindowS;
  const usPerVote = (percent: number) => Math.round(((percent / 100) * 1e6) / votesPerS);
  const nodeCpuPercent = perNode.reduce((sum, n) => sum + n.cpuPercent, 0);
  const nodeIdlePercent = perNode.reduce((sum, n) => sum + n.idleCpuPercent, 0);
  const local = perNode.reduce((sum, n) => sum + n.local, 0);
  const forwarded = perNode.reduce((sum, n) => sum + n.forwarded, 0);
  return {
    label,
    nodes: nodes.length,
    activeS: Math.round(activeWindowS * 1000) / 1000,
    targets: targets.map((t) => t.nodeId),
    commands: runs.map((r) => r.command),
    votesPerS: Math.round(votesPerS),
    ok,
    non2xx,
    serverOutcomes,
    stored,
    countOk: problems.length === 0,
    countProblems: problems,
    latencyMsP50Max: Math.max(...runs.map((r) => r.result.latencyUs.p50)) / 1000,
    latencyMsP99Max: Math.max(...runs.map((r) => r.result.latencyUs.p99)) / 1000,
    forwardedShare: local + forwarded > 0 ? Math.round((1000 * forwarded) / (local + forwarded)) / 1000 : 0,
    cpuPercent: cpu,
    idleCpuPercent: idle,
    cpuUsPerVote: {
      nodes: usPerVote(nodeCpuPercent),
      nodesNet: usPerVote(Math.max(0, nodeCpuPercent - nodeIdlePercent)),
      postgres: usPerVote(cpu.postgres ?? 0),
      wrk: usPerVote(cpu.wrk ?? 0),
    },
    perNode,
  };
}

interface AdminClusterView {
  readonly shards: readonly { electionId: string; shard: number; replicas: readonly { phase: string; votesBehind: number | null }[] }[];
}

async function adminClusterView(cluster: BenchCluster, token: string): Promise<AdminClusterView> {
  const response = await fetch(`${cluster.nodes.get('node-1')!.baseUrl}/api/v1/admin/cluster`, { headers: { authorization: `Bearer ${token}` } });
  if (!response.ok) throw new Error(`GET /api/v1/admin/cluster answered ${response.status}: ${await response.text()}`);
  return (await response.json()) as AdminClusterView;
}

/** Polls the admin view every 250 ms until stopped: every replica of the election's shards. */
function sampleReplicaLag(cluster: BenchCluster, token: string, electionId: string) {
  const lag = { samples: 0, entries: 0, live: 0, votesBehind: [] as number[] };
  let running = true;
  const loop = (async () => {
    while (running) {
      const view = await adminClusterView(cluster, token).catch(() => undefined);
      if (view) {
        lag.samples++;
        for (const shard of view.shards) {
          if (shard.electionId !== electionId) continue;
          for (const replica of shard.replicas) {
            lag.entries++;
            if (replica.phase === 'live') lag.live++;
            if (replica.votesBehind !== null) lag.votesBehind.push(replica.votesBehind);
          }
        }
      }
      await new Promise((resolve) => setTimeout(resolve, 250));
    }
  })();
  return { stop: async () => { running = false; await loop; return lag; } };
}

async function main(): Promise<number> {
  log(`livevote cluster benchmark: ${os.availableParallelism()} cores, Node ${process.version}; steps: ${[...steps].join(', ')}`);
  const wrkVersionText = ensureWrk(log);
  log('embedded Postgres (started by the benchmark, so a killed node never takes it along), livevote built into bench/out/dist');
  // Forwarding is measured without replication; the replication step turns it on.
  const cluster = await startBenchCluster({ LIVEVOTE_REPLICAS: '0' });
  for (const signal of ['SIGINT', 'SIGTERM'] as const) {
    process.once(signal, () => {
      log(`${signal}: stopping the nodes and Postgres the benchmark started`);
      void cluster.close().finally(() => process.exit(130));
    });
  }
  const workDir = await mkdtemp(path.join(os.tmpdir(), 'livevote-cbench-voters-'));
  const voterFile = path.join(workDir, 'voters.txt');
  const results: ClusterResults = {
    generatedAt: new Date().toISOString(),
    command: 'npm run bench:cluster',
    git: (() => {
      try {
        return execFileSync('git', ['rev-parse', '--short', 'HEAD'], { cwd: repoRoot, encoding: 'utf8' }).trim();
      } catch {
        return 'unknown';
      }
    })(),
    machine: { cores: os.availableParallelism(), node: process.version, wrk: wrkVersionText, loadAverageAtStart: os.loadavg().map((v) => Math.round(v * 100) / 100) },
    settings: { ...settings, wrkLines },
    nodeEnv: cluster.shownEnv,
    throughput: [],
    totalS: 0,
  };
  try {
    log(`registering ${settings.voters} voters in bulk and minting their tokens`);
    const voters: TestVoter[] = await createVoters(cluster.pool, settings.voters, cluster.jwtSecret);
    const failoverVotersSplit = wrkLines + Math.floor((settings.voters - wrkLines) * 0.6);
    await writeVoterFile(voterFile, voters.slice(0, wrkLines));
    await cluster.pool.query('CHECKPOINT');

    const node1 = await cluster.startNode('node-1', azs[0]!);
    log(`node-1 listening on ${node1.port}`);
    const admin = await adminLogin(node1.baseUrl, cluster.adminEmail, cluster.adminPassword);
    const elections: BenchElection[] = [];
    const electionFor = async (title: string, nodeIds: readonly string[]) => {
      // node-1's latest process: the replication step restarts it (on another port).
      const election = await createOpenElection(cluster.nodes.get('node-1')!.baseUrl, admin, title, settings.candidates, settings.shardCount);
      elections.push(election);
      await settle(cluster, nodeIds, election.electionId);
      return election;
    };

    if (steps.has('throughput')) {
      for (const count of [1, 2, 3]) {
        const nodeIds = Array.from({ length: count }, (_, i) => `node-${i + 1}`);
        if (!cluster.nodes.has(nodeIds[count - 1]!)) {
          const node = await cluster.startNode(nodeIds[count - 1]!, azs[(count - 1) % azs.length]!);
          log(`${node.nodeId} (az ${node.az}) listening on ${node.port}`);
        }
        await settle(cluster, nodeIds);
        const targets = cluster.liveNodes();
        const warm = await electionFor(`Cluster bench: warm-up, ${count} nodes`, nodeIds);
        await spreadRun(cluster, voterFile, 'warm-up', targets, warm, settings.warmupS, false);
        const election = await electionFor(`Cluster bench: ${count} nodes`, nodeIds);
        await quiet.wait(`${count} nodes`);
        const run = (await spreadRun(cluster, voterFile, `${count} node${count > 1 ? 's' : ''}, votes spread over every node`, targets, election, settings.activeS, true))!;
        results.throughput.push(run);
        log(`${run.label}: ${run.votesPerS} votes/s, p99 ≤ ${run.latencyMsP99Max} ms, forwarded ${(run.forwardedShare * 100).toFixed(1)}%, CPU µs/vote nodes ${run.cpuUsPerVote.nodes} postgres ${run.cpuUsPerVote.postgres}; count ${run.countOk ? 'ok' : `FAILED (${run.countProblems.join('; ')})`}`);

        if (count === 2) {
          // Every vote into node-1: node-2 gets no request of its own, only what node-1 forwards.
          const split = await electionFor('Cluster bench: 2 nodes, all votes into node-1', nodeIds);
          await quiet.wait('2 nodes, all into node-1');
          const one = (await spreadRun(cluster, voterFile, '2 nodes, every vote sent to node-1', [cluster.nodes.get('node-1')!], split, settings.activeS, true))!;
          results.throughput.push(one);
          log(`${one.label}: ${one.votesPerS} votes/s, p99 ${one.latencyMsP99Max} ms, forwarded ${(one.forwardedShare * 100).toFixed(1)}%; count ${one.countOk ? 'ok' : `FAILED (${one.countProblems.join('; ')})`}`);
        }
      }
    }

    if (steps.has('replication')) {
      const nodeIds = ['node-1', 'node-2', 'node-3'];
      for (const [i, nodeId] of nodeIds.entries()) if (!cluster.nodes.has(nodeId)) await cluster.startNode(nodeId, azs[i]!);
      await settle(cluster, nodeIds);
      const targets = () => cluster.liveNodes();
      let without = results.throughput.find((t) => t.nodes === 3 && t.targets.length === 3);
      if (!without) {
        const warm = await electionFor('Cluster bench: warm-up, 3 nodes, no replicas', nodeIds);
        await spreadRun(cluster, voterFile, 'warm-up', targets(), warm, settings.warmupS, false);
        const election = await electionFor('Cluster bench: 3 nodes, no replicas', nodeIds);
        await quiet.wait('3 nodes, no replicas');
        without = (await spreadRun(cluster, voterFile, '3 nodes, no replicas', targets(), election, settings.activeS, true))!;
      }
      log(`replication: restarting the nodes one by one with LIVEVOTE_REPLICAS=${replicas}`);
      for (const [i, nodeId] of nodeIds.entries()) {
        await cluster.stopNode(nodeId);
        await cluster.startNode(nodeId, azs[i]!, withReplicas);
        replicatingNodes.add(nodeId);
        await settle(cluster, nodeIds);
      }
      const token = await adminLogin(cluster.nodes.get('node-1')!.baseUrl, cluster.adminEmail, cluster.adminPassword);
      const warm = await electionFor('Cluster bench: warm-up, 3 nodes, replicas', nodeIds);
      await spreadRun(cluster, voterFile, 'warm-up', targets(), warm, settings.warmupS, false);
      const election = await electionFor('Cluster bench: 3 nodes, replicas', nodeIds);
      await waitFor(async () => {
        const view = await adminClusterView(cluster, token);
        const entries = view.shards.filter((s) => s.electionId === election.electionId).flatMap((s) => s.replicas);
        return entries.length === settings.shardCount * replicas && entries.every((e) => e.phase === 'live') ? true : undefined;
      }, 60_000, 'every replica of the election to report itself live', 250);
      await quiet.wait('3 nodes, replicas');
      const sampler = sampleReplicaLag(cluster, token, election.electionId);
      const run = (await spreadRun(cluster, voterFile, `3 nodes, ${replicas} replica per shard`, targets(), election, settings.activeS, true))!;
      const lag = await sampler.stop();
      const perShardVotesPerS = Math.max(1, run.votesPerS / settings.shardCount);
      results.replication = {
        replicas,
        without,
        with: run,
        cpuUsPerVoteAdded: run.cpuUsPerVote.nodesNet - without.cpuUsPerVote.nodesNet,
        lag: {
          samples: lag.samples,
          replicaEntries: lag.entries,
          liveShare: lag.entries === 0 ? 0 : lag.live / lag.entries,
          votesBehind: statOf(lag.votesBehind),
          approxMsBehind: statOf(lag.votesBehind.map((v) => Math.round((v / perShardVotesPerS) * 1000))),
        },
      } satisfies ReplicationResult;
      log(`${run.label}: ${run.votesPerS} votes/s, CPU µs/vote nodes ${run.cpuUsPerVote.nodesNet} net (without replicas ${without.cpuUsPerVote.nodesNet}); lag votes behind p50 ${results.replication.lag.votesBehind.p50} p99 ${results.replication.lag.votesBehind.p99}; count ${run.countOk ? 'ok' : 'FAILED'}`);
    }

    if (steps.has('failover')) {
      for (const [i, nodeId] of ['node-1', 'node-2', 'node-3'].entries()) {
        if (cluster.nodes.has(nodeId)) continue;
        await cluster.startNode(nodeId, azs[i]!, withReplicas);
        replicatingNodes.add(nodeId);
      }
      const nodeIds = ['node-1', 'node-2', 'node-3'];
      await settle(cluster, nodeIds);
      await electionFor('Cluster bench: failover', nodeIds);
      log(`failover: ${settings.kills} kills of an owner (kill -9), each restarted after; probes on every shard it owned, of all ${elections.length} elections`);
      const failoverReplicas = cluster.liveNodes().every((n) => replicatingNodes.has(n.nodeId)) ? replicas : 0;
      results.failover = {
        replicas: failoverReplicas,
        ...(await measureFailover({
        cluster,
        elections,
        shardCount: settings.shardCount,
        // The single kills and the AZ kills each have fresh voters of their own.
        voters: voters.slice(wrkLines, failoverVotersSplit),
        kills: settings.kills,
        settle: (ids) => settle(cluster, ids),
        log,
      })),
      };
    }

    if (steps.has('azfailover')) {
      // Two nodes per AZ: node-1 and node-4 in a, node-2 and node-5 in b, node-3 and node-6 in c.
      const nodeIds = ['node-1', 'node-2', 'node-3', 'node-4', 'node-5', 'node-6'];
      for (const [i, nodeId] of nodeIds.entries()) {
        if (cluster.nodes.has(nodeId) && replicatingNodes.has(nodeId)) continue;
        if (cluster.nodes.has(nodeId)) await cluster.stopNode(nodeId);
        await cluster.startNode(nodeId, azs[i % azs.length]!, withReplicas);
        replicatingNodes.add(nodeId);
      }
      await settle(cluster, nodeIds);
      await electionFor('Cluster bench: AZ failover', nodeIds);
      const groups = azs.map((az) => nodeIds.filter((_, i) => azs[i % azs.length] === az));
      log(`AZ failover: ${settings.azKills} kills of every node of one AZ at once (${groups.map((g) => g.join('+')).join(', ')} in turn)`);
      results.azFailover = {
        replicas,
        ...(await measureFailover({
          cluster,
          elections,
          shardCount: settings.shardCount,
          voters: voters.slice(failoverVotersSplit),
          kills: settings.azKills,
          nodeIds,
          victimGroups: groups,
          settle: (ids) => settle(cluster, ids),
          log,
        })),
      };
    }
  } finally {
    results.totalS = Math.round((performance.now() - startedMs) / 1000);
    await cluster.close();
    await rm(workDir, { recursive: true, force: true }).catch(() => undefined);
  }
  const verdict = await writeClusterResults(results, path.join(repoRoot, 'bench'));
  log(`wrote the Cluster section of bench/RESULTS.md and the cluster key of bench/results.json in ${results.totalS} s`);
  for (const line of verdict.lines) log(line);
  return verdict.failed ? 1 : 0;
}

main().then(
  (code) => process.exit(code),
  (error: unknown) => {
    process.stderr.write(`cluster benchmark failed: ${error instanceof Error ? (error.stack ?? error.message) : String(error)}\n`);
    process.exit(1);
  },
);
