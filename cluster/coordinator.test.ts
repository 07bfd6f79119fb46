// The coordinator's handling of operators' requests, on the simulated store (cluster/testing/
// simCluster.ts, the SQL of persistence/clusterStore.ts in memory): an undrain ends a drain.
import { describe, expect, it } from 'vitest';
import { MemoryVoteStore } from '../actors/memoryAdapters.ts';
import { createCoordinator } from './coordinator.ts';
import { SimClusterState } from './testing/simCluster.ts';

const electionId = '00000000-0000-4000-8000-000000000001';
const silent = { info() {}, warn() {} };

describe('coordinator: undrain', () => {
  it('clears the draining flag and ends the node\'s running drain failed; the node receives shards again', async () => {
    const state = new SimClusterState(Date.now, new MemoryVoteStore(), () => [{ electionId, shardCount: 4 }]);
    const store = state.store();
    for (const [nodeId, az] of [['n1', 'a'], ['n2', 'b']] as const) await store.join({ nodeId, az, url: `sim://${nodeId}`, secretsFingerprint: 'f' });
    expect((await store.heartbeat('n1', 1, { coordinatorLeaseMs: 60_000, wantCoordinator: true })).coordinator).toBe(true);
    // One move per round: the drain is still running after its first round.
    const coordinator = createCoordinator({ store, nodeId: 'n1', deadAfterMs: 60_000, silentAfterMs: 45_000, movesInFlightMax: 1, autoBalance: false, log: silent });
    await coordinator.round();
    const ownedBy = async (nodeId: string) => (await store.readView()).shards.filter((s) => s.ownerNodeId === nodeId).length;
    expect(await ownedBy('n2')).toBe(2);

    const drain = await store.requestOperation({ kind: 'drain', nodeId: 'n2' });
    await coordinator.round();
    expect(await store.getOperation(drain.operationId)).toMatchObject({ status: 'running', shardsTotal: 2 });
    expect(await ownedBy('n2')).toBe(1);

    const undrain = await store.requestOperation({ kind: 'undrain', nodeId: 'n2' });
    await coordinator.round();
    expect(await store.getOperation(undrain.operationId)).toMatchObject({ status: 'done' });
    expect(await store.getOperation(drain.operationId)).toMatchObject({ status: 'failed', error: expect.stringMatching(/ended by undrain/) });
    const view = await store.readView();
    expect(view.nodes.find((n) => n.nodeId === 'n2')!.draining).toBe(false);
    await coordinator.round();
    expect(await ownedBy('n2')).toBe(1); // nothing moves back without a balance (automatic balancing is off)

    await expect(store.requestOperation({ kind: 'undrain', nodeId: 'n2' })).rejects.toMatchObject({ reason: 'node_not_draining' });
    await store.requestOperation({ kind: 'balance' });
    await coordinator.round();
    expect(await ownedBy('n2')).toBe(2);
  });
});

describe('coordinator: silent members', () => {
  it('a member silent past silentAfterMs receives no shard and holds balancing still (a balance stays running); heard again, it receives its share', async () => {
    let nowMs = 1_000_000;
    const state = new SimClusterState(() => nowMs, new MemoryVoteStore(), () => [{ electionId, shardCount: 6 }]);
    const store = state.store();
    const logged: object[] = [];
    const coordinator = createCoordinator({
      store, nodeId: 'n1', deadAfterMs: 12_000, silentAfterMs: 9_000, movesInFlightMax: 4, autoBalance: true, log: { info: (obj) => logged.push(obj), warn() {} },
    });
    const beat = async (nodeId: string) => expect((await store.heartbeat(nodeId, 1, { coordinatorLeaseMs: 60_000, wantCoordinator: nodeId === 'n1' })).alive).toBe(true);
    for (const [nodeId, az] of [['n1', 'a'], ['n2', 'b']] as const) await store.join({ nodeId, az, url: `sim://${nodeId}`, secretsFingerprint: 'f' });
    await beat('n1');
    await coordinator.round();
    const ownedBy = async (nodeId: string) => (await store.readView()).shards.filter((s) => s.ownerNodeId === nodeId).length;
    expect([await ownedBy('n1'), await ownedBy('n2')]).toEqual([3, 3]);
    logged.length = 0;

    await store.join({ nodeId: 'n3', az: 'c', url: 'sim://n3', secretsFingerprint: 'f' });
    nowMs += 9_001; // n3 joined, then fell silent; n1 and n2 go on
    await beat('n1');
    await beat('n2');
    const balance = await store.requestOperation({ kind: 'balance' });
    await coordinator.round();
    expect(await ownedBy('n3')).toBe(0);
    expect(logged).toEqual([]); // no map written
    await coordinator.round();
    expect(await store.getOperation(balance.operationId)).toMatchObject({ status: 'running' }); // not done while n3 is silent

    await beat('n3');
    await coordinator.round();
    expect(await ownedBy('n3')).toBe(2);
    await coordinator.round();
    expect(await store.getOperation(balance.operationId)).toMatchObject({ status: 'done' });
  });
});
