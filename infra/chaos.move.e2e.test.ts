// Chaos, a death in the middle of a move (issue 13): four node processes on one real Postgres,
// votes sent through every live node, an operator moves a shard, and the moment the map names the
// new owner one side of the hand-off is killed (SIGKILL):
//
//   - the target: the move ends failed (its target died), the shard goes to a survivor;
//   - the old owner: its lease is never released, so the target waits until the old owner is
//     declared dead and then takes the lease over (epoch + 1) — the move ends done, not hung on
//     a lease nobody will release.
//
// Either way the operation ends (failed or done, never pending or running for good), every
// acknowledged vote is stored once with its voteId, nothing is stored twice or for a voter never
// sent, every live node's results equal count(*), and every shard takes votes again. Where the kill
// landed in the hand-off (lease still with the old owner, or already with the target) is printed:
// the race is real, not staged, so a run may also catch the move already finished.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createPgClusterStore } from '../persistence/clusterStore.ts';
import type { ClusterOperation, ClusterStore } from '../cluster/ports.ts';
import { eventually, startTestCluster, type TestCluster } from './testing/clusterHarness.ts';
import { ChaosElection, keepNodeLogsOnFailure, memberRows, shardRows, waitForBalancedMap, type ShardRow } from './testing/chaos.ts';

let cluster: TestCluster;
let store: ClusterStore;
let election: ChaosElection;
const shardCount = 8;
const allShards = Array.from({ length: shardCount }, (_, shard) => shard);
const nodeAzs: [string, string][] = [['a1', 'a'], ['b1', 'b'], ['c1', 'c'], ['a2', 'a']];

beforeAll(async () => {
  // The default failure detector: a killed node must be declared dead for the move to end.
  cluster = await startTestCluster({ LIVEVOTE_AUTO_BALANCE: 'off' });
  store = createPgClusterStore(cluster.db.pool);
  await Promise.all(nodeAzs.map(([id, az]) => cluster.startNode(id, az)));
  election = await ChaosElection.create(cluster, cluster.nodes.get('a1')!, shardCount);
  await waitForBalancedMap(election, nodeAzs.map(([id]) => id));
}, 240_000);
keepNodeLogsOnFailure('chaos-move', () => cluster);
afterAll(async () => {
  await cluster?.close();
});

/** Waits until the operation is no longer pending or running (bounded: a hung move fails the test). */
async function operationEnded(operationId: number): Promise<ClusterOperation> {
  return eventually(async () => {
    const operation = await store.getOperation(operationId);
    return operation !== undefined && (operation.status === 'done' || operation.status === 'failed') ? operation : undefined;
  }, 90_000, `operation ${operationId} to end (done or failed)`);
}

/**
 * Under load: moves a shard of `from` to `to`, kills `victim` as soon as the map names `to`, and
 * checks what every scenario must end with. Returns the operation as it ended.
 */
async function moveAndKill(from: string, to: string, victim: string): Promise<MoveEnd> {
  const load = election.startLoad(await election.voters(300));
  await eventually(async () => (load.acknowledged >= 60 ? true : undefined), 90_000, 'load under way');
  await election.reserveSpareVoters();
  const row = (await shardRows(cluster, election.electionId)).find((r) => r.ownerNodeId === from && r.leaseNodeId === from)!;
  expect(row).toBeDefined();
  const targetIncarnation = (await memberRows(cluster)).get(to)!.incarnation;
  const operation = await store.requestOperation({ kind: 'move', electionId: election.electionId, shard: row.shard, toNodeId: to });
  const atKill = await eventually(async () => {
    const now = (await shardRows(cluster, election.electionId)).find((r) => r.shard === row.shard)!;
    return now.ownerNodeId === to ? now : undefined;
  }, 60_000, `the map to name ${to} for shard ${row.shard}`, 5);
  cluster.nodes.get(victim)!.child.kill('SIGKILL');
  election.avoided.add(victim);
  console.log(`[chaos] move of shard ${row.shard} ${from} → ${to}: ${victim} killed with the lease ${atKill.leaseNodeId === from ? `still with ${from}` : `with ${atKill.leaseNodeId ?? 'nobody'}`} (epoch ${atKill.epoch})`);

  const ended = await operationEnded(operation.operationId);
  console.log(`[chaos] the move ended ${ended.status}${ended.error ? `: ${ended.error}` : ''}`);
  await cluster.nodes.get(victim)!.exited();
  await eventually(async () => ((await memberRows(cluster)).get(victim)?.status === 'dead' ? true : undefined), 60_000, `${victim} declared dead`);
  await eventually(async () => {
    const rows = await shardRows(cluster, election.electionId);
    return rows.length === shardCount && rows.every((r) => r.ownerNodeId !== victim && r.leaseNodeId === r.ownerNodeId) ? true : undefined;
  }, 60_000, 'every shard owned and leased by a survivor');
  await election.timeUntilAccepting(allShards, Date.now());
  await load.done;
  expect(load.failures).toEqual([]);
  const { stored, acknowledged } = await election.expectConsistent();
  expect(stored).toBeGreaterThanOrEqual(acknowledged);
  const members = await memberRows(cluster);
  const shardNow = (await shardRows(cluster, election.electionId)).find((r) => r.shard === row.shard)!;
  // A live target that was never declared dead keeps what it took: nothing else moves a shard
  // here (auto-balance is off). One declared dead meanwhile (a process starved past deadAfterMs,
  // as two suites at load average 20 can do) rejoins as a new incarnation that owns nothing.
  // A crash of the target is neither: its process has exited and its row says dead, same incarnation.
  const target = members.get(to)!;
  const targetRejoined = target.incarnation > targetIncarnation && target.status === 'alive';
  console.log(`[chaos] at the end: shard ${row.shard} owned by ${shardNow.ownerNodeId}, leased by ${shardNow.leaseNodeId} (epoch ${shardNow.epoch}); ` +
    `members ${JSON.stringify(Object.fromEntries(members))}${targetRejoined ? `; ${to} was declared dead meanwhile and rejoined` : ''}`);
  const survivors = nodeAzs.map(([id]) => id).filter((id) => !election.avoided.has(id));
  for (const id of survivors) expect({ id, exitCode: cluster.nodes.get(id)!.child.exitCode, signal: cluster.nodes.get(id)!.child.signalCode }).toEqual({ id, exitCode: null, signal: null });
  return { operation: ended, atKill, shardNow, targetRejoined };
}

interface MoveEnd {
  readonly operation: ClusterOperation;
  /** The moved shard's map row and lease when the victim was killed, and after everything settled. */
  readonly atKill: ShardRow;
  readonly shardNow: ShardRow;
  /** The target was declared dead after the move's request and is back as a new incarnation. */
  readonly targetRejoined: boolean;
}

describe('a node killed in the middle of a move, under load', () => {
  it('the target is killed: the move ends (failed, or done if it finished first), every acknowledged vote counted once', async () => {
    const { operation } = await moveAndKill('a1', 'b1', 'b1');
    if (operation.status === 'failed') expect(operation.error).toMatch(/b1 died during the move/);
  }, 240_000);

  it('the old owner is killed: the target takes the lease once it is declared dead, the move ends done, every acknowledged vote counted once', async () => {
    const { operation, atKill, shardNow, targetRejoined } = await moveAndKill('c1', 'a2', 'c1');
    // Done means the coordinator saw the map and the lease both name a2 (cluster/coordinator.ts).
    expect(operation.status).toBe('done');
    // Taken from c1 means a new epoch; already a2's at the kill, at least that one.
    expect(shardNow.epoch).toBeGreaterThanOrEqual(atKill.leaseNodeId === 'a2' ? atKill.epoch : atKill.epoch + 1);
    if (!targetRejoined) expect(shardNow).toMatchObject({ ownerNodeId: 'a2', leaseNodeId: 'a2' });
  }, 240_000);
});
