// Chaos, kill -9 (issue 12 item 4, issue 11): six node processes in three AZs (two per AZ) on one
// real Postgres, votes sent through every live node while nodes die: one owner; every node of
// one AZ at once; a second node killed right after the first one's shards were reassigned, while
// they are still moving. After each: every acknowledged vote stored exactly once, nothing stored
// that was not sent, every live node's results equal count(*), every shard takes votes again.
// With LIVEVOTE_REPLICAS=1 (the default) a moved shard goes to its replica, which recovers warm
// (infra/chaos.replicas.e2e.test.ts checks that path); the `[chaos]` log lines give kill → each
// moved shard accepting again, in ms.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { eventually, startTestCluster, type TestCluster } from './testing/clusterHarness.ts';
import { ChaosElection, keepNodeLogsOnFailure, memberRows, shardRows, summary, waitForBalancedMap } from './testing/chaos.ts';

let cluster: TestCluster;
let election: ChaosElection;
const shardCount = 12;
const allShards = Array.from({ length: shardCount }, (_, shard) => shard);
const nodeAzs: [string, string][] = [['a1', 'a'], ['b1', 'b'], ['c1', 'c'], ['a2', 'a'], ['b2', 'b'], ['c2', 'c']];

beforeAll(async () => {
  cluster = await startTestCluster();
  await Promise.all(nodeAzs.map(([id, az]) => cluster.startNode(id, az)));
  election = await ChaosElection.create(cluster, cluster.nodes.get('a1')!, shardCount);
  await waitForBalancedMap(election, nodeAzs.map(([id]) => id));
}, 240_000);
keepNodeLogsOnFailure('chaos-kill', () => cluster);
afterAll(async () => {
  await cluster?.close();
});

/** Kills `victims` (SIGKILL, all at once) while votes flow; returns the ms each of their shards took to accept again. */
async function killUnderLoad(victims: readonly string[], label: string): Promise<Map<number, number>> {
  const load = election.startLoad(await election.voters(400));
  await eventually(async () => (load.acknowledged >= 100 ? true : undefined), 90_000, 'load under way');
  await election.reserveSpareVoters();
  const moved = (await shardRows(cluster, election.electionId)).filter((r) => victims.includes(r.ownerNodeId)).map((r) => r.shard);
  expect(moved.length).toBeGreaterThan(0);
  const killedAt = Date.now();
  for (const id of victims) cluster.nodes.get(id)!.child.kill('SIGKILL');
  const times = await election.timeUntilAccepting(moved, killedAt);
  console.log(summary(label, times.values()));
  await load.done;
  expect(load.failures).toEqual([]);
  return times;
}

/** The victims are dead in the map, which gives every shard to a survivor holding its lease; every shard takes a vote. */
async function expectServedBySurvivors(victims: readonly string[]): Promise<void> {
  await Promise.all(victims.map((id) => cluster.nodes.get(id)!.exited()));
  await eventually(async () => {
    const members = await memberRows(cluster);
    if (!victims.every((id) => members.get(id)?.status === 'dead')) return undefined;
    const rows = await shardRows(cluster, election.electionId);
    return rows.length === shardCount && rows.every((r) => !victims.includes(r.ownerNodeId) && r.leaseNodeId === r.ownerNodeId) ? true : undefined;
  }, 60_000, `${victims.join(', ')} declared dead and every shard owned and leased by a survivor`);
  await election.timeUntilAccepting(allShards, Date.now());
  const { stored, acknowledged } = await election.expectConsistent();
  expect(stored).toBeGreaterThanOrEqual(acknowledged);
}

describe('kill -9 under load, six nodes in three AZs', () => {
  it('kill -9 of one owner: its shards are served again by the others, every acknowledged vote counted once', async () => {
    await killUnderLoad(['c2'], 'kill -9 of one owner (6 nodes → 5)');
    await expectServedBySurvivors(['c2']);
  }, 180_000);

  it('kill -9 of every node of one AZ at once: its shards move to the other AZs, every acknowledged vote counted once', async () => {
    await killUnderLoad(['a1', 'a2'], 'kill -9 of AZ a, both nodes at once (5 nodes → 3)');
    await expectServedBySurvivors(['a1', 'a2']);
    const owners = new Set((await shardRows(cluster, election.electionId)).map((r) => r.ownerNodeId));
    for (const owner of owners) expect(['b1', 'b2', 'c1']).toContain(owner);
  }, 180_000);

  it('repeated kills while shards move: a second node killed right after the first one\'s shards were reassigned', async () => {
    const load = election.startLoad(await election.voters(400));
    await eventually(async () => (load.acknowledged >= 100 ? true : undefined), 90_000, 'load under way');
    await election.reserveSpareVoters();
    const firstMoved = (await shardRows(cluster, election.electionId)).filter((r) => r.ownerNodeId === 'b2').map((r) => r.shard);
    cluster.nodes.get('b2')!.child.kill('SIGKILL');
    // The moment the map gives b2's shards to survivors, kill the survivor that got most of them:
    // it is taking leases and recovering them now.
    const reassigned = await eventually(async () => {
      const rows = await shardRows(cluster, election.electionId);
      return rows.every((r) => r.ownerNodeId !== 'b2') ? rows : undefined;
    }, 60_000, 'b2\'s shards reassigned');
    const gained = new Map<string, number>();
    for (const row of reassigned) if (firstMoved.includes(row.shard)) gained.set(row.ownerNodeId, (gained.get(row.ownerNodeId) ?? 0) + 1);
    const second = [...gained].sort((x, y) => y[1] - x[1])[0]![0];
    const stillMoving = firstMoved.filter((shard) => reassigned.find((r) => r.shard === shard)!.leaseNodeId !== second).length;
    const secondKilledAt = Date.now();
    cluster.nodes.get(second)!.child.kill('SIGKILL');
    console.log(`[chaos] repeated kills: b2 killed, then ${second} (given ${gained.get(second)} of b2's shards, ${stillMoving} of them not yet leased by it)`);
    const moved = reassigned.filter((r) => r.ownerNodeId === second || firstMoved.includes(r.shard)).map((r) => r.shard);
    const times = await election.timeUntilAccepting(moved, secondKilledAt);
    console.log(summary(`second kill while shards move (${second} after b2; 3 nodes → 1)`, times.values()));
    await load.done;
    expect(load.failures).toEqual([]);
    await expectServedBySurvivors(['b2', second]);
  }, 180_000);
});
