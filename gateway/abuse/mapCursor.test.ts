import { describe, expect, it } from 'vitest';
import { MapCursor } from './mapCursor.ts';

describe('MapCursor', () => {
  it('walks round and round, seeing entries added and skipping entries deleted', () => {
    const map = new Map([['a', 1], ['b', 2]]);
    const cursor = new MapCursor(map);
    expect(cursor.advance()?.[0]).toBe('a');
    map.set('c', 3);
    map.delete('b');
    expect(cursor.advance()?.[0]).toBe('c');
    expect(cursor.advance()?.[0]).toBe('a');
  });

  it('peeks at the same entry until it is deleted', () => {
    const map = new Map([['a', 1], ['b', 2]]);
    const cursor = new MapCursor(map);
    expect(cursor.peek()?.[0]).toBe('a');
    expect(cursor.peek()?.[0]).toBe('a');
    map.delete('a');
    expect(cursor.peek()?.[0]).toBe('b');
  });

  it('answers undefined on an empty map and picks up entries added later', () => {
    const map = new Map<string, number>();
    const cursor = new MapCursor(map);
    expect(cursor.peek()).toBeUndefined();
    expect(cursor.advance()).toBeUndefined();
    map.set('x', 1);
    expect(cursor.peek()?.[0]).toBe('x');
  });

  it('costs O(1) per step even after heavy churn at the front', () => {
    const map = new Map<number, number>();
    const cursor = new MapCursor(map);
    for (let i = 0; i < 300_000; i++) map.set(i, i);
    const started = performance.now();
    // Delete from the front as a sweep does: a fresh iterator per step would walk every hole.
    for (let i = 0; i < 290_000; i++) {
      const entry = cursor.peek();
      map.delete(entry![0]);
    }
    expect(performance.now() - started).toBeLessThan(2000);
    expect(map.size).toBe(10_000);
  });
});
