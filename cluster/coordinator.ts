// The coordinator: one node at a time (the holder of the coordinator lease, see membership.ts)
// declares silent members dead, carries out operators' requests (move, drain, balance) and
// writes the shard map (allocation.ts). Like Akka's ShardCoordinator it decides, and never hosts
// or moves a shard itself: owners read the map and act (shardHost.ts). Every write re-checks the
// lease in its own transaction, so a coordinator that lost the lease while paused writes nothing.
//
// One round (every heartbeat of the coordinator):
//   1. members silent for deadAfterMs → dead
//   2. pending operations start: a move pins the shard to its target; a drain marks the node
//      draining; an undrain clears that (and fails the node's drain still running); a balance
//      turns on rule 3 of the allocation until it proposes nothing
//   3. the allocation's changes (and the moves), then the replica sets (placeReplicas), are
//      written as one new map version; members silent past their self-fence receive nothing
//      and hold balancing still (allocation.ts: a failure is likely under way)
//   4. running operations record their progress, and end done (or failed: its target died)
import { allocateShards, placeReplicas, shardKeyOf } from './allocation.ts';
import type { ClusterOperation, ClusterStore, ClusterView, ShardAssignment } from './ports.ts';

export interface CoordinatorOptions {
  readonly store: ClusterStore;
  readonly nodeId: string;
  readonly deadAfterMs: number;
  /** A live member silent this long has fenced itself (membership.ts selfFenceAfterMs): allocation.ts's `silent`. */
  readonly silentAfterMs: number;
  /** Hand-offs of live shards under way at once, cluster-wide. */
  readonly movesInFlightMax: number;
  /** Balance on join and leave without being asked (LIVEVOTE_AUTO_BALANCE). */
  readonly autoBalance: boolean;
  readonly log: { info(obj: object, msg: string): void; warn(obj: object, msg: string): void };
  /** Warm replicas per shard (LIVEVOTE_REPLICAS); 0 places none. */
  readonly replicasPerShard?: number;
  /** False while silence is no evidence of death (Membership.mayDeclareDeaths); default true. */
  readonly mayDeclareDeaths?: () => boolean;
  /** The map changed: tell the other nodes now rather than at their next heartbeat. */
  readonly onMapWritten?: (version: number, assignments: readonly ShardAssignment[]) => void;
}

/** Shards whose lease is still with a live member other than the owner the map names. */
function handOffsUnderWay(view: ClusterView): number {
  const alive = new Set(view.nodes.filter((n) => n.status === 'alive').map((n) => n.nodeId));
  let count = 0;
  for (const row of view.shards) {
    const leaseLive = row.leaseNodeId !== null && row.leaseExpiresAtMs > view.readAtMs;
    if (leaseLive && row.leaseNodeId !== row.ownerNodeId && alive.has(row.leaseNodeId!) && alive.has(row.ownerNodeId)) count++;
  }
  return count;
}

/**
 * The owner changes plus every shard whose replica set changes as a result (or was short): each
 * written row carries its replicas, and a replica-only change keeps the row's owner and pin.
 */
function withReplicas(view: ClusterView, ownerChanges: readonly ShardAssignment[], replicasPerShard: number, replicaMovesMax: number, silent: ReadonlySet<string>): ShardAssignment[] {
  const byKey = new Map(ownerChanges.map((a) => [shardKeyOf(a.electionId, a.shard), a]));
  const rows = view.shards.map((row) => ({
    electionId: row.electionId, shard: row.shard, pinned: row.pinned, replicaNodeIds: row.replicaNodeIds,
    ownerNodeId: byKey.get(shardKeyOf(row.electionId, row.shard))?.ownerNodeId ?? row.ownerNodeId,
  }));
  const known = new Set(rows.map((r) => shardKeyOf(r.electionId, r.shard)));
  for (const a of ownerChanges) {
    if (!known.has(shardKeyOf(a.electionId, a.shard))) rows.push({ electionId: a.electionId, shard: a.shard, pinned: a.pinned ?? false, replicaNodeIds: [], ownerNodeId: a.ownerNodeId });
  }
  const placed = placeReplicas({ members: view.nodes, shards: rows, replicasPerShard, movesMax: replicaMovesMax, silent });
  const rowByKey = new Map(rows.map((r) => [shardKeyOf(r.electionId, r.shard), r]));
  const out = new Map(ownerChanges.map((a) => [shardKeyOf(a.electionId, a.shard), { ...a }] as [string, ShardAssignment]));
  for (const p of placed) {
    const key = shardKeyOf(p.electionId, p.shard);
    const change = out.get(key);
    if (change !== undefined) out.set(key, { ...change, replicaNodeIds: p.replicaNodeIds });
    else {
      const row = rowByKey.get(key)!;
      out.set(key, { electionId: p.electionId, shard: p.shard, ownerNodeId: row.ownerNodeId, pinned: row.pinned, replicaNodeIds: p.replicaNodeIds });
    }
  }
  return [...out.values()];
}

export function createCoordinator(options: CoordinatorOptions): { round(): Promise<void> } {
  const { store, nodeId, log } = options;

  const update = (op: ClusterOperation, patch: Parameters<ClusterStore['updateOperation']>[2]) => store.updateOperation(nodeId, op.operationId, patch);

  return {
    async round() {
      const dead = options.mayDeclareDeaths?.() === false ? [] : await store.declareSilentNodesDead(nodeId, options.deadAfterMs);
      if (dead === null) return;
      if (dead.length > 0) log.warn({ nodes: dead, deadAfterMs: options.deadAfterMs }, 'members declared dead after silence; their shards go to the survivors');
      let view = await store.readView();
      const member = (id: string) => view.nodes.find((n) => n.nodeId === id);
      const isReceiver = (id: string) => member(id)?.status === 'alive' && !member(id)?.draining;

      // 2. Start what operators asked for.
      const moves: ShardAssignment[] = [];
      let balanceAsked = false;
      /** Operations this round already ended (an undrain ends its node's drain): no progress for them below. */
      const ended = new Set<number>();
      for (const op of view.operations) {
        const request = op.request;
        if (ended.has(op.operationId)) continue;
        if (request.kind === 'balance') {
          balanceAsked = true;
          if (op.status === 'pending') await update(op, { status: 'running' });
          continue;
        }
        if (op.status === 'running' && request.kind === 'move') {
          // Started, but the map no longer names its target (its map write was lost with the
          // coordinator lease, or a drain took the shard away): pin it again, or end it.
          const row = view.shards.find((s) => s.electionId === request.electionId && s.shard === request.shard);
          if (row === undefined) {
            await update(op, { status: 'failed', error: 'the shard is no longer in the map' });
            ended.add(op.operationId);
          } else if (row.ownerNodeId !== request.toNodeId) {
            if (isReceiver(request.toNodeId)) moves.push({ electionId: request.electionId, shard: request.shard, ownerNodeId: request.toNodeId, pinned: true });
            else {
              await update(op, { status: 'failed', error: `node ${request.toNodeId} is not alive, or is draining` });
              ended.add(op.operationId);
            }
          }
          continue;
        }
        if (op.status !== 'pending') continue;
        if (request.kind === 'move') {
          const row = view.shards.find((s) => s.electionId === request.electionId && s.shard === request.shard);
          if (row === undefined) await update(op, { status: 'failed', error: 'the shard is no longer in the map' });
          else if (!isReceiver(request.toNodeId)) await update(op, { status: 'failed', error: `node ${request.toNodeId} is not alive, or is draining` });
          else {
            moves.push({ electionId: request.electionId, shard: request.shard, ownerNodeId: request.toNodeId, pinned: true });
            await update(op, { status: 'running', shardsTotal: 1 });
          }
        } else if (request.kind === 'drain') {
          if (member(request.nodeId)?.status !== 'alive') {
            await update(op, { status: 'failed', error: `node ${request.nodeId} is not alive` });
            continue;
          }
          await store.setDraining(nodeId, request.nodeId, true);
          await update(op, { status: 'running', shardsTotal: view.shards.filter((s) => s.ownerNodeId === request.nodeId).length });
        } else if (request.kind === 'undrain') {
          if (member(request.nodeId)?.status !== 'alive') {
            await update(op, { status: 'failed', error: `node ${request.nodeId} is not alive` });
            continue;
          }
          await store.setDraining(nodeId, request.nodeId, false);
          for (const drain of view.operations) {
            if (drain.request.kind !== 'drain' || drain.request.nodeId !== request.nodeId || ended.has(drain.operationId)) continue;
            if (drain.operationId > op.operationId) continue; // asked after the undrain: it starts on its own
            await update(drain, { status: 'failed', error: `ended by undrain (operation ${op.operationId}) before every shard had moved` });
            ended.add(drain.operationId);
          }
          await update(op, { status: 'done' });
          ended.add(op.operationId);
        }
      }
      if (moves.length > 0 || view.operations.some((op) => (op.request.kind === 'drain' || op.request.kind === 'undrain') && op.status === 'pending')) view = await store.readView();

      // 3. The map.
      const owners = new Map<string, string>();
      const pinned = new Set<string>();
      const replicas = new Map<string, readonly string[]>();
      for (const row of view.shards) {
        owners.set(shardKeyOf(row.electionId, row.shard), row.ownerNodeId);
        if (row.pinned) pinned.add(shardKeyOf(row.electionId, row.shard));
        if (row.replicaNodeIds.length > 0) replicas.set(shardKeyOf(row.electionId, row.shard), row.replicaNodeIds);
      }
      for (const move of moves) {
        owners.set(shardKeyOf(move.electionId, move.shard), move.ownerNodeId);
        pinned.add(shardKeyOf(move.electionId, move.shard));
      }
      const underWay = handOffsUnderWay(view);
      const silent = new Set(view.nodes.filter((n) => n.status === 'alive' && view.readAtMs - n.lastHeartbeatAtMs > options.silentAfterMs).map((n) => n.nodeId));
      const allocated = allocateShards({
        members: view.nodes,
        elections: view.elections,
        owners,
        pinned,
        movesMax: Math.max(0, options.movesInFlightMax - underWay - moves.length),
        rebalance: options.autoBalance || balanceAsked,
        replicas,
        silent,
      });
      const assignments = withReplicas(view, [...moves.filter((m) => !allocated.some((a) => a.electionId === m.electionId && a.shard === m.shard)), ...allocated], options.replicasPerShard ?? 0,
        // Replicas move only to balance, as shards do (a move costs the new replica a catch-up, no vote waits on it).
        options.autoBalance || balanceAsked ? options.movesInFlightMax : 0, silent);
      if (assignments.length > 0) {
        const version = await store.assignShards(nodeId, assignments);
        if (version === null) return;
        log.info({
          version, assigned: assignments.length, moves: moves.map((m) => `${m.electionId}/${m.shard}→${m.ownerNodeId}`), handOffsUnderWay: underWay,
          ...(silent.size > 0 ? { silent: [...silent] } : {}), writtenAtMs: Date.now(),
        }, 'shard map written');
        options.onMapWritten?.(version, assignments);
      }

      // 4. Progress, as of this round's view (what was just written shows next round).
      for (const op of view.operations) {
        if (op.status !== 'running' || ended.has(op.operationId)) continue;
        const request = op.request;
        if (request.kind === 'move') {
          const row = view.shards.find((s) => s.electionId === request.electionId && s.shard === request.shard);
          if (member(request.toNodeId)?.status !== 'alive') await update(op, { status: 'failed', error: `node ${request.toNodeId} died during the move` });
          else if (row?.ownerNodeId === request.toNodeId && row.leaseNodeId === request.toNodeId) await update(op, { status: 'done', shardsMoved: 1 });
        } else if (request.kind === 'drain') {
          if (member(request.nodeId)?.status !== 'alive') {
            await update(op, { status: 'failed', error: `node ${request.nodeId} stopped before it was drained` });
            continue;
          }
          // A node that joins again (a new process with its id) starts undrained: the map gives it
          // shards again, and this drain would wait for good (found by the property harness).
          if (!member(request.nodeId)?.draining) {
            await update(op, { status: 'failed', error: `node ${request.nodeId} restarted before it was drained; drain it again` });
            continue;
          }
          const left = view.shards.filter((s) => s.ownerNodeId === request.nodeId || (s.leaseNodeId === request.nodeId && s.leaseExpiresAtMs > view.readAtMs)).length;
          const moved = Math.max(0, op.shardsTotal - left);
          if (left === 0) await update(op, { status: 'done', shardsMoved: op.shardsTotal });
          // Every other node is draining too (or gone): its shards have nowhere to go; say so
          // rather than run for good (an undrain, then a new drain, picks it up again).
          else if (!view.nodes.some((n) => n.nodeId !== request.nodeId && isReceiver(n.nodeId))) {
            await update(op, { status: 'failed', shardsMoved: moved, error: `no live node that is not draining can take the shards of ${request.nodeId}` });
          }
          else if (moved !== op.shardsMoved) await update(op, { status: 'running', shardsMoved: moved });
        } else if (request.kind === 'balance') {
          if (allocated.length === 0 && underWay === 0 && silent.size === 0) await update(op, { status: 'done' });
        }
      }
    },
  };
}
