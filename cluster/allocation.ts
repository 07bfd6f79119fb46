// Shard allocation, a pure function: given the live members, the elections whose shards must be
// owned and the current map, which rows of the map change. The coordinator (coordinator.ts) runs
// it every tick and writes what it returns.
//
// Rules, in order:
//   1. Every shard whose owner is not alive (dead, left, unknown) or that has no owner goes to
//      the live member with the fewest shards, draining members last; ties go to the member
//      whose AZ holds the fewest shards of that election, then to the member holding the fewest
//      of that election, then to the smaller node id (every coordinator computes the same map).
//      These moves are not limited: nobody serves those shards. A live replica of the shard
//      (placeReplicas below) is preferred over every other member: it holds the shard's state
//      warm and reads only the votes after its watermark (promotion).
//   2. Shards of draining members move to the others, within `movesMax` per call (to a replica
//      first, as in rule 1).
//   3. With `rebalance`, while the most loaded (non-draining) member holds more than one shard
//      above the least loaded, one shard that no operator pinned moves from the first to the
//      second, within what is left of `movesMax`: a joining node receives shards. The one-shard
//      slack is the hysteresis: a balanced map proposes no move, so it cannot flap.
// Moves of live shards are hand-offs (the old owner drains and releases first), so `movesMax`
// (what is left of LIVEVOTE_MOVES_IN_FLIGHT_MAX) bounds them: a move storm cannot happen.
//
// Silent members (`silent`: alive in the map, but silent past their self-fence) serve nothing
// and are most likely dying: the nodes of a lost AZ stop together but are declared dead one
// coordinator round apart, as their last heartbeats fell. A silent member receives no shard
// while a member still heard can take it, and while one is silent rule 3 proposes nothing: a
// shard handed to a dying member would stall until its death is declared, then go cold.

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
  /** Current replicas by `${electionId}/${shard}`: rules 1 and 2 promote one when it can receive. */
  readonly replicas?: ReadonlyMap<string, readonly string[]>;
  /** Members alive but silent past their self-fence (see above). */
  readonly silent?: ReadonlySet<string>;
}

/** Whether any member alive in `members` is in `silent`. */
function anySilent(members: readonly Pick<MemberRecord, 'nodeId' | 'status'>[], silent: ReadonlySet<string> | undefined): boolean {
  return silent !== undefined && silent.size > 0 && members.some((m) => m.status === 'alive' && silent.has(m.nodeId));
}

/** `candidates` without the silent ones, unless that leaves none. */
function heardFirst<T extends { readonly nodeId: string }>(candidates: T[], silent: ReadonlySet<string> | undefined): T[] {
  if (silent === undefined || silent.size === 0) return candidates;
  const heard = candidates.filter((c) => !silent.has(c.nodeId));
  return heard.length > 0 ? heard : candidates;
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
  // Receivers: the members not draining, heard ones first; when every live member drains, they still must own.
  const receivers = () => {
    const open = [...loads.values()].filter((l) => !draining.has(l.nodeId));
    return heardFirst(open.length > 0 ? open : [...loads.values()], input.silent);
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

  /** The best receiver, a replica of the shard when one can receive (promotion). */
  const targetFor = (electionId: string, shard: number): Load => {
    const open = receivers();
    const replicas = input.replicas?.get(shardKeyOf(electionId, shard));
    const warm = replicas === undefined ? [] : open.filter((l) => replicas.includes(l.nodeId) && !draining.has(l.nodeId));
    return (warm.length > 0 ? warm : open).sort(better(electionId))[0]!;
  };

  const assignments: ShardAssignment[] = [];
  for (const { electionId, shard } of unowned) {
    const target = targetFor(electionId, shard);
    add(target, electionId, 1);
    assignments.push({ electionId, shard, ownerNodeId: target.nodeId });
  }

  let moves = 0;
  if (receivers().some((l) => !draining.has(l.nodeId))) {
    for (const nodeId of draining) {
      const leaving = owned.get(nodeId) ?? [];
      while (leaving.length > 0 && moves < input.movesMax) {
        const { electionId, shard } = leaving.shift()!;
        const target = targetFor(electionId, shard);
        add(loads.get(nodeId)!, electionId, -1);
        add(target, electionId, 1);
        assignments.push({ electionId, shard, ownerNodeId: target.nodeId });
        moves++;
      }
    }
  }

  if (input.rebalance === false || anySilent(input.members, input.silent)) return assignments;
  for (; moves < input.movesMax; moves++) {
    const sorted = receivers().sort((a, b) => a.total - b.total || (a.nodeId < b.nodeId ? -1 : 1));
    const least = sorted[0]!;
    const most = sorted[sorted.length - 1]!;
    if (most.total - least.total <= 1) break;
    const candidates = (owned.get(most.nodeId) ?? []).filter((c) => !input.pinned?.has(shardKeyOf(c.electionId, c.shard)));
    if (candidates.length === 0) break;
    // The shard of the election the receiver holds least of: keeps each election spread. Among
    // those, one the receiver is a replica of: the hand-off is then warm.
    const warmOn = (c: { electionId: string; shard: number }) => (input.replicas?.get(shardKeyOf(c.electionId, c.shard))?.includes(least.nodeId) ? 0 : 1);
    let pick = 0;
    for (let i = 1; i < candidates.length; i++) {
      const a = least.byElection.get(candidates[i]!.electionId) ?? 0;
      const b = least.byElection.get(candidates[pick]!.electionId) ?? 0;
      if (a < b || (a === b && warmOn(candidates[i]!) < warmOn(candidates[pick]!))) pick = i;
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

// ---------------------------------------------------------------------------------------------
// Replica placement, also pure: which shards' replica sets change. Run after the owners are
// settled (the coordinator applies allocateShards' changes first).
//
// Rules, per shard:
//   - A replica is a live member that is not draining and not the owner; each at most once.
//   - Other AZs than the owner's first: as many replicas as there are such members (up to
//     `replicasPerShard`) sit outside the owner's AZ; the owner's AZ fills only the slots the
//     other AZs cannot (with one replica: only when no other AZ has a live member). A replica in
//     the owner's AZ is replaced as soon as another AZ can take it (a whole AZ lost must not
//     take the owner and its only replica).
//   - Stable: a replica that still obeys these rules stays (moving one costs a catch-up from
//     Postgres and leaves the shard cold meanwhile); only missing slots are filled.
//   - Filling picks, in order: a member whose AZ holds no replica of the shard yet, the member
//     holding the fewest replicas, the one owning the fewest shards, the smaller node id.
//   - Balancing, at most `movesMax` per call: while a member holds more than one replica above the
//     least loaded, one of its replicas moves to it where the rules above allow (same side of the
//     owner's AZ, an AZ not covered yet by the shard's other replicas). A joining member so
//     receives replicas, and the owners a failover promotes are spread. The one-replica slack is
//     the hysteresis: a balanced placement proposes nothing.
//   - Silent members (as for the owners above): a replica on one stays, filling picks one only
//     when no member still heard can take the slot, and no balancing move is made while one is
//     silent. A dying owner's replica moved away would leave its shard with a replica still
//     catching up when its death is declared: a cold takeover where a warm one was ready.

export interface ReplicaPlacementInput {
  readonly members: readonly (Pick<MemberRecord, 'nodeId' | 'az' | 'status'> & { readonly draining?: boolean })[];
  /** Every shard of the map with its owner (as this round leaves it) and its current replicas. */
  readonly shards: readonly { readonly electionId: string; readonly shard: number; readonly ownerNodeId: string; readonly replicaNodeIds: readonly string[] }[];
  readonly replicasPerShard: number;
  /** Replica moves made only to balance, per call (0: none). */
  readonly movesMax?: number;
  /** Members alive but silent past their self-fence (see above). */
  readonly silent?: ReadonlySet<string>;
}

export interface ReplicaPlacement {
  readonly electionId: string;
  readonly shard: number;
  readonly replicaNodeIds: readonly string[];
}

export function placeReplicas(input: ReplicaPlacementInput): ReplicaPlacement[] {
  const wanted = Math.max(0, Math.floor(input.replicasPerShard));
  const hosts = input.members
    .filter((m) => m.status === 'alive' && !m.draining)
    .sort((a, b) => (a.nodeId < b.nodeId ? -1 : a.nodeId > b.nodeId ? 1 : 0));
  const azOf = new Map(input.members.map((m) => [m.nodeId, m.az]));
  const isHost = new Set(hosts.map((h) => h.nodeId));
  const replicaLoad = new Map<string, number>(hosts.map((h) => [h.nodeId, 0]));
  const ownedLoad = new Map<string, number>();
  for (const row of input.shards) ownedLoad.set(row.ownerNodeId, (ownedLoad.get(row.ownerNodeId) ?? 0) + 1);

  // Pass 1: what each shard keeps (so the loads that filling balances are known first).
  const kept = input.shards.map((row) => {
    const ownerAz = azOf.get(row.ownerNodeId);
    const otherAzHosts = hosts.filter((h) => h.nodeId !== row.ownerNodeId && h.az !== ownerAz).length;
    const otherWanted = Math.min(wanted, otherAzHosts);
    const keep: string[] = [];
    for (const nodeId of row.replicaNodeIds) {
      if (!isHost.has(nodeId) || nodeId === row.ownerNodeId || keep.includes(nodeId)) continue;
      keep.push(nodeId);
    }
    const other = keep.filter((n) => azOf.get(n) !== ownerAz);
    const same = keep.filter((n) => azOf.get(n) === ownerAz);
    // Same-AZ replicas only in the slots other AZs cannot fill; extra ones go, last first.
    const sameAllowed = Math.max(0, wanted - otherWanted);
    const allowed = new Set([...other.slice(0, wanted), ...same.slice(0, Math.max(0, Math.min(sameAllowed, wanted - Math.min(other.length, wanted))))]);
    const result = keep.filter((n) => allowed.has(n)); // in their old order: stable
    for (const nodeId of result) replicaLoad.set(nodeId, replicaLoad.get(nodeId)! + 1);
    return { row, ownerAz, otherWanted, replicas: result };
  });

  // Pass 2: fill the missing slots.
  const changes: ReplicaPlacement[] = [];
  for (const { row, ownerAz, otherWanted, replicas } of kept) {
    while (replicas.length < wanted) {
      const otherCount = replicas.filter((n) => azOf.get(n) !== ownerAz).length;
      const candidates = heardFirst(hosts.filter(
        (h) => h.nodeId !== row.ownerNodeId && !replicas.includes(h.nodeId) && (otherCount < otherWanted ? h.az !== ownerAz : true),
      ), input.silent);
      if (candidates.length === 0) break;
      const coveredAzs = new Set(replicas.map((n) => azOf.get(n)));
      candidates.sort((a, b) => {
        const coveredA = coveredAzs.has(a.az) ? 1 : 0;
        const coveredB = coveredAzs.has(b.az) ? 1 : 0;
        if (coveredA !== coveredB) return coveredA - coveredB;
        const loadA = replicaLoad.get(a.nodeId)!;
        const loadB = replicaLoad.get(b.nodeId)!;
        if (loadA !== loadB) return loadA - loadB;
        const ownedA = ownedLoad.get(a.nodeId) ?? 0;
        const ownedB = ownedLoad.get(b.nodeId) ?? 0;
        if (ownedA !== ownedB) return ownedA - ownedB;
        return a.nodeId < b.nodeId ? -1 : 1;
      });
      const pick = candidates[0]!;
      replicas.push(pick.nodeId);
      replicaLoad.set(pick.nodeId, replicaLoad.get(pick.nodeId)! + 1);
    }
  }

  // Pass 3: balance, a few moves at a time: the most loaded pair (a member above another by more
  // than one) that has a replica it may move.
  const movableBetween = (from: string, to: string) => kept.find(({ row, ownerAz, replicas }) => {
    const at = replicas.indexOf(from);
    if (at < 0 || row.ownerNodeId === to || replicas.includes(to)) return false;
    const toAz = azOf.get(to);
    // Same side of the owner's AZ, and no second replica in one AZ where another could be used.
    if ((azOf.get(from) === ownerAz) !== (toAz === ownerAz)) return false;
    return azOf.get(from) === toAz || !replicas.some((n, i) => i !== at && azOf.get(n) === toAz);
  });
  const balanceMovesMax = anySilent(input.members, input.silent) ? 0 : (input.movesMax ?? 0);
  for (let moves = 0; moves < balanceMovesMax; moves++) {
    const byLoad = hosts.map((h) => h.nodeId).sort((a, b) => replicaLoad.get(a)! - replicaLoad.get(b)! || (a < b ? -1 : 1));
    let done = false;
    for (let i = byLoad.length - 1; i > 0 && !done; i--) {
      const from = byLoad[i]!;
      for (let j = 0; j < i && !done; j++) {
        const to = byLoad[j]!;
        if (replicaLoad.get(from)! - replicaLoad.get(to)! <= 1) break;
        const movable = movableBetween(from, to);
        if (movable === undefined) continue;
        movable.replicas[movable.replicas.indexOf(from)] = to;
        replicaLoad.set(from, replicaLoad.get(from)! - 1);
        replicaLoad.set(to, replicaLoad.get(to)! + 1);
        done = true;
      }
    }
    if (!done) break;
  }

  for (const { row, replicas } of kept) {
    const before = row.replicaNodeIds;
    if (before.length !== replicas.length || before.some((n, i) => n !== replicas[i])) {
      changes.push({ electionId: row.electionId, shard: row.shard, replicaNodeIds: replicas });
    }
  }
  return changes;
}
