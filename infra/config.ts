// Configuration comes from the environment only (12-factor), validated once at start-up so a
// bad value stops the process with a message that names the variable, before anything binds.
import { z } from 'zod';
import path from 'node:path';

const logLevels = ['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent'] as const;

const intFromEnv = (min: number, max: number) =>
  z
    .string()
    .regex(/^\d+$/, 'must be a whole number')
    .transform(Number)
    .pipe(z.number().int().min(min).max(max));

// --- Abuse controls (gateway/abuse): compact specs, so one variable says one whole limit. ---

const ruleActions = ['reject', 'flag', 'off'] as const;
type RuleActionSetting = (typeof ruleActions)[number];
const rateScopeNames = ['user', 'ip', 'network'] as const;

/** One scope's bucket, or 'off' to not limit that scope. */
export type BucketLimitSetting = { readonly capacity: number; readonly refillPerSecond: number } | 'off';
/** Overrides of gateway/abuse/rateLimit.ts defaultRateLimits for one action; unnamed scopes keep theirs. */
export type RateLimitOverrides = Readonly<Partial<Record<(typeof rateScopeNames)[number], BucketLimitSetting>>>;

/** `user=5/0.5,ip=50/20,network=off`: scope=capacity/refillPerSecond. */
const rateLimitSpec = z.string().transform((text, ctx): RateLimitOverrides => {
  const out: Partial<Record<(typeof rateScopeNames)[number], BucketLimitSetting>> = {};
  for (const item of text.split(',').map((part) => part.trim()).filter((part) => part !== '')) {
    const match = /^(user|ip|network)=(?:(off)|(\d+)\/(\d+(?:\.\d+)?))$/.exec(item);
    const capacity = Number(match?.[3]);
    const refillPerSecond = Number(match?.[4]);
    if (!match || (!match[2] && !(capacity >= 1 && refillPerSecond > 0))) {
      ctx.addIssue({ code: 'custom', message: `"${item}" must be scope=capacity/refillPerSecond (scope user|ip|network, capacity ≥ 1, rate > 0) or scope=off` });
      return z.NEVER;
    }
    out[match[1] as (typeof rateScopeNames)[number]] = match[2] ? 'off' : { capacity, refillPerSecond };
  }
  return out;
});

/** Overrides of a velocity rule in gateway/abuse/fraudRules.ts defaultFraudRulesConfig. */
export interface VelocityRuleSetting {
  readonly action: RuleActionSetting;
  readonly countMax?: number;
  readonly windowMs?: number;
}

/** `flag:10/3600`: action:countMax/windowSeconds, or just an action (`off`, `reject`). */
const velocitySpec = z.string().transform((text, ctx): VelocityRuleSetting => {
  const match = /^(reject|flag|off)(?::(\d+)\/(\d+))?$/.exec(text.trim());
  if (!match || (match[3] !== undefined && Number(match[3]) < 1)) {
    ctx.addIssue({ code: 'custom', message: 'must be action:countMax/windowSeconds (action reject|flag|off), e.g. flag:10/3600' });
    return z.NEVER;
  }
  const action = match[1] as RuleActionSetting;
  return match[2] === undefined ? { action } : { action, countMax: Number(match[2]), windowMs: Number(match[3]) * 1000 };
});

const commaList = z.string().transform((text) => text.split(',').map((part) => part.trim()).filter((part) => part !== ''));

/**
 * Measurement only (LIVEVOTE_MEASURE_WITHOUT, bench/features.ts): parts of a vote's work a knob
 * run switches off to measure what each costs. Never for a show: without them votes are not
 * authenticated, checked, fenced, audited or counted. Each is one decision where the app is composed.
 */
export const measuredFeatures = ['audit_chain', 'fence', 'metadata', 'metrics', 'token_check', 'body_checks'] as const;
export type MeasuredFeature = (typeof measuredFeatures)[number];

const measuredFeatureList = commaList.transform((names, ctx): MeasuredFeature[] => {
  const unknown = names.filter((name) => !(measuredFeatures as readonly string[]).includes(name));
  if (unknown.length > 0) {
    ctx.addIssue({ code: 'custom', message: `unknown feature ${unknown.map((n) => `"${n}"`).join(', ')}; known: ${measuredFeatures.join(', ')}` });
    return z.NEVER;
  }
  return [...new Set(names as MeasuredFeature[])];
});

const decimalFromEnv = (min: number, max: number) =>
  z
    .string()
    .regex(/^\d+(\.\d+)?$/, 'must be a number')
    .transform(Number)
    .pipe(z.number().min(min).max(max));

/** Every variable livevote reads, with its default (exported for the test that keeps the README's tables true). */
export const envSchema = z.object({
  PORT: intFromEnv(0, 65535).default(8080),
  HOST: z.string().min(1).default('127.0.0.1'),
  DATABASE_URL: z
    .string()
    .regex(/^postgres(ql)?:\/\//, 'must be a postgres:// or postgresql:// URL')
    .optional(),
  LIVEVOTE_DATA_DIR: z.string().min(1).default('./.livevote'),
  LIVEVOTE_JWT_SECRET: z.string().min(32, 'must be at least 32 characters').optional(),
  LIVEVOTE_ADMIN_EMAIL: z.email('must be an email address').optional(),
  LIVEVOTE_ADMIN_PASSWORD: z.string().min(12, 'must be at least 12 characters').optional(),
  LOG_LEVEL: z.enum(logLevels).default('info'),
  LIVEVOTE_NODE_ID: z
    .string()
    .regex(/^[a-z0-9-]{1,40}$/, 'must be 1-40 of a-z, 0-9, -')
    .optional(),
  LIVEVOTE_AZ: z.string().min(1).default('local'),
  // The cluster (cluster/): how peers reach this node, and the failure detector's clock.
  LIVEVOTE_ADVERTISE_URL: z.string().regex(/^https?:\/\/[^/\s]+$/, 'must be http(s)://host:port, no path').optional(),
  LIVEVOTE_HEARTBEAT_INTERVAL_MS: intFromEnv(10, 10_000).default(250),
  LIVEVOTE_DEAD_AFTER_MS: intFromEnv(50, 600_000).default(1500),
  LIVEVOTE_MOVES_IN_FLIGHT_MAX: intFromEnv(0, 1024).default(4),
  LIVEVOTE_FORWARD_TIMEOUT_MS: intFromEnv(10, 60_000).default(2000),
  LIVEVOTE_FORWARD_IN_FLIGHT_MAX: intFromEnv(1, 1_000_000).default(10_000),
  LIVEVOTE_LEASE_TTL_MS: intFromEnv(1000, 600_000).default(6000),
  LIVEVOTE_AUTO_BALANCE: z.enum(['on', 'off']).default('on'),
  LIVEVOTE_STOP_AWAITS_IDLE_CONNECTIONS: z.enum(['on', 'off']).default('on'),
  LIVEVOTE_REPLICAS: intFromEnv(0, 4).default(1),
  LIVEVOTE_ROUTE_RETRY_MS: intFromEnv(0, 60_000).default(3000),
  LIVEVOTE_FLUSH_INTERVAL_MS: intFromEnv(1, 1000).default(4),
  LIVEVOTE_BATCH_ROWS_MAX: intFromEnv(1, 100_000).default(4000),
  LIVEVOTE_COMMITS_IN_FLIGHT_MAX: intFromEnv(1, 16).default(2),
  LIVEVOTE_COMMIT_DEADLINE_MS: intFromEnv(10, 60_000).default(2000),
  LIVEVOTE_JOURNAL_THREAD: z.enum(['worker', 'main']).default('main'),
  LIVEVOTE_SPILL_QUEUE: z.enum(['file', 'sqs', 'off']).default('file'),
  LIVEVOTE_SPILL_AFTER_MS: intFromEnv(1, 60_000).optional(),
  LIVEVOTE_SPILL_DIR: z.string().min(1).optional(),
  LIVEVOTE_SPILL_FILE_IN_CLUSTER: z.enum(['refuse', 'allow']).default('refuse'),
  LIVEVOTE_SQS_QUEUE_URL: z.url('must be a URL').optional(),
  LIVEVOTE_SQS_DEAD_LETTER_QUEUE_URL: z.url('must be a URL').optional(),
  LIVEVOTE_PENDING_VOTES_MAX: intFromEnv(1, 1_000_000).default(20_000),
  LIVEVOTE_SNAPSHOT_INTERVAL_MS: intFromEnv(100, 3_600_000).default(10_000),
  LIVEVOTE_DB_POOL_MAX: intFromEnv(2, 200).default(10),
  LIVEVOTE_VOTE_CHECKS_THREAD: z.enum(['worker', 'main']).default('main'),
  LIVEVOTE_CAPTCHA_REGISTER_POLICY: z.enum(['off', 'always', 'on_risk']).default('off'),
  // Abuse controls (gateway/abuse). Defaults and their reasons live next to the code that uses them.
  REDIS_URL: z.string().regex(/^rediss?:\/\//, 'must be a redis:// or rediss:// URL').optional(),
  LIVEVOTE_REDIS_COMMAND_TIMEOUT_MS: intFromEnv(10, 60_000).default(250),
  LIVEVOTE_TRUSTED_PROXIES: commaList.default([]),
  LIVEVOTE_RATE_LIMIT_BACKEND: z.enum(['memory', 'redis']).default('memory'),
  LIVEVOTE_RATE_LIMIT_FAIL_MODE: z.enum(['open', 'closed']).default('open'),
  LIVEVOTE_RATE_LIMIT_BUCKETS_MAX: intFromEnv(1000, 100_000_000).default(1_000_000),
  LIVEVOTE_RATE_LIMIT_VOTE: rateLimitSpec.default({}),
  LIVEVOTE_RATE_LIMIT_REGISTER: rateLimitSpec.default({}),
  LIVEVOTE_RATE_LIMIT_REGISTER_CHALLENGED: rateLimitSpec.default({}),
  LIVEVOTE_RATE_LIMIT_LOGIN: rateLimitSpec.default({}),
  LIVEVOTE_CAPTCHA_PROVIDER: z.enum(['altcha', 'turnstile', 'hcaptcha', 'recaptcha']).default('altcha'),
  LIVEVOTE_CAPTCHA_SECRET: z.string().min(1).optional(),
  LIVEVOTE_CAPTCHA_SITEVERIFY_URL: z.url('must be a URL').optional(),
  LIVEVOTE_CAPTCHA_TIMEOUT_MS: intFromEnv(50, 30_000).default(2000),
  LIVEVOTE_CAPTCHA_FAIL_MODE: z.enum(['open', 'closed']).default('closed'),
  LIVEVOTE_CAPTCHA_MIN_SCORE: decimalFromEnv(0, 1).optional(),
  LIVEVOTE_CAPTCHA_EXPIRY_MS: intFromEnv(10_000, 3_600_000).default(300_000),
  LIVEVOTE_CAPTCHA_DIFFICULTY: intFromEnv(2, 10_000_000).default(50_000),
  LIVEVOTE_CAPTCHA_REPLAY_STORE: z.enum(['memory', 'redis', 'postgres']).default('memory'),
  LIVEVOTE_CAPTCHA_USED_MAX: intFromEnv(1000, 100_000_000).default(500_000),
  LIVEVOTE_FRAUD_REGISTER_IP: velocitySpec.optional(),
  LIVEVOTE_FRAUD_REGISTER_NETWORK: velocitySpec.optional(),
  LIVEVOTE_FRAUD_VOTE_BURST: velocitySpec.optional(),
  LIVEVOTE_FRAUD_DISPOSABLE_EMAIL: z.enum(ruleActions).default('reject'),
  LIVEVOTE_FRAUD_DISPOSABLE_DOMAINS: commaList.default([]),
  LIVEVOTE_FRAUD_EMPTY_UA: z.enum(ruleActions).default('flag'),
  LIVEVOTE_FRAUD_AUTOMATION_UA: z.enum(ruleActions).default('flag'),
  LIVEVOTE_FRAUD_AUTOMATION_UA_SIGNATURES: commaList.optional(),
  LIVEVOTE_FRAUD_COUNTERS_MAX: intFromEnv(1000, 100_000_000).default(200_000),
  LIVEVOTE_FRAUD_STATS_FLUSH_MS: intFromEnv(100, 3_600_000).default(5000),
  // Privacy (PRIVACY.md): how long hashed request metadata is kept, and its write buffer.
  LIVEVOTE_METADATA_RETENTION_DAYS: intFromEnv(1, 3650).default(30),
  LIVEVOTE_METADATA_BUFFER_ROWS_MAX: intFromEnv(1000, 10_000_000).default(100_000),
  // The audit chain's sealer (persistence/auditSealer.ts): how often each node appends committed batches.
  LIVEVOTE_AUDIT_SEAL_INTERVAL_MS: intFromEnv(10, 60_000).default(1000),
  // Measurement only (bench/features.ts): parts of the vote's work switched off, embedded Postgres only.
  LIVEVOTE_MEASURE_WITHOUT: measuredFeatureList.default([]),
});

export interface Config {
  readonly port: number;
  readonly host: string;
  /** Unset: an embedded Postgres is started with its data under dataDir. */
  readonly databaseUrl: string | undefined;
  readonly dataDir: string;
  readonly jwtSecret: string | undefined;
  readonly adminEmail: string | undefined;
  readonly adminPassword: string | undefined;
  readonly logLevel: (typeof logLevels)[number];
  readonly nodeId: string | undefined;
  readonly availabilityZone: string;
  readonly flushIntervalMs: number;
  readonly batchRowsMax: number;
  readonly commitsInFlightMax: number;
  readonly commitDeadlineMs: number;
  /** Where the group commit's Postgres client work runs (persistence/journalWorker.ts). */
  readonly journalThread: 'worker' | 'main';
  /** Where batches go when Postgres does not store them in time (persistence/spillQueues.ts). */
  readonly spill: SpillConfig;
  readonly pendingVotesMax: number;
  readonly snapshotIntervalMs: number;
  readonly dbPoolMax: number;
  /** Where a vote's token and body are checked: a worker thread (gateway/requestChecks.ts) or the main thread. */
  readonly voteChecksThread: 'worker' | 'main';
  /** The stop serves until keep-alive connections left open by earlier answers are closed (gateway/app.ts). */
  readonly stopAwaitsIdleConnections: boolean;
  readonly cluster: {
    /** How peers reach this node; default http://HOST:PORT (127.0.0.1 when HOST is a wildcard). */
    readonly advertiseUrl: string | undefined;
    readonly heartbeatIntervalMs: number;
    /** Silence after which a member is declared dead and its shards reassigned. */
    readonly deadAfterMs: number;
    /** Live shards handed from one node to another at once, cluster-wide. */
    readonly movesInFlightMax: number;
    readonly forwardTimeoutMs: number;
    /** Forwarded votes awaiting an answer, per peer. */
    readonly forwardInFlightMax: number;
    readonly leaseTtlMs: number;
    /** Move shards to a joining node (and after a leave) without an operator asking. */
    readonly autoBalance: boolean;
    /** A vote whose shard is between owners is retried inside the cluster this long before 503. */
    readonly routeRetryMs: number;
    /** Warm replicas per shard, placed in other AZs than the owner's (0: none, cold failover only). */
    readonly replicas: number;
  };
  /** CAPTCHA on registration: off, always, or when a fraud rule flags the attempt. */
  readonly registerCaptchaPolicy: 'off' | 'always' | 'on_risk';
  readonly abuse: AbuseConfig;
  readonly privacy: PrivacyConfig;
  /**
   * Measurement only (LIVEVOTE_MEASURE_WITHOUT): the parts of a vote's work switched off for a
   * knob run (bench/features.ts). Empty in every real deployment; the config refuses it unless
   * the node runs its own embedded Postgres.
   */
  /** Each node's audit sealer appends the batches committed since its last seal this often. */
  readonly auditSealIntervalMs: number;
  readonly measureWithout: ReadonlySet<MeasuredFeature>;
}

/** Settings of the privacy controls (persistence/voteMetadata.ts, persistence/privacy.ts). */
export interface PrivacyConfig {
  /** Hashed request metadata older than this is purged. */
  readonly metadataRetentionDays: number;
  /** Per table: metadata rows buffered before a write at most; beyond, they are dropped and counted. */
  readonly metadataBufferRowsMax: number;
}

/** Settings of gateway/abuse (rate limits, CAPTCHA, fraud rules). */
export interface AbuseConfig {
  /** Cluster mode: shared rate limits and CAPTCHA replay store. */
  readonly redisUrl: string | undefined;
  /** How long one Redis call of the abuse controls may take before its fail mode applies. */
  readonly redisCommandTimeoutMs: number;
  /** CIDRs (or addresses) of proxies whose X-Forwarded-For is believed; empty: socket address only. */
  readonly trustedProxies: readonly string[];
  readonly rateLimitBackend: 'memory' | 'redis';
  /** Redis unreachable: let requests through ('open') or answer 429 ('closed'). */
  readonly rateLimitFailMode: 'open' | 'closed';
  readonly rateLimitBucketsMax: number;
  readonly rateLimits: {
    readonly vote: RateLimitOverrides;
    readonly register: RateLimitOverrides;
    /** Registrations past the `register` allowance, each with a CAPTCHA. */
    readonly register_challenged: RateLimitOverrides;
    readonly login: RateLimitOverrides;
  };
  readonly captchaProvider: 'altcha' | 'turnstile' | 'hcaptcha' | 'recaptcha';
  /** The provider's siteverify secret; required for turnstile, hcaptcha and recaptcha. */
  readonly captchaSecret: string | undefined;
  readonly captchaSiteverifyUrl: string | undefined;
  readonly captchaTimeoutMs: number;
  /** Provider slow or down: let requests through ('open') or answer captcha_unavailable ('closed'). */
  readonly captchaFailMode: 'open' | 'closed';
  readonly captchaMinScore: number | undefined;
  readonly captchaExpiryMs: number;
  /** altcha: hashes a client computes per challenge. */
  readonly captchaDifficulty: number;
  readonly captchaReplayStore: 'memory' | 'redis' | 'postgres';
  readonly captchaUsedMax: number;
  readonly fraudRegisterPerIp: VelocityRuleSetting | undefined;
  readonly fraudRegisterPerNetwork: VelocityRuleSetting | undefined;
  readonly fraudVoteBurst: VelocityRuleSetting | undefined;
  readonly fraudDisposableEmail: RuleActionSetting;
  readonly fraudDisposableDomains: readonly string[];
  readonly fraudEmptyUserAgent: RuleActionSetting;
  readonly fraudAutomationUserAgent: RuleActionSetting;
  /** Replaces the built-in list when set. */
  readonly fraudAutomationSignatures: readonly string[] | undefined;
  readonly fraudCountersMax: number;
  readonly fraudStatsFlushMs: number;
}

export interface SpillConfig {
  readonly kind: 'file' | 'sqs' | 'off';
  /** A batch not stored this long after its oldest vote arrived is spilled (below commitDeadlineMs). */
  readonly afterMs: number;
  /** The file queue's directory. */
  readonly dir: string;
  readonly sqsQueueUrl: string | undefined;
  readonly sqsDeadLetterQueueUrl: string | undefined;
  /**
   * The file queue with other live members (cluster/spillGuard.ts): `refuse` (the default) stops
   * this node from starting into such a cluster, and stops it spilling while peers are alive;
   * `allow` accepts that a dead node's queued votes wait until it serves their shards again.
   */
  readonly fileInCluster: 'refuse' | 'allow';
}

export class ConfigError extends Error {
  constructor(readonly problems: readonly string[]) {
    super(`invalid configuration:\n${problems.map((p) => `  - ${p}`).join('\n')}`);
    this.name = 'ConfigError';
  }
}

/** Empty strings count as unset: `FOO= npm start` should mean the default, not an error. */
function withoutEmpty(env: NodeJS.ProcessEnv): Record<string, string> {
  const out: Record<string, string> = {};
  for (const [key, value] of Object.entries(env)) if (value !== undefined && value !== '') out[key] = value;
  return out;
}

/** Checks that involve two variables: reported like the others, naming both. */
function crossCheckProblems(e: z.infer<typeof envSchema>): string[] {
  const problems: string[] = [];
  if (e.LIVEVOTE_CAPTCHA_PROVIDER !== 'altcha' && !e.LIVEVOTE_CAPTCHA_SECRET) {
    problems.push(`LIVEVOTE_CAPTCHA_SECRET: required when LIVEVOTE_CAPTCHA_PROVIDER is ${e.LIVEVOTE_CAPTCHA_PROVIDER}`);
  }
  if (e.LIVEVOTE_RATE_LIMIT_BACKEND === 'redis' && !e.REDIS_URL) problems.push('REDIS_URL: required when LIVEVOTE_RATE_LIMIT_BACKEND is redis');
  if (e.LIVEVOTE_CAPTCHA_REPLAY_STORE === 'redis' && !e.REDIS_URL) problems.push('REDIS_URL: required when LIVEVOTE_CAPTCHA_REPLAY_STORE is redis');
  const spillAfterMs = e.LIVEVOTE_SPILL_AFTER_MS ?? Math.floor(e.LIVEVOTE_COMMIT_DEADLINE_MS / 2);
  if (spillAfterMs >= e.LIVEVOTE_COMMIT_DEADLINE_MS) problems.push('LIVEVOTE_SPILL_AFTER_MS: must be below LIVEVOTE_COMMIT_DEADLINE_MS (the queue needs time to confirm)');
  if (e.LIVEVOTE_SPILL_QUEUE === 'sqs' && (!e.LIVEVOTE_SQS_QUEUE_URL || !e.LIVEVOTE_SQS_DEAD_LETTER_QUEUE_URL)) {
    problems.push('LIVEVOTE_SQS_QUEUE_URL, LIVEVOTE_SQS_DEAD_LETTER_QUEUE_URL: required when LIVEVOTE_SPILL_QUEUE is sqs');
  }
  if (e.LIVEVOTE_DEAD_AFTER_MS < 2 * e.LIVEVOTE_HEARTBEAT_INTERVAL_MS) {
    problems.push('LIVEVOTE_DEAD_AFTER_MS: must be at least twice LIVEVOTE_HEARTBEAT_INTERVAL_MS');
  }
  problems.push(...measureWithoutProblems(e));
  return problems;
}

/**
 * LIVEVOTE_MEASURE_WITHOUT turns off what a show relies on (authentication, the fence, the audit
 * chain): only a node on its own embedded Postgres (how the bench runs livevote) may take it, so
 * a production node, which always names its database, cannot be started with it by accident.
 * The switches are made where the main thread composes the app: the worker threads' paths do not
 * have them, and a combination that would silently keep the work is refused instead.
 */
function measureWithoutProblems(e: z.infer<typeof envSchema>): string[] {
  const off = new Set(e.LIVEVOTE_MEASURE_WITHOUT);
  if (off.size === 0) return [];
  const problems: string[] = [];
  if (e.DATABASE_URL !== undefined) {
    problems.push('LIVEVOTE_MEASURE_WITHOUT: measurement only, refused with DATABASE_URL set (it switches off parts of every vote\'s checks and storage; only a node on its own embedded Postgres, as the bench runs one, may take it)');
  }
  if (e.LIVEVOTE_JOURNAL_THREAD === 'worker' && (off.has('audit_chain') || off.has('fence'))) {
    problems.push('LIVEVOTE_MEASURE_WITHOUT: audit_chain and fence are switched on the main thread\'s journal; not with LIVEVOTE_JOURNAL_THREAD=worker');
  }
  if (e.LIVEVOTE_VOTE_CHECKS_THREAD === 'worker' && (off.has('token_check') || off.has('body_checks'))) {
    problems.push('LIVEVOTE_MEASURE_WITHOUT: token_check and body_checks are switched on the main thread; not with LIVEVOTE_VOTE_CHECKS_THREAD=worker');
  }
  return problems;
}

export function loadConfig(env: NodeJS.ProcessEnv = process.env): Config {
  const raw = withoutEmpty(env);
  const parsed = envSchema.safeParse(raw);
  if (!parsed.success) {
    const invalid = new Set(parsed.error.issues.map((i) => String(i.path[0])));
    // The two-variable checks too, in the same error, on the values that did parse (the invalid
    // ones left out, as if unset), minus any that names an invalid variable: one round of fixes.
    const rest = envSchema.safeParse(Object.fromEntries(Object.entries(raw).filter(([key]) => !invalid.has(key))));
    const crossProblems = rest.success ? crossCheckProblems(rest.data).filter((p) => ![...invalid].some((name) => p.includes(name))) : [];
    throw new ConfigError([...parsed.error.issues.map((i) => `${i.path.join('.')}: ${i.message}`), ...crossProblems]);
  }
  const e = parsed.data;
  const problems = crossCheckProblems(e);
  if (problems.length > 0) throw new ConfigError(problems);
  const spillAfterMs = e.LIVEVOTE_SPILL_AFTER_MS ?? Math.floor(e.LIVEVOTE_COMMIT_DEADLINE_MS / 2);
  const dataDir = path.resolve(e.LIVEVOTE_DATA_DIR);
  return {
    port: e.PORT,
    host: e.HOST,
    databaseUrl: e.DATABASE_URL,
    dataDir,
    jwtSecret: e.LIVEVOTE_JWT_SECRET,
    adminEmail: e.LIVEVOTE_ADMIN_EMAIL?.toLowerCase(),
    adminPassword: e.LIVEVOTE_ADMIN_PASSWORD,
    logLevel: e.LOG_LEVEL,
    nodeId: e.LIVEVOTE_NODE_ID,
    availabilityZone: e.LIVEVOTE_AZ,
    flushIntervalMs: e.LIVEVOTE_FLUSH_INTERVAL_MS,
    batchRowsMax: e.LIVEVOTE_BATCH_ROWS_MAX,
    commitsInFlightMax: e.LIVEVOTE_COMMITS_IN_FLIGHT_MAX,
    commitDeadlineMs: e.LIVEVOTE_COMMIT_DEADLINE_MS,
    journalThread: e.LIVEVOTE_JOURNAL_THREAD,
    spill: {
      kind: e.LIVEVOTE_SPILL_QUEUE,
      afterMs: spillAfterMs,
      // Nodes of one cluster may share a data dir (the launcher's, the tests'): one queue per node id.
      dir: e.LIVEVOTE_SPILL_DIR === undefined
        ? path.join(dataDir, 'spill', ...(e.LIVEVOTE_NODE_ID === undefined ? [] : [e.LIVEVOTE_NODE_ID]))
        : path.resolve(e.LIVEVOTE_SPILL_DIR),
      sqsQueueUrl: e.LIVEVOTE_SQS_QUEUE_URL,
      sqsDeadLetterQueueUrl: e.LIVEVOTE_SQS_DEAD_LETTER_QUEUE_URL,
      fileInCluster: e.LIVEVOTE_SPILL_FILE_IN_CLUSTER,
    },
    pendingVotesMax: e.LIVEVOTE_PENDING_VOTES_MAX,
    snapshotIntervalMs: e.LIVEVOTE_SNAPSHOT_INTERVAL_MS,
    dbPoolMax: e.LIVEVOTE_DB_POOL_MAX,
    voteChecksThread: e.LIVEVOTE_VOTE_CHECKS_THREAD,
    stopAwaitsIdleConnections: e.LIVEVOTE_STOP_AWAITS_IDLE_CONNECTIONS === 'on',
    cluster: {
      advertiseUrl: e.LIVEVOTE_ADVERTISE_URL,
      heartbeatIntervalMs: e.LIVEVOTE_HEARTBEAT_INTERVAL_MS,
      deadAfterMs: e.LIVEVOTE_DEAD_AFTER_MS,
      movesInFlightMax: e.LIVEVOTE_MOVES_IN_FLIGHT_MAX,
      forwardTimeoutMs: e.LIVEVOTE_FORWARD_TIMEOUT_MS,
      forwardInFlightMax: e.LIVEVOTE_FORWARD_IN_FLIGHT_MAX,
      leaseTtlMs: e.LIVEVOTE_LEASE_TTL_MS,
      autoBalance: e.LIVEVOTE_AUTO_BALANCE === 'on',
      routeRetryMs: e.LIVEVOTE_ROUTE_RETRY_MS,
      replicas: e.LIVEVOTE_REPLICAS,
    },
    registerCaptchaPolicy: e.LIVEVOTE_CAPTCHA_REGISTER_POLICY,
    abuse: {
      redisUrl: e.REDIS_URL,
      redisCommandTimeoutMs: e.LIVEVOTE_REDIS_COMMAND_TIMEOUT_MS,
      trustedProxies: e.LIVEVOTE_TRUSTED_PROXIES,
      rateLimitBackend: e.LIVEVOTE_RATE_LIMIT_BACKEND,
      rateLimitFailMode: e.LIVEVOTE_RATE_LIMIT_FAIL_MODE,
      rateLimitBucketsMax: e.LIVEVOTE_RATE_LIMIT_BUCKETS_MAX,
      rateLimits: {
        vote: e.LIVEVOTE_RATE_LIMIT_VOTE, register: e.LIVEVOTE_RATE_LIMIT_REGISTER,
        register_challenged: e.LIVEVOTE_RATE_LIMIT_REGISTER_CHALLENGED, login: e.LIVEVOTE_RATE_LIMIT_LOGIN,
      },
      captchaProvider: e.LIVEVOTE_CAPTCHA_PROVIDER,
      captchaSecret: e.LIVEVOTE_CAPTCHA_SECRET,
      captchaSiteverifyUrl: e.LIVEVOTE_CAPTCHA_SITEVERIFY_URL,
      captchaTimeoutMs: e.LIVEVOTE_CAPTCHA_TIMEOUT_MS,
      captchaFailMode: e.LIVEVOTE_CAPTCHA_FAIL_MODE,
      captchaMinScore: e.LIVEVOTE_CAPTCHA_MIN_SCORE,
      captchaExpiryMs: e.LIVEVOTE_CAPTCHA_EXPIRY_MS,
      captchaDifficulty: e.LIVEVOTE_CAPTCHA_DIFFICULTY,
      captchaReplayStore: e.LIVEVOTE_CAPTCHA_REPLAY_STORE,
      captchaUsedMax: e.LIVEVOTE_CAPTCHA_USED_MAX,
      fraudRegisterPerIp: e.LIVEVOTE_FRAUD_REGISTER_IP,
      fraudRegisterPerNetwork: e.LIVEVOTE_FRAUD_REGISTER_NETWORK,
      fraudVoteBurst: e.LIVEVOTE_FRAUD_VOTE_BURST,
      fraudDisposableEmail: e.LIVEVOTE_FRAUD_DISPOSABLE_EMAIL,
      fraudDisposableDomains: e.LIVEVOTE_FRAUD_DISPOSABLE_DOMAINS,
      fraudEmptyUserAgent: e.LIVEVOTE_FRAUD_EMPTY_UA,
      fraudAutomationUserAgent: e.LIVEVOTE_FRAUD_AUTOMATION_UA,
      fraudAutomationSignatures: e.LIVEVOTE_FRAUD_AUTOMATION_UA_SIGNATURES,
      fraudCountersMax: e.LIVEVOTE_FRAUD_COUNTERS_MAX,
      fraudStatsFlushMs: e.LIVEVOTE_FRAUD_STATS_FLUSH_MS,
    },
    privacy: {
      metadataRetentionDays: e.LIVEVOTE_METADATA_RETENTION_DAYS,
      metadataBufferRowsMax: e.LIVEVOTE_METADATA_BUFFER_ROWS_MAX,
    },
    auditSealIntervalMs: e.LIVEVOTE_AUDIT_SEAL_INTERVAL_MS,
    measureWithout: new Set(e.LIVEVOTE_MEASURE_WITHOUT),
  };
}
