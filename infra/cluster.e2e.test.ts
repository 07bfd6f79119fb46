// The cluster for real (issue 11): node processes on one real Postgres. Three nodes in three AZs
// take votes through every node; every accepted vote is stored exactly once and counted on every
// node; a fourth node joining receives shards; a node killed with SIGKILL under load loses no
// acknowledged vote and its shards take votes again through the others; a node with other
// secrets refuses to join.
import { mkdtemp, rm } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { call } from './testing/appHarness.ts';
import { castWithRetries, eventually, startTestCluster, type TestCluster } from './testing/clusterHarness.ts';
import { createVoters, type TestVoter } from './testing/voters.ts';
import { startLivevoteProcess } from './testing/processHarness.ts';

let cluster: TestCluster;
let electionId: string;
let candidateIds: string[];

interface ClusterJson {
  nodes: { nodeId: string; az: string; url: string; status: string; shardsOwned: number }[];
  shards: { electionId: string; shard: number; ownerNodeId: string; epoch: number }[];
}

async function clusterView(baseUrl: string): Promise<ClusterJson> {
  const response = await call(baseUrl, 'GET', '/api/v1/admin/cluster', { token: await cluster.adminToken() });
  if (response.status !== 200) throw new Error(`cluster view: ${response.status}`);
  return response.body as ClusterJson;
}

const liveUrls = () => [...cluster.nodes.values()].filter((n) => n.child.exitCode === null && n.child.signalCode === null).map((n) => n.baseUrl);

async function resultsOn(baseUrl: string): Promise<number[]> {
  const response = await call(baseUrl, 'GET', `/api/v1/results/${electionId}`);
  if (response.status !== 200) throw new Error(`results: ${response.status}`);
  return (response.body.candidates as { votes: number }[]).map((c) => c.votes);
}

async function storedVotes(): Promise<Map<number, { candidate: number; voteId: string }>> {
  const rows = await cluster.db.pool.query<{ voter_number: string; candidate_index: number; vote_id: string }>(
    'SELECT voter_number, candidate_index, vote_id FROM votes WHERE election_id = $1', [electionId],
  );
  return new Map(rows.rows.map((r) => [Number(r.voter_number), { candidate: r.candidate_index, voteId: r.vote_id }]));
}

/** Every node answers the same results, equal to what is stored. */
async function expectResultsEverywhere(expected: number[]): Promise<void> {
  for (const url of liveUrls()) {
    await eventually(async () => {
      const tallies = await resultsOn(url);
      return JSON.stringify(tallies) === JSON.stringify(expected) ? true : undefined;
    }, 30_000, `results on ${url} to equal ${JSON.stringify(expected)}`);
  }
}

async function castAll(voters: readonly TestVoter[], pick: (i: number) => number, concurrency = 16) {
  const acknowledged = new Map<number, { candidate: number; voteId: string }>();
  let next = 0;
  const worker = async () => {
    while (next < voters.length) {
      const i = next++;
      const voter = voters[i]!;
      const candidate = pick(i);
      const answer = await castWithRetries(liveUrls, voter, { electionId, candidateId: candidateIds[candidate]! });
      expect(answer.status, `voter ${voter.voterNumber}: ${answer.code}`).toBe(200);
      acknowledged.set(voter.voterNumber, { candidate, voteId: answer.voteId! });
    }
  };
  await Promise.all(Array.from({ length: concurrency }, worker));
  return acknowledged;
}

beforeAll(async () => {
  // Failover is tested, at a failure detector a busy test machine does not trip by itself.
  cluster = await startTestCluster({ LIVEVOTE_DEAD_AFTER_MS: '5000' });
  await Promise.all([cluster.startNode('node-a', 'a'), cluster.startNode('node-b', 'b'), cluster.startNode('node-c', 'c')]);
}, 240_000);
afterAll(async () => {
  await cluster?.close();
});

describe('three nodes, three AZs, one Postgres', () => {
  it('are members of one cluster, and share an election created on one of them', async () => {
    const first = cluster.nodes.get('node-a')!;
    const token = await cluster.adminToken();
    const created = await call(first.baseUrl, 'POST', '/api/v1/admin/elections', {
      token, body: { title: 'Cluster finale', candidates: [{ name: 'A' }, { name: 'B' }, { name: 'C' }], shardCount: 6 },
    });
    expect(created.status).toBe(201);
    electionId = created.body.electionId;
    candidateIds = created.body.candidates.map((c: { candidateId: string }) => c.candidateId);
    expect((await call(first.baseUrl, 'POST', `/api/v1/admin/elections/${electionId}/open`, { token })).status).toBe(200);

    for (const url of liveUrls()) {
      await eventually(async () => ((await call(url, 'GET', `/api/v1/elections/${electionId}`)).status === 200 ? true : undefined), 30_000, `election on ${url}`);
    }
    const view = await eventually(async () => {
      const v = await clusterView(cluster.nodes.get('node-b')!.baseUrl);
      const mine = v.shards.filter((s) => s.electionId === electionId);
      return mine.length === 6 && mine.every((s) => s.epoch >= 1) && v.nodes.every((n) => n.shardsOwned === 2) ? v : undefined;
    }, 30_000, 'six shards, two per node');
    expect(view.nodes.map((n) => [n.nodeId, n.az, n.status])).toEqual([['node-a', 'a', 'alive'], ['node-b', 'b', 'alive'], ['node-c', 'c', 'alive']]);
    expect(view.shards.filter((s) => s.electionId === electionId).every((s) => s.epoch >= 1)).toBe(true);
  }, 120_000);

  it('takes votes through every node: each accepted vote stored once, results equal on every node', async () => {
    const voters = await createVoters(cluster.db.pool, 600, cluster.jwtSecret);
    const acknowledged = await castAll(voters, (i) => i % 3);
    const stored = await storedVotes();
    expect(stored.size).toBe(600);
    for (const [voterNumber, ack] of acknowledged) expect(stored.get(voterNumber)).toEqual(ack);
    await expectResultsEverywhere([200, 200, 200]);

    // A retry through another node gets the original voteId: the owner answers, wherever it is asked.
    const voter = voters[7]!;
    const again = await call(cluster.nodes.get('node-c')!.baseUrl, 'POST', '/api/v1/votes', {
      token: voter.token, body: { electionId, candidateId: candidateIds[7 % 3], userId: voter.userId },
    });
    expect(again.status).toBe(200);
    expect(again.body.voteId).toBe(acknowledged.get(voter.voterNumber)!.voteId);
    const changed = await call(cluster.nodes.get('node-a')!.baseUrl, 'POST', '/api/v1/votes', {
      token: voter.token, body: { electionId, candidateId: candidateIds[(7 + 1) % 3], userId: voter.userId },
    });
    expect(changed.status).toBe(409);
    expect(changed.body.error.code).toBe('already_voted');
  }, 180_000);

  it('a node joining receives shards from the coordinator', async () => {
    await cluster.startNode('node-d', 'a');
    const view = await eventually(async () => {
      const v = await clusterView(cluster.nodes.get('node-a')!.baseUrl);
      const d = v.nodes.find((n) => n.nodeId === 'node-d');
      const counts = v.nodes.filter((n) => n.status === 'alive').map((n) => n.shardsOwned);
      return d && d.status === 'alive' && d.shardsOwned >= 1 && Math.max(...counts) - Math.min(...counts) <= 1 ? v : undefined;
    }, 60_000, 'node-d to own shards, the map balanced');
    expect(view.nodes.find((n) => n.nodeId === 'node-d')!.shardsOwned).toBeGreaterThanOrEqual(1);
    // And it serves them: its shards' tallies still add up, wherever results are asked.
    await expectResultsEverywhere([200, 200, 200]);
  }, 120_000);

  it('kill -9 of a node under load: its shards are served by the others, every acknowledged vote counted once', async () => {
    const voters = await createVoters(cluster.db.pool, 900, cluster.jwtSecret);
    const victim = cluster.nodes.get('node-b')!;
    let sent = 0;
    const load = castAll(voters, (i) => { sent = i; return i % 3; }, 12);
    await eventually(async () => (sent >= 200 ? true : undefined), 120_000, 'load under way');
    victim.child.kill('SIGKILL');
    await victim.exited();
    const acknowledged = await load;

    const view = await eventually(async () => {
      const v = await clusterView(cluster.nodes.get('node-a')!.baseUrl);
      const b = v.nodes.find((n) => n.nodeId === 'node-b');
      return b?.status === 'dead' && b.shardsOwned === 0 ? v : undefined;
    }, 60_000, 'node-b declared dead and its shards reassigned');
    expect(view.shards.filter((s) => s.electionId === electionId).every((s) => s.ownerNodeId !== 'node-b')).toBe(true);

    const stored = await storedVotes();
    expect(stored.size).toBe(600 + 900);
    for (const [voterNumber, ack] of acknowledged) expect(stored.get(voterNumber)).toEqual(ack);
    await expectResultsEverywhere([500, 500, 500]);
  }, 300_000);

  it('a node whose secrets differ from the cluster refuses to start, saying so', async () => {
    // Its own data dir: it writes its secrets there before it is refused.
    const dataDir = await mkdtemp(path.join(os.tmpdir(), 'lv-stranger-'));
    try {
      await expect(
        startLivevoteProcess({
          DATABASE_URL: cluster.db.url, LIVEVOTE_JWT_SECRET: 'another-jwt-secret-entirely-0123456789-xyz', LIVEVOTE_NODE_ID: 'stranger',
          LIVEVOTE_DATA_DIR: dataDir, LIVEVOTE_DB_POOL_MAX: '2',
          // Not the default file queue: that is refused in a live cluster before secrets are compared (cluster/spillGuard.ts).
          LIVEVOTE_SPILL_QUEUE: 'off',
        }, 120_000),
      ).rejects.toThrow(/other secrets than the cluster/);
    } finally {
      await rm(dataDir, { recursive: true, force: true });
    }
  }, 180_000);
});
