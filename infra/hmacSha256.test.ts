// The hand-written HMAC-SHA256 against node:crypto's: texts of every length around the block
// boundaries and the short/long limit, texts outside ASCII (UTF-8 of 2, 3 and 4 bytes, lone
// surrogates), keys shorter than, as long as and longer than a block, truncated digests, and one
// keyed instance used many times over (its shared state must not leak from one text to the next).
import { createHmac } from 'node:crypto';
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { hmacSha256, hmacSha256ShortTextBytesMax } from './hmacSha256.ts';

const reference = (key: string | Uint8Array, text: string, bytes = 32) => createHmac('sha256', key).update(text, 'utf8').digest().subarray(0, bytes);
const units = fc.constantFrom('a', '0', '.', ':', '/', '\0', 'é', 'Ω', '€', '中', '😀', '\ud800', '\udfff', '\u007f', '\u0080');
const texts = fc.oneof(
  fc.string({ maxLength: 300 }),
  fc.string({ unit: units, maxLength: 120 }),
  fc.integer({ min: 0, max: 260 }).map((n) => 'x'.repeat(n)),
);
const keys = fc.oneof(
  fc.string({ minLength: 1, maxLength: 100 }),
  fc.uint8Array({ minLength: 0, maxLength: 130 }),
);

describe('hmacSha256', () => {
  it('answers as createHmac for any key and text, whole or truncated', () => {
    fc.assert(fc.property(keys, fc.array(fc.tuple(texts, fc.integer({ min: 1, max: 32 })), { minLength: 1, maxLength: 8 }), (key, calls) => {
      const keyed = hmacSha256(key);
      for (const [text, bytes] of calls) expect(keyed(text, bytes).equals(reference(key, text, bytes))).toBe(true);
    }), { numRuns: 300 });
  });

  it('is exact at every length across the block boundaries and the short-text limit', () => {
    const key = 'k'.repeat(32);
    const keyed = hmacSha256(key);
    for (let n = 0; n <= hmacSha256ShortTextBytesMax + 70; n++) {
      const ascii = 'a'.repeat(n);
      expect(keyed(ascii).equals(reference(key, ascii))).toBe(true);
      // Three-byte characters: the same length in UTF-16 units is three times the bytes.
      const wide = '€'.repeat(Math.ceil(n / 3));
      expect(keyed(wide).equals(reference(key, wide))).toBe(true);
    }
  });

  it('gives the known answer of RFC 4231 test case 2', () => {
    expect(hmacSha256('Jefe')('what do ya want for nothing?').toString('hex')).toBe('5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843');
  });

  it('refuses a digest length outside 1-32', () => {
    const keyed = hmacSha256('key');
    expect(() => keyed('text', 0)).toThrow(/1-32/);
    expect(() => keyed('text', 33)).toThrow(/1-32/);
  });
});
