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
    const coordinator = createCoordinator({ store, nodeId: 'n1', deadAfterMs: 60_000, movesInFlightMax: 1, autoBalance: false, log: silent });
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
