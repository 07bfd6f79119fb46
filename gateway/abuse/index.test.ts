import { randomUUID } from 'node:crypto';
import { Redis } from 'ioredis';
import { Registry } from 'prom-client';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ConfigError, loadConfig } from '../../infra/config.ts';
import { createTestDatabase, type TestDatabase } from '../../persistence/testDatabase.ts';
import {
  applyRateLimitOverrides,
  captchaError,
  createAbuseControls,
  defaultRateLimits,
  fraudRulesConfigFrom,
  rateLimitedError,
  solveAltchaChallenge,
  type AbuseControls,
} from './index.ts';
import { redisSuiteTitle, testRedisProblem, testRedisUrl } from './testRedis.ts';

const captchaHmacKey = 'c'.repeat(48);
const browser = 'Mozilla/5.0 (X11; Linux x86_64) Firefox/128.0';

describe('abuse configuration', () => {
  it('has working defaults', () => {
    const { abuse } = loadConfig({});
    expect(abuse.trustedProxies).toEqual([]);
    expect(abuse.rateLimitBackend).toBe('memory');
    expect(abuse.captchaProvider).toBe('altcha');
    expect(abuse.captchaFailMode).toBe('closed');
    expect(abuse.captchaExpiryMs).toBe(300_000);
    expect(applyRateLimitOverrides(defaultRateLimits, abuse.rateLimits)).toEqual(defaultRateLimits);
  });

  it('parses the compact specs', () => {
    const { abuse } = loadConfig({
      LIVEVOTE_TRUSTED_PROXIES: '10.0.0.0/8, 2001:db8::/32',
      LIVEVOTE_RATE_LIMIT_VOTE: 'ip=100/40, network=off',
      LIVEVOTE_FRAUD_VOTE_BURST: 'reject:50/30',
      LIVEVOTE_FRAUD_REGISTER_IP: 'off',
      LIVEVOTE_FRAUD_DISPOSABLE_DOMAINS: 'spam.example, junk.example',
      LIVEVOTE_FRAUD_AUTOMATION_UA_SIGNATURES: 'VoteBot',
      LIVEVOTE_CAPTCHA_MIN_SCORE: '0.5',
    });
    expect(abuse.trustedProxies).toEqual(['10.0.0.0/8', '2001:db8::/32']);
    const limits = applyRateLimitOverrides(defaultRateLimits, abuse.rateLimits);
    expect(limits.vote).toEqual({ user: defaultRateLimits.vote.user, ip: { capacity: 100, refillPerSecond: 40 } });
    const fraud = fraudRulesConfigFrom(abuse);
    expect(fraud.voteBurst).toEqual({ action: 'reject', countMax: 50, windowMs: 30_000 });
    expect(fraud.registrationPerIp.action).toBe('off');
    expect(fraud.disposableEmail.extraDomains).toEqual(['spam.example', 'junk.example']);
    expect(fraud.automationUserAgent.signatures).toEqual(['votebot']);
    expect(abuse.captchaMinScore).toBe(0.5);
  });

  it('names every bad abuse variable', () => {
    try {
      loadConfig({
        LIVEVOTE_RATE_LIMIT_VOTE: 'ip=0/1',
        LIVEVOTE_RATE_LIMIT_LOGIN: 'planet=1/1',
        LIVEVOTE_FRAUD_VOTE_BURST: 'maybe:1/1',
        LIVEVOTE_CAPTCHA_PROVIDER: 'clippy',
        REDIS_URL: 'http://x',
      });
      expect.unreachable();
    } catch (error) {
      expect(error).toBeInstanceOf(ConfigError);
      const problems = (error as ConfigError).problems.join('\n');
      for (const name of ['LIVEVOTE_RATE_LIMIT_VOTE', 'LIVEVOTE_RATE_LIMIT_LOGIN', 'LIVEVOTE_FRAUD_VOTE_BURST', 'LIVEVOTE_CAPTCHA_PROVIDER', 'REDIS_URL']) {
        expect(problems).toContain(name);
      }
    }
  });

  it('requires what a choice depends on', () => {
    expect(() => loadConfig({ LIVEVOTE_CAPTCHA_PROVIDER: 'turnstile' })).toThrow(/LIVEVOTE_CAPTCHA_SECRET/);
    expect(() => loadConfig({ LIVEVOTE_RATE_LIMIT_BACKEND: 'redis' })).toThrow(/REDIS_URL/);
    expect(() => loadConfig({ LIVEVOTE_CAPTCHA_REPLAY_STORE: 'redis' })).toThrow(/REDIS_URL/);
  });

  it('refuses a bad trusted proxy list when the controls are built', () => {
    const { abuse } = loadConfig({ LIVEVOTE_TRUSTED_PROXIES: '10.0.0.0/8,proxy.internal' });
    expect(() => createAbuseControls({ config: abuse, captchaHmacKey })).toThrow(/LIVEVOTE_TRUSTED_PROXIES: .*proxy\.internal/);
  });
});

describe('createAbuseControls (embedded: memory backends)', () => {
  let abuse: AbuseControls;
  let registry: Registry;
  beforeAll(async () => {
    registry = new Registry();
    abuse = createAbuseControls({ config: loadConfig({ LIVEVOTE_CAPTCHA_DIFFICULTY: '1000' }).abuse, captchaHmacKey, registry });
    await abuse.start();
  });
  afterAll(async () => { await abuse.stop(); });

  it('runs the vote checks in the documented order and turns outcomes into catalogued errors', async () => {
    const address = abuse.clientAddress.resolve('::ffff:198.51.100.20', '')!;
    const subjects = { userKey: randomUUID(), ip: address.ip, networkKey: address.networkKey };
    const decisions = [];
    for (let i = 0; i < 6; i++) decisions.push(await abuse.limit('vote', subjects, 1_000_000));
    expect(decisions.slice(0, 5).every((d) => d.outcome === 'allowed')).toBe(true);
    const limited = decisions[5]!;
    expect(limited).toEqual({ outcome: 'limited', scope: 'user', action: 'vote', retryAfterMs: 2000 });
    if (limited.outcome !== 'limited') throw new Error('unreachable');
    expect(rateLimitedError(limited).headers).toEqual({ 'retry-after': '2' });

    const fraud = abuse.fraud.evaluateVote({ electionId: 'e1', candidate: 0, networkKey: address.networkKey, userAgent: '' }, Date.now());
    expect(fraud.verdict).toBe('flag');

    const missing = await abuse.checkCaptcha('on_risk', fraud.verdict === 'flag', undefined, { clientIp: address.ip });
    expect(missing).toEqual({ ok: false, code: 'captcha_required' });
    if (missing.ok) throw new Error('unreachable');
    expect(captchaError(missing).code).toBe('captcha_required');

    const token = await solveAltchaChallenge(await abuse.altcha!.createChallenge());
    expect(await abuse.checkCaptcha('on_risk', true, token, { clientIp: address.ip })).toEqual({ ok: true, checked: true });
    expect(await abuse.checkCaptcha('on_risk', true, token, { clientIp: address.ip })).toMatchObject({ ok: false, code: 'captcha_invalid' });

    const metrics = await registry.metrics();
    expect(metrics).toContain('livevote_rate_limited_total{action="vote",scope="user"} 1');
    expect(metrics).toContain('livevote_captcha_verifications_total{provider="altcha",result="ok"} 1');
    expect(metrics).toContain('livevote_captcha_verifications_total{provider="altcha",result="already_used"} 1');
    expect(metrics).toContain('livevote_fraud_rule_hits_total{rule="empty_user_agent",action="flag"} 1');
    expect(await abuse.fraudStatsFor('e1')).toEqual({ empty_user_agent: { flagged: 1, rejected: 0 } });
  });

  it('lets a crowd of 1,000 users on one IP through, and stops the flood past the IP burst of 2,000', async () => {
    const ip = '203.0.113.99';
    const vote = () => abuse.limit('vote', { userKey: randomUUID(), ip, networkKey: '203.0.113.0/24' }, 2_000_000);
    const crowd = await Promise.all(Array.from({ length: 1000 }, vote));
    expect(crowd.every((d) => d.outcome === 'allowed')).toBe(true);
    // Same instant: nothing refilled. The next 1,000 exhaust the burst; beyond it, the IP bucket refuses.
    const flood = await Promise.all(Array.from({ length: 1500 }, vote));
    expect(flood.filter((d) => d.outcome === 'allowed')).toHaveLength(1000);
    expect(new Set(flood.filter((d) => d.outcome === 'limited').map((d) => d.outcome === 'limited' && d.scope))).toEqual(new Set(['ip']));
  });

  it('rejects registrations from one network past 1,000 an hour', () => {
    const verdicts = Array.from({ length: 1020 }, (_, n) =>
      abuse.fraud.evaluateRegistration({ ip: `192.0.2.${(n % 250) + 1}`, networkKey: '192.0.2.0/24', email: `v${n}@example.com`, userAgent: browser }, 3_000_000 + n).verdict,
    );
    expect(verdicts.filter((v) => v === 'reject')).toHaveLength(20);
  });
});

describe('createAbuseControls with Postgres: replay store and cluster-wide fraud statistics', () => {
  let db: TestDatabase;
  beforeAll(async () => { db = await createTestDatabase(); });
  afterAll(async () => { await db?.drop(); });

  it('sums two nodes\' fraud hits and refuses a CAPTCHA replayed on the other node', async () => {
    // No timer flush during the test (a busy machine can take 100 ms between two lines): stop() flushes.
    const config = loadConfig({ LIVEVOTE_CAPTCHA_REPLAY_STORE: 'postgres', LIVEVOTE_CAPTCHA_DIFFICULTY: '1000', LIVEVOTE_FRAUD_STATS_FLUSH_MS: '3600000', LIVEVOTE_FRAUD_AUTOMATION_UA: 'reject' }).abuse;
    const nodeA = createAbuseControls({ config, captchaHmacKey, pool: db.pool });
    const nodeB = createAbuseControls({ config, captchaHmacKey, pool: db.pool });
    await nodeA.start();
    await nodeB.start();
    try {
      const electionId = randomUUID();
      nodeA.fraud.evaluateVote({ electionId, candidate: 1, networkKey: 'n', userAgent: 'curl/8.0' }, Date.now());
      nodeB.fraud.evaluateVote({ electionId, candidate: 1, networkKey: 'n', userAgent: 'curl/8.0' }, Date.now());
      nodeB.fraud.evaluateVote({ electionId, candidate: 1, networkKey: 'n', userAgent: '' }, Date.now());
      // Before any flush each node sees its own; after stop (final flush) both see the sum.
      expect(await nodeA.fraudStatsFor(electionId)).toEqual({ automation_user_agent: { flagged: 0, rejected: 1 } });
      await nodeA.stop();
      await nodeB.stop();
      expect(await nodeA.fraudStatsFor(electionId)).toEqual({
        automation_user_agent: { flagged: 0, rejected: 2 },
        empty_user_agent: { flagged: 1, rejected: 0 },
      });

      const token = await solveAltchaChallenge(await nodeA.altcha!.createChallenge());
      expect(await nodeA.captcha.verify(token, { clientIp: '192.0.2.1' })).toEqual({ ok: true });
      expect(await nodeB.captcha.verify(token, { clientIp: '192.0.2.1' })).toMatchObject({ ok: false, reason: 'already_used' });
    } finally {
      await nodeA.stop();
      await nodeB.stop();
    }
  });

  it('counts the hits of a flush that is under way when the statistics are read', async () => {
    const config = loadConfig({ LIVEVOTE_FRAUD_STATS_FLUSH_MS: '3600000', LIVEVOTE_FRAUD_AUTOMATION_UA: 'reject' }).abuse;
    // The flush's INSERT waits at this gate: its hits have left memory and are not in Postgres yet.
    let openGate!: () => void;
    const gate = new Promise<void>((resolve) => { openGate = resolve; });
    let flushWaiting = false;
    const pool = new Proxy(db.pool, {
      get(target, name, receiver) {
        if (name !== 'query') return Reflect.get(target, name, receiver);
        return async (text: string, values?: unknown[]) => {
          if (text.includes('INSERT INTO fraud_rule_hits')) {
            flushWaiting = true;
            await gate;
          }
          return target.query(text, values);
        };
      },
    });
    const node = createAbuseControls({ config, captchaHmacKey, pool });
    await node.start();
    const electionId = randomUUID();
    node.fraud.evaluateVote({ electionId, candidate: 1, networkKey: 'n', userAgent: 'curl/8.0' }, Date.now());
    const stopped = node.stop();
    await new Promise<void>((resolve) => { const poll = () => (flushWaiting ? resolve() : setTimeout(poll, 5)); poll(); });
    const read = node.fraudStatsFor(electionId);
    openGate();
    expect(await read).toEqual({ automation_user_agent: { flagged: 0, rejected: 1 } });
    await stopped;
    expect(await node.fraudStatsFor(electionId)).toEqual({ automation_user_agent: { flagged: 0, rejected: 1 } });
  });
});

const redisProblem = await testRedisProblem();

describe.skipIf(redisProblem !== undefined)(redisSuiteTitle('createAbuseControls with Redis (cluster)', redisProblem), () => {
  it('shares rate limits and CAPTCHA replays between nodes', async () => {
    const config = loadConfig({
      REDIS_URL: testRedisUrl,
      LIVEVOTE_RATE_LIMIT_BACKEND: 'redis',
      LIVEVOTE_CAPTCHA_REPLAY_STORE: 'redis',
      LIVEVOTE_CAPTCHA_DIFFICULTY: '1000',
      // A slow answer on a busy machine must not turn into the fail mode's verdict.
      LIVEVOTE_REDIS_COMMAND_TIMEOUT_MS: '60000',
    }).abuse;
    const redisKeyPrefix = `lvtest:${randomUUID()}:`;
    const nodeA = createAbuseControls({ config, captchaHmacKey, redisKeyPrefix });
    const nodeB = createAbuseControls({ config, captchaHmacKey, redisKeyPrefix });
    await nodeA.start();
    await nodeB.start();
    try {
      const subjects = { userKey: randomUUID(), ip: '198.51.100.1', networkKey: '198.51.100.0/24' };
      const nowMs = Date.now();
      const decisions = [];
      for (let i = 0; i < 6; i++) decisions.push(await (i % 2 === 0 ? nodeA : nodeB).limit('vote', subjects, nowMs));
      expect(decisions.map((d) => d.outcome)).toEqual(['allowed', 'allowed', 'allowed', 'allowed', 'allowed', 'limited']);

      const token = await solveAltchaChallenge(await nodeA.altcha!.createChallenge());
      expect(await nodeB.captcha.verify(token, { clientIp: '198.51.100.1' })).toEqual({ ok: true });
      expect(await nodeA.captcha.verify(token, { clientIp: '198.51.100.1' })).toMatchObject({ ok: false, reason: 'already_used' });
    } finally {
      await nodeA.stop();
      await nodeB.stop();
      const cleaner = new Redis(testRedisUrl);
      const keys = await cleaner.keys(`${redisKeyPrefix}*`);
      if (keys.length > 0) await cleaner.del(...keys);
      await cleaner.quit();
    }
  });
});
