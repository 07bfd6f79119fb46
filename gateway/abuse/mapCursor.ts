// A cursor that walks a Map round and round, a few entries per call, so idle entries can be
// swept (and, when the map is full, one evicted) in O(1) per request.
//
// Why not "delete then set to move to the back, evict from the front" (LRU by insertion
// order)? In V8 a deleted Map entry leaves a hole until the table is rehashed, and every fresh
// iterator walks the holes from the start: with a million buckets churning, looking at "the
// first entry" cost ~100 µs per vote. One long-lived iterator walks past each hole once.
export class MapCursor<K, V> {
  private iterator: MapIterator<[K, V]> | undefined;
  private current: [K, V] | undefined;

  constructor(private readonly map: Map<K, V>) {}

  /** The entry under the cursor (the map's first when starting a round); undefined if empty. */
  peek(): [K, V] | undefined {
    if (this.current && this.map.has(this.current[0])) return this.current;
    return this.advance();
  }

  /** Moves to the next entry, starting a new round at the end; undefined if the map is empty. */
  advance(): [K, V] | undefined {
    // Map iterators are live: entries added since it started are visited, deleted ones skipped.
    let step = this.iterator?.next();
    if (!step || step.done) {
      this.iterator = this.map.entries();
      step = this.iterator.next();
    }
    this.current = step.done ? undefined : step.value;
    return this.current;
  }
}
