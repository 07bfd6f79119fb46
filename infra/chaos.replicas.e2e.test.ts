// Warm replicas (issue 12), with real node processes on one real Postgres: three nodes in three
// AZs, LIVEVOTE_REPLICAS=1 (the default). Every shard has a replica in another AZ, listed with its
// lag by GET /api/v1/admin/cluster. A kill -9 of an owner promotes its shards' replicas, which
// restore their own state and read only the votes after its watermark: proven from the new
// owner's log line ('shards taken over and served', path warm, tailRows), never from timing.
// Then every node of one AZ is killed at once. After each: every acknowledged vote stored once,
// nothing stored that was not sent, every live node's results equal count(*).
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { placeReplicas } from '../cluster/allocation.ts';
import { eventually, startTestCluster, type TestCluster } from './testing/clusterHarness.ts';
import { callWithTimeout, ChaosElection, keepNodeLogsOnFailure, memberRows, membersSince, shardRows, summary, waitForBalancedMap } from './testing/chaos.ts';

let cluster: TestCluster;
let election: ChaosElection;
const shardCount = 6;
const azOf = new Map([['a1', 'a'], ['b1', 'b'], ['c1', 'c'], ['a2', 'a'], ['c2', 'c']]);

interface AdminShard {
  shard: number; electionId: string; ownerNodeId: string; epoch: number; replicaNodeIds: string[];
  replicas: { nodeId: string; phase: string; epoch: number | null; votesBehind: number | null; batchesBehind: number | null; sinceAppliedMs: number | null }[];
}

async function adminShards(nodeId: string): Promise<AdminShard[]> {
  const answer = await callWithTimeout(cluster.nodes.get(nodeId)!.baseUrl, 'GET', '/api/v1/admin/cluster', { token: await cluster.adminToken() });
  if (answer.status !== 200) throw new Error(`admin cluster: ${answer.status} ${JSON.stringify(answer.body)}`);
  return (answer.body.shards as AdminShard[]).filter((s) => s.electionId === election.electionId);
}

/**
 * Every shard has one replica in another AZ than its owner's, live and caught up with the owner, as `via` sees it,
 * and the placement is settled: the coordinator's own rules (placeReplicas) would move no replica. A replica moved
 * after this wait, just before a kill, would meet the kill still catching up (a cold takeover this test did not set up).
 */
async function waitForLiveReplicas(via: string, liveNodes: readonly string[]): Promise<AdminShard[]> {
  let last: AdminShard[] = [];
  return eventually(async () => {
    const shards = (last = await adminShards(via));
    if (shards.length !== shardCount) return undefined;
    for (const s of shards) {
      if (s.replicaNodeIds.length !== 1 || !liveNodes.includes(s.replicaNodeIds[0]!) || !liveNodes.includes(s.ownerNodeId)) return undefined;
      if (azOf.get(s.replicaNodeIds[0]!) === azOf.get(s.ownerNodeId)) return undefined;
      const lag = s.replicas[0];
      if (lag === undefined || lag.phase !== 'live' || lag.votesBehind !== 0 || lag.batchesBehind !== 0 || lag.epoch !== s.epoch) return undefined;
    }
    const members = liveNodes.map((nodeId) => ({ nodeId, az: azOf.get(nodeId)!, status: 'alive' as const }));
    const rows = shards.map((s) => ({ electionId: s.electionId, shard: s.shard, ownerNodeId: s.ownerNodeId, replicaNodeIds: s.replicaNodeIds }));
    if (placeReplicas({ members, shards: rows, replicasPerShard: 1, movesMax: shardCount }).length > 0) return undefined;
    return shards;
  }, 60_000, `every shard with a live replica in another AZ, 0 votes behind, no replica move pending (as ${via} sees it)`).catch((error: Error) => {
    throw new Error(`${error.message}; last seen: ${JSON.stringify(last.map((s) => ({ shard: s.shard, owner: s.ownerNodeId, epoch: s.epoch, replicas: s.replicas })))}`);
  });
}

interface Recovery { shard: number; path: 'warm' | 'cold'; tailRows: number; coldBecause?: string; atMs: number }

/** What `nodeId` logged about the shards of the election it took over since its log had `fromChars` characters. */
function recoveriesLogged(nodeId: string, fromChars: number): Recovery[] {
  const out: Recovery[] = [];
  for (const line of cluster.nodes.get(nodeId)!.output().slice(fromChars).split('\n')) {
    if (!line.includes('shards taken over and served')) continue;
    const entry = JSON.parse(line) as { electionId: string; servedAtMs: number; recovery: Recovery[] };
    if (entry.electionId === election.electionId) out.push(...entry.recovery.map((r) => ({ ...r, atMs: entry.servedAtMs })));
  }
  return out;
}

async function storedPerShard(): Promise<Map<number, number>> {
  const rows = await cluster.db.pool.query<{ shard: number; n: string }>('SELECT shard, count(*) AS n FROM votes WHERE election_id = $1 GROUP BY shard', [election.electionId]);
  return new Map(rows.rows.map((r) => [r.shard, Number(r.n)]));
}

/**
 * Kills `victims` at once under load. Their shards must be owned, after, by the node that was
 * their replica (in another AZ), recovered warm, reading fewer stored votes than the shard holds.
 */
async function killOwnersUnderLoad(victims: readonly string[], survivors: readonly string[], label: string): Promise<void> {
  const before = await waitForLiveReplicas(survivors[0]!, [...victims, ...survivors]);
  // A member declared dead while alive (a starved heartbeat) drops its shards and rejoins: the
  // shards then move by another path than the promotion this test waits for. Whatever fails from
  // here says whether that happened, with every member's incarnation then and now.
  const membersBefore = await memberRows(cluster);
  try {
    await killAndCheckPromotions(before, victims, survivors, label);
  } catch (error) {
    const members = await membersSince(cluster, membersBefore).catch((e: Error) => ({ said: `members unread: ${e.message}` }));
    if (error instanceof Error) error.message += `\n${members.said}`;
    throw error;
  }
  const { falseDeaths, said } = await membersSince(cluster, membersBefore);
  if (falseDeaths.length > 0) console.log(`[replicas] ${label}: passed despite a false death; ${said}`);
}

async function killAndCheckPromotions(before: AdminShard[], victims: readonly string[], survivors: readonly string[], label: string): Promise<void> {
  const load = election.startLoad(await election.voters(300));
  await eventually(async () => (load.acknowledged >= 60 ? true : undefined), 90_000, 'load under way');
  await election.reserveSpareVoters();
  const moved = before.filter((s) => victims.includes(s.ownerNodeId));
  expect(moved.length).toBeGreaterThan(0);
  const replicaOf = new Map(moved.map((s) => [s.shard, s.replicaNodeIds[0]!]));
  for (const [, replica] of replicaOf) expect(victims).not.toContain(replica); // each AZ's shards replicated outside it
  const logFrom = new Map(survivors.map((id) => [id, cluster.nodes.get(id)!.output().length]));
  const killedAt = Date.now();
  for (const id of victims) cluster.nodes.get(id)!.child.kill('SIGKILL');
  // Each probe has 90 s: the victims are declared dead LIVEVOTE_DEAD_AFTER_MS (12 s) after their
  // last heartbeat (a victim's coordinator lease lapses as long after it), another 12 s later when
  // the coordinator's own heartbeats had a gap (it holds deaths then); then a round and a warm
  // recovery. Over twice what the slower detector needs (measured at load average ~23: 8-35 s
  // with 8 s).
  const times = await election.timeUntilAccepting(moved.map((s) => s.shard), killedAt);
  console.log(summary(label, times.values()));
  await load.done;
  expect(load.failures).toEqual([]);
  await Promise.all(victims.map((id) => cluster.nodes.get(id)!.exited()));

  await eventually(async () => {
    const members = await memberRows(cluster);
    if (!victims.every((id) => members.get(id)?.status === 'dead')) return undefined;
    const rows = await shardRows(cluster, election.electionId);
    return rows.length === shardCount && rows.every((r) => survivors.includes(r.ownerNodeId) && r.leaseNodeId === r.ownerNodeId) ? true : undefined;
  }, 60_000, `${victims.join(', ')} declared dead and every shard owned and leased by a survivor`); // already so when the probes got through: 60 s is slack

  // Promotion, warm: each moved shard was taken over first by a replica of it, which restored
  // its replica state and read only the tail after its watermark. Read from the survivors' logs,
  // not from the map (balancing may move a shard on afterwards), and from whichever survivor took
  // it. (Its replica cannot have moved since `before`: the wait for it also waited for a settled
  // placement, and a member silent after the kill holds balancing still. Before both, a replica
  // moved just before the kill, or between the two victims' deaths, went cold: CI on 4c43567.)
  const stored = await storedPerShard();
  for (const m of moved) {
    const { owner, logged } = await eventually(async () => {
      const taken = survivors.flatMap((id) => recoveriesLogged(id, logFrom.get(id)!).filter((r) => r.shard === m.shard).map((r) => ({ owner: id, logged: r })));
      return taken.sort((x, y) => x.logged.atMs - y.logged.atMs)[0]; // the first takeover (a balance may move it on later, cold)
    }, 30_000, `a survivor logging how it took shard ${m.shard}`); // logged as it began to serve, before the probe's vote was answered: 30 s is for the log's way here
    console.log(`[replicas] shard ${m.shard}: promoted on ${owner} (${azOf.get(owner)}), path ${logged.path}${logged.coldBecause === undefined ? '' : ` (${logged.coldBecause})`}, ${logged.tailRows} tail rows of ${stored.get(m.shard) ?? 0} stored`);
    expect(logged, `shard ${m.shard} taken over on ${owner}: ${JSON.stringify(logged)}`).toMatchObject({ shard: m.shard, path: 'warm' });
    expect(logged.tailRows).toBeLessThan(stored.get(m.shard) ?? 0);
  }

  const { stored: storedTotal, acknowledged } = await election.expectConsistent();
  expect(storedTotal).toBeGreaterThanOrEqual(acknowledged);
}

beforeAll(async () => {
  // A failure detector slower than the harness's 1.5 s: with two suites beside it (load average
  // ~20) every node's heartbeats had gaps of 0.8-1.4 s, and a live survivor declared dead at 1.5 s
  // rejoined and took its shards by another path than the warm promotion proven here. Beside
  // CPU hogs (load average 23-25) gaps reached 5.8-6.0 s (heartbeats timing out at the cluster
  // statements' timeout, then a fixed 1 s, and reconnecting). 12 s (the self-fence after 9 s) is twice that and still
  // declares the killed nodes dead well within the waits below. The lease TTL above it, so a live
  // holder's leases outlast any silence short of its death (a dead one's are taken at once
  // whatever the TTL: the failover does not wait for it).
  cluster = await startTestCluster({ LIVEVOTE_REPLICAS: '1', LIVEVOTE_DEAD_AFTER_MS: '12000', LIVEVOTE_LEASE_TTL_MS: '15000' });
  await Promise.all(['a1', 'b1', 'c1'].map((id) => cluster.startNode(id, azOf.get(id)!)));
  election = await ChaosElection.create(cluster, cluster.nodes.get('a1')!, shardCount);
  await waitForBalancedMap(election, ['a1', 'b1', 'c1']);
}, 240_000);
keepNodeLogsOnFailure('chaos-replicas', () => cluster);
afterAll(async () => {
  await cluster?.close();
});

describe('warm replicas, three nodes in three AZs', () => {
  it('GET /admin/cluster lists each shard\'s replica, in another AZ, with its lag; caught up once votes stop', async () => {
    const load = election.startLoad(await election.voters(150));
    // While votes flow, every shard lists its replica with a phase and a lag (numbers or null, never missing).
    const during = await eventually(async () => {
      const shards = await adminShards('b1');
      return shards.length === shardCount && shards.every((s) => s.replicas.length === 1 && s.replicas[0]!.phase !== 'unknown') ? shards : undefined;
    }, 60_000, 'every replica reported');
    for (const s of during) expect(Object.keys(s.replicas[0]!).sort()).toEqual(['batchesBehind', 'epoch', 'nodeId', 'phase', 'reportAgeMs', 'sinceAppliedMs', 'votesBehind']);
    await load.done;
    expect(load.failures).toEqual([]);
    for (const via of ['a1', 'b1', 'c1']) await waitForLiveReplicas(via, ['a1', 'b1', 'c1']);
    await election.expectConsistent();
  }, 180_000);

  it('kill -9 of an owner: its replicas in the other AZs are promoted and read only the tail; every acknowledged vote counted once', async () => {
    await killOwnersUnderLoad(['c1'], ['a1', 'b1'], 'kill -9 of one owner, warm replicas (3 nodes → 2)');
  }, 240_000);

  it('kill -9 of every node of one AZ at once: their shards are promoted on the replicas in the other AZs', async () => {
    await Promise.all([cluster.startNode('c2', 'c'), cluster.startNode('a2', 'a')]);
    await waitForBalancedMap(election, ['a1', 'a2', 'b1', 'c2'], 90_000);
    await killOwnersUnderLoad(['a1', 'a2'], ['b1', 'c2'], 'kill -9 of AZ a, both nodes at once, warm replicas (4 nodes → 2)');
    // Replication goes on between the survivors.
    await waitForLiveReplicas('b1', ['b1', 'c2']);
    // Only to catch a hang: the waits above fail first, each saying what it waited for (and, after
    // the kill, the members). At load average ~25 this test took 196 s, 35 s of it the failover
    // (with an 8 s detector).
  }, 600_000);
});
