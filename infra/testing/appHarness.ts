// An app built in-process on its own database and listening on a free port: the harness most
// integration tests use (fastify's "build without listening, drive in-process" habit).
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { buildApp, type LivevoteApp } from '../../gateway/app.ts';
import { createTestDatabase, type TestDatabase } from '../../persistence/testDatabase.ts';
import { loadConfig, type Config } from '../config.ts';
import { recordingLogger } from './failureLogs.ts';
import type { Secrets } from '../secrets.ts';

export const testAdmin = { email: 'admin@test.livevote', password: 'admin password for tests' };

/**
 * Tests of everything but the abuse controls drive many requests from 127.0.0.1 in a burst;
 * per-IP rate limits and registration velocity rules would (rightly) refuse them. The abuse
 * tests (gateway/abuse/*.test.ts, gateway/abuse.e2e.test.ts) run with the defaults instead.
 */
export const functionalTestEnv: Readonly<Record<string, string>> = {
  LIVEVOTE_RATE_LIMIT_VOTE: 'user=off,ip=off,network=off',
  LIVEVOTE_RATE_LIMIT_REGISTER: 'ip=off,network=off',
  LIVEVOTE_RATE_LIMIT_LOGIN: 'user=off,ip=off,network=off',
  LIVEVOTE_FRAUD_REGISTER_IP: 'off',
  LIVEVOTE_FRAUD_REGISTER_NETWORK: 'off',
  LIVEVOTE_FRAUD_VOTE_BURST: 'off',
  // The spill queue's directory belongs to one node; apps built side by side here would share
  // ./.livevote/spill. startAppHarness gives each app a directory of its own instead.
  LIVEVOTE_SPILL_QUEUE: 'off',
};

export interface AppHarness {
  readonly app: LivevoteApp;
  readonly db: TestDatabase;
  readonly baseUrl: string;
  readonly port: number;
  readonly secrets: Secrets;
  readonly config: Config;
  /** Stops the app only (its database stays, to be looked at); close() then drops the rest. */
  stopApp(): Promise<void>;
  close(): Promise<void>;
}

export function testSecrets(): Secrets {
  return {
    jwtSecret: 'test-jwt-secret-of-sufficient-length-0123456789',
    emailHashKey: 'test-email-hash-key',
    ipHashKey: 'test-ip-hash-key',
    captchaHmacKey: 'test-captcha-hmac-key-0123456789abcdef-xyz',
    adminEmail: testAdmin.email,
    adminPassword: testAdmin.password,
    embeddedDbPassword: 'unused',
  };
}

/**
 * Deadlines that decide an answer, set far above what a busy machine needs: a failed commit is
 * retried until the commit deadline (2 s by default) before its votes get 503, and a Redis call
 * that takes over 250 ms falls to the rate limiter's fail mode. The tests assert what is stored
 * and answered, not how fast, so they give both a minute.
 */
export const patientTestEnv: Readonly<Record<string, string>> = {
  LIVEVOTE_COMMIT_DEADLINE_MS: '60000',
  LIVEVOTE_REDIS_COMMAND_TIMEOUT_MS: '60000',
  // A node whose heartbeat is stored late fences itself (cluster/membership.ts): on a machine
  // busy with several test files, a single-node test must not see 503 node_fenced for it.
  LIVEVOTE_DEAD_AFTER_MS: '15000',
};

export async function startAppHarness(env: Record<string, string> = {}): Promise<AppHarness> {
  const db = await createTestDatabase();
  const spillDir = mkdtempSync(join(tmpdir(), 'livevote-spill-'));
  const config = loadConfig({
    LOG_LEVEL: 'silent', ...patientTestEnv, ...functionalTestEnv, LIVEVOTE_SPILL_QUEUE: 'file', LIVEVOTE_SPILL_DIR: spillDir, ...env,
  });
  const secrets = testSecrets();
  // Warnings are kept and printed only for a test that fails (infra/testing/failureLogs.ts).
  const logs = recordingLogger(`app ${db.name}`);
  try {
    const app = await buildApp({ config, secrets, pool: db.pool, log: logs.log });
    const port = await app.listen('127.0.0.1', 0);
    let appStopped: Promise<void> | undefined;
    const stopApp = () => (appStopped ??= app.close({ drainTimeoutMs: 2_000, awaitIdleConnections: false }));
    return {
      app, db, port, secrets, config,
      baseUrl: `http://127.0.0.1:${port}`,
      stopApp,
      async close() {
        await stopApp();
        await db.drop();
        rmSync(spillDir, { recursive: true, force: true });
        logs.forget();
      },
    };
  } catch (error) {
    logs.forget();
    await db.drop();
    throw error;
  }
}

/** JSON request helper: returns status, parsed body and headers. */
export async function call(
  baseUrl: string,
  method: string,
  path: string,
  options: { token?: string; body?: unknown; rawBody?: string; headers?: Record<string, string> } = {},
): Promise<{ status: number; body: any; headers: Headers }> {
  const headers: Record<string, string> = { ...(options.headers ?? {}) };
  if (options.token) headers.authorization = `Bearer ${options.token}`;
  let body: string | undefined;
  if (options.rawBody !== undefined) body = options.rawBody;
  else if (options.body !== undefined) body = JSON.stringify(options.body);
  if (body !== undefined && !headers['content-type']) headers['content-type'] = 'application/json';
  const response = await fetch(baseUrl + path, { method, headers, body });
  const text = await response.text();
  let parsed: unknown = text;
  try {
    parsed = text ? JSON.parse(text) : undefined;
  } catch {
    // not JSON: keep the text
  }
  return { status: response.status, body: parsed, headers: response.headers };
}

export async function login(baseUrl: string, email: string, password: string): Promise<string> {
  const response = await call(baseUrl, 'POST', '/api/v1/auth/login', { body: { email, password } });
  if (response.status !== 200) throw new Error(`login failed: ${response.status} ${JSON.stringify(response.body)}`);
  return response.body.accessToken as string;
}

export async function register(baseUrl: string, email: string, password = 'a long enough password'): Promise<{ userId: string; accessToken: string }> {
  const response = await call(baseUrl, 'POST', '/api/v1/auth/register', { body: { email, password } });
  if (response.status !== 201) throw new Error(`register failed: ${response.status} ${JSON.stringify(response.body)}`);
  return { userId: response.body.userId, accessToken: response.body.accessToken };
}
