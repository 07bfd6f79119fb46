// The cluster's ports in the simulated world: the cluster store (membership, coordinator lease,
// shard map), the shard leases, and the links between nodes. Each states in memory what the
// Postgres implementation states in SQL (persistence/clusterStore.ts, persistence/leases.ts),
// on the world's clock; the world wraps every call so that fast-check's scheduler decides when it
// completes and an isolated process's calls wait until it is healed.

import { shardKeyString, type ShardKey } from '../../actors/ports.ts';
import type { MemoryVoteStore } from '../../actors/memoryAdapters.ts';
import {
  ClusterOperationRefused,
  SecretsMismatchError,
  type AllocatedElection,
  type ClusterOperation,
  type ClusterOperationRequest,
  type ClusterStore,
  type ClusterView,
  type HeldShardLease,
  type MemberRecord,
  type ShardAssignment,
  type ShardLeases,
} from '../ports.ts';

interface CoordinatorLease {
  nodeId: string;
  expiresAtMs: number;
}

interface LeaseRow {
  owner: string;
  expiresAtMs: number;
}

/** The shared "database" of the cluster: one per world. */
export class SimClusterState {
  version = 0;
  electionsVersion = 0;
  coordinator: CoordinatorLease | null = null;
  fingerprint: string | null = null;
  readonly nodes = new Map<string, MemberRecord>();
  readonly owners = new Map<string, { electionId: string; shard: number; ownerNodeId: string; mapVersion: number; pinned: boolean; replicaNodeIds: readonly string[] }>();
  readonly operations: ClusterOperation[] = [];
  /** Lease owners and expiry; the epoch lives in the vote store (it fences the journal). */
  readonly leases = new Map<string, LeaseRow>();

  constructor(
    readonly now: () => number,
    readonly voteStore: MemoryVoteStore,
    /** The elections whose shards must be owned (not drafts). */
    readonly elections: () => readonly AllocatedElection[],
  ) {}

  private isCoordinator(nodeId: string): boolean {
    return this.coordinator !== null && this.coordinator.nodeId === nodeId && this.coordinator.expiresAtMs > this.now();
  }

  /** ClusterStore, as persistence/clusterStore.ts. */
  store(): ClusterStore {
    return {
      join: async (request) => {
        if (this.fingerprint !== null && this.fingerprint !== request.secretsFingerprint) throw new SecretsMismatchError(request.nodeId);
        this.fingerprint ??= request.secretsFingerprint;
        const previous = this.nodes.get(request.nodeId);
        const incarnation = (previous?.incarnation ?? 0) + 1;
        const nowMs = this.now();
        this.nodes.set(request.nodeId, { nodeId: request.nodeId, az: request.az, url: request.url, status: 'alive', incarnation, startedAtMs: nowMs, lastHeartbeatAtMs: nowMs, draining: false });
        this.version++;
        return { incarnation };
      },
      heartbeat: async (nodeId, incarnation, options) => {
        const node = this.nodes.get(nodeId);
        const alive = node !== undefined && node.incarnation === incarnation && node.status === 'alive';
        if (alive) this.nodes.set(nodeId, { ...node, lastHeartbeatAtMs: this.now() });
        let coordinator = false;
        if (alive && options.wantCoordinator) {
          const current = this.coordinator;
          const free = current === null || current.nodeId === nodeId || current.expiresAtMs <= this.now() || this.nodes.get(current.nodeId)?.status !== 'alive';
          if (free) {
            this.coordinator = { nodeId, expiresAtMs: this.now() + options.coordinatorLeaseMs };
            coordinator = true;
          }
        }
        return { alive, coordinator, version: this.version, electionsVersion: this.electionsVersion };
      },
      readView: async () => this.view(),
      declareSilentNodesDead: async (coordinatorNodeId, deadAfterMs) => {
        if (!this.isCoordinator(coordinatorNodeId)) return null;
        const dead: string[] = [];
        for (const node of this.nodes.values()) {
          if (node.status === 'alive' && node.nodeId !== coordinatorNodeId && node.lastHeartbeatAtMs < this.now() - deadAfterMs) {
            this.nodes.set(node.nodeId, { ...node, status: 'dead' });
            dead.push(node.nodeId);
          }
        }
        if (dead.length > 0) this.version++;
        return dead.sort();
      },
      assignShards: async (coordinatorNodeId, assignments: readonly ShardAssignment[]) => {
        if (!this.isCoordinator(coordinatorNodeId)) return null;
        const version = ++this.version;
        const known = new Set(this.elections().map((e) => e.electionId));
        for (const a of assignments) {
          if (!known.has(a.electionId)) continue;
          const key = `${a.electionId}/${a.shard}`;
          const replicaNodeIds = a.replicaNodeIds ?? this.owners.get(key)?.replicaNodeIds ?? [];
          this.owners.set(key, { electionId: a.electionId, shard: a.shard, ownerNodeId: a.ownerNodeId, mapVersion: version, pinned: a.pinned ?? false, replicaNodeIds });
        }
        return version;
      },
      requestOperation: async (request: ClusterOperationRequest) => {
        const nodeState = (nodeId: string) => {
          const node = this.nodes.get(nodeId);
          if (node === undefined) throw new ClusterOperationRefused('node_not_found', `no node ${nodeId} in this cluster`);
          return node.status;
        };
        if (request.kind === 'move') {
          if (nodeState(request.toNodeId) !== 'alive') throw new ClusterOperationRefused('node_not_alive', `node ${request.toNodeId} is not alive`);
          const row = this.owners.get(`${request.electionId}/${request.shard}`);
          if (row === undefined) throw new ClusterOperationRefused('shard_not_found', `no shard ${request.shard} of election ${request.electionId} in the map`);
          if (row.ownerNodeId === request.toNodeId) throw new ClusterOperationRefused('already_there', `shard ${request.shard} of election ${request.electionId} is already on ${request.toNodeId}`);
        } else if (request.kind === 'drain') {
          if (nodeState(request.nodeId) !== 'alive') throw new ClusterOperationRefused('node_not_alive', `node ${request.nodeId} is not alive`);
        } else if (request.kind === 'undrain') {
          if (nodeState(request.nodeId) !== 'alive') throw new ClusterOperationRefused('node_not_alive', `node ${request.nodeId} is not alive`);
          const drainOpen = this.operations.some((op) => op.request.kind === 'drain' && op.request.nodeId === request.nodeId && (op.status === 'pending' || op.status === 'running'));
          if (!this.nodes.get(request.nodeId)!.draining && !drainOpen) throw new ClusterOperationRefused('node_not_draining', `node ${request.nodeId} is not draining`);
        }
        const operation: ClusterOperation = {
          operationId: this.operations.length + 1, request, status: 'pending', shardsTotal: 0, shardsMoved: 0, requestedAtMs: this.now(), finishedAtMs: null, error: null,
        };
        this.operations.push(operation);
        this.version++;
        return operation;
      },
      listOperations: async (limit) => this.operations.slice(-Math.max(1, limit)).reverse(),
      getOperation: async (operationId) => this.operations.find((op) => op.operationId === operationId),
      updateOperation: async (coordinatorNodeId, operationId, update) => {
        if (!this.isCoordinator(coordinatorNodeId)) return false;
        const index = this.operations.findIndex((op) => op.operationId === operationId);
        if (index < 0) return true;
        const op = this.operations[index]!;
        const finished = update.status === 'done' || update.status === 'failed';
        this.operations[index] = {
          ...op,
          status: update.status,
          shardsTotal: update.shardsTotal ?? op.shardsTotal,
          shardsMoved: update.shardsMoved ?? op.shardsMoved,
          error: update.error ?? op.error,
          finishedAtMs: finished ? this.now() : op.finishedAtMs,
        };
        return true;
      },
      setDraining: async (coordinatorNodeId, nodeId, draining) => {
        if (!this.isCoordinator(coordinatorNodeId)) return false;
        const node = this.nodes.get(nodeId);
        if (node !== undefined && node.draining !== draining) {
          this.nodes.set(nodeId, { ...node, draining });
          this.version++;
        }
        return true;
      },
      leave: async (nodeId, incarnation) => {
        const node = this.nodes.get(nodeId);
        if (node === undefined || node.incarnation !== incarnation || node.status !== 'alive') return;
        this.nodes.set(nodeId, { ...node, status: 'left' });
        this.version++;
        if (this.coordinator?.nodeId === nodeId) this.coordinator = null;
      },
    };
  }

  view(): ClusterView {
    const nowMs = this.now();
    return {
      version: this.version,
      electionsVersion: this.electionsVersion,
      coordinatorNodeId: this.coordinator !== null && this.coordinator.expiresAtMs > nowMs ? this.coordinator.nodeId : null,
      readAtMs: nowMs,
      nodes: [...this.nodes.values()].sort((a, b) => (a.nodeId < b.nodeId ? -1 : 1)),
      shards: [...this.owners.values()]
        .sort((a, b) => (a.electionId === b.electionId ? a.shard - b.shard : a.electionId < b.electionId ? -1 : 1))
        .map((row) => {
          const key = { electionId: row.electionId, shard: row.shard };
          const lease = this.leases.get(shardKeyString(key));
          return { ...row, epoch: this.voteStore.leaseEpoch(key) ?? 0, leaseNodeId: lease?.owner ?? null, leaseExpiresAtMs: lease?.expiresAtMs ?? 0 };
        }),
      elections: [...this.elections()],
      operations: this.operations.filter((op) => op.status === 'pending' || op.status === 'running'),
    };
  }

  /**
   * ShardLeases of one node, as persistence/leases.ts: acquiring bumps the epoch (in the vote
   * store, where the journal checks it); renewing and releasing need the epoch unchanged.
   * `onGranted` records each grant for the properties; `reuseEpoch` is a planted bug.
   */
  leasesFor(
    nodeId: string,
    leaseTtlMs: number,
    onGranted: (key: ShardKey, epoch: number) => void,
    reuseEpoch = false,
    /** A lease given to another node by a hand-off (the world records the grant for that node's process). */
    onHandedOver?: (key: ShardKey, epoch: number, toNodeId: string) => void,
  ): ShardLeases {
    return {
      acquire: async (electionId, shards, takeOver) => {
        const acquired: HeldShardLease[] = [];
        for (const shard of [...new Set(shards)].sort((a, b) => a - b)) {
          const key = { electionId, shard };
          const keyString = shardKeyString(key);
          const row = this.leases.get(keyString);
          if (!(takeOver === 'any' || row === undefined || row.owner === nodeId || row.expiresAtMs <= this.now())) continue;
          const current = this.voteStore.leaseEpoch(key) ?? 0;
          const epoch = reuseEpoch && current > 0 ? current : current + 1;
          this.voteStore.setLeaseEpoch(key, epoch);
          this.leases.set(keyString, { owner: nodeId, expiresAtMs: this.now() + leaseTtlMs });
          onGranted(key, epoch);
          acquired.push({ shard, epoch });
        }
        return acquired;
      },
      renew: async (electionId, held) => {
        const renewed: HeldShardLease[] = [];
        for (const lease of held) {
          const key = { electionId, shard: lease.shard };
          const row = this.leases.get(shardKeyString(key));
          if (row?.owner !== nodeId || this.voteStore.leaseEpoch(key) !== lease.epoch) continue;
          row.expiresAtMs = this.now() + leaseTtlMs;
          renewed.push(lease);
        }
        return renewed;
      },
      release: async (electionId, held) => {
        for (const lease of held) {
          const key = { electionId, shard: lease.shard };
          const row = this.leases.get(shardKeyString(key));
          if (row?.owner === nodeId && this.voteStore.leaseEpoch(key) === lease.epoch) row.expiresAtMs = this.now();
        }
      },
      handOver: async (electionId, lease, toNodeId) => {
        const key = { electionId, shard: lease.shard };
        const keyString = shardKeyString(key);
        const row = this.leases.get(keyString);
        if (row?.owner !== nodeId || this.voteStore.leaseEpoch(key) !== lease.epoch) return null;
        const epoch = reuseEpoch ? lease.epoch : lease.epoch + 1;
        this.voteStore.setLeaseEpoch(key, epoch);
        this.leases.set(keyString, { owner: toNodeId, expiresAtMs: this.now() + leaseTtlMs });
        onHandedOver?.(key, epoch, toNodeId);
        return epoch;
      },
    };
  }
}
