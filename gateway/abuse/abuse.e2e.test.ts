// Issue 5's abuse tests through the real app with the DEFAULT limits and rules: a replayed and a
// forged CAPTCHA, a 10× burst from one IP (in-process and Redis backends), many accounts from
// one network, a vote for another user. Each is refused with its status and code, nothing is
// counted, and the statistics show the rejections by rule.
import { randomUUID } from 'node:crypto';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { call, login, startAppHarness, testAdmin, type AppHarness } from '../../infra/testing/appHarness.ts';
import { createVoters, type TestVoter } from '../../infra/testing/voters.ts';
import { solveAltchaChallenge } from './captcha.ts';
import { redisSuiteTitle, testRedisProblem, testRedisUrl } from './testRedis.ts';

const browserUa = 'Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0 Safari/537.36';
/** Defaults everywhere, except a cheap proof of work so the suite is quick. */
const defaultsEnv = {
  LIVEVOTE_RATE_LIMIT_VOTE: '', LIVEVOTE_RATE_LIMIT_REGISTER: '', LIVEVOTE_RATE_LIMIT_LOGIN: '',
  LIVEVOTE_FRAUD_REGISTER_IP: '', LIVEVOTE_FRAUD_REGISTER_NETWORK: '', LIVEVOTE_FRAUD_VOTE_BURST: '',
  LIVEVOTE_CAPTCHA_DIFFICULTY: '1000',
};

async function setUp(env: Record<string, string>) {
  const h = await startAppHarness({ ...defaultsEnv, ...env });
  const admin = await login(h.baseUrl, testAdmin.email, testAdmin.password);
  const election = async (captchaPolicy: string) => {
    const created = await call(h.baseUrl, 'POST', '/api/v1/admin/elections', {
      token: admin, body: { title: `Policy ${captchaPolicy}`, candidates: [{ name: 'A' }, { name: 'B' }], captchaPolicy },
    });
    await call(h.baseUrl, 'POST', `/api/v1/admin/elections/${created.body.electionId}/open`, { token: admin });
    return { electionId: created.body.electionId as string, candidateId: created.body.candidates[0].candidateId as string };
  };
  return { h, admin, election };
}

function voteAs(h: AppHarness, voter: TestVoter, target: { electionId: string; candidateId: string }, extra: Record<string, unknown> = {}, ua = browserUa) {
  return call(h.baseUrl, 'POST', '/api/v1/votes', {
    token: voter.token, headers: { 'user-agent': ua },
    body: { electionId: target.electionId, candidateId: target.candidateId, userId: voter.userId, ...extra },
  });
}

async function challengeToken(h: AppHarness): Promise<string> {
  const challenge = await call(h.baseUrl, 'GET', '/api/v1/captcha/challenge');
  expect(challenge.body.provider).toBe('altcha');
  expect(challenge.headers.get('cache-control')).toBe('no-store');
  return solveAltchaChallenge(challenge.body.challenge);
}

const redisProblem = await testRedisProblem();

const storedVotes = async (h: AppHarness, electionId: string) =>
  Number((await h.db.pool.query('SELECT count(*) FROM votes WHERE election_id = $1', [electionId])).rows[0].count);

describe('CAPTCHA on votes', () => {
  let s: Awaited<ReturnType<typeof setUp>>;
  beforeAll(async () => { s = await setUp({}); });
  afterAll(async () => { await s.h.close(); });

  it('policy always: no token → 400 captcha_required; a solved one counts; replayed or forged → 403 captcha_invalid', async () => {
    const target = await s.election('always');
    const [a, b, c, d] = await createVoters(s.h.db.pool, 4, s.h.secrets.jwtSecret) as [TestVoter, TestVoter, TestVoter, TestVoter];
    const missing = await voteAs(s.h, a, target);
    expect([missing.status, missing.body.error.code]).toEqual([400, 'captcha_required']);

    const token = await challengeToken(s.h);
    expect((await voteAs(s.h, a, target, { captchaToken: token })).status).toBe(200);
    const replayed = await voteAs(s.h, b, target, { captchaToken: token });
    expect([replayed.status, replayed.body.error.code]).toEqual([403, 'captcha_invalid']);

    // A real solution whose challenge signature was not made with our key.
    const solved = JSON.parse(Buffer.from(await challengeToken(s.h), 'base64').toString()) as { challenge: { signature: string } };
    solved.challenge.signature = 'f'.repeat(solved.challenge.signature.length);
    const forged = Buffer.from(JSON.stringify(solved)).toString('base64');
    const forgedAnswer = await voteAs(s.h, c, target, { captchaToken: forged });
    expect([forgedAnswer.status, forgedAnswer.body.error.code]).toEqual([403, 'captcha_invalid']);
    const garbage = await voteAs(s.h, d, target, { captchaToken: 'not-a-solution' });
    expect([garbage.status, garbage.body.error.code]).toEqual([403, 'captcha_invalid']);
    expect(await storedVotes(s.h, target.electionId)).toBe(1);
  });

  it('policy always: an accepted voter retrying the identical request (its solution now used) gets its original voteId; nobody else gets past', async () => {
    const target = await s.election('always');
    const other = await s.election('always');
    const [a, b] = await createVoters(s.h.db.pool, 2, s.h.secrets.jwtSecret) as [TestVoter, TestVoter];
    const token = await challengeToken(s.h);
    const accepted = await voteAs(s.h, a, target, { captchaToken: token });
    expect(accepted.status).toBe(200);
    // Invariant 5: the same request again is answered as the original.
    const retry = await voteAs(s.h, a, target, { captchaToken: token });
    expect([retry.status, retry.body]).toEqual([200, accepted.body]);
    // The used solution buys nothing new: not another candidate, not another election, not another voter.
    const candidates = (await call(s.h.baseUrl, 'GET', `/api/v1/elections/${target.electionId}`)).body.candidates as { candidateId: string }[];
    const otherCandidate = await voteAs(s.h, a, { electionId: target.electionId, candidateId: candidates[1]!.candidateId }, { captchaToken: token });
    expect([otherCandidate.status, otherCandidate.body.error.code]).toEqual([403, 'captcha_invalid']);
    const otherElection = await voteAs(s.h, a, other, { captchaToken: token });
    expect([otherElection.status, otherElection.body.error.code]).toEqual([403, 'captcha_invalid']);
    const neverVoted = await voteAs(s.h, b, target, { captchaToken: token });
    expect([neverVoted.status, neverVoted.body.error.code]).toEqual([403, 'captcha_invalid']);
    expect(await storedVotes(s.h, target.electionId)).toBe(1);
    expect(await storedVotes(s.h, other.electionId)).toBe(0);
    // b still needs a fresh solution, and with one it votes.
    expect((await voteAs(s.h, b, target, { captchaToken: await challengeToken(s.h) })).status).toBe(200);
  });

  it('policy on_risk: a browser votes without one; a flagged client (automation user agent) must solve one', async () => {
    const target = await s.election('on_risk');
    const [browserVoter, scriptVoter] = await createVoters(s.h.db.pool, 2, s.h.secrets.jwtSecret) as [TestVoter, TestVoter];
    expect((await voteAs(s.h, browserVoter, target)).status).toBe(200);
    const flagged = await voteAs(s.h, scriptVoter, target, {}, 'python-requests/2.31');
    expect([flagged.status, flagged.body.error.code]).toEqual([400, 'captcha_required']);
    expect((await voteAs(s.h, scriptVoter, target, { captchaToken: await challengeToken(s.h) }, 'python-requests/2.31')).status).toBe(200);

    const stats = await call(s.h.baseUrl, 'GET', `/api/v1/results/statistics/${target.electionId}`, { token: s.admin });
    expect(stats.body.fraudRuleHits['automation_user_agent:flagged']).toBe(2);
    expect(stats.body.rejectionsByReason.captcha_required).toBe(1);
  });

  it('refuses a vote for another user and counts nothing', async () => {
    const target = await s.election('off');
    const [a, b] = await createVoters(s.h.db.pool, 2, s.h.secrets.jwtSecret) as [TestVoter, TestVoter];
    const forOther = await call(s.h.baseUrl, 'POST', '/api/v1/votes', {
      token: a.token, headers: { 'user-agent': browserUa }, body: { electionId: target.electionId, candidateId: target.candidateId, userId: b.userId },
    });
    expect([forOther.status, forOther.body.error.code]).toEqual([403, 'user_mismatch']);
    expect(await storedVotes(s.h, target.electionId)).toBe(0);
  });
});

describe('registration', () => {
  let s: Awaited<ReturnType<typeof setUp>>;
  beforeAll(async () => { s = await setUp({ LIVEVOTE_CAPTCHA_REGISTER_POLICY: 'on_risk' }); });
  afterAll(async () => { await s.h.close(); });

  const register = (email: string, extra: Record<string, unknown> = {}) =>
    call(s.h.baseUrl, 'POST', '/api/v1/auth/register', { headers: { 'user-agent': browserUa }, body: { email, password: 'a long enough password', ...extra } });

  it('refuses disposable mailboxes, and rate-limits many accounts from one address', async () => {
    const users = async () => Number((await s.h.db.pool.query('SELECT count(*) FROM users')).rows[0].count);
    const before = await users();
    const disposable = await register('bot@mailinator.com');
    expect([disposable.status, disposable.body.error.code]).toEqual([403, 'fraud_rejected']);
    expect(await users()).toBe(before);

    // Defaults: 10 registrations per address burst, then 429 with Retry-After.
    const answers = [];
    for (let i = 0; i < 14; i++) answers.push(await register(`farm-${i}-${randomUUID()}@example.com`));
    const limited = answers.filter((a) => a.status === 429);
    expect(limited.length).toBeGreaterThan(0);
    expect(limited[0]!.body.error.code).toBe('rate_limited');
    expect(Number(limited[0]!.headers.get('retry-after'))).toBeGreaterThanOrEqual(1);
    // Past 10 from one address in an hour the velocity rule flags: under on_risk, a CAPTCHA is asked.
    const created = answers.filter((a) => a.status === 201).length;
    expect(created).toBeLessThanOrEqual(10);
    expect(await users()).toBe(before + created);
  });
});

describe('a 10× burst from one IP', () => {
  const burst = async (h: AppHarness) => {
    const admin = await login(h.baseUrl, testAdmin.email, testAdmin.password);
    const created = await call(h.baseUrl, 'POST', '/api/v1/admin/elections', { token: admin, body: { title: 'Burst', candidates: [{ name: 'A' }, { name: 'B' }] } });
    await call(h.baseUrl, 'POST', `/api/v1/admin/elections/${created.body.electionId}/open`, { token: admin });
    const target = { electionId: created.body.electionId as string, candidateId: created.body.candidates[0].candidateId as string };
    // Default per-IP vote bucket: 50 burst. Ten times that, at once, from 127.0.0.1.
    const voters = await createVoters(h.db.pool, 500, h.secrets.jwtSecret);
    const answers = await Promise.all(voters.map((v) => voteAs(h, v, target)));
    const accepted = answers.filter((a) => a.status === 200).length;
    const limited = answers.filter((a) => a.status === 429);
    expect(accepted + limited.length).toBe(500);
    expect(limited.length).toBeGreaterThanOrEqual(400);
    expect(new Set(limited.map((a) => a.body.error.code))).toEqual(new Set(['rate_limited']));
    expect(limited.every((a) => Number(a.headers.get('retry-after')) >= 1)).toBe(true);
    expect(await storedVotes(h, target.electionId)).toBe(accepted);
    const stats = await call(h.baseUrl, 'GET', `/api/v1/results/statistics/${target.electionId}`, { token: admin });
    expect(stats.body.rejectionsByReason.rate_limited).toBe(limited.length);
    expect(stats.body.totalVotes).toBe(accepted);
  };

  it('gets 429 + Retry-After from the in-process backend, and only the admitted votes count', async () => {
    const h = await startAppHarness(defaultsEnv);
    try { await burst(h); } finally { await h.close(); }
  }, 60_000);

  it.skipIf(redisProblem !== undefined)(redisSuiteTitle('gets 429 + Retry-After from the Redis backend', redisProblem), async () => {
    const h = await startAppHarness({ ...defaultsEnv, LIVEVOTE_RATE_LIMIT_BACKEND: 'redis', REDIS_URL: testRedisUrl });
    try { await burst(h); } finally { await h.close(); }
  }, 60_000);
});
