// Failover time (issue 12, item 6): three nodes in three AZs, a steady vote load through the
// nodes that stay up, then `kill -9` of one owner, again and again (restarted between kills). For
// every shard the killed node owned (of every election), probes with fresh voters of that shard go
// through the survivors every probeIntervalMs, each answer 503 retried with the next voter, until
// one is accepted: kill → that answer is the shard's failover time. Also kill → the node declared
// dead and its shards reassigned (from the map in Postgres), and kill → every shard served.
// Afterwards every acknowledged vote must be stored with its candidate, nothing stored that was
// not sent, and every node's tallies must equal count(*). Run by bench/cluster.ts.
import type { TestVoter } from '../infra/testing/voters.ts';
import { recoveryCounters, type BenchCluster } from './lib/benchCluster.ts';
import { statOf, type FailoverResult, type KillResult } from './lib/clusterReport.ts';
import type { BenchElection } from './lib/livevote.ts';

export interface FailoverOptions {
  readonly cluster: BenchCluster;
  /** Every open election: the victim's shards of all of them move, and all are probed. */
  readonly elections: readonly BenchElection[];
  /** Voters no other step used. */
  readonly voters: readonly TestVoter[];
  readonly shardCount: number;
  readonly kills: number;
  /** The cluster's nodes (default node-1..3); every one is running before each kill. */
  readonly nodeIds?: readonly string[];
  /** Who dies at each kill, in turn (default: each node alone); a group dies at once (a whole AZ). */
  readonly victimGroups?: readonly (readonly string[])[];
  readonly settle: (nodeIds: readonly string[]) => Promise<void>;
  readonly log: (line: string) => void;
}

const probeIntervalMs = 50;
const probesInFlightMax = 2;
const probeDeadlineMs = 30_000;
const loadWorkers = 8;
/** Per worker: the load is steady (votes/s bounded), not as fast as the survivors can go. */
const loadIntervalMs = 8;
const requestTimeoutMs = 10_000;
const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

interface Cast {
  readonly status: number;
  readonly code?: string;
}

async function cast(baseUrl: string, voter: TestVoter, election: BenchElection): Promise<Cast> {
  try {
    const response = await fetch(`${baseUrl}/api/v1/votes`, {
      method: 'POST',
      headers: { authorization: `Bearer ${voter.token}`, 'content-type': 'application/json' },
      body: JSON.stringify({ electionId: election.electionId, candidateId: election.candidateIds[voter.voterNumber % election.candidateIds.length], userId: voter.userId }),
      signal: AbortSignal.timeout(requestTimeoutMs),
    });
    const text = await response.text();
    let code: string | undefined;
    if (response.status !== 200) {
      try {
        code = (JSON.parse(text) as { error?: { code?: string } }).error?.code;
      } catch {
        code = undefined;
      }
    }
    return { status: response.status, code };
  } catch {
    // Refused or cut: whether the vote was stored, only the database can tell.
    return { status: 0, code: 'network' };
  }
}

export async function measureFailover(options: FailoverOptions): Promise<FailoverResult> {
  const { cluster, elections, shardCount, log } = options;
  const electionById = new Map(elections.map((e) => [e.electionId, e]));
  // Fresh voters by shard: a probe of shard s must be a voter of shard s.
  const byShard: TestVoter[][] = Array.from({ length: shardCount }, () => []);
  for (const voter of options.voters) byShard[voter.voterNumber % shardCount]!.push(voter);
  let loadShard = 0;
  const take = (shard: number): TestVoter | undefined => byShard[shard]!.pop();
  const acknowledged = new Map<string, Set<number>>(elections.map((e) => [e.electionId, new Set()]));
  const attempted = new Map<string, Set<number>>(elections.map((e) => [e.electionId, new Set()]));
  /** Per election: voter → the answer it got when it was not 200 (to tell what a stored-but-refused vote was told). */
  const refusedAnswers = new Map<string, Map<number, string>>(elections.map((e) => [e.electionId, new Map()]));
  const record = (election: BenchElection, voter: TestVoter, answer: Cast) => {
    attempted.get(election.electionId)!.add(voter.voterNumber);
    if (answer.status === 200) acknowledged.get(election.electionId)!.add(voter.voterNumber);
    else refusedAnswers.get(election.electionId)!.set(voter.voterNumber, `${answer.status} ${answer.code ?? ''}`.trim());
  };
  const loadElection = elections[elections.length - 1]!;
  const kills: KillResult[] = [];
  const nodeIds = options.nodeIds ?? ['node-1', 'node-2', 'node-3'];
  const victimGroups = options.victimGroups ?? nodeIds.map((id) => [id]);
  let votersRanOut = false;

  for (let k = 0; k < options.kills; k++) {
    const victims = victimGroups[k % victimGroups.length]!;
    const victimId = victims.join('+');
    const survivors = cluster.liveNodes().filter((n) => !victims.includes(n.nodeId));
    const survivorUrls = survivors.map((n) => n.baseUrl);

    // Steady load through the survivors, on the last election, every shard in turn.
    let loading = true;
    const load = { ok: 0, unavailable: 0, other: 0 };
    const workers = Array.from({ length: loadWorkers }, async (_, w) => {
      while (loading) {
        const startedMs = performance.now();
        const voter = take(loadShard++ % shardCount);
        if (!voter) { votersRanOut = true; return; }
        const answer = await cast(survivorUrls[w % survivorUrls.length]!, voter, loadElection);
        record(loadElection, voter, answer);
        if (answer.status === 200) load.ok++;
        else if (answer.status === 503) load.unavailable++;
        else load.other++;
        const left = loadIntervalMs - (performance.now() - startedMs);
        if (left > 0) await sleep(left);
      }
    });
    await sleep(1000);

    const before = await cluster.view();
    const owned = before.shards.filter((s) => victims.includes(s.ownerNodeId) && electionById.has(s.electionId));
    const wasCoordinator = before.coordinatorNodeId !== null && victims.includes(before.coordinatorNodeId);
    const azOf = new Map(victims.map((id) => [id, cluster.nodes.get(id)!.az]));
    const az = [...new Set(azOf.values())].join('+');
    const recoveriesBefore = await Promise.all(survivors.map((n) => recoveryCounters(n.baseUrl)));
    // All of a group at once: the kills are sent together, the time is the first one's.
    const killedAtMs = Math.min(...(await Promise.all(victims.map((id) => cluster.killNode(id)))));

    // The map as Postgres has it, while the probes run.
    let declaredDeadMs: number | undefined;
    let reassignedMs: number | undefined;
    let watching = true;
    const watcher = (async () => {
      while (watching && reassignedMs === undefined) {
        const view = await cluster.view().catch(() => undefined);
        const at = performance.now() - killedAtMs;
        if (!view) {
          await sleep(50);
          continue;
        }
        if (declaredDeadMs === undefined && victims.every((id) => view.nodes.find((n) => n.nodeId === id)?.status !== 'alive')) declaredDeadMs = at;
        if (view.shards.every((s) => !victims.includes(s.ownerNodeId))) reassignedMs = at;
        await sleep(50);
      }
    })();

    let probeAttempts = 0;
    const probeOutcomes: Record<string, number> = {};
    const probe = async (electionId: string, shard: number): Promise<number | undefined> => {
      const election = electionById.get(electionId)!;
      let acceptedAfterMs: number | undefined;
      const inFlight = new Set<Promise<void>>();
      let attempt = 0;
      while (acceptedAfterMs === undefined && performance.now() - killedAtMs < probeDeadlineMs) {
        if (inFlight.size < probesInFlightMax) {
          const voter = take(shard);
          if (!voter) { votersRanOut = true; break; }
          const url = survivorUrls[attempt++ % survivorUrls.length]!;
          probeAttempts++;
          const sent: Promise<void> = cast(url, voter, election).then((answer) => {
            record(election, voter, answer);
            const key = answer.status === 200 ? '200' : `${answer.status} ${answer.code ?? ''}`.trim();
            probeOutcomes[key] = (probeOutcomes[key] ?? 0) + 1;
            if (answer.status === 200 && acceptedAfterMs === undefined) acceptedAfterMs = performance.now() - killedAtMs;
          }).finally(() => inFlight.delete(sent));
          inFlight.add(sent);
        }
        await sleep(probeIntervalMs);
      }
      await Promise.all(inFlight);
      return acceptedAfterMs;
    };
    const perShard = await Promise.all(owned.map((s) => probe(s.electionId, s.shard)));
    watching = false;
    await watcher;
    // How the survivors took the shards over: warm (from their own replica) or cold (snapshot + tail).
    const recoveriesAfter = await Promise.all(survivors.map((n) => recoveryCounters(n.baseUrl)));
    const recoveries = { warm: 0, cold: 0, warmTailRows: 0, coldTailRows: 0 };
    for (const [i, after] of recoveriesAfter.entries()) {
      for (const key of Object.keys(recoveries) as (keyof typeof recoveries)[]) recoveries[key] += after[key] - recoveriesBefore[i]![key];
    }
    await sleep(500);
    loading = false;
    await Promise.all(workers);

    const served = perShard.filter((ms): ms is number => ms !== undefined);
    const result: KillResult = {
      kill: k + 1,
      victim: victimId,
      az,
      victimWasCoordinator: wasCoordinator,
      shardsOwned: owned.length,
      shardsOwnedInLoadElection: owned.filter((s) => s.electionId === loadElection.electionId).length,
      perShardMs: perShard.map((ms) => (ms === undefined ? null : Math.round(ms))),
      allServedMs: served.length === owned.length && served.length > 0 ? Math.round(Math.max(...served)) : null,
      declaredDeadMs: declaredDeadMs === undefined ? null : Math.round(declaredDeadMs),
      reassignedMs: reassignedMs === undefined ? null : Math.round(reassignedMs),
      probeAttempts,
      probeOutcomes,
      load,
      recoveries,
    };
    kills.push(result);
    log(`kill ${k + 1}/${options.kills}: ${victimId}${wasCoordinator ? ' (coordinator)' : ''}, ${owned.length} shards; declared dead ${result.declaredDeadMs} ms, reassigned ${result.reassignedMs} ms, first vote accepted on each shard ${Math.round(Math.min(...served))}–${Math.round(Math.max(...served))} ms (${owned.length - served.length} never); load ${load.ok} ok, ${load.unavailable} × 503, ${load.other} other; taken over warm ${recoveries.warm} (tail ${recoveries.warmTailRows} rows), cold ${recoveries.cold} (tail ${recoveries.coldTailRows} rows)`);
    if (votersRanOut) {
      log('failover: the voters set aside ran out; stopping the kills here (raise BENCH_VOTERS)');
      break;
    }

    // Back to three, and the map at rest, before the next kill.
    for (const id of victims) await cluster.startNode(id, azOf.get(id)!);
    await options.settle(nodeIds);
    await sleep(1000);
  }

  // Every acknowledged vote stored once with its candidate; nothing stored that was not sent.
  const problems: string[] = [];
  let storedTotal = 0;
  let acknowledgedTotal = 0;
  let storedUnacknowledged = 0;
  const storedUnacknowledgedAnswers: Record<string, number> = {};
  for (const election of elections) {
    const voterNumbers = [...attempted.get(election.electionId)!];
    if (voterNumbers.length === 0) continue;
    const rows = await cluster.pool.query<{ voter_number: string; candidate_index: number }>(
      'SELECT voter_number, candidate_index FROM votes WHERE election_id = $1 AND voter_number = ANY($2::bigint[])', [election.electionId, voterNumbers],
    );
    const stored = new Map(rows.rows.map((r) => [Number(r.voter_number), r.candidate_index]));
    const acked = acknowledged.get(election.electionId)!;
    storedTotal += stored.size;
    acknowledgedTotal += acked.size;
    for (const voterNumber of acked) {
      const candidate = stored.get(voterNumber);
      if (candidate === undefined) problems.push(`election ${election.electionId}: acknowledged vote of voter ${voterNumber} not stored`);
      else if (candidate !== voterNumber % election.candidateIds.length) problems.push(`voter ${voterNumber}: stored candidate ${candidate}, sent ${voterNumber % election.candidateIds.length}`);
    }
    for (const voterNumber of stored.keys()) {
      if (acked.has(voterNumber)) continue;
      storedUnacknowledged++;
      const answer = refusedAnswers.get(election.electionId)!.get(voterNumber) ?? 'unknown';
      storedUnacknowledgedAnswers[answer] = (storedUnacknowledgedAnswers[answer] ?? 0) + 1;
    }
  }
  // Tallies on every node equal count(*), once the last commit has been published.
  for (const election of elections) {
    const expected = (await cluster.pool.query<{ n: number }>('SELECT count(*)::int AS n FROM votes WHERE election_id = $1', [election.electionId])).rows[0]!.n;
    for (const node of cluster.liveNodes()) {
      const deadline = Date.now() + 15_000;
      let total = -1;
      while (Date.now() < deadline) {
        const response = await fetch(`${node.baseUrl}/api/v1/results/${election.electionId}`);
        const body = (await response.json()) as { candidates?: { votes: number }[] };
        total = (body.candidates ?? []).reduce((sum, c) => sum + c.votes, 0);
        if (total === expected) break;
        await sleep(200);
      }
      if (total !== expected) problems.push(`${node.nodeId}: tallies of ${election.electionId} add up to ${total}, count(*) is ${expected}`);
    }
  }

  const samples = kills.flatMap((k) => k.perShardMs.filter((ms): ms is number => ms !== null)).sort((a, b) => a - b);
  const unserved = kills.reduce((sum, k) => sum + k.perShardMs.filter((ms) => ms === null).length, 0);
  if (unserved > 0) problems.push(`${unserved} shards not accepting votes ${probeDeadlineMs / 1000} s after a kill`);
  const allServed = kills.map((k) => k.allServedMs).filter((ms): ms is number => ms !== null).sort((a, b) => a - b);
  const declared = kills.map((k) => k.declaredDeadMs).filter((ms): ms is number => ms !== null).sort((a, b) => a - b);
  const reassigned = kills.map((k) => k.reassignedMs).filter((ms): ms is number => ms !== null).sort((a, b) => a - b);
  return {
    kills,
    probeIntervalMs,
    shardSamples: samples.length,
    firstAcceptedMs: statOf(samples),
    allServedMs: statOf(allServed),
    declaredDeadMs: statOf(declared),
    reassignedMs: statOf(reassigned),
    acknowledged: acknowledgedTotal,
    stored: storedTotal,
    storedUnacknowledged,
    storedUnacknowledgedAnswers,
    countOk: problems.length === 0,
    countProblems: problems.slice(0, 20),
  };
}
