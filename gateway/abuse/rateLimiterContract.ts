// The behaviour every RateLimiter backend must have, as one suite each backend runs (memory in
// embedded mode, Redis in clusters): the route cannot tell which one it is talking to.
import { randomUUID } from 'node:crypto';
import { expect, it } from 'vitest';
import type { BucketCheck, RateAction, RateLimiter, RateScope } from './rateLimit.ts';

export interface ContractSubject {
  readonly limiter: RateLimiter;
  close(): Promise<void>;
}

function check(scope: RateScope, key: string, capacity: number, refillPerSecond: number, action: RateAction = 'vote'): BucketCheck {
  return { action, scope, key, capacity, refillPerSecond };
}

export function rateLimiterContract(name: string, make: () => Promise<ContractSubject>): void {
  // Each test gets keys of its own, so backends that share state (one Redis) never collide.
  const fresh = () => randomUUID();
  const t0 = 1_700_000_000_000;

  async function withLimiter(work: (limiter: RateLimiter) => Promise<void>): Promise<void> {
    const subject = await make();
    try {
      await work(subject.limiter);
    } finally {
      await subject.close();
    }
  }

  it(`${name}: allows a full burst, then limits with the time to the next token`, () =>
    withLimiter(async (limiter) => {
      const user = [check('user', fresh(), 3, 2)];
      for (let i = 0; i < 3; i++) expect(await limiter.take(user, t0)).toEqual({ outcome: 'allowed' });
      expect(await limiter.take(user, t0)).toEqual({ outcome: 'limited', scope: 'user', action: 'vote', retryAfterMs: 500 });
    }));

  it(`${name}: refills at refillPerSecond and never above capacity`, () =>
    withLimiter(async (limiter) => {
      const user = [check('user', fresh(), 2, 4)];
      await limiter.take(user, t0);
      await limiter.take(user, t0);
      expect((await limiter.take(user, t0 + 100)).outcome).toBe('limited');
      expect((await limiter.take(user, t0 + 250)).outcome).toBe('allowed');
      expect((await limiter.take(user, t0 + 250)).outcome).toBe('limited');
      // An hour idle still gives only `capacity` tokens.
      const later = t0 + 3_600_000;
      expect((await limiter.take(user, later)).outcome).toBe('allowed');
      expect((await limiter.take(user, later)).outcome).toBe('allowed');
      expect((await limiter.take(user, later)).outcome).toBe('limited');
    }));

  it(`${name}: handles fractional refill rates`, () =>
    withLimiter(async (limiter) => {
      const slow = [check('ip', fresh(), 1, 0.5, 'register')];
      expect((await limiter.take(slow, t0)).outcome).toBe('allowed');
      expect(await limiter.take(slow, t0 + 1000)).toEqual({ outcome: 'limited', scope: 'ip', action: 'register', retryAfterMs: 1000 });
      expect((await limiter.take(slow, t0 + 2000)).outcome).toBe('allowed');
    }));

  it(`${name}: is all-or-nothing: a refusing IP bucket takes nothing from the user bucket`, () =>
    withLimiter(async (limiter) => {
      const userKey = fresh();
      const ipKey = fresh();
      const ipOnly = [check('ip', ipKey, 1, 1)];
      expect((await limiter.take(ipOnly, t0)).outcome).toBe('allowed');
      const both = [check('user', userKey, 2, 1), check('ip', ipKey, 1, 1)];
      for (let i = 0; i < 5; i++) {
        const decision = await limiter.take(both, t0);
        expect(decision).toMatchObject({ outcome: 'limited', scope: 'ip' });
      }
      // The user bucket is still full: both of its tokens are there.
      const userOnly = [check('user', userKey, 2, 1)];
      expect((await limiter.take(userOnly, t0)).outcome).toBe('allowed');
      expect((await limiter.take(userOnly, t0)).outcome).toBe('allowed');
      expect((await limiter.take(userOnly, t0)).outcome).toBe('limited');
    }));

  it(`${name}: names the bucket that frees up last when several refuse`, () =>
    withLimiter(async (limiter) => {
      const fast = check('ip', fresh(), 1, 10);
      const slow = check('network', fresh(), 1, 0.1);
      expect((await limiter.take([fast, slow], t0)).outcome).toBe('allowed');
      expect(await limiter.take([fast, slow], t0)).toEqual({ outcome: 'limited', scope: 'network', action: 'vote', retryAfterMs: 10_000 });
    }));

  it(`${name}: keeps actions, scopes and keys apart`, () =>
    withLimiter(async (limiter) => {
      const key = fresh();
      expect((await limiter.take([check('ip', key, 1, 1, 'vote')], t0)).outcome).toBe('allowed');
      expect((await limiter.take([check('ip', key, 1, 1, 'vote')], t0)).outcome).toBe('limited');
      expect((await limiter.take([check('ip', key, 1, 1, 'login')], t0)).outcome).toBe('allowed');
      expect((await limiter.take([check('network', key, 1, 1, 'vote')], t0)).outcome).toBe('allowed');
      expect((await limiter.take([check('ip', fresh(), 1, 1, 'vote')], t0)).outcome).toBe('allowed');
    }));

  it(`${name}: mints no tokens when the clock steps back`, () =>
    withLimiter(async (limiter) => {
      const user = [check('user', fresh(), 1, 1)];
      expect((await limiter.take(user, t0 + 10_000)).outcome).toBe('allowed');
      expect((await limiter.take(user, t0)).outcome).toBe('limited');
      expect((await limiter.take(user, t0 + 10_500)).outcome).toBe('limited');
      expect((await limiter.take(user, t0 + 11_000)).outcome).toBe('allowed');
    }));

  it(`${name}: charges cost tokens`, () =>
    withLimiter(async (limiter) => {
      const key = fresh();
      const heavy: BucketCheck[] = [{ ...check('ip', key, 5, 1), cost: 3 }];
      expect((await limiter.take(heavy, t0)).outcome).toBe('allowed');
      expect(await limiter.take(heavy, t0)).toEqual({ outcome: 'limited', scope: 'ip', action: 'vote', retryAfterMs: 1000 });
    }));

  it(`${name}: never lets a concurrent burst past capacity (10× burst from one IP)`, () =>
    withLimiter(async (limiter) => {
      const checks = [check('ip', fresh(), 20, 1)];
      const decisions = await Promise.all(Array.from({ length: 200 }, () => limiter.take(checks, t0)));
      expect(decisions.filter((d) => d.outcome === 'allowed')).toHaveLength(20);
      expect(decisions.filter((d) => d.outcome === 'limited')).toHaveLength(180);
    }));

  it(`${name}: allows a request that checks no bucket`, () =>
    withLimiter(async (limiter) => {
      expect((await limiter.take([], t0)).outcome).toBe('allowed');
    }));

  it(`${name}: refuses limits no request could pass`, () =>
    withLimiter(async (limiter) => {
      await expect(async () => limiter.take([check('ip', fresh(), 1, 0)], t0)).rejects.toThrow(/refillPerSecond/);
      await expect(async () => limiter.take([{ ...check('ip', fresh(), 1, 1), cost: 2 }], t0)).rejects.toThrow(/cost/);
    }));
}
