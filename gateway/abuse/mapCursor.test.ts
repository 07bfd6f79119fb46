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

  it('walks past churn at the front with one iterator, so each step is O(1)', () => {
    // A fresh iterator walks every deleted entry's hole from the start (V8): counting the
    // iterators started says whether a step can cost O(holes), without timing anything.
    let iteratorsStarted = 0;
    class CountingMap extends Map<number, number> {
      override entries(): MapIterator<[number, number]> {
        iteratorsStarted++;
        return super.entries();
      }
    }
    const map = new CountingMap();
    const cursor = new MapCursor(map);
    for (let i = 0; i < 300_000; i++) map.set(i, i);
    // Delete from the front as a sweep does.
    let outOfOrder = 0;
    for (let i = 0; i < 290_000; i++) {
      const entry = cursor.peek();
      if (entry?.[0] !== i) outOfOrder++;
      map.delete(entry![0]);
    }
    expect(outOfOrder).toBe(0);
    expect(map.size).toBe(10_000);
    expect(iteratorsStarted).toBe(1);
  });
});
