// Shard moves, drains and balancing under load (issue 13, item 6): three node processes of the
// compiled build on one embedded Postgres (bench/lib/benchCluster.ts), votes of fresh voters
// flowing through every node, while an operator moves one shard at a time (BENCH_MOVES, default
// 20), then drains a node, then restarts every node in turn (SIGTERM, start again under the same
// node id, balance, next). For each move, the shard's pause is read from the stored votes: the
// first vote admitted under the new epoch minus the last admitted under the old one
// (votes.accepted_at is the admission time), so it can be no shorter than the usual gap between
// two votes of one shard: the load (BENCH_WORKERS concurrent voters over BENCH_SHARDS shards) is
// set so that this gap is a few ms. Every answer is counted: a valid vote should only ever get
// 200. Writes bench/MOVES.md and bench/out/moves.json.
//
//   node --import tsx bench/moves.ts        (about 2-4 minutes on 2 cores)
//   BENCH_MOVES_BASELINE=<an earlier run's moves.json> node --import tsx bench/moves.ts
//       also puts that run's figures beside this run's, phase by phase (A/B: run the other build
//       first with BENCH_LIVEVOTE_DIST=<its dist> BENCH_BUILT_FROM=<its commit>, keep its json)
import { execFileSync } from 'node:child_process';
import { mkdir, readFile, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { createPgClusterStore } from '../persistence/clusterStore.ts';
import { createVoters, type TestVoter } from '../infra/testing/voters.ts';
import { startBenchCluster, waitFor, isSettled } from './lib/benchCluster.ts';
import { percentiles } from './lib/fanout.ts';
import { readFileOr } from './lib/clusterReport.ts';
import { renderMovesSection, withMovesSection } from './lib/movesReport.ts';
import { adminLogin, createOpenElection, type BenchElection } from './lib/livevote.ts';

const benchDir = path.dirname(fileURLToPath(import.meta.url));
const moveCount = Number(process.env.BENCH_MOVES ?? 20);
const workers = Number(process.env.BENCH_WORKERS ?? 24);
const shardCount = Number(process.env.BENCH_SHARDS ?? 3);
const nodeAzs: readonly (readonly [string, string])[] = [['node-1', 'a'], ['node-2', 'b'], ['node-3', 'c']];
const log = (line: string) => process.stdout.write(`[moves] ${line}\n`);

/** One move's timeline, from the nodes' log lines (cluster/coordinator.ts, cluster/shardHost.ts); ms. */
interface MovePhases {
  /** Map written by the coordinator → the old owner stops admitting (map event, view read, reconcile). */
  mapToStopMs: number;
  /**
   * The old owner's last admitted vote → it stops admitting: part of the pause, since the other
   * routers, on the new map already, send the shard's votes to the new owner, which holds them.
   */
  lastVoteToStopMs: number;
  /** The old owner: every admitted vote resolved. */
  backlogMs: number;
  /** The old owner: its final snapshot (0: none on the critical path). */
  snapshotMs: number;
  /** The old owner: its lease release statement. */
  leaseReleaseMs: number;
  /** Lease released by the old owner → acquired by the new (noticing the release + the acquire). */
  releaseToAcquiredMs: number;
  /** The new owner: recovery (snapshot + tail read) until it serves. */
  recoveryMs: number;
  /** The new owner serves → its first vote admitted (votes held, routers asking again). */
  servedToFirstVoteMs: number;
}

/** How the new owner recovered the shard: from its replica's state (warm) or from Postgres (cold). */
type RecoveryPath = 'warm' | 'cold' | 'unknown';
const phaseNames: readonly (keyof MovePhases)[] = ['mapToStopMs', 'lastVoteToStopMs', 'backlogMs', 'snapshotMs', 'leaseReleaseMs', 'releaseToAcquiredMs', 'recoveryMs', 'servedToFirstVoteMs'];
const phaseLabels: Record<keyof MovePhases, string> = {
  mapToStopMs: 'map written → old owner stops admitting',
  lastVoteToStopMs: 'last vote admitted by the old owner → it stops admitting',
  backlogMs: 'old owner: backlog resolved',
  snapshotMs: 'old owner: final snapshot',
  leaseReleaseMs: 'old owner: lease release',
  releaseToAcquiredMs: 'lease released → new owner holds it',
  recoveryMs: 'new owner: recovery (snapshot + tail)',
  servedToFirstVoteMs: 'new owner serves → first vote admitted',
};

type LogLine = Record<string, unknown>;
/** Every node process's JSON log lines with this message (killed processes' too). */
function logLines(cluster: Awaited<ReturnType<typeof startBenchCluster>>, msg: string): LogLine[] {
  const needle = `"msg":"${msg}"`;
  const lines: LogLine[] = [];
  for (const node of cluster.nodes.values()) {
    for (const line of node.process.output().split('\n')) if (line.includes(needle)) lines.push(JSON.parse(line) as LogLine);
  }
  return lines;
}

interface Answers {
  ok: number;
  other: Map<string, number>;
  latencyMs: number[];
}

/** What the operator is doing when a vote is sent: its answer is counted under that phase too. */
type LoadPhase = 'moves' | 'drain' | 'rollingRestart';
const loadPhases: readonly LoadPhase[] = ['moves', 'drain', 'rollingRestart'];

/** One node's restart in the rolling restart, each time from its SIGTERM; ms. */
interface NodeRestart {
  nodeId: string;
  /** What the old process exited with (0: a clean stop). */
  exitCode: number | string | undefined;
  /** SIGTERM → the process exited (its shards handed off, its requests answered). */
  exitMs: number;
  /** SIGTERM → the new process listens. */
  listeningMs: number;
  /** SIGTERM → the new process is alive in the view, a balance gave it shards, and it holds their leases. */
  servingMs: number;
}

/** What the nodes run: this checkout (built now), or BENCH_LIVEVOTE_DIST's build of BENCH_BUILT_FROM. */
function builtFrom(): string {
  if (process.env.BENCH_LIVEVOTE_DIST) return `${process.env.BENCH_BUILT_FROM ?? 'an unnamed build'} (${process.env.BENCH_LIVEVOTE_DIST})`;
  const commit = execFileSync('git', ['rev-parse', '--short', 'HEAD'], { cwd: benchDir }).toString().trim();
  const changed = execFileSync('git', ['status', '--porcelain', '--untracked-files=no'], { cwd: benchDir }).toString().trim();
  return changed === '' ? commit : `${commit} with uncommitted changes`;
}

async function main(): Promise<number> {
  const startedMs = Date.now();
  const loadAverageAtStart = os.loadavg().map((v) => Math.round(v * 100) / 100);
  const build = builtFrom();
  // Failure detection is not what is measured here: on this saturated 2-core box a heartbeat can
  // be stored later than the 1.5 s default, and a false death would turn a move into a failover.
  const cluster = await startBenchCluster({ LIVEVOTE_AUTO_BALANCE: 'off', LIVEVOTE_DEAD_AFTER_MS: '5000' });
  try {
    const store = createPgClusterStore(cluster.pool, { statementTimeoutMs: 10_000 });
    const nodeIds = nodeAzs.map(([id]) => id);
    for (const [id, az] of nodeAzs) await cluster.startNode(id, az);
    const first = cluster.nodes.get('node-1')!;
    const admin = await adminLogin(first.baseUrl, cluster.adminEmail, cluster.adminPassword);
    const election: BenchElection = await createOpenElection(first.baseUrl, admin, 'Moves', 3, shardCount);
    await waitFor(async () => (isSettled(await cluster.view(), nodeIds) ? true : undefined), 60_000, 'the map at rest');
    const voters: TestVoter[] = await createVoters(cluster.pool, 400_000, cluster.jwtSecret);
    log(`3 nodes, election of ${shardCount} shards, ${workers} concurrent voters through every node`);

    let lastPath: RecoveryPath = 'unknown';
    /** The move of `shard` from `epoch` to `target`, read back from the nodes' log lines. */
    const moveTimeline = async (electionId: string, shard: number, epoch: number, target: string): Promise<MovePhases | undefined> => {
      const written = logLines(cluster, 'shard map written').filter((l) => (l.moves as string[] | undefined)?.includes(`${electionId}/${shard}→${target}`)).at(-1);
      const released = logLines(cluster, 'shard released').find((l) => l.electionId === electionId && l.shard === shard && l.epoch === epoch);
      const taken = logLines(cluster, 'shards taken over and served').find((l) => {
        const at = l.electionId === electionId ? (l.shards as number[]).indexOf(shard) : -1;
        return at >= 0 && (l.epochs as number[])[at]! > epoch;
      });
      if (!written || !released || !taken) return undefined;
      const at = (taken.shards as number[]).indexOf(shard);
      const recovery = (taken.recovery as { path?: string }[] | undefined)?.[at]?.path;
      lastPath = recovery === 'warm' || recovery === 'cold' ? recovery : 'unknown';
      const first = await cluster.pool.query<{ at_ms: string | null }>(
        `SELECT (extract(epoch FROM min(accepted_at)) * 1000)::float8 AS at_ms FROM votes WHERE election_id = $1 AND shard = $2 AND epoch > $3`,
        [electionId, shard, epoch],
      );
      const last = await cluster.pool.query<{ at_ms: string | null }>(
        `SELECT (extract(epoch FROM max(accepted_at)) * 1000)::float8 AS at_ms FROM votes WHERE election_id = $1 AND shard = $2 AND epoch <= $3`,
        [electionId, shard, epoch],
      );
      const n = (v: unknown) => Number(v);
      return {
        mapToStopMs: n(released.stoppedAdmittingAtMs) - n(written.writtenAtMs),
        lastVoteToStopMs: last.rows[0]?.at_ms == null ? NaN : n(released.stoppedAdmittingAtMs) - n(last.rows[0].at_ms),
        backlogMs: n(released.backlogMs),
        snapshotMs: n(released.snapshotMs),
        leaseReleaseMs: n(released.leaseReleaseMs),
        releaseToAcquiredMs: n(taken.acquiredAtMs) - n(released.releasedAtMs),
        recoveryMs: n(taken.recoveryMs),
        servedToFirstVoteMs: first.rows[0]?.at_ms == null ? NaN : n(first.rows[0].at_ms) - n(taken.servedAtMs),
      };
    };

    const answers: Answers = { ok: 0, other: new Map(), latencyMs: [] };
    const answersByPhase = new Map(loadPhases.map((p) => [p, { ok: 0, other: new Map<string, number>() }]));
    let phase: LoadPhase = 'moves';
    let next = 0;
    let stop = false;
    // As a load balancer does: a node is out of rotation from its SIGTERM until its new process
    // listens (votes already sent to it, and its open connections, are still its to answer).
    const stopping = new Set<string>();
    const targets = () => cluster.liveNodes().filter((n) => !stopping.has(n.nodeId)).map((n) => n.baseUrl);
    const worker = async (w: number) => {
      while (!stop && next < voters.length) {
        const voter = voters[next++]!;
        const sentInPhase = answersByPhase.get(phase)!;
        const live = targets();
        const sentMs = performance.now();
        let status = 0;
        let code = 'no_answer';
        try {
          const response = await fetch(`${live[(w + next) % live.length]}/api/v1/votes`, {
            method: 'POST',
            headers: { authorization: `Bearer ${voter.token}`, 'content-type': 'application/json' },
            body: JSON.stringify({ electionId: election.electionId, candidateId: election.candidateIds[voter.voterNumber % 3], userId: voter.userId }),
          });
          status = response.status;
          const body = (await response.json()) as { error?: { code?: string } };
          code = body.error?.code ?? String(status);
        } catch (error) {
          code = `fetch: ${(error as Error).message}`;
        }
        answers.latencyMs.push(performance.now() - sentMs);
        if (status === 200) {
          answers.ok++;
          sentInPhase.ok++;
        } else {
          answers.other.set(`${status} ${code}`, (answers.other.get(`${status} ${code}`) ?? 0) + 1);
          sentInPhase.other.set(`${status} ${code}`, (sentInPhase.other.get(`${status} ${code}`) ?? 0) + 1);
        }
      }
    };
    const loadStartedMs = performance.now();
    const load = Promise.all(Array.from({ length: workers }, (_, w) => worker(w)));
    await new Promise((resolve) => setTimeout(resolve, 3_000));
    const movesStartedAtMs = Date.now();

    const pauses: number[] = [];
    const durations: number[] = [];
    const phases: MovePhases[] = [];
    const paths: RecoveryPath[] = [];
    for (let i = 0; i < moveCount; i++) {
      const view = await cluster.view();
      const row = view.shards.find((s) => s.electionId === election.electionId && s.shard === i % shardCount)!;
      const target = nodeIds.filter((n) => n !== row.ownerNodeId)[i % 2]!;
      const requestedMs = performance.now();
      const operation = await store.requestOperation({ kind: 'move', electionId: election.electionId, shard: row.shard, toNodeId: target });
      await waitFor(async () => {
        const now = await store.getOperation(operation.operationId);
        if (now?.status === 'failed') throw new Error(`move failed: ${now.error}`);
        return now?.status === 'done' ? true : undefined;
      }, 60_000, `move ${i + 1}`, 20);
      durations.push(performance.now() - requestedMs);
      // Let the new owner admit some votes before reading the gap.
      await new Promise((resolve) => setTimeout(resolve, 500));
      const gap = await cluster.pool.query<{ pause_ms: string | null }>(
        `SELECT (extract(epoch FROM (SELECT min(accepted_at) FROM votes WHERE election_id = $1 AND shard = $2 AND epoch > $3)
                 - (SELECT max(accepted_at) FROM votes WHERE election_id = $1 AND shard = $2 AND epoch <= $3)) * 1000)::float8 AS pause_ms`,
        [election.electionId, row.shard, row.epoch],
      );
      const pauseMs = gap.rows[0]?.pause_ms === null || gap.rows[0]?.pause_ms === undefined ? NaN : Number(gap.rows[0].pause_ms);
      pauses.push(pauseMs);
      lastPath = 'unknown';
      const timeline = await moveTimeline(election.electionId, row.shard, row.epoch, target);
      paths.push(lastPath);
      if (timeline) phases.push(timeline);
      else log(`move ${i + 1}: its timeline is not in the nodes' logs`);
      log(`move ${i + 1}/${moveCount}: shard ${row.shard} ${row.ownerNodeId} → ${target} (${lastPath}): pause ${pauseMs.toFixed(1)} ms, operation ${(durations[i]!).toFixed(0)} ms`);
    }

    const untilDone = async (operationId: number, what: string, timeoutMs = 120_000) =>
      waitFor(async () => {
        const now = await store.getOperation(operationId);
        if (now?.status === 'failed') throw new Error(`${what} failed: ${now.error}`);
        return now?.status === 'done' ? true : undefined;
      }, timeoutMs, what, 20);

    const movesEndedAtMs = Date.now();
    phase = 'drain';
    const drainStartMs = performance.now();
    await untilDone((await store.requestOperation({ kind: 'drain', nodeId: 'node-3' })).operationId, 'drain');
    const drainMs = performance.now() - drainStartMs;
    log(`drain of node-3: ${drainMs.toFixed(0)} ms`);
    await new Promise((resolve) => setTimeout(resolve, 1_000));

    // Rolling restart: node-3 back in service first (undrained, balanced), so every node owns
    // shards when its SIGTERM comes. Automatic balancing is off here: the operator balances after
    // each restart and waits for the node to serve again before stopping the next one.
    await untilDone((await store.requestOperation({ kind: 'undrain', nodeId: 'node-3' })).operationId, 'undrain of node-3');
    await untilDone((await store.requestOperation({ kind: 'balance' })).operationId, 'balance before the rolling restart');
    await new Promise((resolve) => setTimeout(resolve, 1_000));
    phase = 'rollingRestart';
    const restarts: NodeRestart[] = [];
    const rollingStartMs = performance.now();
    for (const [nodeId, az] of nodeAzs) {
      const owned = (await cluster.view()).shards.filter((s) => s.ownerNodeId === nodeId).length;
      const sigtermMs = performance.now();
      stopping.add(nodeId);
      const exitCode = await cluster.stopNode(nodeId);
      const exitMs = performance.now() - sigtermMs;
      await cluster.startNode(nodeId, az);
      const listeningMs = performance.now() - sigtermMs;
      stopping.delete(nodeId);
      await waitFor(async () => ((await cluster.view()).nodes.some((n) => n.nodeId === nodeId && n.status === 'alive') ? true : undefined), 60_000, `${nodeId} alive again`, 20);
      await untilDone((await store.requestOperation({ kind: 'balance' })).operationId, `balance after ${nodeId}'s restart`);
      await waitFor(async () => ((await cluster.view()).shards.some((s) => s.ownerNodeId === nodeId && s.leaseNodeId === nodeId) ? true : undefined), 60_000, `${nodeId} serving again`, 20);
      const servingMs = performance.now() - sigtermMs;
      restarts.push({ nodeId, exitCode, exitMs, listeningMs, servingMs });
      log(`restart of ${nodeId} (owned ${owned} shards): exit ${exitCode} after ${exitMs.toFixed(0)} ms, listening after ${listeningMs.toFixed(0)} ms, serving after ${servingMs.toFixed(0)} ms`);
    }
    const rollingRestartMs = performance.now() - rollingStartMs;
    await new Promise((resolve) => setTimeout(resolve, 1_000));
    stop = true;
    const loadS = (performance.now() - loadStartedMs) / 1000;
    await load;

    const stored = Number((await cluster.pool.query('SELECT count(*) AS n FROM votes WHERE election_id = $1', [election.electionId])).rows[0].n);
    const pause = percentiles(pauses.filter((p) => Number.isFinite(p)));
    const latency = percentiles(answers.latencyMs);
    // The pause is read from admission times: it can be no shorter than the usual gap between two
    // votes of one shard at this load, which a move-free run would show too.
    const votesPerShardPerS = answers.ok / loadS / shardCount;
    // The gap itself, during the moves: between two consecutive admitted votes of one shard.
    const gaps = await cluster.pool.query<{ p50: number | null; p90: number | null; n: string }>(
      `SELECT percentile_cont(0.5) WITHIN GROUP (ORDER BY gap_ms) AS p50, percentile_cont(0.9) WITHIN GROUP (ORDER BY gap_ms) AS p90, count(*) AS n
         FROM (SELECT extract(epoch FROM accepted_at - lag(accepted_at) OVER (PARTITION BY shard ORDER BY accepted_at)) * 1000 AS gap_ms
                 FROM votes WHERE election_id = $1 AND accepted_at BETWEEN to_timestamp($2 / 1000.0) AND to_timestamp($3 / 1000.0)) g
        WHERE gap_ms IS NOT NULL`,
      [election.electionId, movesStartedAtMs, movesEndedAtMs],
    );
    const round1 = (v: number | null | undefined) => (v == null ? NaN : Math.round(Number(v) * 10) / 10);
    const voteGapMs = { p50: round1(gaps.rows[0]?.p50), p90: round1(gaps.rows[0]?.p90), votesPerShardPerS: Math.round((answersByPhase.get('moves')!.ok / ((movesEndedAtMs - movesStartedAtMs) / 1000) / shardCount) * 10) / 10 };
    const result = {
      generatedAt: new Date().toISOString(),
      command: [...Object.entries(process.env).filter(([k]) => k.startsWith('BENCH_')).map(([k, v]) => `${k}='${v}'`), 'node --import tsx bench/moves.ts'].join(' '),
      builtFrom: build,
      machine: { cores: os.availableParallelism(), node: process.version, loadAverageAtStart, loadAverageAtEnd: os.loadavg().map((v) => Math.round(v * 100) / 100) },
      moves: moveCount,
      workers,
      shards: shardCount,
      votesPerShardPerS: Math.round(votesPerShardPerS * 10) / 10,
      voteGapMs,
      pauseMs: pause,
      pauseMsByRecovery: Object.fromEntries((['warm', 'cold'] as const).map((p) => [p, percentiles(pauses.filter((v, i) => paths[i] === p && Number.isFinite(v)))])),
      phasesMs: Object.fromEntries(phaseNames.map((name) => [name, percentiles(phases.map((p) => p[name]).filter((v) => Number.isFinite(v)))])),
      moveOperationMs: percentiles(durations),
      drainMs: Math.round(drainMs),
      rollingRestart: {
        totalMs: Math.round(rollingRestartMs),
        nodes: restarts.map((r) => ({ ...r, exitMs: Math.round(r.exitMs), listeningMs: Math.round(r.listeningMs), servingMs: Math.round(r.servingMs) })),
      },
      answersByPhase: Object.fromEntries([...answersByPhase].map(([p, a]) => [p, { ok: a.ok, other: Object.fromEntries(a.other) }])),
      answers: { ok: answers.ok, other: Object.fromEntries(answers.other), latencyMs: latency },
      stored,
      storedEqualsOk: stored === answers.ok,
      totalS: Math.round((Date.now() - startedMs) / 1000),
    };
    const baselinePath = process.env.BENCH_MOVES_BASELINE;
    const baseline = baselinePath ? (JSON.parse(await readFile(baselinePath, 'utf8')) as typeof result) : undefined;
    await mkdir(path.join(benchDir, 'out'), { recursive: true });
    await writeFile(path.join(benchDir, 'out', 'moves.json'), JSON.stringify(result, null, 2));
    const f = (v: number) => (Number.isFinite(v) ? v.toFixed(1) : '—');
    await writeFile(path.join(benchDir, 'MOVES.md'), `# Shard moves under load

Written by \`${result.command}\` on ${result.generatedAt}, livevote ${result.builtFrom} (${result.machine.cores} cores, Node ${result.machine.node}, load average at start ${result.machine.loadAverageAtStart.join(' ')}, at the end ${result.machine.loadAverageAtEnd.join(' ')}); do not edit, rerun.

Three node processes of the compiled build (\`LIVEVOTE_DEAD_AFTER_MS=5000\`, so that a heartbeat stored late on this saturated box is not a false death), one embedded Postgres, an election of ${shardCount} shards, ${workers} concurrent voters sending fresh votes through every node (a node out of rotation from its SIGTERM until its new process listens); ${moveCount} moves of one shard each, one at a time, then a drain of node-3, then a rolling restart of the three nodes.

| | p50 | p99 | max |
|---|---|---|---|
| pause per move (last vote admitted by the old owner → first by the new, from \`votes.accepted_at\`) | ${f(pause.p50)} ms | ${f(pause.p99)} ms | ${f(pause.max)} ms |
${(['warm', 'cold'] as const).map((p) => {
  const x = result.pauseMsByRecovery[p]!;
  return `| … of the ${x.count} moves ${p === 'warm' ? 'to a node holding a replica of the shard (warm: its replica state + the tail)' : 'to a node without a replica (cold: snapshot + tail from Postgres)'} | ${f(x.p50)} ms | ${f(x.p99)} ms | ${f(x.max)} ms |`;
}).join('\n')}
| move operation (request → done in the map) | ${f(result.moveOperationMs.p50)} ms | ${f(result.moveOperationMs.p99)} ms | ${f(result.moveOperationMs.max)} ms |
| answer time of every vote during the run | ${f(latency.p50)} ms | ${f(latency.p99)} ms | ${f(latency.max)} ms |

Where a move's time goes (${phases.length} of ${moveCount} timelines, from the nodes' log lines \`shard map written\`, \`shard released\`, \`shards taken over and served\`; the pause runs from "last vote admitted by the old owner" to "first vote admitted"):

| phase | p50 | p99 | max |
|---|---|---|---|
${phaseNames.map((name) => {
  const p = result.phasesMs[name]!;
  return `| ${phaseLabels[name]} | ${f(p.p50)} ms | ${f(p.p99)} ms | ${f(p.max)} ms |`;
}).join('\n')}

${baseline === undefined ? '' : `Beside the baseline (\`${baselinePath}\`: livevote ${baseline.builtFrom}, ${baseline.generatedAt}, load average at start ${baseline.machine.loadAverageAtStart.join(' ')}; same command, same machine):

| | baseline p50 | baseline p99 | this run p50 | this run p99 |
|---|---|---|---|---|
| pause per move | ${f(baseline.pauseMs.p50)} ms | ${f(baseline.pauseMs.p99)} ms | ${f(pause.p50)} ms | ${f(pause.p99)} ms |
${phaseNames.map((name) => {
  const b = baseline.phasesMs[name] as (typeof result.phasesMs)[string] | undefined; // absent from a run made before the phase was
  const p = result.phasesMs[name]!;
  return `| ${phaseLabels[name]} | ${f(b?.p50 ?? NaN)} ms | ${f(b?.p99 ?? NaN)} ms | ${f(p.p50)} ms | ${f(p.p99)} ms |`;
}).join('\n')}
| move operation (request → done) | ${f(baseline.moveOperationMs.p50)} ms | ${f(baseline.moveOperationMs.p99)} ms | ${f(result.moveOperationMs.p50)} ms | ${f(result.moveOperationMs.p99)} ms |

`}The load during the moves: ${voteGapMs.votesPerShardPerS} votes per shard per second; between two consecutive admitted votes of one shard, p50 ${f(voteGapMs.p50)} ms, p90 ${f(voteGapMs.p90)} ms (the moves' pauses included). The pause, read from admission times, includes such a gap: it is the measurement's floor at this load.

Drain of node-3 (request → it owns nothing): ${result.drainMs} ms.

Rolling restart (node-3 undrained and the shards balanced first; then for each node: SIGTERM, wait for the exit, start it again with the same node id, wait until it is alive in the view, balance, wait until it holds the lease of a shard it owns), ${f(result.rollingRestart.totalMs)} ms in all:

| node | exit code | SIGTERM → exited | SIGTERM → listening again | SIGTERM → serving again |
|---|---|---|---|---|
${result.rollingRestart.nodes.map((r) => `| ${r.nodeId} | ${r.exitCode} | ${r.exitMs} ms | ${r.listeningMs} ms | ${r.servingMs} ms |`).join('\n')}

Answers by what the operator was doing when the vote was sent: ${loadPhases.map((p) => {
  const a = result.answersByPhase[p]!;
  const other = Object.entries(a.other);
  return `${p === 'moves' ? 'moves' : p === 'drain' ? 'drain (and the undrain and balance after it)' : 'rolling restart'}: ${a.ok} × 200${other.length > 0 ? `, ${other.map(([k, v]) => `${v} × ${k}`).join(', ')}` : ', no other answer'}`;
}).join('; ')}.

Answers: ${answers.ok} × 200${answers.other.size > 0 ? `, and ${[...answers.other].map(([k, v]) => `${v} × ${k}`).join(', ')}` : ', no other answer'}. Stored votes: ${stored} (${result.storedEqualsOk ? 'equal to the 200s' : 'NOT equal to the 200s'}).
`);
    const resultsFile = path.join(benchDir, 'RESULTS.md');
    const summary = `Written by \`${result.command}\` on ${result.generatedAt}, livevote ${result.builtFrom} (load average at start ${result.machine.loadAverageAtStart.join(' ')}, at the end ${result.machine.loadAverageAtEnd.join(' ')}); the whole run, its phases and the command are in [MOVES.md](MOVES.md).

| ${moveCount} moves of one shard under load (3 nodes, ${workers} voters, ${shardCount} shards) | p50 | p99 | max |
|---|---|---|---|
| pause per move (target p99 < 100 ms) | ${f(pause.p50)} ms | ${f(pause.p99)} ms | ${f(pause.max)} ms |
${baseline === undefined ? '' : `| pause per move, baseline (livevote ${baseline.builtFrom}, run just before) | ${f(baseline.pauseMs.p50)} ms | ${f(baseline.pauseMs.p99)} ms | ${f(baseline.pauseMs.max)} ms |\n`}| move operation (request → done) | ${f(result.moveOperationMs.p50)} ms | ${f(result.moveOperationMs.p99)} ms | ${f(result.moveOperationMs.max)} ms |

Between two consecutive admitted votes of one shard during the moves: p50 ${f(voteGapMs.p50)} ms (the pause includes such a gap). Drain of a node: ${result.drainMs} ms. Rolling restart of the 3 nodes: ${result.rollingRestart.totalMs} ms (per node, SIGTERM → serving again: ${result.rollingRestart.nodes.map((r) => `${r.servingMs} ms`).join(', ')}; exit codes ${result.rollingRestart.nodes.map((r) => r.exitCode).join(', ')}), ${(() => {
  const a = result.answersByPhase.rollingRestart!;
  const other = Object.entries(a.other);
  return `${a.ok} × 200${other.length > 0 ? ` and ${other.map(([k, v]) => `${v} × ${k}`).join(', ')}` : ' and no other answer'} during it`;
})()}. Answers in all: ${answers.ok} × 200${answers.other.size > 0 ? `, ${[...answers.other].map(([k, v]) => `${v} × ${k}`).join(', ')}` : ', nothing else'}; stored votes ${result.storedEqualsOk ? 'equal to' : '**not equal** to'} the 200s.`;
    await writeFile(resultsFile, withMovesSection(await readFileOr(resultsFile, '# livevote benchmark results\n'), renderMovesSection(summary)));
    log(`pause p50 ${f(pause.p50)} p99 ${f(pause.p99)} max ${f(pause.max)} ms; answers ${answers.ok} ok, other ${JSON.stringify(result.answers.other)}; stored ${stored}; ${result.totalS} s`);
    const cleanExits = result.rollingRestart.nodes.every((r) => r.exitCode === 0);
    return result.storedEqualsOk && answers.other.size === 0 && cleanExits ? 0 : 1;
  } finally {
    await cluster.close();
  }
}

main().then((code) => process.exit(code), (error: unknown) => {
  process.stderr.write(`${(error as Error).stack ?? String(error)}\n`);
  process.exit(1);
});
