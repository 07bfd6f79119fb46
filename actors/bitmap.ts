// A voter bitmap allocated lazily in fixed pages.
//
// Why pages: a shard of a 300M-voter election covers 37.5M slots (4.7 MB). A growable
// contiguous buffer would double on growth and briefly hold both copies (2x); fixed pages
// never copy, so memory stays at ceil(highest slot / 8) rounded up to one page, and slots
// nobody voted from (sparse ranges) cost nothing.

/** 64 KiB pages: 524,288 slots each. Small enough that the last page wastes little. */
export const bitmapPageBytesDefault = 64 * 1024;

/** Slots are 32-bit: 2^32 slots per shard is far beyond any election (300M voters total). */
export const bitmapSlotsMax = 2 ** 32;

const popcountByte = new Uint8Array(256);
for (let i = 1; i < 256; i++) popcountByte[i] = (i & 1) + popcountByte[i >> 1]!;

export class PagedBitmap {
  readonly pageBytes: number;
  private readonly pageShift: number;
  private readonly pageSlotMask: number;
  private readonly pages: (Uint8Array | undefined)[] = [];
  private setCount = 0;
  private allocatedBytes = 0;
  private highestSlotPlusOne = 0;

  constructor(pageBytes: number = bitmapPageBytesDefault) {
    if (!Number.isInteger(pageBytes) || pageBytes < 1 || (pageBytes & (pageBytes - 1)) !== 0) {
      throw new Error(`pageBytes must be a power of two, got ${pageBytes}`);
    }
    this.pageBytes = pageBytes;
    this.pageShift = Math.log2(pageBytes * 8);
    this.pageSlotMask = pageBytes * 8 - 1;
  }

  has(slot: number): boolean {
    assertSlot(slot);
    const page = this.pages[slot >>> this.pageShift];
    if (page === undefined) return false;
    const bit = slot & this.pageSlotMask;
    return (page[bit >>> 3]! & (1 << (bit & 7))) !== 0;
  }

  /** Returns true when the bit was clear (the set changed something). */
  set(slot: number): boolean {
    assertSlot(slot);
    const pageIndex = slot >>> this.pageShift;
    let page = this.pages[pageIndex];
    if (page === undefined) {
      page = new Uint8Array(this.pageBytes);
      this.pages[pageIndex] = page;
      this.allocatedBytes += this.pageBytes;
    }
    const bit = slot & this.pageSlotMask;
    const mask = 1 << (bit & 7);
    const byte = page[bit >>> 3]!;
    if ((byte & mask) !== 0) return false;
    page[bit >>> 3] = byte | mask;
    this.setCount++;
    if (slot >= this.highestSlotPlusOne) this.highestSlotPlusOne = slot + 1;
    return true;
  }

  /** Returns true when the bit was set. Pages are never freed: clears are rare (rollbacks). */
  clear(slot: number): boolean {
    assertSlot(slot);
    const page = this.pages[slot >>> this.pageShift];
    if (page === undefined) return false;
    const bit = slot & this.pageSlotMask;
    const mask = 1 << (bit & 7);
    const byte = page[bit >>> 3]!;
    if ((byte & mask) === 0) return false;
    page[bit >>> 3] = byte & ~mask;
    this.setCount--;
    if (this.setCount < 0) throw new Error('PagedBitmap: set count went negative');
    return true;
  }

  /** Number of set bits (kept incrementally; recomputed by popcount on import). */
  count(): number {
    return this.setCount;
  }

  /** Bytes of pages allocated so far. */
  byteLength(): number {
    return this.allocatedBytes;
  }

  /**
   * Slots covered: highest slot ever set + 1. Never shrinks on clear, so an export after a
   * rollback still has room for the cleared slot (harmless zero bits).
   */
  voterSlots(): number {
    return this.highestSlotPlusOne;
  }

  /** A contiguous copy: bit `slot % 8` of byte `floor(slot / 8)`, ceil(voterSlots / 8) bytes. */
  exportBytes(): Uint8Array {
    const byteCount = Math.ceil(this.highestSlotPlusOne / 8);
    const out = new Uint8Array(byteCount);
    for (let pageIndex = 0; pageIndex < this.pages.length; pageIndex++) {
      const page = this.pages[pageIndex];
      if (page === undefined) continue;
      const start = pageIndex * this.pageBytes;
      if (start >= byteCount) break;
      const length = Math.min(this.pageBytes, byteCount - start);
      out.set(length === this.pageBytes ? page : page.subarray(0, length), start);
    }
    return out;
  }

  /**
   * Builds a bitmap from a contiguous export. Pages that are all zero stay unallocated, so a
   * sparse import stays cheap.
   */
  static importBytes(bytes: Uint8Array, voterSlots: number, pageBytes: number = bitmapPageBytesDefault): PagedBitmap {
    if (!Number.isInteger(voterSlots) || voterSlots < 0 || voterSlots > bitmapSlotsMax) {
      throw new Error(`PagedBitmap.importBytes: bad voterSlots ${voterSlots}`);
    }
    if (bytes.length < Math.ceil(voterSlots / 8)) {
      throw new Error(`PagedBitmap.importBytes: ${bytes.length} bytes cannot cover ${voterSlots} slots`);
    }
    const bitmap = new PagedBitmap(pageBytes);
    const usedBytes = Math.ceil(voterSlots / 8);
    let highestSlotPlusOne = 0;
    for (let start = 0; start < usedBytes; start += pageBytes) {
      const length = Math.min(pageBytes, usedBytes - start);
      const source = bytes.subarray(start, start + length);
      let pageCount = 0;
      let lastNonZero = -1;
      for (let i = 0; i < length; i++) {
        const byte = source[i]!;
        if (byte !== 0) {
          pageCount += popcountByte[byte]!;
          lastNonZero = i;
        }
      }
      if (pageCount === 0) continue;
      const page = new Uint8Array(pageBytes);
      page.set(source);
      bitmap.pages[start / pageBytes] = page;
      bitmap.allocatedBytes += pageBytes;
      bitmap.setCount += pageCount;
      const lastByte = source[lastNonZero]!;
      highestSlotPlusOne = (start + lastNonZero) * 8 + (32 - Math.clz32(lastByte));
    }
    if (highestSlotPlusOne > voterSlots) {
      throw new Error(`PagedBitmap.importBytes: bit set at slot ${highestSlotPlusOne - 1} beyond ${voterSlots} slots`);
    }
    bitmap.highestSlotPlusOne = voterSlots;
    return bitmap;
  }
}

function assertSlot(slot: number): void {
  if (!(Number.isInteger(slot) && slot >= 0 && slot < bitmapSlotsMax)) {
    throw new Error(`PagedBitmap: slot out of range: ${slot}`);
  }
}
