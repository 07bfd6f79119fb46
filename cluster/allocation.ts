// Shard allocation, a pure function: given the live members, the elections whose shards must be
// owned and the current map, which rows of the map change. The coordinator (coordinator.ts) runs
// it every tick and writes what it returns.
//
// Rules, in order:
//   1. Every shard whose owner is not alive (dead, left, unknown) or that has no owner goes to
//      the live member with the fewest shards, draining members last; ties go to the member
//      whose AZ holds the fewest shards of that election, then to the member holding the fewest
//      of that election, then to the smaller node id (every coordinator computes the same map).
//      These moves are not limited: nobody serves those shards.
//   2. Shards of draining members move to the others, within `movesMax` per call.
//   3. With `rebalance`, while the most loaded (non-draining) member holds more than one shard
//      above the least loaded, one shard that no operator pinned moves from the first to the
//      second, within what is left of `movesMax`: a joining node receives shards. The one-shard
//      slack is the hysteresis: a balanced map proposes no move, so it cannot flap.
// Moves of live shards are hand-offs (the old owner drains and releases first), so `movesMax`
// (what is left of LIVEVOTE_MOVES_IN_FLIGHT_MAX) bounds them: a move storm cannot happen.
import type { AllocatedElection, MemberRecord, ShardAssignment } from './ports.ts';

export interface AllocationInput {
  readonly members: readonly (Pick<MemberRecord, 'nodeId' | 'az' | 'status'> & { readonly draining?: boolean })[];
  readonly elections: readonly AllocatedElection[];
  /** Current owner by `${electionId}/${shard}`. */
  readonly owners: ReadonlyMap<string, string>;
  /** Shards an operator placed (`${electionId}/${shard}`): rule 3 leaves them where they are. */
  readonly pinned?: ReadonlySet<string>;
  /** Moves of shards whose owner is alive, per call. */
  readonly movesMax: number;
  /** Rule 3 (automatic balancing, or an operator's balance). Default true. */
  readonly rebalance?: boolean;
}

export function shardKeyOf(electionId: string, shard: number): string {
  return `${electionId}/${shard}`;
}

interface Load {
  readonly nodeId: string;
  readonly az: string;
  total: number;
  readonly byElection: Map<string, number>;
}

export function allocateShards(input: AllocationInput): ShardAssignment[] {
  const alive = input.members.filter((m) => m.status === 'alive').sort((a, b) => (a.nodeId < b.nodeId ? -1 : a.nodeId > b.nodeId ? 1 : 0));
  if (alive.length === 0) return [];
  const loads = new Map<string, Load>(alive.map((m) => [m.nodeId, { nodeId: m.nodeId, az: m.az, total: 0, byElection: new Map() }]));
  const draining = new Set(alive.filter((m) => m.draining).map((m) => m.nodeId));
  // Receivers: the members not draining; when every live member drains, they still must own.
  const receivers = () => {
    const open = [...loads.values()].filter((l) => !draining.has(l.nodeId));
    return open.length > 0 ? open : [...loads.values()];
  };
  const azByElection = new Map<string, Map<string, number>>();
  const add = (load: Load, electionId: string, delta: number) => {
    load.total += delta;
    load.byElection.set(electionId, (load.byElection.get(electionId) ?? 0) + delta);
    let azs = azByElection.get(electionId);
    if (!azs) azByElection.set(electionId, (azs = new Map()));
    azs.set(load.az, (azs.get(load.az) ?? 0) + delta);
  };

  const unowned: { electionId: string; shard: number }[] = [];
  const owned = new Map<string, { electionId: string; shard: number }[]>();
  for (const election of input.elections) {
    for (let shard = 0; shard < election.shardCount; shard++) {
      const owner = input.owners.get(shardKeyOf(election.electionId, shard));
      const load = owner === undefined ? undefined : loads.get(owner);
      if (load === undefined) {
        unowned.push({ electionId: election.electionId, shard });
        continue;
      }
      add(load, election.electionId, 1);
      let list = owned.get(load.nodeId);
      if (!list) owned.set(load.nodeId, (list = []));
      list.push({ electionId: election.electionId, shard });
    }
  }

  const better = (electionId: string) => (a: Load, b: Load): number => {
    if (a.total !== b.total) return a.total - b.total;
    const azs = azByElection.get(electionId);
    const azA = azs?.get(a.az) ?? 0;
    const azB = azs?.get(b.az) ?? 0;
    if (azA !== azB) return azA - azB;
    const eA = a.byElection.get(electionId) ?? 0;
    const eB = b.byElection.get(electionId) ?? 0;
    if (eA !== eB) return eA - eB;
    return a.nodeId < b.nodeId ? -1 : a.nodeId > b.nodeId ? 1 : 0;
  };

  const assignments: ShardAssignment[] = [];
  for (const { electionId, shard } of unowned) {
    const target = receivers().sort(better(electionId))[0]!;
    add(target, electionId, 1);
    assignments.push({ electionId, shard, ownerNodeId: target.nodeId });
  }

  let moves = 0;
  if (receivers().some((l) => !draining.has(l.nodeId))) {
    for (const nodeId of draining) {
      const leaving = owned.get(nodeId) ?? [];
      while (leaving.length > 0 && moves < input.movesMax) {
        const { electionId, shard } = leaving.shift()!;
        const target = receivers().sort(better(electionId))[0]!;
        add(loads.get(nodeId)!, electionId, -1);
        add(target, electionId, 1);
        assignments.push({ electionId, shard, ownerNodeId: target.nodeId });
        moves++;
      }
    }
  }

  if (input.rebalance === false) return assignments;
  for (; moves < input.movesMax; moves++) {
    const sorted = receivers().sort((a, b) => a.total - b.total || (a.nodeId < b.nodeId ? -1 : 1));
    const least = sorted[0]!;
    const most = sorted[sorted.length - 1]!;
    if (most.total - least.total <= 1) break;
    const candidates = (owned.get(most.nodeId) ?? []).filter((c) => !input.pinned?.has(shardKeyOf(c.electionId, c.shard)));
    if (candidates.length === 0) break;
    // The shard of the election the receiver holds least of: keeps each election spread.
    let pick = 0;
    for (let i = 1; i < candidates.length; i++) {
      const a = least.byElection.get(candidates[i]!.electionId) ?? 0;
      const b = least.byElection.get(candidates[pick]!.electionId) ?? 0;
      if (a < b) pick = i;
    }
    const moved = candidates[pick];
    const list = owned.get(most.nodeId)!;
    list.splice(list.indexOf(moved!), 1);
    add(most, moved!.electionId, -1);
    add(least, moved!.electionId, 1);
    assignments.push({ electionId: moved!.electionId, shard: moved!.shard, ownerNodeId: least.nodeId });
  }
  return assignments;
}
