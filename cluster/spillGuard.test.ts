// The file spill queue with other live members: refused before joining, paused while peers are
// alive, untouched with the override or another queue kind.
import { describe, expect, it } from 'vitest';
import { MemorySpillQueue } from '../actors/memoryAdapters.ts';
import type { ClusterView, MemberRecord } from './ports.ts';
import { FileSpillQueueInClusterError, SpillGuard } from './spillGuard.ts';

const readAtMs = 1_000_000;

function member(nodeId: string, fields: Partial<MemberRecord> = {}): MemberRecord {
  return { nodeId, az: 'a', url: `http://${nodeId}`, status: 'alive', incarnation: 1, startedAtMs: 0, lastHeartbeatAtMs: readAtMs - 100, draining: false, ...fields };
}

function view(nodes: MemberRecord[]): ClusterView {
  return { version: 1, electionsVersion: 1, coordinatorNodeId: null, nodes, shards: [], elections: [], operations: [], readAtMs };
}

const batch = { batchId: 7, rows: [], spilledAtMs: 1 };

describe('spill guard: the file queue in a cluster', () => {
  it('refuses to join while another member is alive, naming the variables; a dead, left or silent one does not count', () => {
    const guard = new SpillGuard({ nodeId: 'a', queueKind: 'file', fileInCluster: 'refuse', deadAfterMs: 1_500 });
    expect(() => guard.checkBeforeJoin(view([member('a'), member('b')]))).toThrow(FileSpillQueueInClusterError);
    expect(() => guard.checkBeforeJoin(view([member('b')]))).toThrow(/LIVEVOTE_SPILL_QUEUE=sqs.*LIVEVOTE_SPILL_FILE_IN_CLUSTER=allow/s);
    const alone = view([
      member('a'),
      member('b', { status: 'dead' }),
      member('c', { status: 'left' }),
      // Marked alive but silent past the dead-after: a cluster that all went down at once.
      member('d', { lastHeartbeatAtMs: readAtMs - 5_000 }),
    ]);
    expect(() => guard.checkBeforeJoin(alone)).not.toThrow();
  });

  it('pauses sends while a peer is alive and resumes when alone; receive, ack and depth go on', async () => {
    const guard = new SpillGuard({ nodeId: 'a', queueKind: 'file', fileInCluster: 'refuse', deadAfterMs: 1_500 });
    const changes: boolean[] = [];
    guard.onPausedChange = (paused) => changes.push(paused);
    const inner = new MemorySpillQueue();
    const queue = guard.wrap(inner);
    await queue.send(batch);
    guard.applyView(view([member('a'), member('b')]));
    expect(guard.paused).toBe(true);
    await expect(queue.send({ ...batch, batchId: 8 })).rejects.toThrow(/spilling paused/);
    // What is queued already is still this node's to drain.
    expect((await queue.depth()).batches).toBe(1);
    const [item] = await queue.receive(10, 1_000);
    await queue.ack(item!.receipt);
    guard.applyView(view([member('a'), member('b', { status: 'dead' })]));
    expect(guard.paused).toBe(false);
    await queue.send({ ...batch, batchId: 9 });
    expect(inner.sent).toBe(2);
    expect(changes).toEqual([true, false]);
  });

  it('does nothing with the override, with SQS, or with spilling off', async () => {
    const peers = view([member('a'), member('b')]);
    for (const options of [
      { queueKind: 'file', fileInCluster: 'allow' },
      { queueKind: 'sqs', fileInCluster: 'refuse' },
      { queueKind: 'off', fileInCluster: 'refuse' },
    ] as const) {
      const guard = new SpillGuard({ nodeId: 'a', deadAfterMs: 1_500, ...options });
      expect(() => guard.checkBeforeJoin(peers)).not.toThrow();
      guard.applyView(peers);
      expect(guard.paused).toBe(false);
      await guard.wrap(new MemorySpillQueue()).send(batch);
    }
  });
});
