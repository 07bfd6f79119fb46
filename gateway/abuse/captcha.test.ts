import { once } from 'node:events';
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import { randomUUID } from 'node:crypto';
import { Redis } from 'ioredis';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import {
  AltchaCaptcha,
  captchaError,
  captchaRequired,
  checkCaptcha,
  decodeAltchaPayload,
  SiteverifyCaptcha,
  solveAltchaChallenge,
  type CaptchaFailMode,
  type CaptchaPolicy,
} from './captcha.ts';
import { MemoryUsedChallengeStore, PostgresUsedChallengeStore, RedisUsedChallengeStore } from './captchaReplay.ts';
import { redisSuiteTitle, testRedisProblem, testRedisUrl } from './testRedis.ts';
import { createTestDatabase, type TestDatabase } from '../../persistence/testDatabase.ts';

const hmacKey = 'k'.repeat(40);
const context = { clientIp: '203.0.113.5' };

function altcha(options: { clock?: () => number; key?: string; store?: MemoryUsedChallengeStore } = {}): AltchaCaptcha {
  return new AltchaCaptcha({
    hmacKey: options.key ?? hmacKey,
    expiryMs: 300_000,
    difficulty: 1000,
    usedChallenges: options.store ?? new MemoryUsedChallengeStore(1000),
    ...(options.clock ? { clock: options.clock } : {}),
  });
}

function reencode(token: string, edit: (payload: { challenge: { parameters: Record<string, unknown>; signature: string }; solution: { counter: number; derivedKey: string } }) => void): string {
  const payload = JSON.parse(Buffer.from(token, 'base64').toString('utf8'));
  edit(payload);
  return Buffer.from(JSON.stringify(payload)).toString('base64');
}

describe('captchaRequired', () => {
  it.each<[CaptchaPolicy, boolean, boolean]>([
    ['off', false, false],
    ['off', true, false],
    ['always', false, true],
    ['always', true, true],
    ['on_risk', false, false],
    ['on_risk', true, true],
  ])('policy %s, flagged %s → %s', (policy, flagged, expected) => {
    expect(captchaRequired(policy, flagged)).toBe(expected);
  });
});

describe('altcha proof of work', () => {
  it('accepts a solved challenge once, and refuses the replay', async () => {
    const captcha = altcha();
    const challenge = await captcha.createChallenge();
    expect(challenge.parameters.expiresAt).toBeGreaterThan(Date.now() / 1000);
    const token = await solveAltchaChallenge(challenge);
    expect(await captcha.verify(token, context)).toEqual({ ok: true });
    expect(await captcha.verify(token, context)).toEqual({ ok: false, code: 'captcha_invalid', reason: 'already_used' });
  });

  it('accepts raw JSON as well as the widget base64', async () => {
    const captcha = altcha();
    const token = await solveAltchaChallenge(await captcha.createChallenge());
    expect(await captcha.verify(Buffer.from(token, 'base64').toString('utf8'), context)).toEqual({ ok: true });
  });

  it('refuses a forged challenge (parameters edited after signing)', async () => {
    const captcha = altcha();
    const token = await solveAltchaChallenge(await captcha.createChallenge());
    const easier = reencode(token, (p) => { p.challenge.parameters.keyPrefix = '00'; });
    expect(await captcha.verify(easier, context)).toMatchObject({ ok: false, code: 'captcha_invalid', reason: 'bad_signature' });
    const longer = reencode(token, (p) => { p.challenge.parameters.expiresAt = Math.floor(Date.now() / 1000) + 86_400; });
    expect(await captcha.verify(longer, context)).toMatchObject({ ok: false, reason: 'bad_signature' });
  });

  it('refuses a challenge signed with another key', async () => {
    const other = altcha({ key: 'x'.repeat(40) });
    const token = await solveAltchaChallenge(await other.createChallenge());
    expect(await altcha().verify(token, context)).toMatchObject({ ok: false, code: 'captcha_invalid', reason: 'bad_signature' });
  });

  it('refuses a wrong solution and leaves the challenge usable', async () => {
    const captcha = altcha();
    const token = await solveAltchaChallenge(await captcha.createChallenge());
    const wrong = reencode(token, (p) => { p.solution.derivedKey = `${p.solution.derivedKey.slice(0, -2)}${p.solution.derivedKey.endsWith('00') ? '01' : '00'}`; });
    expect(await captcha.verify(wrong, context)).toMatchObject({ ok: false, code: 'captcha_invalid', reason: 'wrong_solution' });
    const guessed = reencode(token, (p) => { p.solution.counter += 1; p.solution.derivedKey = 'ab'.repeat(32); });
    expect(await captcha.verify(guessed, context)).toMatchObject({ ok: false, reason: 'wrong_solution' });
    expect(await captcha.verify(token, context)).toEqual({ ok: true });
  });

  it('refuses an expired challenge', async () => {
    let nowMs = Date.now() - 600_000;
    const captcha = altcha({ clock: () => nowMs });
    const token = await solveAltchaChallenge(await captcha.createChallenge());
    nowMs = Date.now();
    expect(await captcha.verify(token, context)).toMatchObject({ ok: false, code: 'captcha_invalid', reason: 'expired' });
  });

  it.each([
    ['empty', ''],
    ['not base64 JSON', 'bm90IGpzb24='],
    ['JSON of the wrong shape', Buffer.from('{"challenge":1,"solution":2}').toString('base64')],
    ['huge', 'A'.repeat(10_000)],
  ])('refuses a malformed token (%s)', async (_name, token) => {
    expect(await altcha().verify(token, context)).toMatchObject({ ok: false, code: 'captcha_invalid', reason: 'malformed' });
  });

  it('refuses parameters altcha cannot read without throwing', async () => {
    const captcha = altcha();
    const token = await solveAltchaChallenge(await captcha.createChallenge());
    const odd = reencode(token, (p) => { p.challenge.parameters.algorithm = 'MD5'; });
    expect((await captcha.verify(odd, context)).ok).toBe(false);
  });

  it('answers captcha_unavailable when the replay store is full of live solutions', async () => {
    const captcha = altcha({ store: new MemoryUsedChallengeStore(1) });
    const first = await solveAltchaChallenge(await captcha.createChallenge());
    const second = await solveAltchaChallenge(await captcha.createChallenge());
    expect(await captcha.verify(first, context)).toEqual({ ok: true });
    expect(await captcha.verify(second, context)).toMatchObject({ ok: false, code: 'captcha_unavailable', reason: 'replay_store_unavailable' });
    // Still refused as a replay, not forgotten.
    expect(await captcha.verify(first, context)).toMatchObject({ reason: 'already_used' });
  });

  it('decodes the widget payload shape', () => {
    expect(decodeAltchaPayload('%%%')).toBeUndefined();
    expect(decodeAltchaPayload('{"challenge":{"parameters":{"expiresAt":1,"nonce":"a","salt":"b"},"signature":"s"},"solution":{"counter":1,"derivedKey":"ab"}}')).toBeDefined();
  });
});

describe('MemoryUsedChallengeStore', () => {
  it('forgets expired solutions and stays bounded', () => {
    const store = new MemoryUsedChallengeStore(3);
    expect(store.claim('a', 100, 0)).toBe('claimed');
    expect(store.claim('a', 100, 50)).toBe('already_used');
    expect(store.claim('b', 200, 50)).toBe('claimed');
    expect(store.claim('c', 300, 50)).toBe('claimed');
    expect(store.claim('d', 400, 50)).toBe('unavailable');
    expect(store.refusedFullCount).toBe(1);
    // At 150 'a' has expired: room again.
    expect(store.claim('d', 400, 150)).toBe('claimed');
    expect(store.size).toBe(3);
  });
});

describe('MemoryUsedChallengeStore under churn', () => {
  it('stays at about the live solutions and keeps refusing replays of live ones', () => {
    const store = new MemoryUsedChallengeStore(1_000_000);
    // 200 000 solutions, one a millisecond, each valid for 5 s.
    let claimed = 0;
    for (let i = 0; i < 200_000; i++) if (store.claim(`id${i}`, i + 5000, i) === 'claimed') claimed++;
    expect(claimed).toBe(200_000);
    expect(store.size).toBeLessThanOrEqual(5001);
    expect(store.claim('id199999', 204_999, 200_000)).toBe('already_used');
    expect(store.claim('id199000', 204_000, 200_000)).toBe('already_used');
  });
});

describe('PostgresUsedChallengeStore', () => {
  let db: TestDatabase;
  beforeAll(async () => { db = await createTestDatabase(); });
  afterAll(async () => { await db?.drop(); });

  it('claims once cluster-wide and purges expired rows', async () => {
    const store = new PostgresUsedChallengeStore(db.pool);
    const id = 'f'.repeat(32);
    const nowMs = Date.now();
    expect(await store.claim(id, nowMs + 60_000)).toBe('claimed');
    expect(await store.claim(id, nowMs + 60_000)).toBe('already_used');
    expect(await new PostgresUsedChallengeStore(db.pool).claim(id, nowMs + 60_000)).toBe('already_used');
    expect(await store.claim('e'.repeat(32), nowMs - 1)).toBe('claimed');
    expect(await store.purgeExpired(nowMs)).toBe(1);
    expect(await store.claim(id, nowMs + 60_000)).toBe('already_used');
  });

  it('answers unavailable when the database cannot be asked', async () => {
    const errors: unknown[] = [];
    const broken = { query: async () => { throw new Error('connection refused'); } } as unknown as TestDatabase['pool'];
    expect(await new PostgresUsedChallengeStore(broken, (e) => errors.push(e)).claim('a'.repeat(32), Date.now() + 1000)).toBe('unavailable');
    expect(errors).toHaveLength(1);
  });
});

const redisUrl = testRedisUrl;
const redisProblem = await testRedisProblem();

describe.skipIf(redisProblem !== undefined)(
  redisSuiteTitle('RedisUsedChallengeStore', redisProblem),
  () => {
    it('claims once and lets Redis expire the entry', async () => {
      const redis = new Redis(redisUrl);
      try {
        const prefix = `lvtest:${randomUUID()}:`;
        const store = new RedisUsedChallengeStore(redis, prefix);
        const nowMs = Date.now();
        expect(await store.claim('abc', nowMs + 5000, nowMs)).toBe('claimed');
        expect(await store.claim('abc', nowMs + 5000, nowMs)).toBe('already_used');
        const ttl = await redis.pttl(`${prefix}captcha:abc`);
        expect(ttl).toBeGreaterThan(0);
        expect(ttl).toBeLessThanOrEqual(5000);
        await redis.del(`${prefix}captcha:abc`);
      } finally {
        await redis.quit();
      }
    });
  },
);

// A stand-in for challenges.cloudflare.com / api.hcaptcha.com / google.com siteverify.
interface StandIn {
  readonly url: string;
  readonly requests: URLSearchParams[];
  close(): Promise<void>;
}

async function standInSiteverify(respond: (form: URLSearchParams, res: ServerResponse) => void): Promise<StandIn> {
  const requests: URLSearchParams[] = [];
  const server: Server = createServer((req: IncomingMessage, res: ServerResponse) => {
    const chunks: Buffer[] = [];
    req.on('data', (chunk: Buffer) => chunks.push(chunk));
    req.on('end', () => {
      const form = new URLSearchParams(Buffer.concat(chunks).toString('utf8'));
      requests.push(form);
      respond(form, res);
    });
  });
  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  const { port } = server.address() as AddressInfo;
  return {
    url: `http://127.0.0.1:${port}/siteverify`,
    requests,
    close: () => {
      server.closeAllConnections();
      return new Promise((resolve) => server.close(() => resolve()));
    },
  };
}

function json(res: ServerResponse, status: number, body: unknown): void {
  res.writeHead(status, { 'content-type': 'application/json' });
  res.end(JSON.stringify(body));
}

describe('siteverify providers against a local stand-in', () => {
  let standIn: StandIn;
  beforeAll(async () => {
    standIn = await standInSiteverify((form, res) => {
      const response = form.get('response');
      if (response === 'good') return json(res, 200, { success: true, hostname: 'example.com' });
      if (response === 'bad') return json(res, 200, { success: false, 'error-codes': ['invalid-input-response'] });
      if (response === 'used') return json(res, 200, { success: false, 'error-codes': ['timeout-or-duplicate'] });
      if (response === 'used-hcaptcha') return json(res, 200, { success: false, 'error-codes': ['invalid-or-already-seen-response'] });
      if (response === 'low') return json(res, 200, { success: true, score: 0.1 });
      if (response === 'high') return json(res, 200, { success: true, score: 0.9 });
      if (response === 'boom') return json(res, 502, { error: 'bad gateway' });
      if (response === 'garbled') { res.writeHead(200); res.end('<html>'); return; }
      // Never answers (until the stand-in closes): the only way out is the verifier's timeout.
      if (response === 'slow') return;
      json(res, 400, {});
    });
  });
  afterAll(async () => { await standIn.close(); });

  /**
   * The timeout is generous, so an answer from a stand-in on a busy machine is never taken for a
   * timeout; the timeout tests shorten it and ask the stand-in that never answers.
   */
  function verifier(failMode: CaptchaFailMode, extra: Partial<ConstructorParameters<typeof SiteverifyCaptcha>[0]> = {}): SiteverifyCaptcha {
    return new SiteverifyCaptcha({ provider: 'turnstile', secret: 'site-secret', siteverifyUrl: standIn.url, timeoutMs: 60_000, failMode, ...extra });
  }
  const shortTimeout = { timeoutMs: 200 };

  it('posts secret, response and remoteip as a form and accepts success', async () => {
    expect(await verifier('closed').verify('good', context)).toEqual({ ok: true });
    const form = standIn.requests.at(-1)!;
    expect(Object.fromEntries(form)).toEqual({ secret: 'site-secret', response: 'good', remoteip: '203.0.113.5' });
  });

  it.each(['turnstile', 'hcaptcha', 'recaptcha'] as const)('speaks the same protocol for %s', async (provider) => {
    expect(await verifier('closed', { provider }).verify('good', context)).toEqual({ ok: true });
    expect(await verifier('closed', { provider }).verify('bad', context)).toMatchObject({ ok: false, code: 'captcha_invalid' });
  });

  it('refuses a token the provider rejects, whatever the fail mode', async () => {
    expect(await verifier('open').verify('bad', context)).toEqual({ ok: false, code: 'captcha_invalid', reason: 'rejected_by_provider' });
  });

  it('tells a token already used (the providers\' duplicate codes) from a bad one, so a voter\'s retry can be recognised', async () => {
    expect(await verifier('open').verify('used', context)).toEqual({ ok: false, code: 'captcha_invalid', reason: 'already_used' });
    expect(await verifier('open', { provider: 'hcaptcha' }).verify('used-hcaptcha', context)).toEqual({ ok: false, code: 'captcha_invalid', reason: 'already_used' });
  });

  it('refuses a reCAPTCHA v3 score below the minimum', async () => {
    const v3 = verifier('closed', { provider: 'recaptcha', minScore: 0.5 });
    expect(await v3.verify('low', context)).toMatchObject({ ok: false, reason: 'low_score' });
    expect(await v3.verify('high', context)).toEqual({ ok: true });
  });

  it('fails closed on timeout: captcha_unavailable', async () => {
    expect(await verifier('closed', shortTimeout).verify('slow', context)).toEqual({ ok: false, code: 'captcha_unavailable', reason: 'provider_timeout' });
  });

  it('fails open on timeout: allowed, marked degraded', async () => {
    expect(await verifier('open', shortTimeout).verify('slow', context)).toEqual({ ok: true, degraded: true });
  });

  it('applies the fail mode to 5xx and unreadable answers', async () => {
    expect(await verifier('closed').verify('boom', context)).toMatchObject({ ok: false, code: 'captcha_unavailable', reason: 'provider_error' });
    expect(await verifier('open').verify('boom', context)).toEqual({ ok: true, degraded: true });
    expect(await verifier('closed').verify('garbled', context)).toMatchObject({ ok: false, code: 'captcha_unavailable' });
  });

  it('applies the fail mode when the provider cannot be reached at all', async () => {
    const nowhere = new SiteverifyCaptcha({ provider: 'hcaptcha', secret: 's', siteverifyUrl: 'http://127.0.0.1:1/siteverify', timeoutMs: 60_000, failMode: 'closed' });
    expect(await nowhere.verify('good', context)).toMatchObject({ ok: false, code: 'captcha_unavailable', reason: 'provider_error' });
  });

  it('bounds requests in flight, applying the fail mode beyond', async () => {
    const narrow = verifier('closed', { inFlightMax: 1, ...shortTimeout });
    const [first, second] = await Promise.all([narrow.verify('slow', context), narrow.verify('good', context)]);
    expect(first).toMatchObject({ reason: 'provider_timeout' });
    expect(second).toMatchObject({ ok: false, code: 'captcha_unavailable', reason: 'provider_busy' });
  });

  it('refuses an empty or oversized token without asking the provider', async () => {
    const before = standIn.requests.length;
    expect(await verifier('open').verify('', context)).toMatchObject({ ok: false, code: 'captcha_invalid', reason: 'malformed' });
    expect(await verifier('open').verify('x'.repeat(9000), context)).toMatchObject({ reason: 'malformed' });
    expect(standIn.requests.length).toBe(before);
  });
});

describe('checkCaptcha (the route gate)', () => {
  it('skips synchronously when the policy does not ask', () => {
    expect(checkCaptcha(altcha(), 'on_risk', false, undefined, context)).toEqual({ ok: true, checked: false });
    expect(checkCaptcha(altcha(), 'off', true, 'whatever', context)).toEqual({ ok: true, checked: false });
  });

  it('answers captcha_required when a token is needed and missing', () => {
    const outcome = checkCaptcha(altcha(), 'always', false, undefined, context);
    expect(outcome).toEqual({ ok: false, code: 'captcha_required' });
    expect(captchaError(outcome as Extract<typeof outcome, { ok: false }>).status).toBe(400);
  });

  it('verifies when asked, and maps failures to catalogued errors', async () => {
    const captcha = altcha();
    const token = await solveAltchaChallenge(await captcha.createChallenge());
    expect(await checkCaptcha(captcha, 'on_risk', true, token, context)).toEqual({ ok: true, checked: true });
    const replay = await checkCaptcha(captcha, 'always', false, token, context);
    expect(replay).toEqual({ ok: false, code: 'captcha_invalid', reason: 'already_used' });
    expect(captchaError(replay as Extract<typeof replay, { ok: false }>).status).toBe(403);
  });
});
