// The operator's surface of cluster operations on a real cluster (node processes on one Postgres):
// the API (move, drain, balance, list, get; each refusal with its code, decided by the real store)
// and `livevote cluster move|drain|balance|operations` (in-process and as the process an operator
// runs), both followed to done, with the shard map in Postgres agreeing; and votes/s per node in
// GET /api/v1/admin/cluster. The ops page over the same API: gateway/dashboard/ops.test.ts.
import { execFile } from 'node:child_process';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createPgClusterStore } from '../persistence/clusterStore.ts';
import { runCli } from './cli.ts';
import { call } from './testing/appHarness.ts';
import { eventually, startTestCluster, type TestCluster } from './testing/clusterHarness.ts';
import { root } from './testing/processHarness.ts';
import { createVoters } from './testing/voters.ts';

let cluster: TestCluster;
let baseUrl: string;
let token: string;
let electionId: string;
let candidateIds: string[];
const shardCount = 4;

const owners = async () => {
  const view = await createPgClusterStore(cluster.db.pool).readView();
  return new Map(view.shards.filter((s) => s.electionId === electionId).map((s) => [s.shard, s.ownerNodeId]));
};

async function cli(args: string[]): Promise<{ status: number; stdout: string; stderr: string }> {
  let stdout = '';
  let stderr = '';
  const status = await runCli(args, { DATABASE_URL: cluster.db.url, LOG_LEVEL: 'silent' }, { out: (t) => { stdout += t; }, err: (t) => { stderr += t; } });
  return { status, stdout, stderr };
}

/** `npm run livevote -- …` as an operator runs it: a child process. */
function cliProcess(args: readonly string[]): Promise<{ status: number; stdout: string; stderr: string }> {
  return new Promise((resolve) => {
    execFile(process.execPath, ['--import', 'tsx', path.join(root, 'infra/cli.ts'), ...args], {
      cwd: root, env: { ...process.env, DATABASE_URL: cluster.db.url, LOG_LEVEL: 'silent' }, timeout: 300_000,
    }, (error, stdout, stderr) => resolve({ status: error ? (typeof error.code === 'number' ? error.code : -1) : 0, stdout, stderr }));
  });
}

async function operationDone(operationId: number): Promise<any> {
  return eventually(async () => {
    const answer = await call(baseUrl, 'GET', `/api/v1/admin/cluster/operations/${operationId}`, { token });
    if (answer.body?.status === 'failed') throw new Error(`operation failed: ${answer.body.error}`);
    return answer.body?.status === 'done' ? answer.body : undefined;
  }, 120_000, `operation ${operationId} done`);
}

beforeAll(async () => {
  cluster = await startTestCluster({ LIVEVOTE_AUTO_BALANCE: 'off', LIVEVOTE_DEAD_AFTER_MS: '15000' });
  await Promise.all([cluster.startNode('node-a', 'a'), cluster.startNode('node-b', 'b')]);
  baseUrl = cluster.nodes.get('node-a')!.baseUrl;
  token = await cluster.adminToken();
  const created = await call(baseUrl, 'POST', '/api/v1/admin/elections', {
    token, body: { title: 'Operated', candidates: [{ name: 'A' }, { name: 'B' }], shardCount },
  });
  electionId = created.body.electionId;
  candidateIds = created.body.candidates.map((c: { candidateId: string }) => c.candidateId);
  await call(baseUrl, 'POST', `/api/v1/admin/elections/${electionId}/open`, { token });
  await eventually(async () => ((await owners()).size === shardCount ? true : undefined), 60_000, 'every shard owned');
}, 240_000);
afterAll(async () => {
  await cluster?.close();
});

describe('cluster operations on a real cluster', () => {
  it('API: a move is recorded (202), carried out, and read back; the map in Postgres agrees', async () => {
    const [shard, from] = [...(await owners())][0]!;
    const to = from === 'node-a' ? 'node-b' : 'node-a';
    const moved = await call(baseUrl, 'POST', `/api/v1/admin/cluster/shards/${electionId}/${shard}/move`, { token, body: { toNodeId: to } });
    expect([moved.status, moved.body.kind, moved.body.request]).toEqual([202, 'move', { kind: 'move', electionId, shard, toNodeId: to }]);
    const done = await operationDone(moved.body.operationId);
    expect([done.shardsMoved, done.shardsTotal, done.error]).toEqual([1, 1, null]);
    expect(Date.parse(done.finishedAt)).toBeGreaterThanOrEqual(Date.parse(done.requestedAt));
    expect((await owners()).get(shard)).toBe(to);
    const listed = await call(baseUrl, 'GET', '/api/v1/admin/cluster/operations', { token });
    expect(listed.body.operations[0]).toEqual(done);
    // Any node answers about it: the operations live in Postgres.
    expect((await call(cluster.nodes.get('node-b')!.baseUrl, 'GET', `/api/v1/admin/cluster/operations/${done.operationId}`, { token })).body).toEqual(done);
  }, 180_000);

  // A node's start and its stop (drain, then up to 12.5 s for idle keep-alive connections) inside:
  // two suites at load 24 took this test past 180 s.
  it('API: refusals come from the real cluster state, each with its code, and record nothing', async () => {
    const [shard, owner] = [...(await owners())][0]!;
    const before = (await call(baseUrl, 'GET', '/api/v1/admin/cluster/operations', { token })).body.operations.length;
    // A node that joined and left (SIGTERM): known, not alive.
    const nodeC = await cluster.startNode('node-c', 'c');
    nodeC.child.kill('SIGTERM');
    await nodeC.exited();
    await eventually(async () => ((await createPgClusterStore(cluster.db.pool).readView()).nodes.find((n) => n.nodeId === 'node-c')?.status === 'left' ? true : undefined), 60_000, 'node-c left');
    const cases: [string, string, unknown, number, string][] = [
      ['POST', `/api/v1/admin/cluster/shards/${electionId}/${shard}/move`, { toNodeId: 'node-z' }, 404, 'node_not_found'],
      ['POST', `/api/v1/admin/cluster/shards/${electionId}/${shard}/move`, { toNodeId: 'node-c' }, 409, 'node_not_alive'],
      ['POST', `/api/v1/admin/cluster/shards/${electionId}/${shard}/move`, { toNodeId: owner }, 409, 'shard_already_there'],
      ['POST', `/api/v1/admin/cluster/shards/${electionId}/${shardCount}/move`, { toNodeId: owner }, 404, 'shard_not_found'],
      ['POST', `/api/v1/admin/cluster/shards/00000000-0000-4000-8000-000000000000/0/move`, { toNodeId: owner }, 404, 'shard_not_found'],
      ['POST', '/api/v1/admin/cluster/nodes/node-z/drain', undefined, 404, 'node_not_found'],
      ['POST', '/api/v1/admin/cluster/nodes/node-c/drain', undefined, 409, 'node_not_alive'],
      ['GET', '/api/v1/admin/cluster/operations/999999', undefined, 404, 'operation_not_found'],
      ['POST', `/api/v1/admin/cluster/shards/${electionId}/x/move`, { toNodeId: owner }, 400, 'validation_failed'],
    ];
    for (const [method, route, body, status, code] of cases) {
      const answer = await call(baseUrl, method, route, { token, body });
      expect([route, answer.status, answer.body?.error?.code]).toEqual([route, status, code]);
    }
    expect((await call(baseUrl, 'GET', '/api/v1/admin/cluster/operations', { token })).body.operations.length).toBe(before);
  }, 360_000);

  it('CLI: move --wait and balance --wait follow to done (exit 0), a refusal exits 2, operations lists them', async () => {
    const [shard, from] = [...(await owners())][0]!;
    const to = from === 'node-a' ? 'node-b' : 'node-a';
    const move = await cli(['cluster', 'move', electionId, String(shard), to, '--wait']);
    expect([move.status, move.stderr]).toEqual([0, '']);
    expect(move.stdout).toMatch(new RegExp(`^operation \\d+  move shard ${shard} of ${electionId} to ${to}  pending\\n`));
    expect(move.stdout).toMatch(/done, 1\/1 shards moved\n$/);
    expect((await owners()).get(shard)).toBe(to);

    const balance = await cli(['cluster', 'balance', '--wait']);
    expect(balance.status).toBe(0);
    expect(balance.stdout).toMatch(/balance  done/);

    const refused = await cli(['cluster', 'move', electionId, String(shard), to]);
    expect(refused.status).toBe(2);
    expect(refused.stderr).toMatch(/^livevote: refused \(already_there\): .*; nothing was recorded\n$/);
    const usage = await cli(['cluster', 'drain']);
    expect([usage.status, usage.stderr]).toEqual([2, expect.stringContaining('cluster drain takes <nodeId>, got none')]);

    const listed = await cli(['cluster', 'operations', '--limit', '2']);
    expect(listed.status).toBe(0);
    const lines = listed.stdout.trimEnd().split('\n');
    expect(lines).toHaveLength(3);
    expect(lines[1]).toMatch(/^\d+ +balance +balance +done/);
    expect(lines[2]).toMatch(new RegExp(`^\\d+ +move +move shard ${shard} of ${electionId} to ${to} +done +1/1`));
  }, 180_000);

  it('CLI as a process: drain --wait moves every shard off the node, exit 0', async () => {
    const drained = await cliProcess(['cluster', 'drain', 'node-b', '--wait']);
    expect([drained.status, drained.stderr]).toEqual([0, '']);
    expect(drained.stdout).toMatch(/drain node-b  done, \d+\/\d+ shards moved\n$/);
    expect([...(await owners()).values()]).toEqual(Array.from({ length: shardCount }, () => 'node-a'));
    const status = await cliProcess(['cluster', 'status']);
    expect(status.stdout).toMatch(/\nnode-b( \*)? +b +alive, draining +http\S+ +\d+ ms ago +0\n/);
  }, 300_000);

  it('undrain (API, then CLI refusal): the node takes shards again at the next balance; a second undrain is refused 409 node_not_draining', async () => {
    const undrain = await call(baseUrl, 'POST', '/api/v1/admin/cluster/nodes/node-b/undrain', { token });
    expect([undrain.status, undrain.body.kind]).toEqual([202, 'undrain']);
    await operationDone(undrain.body.operationId);
    const view = await createPgClusterStore(cluster.db.pool).readView();
    expect(view.nodes.find((n) => n.nodeId === 'node-b')!.draining).toBe(false);
    const balance = await call(baseUrl, 'POST', '/api/v1/admin/cluster/balance', { token });
    await operationDone(balance.body.operationId);
    expect([...(await owners()).values()].filter((owner) => owner === 'node-b').length).toBe(shardCount / 2);
    const again = await call(baseUrl, 'POST', '/api/v1/admin/cluster/nodes/node-b/undrain', { token });
    expect([again.status, again.body.error?.code]).toEqual([409, 'node_not_draining']);
    const refused = await cli(['cluster', 'undrain', 'node-b']);
    expect([refused.status, refused.stderr]).toEqual([2, expect.stringMatching(/refused \(node_not_draining\)/)]);
  }, 300_000);

  it('GET /api/v1/admin/cluster: votes/s per live node, from its own counters', async () => {
    const voters = await createVoters(cluster.db.pool, 300, cluster.jwtSecret);
    let sent = 0;
    const rateOfA = await eventually(async () => {
      // Votes between two readings (at least 500 ms apart) make a rate.
      const batch = voters.slice(sent, sent + 20);
      sent += batch.length;
      await Promise.all(batch.map((voter, i) => call(baseUrl, 'POST', '/api/v1/votes', { token: voter.token, body: { electionId, candidateId: candidateIds[i % 2], userId: voter.userId } })));
      await new Promise((resolve) => setTimeout(resolve, 600));
      const view = await call(baseUrl, 'GET', '/api/v1/admin/cluster', { token });
      const nodes = new Map<string, any>(view.body.nodes.map((n: { nodeId: string }) => [n.nodeId, n]));
      expect(nodes.get('node-c').votesPerSecond).toBe(null); // left: not read
      const rate = nodes.get('node-a').votesPerSecond;
      return typeof rate === 'number' && rate > 0 ? rate : sent >= voters.length ? -1 : undefined;
    }, 120_000, 'a votes/s reading on node-a');
    expect(rateOfA).toBeGreaterThan(0);
  }, 180_000);
});
