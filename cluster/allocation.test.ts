import { describe, expect, it } from 'vitest';
import fc from 'fast-check';
import { allocateShards, placeReplicas, shardKeyOf } from './allocation.ts';
import type { MemberRecord } from './ports.ts';

type Member = Pick<MemberRecord, 'nodeId' | 'az' | 'status'>;
const e1 = '00000000-0000-4000-8000-000000000001';
const e2 = '00000000-0000-4000-8000-000000000002';

function apply(owners: Map<string, string>, assignments: ReturnType<typeof allocateShards>): Map<string, string> {
  const next = new Map(owners);
  for (const a of assignments) next.set(shardKeyOf(a.electionId, a.shard), a.ownerNodeId);
  return next;
}

function counts(owners: Map<string, string>): Map<string, number> {
  const byNode = new Map<string, number>();
  for (const node of owners.values()) byNode.set(node, (byNode.get(node) ?? 0) + 1);
  return byNode;
}

describe('allocateShards', () => {
  const three: Member[] = [
    { nodeId: 'n1', az: 'a', status: 'alive' },
    { nodeId: 'n2', az: 'b', status: 'alive' },
    { nodeId: 'n3', az: 'c', status: 'alive' },
  ];

  it('gives every shard an owner, balanced by count, each election spread over the AZs', () => {
    const owners = apply(new Map(), allocateShards({ members: three, elections: [{ electionId: e1, shardCount: 6 }, { electionId: e2, shardCount: 3 }], owners: new Map(), movesMax: 4 }));
    expect(owners.size).toBe(9);
    expect([...counts(owners).values()].sort()).toEqual([3, 3, 3]);
    const e2Owners = new Set([0, 1, 2].map((s) => owners.get(shardKeyOf(e2, s))));
    expect(e2Owners.size).toBe(3);
  });

  it('moves only the shards of a dead member, to the survivors', () => {
    const start = apply(new Map(), allocateShards({ members: three, elections: [{ electionId: e1, shardCount: 6 }], owners: new Map(), movesMax: 4 }));
    const members: Member[] = three.map((m) => (m.nodeId === 'n2' ? { ...m, status: 'dead' } : m));
    const changes = allocateShards({ members, elections: [{ electionId: e1, shardCount: 6 }], owners: start, movesMax: 4 });
    expect(changes.map((c) => start.get(shardKeyOf(c.electionId, c.shard)))).toEqual(['n2', 'n2']);
    expect(new Set(changes.map((c) => c.ownerNodeId))).toEqual(new Set(['n1', 'n3']));
  });

  it('a joining member receives shards, at most movesMax per call, until balanced', () => {
    let owners = apply(new Map(), allocateShards({ members: three.slice(0, 2), elections: [{ electionId: e1, shardCount: 12 }], owners: new Map(), movesMax: 4 }));
    const first = allocateShards({ members: three, elections: [{ electionId: e1, shardCount: 12 }], owners, movesMax: 2 });
    expect(first).toHaveLength(2);
    expect(first.every((a) => a.ownerNodeId === 'n3')).toBe(true);
    for (let i = 0; i < 5; i++) owners = apply(owners, allocateShards({ members: three, elections: [{ electionId: e1, shardCount: 12 }], owners, movesMax: 2 }));
    expect([...counts(owners).values()].sort()).toEqual([4, 4, 4]);
    expect(allocateShards({ members: three, elections: [{ electionId: e1, shardCount: 12 }], owners, movesMax: 2 })).toEqual([]);
  });

  it('a draining member receives nothing and gives its shards away, movesMax at a time', () => {
    const start = apply(new Map(), allocateShards({ members: three, elections: [{ electionId: e1, shardCount: 6 }], owners: new Map(), movesMax: 4 }));
    const members = three.map((m) => (m.nodeId === 'n1' ? { ...m, draining: true } : m));
    const first = allocateShards({ members, elections: [{ electionId: e1, shardCount: 6 }], owners: start, movesMax: 1 });
    expect(first).toHaveLength(1);
    expect(start.get(shardKeyOf(first[0]!.electionId, first[0]!.shard))).toBe('n1');
    let owners = apply(start, first);
    for (let i = 0; i < 3; i++) owners = apply(owners, allocateShards({ members, elections: [{ electionId: e1, shardCount: 6 }], owners, movesMax: 1 }));
    expect(counts(owners).get('n1')).toBeUndefined();
    expect([...counts(owners).values()].sort()).toEqual([3, 3]);
  });

  it('balancing leaves pinned shards where an operator put them, and moves nothing without rebalance', () => {
    const owners = new Map([0, 1, 2, 3].map((s) => [shardKeyOf(e1, s), 'n1'] as const));
    const pinned = new Set([shardKeyOf(e1, 0), shardKeyOf(e1, 1)]);
    const two = three.slice(0, 2);
    const changes = allocateShards({ members: two, elections: [{ electionId: e1, shardCount: 4 }], owners, pinned, movesMax: 4 });
    expect(changes.map((c) => c.shard).sort()).toEqual([2, 3]);
    expect(allocateShards({ members: two, elections: [{ electionId: e1, shardCount: 4 }], owners, movesMax: 4, rebalance: false })).toEqual([]);
  });

  it('no live member: nothing assigned', () => {
    expect(allocateShards({ members: [{ nodeId: 'n1', az: 'a', status: 'dead' }], elections: [{ electionId: e1, shardCount: 2 }], owners: new Map(), movesMax: 1 })).toEqual([]);
  });

  it('property: repeated until stable, every shard is owned by a live member and loads differ by at most one', () => {
    fc.assert(
      fc.property(
        fc.array(fc.record({ az: fc.constantFrom('a', 'b', 'c'), alive: fc.boolean() }), { minLength: 1, maxLength: 6 }),
        fc.array(fc.integer({ min: 1, max: 16 }), { minLength: 1, maxLength: 4 }),
        fc.array(fc.nat({ max: 5 }), { maxLength: 40 }),
        (nodes, shardCounts, prior) => {
          const members: Member[] = nodes.map((n, i) => ({ nodeId: `n${i}`, az: n.az, status: n.alive ? 'alive' : 'dead' }));
          const elections = shardCounts.map((shardCount, i) => ({ electionId: `e${i}`, shardCount }));
          let owners = new Map<string, string>();
          let p = 0;
          for (const e of elections) for (let s = 0; s < e.shardCount; s++) if (p < prior.length) owners.set(shardKeyOf(e.electionId, s), `n${prior[p++]}`);
          for (let round = 0; round < 200; round++) {
            const changes = allocateShards({ members, elections, owners, movesMax: 3 });
            if (changes.length === 0) break;
            owners = apply(owners, changes);
          }
          const alive = members.filter((m) => m.status === 'alive').map((m) => m.nodeId);
          if (alive.length === 0) return;
          for (const e of elections) for (let s = 0; s < e.shardCount; s++) expect(alive).toContain(owners.get(shardKeyOf(e.electionId, s)));
          const loads = alive.map((n) => [...owners.values()].filter((o) => o === n).length);
          expect(Math.max(...loads) - Math.min(...loads)).toBeLessThanOrEqual(1);
        },
      ),
      { numRuns: 300 },
    );
  });
});

describe('placeReplicas', () => {
  const nodes = (...spec: [string, string][]): Member[] => spec.map(([nodeId, az]) => ({ nodeId, az, status: 'alive' }));
  const row = (shard: number, ownerNodeId: string, replicaNodeIds: string[] = []) => ({ electionId: e1, shard, ownerNodeId, replicaNodeIds });
  const after = (rows: ReturnType<typeof row>[], changes: ReturnType<typeof placeReplicas>) =>
    rows.map((r) => ({ ...r, replicaNodeIds: [...(changes.find((c) => c.shard === r.shard)?.replicaNodeIds ?? r.replicaNodeIds)] }));

  it('places each shard\'s replica in another AZ than its owner\'s, balanced by replica count', () => {
    const members = nodes(['a1', 'a'], ['b1', 'b'], ['c1', 'c']);
    const rows = [row(0, 'a1'), row(1, 'b1'), row(2, 'c1'), row(3, 'a1'), row(4, 'b1'), row(5, 'c1')];
    const placed = after(rows, placeReplicas({ members, shards: rows, replicasPerShard: 1 }));
    const az = (n: string) => members.find((m) => m.nodeId === n)!.az;
    for (const r of placed) {
      expect(r.replicaNodeIds).toHaveLength(1);
      expect(az(r.replicaNodeIds[0]!)).not.toBe(az(r.ownerNodeId));
    }
    const load = new Map<string, number>();
    for (const r of placed) load.set(r.replicaNodeIds[0]!, (load.get(r.replicaNodeIds[0]!) ?? 0) + 1);
    expect([...load.values()].sort()).toEqual([2, 2, 2]);
  });

  it('is stable: a valid placement proposes nothing, and a lost replica is replaced without moving the others', () => {
    const members = nodes(['a1', 'a'], ['b1', 'b'], ['c1', 'c']);
    const rows = [row(0, 'a1', ['b1']), row(1, 'b1', ['c1']), row(2, 'c1', ['a1']), row(3, 'a1', ['c1'])];
    expect(placeReplicas({ members, shards: rows, replicasPerShard: 1 })).toEqual([]);
    const withDeadC = members.map((m) => (m.nodeId === 'c1' ? { ...m, status: 'dead' as const } : m));
    const changes = placeReplicas({ members: withDeadC, shards: rows.filter((r) => r.ownerNodeId !== 'c1'), replicasPerShard: 1 });
    expect(changes.map((c) => c.shard).sort()).toEqual([1, 3]);
    expect(changes.find((c) => c.shard === 1)!.replicaNodeIds).toEqual(['a1']);
    expect(changes.find((c) => c.shard === 3)!.replicaNodeIds).toEqual(['b1']);
  });

  it('falls back to the owner\'s AZ only when no other AZ has a live node, and moves back out when one appears', () => {
    const sameAz = nodes(['a1', 'a'], ['a2', 'a']);
    const rows = [row(0, 'a1')];
    expect(placeReplicas({ members: sameAz, shards: rows, replicasPerShard: 1 })).toEqual([{ electionId: e1, shard: 0, replicaNodeIds: ['a2'] }]);
    const withB = [...sameAz, ...nodes(['b1', 'b'])];
    expect(placeReplicas({ members: withB, shards: [row(0, 'a1', ['a2'])], replicasPerShard: 1 })).toEqual([{ electionId: e1, shard: 0, replicaNodeIds: ['b1'] }]);
    // Two replicas, one other AZ: the second slot may use the owner's AZ.
    expect(placeReplicas({ members: withB, shards: rows, replicasPerShard: 2 })).toEqual([{ electionId: e1, shard: 0, replicaNodeIds: ['b1', 'a2'] }]);
  });

  it('balances by replica count a few moves at a time when a member joins, keeping each replica outside its owner\'s AZ', () => {
    const members = nodes(['a1', 'a'], ['b1', 'b'], ['c1', 'c'], ['c2', 'c']);
    // c2 just joined: it owns nothing and holds no replica; b1 holds all four.
    let rows = [row(0, 'a1', ['b1']), row(1, 'a1', ['b1']), row(2, 'c1', ['b1']), row(3, 'c1', ['b1']), row(4, 'b1', ['a1']), row(5, 'b1', ['c1'])];
    const first = placeReplicas({ members, shards: rows, replicasPerShard: 1, movesMax: 1 });
    expect(first).toHaveLength(1);
    for (let i = 0; i < 10; i++) rows = after(rows, placeReplicas({ members, shards: rows, replicasPerShard: 1, movesMax: 1 }));
    expect(placeReplicas({ members, shards: rows, replicasPerShard: 1, movesMax: 1 })).toEqual([]);
    const load = new Map<string, number>();
    for (const r of rows) load.set(r.replicaNodeIds[0]!, (load.get(r.replicaNodeIds[0]!) ?? 0) + 1);
    expect(Math.max(...load.values()) - Math.min(...[...members].map((m) => load.get(m.nodeId) ?? 0))).toBeLessThanOrEqual(1);
    const az = (n: string) => members.find((m) => m.nodeId === n)!.az;
    for (const r of rows) expect(az(r.replicaNodeIds[0]!)).not.toBe(az(r.ownerNodeId));
  });

  it('balancing prefers moving a shard to a member that is its replica (a warm hand-off)', () => {
    const members: Member[] = nodes(['a1', 'a'], ['b1', 'b']);
    const owners = new Map([0, 1, 2, 3].map((s) => [shardKeyOf(e1, s), 'a1'] as const));
    const replicas = new Map([[shardKeyOf(e1, 3), ['b1']]]);
    const changes = allocateShards({ members, elections: [{ electionId: e1, shardCount: 4 }], owners, replicas, movesMax: 1 });
    expect(changes).toEqual([{ electionId: e1, shard: 3, ownerNodeId: 'b1' }]);
  });

  it('never the owner, never a draining or dead member; none when replication is off or nobody else lives', () => {
    const members: (Member & { draining?: boolean })[] = [
      { nodeId: 'a1', az: 'a', status: 'alive' }, { nodeId: 'b1', az: 'b', status: 'alive', draining: true }, { nodeId: 'c1', az: 'c', status: 'dead' },
    ];
    expect(placeReplicas({ members, shards: [row(0, 'a1', ['a1', 'b1', 'c1'])], replicasPerShard: 1 })).toEqual([{ electionId: e1, shard: 0, replicaNodeIds: [] }]);
    expect(placeReplicas({ members: nodes(['a1', 'a'], ['b1', 'b']), shards: [row(0, 'a1', ['b1'])], replicasPerShard: 0 })).toEqual([{ electionId: e1, shard: 0, replicaNodeIds: [] }]);
  });

  it('a dead owner\'s shards are promoted to their live replicas', () => {
    const members: Member[] = [{ nodeId: 'a1', az: 'a', status: 'dead' }, { nodeId: 'b1', az: 'b', status: 'alive' }, { nodeId: 'c1', az: 'c', status: 'alive' }];
    const owners = new Map([[shardKeyOf(e1, 0), 'a1'], [shardKeyOf(e1, 1), 'a1'], [shardKeyOf(e1, 2), 'a1'], [shardKeyOf(e1, 3), 'b1'], [shardKeyOf(e1, 4), 'c1']]);
    const replicas = new Map([[shardKeyOf(e1, 0), ['c1']], [shardKeyOf(e1, 1), ['c1']], [shardKeyOf(e1, 2), ['b1']]]);
    const changes = allocateShards({ members, elections: [{ electionId: e1, shardCount: 5 }], owners, replicas, movesMax: 0 });
    expect(changes.map((c) => [c.shard, c.ownerNodeId])).toEqual([[0, 'c1'], [1, 'c1'], [2, 'b1']]);
  });

  it('property: every shard ends with min(N, live others) distinct replicas, never its owner, outside its AZ when possible; a second pass proposes nothing', () => {
    fc.assert(
      fc.property(
        fc.array(fc.record({ az: fc.constantFrom('a', 'b', 'c'), alive: fc.boolean(), draining: fc.boolean() }), { minLength: 1, maxLength: 6 }),
        fc.integer({ min: 1, max: 12 }),
        fc.integer({ min: 0, max: 3 }),
        fc.array(fc.array(fc.nat({ max: 5 }), { maxLength: 3 }), { maxLength: 12 }),
        (spec, shardCount, wanted, prior) => {
          const members = spec.map((n, i) => ({ nodeId: `n${i}`, az: n.az, status: n.alive ? 'alive' as const : 'dead' as const, draining: n.draining }));
          const rows = Array.from({ length: shardCount }, (_, s) => row(s, `n${s % members.length}`, (prior[s] ?? []).map((i) => `n${i}`)));
          const placed = after(rows, placeReplicas({ members, shards: rows, replicasPerShard: wanted }));
          const hosts = members.filter((m) => m.status === 'alive' && !m.draining);
          for (const r of placed) {
            const ownerAz = members.find((m) => m.nodeId === r.ownerNodeId)!.az;
            const others = hosts.filter((h) => h.nodeId !== r.ownerNodeId);
            expect(r.replicaNodeIds).toHaveLength(Math.min(wanted, others.length));
            expect(new Set(r.replicaNodeIds).size).toBe(r.replicaNodeIds.length);
            expect(r.replicaNodeIds).not.toContain(r.ownerNodeId);
            for (const n of r.replicaNodeIds) expect(hosts.map((h) => h.nodeId)).toContain(n);
            const outside = r.replicaNodeIds.filter((n) => members.find((m) => m.nodeId === n)!.az !== ownerAz).length;
            expect(outside).toBe(Math.min(wanted, others.filter((h) => h.az !== ownerAz).length));
          }
          expect(placeReplicas({ members, shards: placed, replicasPerShard: wanted })).toEqual([]);
          // With balancing moves, repeated placement settles, and the rules above still hold.
          let balanced = placed;
          for (let round = 0; round < 50; round++) {
            const changes = placeReplicas({ members, shards: balanced, replicasPerShard: wanted, movesMax: 2 });
            if (changes.length === 0) break;
            balanced = after(balanced, changes);
          }
          expect(placeReplicas({ members, shards: balanced, replicasPerShard: wanted, movesMax: 2 })).toEqual([]);
          for (const r of balanced) {
            const ownerAz = members.find((m) => m.nodeId === r.ownerNodeId)!.az;
            const others = hosts.filter((h) => h.nodeId !== r.ownerNodeId);
            expect(r.replicaNodeIds).toHaveLength(Math.min(wanted, others.length));
            expect(new Set(r.replicaNodeIds).size).toBe(r.replicaNodeIds.length);
            expect(r.replicaNodeIds).not.toContain(r.ownerNodeId);
            const outside = r.replicaNodeIds.filter((n) => members.find((m) => m.nodeId === n)!.az !== ownerAz).length;
            expect(outside).toBe(Math.min(wanted, others.filter((h) => h.az !== ownerAz).length));
          }
        },
      ),
      { numRuns: 300 },
    );
  });
});
