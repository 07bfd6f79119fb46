// The abuse controls as one object the routes are given: client address, rate limits, fraud
// rules, CAPTCHA, built from config.abuse and the secrets at start-up.
//
// How a route uses them, cheapest first so a flood is turned away before it costs anything:
//
//   1. address    const address = abuse.clientAddress.resolve(socketIp, forwardedFor)
//                 (read X-Forwarded-For in the synchronous part of the uWS handler, and only
//                 when abuse.clientAddress.honoursForwardedFor)
//   2. rate limit const limit = await abuse.limit('vote', { userKey: principal.userId, ip: address.ip, networkKey: address.networkKey })
//                 if (limit.outcome === 'limited') throw rateLimitedError(limit)        → 429 + Retry-After
//   3. fraud      const fraud = abuse.fraud.evaluateVote({ electionId, candidate, networkKey: address.networkKey, userAgent }, Date.now())
//                 if (fraud.verdict === 'reject') throw new ApiError('fraud_rejected')   → 403
//   4. CAPTCHA    const gate = await abuse.checkCaptcha(election.captchaPolicy, fraud.verdict === 'flag', body.captcha, { clientIp: address.ip })
//                 if (!gate.ok) throw captchaError(gate)                                 → 400 / 403 / 503
//   5. the vote itself.
//
// Register is the same with abuse.limit('register', { ip, networkKey }) (past it: a CAPTCHA,
// and abuse.limit('register_challenged', …) refuses; see feature.ts) and
// abuse.fraud.evaluateRegistration({ ip, networkKey, email, userAgent }, now); login with
// abuse.limit('login', { userKey: emailHash, ip, networkKey }) and abuse.fraud.evaluateLogin.
// GET /api/v1/captcha/challenge answers `await abuse.altcha.createChallenge()` (Cache-Control:
// no-store); abuse.altcha is undefined when an external provider is configured.
// The statistics endpoint adds `await abuse.fraudStatsFor(electionId)`.
import { Redis } from 'ioredis';
import { Counter, type Registry } from 'prom-client';
import { ConfigError, type AbuseConfig, type BucketLimitSetting, type RateLimitOverrides, type VelocityRuleSetting } from '../../infra/config.ts';
import type { Logger } from '../../infra/logger.ts';
import type { Pool } from '../../persistence/db.ts';
import { addFraudRuleHits, fraudRuleHitsFor } from '../../persistence/abuse.ts';
import { ClientAddressResolver, InvalidTrustedProxyError } from './clientAddress.ts';
import {
  assertRateLimits,
  bucketChecksFor,
  defaultRateLimits,
  MemoryRateLimiter,
  rateActions,
  rateScopes,
  type BucketLimit,
  type RateAction,
  type RateDecision,
  type RateLimiter,
  type RateLimits,
  type RateScope,
  type RateSubjects,
} from './rateLimit.ts';
import { RedisRateLimiter } from './redisRateLimiter.ts';
import {
  AltchaCaptcha,
  checkCaptcha,
  SiteverifyCaptcha,
  type CaptchaContext,
  type CaptchaGateOutcome,
  type CaptchaOutcome,
  type CaptchaPolicy,
  type CaptchaVerifier,
} from './captcha.ts';
import { MemoryUsedChallengeStore, PostgresUsedChallengeStore, RedisUsedChallengeStore, type UsedChallengeStore } from './captchaReplay.ts';
import {
  defaultAutomationSignatures,
  defaultFraudRulesConfig,
  FraudRules,
  FraudStats,
  fraudRuleNames,
  type FraudRuleCounts,
  type FraudRuleName,
  type FraudRulesConfig,
  type VelocityRule,
} from './fraudRules.ts';

export * from './clientAddress.ts';
export * from './rateLimit.ts';
export * from './redisRateLimiter.ts';
export * from './captcha.ts';
export * from './captchaReplay.ts';
export * from './fraudRules.ts';

export interface AbuseControlsDeps {
  readonly config: AbuseConfig;
  /** Signs altcha challenges: a secret of ≥ 32 characters that every node shares. */
  readonly captchaHmacKey: string;
  /** The app's registry: rate limit, CAPTCHA and fraud counters appear in /metrics. */
  readonly registry?: Registry;
  /** For the Postgres CAPTCHA replay store and cluster-wide fraud statistics. */
  readonly pool?: Pool;
  /** A client to use instead of one made from config.redisUrl (the caller then closes it). */
  readonly redis?: Redis;
  readonly log?: Logger;
  /** Unique per deployment sharing one Redis. */
  readonly redisKeyPrefix?: string;
}

export interface AbuseControls {
  readonly clientAddress: ClientAddressResolver;
  /** The limits in force: defaults with config overrides applied. */
  readonly rateLimits: RateLimits;
  readonly rateLimiter: RateLimiter;
  /** Takes a token from every bucket `action` has for these subjects; counts refusals. */
  limit(action: RateAction, subjects: RateSubjects, nowMs?: number): RateDecision | Promise<RateDecision>;
  /** The configured provider, counted in livevote_captcha_verifications_total. */
  readonly captcha: CaptchaVerifier;
  /** The self-hosted proof of work, when it is the provider: serves the challenge endpoint. */
  readonly altcha: AltchaCaptcha | undefined;
  /** Policy, presence and verification; synchronous when no CAPTCHA is needed. */
  checkCaptcha(policy: CaptchaPolicy, riskFlagged: boolean, token: string | undefined, context: CaptchaContext): CaptchaGateOutcome | Promise<CaptchaGateOutcome>;
  readonly fraud: FraudRules;
  /**
   * Fraud rule hits for one election's votes ('' for registration and login), cluster-wide when
   * a pool was given (stored counts plus this node's not yet flushed), else this node's.
   */
  fraudStatsFor(electionId: string): Promise<FraudRuleCounts>;
  /** Starts the timers (stats flush, replay purge) and connects an owned Redis. */
  start(): Promise<void>;
  /** Stops the timers, flushes the stats, closes an owned Redis. */
  stop(): Promise<void>;
}

/** Defaults with one action's overrides applied; 'off' removes the scope. */
export function applyRateLimitOverrides(defaults: RateLimits, overrides: Readonly<Record<RateAction, RateLimitOverrides>>): RateLimits {
  const out = {} as Record<RateAction, Partial<Record<RateScope, BucketLimit>>>;
  for (const action of rateActions) {
    const perScope: Partial<Record<RateScope, BucketLimit>> = { ...defaults[action] };
    for (const scope of rateScopes) {
      const setting: BucketLimitSetting | undefined = overrides[action][scope];
      if (setting === 'off') delete perScope[scope];
      else if (setting) perScope[scope] = setting;
    }
    out[action] = perScope;
  }
  return out;
}

function velocity(defaults: VelocityRule, setting: VelocityRuleSetting | undefined): VelocityRule {
  if (!setting) return defaults;
  return { action: setting.action, countMax: setting.countMax ?? defaults.countMax, windowMs: setting.windowMs ?? defaults.windowMs };
}

export function fraudRulesConfigFrom(config: AbuseConfig): FraudRulesConfig {
  const d = defaultFraudRulesConfig;
  return {
    registrationPerIp: velocity(d.registrationPerIp, config.fraudRegisterPerIp),
    registrationPerNetwork: velocity(d.registrationPerNetwork, config.fraudRegisterPerNetwork),
    disposableEmail: { action: config.fraudDisposableEmail, extraDomains: config.fraudDisposableDomains },
    emptyUserAgent: { action: config.fraudEmptyUserAgent },
    automationUserAgent: {
      action: config.fraudAutomationUserAgent,
      signatures: (config.fraudAutomationSignatures ?? defaultAutomationSignatures).map((s) => s.toLowerCase()),
    },
    voteBurst: velocity(d.voteBurst, config.fraudVoteBurst),
    countersMax: config.fraudCountersMax,
  };
}

/** Logs a failing backend at most once per interval: at 50k votes/s one line per call would drown the logs. */
function throttledWarn(log: Logger | undefined, message: string, intervalMs = 10_000): (error: unknown) => void {
  let lastMs = 0;
  let suppressed = 0;
  return (error) => {
    const nowMs = Date.now();
    if (nowMs - lastMs < intervalMs) {
      suppressed++;
      return;
    }
    log?.warn({ err: error, suppressed }, message);
    lastMs = nowMs;
    suppressed = 0;
  };
}

/** Reads of the fraud statistics before one that no flush overlapped is given up on (its counts may then be late). */
const fraudStatsReadAttemptsMax = 5;

export function createAbuseControls(deps: AbuseControlsDeps): AbuseControls {
  const { config, log } = deps;
  const keyPrefix = deps.redisKeyPrefix ?? 'livevote:';

  let clientAddress: ClientAddressResolver;
  try {
    clientAddress = new ClientAddressResolver(config.trustedProxies);
  } catch (error) {
    if (error instanceof InvalidTrustedProxyError) throw new ConfigError([`LIVEVOTE_TRUSTED_PROXIES: ${error.message}`]);
    throw error;
  }

  const rateLimits = applyRateLimitOverrides(defaultRateLimits, config.rateLimits);
  assertRateLimits(rateLimits);

  const needsRedis = config.rateLimitBackend === 'redis' || config.captchaReplayStore === 'redis';
  let ownedRedis: Redis | undefined;
  let redis = deps.redis;
  if (needsRedis && !redis) {
    if (!config.redisUrl) throw new ConfigError(['REDIS_URL: required by the configured rate limit backend or CAPTCHA replay store']);
    // Fail fast rather than queue: a vote waits for no Redis reconnect; the fail modes decide.
    ownedRedis = new Redis(config.redisUrl, {
      lazyConnect: true,
      enableAutoPipelining: true,
      enableOfflineQueue: false,
      commandTimeout: config.redisCommandTimeoutMs,
      maxRetriesPerRequest: 1,
    });
    ownedRedis.on('error', throttledWarn(log, 'redis connection error (abuse controls)'));
    redis = ownedRedis;
  }

  const backendErrors = deps.registry
    ? new Counter({
        name: 'livevote_abuse_backend_errors_total',
        help: 'Failed calls from the abuse controls to Redis or Postgres, by backend',
        labelNames: ['backend'] as const,
        registers: [deps.registry],
      })
    : undefined;
  const rateLimitedTotal = deps.registry
    ? new Counter({
        name: 'livevote_rate_limited_total',
        help: 'Requests over a rate limit, by action and scope: refused with 429, except action register (asked for a CAPTCHA instead)',
        labelNames: ['action', 'scope'] as const,
        registers: [deps.registry],
      })
    : undefined;
  const rateLimitDegradedTotal = deps.registry
    ? new Counter({
        name: 'livevote_rate_limit_degraded_total',
        help: 'Requests let through unchecked because the rate limit backend failed (fail-open)',
        labelNames: ['action'] as const,
        registers: [deps.registry],
      })
    : undefined;
  const captchaTotal = deps.registry
    ? new Counter({
        name: 'livevote_captcha_verifications_total',
        help: 'CAPTCHA verifications by provider and result (ok, degraded, or the failure reason)',
        labelNames: ['provider', 'result'] as const,
        registers: [deps.registry],
      })
    : undefined;

  const warnRedis = throttledWarn(log, 'redis call failed (abuse controls)');
  const onRedisError = (error: unknown) => {
    backendErrors?.inc({ backend: 'redis' });
    warnRedis(error);
  };
  const warnPostgres = throttledWarn(log, 'postgres call failed (abuse controls)');
  const onPostgresError = (error: unknown) => {
    backendErrors?.inc({ backend: 'postgres' });
    warnPostgres(error);
  };

  const rateLimiter: RateLimiter =
    config.rateLimitBackend === 'redis'
      ? new RedisRateLimiter(redis as Redis, { keyPrefix: `${keyPrefix}rl:`, failMode: config.rateLimitFailMode, onError: onRedisError })
      : new MemoryRateLimiter({ bucketsMax: config.rateLimitBucketsMax });

  const countDecision = (action: RateAction, decision: RateDecision): RateDecision => {
    if (decision.outcome === 'limited') rateLimitedTotal?.inc({ action, scope: decision.scope });
    else if (decision.degraded) rateLimitDegradedTotal?.inc({ action });
    return decision;
  };

  let postgresReplay: PostgresUsedChallengeStore | undefined;
  let usedChallenges: UsedChallengeStore;
  switch (config.captchaReplayStore) {
    case 'memory':
      usedChallenges = new MemoryUsedChallengeStore(config.captchaUsedMax);
      break;
    case 'redis':
      usedChallenges = new RedisUsedChallengeStore(redis as Redis, keyPrefix, onRedisError);
      break;
    case 'postgres':
      if (!deps.pool) throw new ConfigError(['LIVEVOTE_CAPTCHA_REPLAY_STORE: postgres needs a database pool']);
      postgresReplay = new PostgresUsedChallengeStore(deps.pool, onPostgresError);
      usedChallenges = postgresReplay;
      break;
  }

  let altcha: AltchaCaptcha | undefined;
  let verifier: CaptchaVerifier;
  if (config.captchaProvider === 'altcha') {
    altcha = new AltchaCaptcha({
      hmacKey: deps.captchaHmacKey,
      expiryMs: config.captchaExpiryMs,
      difficulty: config.captchaDifficulty,
      usedChallenges,
    });
    verifier = altcha;
  } else {
    verifier = new SiteverifyCaptcha({
      provider: config.captchaProvider,
      secret: config.captchaSecret ?? '',
      timeoutMs: config.captchaTimeoutMs,
      failMode: config.captchaFailMode,
      ...(config.captchaSiteverifyUrl ? { siteverifyUrl: config.captchaSiteverifyUrl } : {}),
      ...(config.captchaMinScore !== undefined ? { minScore: config.captchaMinScore } : {}),
    });
  }
  const inner = verifier;
  const captcha: CaptchaVerifier = {
    provider: inner.provider,
    async verify(token, context): Promise<CaptchaOutcome> {
      const outcome = await inner.verify(token, context);
      captchaTotal?.inc({ provider: inner.provider, result: outcome.ok ? (outcome.degraded ? 'degraded' : 'ok') : outcome.reason });
      return outcome;
    },
  };

  const stats = new FraudStats(deps.registry ? { registry: deps.registry } : {});
  const fraud = new FraudRules(fraudRulesConfigFrom(config), stats);

  let flushTimer: NodeJS.Timeout | undefined;
  let purgeTimer: NodeJS.Timeout | undefined;
  let flushing: Promise<void> | undefined;
  /** Flushes started so far: a read of the statistics that saw this change fell between two places. */
  let flushesStarted = 0;

  const flushStats = async (): Promise<void> => {
    if (!deps.pool || flushing) return flushing;
    const deltas = stats.takeDeltas();
    if (deltas.length === 0) return;
    const pool = deps.pool;
    flushesStarted++;
    flushing = addFraudRuleHits(pool, deltas)
      .catch((error: unknown) => {
        // Kept for the next flush: counts are late, never lost while the process lives.
        stats.restoreDeltas(deltas);
        onPostgresError(error);
      })
      .finally(() => {
        flushing = undefined;
      });
    return flushing;
  };

  return {
    clientAddress,
    rateLimits,
    rateLimiter,
    limit(action, subjects, nowMs = Date.now()) {
      const decision = rateLimiter.take(bucketChecksFor(rateLimits, action, subjects), nowMs);
      return decision instanceof Promise ? decision.then((d) => countDecision(action, d)) : countDecision(action, decision);
    },
    captcha,
    altcha,
    checkCaptcha(policy, riskFlagged, token, context) {
      const outcome = checkCaptcha(captcha, policy, riskFlagged, token, context);
      if (!(outcome instanceof Promise) && !outcome.ok) captchaTotal?.inc({ provider: captcha.provider, result: 'missing' });
      return outcome;
    },
    fraud,
    async fraudStatsFor(electionId) {
      if (!deps.pool) return stats.forElection(electionId);
      // Stored + pending, read with no flush in between: a flush takes its hits out of pending
      // before Postgres has them, so a read across one would miss them. Flushes are fraudStatsFlushMs
      // apart and a read takes one query, so a few attempts suffice; past them, counts may be late.
      let rows: Awaited<ReturnType<typeof fraudRuleHitsFor>>;
      for (let attempt = 1; ; attempt++) {
        await flushing;
        const flushesBefore = flushesStarted;
        rows = await fraudRuleHitsFor(deps.pool, electionId);
        if (flushesStarted === flushesBefore || attempt >= fraudStatsReadAttemptsMax) break;
      }
      const counts: FraudRuleCounts = {};
      const add = (rule: string, action: 'flag' | 'reject', hits: number) => {
        if (!(fraudRuleNames as readonly string[]).includes(rule)) return;
        const entry = counts[rule as FraudRuleName] ?? (counts[rule as FraudRuleName] = { flagged: 0, rejected: 0 });
        if (action === 'reject') entry.rejected += hits;
        else entry.flagged += hits;
      };
      for (const row of rows) add(row.rule, row.action, row.hits);
      for (const delta of stats.pendingFor(electionId)) add(delta.rule, delta.action, delta.hits);
      return counts;
    },
    async start() {
      if (ownedRedis) {
        await ownedRedis.connect().catch((error: unknown) => {
          // Not fatal: the fail modes cover a Redis that is down; ioredis keeps reconnecting.
          log?.warn({ err: error }, 'redis not reachable at start (abuse controls); fail modes apply until it is');
        });
      }
      if (deps.pool) {
        flushTimer = setInterval(() => void flushStats(), config.fraudStatsFlushMs);
        flushTimer.unref();
      }
      if (postgresReplay) {
        const store = postgresReplay;
        purgeTimer = setInterval(() => {
          store.purgeExpired(Date.now()).catch(onPostgresError);
        }, 60_000);
        purgeTimer.unref();
      }
    },
    async stop() {
      if (flushTimer) clearInterval(flushTimer);
      if (purgeTimer) clearInterval(purgeTimer);
      flushTimer = undefined;
      purgeTimer = undefined;
      await flushing;
      await flushStats();
      if (ownedRedis) {
        await ownedRedis.quit().catch(() => ownedRedis?.disconnect());
      }
    },
  };
}
