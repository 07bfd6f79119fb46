// Chaos, fencing (issue 12 item 3): three node processes in three AZs on one real Postgres, votes
// through every node. A zombie: an owner SIGSTOPped for longer than twice its lease, then
// SIGCONT, must store, acknowledge and publish nothing for the shards it lost, find itself
// declared dead, drop its shards and rejoin as a new incarnation. A node cut off from Postgres
// (a TCP proxy in this process between it and Postgres is cut; the shared Postgres itself is
// never touched) must stop accepting votes for its shards within a bounded time, answering 503
// with a catalogued code, while its shards move and the other nodes keep accepting; healed, it
// rejoins.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { errorCatalog } from '../gateway/errors.ts';
import { eventually, startTestCluster, type TestCluster } from './testing/clusterHarness.ts';
import {
  ChaosElection, keepNodeLogsOnFailure, memberRows, PostgresProxy, shardRows, summary, waitForBalancedMap, type Answer,
} from './testing/chaos.ts';
import type { TestVoter } from './testing/voters.ts';

const leaseTtlMs = 2_000;
const shardCount = 6;
let cluster: TestCluster;
let election: ChaosElection;
let proxy: PostgresProxy;

beforeAll(async () => {
  // A short lease so a pause of twice the lease is short; a commit deadline as in production,
  // not the patient one of functional tests: a node without Postgres must answer, not wait.
  cluster = await startTestCluster({ LIVEVOTE_LEASE_TTL_MS: String(leaseTtlMs), LIVEVOTE_COMMIT_DEADLINE_MS: '5000' });
  proxy = new PostgresProxy(cluster.db.url);
  await proxy.listen();
  await Promise.all([
    cluster.startNode('a', 'a'),
    cluster.startNode('b', 'b'),
    // c snapshots often, so the last test can catch it inside a snapshot transaction.
    cluster.startNode('c', 'c', { DATABASE_URL: proxy.urlFor(cluster.db.url), LIVEVOTE_SNAPSHOT_INTERVAL_MS: '100' }),
  ]);
  election = await ChaosElection.create(cluster, cluster.nodes.get('a')!, shardCount);
  await waitForBalancedMap(election, ['a', 'b', 'c']);
}, 240_000);
keepNodeLogsOnFailure('chaos-fence', () => cluster);
afterAll(async () => {
  for (const node of cluster?.nodes.values() ?? []) node.child.kill('SIGCONT');
  await proxy?.close();
  await cluster?.close();
}, 60_000);

/** Rows per (shard, epoch) of these shards. */
async function rowsByEpoch(shards: readonly number[]): Promise<Map<string, number>> {
  const rows = await cluster.db.pool.query<{ shard: number; epoch: number; n: number }>(
    'SELECT shard, epoch, count(*)::bigint AS n FROM votes WHERE election_id = $1 AND shard = ANY($2::integer[]) GROUP BY shard, epoch',
    [election.electionId, shards],
  );
  return new Map(rows.rows.map((r) => [`${r.shard}@${r.epoch}`, Number(r.n)]));
}

describe('fencing: a paused owner, and an owner cut off from Postgres', () => {
  it('zombie: an owner SIGSTOPped for twice its lease stores, acknowledges and publishes nothing for the shards it lost, then rejoins', async () => {
    const zombie = cluster.nodes.get('b')!;
    const load = election.startLoad(await election.voters(500), 6);
    await eventually(async () => (load.acknowledged >= 100 ? true : undefined), 90_000, 'load under way');
    await election.reserveSpareVoters();
    // b serves shards (a node falsely declared dead on a busy machine gets some back once it rejoined).
    const before = await eventually(async () => {
      const rows = (await shardRows(cluster, election.electionId)).filter((r) => r.ownerNodeId === 'b' && r.leaseNodeId === 'b');
      return rows.length > 0 ? rows : undefined;
    }, 60_000, 'b to serve shards');
    const incarnationBefore = (await memberRows(cluster)).get('b')!.incarnation;

    const stoppedAt = Date.now();
    zombie.child.kill('SIGSTOP');
    election.avoided.add('b');
    const lost = before.map((r) => r.shard);
    // Requests that reach the zombie while it is paused wait in its socket; it answers them on resume.
    const heldVoters: TestVoter[] = [];
    for (const shard of [...lost, ...lost].slice(0, 4)) heldVoters.push(await election.spareVoterIn(shard));
    const held: Promise<Answer | Error>[] = heldVoters.map((voter) => election.castOnce(zombie.baseUrl, voter, 120_000).catch((error: Error) => error));

    const times = await election.timeUntilAccepting(lost, stoppedAt);
    console.log(summary('SIGSTOP of an owner → its shards taken over (lease ' + leaseTtlMs + ' ms)', times.values()));
    const takenOver = await eventually(async () => {
      const rows = (await shardRows(cluster, election.electionId)).filter((r) => lost.includes(r.shard));
      return rows.every((r) => r.leaseNodeId !== 'b' && r.epoch > before.find((x) => x.shard === r.shard)!.epoch) ? rows : undefined;
    }, 60_000, 'the lost shards leased by survivors with a higher epoch');
    expect((await memberRows(cluster)).get('b')!.status).toBe('dead');
    // Rows stored under the zombie's epochs, as of the takeover: none may be added after it.
    const oldEpochRows = await rowsByEpoch(lost);
    const oldEpochs = new Set(before.map((r) => `${r.shard}@${r.epoch}`));

    // Paused for more than twice its lease in all.
    const pauseMs = 2 * leaseTtlMs + 500 - (Date.now() - stoppedAt);
    if (pauseMs > 0) await new Promise((resolve) => setTimeout(resolve, pauseMs));
    zombie.child.kill('SIGCONT');
    const resumedAt = Date.now();
    console.log(`[chaos] zombie paused ${resumedAt - stoppedAt} ms (lease ${leaseTtlMs} ms); takeover epochs ${JSON.stringify(takenOver.map((r) => [r.shard, r.epoch]))}`);

    // Straight after resume, votes for the shards it lost, sent to the zombie itself.
    const direct: Answer[] = [];
    for (const shard of lost) {
      const voter = await election.spareVoterIn(shard);
      direct.push(await election.castOnce(zombie.baseUrl, voter, 30_000).catch((error: Error) => ({ status: 0, body: String(error) })));
    }
    const answers = [...(await Promise.all(held)), ...direct];
    for (const answer of answers) {
      if (answer instanceof Error) continue;
      // 200 only when really stored (checked below with every acknowledged vote); otherwise a catalogued 503.
      if (answer.status !== 200) {
        expect(answer.status, JSON.stringify(answer.body)).toBe(503);
        expect(Object.keys(errorCatalog)).toContain(answer.body.error.code);
      }
    }
    console.log(`[chaos] zombie's answers on resume: ${JSON.stringify(answers.map((a) => (a instanceof Error ? a.message : `${a.status} ${a.body?.error?.code ?? ''} ${a.body?.error?.details?.reason ?? ''}`)))}`);

    // It finds itself declared dead, drops its shards, rejoins as a new incarnation.
    await eventually(async () => {
      const member = (await memberRows(cluster)).get('b');
      return member?.status === 'alive' && member.incarnation > incarnationBefore ? true : undefined;
    }, 60_000, 'b to rejoin as a new incarnation');
    expect(zombie.output()).toContain('this node was declared dead');
    election.avoided.delete('b');

    await load.done;
    expect(load.failures).toEqual([]);
    const after = await rowsByEpoch(lost);
    for (const key of oldEpochs) expect(after.get(key) ?? 0, `rows of shard@epoch ${key} after the takeover`).toBe(oldEpochRows.get(key) ?? 0);
    await election.timeUntilAccepting(Array.from({ length: shardCount }, (_, s) => s), Date.now());
    await election.expectConsistent();
  }, 180_000);

  it('a node cut off from Postgres stops accepting (503, catalogued) within a bounded time, its shards move, the others keep accepting; healed, it rejoins', async () => {
    const cutOff = cluster.nodes.get('c')!;
    await waitForBalancedMap(election, ['a', 'b', 'c']);
    const load = election.startLoad(await election.voters(500), 6);
    await eventually(async () => (load.acknowledged >= 100 ? true : undefined), 90_000, 'load under way');
    await election.reserveSpareVoters(8);
    const owned = await eventually(async () => {
      const shards = (await shardRows(cluster, election.electionId)).filter((r) => r.ownerNodeId === 'c' && r.leaseNodeId === 'c').map((r) => r.shard);
      return shards.length > 0 ? shards : undefined;
    }, 60_000, 'c to serve shards');
    const incarnationBefore = (await memberRows(cluster)).get('c')!.incarnation;

    const cutAt = Date.now();
    await proxy.cut();
    election.avoided.add('c');
    // Its own shards, asked through it: a catalogued 503 soon, never a wait without end.
    const fenced = await eventually(async () => {
      const voter = await election.spareVoterIn(owned[0]!);
      const answer = await election.castOnce(cutOff.baseUrl, voter, 10_000);
      return answer.status === 503 && answer.body.error.details?.reason === 'node_fenced' ? answer : undefined;
    }, 30_000, 'c to answer 503 node_fenced for its own shard');
    const fencedAfterMs = Date.now() - cutAt;
    expect(fenced.body.error.code).toBe('shard_unavailable');
    expect(Object.keys(errorCatalog)).toContain(fenced.body.error.code);
    console.log(`[chaos] cut from Postgres → own shards answered 503 node_fenced after ${fencedAfterMs} ms`);

    const times = await election.timeUntilAccepting(owned, cutAt);
    console.log(summary('cut from Postgres → its shards accepting again through the others', times.values()));
    await eventually(async () => {
      const rows = await shardRows(cluster, election.electionId);
      return (await memberRows(cluster)).get('c')?.status === 'dead' && rows.every((r) => r.ownerNodeId !== 'c' && r.leaseNodeId !== 'c') ? true : undefined;
    }, 60_000, 'c declared dead and its shards moved');
    // Still cut off: every answer it gives for a vote is 503 (it holds no shard) or a forwarded outcome;
    // a 200 through it is checked as stored like any other.
    const through = await election.castOnce(cutOff.baseUrl, await election.spareVoterIn(owned[0]!), 10_000).catch((error: Error) => ({ status: 0, body: String(error) }));
    expect([200, 503]).toContain(through.status);

    await proxy.heal();
    election.avoided.delete('c');
    await eventually(async () => {
      const member = (await memberRows(cluster)).get('c');
      return member?.status === 'alive' && member.incarnation > incarnationBefore ? true : undefined;
    }, 60_000, 'c to rejoin as a new incarnation');
    await load.done;
    expect(load.failures).toEqual([]);
    // Rejoined, it takes votes again, and receives shards.
    await waitForBalancedMap(election, ['a', 'b', 'c']);
    const voter = await election.spareVoterIn(owned[0]!);
    await eventually(async () => ((await election.castOnce(cutOff.baseUrl, voter)).status === 200 ? true : undefined), 60_000, 'a vote through c after healing');
    await election.timeUntilAccepting(Array.from({ length: shardCount }, (_, s) => s), Date.now());
    await election.expectConsistent();
  }, 180_000);

  it('an owner paused inside a transaction that holds its lease rows (a snapshot, a lease renewal) does not hold up their failover', async () => {
    const paused = cluster.nodes.get('c')!;
    const load = election.startLoad(await election.voters(400), 6);
    await eventually(async () => (load.acknowledged >= 50 ? true : undefined), 90_000, 'load under way');
    await election.reserveSpareVoters();
    const owned = await eventually(async () => {
      const shards = (await shardRows(cluster, election.electionId)).filter((r) => r.ownerNodeId === 'c' && r.leaseNodeId === 'c').map((r) => r.shard);
      return shards.length > 0 ? shards : undefined;
    }, 60_000, 'c to serve shards');
    const incarnationBefore = (await memberRows(cluster)).get('c')!.incarnation;

    // Catch c between two statements of a transaction that holds shard_leases locks: stop it
    // there, and keep it stopped only if its session is still idle in that transaction.
    const lockHolders = `SELECT a.pid FROM pg_stat_activity a JOIN pg_locks l ON l.pid = a.pid JOIN pg_class t ON t.oid = l.relation
      WHERE a.state = 'idle in transaction' AND a.client_port = ANY($1::integer[]) AND t.relname = 'shard_leases' AND l.granted`;
    let caught: number[] = [];
    let stoppedAt = 0;
    for (let attempt = 0; attempt < 3_000 && caught.length === 0; attempt++) {
      const holders = await cluster.db.pool.query<{ pid: number }>(lockHolders, [proxy.upstreamPorts()]);
      if (holders.rowCount === 0) continue;
      paused.child.kill('SIGSTOP');
      stoppedAt = Date.now();
      const still = await cluster.db.pool.query<{ pid: number }>(lockHolders, [proxy.upstreamPorts()]);
      if (still.rowCount! > 0) caught = still.rows.map((r) => r.pid);
      else paused.child.kill('SIGCONT');
    }
    expect(caught.length, 'c caught idle in a transaction holding shard_leases locks').toBeGreaterThan(0);
    const caughtIn = await cluster.db.pool.query<{ query: string }>('SELECT query FROM pg_stat_activity WHERE pid = ANY($1::integer[])', [caught]);
    console.log(`[chaos] c paused idle in a transaction holding shard_leases locks, last statement: ${JSON.stringify(caughtIn.rows.map((r) => r.query.slice(0, 80)))}`);
    election.avoided.add('c');
    const times = await election.timeUntilAccepting(owned, stoppedAt, 60_000);
    console.log(summary('owner paused inside a lease-row transaction → its shards accepting again', times.values()));

    paused.child.kill('SIGCONT');
    election.avoided.delete('c');
    await eventually(async () => {
      const member = (await memberRows(cluster)).get('c');
      return member?.status === 'alive' && member.incarnation > incarnationBefore ? true : undefined;
    }, 60_000, 'c to rejoin as a new incarnation');
    await load.done;
    expect(load.failures).toEqual([]);
    await election.timeUntilAccepting(Array.from({ length: shardCount }, (_, s) => s), Date.now());
    await election.expectConsistent();
  }, 180_000);
});
