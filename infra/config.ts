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

const envSchema = z.object({
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
  LIVEVOTE_TRUST_PROXY: z.enum(['true', 'false']).default('false'),
  LIVEVOTE_FLUSH_INTERVAL_MS: intFromEnv(1, 1000).default(4),
  LIVEVOTE_BATCH_ROWS_MAX: intFromEnv(1, 100_000).default(4000),
  LIVEVOTE_COMMITS_IN_FLIGHT_MAX: intFromEnv(1, 16).default(2),
  LIVEVOTE_COMMIT_DEADLINE_MS: intFromEnv(10, 60_000).default(2000),
  LIVEVOTE_PENDING_VOTES_MAX: intFromEnv(1, 1_000_000).default(20_000),
  LIVEVOTE_SNAPSHOT_INTERVAL_MS: intFromEnv(100, 3_600_000).default(10_000),
  LIVEVOTE_DB_POOL_MAX: intFromEnv(2, 200).default(10),
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
  readonly trustProxy: boolean;
  readonly flushIntervalMs: number;
  readonly batchRowsMax: number;
  readonly commitsInFlightMax: number;
  readonly commitDeadlineMs: number;
  readonly pendingVotesMax: number;
  readonly snapshotIntervalMs: number;
  readonly dbPoolMax: number;
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

export function loadConfig(env: NodeJS.ProcessEnv = process.env): Config {
  const parsed = envSchema.safeParse(withoutEmpty(env));
  if (!parsed.success) {
    throw new ConfigError(parsed.error.issues.map((i) => `${i.path.join('.')}: ${i.message}`));
  }
  const e = parsed.data;
  return {
    port: e.PORT,
    host: e.HOST,
    databaseUrl: e.DATABASE_URL,
    dataDir: path.resolve(e.LIVEVOTE_DATA_DIR),
    jwtSecret: e.LIVEVOTE_JWT_SECRET,
    adminEmail: e.LIVEVOTE_ADMIN_EMAIL?.toLowerCase(),
    adminPassword: e.LIVEVOTE_ADMIN_PASSWORD,
    logLevel: e.LOG_LEVEL,
    nodeId: e.LIVEVOTE_NODE_ID,
    availabilityZone: e.LIVEVOTE_AZ,
    trustProxy: e.LIVEVOTE_TRUST_PROXY === 'true',
    flushIntervalMs: e.LIVEVOTE_FLUSH_INTERVAL_MS,
    batchRowsMax: e.LIVEVOTE_BATCH_ROWS_MAX,
    commitsInFlightMax: e.LIVEVOTE_COMMITS_IN_FLIGHT_MAX,
    commitDeadlineMs: e.LIVEVOTE_COMMIT_DEADLINE_MS,
    pendingVotesMax: e.LIVEVOTE_PENDING_VOTES_MAX,
    snapshotIntervalMs: e.LIVEVOTE_SNAPSHOT_INTERVAL_MS,
    dbPoolMax: e.LIVEVOTE_DB_POOL_MAX,
  };
}
