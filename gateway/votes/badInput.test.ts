// Invariant 6 by force: 10,000 random malformed vote requests (fast-check) against the real
// gateway. Each gets a 4xx with a catalogued code, the process stays up, and no tally moves.
import fc from 'fast-check';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { errorCatalog } from '../errors.ts';
import { call, login, startAppHarness, testAdmin, type AppHarness } from '../../infra/testing/appHarness.ts';
import { createVoters, type TestVoter } from '../../infra/testing/voters.ts';

let h: AppHarness;
let voter: TestVoter;
let electionId: string;
let candidateId: string;

beforeAll(async () => {
  h = await startAppHarness();
  const admin = await login(h.baseUrl, testAdmin.email, testAdmin.password);
  [voter] = await createVoters(h.db.pool, 1, h.secrets.jwtSecret) as [TestVoter];
  const created = await call(h.baseUrl, 'POST', '/api/v1/admin/elections', { token: admin, body: { title: 'Fuzz', candidates: [{ name: 'A' }, { name: 'B' }] } });
  electionId = created.body.electionId;
  candidateId = created.body.candidates[0].candidateId;
  await call(h.baseUrl, 'POST', `/api/v1/admin/elections/${electionId}/open`, { token: admin });
});
afterAll(async () => { await h.close(); });

const valid = () => ({ electionId, candidateId, userId: voter.userId });

/** Bodies that are wrong in one or more ways: every one must be refused. */
const malformedBody = fc.oneof(
  // Not JSON at all, or truncated JSON.
  fc.string({ maxLength: 200 }).filter((s) => { try { JSON.parse(s); return false; } catch { return true; } }),
  fc.constant('').map(() => JSON.stringify(valid()).slice(0, -1)),
  // JSON of the wrong kind.
  fc.jsonValue({ maxDepth: 3 }).filter((v) => typeof v !== 'object' || v === null || Array.isArray(v)).map((v) => JSON.stringify(v)),
  // The right object with one field broken, removed or joined by an unknown one.
  fc.record({
    field: fc.constantFrom('electionId', 'candidateId', 'userId', 'captchaToken'),
    value: fc.oneof(fc.string({ maxLength: 60 }), fc.integer(), fc.boolean(), fc.constant(null), fc.array(fc.integer(), { maxLength: 3 }), fc.object({ maxDepth: 1 })),
    mode: fc.constantFrom('replace', 'remove', 'extra'),
  }).map(({ field, value, mode }) => {
    const body: Record<string, unknown> = valid();
    if (mode === 'remove') {
      if (field === 'captchaToken') body.surprise = value; else delete body[field];
    } else if (mode === 'extra') {
      body[`x_${field}`] = value;
    } else {
      // A string that happens to be a valid UUID might be legitimate: keep only invalid ones.
      body[field] = typeof value === 'string' && /^[0-9a-f-]{36}$/i.test(value) ? `${value}!` : value;
      if (field === 'captchaToken' && typeof value === 'string' && value.length > 0) body.extra = 1;
    }
    return JSON.stringify(body);
  }),
  // Oversized.
  fc.integer({ min: 5000, max: 20_000 }).map((n) => JSON.stringify({ ...valid(), captchaToken: 'x'.repeat(n) })),
);

describe('10,000 malformed vote requests', () => {
  it('each gets a 4xx with a catalogued code and nothing changes', async () => {
    const tallyBefore = (await call(h.baseUrl, 'GET', `/api/v1/results/${electionId}`)).body.totalVotes;
    const storedBefore = Number((await h.db.pool.query('SELECT count(*) FROM votes')).rows[0].count);
    const codes = new Map<string, number>();
    const send = async ([body, contentType]: [string, string]) => {
      const response = await fetch(`${h.baseUrl}/api/v1/votes`, {
        method: 'POST', body, headers: { authorization: `Bearer ${voter.token}`, 'content-type': contentType },
      });
      const text = await response.text();
      expect(response.status, body.slice(0, 120)).toBeGreaterThanOrEqual(400);
      expect(response.status, body.slice(0, 120)).toBeLessThan(500);
      const code = JSON.parse(text).error.code as string;
      expect(Object.keys(errorCatalog)).toContain(code);
      codes.set(code, (codes.get(code) ?? 0) + 1);
    };
    // 500 runs of 20 requests sent at once: 10,000 in all, in a fraction of the time one at a
    // time takes (the client and the server share this process); a failing run still shrinks.
    const request = fc.tuple(malformedBody, fc.constantFrom('application/json', 'application/json; charset=utf-8'));
    await fc.assert(
      fc.asyncProperty(fc.array(request, { minLength: 20, maxLength: 20 }), async (requests) => { await Promise.all(requests.map(send)); }),
      { numRuns: 500 },
    );
    expect([...codes.values()].reduce((a, b) => a + b, 0)).toBe(10_000);
    expect([...codes.keys()].sort()).toEqual(expect.arrayContaining(['invalid_json', 'validation_failed', 'payload_too_large']));
    expect((await call(h.baseUrl, 'GET', '/healthz')).status).toBe(200);
    expect((await call(h.baseUrl, 'GET', `/api/v1/results/${electionId}`)).body.totalVotes).toBe(tallyBefore);
    expect(Number((await h.db.pool.query('SELECT count(*) FROM votes')).rows[0].count)).toBe(storedBefore);
    // And the same voter can still vote properly afterwards.
    expect((await call(h.baseUrl, 'POST', '/api/v1/votes', { token: voter.token, body: valid() })).status).toBe(200);
  }, 600_000);
});
