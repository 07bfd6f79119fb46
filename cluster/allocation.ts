// Shard allocation, a pure function: given the live members, the elections whose shards must be
// owned and the current map, which rows of the map change. The coordinator (coordinator.ts) runs
// it every tick and writes what it returns.
//
// Rules, in order:
//   1. Every shard whose owner is not alive (dead, left, unknown) or that has no owner goes to
//      the live member with the fewest shards; ties go to the member whose AZ holds the fewest
//      shards of that election, then to the member holding the fewest of that election, then
//      to the smaller node id (deterministic: every coordinator computes the same map).
//   2. Then, while the most loaded member holds more than one shard above the least loaded, one
//      shard moves from the first to the second, at most `movesMax` per tick: a joining node
//      receives shards, and moves of live shards (a hand-off: the old owner drains and releases
//      first) stay few at a time.
import type { AllocatedElection, MemberRecord, ShardAssignment } from './ports.ts';

export interface AllocationInput {
  readonly members: readonly Pick<MemberRecord, 'nodeId' | 'az' | 'status'>[];
  readonly elections: readonly AllocatedElection[];
  /** Current owner by `${electionId}/${shard}`. */
  readonly owners: ReadonlyMap<string, string>;
  /** Moves of shards whose owner is alive, per call. */
  readonly movesMax: number;
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
    const target = [...loads.values()].sort(better(electionId))[0]!;
    add(target, electionId, 1);
    assignments.push({ electionId, shard, ownerNodeId: target.nodeId });
  }

  for (let moves = 0; moves < input.movesMax; moves++) {
    const sorted = [...loads.values()].sort((a, b) => a.total - b.total || (a.nodeId < b.nodeId ? -1 : 1));
    const least = sorted[0]!;
    const most = sorted[sorted.length - 1]!;
    if (most.total - least.total <= 1) break;
    const candidates = owned.get(most.nodeId) ?? [];
    if (candidates.length === 0) break;
    // The shard of the election the receiver holds least of: keeps each election spread.
    let pick = 0;
    for (let i = 1; i < candidates.length; i++) {
      const a = least.byElection.get(candidates[i]!.electionId) ?? 0;
      const b = least.byElection.get(candidates[pick]!.electionId) ?? 0;
      if (a < b) pick = i;
    }
    const [moved] = candidates.splice(pick, 1);
    add(most, moved!.electionId, -1);
    add(least, moved!.electionId, 1);
    assignments.push({ electionId: moved!.electionId, shard: moved!.shard, ownerNodeId: least.nodeId });
  }
  return assignments;
}
