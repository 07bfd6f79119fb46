// The coordinator: one node at a time (the holder of the coordinator lease, see membership.ts)
// declares silent members dead and writes the shard map (allocation.ts). Like Akka's
// ShardCoordinator it decides, and never hosts or moves a shard itself: owners read the map and
// act (shardHost.ts). Every write re-checks the lease in its own transaction, so a coordinator
// that lost the lease while paused writes nothing.
import { allocateShards, shardKeyOf } from './allocation.ts';
import type { ClusterStore, ShardAssignment } from './ports.ts';

export interface CoordinatorOptions {
  readonly store: ClusterStore;
  readonly nodeId: string;
  readonly deadAfterMs: number;
  /** Hand-offs of live shards under way at once, cluster-wide. */
  readonly movesInFlightMax: number;
  readonly log: { info(obj: object, msg: string): void; warn(obj: object, msg: string): void };
  /** The map changed: tell the other nodes now rather than at their next heartbeat. */
  readonly onMapWritten?: (version: number, assignments: readonly ShardAssignment[]) => void;
}

export function createCoordinator(options: CoordinatorOptions): { round(): Promise<void> } {
  const { store, nodeId, log } = options;
  return {
    async round() {
      const dead = await store.declareSilentNodesDead(nodeId, options.deadAfterMs);
      if (dead === null) return;
      if (dead.length > 0) log.warn({ nodes: dead, deadAfterMs: options.deadAfterMs }, 'members declared dead after silence; their shards go to the survivors');
      const view = await store.readView();
      const alive = new Set(view.nodes.filter((n) => n.status === 'alive').map((n) => n.nodeId));
      const owners = new Map<string, string>();
      let handOffsUnderWay = 0;
      for (const row of view.shards) {
        owners.set(shardKeyOf(row.electionId, row.shard), row.ownerNodeId);
        // A live shard on its way: the map names the new owner, the old one still holds the lease.
        const leaseLive = row.leaseNodeId !== null && row.leaseExpiresAtMs > view.readAtMs;
        if (leaseLive && row.leaseNodeId !== row.ownerNodeId && alive.has(row.leaseNodeId!) && alive.has(row.ownerNodeId)) handOffsUnderWay++;
      }
      const assignments = allocateShards({
        members: view.nodes,
        elections: view.elections,
        owners,
        movesMax: Math.max(0, options.movesInFlightMax - handOffsUnderWay),
      });
      if (assignments.length === 0) return;
      const version = await store.assignShards(nodeId, assignments);
      if (version === null) return;
      log.info({ version, assigned: assignments.length, handOffsUnderWay }, 'shard map written');
      options.onMapWritten?.(version, assignments);
    },
  };
}
