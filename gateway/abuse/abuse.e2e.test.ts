// The abuse controls through the real app with the DEFAULT limits and rules: a replayed and a
// forged CAPTCHA, a vote for another user, many accounts from one address (challenged, then
// refused), 1,000 viewers behind one address (all counted) and one account hammering (limited),
// on the in-process and the Redis backends. What is refused is refused with its status and code
// and counts nothing.
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

  it('refuses a disposable mailbox at registration, with a solved CAPTCHA too', async () => {
    const users = async () => Number((await s.h.db.pool.query('SELECT count(*) FROM users')).rows[0].count);
    const before = await users();
    const disposable = await call(s.h.baseUrl, 'POST', '/api/v1/auth/register', {
      headers: { 'user-agent': browserUa }, body: { email: 'bot@mailinator.com', password: 'a long enough password', captchaToken: await challengeToken(s.h) },
    });
    expect([disposable.status, disposable.body.error.code]).toEqual([403, 'fraud_rejected']);
    expect(await users()).toBe(before);
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

describe('registration from one address: challenged before refused', () => {
  let s: Awaited<ReturnType<typeof setUp>>;
  // The registration CAPTCHA policy at its default (off): the challenge comes from the limits.
  beforeAll(async () => { s = await setUp({}); });
  afterAll(async () => { await s.h.close(); });

  const register = (email: string, extra: Record<string, unknown> = {}) =>
    call(s.h.baseUrl, 'POST', '/api/v1/auth/register', { headers: { 'user-agent': browserUa }, body: { email, password: 'a long enough password', ...extra } });
  const users = async () => Number((await s.h.db.pool.query('SELECT count(*) FROM users')).rows[0].count);

  it('registers 10 without a CAPTCHA, asks the next ones for one, and refuses only once that allowance is spent', async () => {
    const before = await users();
    // Defaults: 10 registrations per address without a CAPTCHA. 20 at once, so the refill (one
    // per 5 s) adds nothing however slow the machine: 10 pass, the others are challenged.
    const wave = await Promise.all(Array.from({ length: 20 }, (_, i) => register(`crowd-${i}-${randomUUID()}@example.com`)));
    const answered = wave.map((a) => (a.status === 201 ? '201' : `${a.status} ${a.body.error?.code}`));
    expect(new Set(answered), 'past the allowance: a challenge, not a refusal').toEqual(new Set(['201', '400 captcha_required']));
    expect(answered.filter((a) => a === '201').length).toBeGreaterThanOrEqual(10);
    const solved = await register(`crowd-solved-${randomUUID()}@example.com`, { captchaToken: await challengeToken(s.h) });
    expect(solved.status).toBe(201);
    const created = await users() - before;

    // Keep asking without solving: each request spends the challenged allowance (200, then 2/s),
    // and the answer turns from captcha_required to 429 once it is spent. (The allowance without
    // a CAPTCHA refills one every 5 s meanwhile: those few are registered.)
    const codes: string[] = [];
    let refused: Awaited<ReturnType<typeof register>> | undefined;
    for (let batch = 0; batch < 100 && !refused; batch++) {
      const answers = await Promise.all(Array.from({ length: 20 }, (_, i) => register(`farm-${batch}-${i}-${randomUUID()}@example.com`)));
      for (const next of answers) {
        if (next.status === 429) refused ??= next;
        else codes.push(next.status === 201 ? '201' : `${next.status} ${next.body.error?.code}`);
      }
    }
    expect(refused, 'refused within 2,000 requests').toBeDefined();
    expect(new Set(codes.filter((c) => c !== '201'))).toEqual(new Set(['400 captcha_required']));
    expect(codes.filter((c) => c === '400 captcha_required').length).toBeGreaterThanOrEqual(150);
    expect(refused!.body.error.code).toBe('rate_limited');
    expect(Number(refused!.headers.get('retry-after'))).toBeGreaterThanOrEqual(1);
    expect(refused!.body.error.details.scope).toBe('ip');
    expect(await users()).toBe(before + created + codes.filter((c) => c === '201').length);
  });
});

/** Sends every vote, at most `concurrency` at a time; the answers in the order of `voters`. */
async function voteAll(
  h: AppHarness, voters: readonly TestVoter[], target: { electionId: string; candidateId: string },
  concurrency = 64, extra: () => Promise<Record<string, unknown>> = async () => ({}),
) {
  const answers: Awaited<ReturnType<typeof voteAs>>[] = new Array(voters.length);
  let next = 0;
  const worker = async () => {
    while (next < voters.length) {
      const index = next++;
      answers[index] = await voteAs(h, voters[index]!, target, await extra());
    }
  };
  await Promise.all(Array.from({ length: concurrency }, worker));
  return answers;
}

const statusesOf = (answers: readonly { status: number; body: any }[]) => {
  const counts: Record<string, number> = {};
  for (const a of answers) {
    // A 5xx says where the vote went wrong (cluster/router.ts, actors/shard.ts reasons).
    const reason = a.status >= 500 ? a.body?.error?.details?.reason : undefined;
    const key = a.status === 200 ? '200' : `${a.status} ${a.body?.error?.code}${reason === undefined ? '' : ` (${reason})`}`;
    counts[key] = (counts[key] ?? 0) + 1;
  }
  return counts;
};

describe('1,000 viewers behind one address', () => {
  // Every request of this file comes from 127.0.0.1: one address, one network.
  const crowd = async (h: AppHarness, alsoOnRisk: boolean) => {
    const admin = await login(h.baseUrl, testAdmin.email, testAdmin.password);
    const open = async (captchaPolicy: string) => {
      const created = await call(h.baseUrl, 'POST', '/api/v1/admin/elections', { token: admin, body: { title: `Crowd ${captchaPolicy}`, candidates: [{ name: 'A' }, { name: 'B' }], captchaPolicy } });
      await call(h.baseUrl, 'POST', `/api/v1/admin/elections/${created.body.electionId}/open`, { token: admin });
      return { electionId: created.body.electionId as string, candidateId: created.body.candidates[0].candidateId as string };
    };
    const voters = await createVoters(h.db.pool, 1000, h.secrets.jwtSecret);

    // Policy off: every one of them is counted, nobody is asked anything.
    const target = await open('off');
    const answers = await voteAll(h, voters, target);
    expect(statusesOf(answers)).toEqual({ '200': 1000 });
    expect(await storedVotes(h, target.electionId)).toBe(1000);
    const results = await call(h.baseUrl, 'GET', `/api/v1/results/${target.electionId}`);
    expect(results.body.totalVotes).toBe(1000);

    if (!alsoOnRisk) return;
    // Policy on_risk: 300 of the same crowd for one candidate trip the vote-burst rule (past 100
    // a minute), so some are asked for a CAPTCHA; none is refused, each counts once solved.
    const risky = await open('on_risk');
    const some = voters.slice(0, 300);
    const first = await voteAll(h, some, risky);
    const challenged = some.filter((_, i) => first[i]!.status !== 200);
    // (How many is the rule's business, and a sliding window's: past 100 in its minute.)
    expect(['200', '400 captcha_required']).toEqual(expect.arrayContaining(Object.keys(statusesOf(first))));
    const solved = await voteAll(h, challenged, risky, 16, async () => ({ captchaToken: await challengeToken(h) }));
    expect(statusesOf(solved)).toEqual({ '200': challenged.length });
    expect(await storedVotes(h, risky.electionId)).toBe(300);
    const stats = await call(h.baseUrl, 'GET', `/api/v1/results/statistics/${risky.electionId}`, { token: admin });
    expect(stats.body.rejectionsByReason.rate_limited ?? 0).toBe(0);
  };

  it('are all counted with the in-process backend (policy off; under on_risk challenged at most, never refused)', async () => {
    const h = await startAppHarness(defaultsEnv);
    try { await crowd(h, true); } finally { await h.close(); }
  }, 600_000);

  it.skipIf(redisProblem !== undefined)(redisSuiteTitle('are all counted with the Redis backend (policy off)', redisProblem), async () => {
    const h = await startAppHarness({ ...defaultsEnv, LIVEVOTE_RATE_LIMIT_BACKEND: 'redis', REDIS_URL: testRedisUrl });
    try { await crowd(h, false); } finally { await h.close(); }
  }, 600_000);
});

describe('one account sending again and again', () => {
  const hammer = async (h: AppHarness) => {
    const admin = await login(h.baseUrl, testAdmin.email, testAdmin.password);
    const elections: { electionId: string; candidateId: string }[] = [];
    for (let i = 0; i < 2; i++) {
      const created = await call(h.baseUrl, 'POST', '/api/v1/admin/elections', { token: admin, body: { title: `Hammer ${i}`, candidates: [{ name: 'A' }, { name: 'B' }] } });
      await call(h.baseUrl, 'POST', `/api/v1/admin/elections/${created.body.electionId}/open`, { token: admin });
      elections.push({ electionId: created.body.electionId as string, candidateId: created.body.candidates[0].candidateId as string });
    }
    const [bot, bystander] = await createVoters(h.db.pool, 2, h.secrets.jwtSecret) as [TestVoter, TestVoter];
    // The same token, 40 times at once, across two elections: its account's bucket holds 5.
    const startedMs = Date.now();
    const answers = await Promise.all(Array.from({ length: 40 }, (_, i) => voteAs(h, bot, elections[i % 2]!)));
    const elapsedS = (Date.now() - startedMs) / 1000;
    const limited = answers.filter((a) => a.status === 429);
    // 5 at once, then one per 2 s (user=5/0.5): however long the 40 took to arrive on a busy
    // machine, the bucket let through at most 5 + elapsed/2 of them, and refused the rest.
    const passedMax = 5 + Math.ceil(elapsedS * 0.5);
    expect(40 - limited.length, `passed the limiter in ${elapsedS.toFixed(1)} s`).toBeLessThanOrEqual(passedMax);
    expect(limited.length + answers.filter((a) => a.status === 200).length).toBe(40);
    expect(new Set(limited.map((a) => `${a.body.error.code} ${a.body.error.details.scope}`))).toEqual(new Set(['rate_limited user']));
    expect(limited.every((a) => Number(a.headers.get('retry-after')) >= 1)).toBe(true);
    for (const target of elections) expect(await storedVotes(h, target.electionId)).toBe(1);
    // Another viewer on the same address is not held back by it.
    expect((await voteAs(h, bystander, elections[0]!)).status).toBe(200);
  };

  it('is limited with the in-process backend, and only its first vote per election counts', async () => {
    const h = await startAppHarness(defaultsEnv);
    try { await hammer(h); } finally { await h.close(); }
  });

  it.skipIf(redisProblem !== undefined)(redisSuiteTitle('is limited with the Redis backend', redisProblem), async () => {
    const h = await startAppHarness({ ...defaultsEnv, LIVEVOTE_RATE_LIMIT_BACKEND: 'redis', REDIS_URL: testRedisUrl });
    try { await hammer(h); } finally { await h.close(); }
  });
});
