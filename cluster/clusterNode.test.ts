// composeClusterRoles over the simulated ports (cluster/testing/simCluster.ts, the in-memory vote
// store), on real timers: two nodes in two AZs whose LIVEVOTE_REPLICAS differ.
import { afterEach, describe, expect, it } from 'vitest';
import { createMemoryAdapters, MemoryVoteStore } from '../actors/memoryAdapters.ts';
import type { VoteOutcome } from '../actors/shard.ts';
import { createVoteNode, type VoteNode } from '../actors/voteNode.ts';
import { composeClusterRoles, type ClusterLog, type ClusterRoles } from './clusterNode.ts';
import { SpillGuard } from './spillGuard.ts';
import { SimClusterState } from './testing/simCluster.ts';

const electionId = 'e-replicas';
const shardCount = 4;
const candidateCount = 2;
const deadAfterMs = 2_000;
const leaseTtlMs = 2_000;

const silentLog: ClusterLog = { debug() {}, info() {}, warn() {}, error() {}, child: () => silentLog };

interface TestNode {
  readonly nodeId: string;
  readonly voteNode: VoteNode;
  readonly roles: ClusterRoles;
}

const started: TestNode[] = [];
afterEach(async () => {
  for (const node of started.splice(0)) {
    await node.roles.stop();
    await node.voteNode.close();
  }
});

/** One node of a cluster whose store, leases and votes live in `state`; links call the peer's roles directly. */
function startNode(state: SimClusterState, voteStore: MemoryVoteStore, nodes: Map<string, TestNode>, nodeId: string, replicas: number): TestNode {
  const adapters = createMemoryAdapters({ store: voteStore, batchIdBlockSize: 100 });
  let roles: ClusterRoles | undefined;
  const voteNode = createVoteNode({
    ...adapters,
    config: { flushIntervalMs: 2, snapshotIntervalMs: 60_000 },
    // As createClusterNode wires it.
    onBatchCommitted: (batch) => roles?.replication.streamer.onBatchCommitted(batch),
  });
  roles = composeClusterRoles({
    nodeId,
    az: `az-${nodeId}`,
    secretsFingerprint: 'test',
    settings: {
      heartbeatIntervalMs: 50, deadAfterMs, leaseTtlMs, movesInFlightMax: 4, autoBalance: true, routeRetryMs: 5_000,
      forwardTimeoutMs: 5_000, retryAfterMs: 50, replicas,
      viewRefreshMs: 100, publishIntervalMs: 50, republishIntervalMs: 200, replicaReportIntervalMs: 100,
    },
    store: state.store(),
    leases: state.leasesFor(nodeId, leaseTtlMs, () => {}),
    voteNode,
    snapshots: adapters.snapshots,
    links: {
      request: (peer, message, onAnswer) => {
        const to = nodes.get(peer.nodeId);
        if (to === undefined) queueMicrotask(() => onAnswer({ failed: 'disconnected' }));
        else setImmediate(() => to.roles.onLinkRequest(nodeId, message, (answer) => setImmediate(() => onAnswer(answer as never))));
      },
      send: (peer, event) => {
        const to = nodes.get(peer.nodeId);
        if (to !== undefined) setImmediate(() => to.roles.onLinkEvent(nodeId, event));
      },
      forget: () => {},
    },
    spillGuard: new SpillGuard({ nodeId, queueKind: 'off', fileInCluster: 'refuse', deadAfterMs }),
    election: (id) => (id === electionId ? { shardCount, candidateCount, status: 'open' as const } : undefined),
    electionIds: () => [electionId],
    reloadElections: async () => {},
    now: Date.now,
    log: silentLog,
  });
  const node = { nodeId, voteNode, roles };
  nodes.set(nodeId, node);
  started.push(node);
  return node;
}

async function until(condition: () => boolean, what: string, timeoutMs = 60_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!condition()) {
    if (Date.now() > deadline) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`);
    await new Promise((resolve) => setTimeout(resolve, 20));
  }
}

/** Casts through `via`, again while the answer is 503-like (a shard between owners), until accepted. */
async function castAccepted(via: TestNode, voterNumber: number): Promise<void> {
  const deadline = Date.now() + 60_000;
  for (;;) {
    const outcome = await new Promise<VoteOutcome>((resolve) => via.roles.router.cast({ electionId, voterNumber, candidateIndex: voterNumber % candidateCount }, resolve));
    if (outcome.kind === 'accepted') return;
    if (outcome.kind !== 'unavailable' && outcome.kind !== 'overloaded') throw new Error(`voter ${voterNumber}: ${JSON.stringify(outcome)}`);
    if (Date.now() > deadline) throw new Error(`voter ${voterNumber} still ${JSON.stringify(outcome)} after 60 s`);
    await new Promise((resolve) => setTimeout(resolve, 20));
  }
}

describe('composeClusterRoles: replicas', () => {
  it('a node started with replicas 0 follows the shards the coordinator makes it a replica of, and streams to its own shards\' replicas', async () => {
    const voteStore = new MemoryVoteStore();
    const state = new SimClusterState(Date.now, voteStore, () => [{ electionId, shardCount }]);
    const nodes = new Map<string, TestNode>();
    // a joins first and coordinates: its value (1) places a replica of every shard on the other AZ's node.
    const a = startNode(state, voteStore, nodes, 'a', 1);
    await a.roles.start('sim://a');
    const b = startNode(state, voteStore, nodes, 'b', 0);
    await b.roles.start('sim://b');
    const owners = () => state.view().shards.filter((row) => row.electionId === electionId);
    await until(() => {
      const rows = owners();
      return rows.length === shardCount && rows.some((r) => r.ownerNodeId === 'a') && rows.some((r) => r.ownerNodeId === 'b')
        && rows.every((r) => r.replicaNodeIds.length === 1 && r.replicaNodeIds[0] !== r.ownerNodeId && r.leaseNodeId === r.ownerNodeId);
    }, 'both nodes owning shards, each shard with a replica on the other node');

    const votesPerShard = new Array<number>(shardCount).fill(0);
    for (let voterNumber = 0; voterNumber < 200; voterNumber++) {
      await castAccepted(voterNumber % 2 === 0 ? a : b, voterNumber);
      votesPerShard[voterNumber % shardCount]!++;
    }

    // Every shard's replica holds every stored vote of it, applied from its owner's stream.
    const replicaVotes = () => {
      const byShard = new Map<number, { nodeId: string; votes: number; phase: string; epoch: number }>();
      for (const node of [a, b]) {
        for (const r of node.roles.replication.replicas.report()) if (r.electionId === electionId) byShard.set(r.shard, { nodeId: node.nodeId, votes: r.votes, phase: r.phase, epoch: r.epoch });
      }
      return byShard;
    };
    try {
      await until(() => owners().every((row) => {
        const replica = replicaVotes().get(row.shard);
        return replica !== undefined && replica.nodeId === row.replicaNodeIds[0] && replica.phase === 'live' && replica.votes === votesPerShard[row.shard];
      }), 'every replica live with all of its shard\'s votes', 30_000);
    } catch (error) {
      throw new Error(`${String(error)}\nmap: ${JSON.stringify(owners().map((r) => ({ shard: r.shard, owner: r.ownerNodeId, replicas: r.replicaNodeIds })))}\nreplicas: ${JSON.stringify([...replicaVotes()])}\nvotes per shard: ${votesPerShard}`);
    }
    // b's shards were streamed to a (numbered batches, none missed), not only read from the store.
    expect(a.roles.replication.streamer.batchesSent).toBeGreaterThan(0);
    expect(b.roles.replication.streamer.batchesSent).toBeGreaterThan(0);
  });
});
