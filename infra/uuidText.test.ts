// The hand checks against the regexes they replace, on uuids, their upper-case spelling, strings
// near them (one character changed, lengths around 36) and characters outside ASCII.
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { uuidPattern } from '../persistence/db.ts';
import { isLowerCaseUuidText, isUuidText } from './uuidText.ts';

const lowerCasePattern = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/;
const alphabet = [...'0123456789abcdefABCDEF-gGzZ @`/:', 'é', 'İ', '\u0000', '\u0660'];
const uuidLike = fc.oneof(
  fc.uuid(),
  fc.uuid().map((u) => u.toUpperCase()),
  fc.string({ unit: fc.constantFrom(...alphabet), minLength: 34, maxLength: 38 }),
  fc.uuid().chain((u) => fc.tuple(fc.nat(35), fc.constantFrom(...alphabet)).map(([i, ch]) => u.slice(0, i) + ch + u.slice(i + 1))),
  fc.string({ maxLength: 40 }),
);

describe('uuid text checks', () => {
  it('isUuidText answers as uuidPattern (any case) does', () => {
    fc.assert(fc.property(uuidLike, (value) => {
      expect(isUuidText(value)).toBe(uuidPattern.test(value));
    }), { numRuns: 5000 });
  });

  it('isLowerCaseUuidText answers as the lower-case pattern does', () => {
    fc.assert(fc.property(uuidLike, (value) => {
      expect(isLowerCaseUuidText(value)).toBe(lowerCasePattern.test(value));
    }), { numRuns: 5000 });
  });

  it('tells the cases apart', () => {
    const id = '4f1c2d3e-5a6b-4c7d-8e9f-0a1b2c3d4e5f';
    expect([isUuidText(id), isLowerCaseUuidText(id)]).toEqual([true, true]);
    expect([isUuidText(id.toUpperCase()), isLowerCaseUuidText(id.toUpperCase())]).toEqual([true, false]);
    expect([isUuidText(`${id}\n`), isUuidText(id.replace('-', 'x'))]).toEqual([false, false]);
  });
});
