// Chaos, recovery after two moves (issue 12 item 4, "repeated kills while shards are still
// moving", made deterministic): a shard whose owner died is recovered by a second owner, which
// dies in turn before it wrote a snapshot of its own. The third owner recovers from the first
// owner's snapshot plus the votes stored after its watermark, and must find every vote the
// second owner stored, whatever batch ids each process drew. Batch ids come in blocks, one
// block per process (persistence/batchIds.ts): here the second owner's block is below the first
// owner's, as it is whenever the second owner started first.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { eventually, startTestCluster, type TestCluster } from './testing/clusterHarness.ts';
import { ChaosElection, keepNodeLogsOnFailure, shardRows, waitForBalancedMap } from './testing/chaos.ts';

const shardCount = 4;
let cluster: TestCluster;
let election: ChaosElection;

beforeAll(async () => {
  cluster = await startTestCluster();
  // p first, so its batch id block is below q's; p never snapshots on its own, q often.
  await cluster.startNode('p', 'a', { LIVEVOTE_SNAPSHOT_INTERVAL_MS: '3600000' });
  await cluster.startNode('q', 'b', { LIVEVOTE_SNAPSHOT_INTERVAL_MS: '200' });
  election = await ChaosElection.create(cluster, cluster.nodes.get('p')!, shardCount);
  await waitForBalancedMap(election, ['p', 'q']);
}, 240_000);
keepNodeLogsOnFailure('chaos-recovery', () => cluster);
afterAll(async () => {
  await cluster?.close();
});

async function leasedAllBy(nodeId: string): Promise<void> {
  await eventually(async () => {
    const rows = await shardRows(cluster, election.electionId);
    return rows.length === shardCount && rows.every((r) => r.ownerNodeId === nodeId && r.leaseNodeId === nodeId) ? true : undefined;
  }, 60_000, `every shard owned and leased by ${nodeId}`);
}

describe('a shard moved twice before its second owner snapshots', () => {
  it('the third owner recovers every vote the second one stored: results equal count(*), and those voters cannot vote again', async () => {
    const first = await election.voters(120);
    const load = election.startLoad(first, 6);
    await load.done;
    expect(load.failures).toEqual([]);
    const blocks = await cluster.db.pool.query('SELECT node_id, min(batch_id)::bigint AS min, max(batch_id)::bigint AS max FROM vote_batches GROUP BY node_id ORDER BY node_id');
    console.log(`[chaos] batch ids by node after the first votes: ${JSON.stringify(blocks.rows)}`);
    // q's shards as they are now (a node falsely declared dead on a busy machine gets shards back
    // under new epochs), each with a snapshot q wrote under its current epoch.
    const { qShards, snapshot } = await eventually(async () => {
      const shards = (await shardRows(cluster, election.electionId)).filter((r) => r.ownerNodeId === 'q' && r.leaseNodeId === 'q');
      if (shards.length === 0) return undefined;
      const rows = await cluster.db.pool.query<{ watermark: number }>(
        'SELECT min(watermark_batch_id)::bigint AS watermark FROM shard_snapshots WHERE election_id = $1 AND shard = ANY($2::integer[]) AND epoch = ANY($3::bigint[]) HAVING count(*) = $4',
        [election.electionId, shards.map((r) => r.shard), shards.map((r) => r.epoch), shards.length],
      );
      return rows.rows[0] ? { qShards: shards, snapshot: Number(rows.rows[0].watermark) } : undefined;
    }, 60_000, 'q to serve shards and snapshot them');

    cluster.nodes.get('q')!.child.kill('SIGKILL');
    await cluster.nodes.get('q')!.exited();
    await leasedAllBy('p');
    // Votes in q's former shards, stored by p.
    const second = (await election.voters(200)).filter((v) => qShards.some((r) => r.shard === election.shardOf(v.voterNumber)));
    const secondLoad = election.startLoad(second, 6);
    await secondLoad.done;
    expect(secondLoad.failures).toEqual([]);
    const batches = await cluster.db.pool.query<{ max: number; min: number }>(
      `SELECT min(batch_id)::bigint AS min, max(batch_id)::bigint AS max FROM votes WHERE election_id = $1 AND voter_number = ANY($2::bigint[])`,
      [election.electionId, second.map((v) => v.voterNumber)],
    );
    console.log(`[chaos] q's snapshot watermark ${snapshot}; p stored q's former shards' votes in batches ${batches.rows[0]!.min}..${batches.rows[0]!.max}`);

    cluster.nodes.get('p')!.child.kill('SIGKILL');
    await cluster.nodes.get('p')!.exited();
    await cluster.startNode('r', 'c');
    await leasedAllBy('r');
    await election.expectConsistent();
    // A voter p stored a vote for asks again, for another candidate: already voted, wherever asked.
    const voter = second[0]!;
    const other = (election.candidateOf(voter.voterNumber) + 1) % election.candidateIds.length;
    const again = await fetch(`${cluster.nodes.get('r')!.baseUrl}/api/v1/votes`, {
      method: 'POST',
      headers: { authorization: `Bearer ${voter.token}`, 'content-type': 'application/json' },
      body: JSON.stringify({ electionId: election.electionId, candidateId: election.candidateIds[other], userId: voter.userId }),
    });
    expect(again.status).toBe(409);
    expect(((await again.json()) as { error: { code: string } }).error.code).toBe('already_voted');
  }, 180_000);
});
