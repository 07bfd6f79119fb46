import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { resolveNodeIdentity } from './nodeIdentity.ts';
import { shardKeysOf, shardOf, slotOf, voterNumberOf } from './shardMap.ts';

describe('shard map', () => {
  it('shard = voter % shards, slot = floor(voter / shards), and back', () => {
    expect(shardOf(10, 4)).toBe(2);
    expect(slotOf(10, 4)).toBe(2);
    expect(voterNumberOf(2, 2, 4)).toBe(10);
    fc.assert(
      fc.property(fc.integer({ min: 0, max: 2 ** 40 }), fc.integer({ min: 1, max: 1024 }), (voter, shards) => {
        const shard = shardOf(voter, shards);
        expect(shard).toBeGreaterThanOrEqual(0);
        expect(shard).toBeLessThan(shards);
        expect(voterNumberOf(shard, slotOf(voter, shards), shards)).toBe(voter);
      }),
    );
  });

  it('consecutive voters fill consecutive slots of each shard (dense bitmaps)', () => {
    const slots = Array.from({ length: 12 }, (_, voter) => [shardOf(voter, 3), slotOf(voter, 3)]);
    expect(slots.filter(([shard]) => shard === 1).map(([, slot]) => slot)).toEqual([0, 1, 2, 3]);
  });

  it('refuses bad input', () => {
    expect(() => shardOf(-1, 4)).toThrow();
    expect(() => shardOf(1.5, 4)).toThrow();
    expect(() => shardOf(1, 0)).toThrow();
    expect(() => slotOf(1, 1025)).toThrow();
    expect(() => voterNumberOf(4, 0, 4)).toThrow();
    expect(shardKeysOf('e', 3)).toEqual([{ electionId: 'e', shard: 0 }, { electionId: 'e', shard: 1 }, { electionId: 'e', shard: 2 }]);
  });
});

describe('node identity', () => {
  it('uses the configured id, else hostname-pid within the config limits', () => {
    expect(resolveNodeIdentity({ nodeId: 'node-1', availabilityZone: 'az-a' })).toEqual({ nodeId: 'node-1', availabilityZone: 'az-a' });
    expect(resolveNodeIdentity({ nodeId: undefined, availabilityZone: 'local' }, 'Web_01.Example.COM', 4242)).toEqual({
      nodeId: 'web-01-example-com-4242',
      availabilityZone: 'local',
    });
    const long = resolveNodeIdentity({ nodeId: undefined, availabilityZone: 'local' }, 'x'.repeat(100), 123456);
    expect(long.nodeId.length).toBeLessThanOrEqual(40);
    expect(long.nodeId.endsWith('-123456')).toBe(true);
    expect(resolveNodeIdentity({ nodeId: undefined, availabilityZone: 'local' }, '___', 7).nodeId).toBe('node-7');
    expect(() => resolveNodeIdentity({ nodeId: 'Bad Id', availabilityZone: 'local' })).toThrow();
  });
});
