import { describe, expect, it } from 'vitest';
import fc from 'fast-check';
import { PagedBitmap, bitmapPageBytesDefault } from './bitmap.ts';

describe('PagedBitmap', () => {
  it('sets, tests and clears single bits', () => {
    const bitmap = new PagedBitmap();
    expect(bitmap.has(7)).toBe(false);
    expect(bitmap.set(7)).toBe(true);
    expect(bitmap.set(7)).toBe(false);
    expect(bitmap.has(7)).toBe(true);
    expect(bitmap.has(6)).toBe(false);
    expect(bitmap.count()).toBe(1);
    expect(bitmap.clear(7)).toBe(true);
    expect(bitmap.clear(7)).toBe(false);
    expect(bitmap.count()).toBe(0);
  });

  it('allocates pages lazily, only where bits are set', () => {
    const bitmap = new PagedBitmap();
    expect(bitmap.byteLength()).toBe(0);
    bitmap.set(0);
    expect(bitmap.byteLength()).toBe(bitmapPageBytesDefault);
    bitmap.set(10 * bitmapPageBytesDefault * 8 + 3);
    expect(bitmap.byteLength()).toBe(2 * bitmapPageBytesDefault);
    expect(bitmap.has(5 * bitmapPageBytesDefault * 8)).toBe(false);
  });

  it('300M voters over 8 shards cost about 37.5 MB in total, never 2x', () => {
    const votersTotal = 300_000_000;
    const shardCount = 8;
    let bytesTotal = 0;
    // One shard filled densely is enough to measure; the other seven cost the same.
    const slotsPerShard = Math.ceil(votersTotal / shardCount);
    const bitmap = new PagedBitmap();
    for (let slot = 0; slot < slotsPerShard; slot += 4096) bitmap.set(slot);
    bitmap.set(slotsPerShard - 1);
    bytesTotal = bitmap.byteLength() * shardCount;
    const idealBytes = votersTotal / 8;
    expect(bytesTotal).toBeGreaterThanOrEqual(idealBytes);
    // At most one partly used page per shard on top of the ideal.
    expect(bytesTotal).toBeLessThanOrEqual(idealBytes + shardCount * bitmapPageBytesDefault);
    expect(bytesTotal / 1e6).toBeLessThan(38);
  });

  it('handles slots above 2^31 (unsigned shifts)', () => {
    const bitmap = new PagedBitmap(8);
    const slot = 2 ** 31 + 5;
    bitmap.set(slot);
    expect(bitmap.has(slot)).toBe(true);
    expect(bitmap.has(slot - 1)).toBe(false);
    expect(bitmap.has(5)).toBe(false);
  });

  it('rejects bad slots and page sizes', () => {
    const bitmap = new PagedBitmap();
    expect(() => bitmap.set(-1)).toThrow();
    expect(() => bitmap.set(1.5)).toThrow();
    expect(() => bitmap.has(2 ** 32)).toThrow();
    expect(() => new PagedBitmap(1000)).toThrow();
  });

  it('exports the documented layout: bit slot%8 of byte floor(slot/8)', () => {
    const bitmap = new PagedBitmap(4);
    bitmap.set(0);
    bitmap.set(9);
    bitmap.set(33);
    const bytes = bitmap.exportBytes();
    expect(bitmap.voterSlots()).toBe(34);
    expect(Array.from(bytes)).toEqual([0b1, 0b10, 0, 0, 0b10]);
  });

  it('export is a copy', () => {
    const bitmap = new PagedBitmap();
    bitmap.set(3);
    const bytes = bitmap.exportBytes();
    bitmap.set(4);
    bytes[0] = 0;
    expect(bitmap.has(3)).toBe(true);
    expect(bytes[0]).toBe(0);
  });

  it('import refuses bits beyond the declared slots', () => {
    expect(() => PagedBitmap.importBytes(new Uint8Array([0b1000_0000]), 4)).toThrow();
    expect(() => PagedBitmap.importBytes(new Uint8Array([1]), 9)).toThrow();
  });

  it('round-trips through export/import and matches a Set model', () => {
    fc.assert(
      fc.property(
        fc.constantFrom(1, 2, 8, 64),
        fc.array(fc.tuple(fc.boolean(), fc.nat(3000)), { maxLength: 200 }),
        (pageBytes, operations) => {
          const bitmap = new PagedBitmap(pageBytes);
          const model = new Set<number>();
          for (const [isSet, slot] of operations) {
            if (isSet) {
              expect(bitmap.set(slot)).toBe(!model.has(slot));
              model.add(slot);
            } else {
              expect(bitmap.clear(slot)).toBe(model.has(slot));
              model.delete(slot);
            }
          }
          expect(bitmap.count()).toBe(model.size);
          const imported = PagedBitmap.importBytes(bitmap.exportBytes(), bitmap.voterSlots(), pageBytes);
          expect(imported.count()).toBe(model.size);
          expect(imported.voterSlots()).toBe(bitmap.voterSlots());
          const mismatches: number[] = [];
          for (let slot = 0; slot < 3002; slot++) if (imported.has(slot) !== model.has(slot)) mismatches.push(slot);
          expect(mismatches).toEqual([]);
          expect(imported.byteLength()).toBeLessThanOrEqual(bitmap.byteLength());
        },
      ),
      { numRuns: 100 },
    );
  });
});
