import { describe, expect, it } from 'vitest';
import fc from 'fast-check';
import { allocateShards, shardKeyOf } from './allocation.ts';
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
