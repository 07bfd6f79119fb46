// Token buckets in Redis for clusters: every node sees the same buckets. One Lua script per take
// reads every bucket, decides, and writes all of them or none, so two nodes taking the last token
// of a bucket at the same moment cannot both get it (Redis runs a script alone).
//
// Each bucket is a hash {t: tokens, u: updated ms} with a TTL equal to the time it needs to
// refill: once expired it would read as full anyway, so Redis forgets idle buckets for free.
//
// The clock is the caller's (`nowMs`): nodes are NTP-synchronised, and a node whose clock is
// behind a bucket's last write just sees no refill until it catches up (never extra tokens).
//
// Limits: the script touches several keys, so on Redis Cluster they would have to share a slot;
// this backend targets one primary (with replicas / Sentinel). It pipelines automatically when
// the client has `enableAutoPipelining`.
import { createHash } from 'node:crypto';
import type { Redis } from 'ioredis';
import { assertChecks, rateAllowed, rateAllowedDegraded, type BucketCheck, type RateDecision, type RateLimiter } from './rateLimit.ts';

// KEYS[i]: bucket i. ARGV[1]: now (ms); then per bucket: capacity, refill per ms, cost.
// Returns {1} when allowed, {0, i, waitMs} when bucket i refuses (the longest wait wins).
// Lua numbers become integers in the reply, so only integers are returned.
export const takeTokensScript = `
local now = tonumber(ARGV[1])
local n = #KEYS
local levels = {}
local updated = {}
local refusing = 0
local refusingWait = 0
for i = 1, n do
  local capacity = tonumber(ARGV[2 + (i - 1) * 3])
  local refill = tonumber(ARGV[3 + (i - 1) * 3])
  local cost = tonumber(ARGV[4 + (i - 1) * 3])
  local state = redis.call('HMGET', KEYS[i], 't', 'u')
  local tokens = tonumber(state[1])
  local u = tonumber(state[2])
  if tokens == nil or u == nil then
    tokens = capacity
    u = now
  end
  local elapsed = now - u
  if elapsed < 0 then elapsed = 0 end
  tokens = tokens + elapsed * refill
  if tokens > capacity then tokens = capacity end
  levels[i] = tokens
  if u > now then updated[i] = u else updated[i] = now end
  if tokens < cost then
    local wait = math.ceil((cost - tokens) / refill)
    if wait < 1 then wait = 1 end
    if refusing == 0 or wait > refusingWait then
      refusing = i
      refusingWait = wait
    end
  end
end
if refusing > 0 then
  return {0, refusing, refusingWait}
end
for i = 1, n do
  local capacity = tonumber(ARGV[2 + (i - 1) * 3])
  local refill = tonumber(ARGV[3 + (i - 1) * 3])
  local cost = tonumber(ARGV[4 + (i - 1) * 3])
  local left = levels[i] - cost
  redis.call('HSET', KEYS[i], 't', left, 'u', updated[i])
  redis.call('PEXPIRE', KEYS[i], math.ceil((capacity - left) / refill) + 1000)
end
return {1}
`;

const takeTokensSha = createHash('sha1').update(takeTokensScript).digest('hex');

export interface RedisRateLimiterOptions {
  /** Prepended to every key: one per deployment (and one per test run). */
  readonly keyPrefix: string;
  /**
   * Redis unreachable or erroring: 'open' lets the request through (decision marked degraded),
   * 'closed' answers limited for a second. Open by default: a cache outage should not take the
   * vote down, and the per-user duplicate check does not depend on it.
   */
  readonly failMode?: 'open' | 'closed';
  /** Called on each failed call (count it, log it). */
  readonly onError?: (error: unknown) => void;
}

export class RedisRateLimiter implements RateLimiter {
  private readonly failMode: 'open' | 'closed';

  constructor(
    private readonly redis: Redis,
    private readonly options: RedisRateLimiterOptions,
  ) {
    this.failMode = options.failMode ?? 'open';
  }

  async take(checks: readonly BucketCheck[], nowMs: number): Promise<RateDecision> {
    assertChecks(checks);
    if (checks.length === 0) return rateAllowed;
    const args: (string | number)[] = [];
    for (const check of checks) args.push(`${this.options.keyPrefix}${check.action}:${check.scope}:${check.key}`);
    args.push(Math.floor(nowMs));
    for (const check of checks) args.push(check.capacity, check.refillPerSecond / 1000, check.cost ?? 1);
    let reply: unknown;
    try {
      reply = await this.run(checks.length, args);
    } catch (error) {
      this.options.onError?.(error);
      if (this.failMode === 'open') return rateAllowedDegraded;
      const first = checks[0] as BucketCheck;
      return { outcome: 'limited', scope: first.scope, action: first.action, retryAfterMs: 1000 };
    }
    const result = reply as number[];
    if (result[0] === 1) return rateAllowed;
    const refusing = checks[(result[1] as number) - 1];
    if (!refusing) throw new Error(`rate limit script answered an unknown bucket: ${JSON.stringify(reply)}`);
    return { outcome: 'limited', scope: refusing.scope, action: refusing.action, retryAfterMs: result[2] as number };
  }

  /** EVALSHA, falling back to EVAL once when the server has not seen the script (restart, flush). */
  private async run(keyCount: number, args: (string | number)[]): Promise<unknown> {
    try {
      return await this.redis.evalsha(takeTokensSha, keyCount, ...args);
    } catch (error) {
      if (!(error instanceof Error) || !error.message.startsWith('NOSCRIPT')) throw error;
      return await this.redis.eval(takeTokensScript, keyCount, ...args);
    }
  }
}

export function redisRateLimiter(redis: Redis, options: RedisRateLimiterOptions): RedisRateLimiter {
  return new RedisRateLimiter(redis, options);
}
