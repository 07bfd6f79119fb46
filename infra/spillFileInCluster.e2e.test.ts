// LIVEVOTE_SPILL_QUEUE=file in a cluster, with real node processes on one Postgres: a file queue
// is drainable only by its own node, so a node with one refuses to start while other members are
// alive (and says why, naming the variables), a node already running stops spilling while a peer
// is alive (livevote_spill_queue_paused), and LIVEVOTE_SPILL_FILE_IN_CLUSTER=allow accepts it.
import { afterAll, expect, it } from 'vitest';
import { eventually, startTestCluster, type TestCluster } from './testing/clusterHarness.ts';

let cluster: TestCluster | undefined;

afterAll(async () => {
  await cluster?.close();
});

async function metric(baseUrl: string, name: string): Promise<number> {
  const text = await (await fetch(`${baseUrl}/metrics`)).text();
  const line = text.split('\n').find((l) => l.startsWith(`${name} `));
  return line === undefined ? Number.NaN : Number(line.slice(line.lastIndexOf(' ') + 1));
}

it('a file spill queue: refused into a live cluster, paused while a peer is alive, allowed with the override', async () => {
  // A patient failure detector: this test is about who is alive, not about false deaths on a busy box.
  cluster = await startTestCluster({ LIVEVOTE_DEAD_AFTER_MS: '6000' });
  const first = await cluster.startNode('spill-a', 'a', { LIVEVOTE_SPILL_QUEUE: 'file' });
  // Alone: it spills when it must.
  expect(await metric(first.baseUrl, 'livevote_spill_queue_paused')).toBe(0);

  // A second node with a file queue refuses to start, before it joins, and says why.
  const refused = await cluster.startNode('spill-b', 'b', { LIVEVOTE_SPILL_QUEUE: 'file' }).then(
    () => undefined,
    (error: unknown) => String(error),
  );
  expect(refused).toMatch(/spill-b refuses to start: LIVEVOTE_SPILL_QUEUE=file/);
  expect(refused).toMatch(/spill-a/);
  expect(refused).toMatch(/LIVEVOTE_SPILL_FILE_IN_CLUSTER=allow/);
  const view = await cluster.db.pool.query<{ node_id: string }>('SELECT node_id FROM cluster_nodes ORDER BY node_id');
  expect(view.rows.map((r) => r.node_id)).toEqual(['spill-a']);

  // With the override it starts; the first node, whose queue has no override, stops spilling.
  const third = await cluster.startNode('spill-c', 'c', { LIVEVOTE_SPILL_QUEUE: 'file', LIVEVOTE_SPILL_FILE_IN_CLUSTER: 'allow' });
  await eventually(async () => ((await metric(first.baseUrl, 'livevote_spill_queue_paused')) === 1 ? true : undefined), 60_000, 'spilling paused on spill-a');
  expect(await metric(third.baseUrl, 'livevote_spill_queue_paused')).toBe(0);
  expect(first.output()).toMatch(/spilling paused/);

  // Alone again (the peer left gracefully): spilling resumes.
  third.child.kill('SIGTERM');
  await third.exited();
  await eventually(async () => ((await metric(first.baseUrl, 'livevote_spill_queue_paused')) === 0 ? true : undefined), 60_000, 'spilling resumed on spill-a');
}, 300_000);
