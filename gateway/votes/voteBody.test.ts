// The vote body's hand check (the hot path) against its zod schema: whatever the hand check
// accepts, the schema accepts with the same result; what it leaves to the schema is the rest.
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { z } from 'zod';
import { checkVoteBody, voteBody } from './routes.ts';
import { isSchemaUuid } from './voteBody.ts';

const uuid = '4f1c2d3e-5a6b-4c7d-8e9f-0a1b2c3d4e5f';
const other = '0b8f4c2e-4a3b-4c1d-9e2f-1a2b3c4d5e6f';

/** Ids the schema accepts and ids it refuses, close to the edges (version, variant, case, length). */
const idLike = fc.oneof(
  fc.uuid(),
  fc.uuid().map((u) => u.toUpperCase()),
  fc.constantFrom(uuid, other, '00000000-0000-0000-0000-000000000000', 'ffffffff-ffff-ffff-ffff-ffffffffffff',
    '4f1c2d3e-5a6b-0c7d-8e9f-0a1b2c3d4e5f', '4f1c2d3e-5a6b-4c7d-7e9f-0a1b2c3d4e5f', `${uuid} `, uuid.slice(1), `${uuid}\n`, ''),
  fc.string({ maxLength: 40 }),
);
const value = fc.oneof(idLike, fc.integer(), fc.constant(null), fc.boolean(), fc.constant([uuid]), fc.constant({ id: uuid }));
const captcha = fc.oneof(fc.string({ minLength: 0, maxLength: 5 }), fc.constant('x'.repeat(4096)), fc.constant('x'.repeat(4097)), fc.integer(), fc.constant(null));

const body = fc.record(
  { electionId: value, candidateId: value, userId: value, captchaToken: captcha, extra: value, ['__proto__']: value },
  { requiredKeys: [] },
).map((r) => JSON.parse(JSON.stringify(r)) as unknown);
/** Mostly well-formed bodies with one thing off now and then: where the two could disagree. */
const mostlyValidId = fc.oneof({ weight: 6, arbitrary: fc.constantFrom(uuid, other, uuid.toUpperCase()) }, { weight: 1, arbitrary: value });
const nearValidBody = fc.record(
  { electionId: mostlyValidId, candidateId: mostlyValidId, userId: mostlyValidId, captchaToken: fc.option(captcha, { nil: undefined, freq: 2 }) },
  { requiredKeys: ['electionId', 'candidateId', 'userId'] },
).chain((r) => fc.oneof({ weight: 5, arbitrary: fc.constant(r) }, { weight: 1, arbitrary: value.map((extra) => ({ ...r, extra })) }))
  .map((r) => JSON.parse(JSON.stringify(r)) as unknown);

function schemaResult(json: unknown): unknown {
  const parsed = voteBody.safeParse(json);
  return parsed.success ? parsed.data : undefined;
}

describe('checkVoteBody', () => {
  it('accepts a well-formed body, with and without captchaToken, as the schema returns it', () => {
    const plain = { electionId: uuid, candidateId: other, userId: uuid };
    expect(checkVoteBody(plain)).toStrictEqual(schemaResult(plain));
    const withCaptcha = { ...plain, captchaToken: 'solution' };
    expect(checkVoteBody(withCaptcha)).toStrictEqual(schemaResult(withCaptcha));
  });

  it.each([
    ['an extra key', { electionId: uuid, candidateId: other, userId: uuid, extra: 1 }],
    ['a missing id', { electionId: uuid, candidateId: other }],
    ['a number for an id', { electionId: uuid, candidateId: 7, userId: uuid }],
    ['a non-uuid id', { electionId: uuid, candidateId: 'abc', userId: uuid }],
    ['an empty captchaToken', { electionId: uuid, candidateId: other, userId: uuid, captchaToken: '' }],
    ['a captchaToken too long', { electionId: uuid, candidateId: other, userId: uuid, captchaToken: 'x'.repeat(4097) }],
    ['a captchaToken of null', { electionId: uuid, candidateId: other, userId: uuid, captchaToken: null }],
    ['an array', [uuid, other, uuid]],
    ['null', null],
  ])('leaves %s to the schema', (_, json) => {
    expect(checkVoteBody(json)).toBeUndefined();
    expect(voteBody.safeParse(json).success).toBe(false);
  });

  it('never accepts what the schema refuses, and agrees with it on what it accepts', () => {
    let accepted = 0;
    fc.assert(
      fc.property(fc.oneof(body, nearValidBody), (json) => {
        const fast = checkVoteBody(json);
        if (fast !== undefined) {
          accepted++;
          expect(fast).toStrictEqual(schemaResult(json));
        }
      }),
      { numRuns: 5000 },
    );
    // The property must have been exercised on accepted bodies, not only on refusals.
    expect(accepted).toBeGreaterThan(0);
  });

  it('accepts every body the schema accepts that has no inherited oddities', () => {
    fc.assert(
      fc.property(fc.uuid(), fc.uuid(), fc.uuid(), fc.option(fc.string({ minLength: 1, maxLength: 4096 }), { nil: undefined }), (e, c, u, t) => {
        const json = JSON.parse(JSON.stringify({ electionId: e, candidateId: c, userId: u, captchaToken: t })) as unknown;
        expect(checkVoteBody(json)).toStrictEqual(schemaResult(json));
      }),
      { numRuns: 2000 },
    );
  });
});

describe('isSchemaUuid', () => {
  it("answers as zod's uuid pattern does, at every version and variant digit and in either case", () => {
    const pattern = z.regexes.uuid();
    const alphabet = [...'0123456789abcdefABCDEF-gz ', 'é'];
    const near = fc.oneof(
      idLike,
      fc.uuid().chain((u) => fc.tuple(fc.nat(35), fc.constantFrom(...alphabet), fc.boolean())
        .map(([i, ch, upper]) => (upper ? u.toUpperCase() : u).slice(0, i) + ch + u.slice(i + 1))),
      fc.constantFrom('FFFFFFFF-FFFF-FFFF-FFFF-FFFFFFFFFFFF', '00000000-0000-0000-0000-00000000000A', 'ffffffff-ffff-ffff-ffff-fffffffffffF'),
    );
    fc.assert(fc.property(near, (value) => {
      expect(isSchemaUuid(value)).toBe(pattern.test(value));
    }), { numRuns: 10000 });
  });
});
