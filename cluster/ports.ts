// What the cluster roles need from the outside world, as ports: the cluster store (Postgres in
// production, persistence/clusterStore.ts; in memory for the simulation, cluster/memoryClusterStore.ts).
// Both pass cluster/clusterStoreContract.ts.

export type MemberStatus = 'alive' | 'dead' | 'left';

export interface MemberRecord {
  readonly nodeId: string;
  readonly az: string;
  /** How peers reach this node (LIVEVOTE_ADVERTISE_URL). */
  readonly url: string;
  readonly status: MemberStatus;
  readonly incarnation: number;
  readonly startedAtMs: number;
  readonly lastHeartbeatAtMs: number;
  /** Being drained: receives no shard; its shards move away a few at a time. */
  readonly draining: boolean;
}

/** One row of the shard map, with the lease that fences it (epoch 0: never leased). */
export interface ShardOwnerRecord {
  readonly electionId: string;
  readonly shard: number;
  readonly ownerNodeId: string;
  readonly mapVersion: number;
  readonly epoch: number;
  readonly leaseNodeId: string | null;
  readonly leaseExpiresAtMs: number;
  /** Placed by an operator: automatic balancing moves other shards rather than this one. */
  readonly pinned: boolean;
  /** Warm replicas (allocation.ts placeReplicas), in other AZs than the owner's when possible. */
  readonly replicaNodeIds: readonly string[];
}

/** An election whose shards must be owned: open or closed (closed ones still answer retries). */
export interface AllocatedElection {
  readonly electionId: string;
  readonly shardCount: number;
}

export interface ClusterView {
  readonly version: number;
  readonly electionsVersion: number;
  readonly coordinatorNodeId: string | null;
  readonly nodes: readonly MemberRecord[];
  readonly shards: readonly ShardOwnerRecord[];
  readonly elections: readonly AllocatedElection[];
  /** Operations pending or running, oldest first. */
  readonly operations: readonly ClusterOperation[];
  /** The store's clock when the view was read. */
  readonly readAtMs: number;
}

export interface JoinRequest {
  readonly nodeId: string;
  readonly az: string;
  readonly url: string;
  /** A hash of the cluster secrets (never the secrets): every member must have the same. */
  readonly secretsFingerprint: string;
}

export interface HeartbeatResult {
  /** False: this incarnation was declared dead (or replaced by a newer one); stop serving. */
  readonly alive: boolean;
  /** This node holds the coordinator lease until the next heartbeat is due. */
  readonly coordinator: boolean;
  readonly version: number;
  readonly electionsVersion: number;
}

export interface ShardAssignment {
  readonly electionId: string;
  readonly shard: number;
  readonly ownerNodeId: string;
  /** Placed by an operator's move (see ShardOwnerRecord.pinned). */
  readonly pinned?: boolean;
  /** The shard's replicas; undefined leaves them as they are (none for a new row). */
  readonly replicaNodeIds?: readonly string[];
}

/** What the coordinator records of an operation's progress. */
export interface ClusterOperationUpdate {
  readonly status: ClusterOperationStatus;
  readonly shardsTotal?: number;
  readonly shardsMoved?: number;
  readonly error?: string | null;
}

/** A node's secrets differ from the cluster's: it must not join. */
export class SecretsMismatchError extends Error {
  constructor(readonly nodeId: string) {
    super(
      `node ${nodeId} has other secrets than the cluster it joins (fingerprints differ): every node of one ` +
        'cluster must share LIVEVOTE_JWT_SECRET and the hashing keys (the secrets file in LIVEVOTE_DATA_DIR)',
    );
    this.name = 'SecretsMismatchError';
  }
}

export interface ClusterStore {
  /** Registers this node alive with a new incarnation; throws SecretsMismatchError. */
  join(request: JoinRequest): Promise<{ readonly incarnation: number }>;
  /**
   * Records that this incarnation is alive and, when `wantCoordinator`, takes or renews the
   * coordinator lease for `coordinatorLeaseMs` (only a live member can hold it).
   */
  heartbeat(nodeId: string, incarnation: number, options: { readonly coordinatorLeaseMs: number; readonly wantCoordinator: boolean }): Promise<HeartbeatResult>;
  readView(): Promise<ClusterView>;
  /**
   * Coordinator only (each call re-checks the lease in its transaction; null when it is not
   * held): declares dead every live member silent for `deadAfterMs`, except the coordinator.
   */
  declareSilentNodesDead(coordinatorNodeId: string, deadAfterMs: number): Promise<readonly string[] | null>;
  /** Coordinator only: writes map rows, bumping the version once; null when not coordinator. */
  assignShards(coordinatorNodeId: string, assignments: readonly ShardAssignment[]): Promise<number | null>;
  /** A node leaving on purpose (SIGTERM): its shards are reassigned without waiting for silence. */
  leave(nodeId: string, incarnation: number): Promise<void>;
  /** Records an operator's request, validated against the members and the map (ClusterOperationRefused). */
  requestOperation(request: ClusterOperationRequest): Promise<ClusterOperation>;
  listOperations(limit: number): Promise<readonly ClusterOperation[]>;
  getOperation(operationId: number): Promise<ClusterOperation | undefined>;
  /** Coordinator only: progress of an operation; false when not coordinator. */
  updateOperation(coordinatorNodeId: string, operationId: number, update: ClusterOperationUpdate): Promise<boolean>;
  /** Coordinator only: marks a member draining (or not); bumps the version. */
  setDraining(coordinatorNodeId: string, nodeId: string, draining: boolean): Promise<boolean>;
}

/** A lease this node holds on one shard: the epoch its writes carry. */
export interface HeldShardLease {
  readonly shard: number;
  readonly epoch: number;
}

/**
 * Shard leases for the shard host (Postgres: cluster/leases.ts over persistence/leases.ts).
 * `any` takes a shard whatever its lease says: only for a shard the map gave this node whose
 * lease holder is not a live member (dead, left, or this node's own earlier process).
 */
export interface ShardLeases {
  acquire(electionId: string, shards: readonly number[], takeOver: 'any' | 'expired-or-own'): Promise<readonly HeldShardLease[]>;
  /** The leases still held after renewing; a missing one was taken by another node. */
  renew(electionId: string, leases: readonly HeldShardLease[]): Promise<readonly HeldShardLease[]>;
  release(electionId: string, leases: readonly HeldShardLease[]): Promise<void>;
  /**
   * Gives a held lease to `toNodeId` under epoch + 1 (a hand-off without the next owner's own
   * acquisition); resolves the new epoch, or null when it was not held under `lease.epoch`.
   */
  handOver(electionId: string, lease: HeldShardLease, toNodeId: string): Promise<number | null>;
}

// ---------------------------------------------------------------------------------------------
// Operations (issue 13): what an operator asks of the cluster. Any node accepts the request (API
// or CLI) and records it in the store; the coordinator carries it out through the shard map, a
// few hand-offs at a time (LIVEVOTE_MOVES_IN_FLIGHT_MAX), and records its progress.

export type ClusterOperationKind = 'move' | 'drain' | 'undrain' | 'balance';
export type ClusterOperationStatus = 'pending' | 'running' | 'done' | 'failed';

export type ClusterOperationRequest =
  | { readonly kind: 'move'; readonly electionId: string; readonly shard: number; readonly toNodeId: string }
  | { readonly kind: 'drain'; readonly nodeId: string }
  /** Ends a drain: the node receives shards again (balancing brings them back); a running drain of it fails. */
  | { readonly kind: 'undrain'; readonly nodeId: string }
  | { readonly kind: 'balance' };

export interface ClusterOperation {
  readonly operationId: number;
  readonly request: ClusterOperationRequest;
  readonly status: ClusterOperationStatus;
  /** Shards this operation moves (known once it runs), and how many have arrived. */
  readonly shardsTotal: number;
  readonly shardsMoved: number;
  readonly requestedAtMs: number;
  readonly finishedAtMs: number | null;
  /** Why it failed (the node is gone, the shard does not exist, ...). */
  readonly error: string | null;
}

/** Refusals of a request, before anything is recorded: the API answers them 404/409. */
export class ClusterOperationRefused extends Error {
  constructor(readonly reason: 'node_not_found' | 'node_not_alive' | 'node_not_draining' | 'shard_not_found' | 'already_there', message: string) {
    super(message);
    this.name = 'ClusterOperationRefused';
  }
}

export interface ClusterOperations {
  /** Records the request (validated against the current view) and nudges the coordinator. */
  request(request: ClusterOperationRequest): Promise<ClusterOperation>;
  /** Newest first, at most `limit`. */
  list(limit?: number): Promise<readonly ClusterOperation[]>;
  get(operationId: number): Promise<ClusterOperation | undefined>;
}
