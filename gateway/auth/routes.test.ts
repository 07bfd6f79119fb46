// The auth routes end to end: the real app (buildApp) on a real socket, a real Postgres
// database of its own, driven with fetch. Every refusal checks the status, the error code and
// that nothing changed in the database.
import { createHmac, randomUUID } from 'node:crypto';
import { afterAll, beforeAll, describe, expect, it, vi } from 'vitest';
import { buildApp, type LivevoteApp } from '../app.ts';
import { loadConfig } from '../../infra/config.ts';
import { functionalTestEnv } from '../../infra/testing/appHarness.ts';
import { silentLogger } from '../../infra/logger.ts';
import type { Secrets } from '../../infra/secrets.ts';
import { createTestDatabase, type TestDatabase } from '../../persistence/testDatabase.ts';
import { accessTokenAudience, accessTokenIssuer, signAccessToken } from './jwt.ts';

const secrets: Secrets = {
  jwtSecret: 'routes-test-jwt-secret-routes-test-jwt-secret',
  emailHashKey: 'routes-test-email-hash-key',
  ipHashKey: 'routes-test-ip-hash-key',
  captchaHmacKey: 'routes-test-captcha-hmac-key-0123456789abcdef',
  adminEmail: 'admin@livevote.test',
  adminPassword: 'admin-password-for-tests',
  embeddedDbPassword: 'unused',
};

let db: TestDatabase;
let app: LivevoteApp;
let base = '';

beforeAll(async () => {
  db = await createTestDatabase();
  app = await buildApp({ config: loadConfig(functionalTestEnv), secrets, pool: db.pool, log: silentLogger() });
  base = `http://127.0.0.1:${await app.listen('127.0.0.1', 0)}`;
});

afterAll(async () => {
  await app?.close({ awaitIdleConnections: false });
  await db?.drop();
});

interface Answer {
  readonly status: number;
  readonly json: any;
  readonly text: string;
  readonly headers: Headers;
}

async function call(
  method: string,
  path: string,
  options: { body?: unknown; raw?: string; token?: string; authorization?: string; headers?: Record<string, string> } = {},
): Promise<Answer> {
  const headers: Record<string, string> = { 'content-type': 'application/json', ...options.headers };
  if (options.token !== undefined) headers.authorization = `Bearer ${options.token}`;
  if (options.authorization !== undefined) headers.authorization = options.authorization;
  const body = options.raw ?? (options.body === undefined ? undefined : JSON.stringify(options.body));
  const response = await fetch(base + path, { method, headers, body });
  const text = await response.text();
  let json: unknown;
  try {
    json = text === '' ? undefined : JSON.parse(text);
  } catch {
    json = undefined;
  }
  return { status: response.status, json, text, headers: response.headers };
}

function expectError(answer: Answer, status: number, code: string): void {
  expect({ status: answer.status, code: answer.json?.error?.code }).toEqual({ status, code });
  expect(typeof answer.json.error.message).toBe('string');
}

let emailCounter = 0;
const freshEmail = () => `viewer-${++emailCounter}-${randomUUID().slice(0, 8)}@example.com`;
const password = 'a perfectly fine password';

async function register(email = freshEmail()): Promise<{ email: string; tokens: any }> {
  const answer = await call('POST', '/api/v1/auth/register', { body: { email, password } });
  expect(answer.status).toBe(201);
  return { email, tokens: answer.json };
}

async function login(email: string, pw = password): Promise<any> {
  const answer = await call('POST', '/api/v1/auth/login', { body: { email, password: pw } });
  expect(answer.status).toBe(200);
  return answer.json;
}

async function count(table: 'users' | 'refresh_tokens' | 'revoked_sessions'): Promise<number> {
  const result = await db.pool.query<{ n: number }>(`SELECT count(*)::int AS n FROM ${table}`);
  return (result.rows[0] as { n: number }).n;
}

async function snapshot(): Promise<Record<string, unknown>> {
  const users = await db.pool.query('SELECT user_id, voter_number, role, password_hash FROM users ORDER BY user_id');
  const tokens = await db.pool.query('SELECT token_hash, rotated_at, revoked_at FROM refresh_tokens ORDER BY token_hash');
  const revoked = await db.pool.query('SELECT session_id FROM revoked_sessions ORDER BY session_id');
  const sequence = await db.pool.query('SELECT last_value FROM voter_number_seq');
  return { users: users.rows, tokens: tokens.rows, revoked: revoked.rows, sequence: sequence.rows };
}

const b64 = (value: unknown) => Buffer.from(JSON.stringify(value)).toString('base64url');
const tokenPairShape = {
  userId: expect.stringMatching(/^[0-9a-f-]{36}$/),
  role: 'viewer',
  accessToken: expect.stringMatching(/^[\w-]+\.[\w-]+\.[\w-]{43}$/),
  refreshToken: expect.stringMatching(/^[\w-]{43}$/),
  tokenType: 'Bearer',
  expiresIn: 900,
};

describe('happy path: register → login → validate → refresh → logout', () => {
  it('works end to end, and logout ends exactly that session', async () => {
    const email = freshEmail();
    const registered = await call('POST', '/api/v1/auth/register', { body: { email, password } });
    expect(registered.status).toBe(201);
    expect(registered.json).toEqual(tokenPairShape);
    const userId = registered.json.userId as string;

    // Stored: a keyed email hash and an scrypt hash, never the address or the password.
    const row = (await db.pool.query('SELECT * FROM users WHERE user_id = $1', [userId])).rows[0];
    expect(row.email_hash).toEqual(createHmac('sha256', secrets.emailHashKey).update(email).digest());
    expect(row.password_hash).toMatch(/^scrypt\$32768\$8\$1\$/);
    expect(JSON.stringify(row)).not.toContain(email);
    expect(JSON.stringify(row)).not.toContain(password);
    const tokenRows = (await db.pool.query('SELECT token_hash FROM refresh_tokens WHERE user_id = $1', [userId])).rows;
    expect(tokenRows).toHaveLength(1);
    expect(tokenRows[0].token_hash).toHaveLength(32);

    // Login is case- and whitespace-insensitive on the email; it starts a second session.
    const session = await login(`  ${email.toUpperCase()} `);
    expect(session).toEqual({ ...tokenPairShape, userId });

    const validated = await call('GET', '/api/v1/auth/validate', { token: session.accessToken });
    expect(validated.status).toBe(200);
    expect(validated.json).toEqual({
      userId,
      role: 'viewer',
      voterNumber: Number(row.voter_number),
      sessionId: expect.stringMatching(/^[0-9a-f-]{36}$/),
      expiresAt: expect.any(String),
    });
    const expiresInMs = Date.parse(validated.json.expiresAt) - Date.now();
    expect(expiresInMs).toBeGreaterThan(800_000);
    expect(expiresInMs).toBeLessThanOrEqual(900_000);
    const sessionId = validated.json.sessionId as string;
    const registeredSession = (await call('GET', '/api/v1/auth/validate', { token: registered.json.accessToken })).json.sessionId;
    expect(registeredSession).not.toBe(sessionId);

    const refreshed = await call('POST', '/api/v1/auth/refresh', { body: { refreshToken: session.refreshToken } });
    expect(refreshed.status).toBe(200);
    expect(refreshed.json).toEqual({ ...tokenPairShape, userId });
    expect(refreshed.json.refreshToken).not.toBe(session.refreshToken);
    const afterRefresh = await call('GET', '/api/v1/auth/validate', { token: refreshed.json.accessToken });
    expect(afterRefresh.json.sessionId).toBe(sessionId);

    const loggedOut = await call('POST', '/api/v1/auth/logout', { token: refreshed.json.accessToken, body: {} });
    expect(loggedOut.status).toBe(204);
    expect(loggedOut.text).toBe('');

    // Both access tokens of that session are refused, its refresh token too...
    expectError(await call('GET', '/api/v1/auth/validate', { token: refreshed.json.accessToken }), 401, 'session_revoked');
    expectError(await call('GET', '/api/v1/auth/validate', { token: session.accessToken }), 401, 'session_revoked');
    expectError(await call('POST', '/api/v1/auth/refresh', { body: { refreshToken: refreshed.json.refreshToken } }), 401, 'invalid_refresh_token');
    expectError(await call('POST', '/api/v1/auth/logout', { token: refreshed.json.accessToken, body: {} }), 401, 'session_revoked');
    // ...while the session started at registration goes on.
    expect((await call('GET', '/api/v1/auth/validate', { token: registered.json.accessToken })).status).toBe(200);
    expect((await call('POST', '/api/v1/auth/refresh', { body: { refreshToken: registered.json.refreshToken } })).status).toBe(200);
  });

  it('assigns dense voter numbers from the sequence', async () => {
    const a = await register();
    const b = await register();
    const vn = async (t: any) => (await call('GET', '/api/v1/auth/validate', { token: t.accessToken })).json.voterNumber as number;
    expect(await vn(b.tokens)).toBe((await vn(a.tokens)) + 1);
  });
});

describe('POST /api/v1/auth/register refusals', () => {
  const path = '/api/v1/auth/register';

  it.each([
    ['malformed JSON', { raw: '{"email": "a@b.co", "password": ' }, 400, 'invalid_json'],
    ['empty body', { raw: '' }, 400, 'invalid_json'],
    ['JSON that is not an object', { raw: '["a@b.co", "password123456"]' }, 400, 'validation_failed'],
    ['wrong types', { body: { email: 42, password: true } }, 400, 'validation_failed'],
    ['missing password', { body: { email: 'missing-pw@example.com' } }, 400, 'validation_failed'],
    ['missing email', { body: { password } }, 400, 'validation_failed'],
    ['unknown field', { body: { email: 'extra@example.com', password, role: 'admin' } }, 400, 'validation_failed'],
    ['not an email', { body: { email: 'not-an-email', password } }, 400, 'validation_failed'],
    ['email too long', { body: { email: `${'a'.repeat(250)}@example.com`, password } }, 400, 'validation_failed'],
    ['password of 11 characters', { body: { email: 'short@example.com', password: 'x'.repeat(11) } }, 400, 'validation_failed'],
    ['password of 257 characters', { body: { email: 'long@example.com', password: 'x'.repeat(257) } }, 400, 'validation_failed'],
    ['oversized body', { raw: JSON.stringify({ email: 'big@example.com', password, pad: 'x'.repeat(17 * 1024) }) }, 413, 'payload_too_large'],
    ['not JSON content type', { raw: 'email=a@b.co', headers: { 'content-type': 'application/x-www-form-urlencoded' } }, 415, 'unsupported_media_type'],
  ])('%s → %i %s, and no account is created', async (_name, options, status, code) => {
    const before = await snapshot();
    expectError(await call('POST', path, options as Parameters<typeof call>[2]), status, code);
    expect(await snapshot()).toEqual(before);
  });

  it('accepts the 12- and 256-character password bounds', async () => {
    expect((await call('POST', path, { body: { email: freshEmail(), password: 'x'.repeat(12) } })).status).toBe(201);
    expect((await call('POST', path, { body: { email: freshEmail(), password: 'x'.repeat(256) } })).status).toBe(201);
  });

  it('a taken email (in any case, with spaces) → 409 email_taken; nothing changes, no voter number burnt', async () => {
    const { email } = await register();
    const before = await snapshot();
    expectError(await call('POST', path, { body: { email, password } }), 409, 'email_taken');
    expectError(await call('POST', path, { body: { email: ` ${email.toUpperCase()}`, password: 'another password!' } }), 409, 'email_taken');
    expect(await snapshot()).toEqual(before);
  });

  it('two registrations of one email racing: exactly one wins', async () => {
    const email = freshEmail();
    const usersBefore = await count('users');
    const answers = await Promise.all([0, 1, 2].map(() => call('POST', path, { body: { email, password } })));
    expect(answers.map((a) => a.status).sort()).toEqual([201, 409, 409]);
    for (const a of answers.filter((x) => x.status === 409)) expectError(a, 409, 'email_taken');
    expect(await count('users')).toBe(usersBefore + 1);
  });
});

describe('POST /api/v1/auth/login refusals', () => {
  const path = '/api/v1/auth/login';

  it('wrong password and unknown email answer the same invalid_credentials, and change nothing', async () => {
    const { email } = await register();
    const before = await snapshot();
    const wrong = await call('POST', path, { body: { email, password: 'not the password at all' } });
    const unknown = await call('POST', path, { body: { email: 'nobody@example.com', password } });
    expectError(wrong, 401, 'invalid_credentials');
    expectError(unknown, 401, 'invalid_credentials');
    expect(wrong.json).toEqual(unknown.json);
    expect(await snapshot()).toEqual(before);
  });

  it.each([
    ['malformed JSON', { raw: '{"email":' }, 400, 'invalid_json'],
    ['wrong types', { body: { email: ['a@b.co'], password: 1 } }, 400, 'validation_failed'],
    ['missing password', { body: { email: 'a@example.com' } }, 400, 'validation_failed'],
    ['unknown field', { body: { email: 'a@example.com', password, remember: true } }, 400, 'validation_failed'],
    ['empty password', { body: { email: 'a@example.com', password: '' } }, 400, 'validation_failed'],
    ['oversized body', { raw: JSON.stringify({ email: 'a@example.com', password: 'x'.repeat(17 * 1024) }) }, 413, 'payload_too_large'],
  ])('%s → %i %s', async (_name, options, status, code) => {
    const before = await snapshot();
    expectError(await call('POST', path, options as Parameters<typeof call>[2]), status, code);
    expect(await snapshot()).toEqual(before);
  });
});

describe('POST /api/v1/auth/refresh', () => {
  const path = '/api/v1/auth/refresh';

  it.each([
    ['malformed JSON', { raw: '{refreshToken}' }, 400, 'invalid_json'],
    ['wrong type', { body: { refreshToken: 12345 } }, 400, 'validation_failed'],
    ['missing token', { body: {} }, 400, 'validation_failed'],
    ['unknown field', { body: { refreshToken: 'a'.repeat(43), userId: randomUUID() } }, 400, 'validation_failed'],
    ['oversized body', { raw: JSON.stringify({ refreshToken: 'x'.repeat(17 * 1024) }) }, 413, 'payload_too_large'],
    ['unknown token', { body: { refreshToken: 'A'.repeat(43) } }, 401, 'invalid_refresh_token'],
    ['token of the wrong shape', { body: { refreshToken: 'short' } }, 401, 'invalid_refresh_token'],
  ])('%s → %i %s', async (_name, options, status, code) => {
    const before = await snapshot();
    expectError(await call('POST', path, options as Parameters<typeof call>[2]), status, code);
    expect(await snapshot()).toEqual(before);
  });

  it('reusing a rotated refresh token revokes the whole family', async () => {
    const { email } = await register();
    const first = await login(email);
    const second = (await call('POST', path, { body: { refreshToken: first.refreshToken } })).json;
    const third = (await call('POST', path, { body: { refreshToken: second.refreshToken } })).json;
    const sessionId = (await call('GET', '/api/v1/auth/validate', { token: third.accessToken })).json.sessionId as string;

    expectError(await call('POST', path, { body: { refreshToken: first.refreshToken } }), 401, 'refresh_token_reused');

    const family = (await db.pool.query('SELECT revoked_at FROM refresh_tokens WHERE family_id = $1', [sessionId])).rows;
    expect(family).toHaveLength(3);
    expect(family.every((r) => r.revoked_at !== null)).toBe(true);
    expect(await db.pool.query('SELECT 1 FROM revoked_sessions WHERE session_id = $1', [sessionId])).toHaveProperty('rowCount', 1);
    // The newest token of the family is dead, and so are its access tokens.
    expectError(await call('POST', path, { body: { refreshToken: third.refreshToken } }), 401, 'invalid_refresh_token');
    expectError(await call('GET', '/api/v1/auth/validate', { token: third.accessToken }), 401, 'session_revoked');
    // Presenting a token of a revoked family again is just invalid.
    expectError(await call('POST', path, { body: { refreshToken: first.refreshToken } }), 401, 'invalid_refresh_token');
  });

  it('an expired refresh token → invalid_refresh_token, and nothing is issued', async () => {
    const { email } = await register();
    const session = await login(email);
    const sessionId = (await call('GET', '/api/v1/auth/validate', { token: session.accessToken })).json.sessionId as string;
    await db.pool.query(`UPDATE refresh_tokens SET expires_at = now() - interval '1 second' WHERE family_id = $1`, [sessionId]);
    const before = await snapshot();
    expectError(await call('POST', path, { body: { refreshToken: session.refreshToken } }), 401, 'invalid_refresh_token');
    expect(await snapshot()).toEqual(before);
  });
});

describe('POST /api/v1/auth/logout', () => {
  const path = '/api/v1/auth/logout';

  it('needs a valid bearer token; bad bodies change nothing', async () => {
    const { tokens } = await register();
    const before = await snapshot();
    expectError(await call('POST', path, { body: {} }), 401, 'unauthenticated');
    expectError(await call('POST', path, { token: 'x.y.z', body: {} }), 401, 'invalid_token');
    expectError(await call('POST', path, { token: tokens.accessToken, raw: '{' }), 400, 'invalid_json');
    expectError(await call('POST', path, { token: tokens.accessToken, body: { refreshToken: 7 } }), 400, 'validation_failed');
    expectError(await call('POST', path, { token: tokens.accessToken, body: { everywhere: true } }), 400, 'validation_failed');
    expectError(await call('POST', path, { token: tokens.accessToken, raw: JSON.stringify({ refreshToken: 'x'.repeat(17 * 1024) }) }), 413, 'payload_too_large');
    expect(await snapshot()).toEqual(before);
    expect((await call('GET', '/api/v1/auth/validate', { token: tokens.accessToken })).status).toBe(200);
  });

  it("also ends the session of a refresh token of the caller's, and ignores someone else's", async () => {
    const me = await register();
    const mine = await login(me.email);
    const other = await register();
    const answer = await call('POST', path, { token: me.tokens.accessToken, body: { refreshToken: mine.refreshToken } });
    expect(answer.status).toBe(204);
    expectError(await call('GET', '/api/v1/auth/validate', { token: mine.accessToken }), 401, 'session_revoked');
    expectError(await call('POST', '/api/v1/auth/refresh', { body: { refreshToken: mine.refreshToken } }), 401, 'invalid_refresh_token');

    const again = await login(me.email);
    expect((await call('POST', path, { token: again.accessToken, body: { refreshToken: other.tokens.refreshToken } })).status).toBe(204);
    expect((await call('GET', '/api/v1/auth/validate', { token: other.tokens.accessToken })).status).toBe(200);
    expect((await call('POST', '/api/v1/auth/refresh', { body: { refreshToken: other.tokens.refreshToken } })).status).toBe(200);
  });
});

describe('cookie mode (X-Livevote-Refresh: cookie): the refresh token in an HttpOnly cookie', () => {
  const cookieMode = { 'x-livevote-refresh': 'cookie', origin: 'http://127.0.0.1' };
  const cookieOf = (answer: Answer) => answer.headers.get('set-cookie') ?? '';
  const tokenIn = (setCookie: string) => /^livevote_refresh=([^;]*);/.exec(setCookie)?.[1];

  it('login sets the cookie instead of returning the token; refresh rotates it; logout clears it and revokes', async () => {
    const { email } = await register();
    const signedIn = await call('POST', '/api/v1/auth/login', { body: { email, password }, headers: cookieMode });
    expect(signedIn.status).toBe(200);
    const { refreshToken: _absent, ...withoutRefresh } = tokenPairShape;
    expect(signedIn.json).toEqual(withoutRefresh);
    expect(signedIn.headers.get('cache-control')).toBe('no-store');
    const first = cookieOf(signedIn);
    expect(first).toMatch(/^livevote_refresh=[\w-]{43}; Path=\/api\/v1\/auth\/refresh; Max-Age=2592000; HttpOnly; SameSite=Strict$/);

    // Refresh: empty body, the cookie and the header; the answer rotates the cookie.
    const refreshed = await call('POST', '/api/v1/auth/refresh', { raw: '', headers: { ...cookieMode, cookie: `other=1; ${first.split(';')[0]}` } });
    expect(refreshed.status).toBe(200);
    expect(refreshed.json).toEqual(withoutRefresh);
    const second = tokenIn(cookieOf(refreshed));
    expect(second).toMatch(/^[\w-]{43}$/);
    expect(second).not.toBe(tokenIn(first));
    const sessionId = (await call('GET', '/api/v1/auth/validate', { token: refreshed.json.accessToken })).json.sessionId as string;

    const loggedOut = await call('POST', '/api/v1/auth/logout', { token: refreshed.json.accessToken, raw: '', headers: cookieMode });
    expect(loggedOut.status).toBe(204);
    expect(cookieOf(loggedOut)).toBe('livevote_refresh=; Path=/api/v1/auth/refresh; Max-Age=0; HttpOnly; SameSite=Strict');
    expect(await db.pool.query('SELECT 1 FROM revoked_sessions WHERE session_id = $1', [sessionId])).toHaveProperty('rowCount', 1);
    // The cookie's token died with the session; a dead cookie is cleared when presented.
    const afterLogout = await call('POST', '/api/v1/auth/refresh', { raw: '', headers: { ...cookieMode, cookie: `livevote_refresh=${second}` } });
    expectError(afterLogout, 401, 'invalid_refresh_token');
    expect(cookieOf(afterLogout)).toContain('Max-Age=0');
  });

  it('marks the cookie Secure unless the page is plain http', async () => {
    const { email } = await register();
    const https = await call('POST', '/api/v1/auth/login', { body: { email, password }, headers: { ...cookieMode, origin: 'https://tv.example' } });
    expect(cookieOf(https)).toMatch(/; HttpOnly; SameSite=Strict; Secure$/);
    const noOrigin = await call('POST', '/api/v1/auth/login', { body: { email, password }, headers: { 'x-livevote-refresh': 'cookie' } });
    expect(cookieOf(noOrigin)).toMatch(/; Secure$/);
  });

  it('reads the cookie only when the header asks (CSRF): without it the cookie is ignored and nothing changes', async () => {
    const { email } = await register();
    const cookie = cookieOf(await call('POST', '/api/v1/auth/login', { body: { email, password }, headers: cookieMode })).split(';')[0]!;
    const before = await snapshot();
    const forged = await call('POST', '/api/v1/auth/refresh', { raw: '', headers: { cookie, origin: 'https://evil.example' } });
    expectError(forged, 400, 'validation_failed');
    expect(cookieOf(forged)).toBe('');
    expectError(await call('POST', '/api/v1/auth/refresh', { raw: '', headers: { ...cookieMode, 'x-livevote-refresh': 'yes', cookie } }), 400, 'validation_failed');
    const noCookie = await call('POST', '/api/v1/auth/refresh', { raw: '', headers: cookieMode });
    expectError(noCookie, 401, 'invalid_refresh_token');
    expect(cookieOf(noCookie)).toContain('Max-Age=0');
    expectError(await call('POST', '/api/v1/auth/refresh', { raw: '', headers: { ...cookieMode, cookie: 'livevote_refresh=' } }), 401, 'invalid_refresh_token');
    expect(await snapshot()).toEqual(before);
    // The cookie is still good: presenting it twice is reuse, which revokes the session.
    expect((await call('POST', '/api/v1/auth/refresh', { raw: '', headers: { ...cookieMode, cookie } })).status).toBe(200);
    const reused = await call('POST', '/api/v1/auth/refresh', { raw: '', headers: { ...cookieMode, cookie } });
    expectError(reused, 401, 'refresh_token_reused');
    expect(cookieOf(reused)).toContain('Max-Age=0');
  });

  it('grants no CORS: a cross-site page cannot get a preflight for the header through', async () => {
    const preflight = await fetch(`${base}/api/v1/auth/refresh`, {
      method: 'OPTIONS',
      headers: { origin: 'https://evil.example', 'access-control-request-method': 'POST', 'access-control-request-headers': 'x-livevote-refresh' },
    });
    expect(preflight.ok).toBe(false);
    const corsHeaders: string[] = [];
    preflight.headers.forEach((_value, name) => { if (name.startsWith('access-control-')) corsHeaders.push(name); });
    expect(corsHeaders).toEqual([]);
  });

  it('leaves the JSON contract of API clients as it was: no cookie without the header', async () => {
    const { email } = await register();
    const plain = await call('POST', '/api/v1/auth/login', { body: { email, password } });
    expect(plain.json).toEqual({ ...tokenPairShape, userId: plain.json.userId });
    expect(plain.headers.get('set-cookie')).toBeNull();
    const refreshed = await call('POST', '/api/v1/auth/refresh', { body: { refreshToken: plain.json.refreshToken } });
    expect(refreshed.json.refreshToken).toMatch(/^[\w-]{43}$/);
    expect(refreshed.headers.get('set-cookie')).toBeNull();
    // A body token in cookie mode is used, and its successor goes into the cookie.
    const switched = await call('POST', '/api/v1/auth/refresh', { body: { refreshToken: refreshed.json.refreshToken }, headers: cookieMode });
    expect(switched.status).toBe(200);
    expect(switched.json.refreshToken).toBeUndefined();
    expect(tokenIn(cookieOf(switched))).toMatch(/^[\w-]{43}$/);
  });
});

describe('bearer tokens (GET /api/v1/auth/validate)', () => {
  const path = '/api/v1/auth/validate';
  let tokens: any;
  let claims: { sub: string; vn: number; sid: string };

  beforeAll(async () => {
    tokens = (await register()).tokens;
    const validated = (await call('GET', path, { token: tokens.accessToken })).json;
    claims = { sub: validated.userId, vn: validated.voterNumber, sid: validated.sessionId };
  });

  const nowS = () => Math.floor(Date.now() / 1000);
  const payload = () => b64({ iss: accessTokenIssuer, aud: accessTokenAudience, ...claims, role: 'admin', iat: nowS(), exp: nowS() + 900 });
  const hmac = (input: string, hash = 'sha256', key = secrets.jwtSecret) => createHmac(hash, key).update(input).digest('base64url');

  it.each([
    ['no Authorization header', () => ({}), 'unauthenticated'],
    ['another scheme', () => ({ authorization: `Basic ${Buffer.from('a:b').toString('base64')}` }), 'unauthenticated'],
    ['Bearer with nothing after it', () => ({ authorization: 'Bearer ' }), 'unauthenticated'],
    ['garbage', () => ({ token: 'not-a-jwt' }), 'invalid_token'],
    ['forged: signed with another key', () => {
      const input = `${b64({ alg: 'HS256', typ: 'JWT' })}.${payload()}`;
      return { token: `${input}.${hmac(input, 'sha256', 'not-the-secret-not-the-secret-not-the-secret')}` };
    }, 'invalid_token'],
    ['tampered: role raised after signing', () => {
      const [h, , s] = (tokens.accessToken as string).split('.');
      return { token: `${h}.${payload()}.${s}` };
    }, 'invalid_token'],
    ['expired (correctly signed)', () => ({
      token: signAccessToken({ sub: claims.sub, vn: claims.vn, role: 'viewer', sid: claims.sid }, secrets.jwtSecret, nowS() - 901),
    }), 'token_expired'],
    ['wrong audience (correctly signed)', () => {
      const input = `${b64({ alg: 'HS256', typ: 'JWT' })}.${b64({ iss: accessTokenIssuer, aud: 'other', ...claims, role: 'viewer', iat: nowS(), exp: nowS() + 900 })}`;
      return { token: `${input}.${hmac(input)}` };
    }, 'invalid_token'],
    ['alg none', () => ({ token: `${b64({ alg: 'none', typ: 'JWT' })}.${payload()}.` }), 'unsupported_token_algorithm'],
    ['HS512 signed with our secret', () => {
      const input = `${b64({ alg: 'HS512', typ: 'JWT' })}.${payload()}`;
      return { token: `${input}.${hmac(input, 'sha512')}` };
    }, 'unsupported_token_algorithm'],
    ['RS256', () => ({ token: `${b64({ alg: 'RS256', typ: 'JWT' })}.${payload()}.${'A'.repeat(342)}` }), 'unsupported_token_algorithm'],
  ])('%s → 401 %s', async (_name, auth, code) => {
    expectError(await call('GET', path, auth() as Parameters<typeof call>[2]), 401, code);
  });

  it('accepts the scheme in any case', async () => {
    expect((await call('GET', path, { authorization: `bearer ${tokens.accessToken}` })).status).toBe(200);
  });
});

describe('PUT /api/v1/users/{userId}/role', () => {
  const rolePath = (userId: string) => `/api/v1/users/${userId}/role`;
  let admin: any;

  beforeAll(async () => {
    admin = await login(secrets.adminEmail, secrets.adminPassword);
    expect(admin.role).toBe('admin');
  });

  const roleOf = async (userId: string) => (await db.pool.query('SELECT role FROM users WHERE user_id = $1', [userId])).rows[0]?.role;

  it('lets an admin raise a role; it takes effect at the next refresh', async () => {
    const viewer = await register();
    const answer = await call('PUT', rolePath(viewer.tokens.userId), { token: admin.accessToken, body: { role: 'broadcaster' } });
    expect(answer.status).toBe(200);
    expect(answer.json).toEqual({ userId: viewer.tokens.userId, role: 'broadcaster' });
    expect(await roleOf(viewer.tokens.userId)).toBe('broadcaster');
    const refreshed = await call('POST', '/api/v1/auth/refresh', { body: { refreshToken: viewer.tokens.refreshToken } });
    expect(refreshed.json.role).toBe('broadcaster');
    expect((await call('GET', '/api/v1/auth/validate', { token: refreshed.json.accessToken })).json.role).toBe('broadcaster');
  });

  it("lowering a role ends the user's sessions (their tokens carried the higher role)", async () => {
    const user = await register();
    await call('PUT', rolePath(user.tokens.userId), { token: admin.accessToken, body: { role: 'broadcaster' } });
    const broadcaster = await login(user.email);
    expect(broadcaster.role).toBe('broadcaster');
    const answer = await call('PUT', rolePath(user.tokens.userId), { token: admin.accessToken, body: { role: 'viewer' } });
    expect(answer.json).toEqual({ userId: user.tokens.userId, role: 'viewer' });
    expectError(await call('GET', '/api/v1/auth/validate', { token: broadcaster.accessToken }), 401, 'session_revoked');
    expectError(await call('POST', '/api/v1/auth/refresh', { body: { refreshToken: broadcaster.refreshToken } }), 401, 'invalid_refresh_token');
    expect((await login(user.email)).role).toBe('viewer');
  });

  it.each([
    ['a viewer', 'viewer'],
    ['a broadcaster', 'broadcaster'],
  ])('%s → 403 forbidden, nothing changes', async (_name, role) => {
    const caller = await register();
    if (role !== 'viewer') await call('PUT', rolePath(caller.tokens.userId), { token: admin.accessToken, body: { role } });
    const session = await login(caller.email);
    const target = await register();
    const before = await snapshot();
    expectError(await call('PUT', rolePath(target.tokens.userId), { token: session.accessToken, body: { role: 'admin' } }), 403, 'forbidden');
    expectError(await call('PUT', rolePath(caller.tokens.userId), { token: session.accessToken, body: { role: 'admin' } }), 403, 'forbidden');
    expect(await snapshot()).toEqual(before);
  });

  it('refuses bad requests with the right code and changes nothing', async () => {
    const target = await register();
    const id = target.tokens.userId as string;
    const cases: [Parameters<typeof call>, number, string][] = [
      [['PUT', rolePath(randomUUID()), { token: admin.accessToken, body: { role: 'admin' } }], 404, 'user_not_found'],
      [['PUT', rolePath('not-a-uuid'), { token: admin.accessToken, body: { role: 'admin' } }], 400, 'validation_failed'],
      [['PUT', rolePath(id), { token: admin.accessToken, body: { role: 'root' } }], 400, 'validation_failed'],
      [['PUT', rolePath(id), { token: admin.accessToken, body: { role: 'admin', userId: id } }], 400, 'validation_failed'],
      [['PUT', rolePath(id), { token: admin.accessToken, body: {} }], 400, 'validation_failed'],
      [['PUT', rolePath(id), { token: admin.accessToken, raw: '{"role":' }], 400, 'invalid_json'],
      [['PUT', rolePath(id), { token: admin.accessToken, raw: JSON.stringify({ role: 'x'.repeat(17 * 1024) }) }], 413, 'payload_too_large'],
      [['PUT', rolePath(id), { body: { role: 'admin' } }], 401, 'unauthenticated'],
      [['PUT', rolePath(id), { token: target.tokens.accessToken.replace(/.$/, 'x'), body: { role: 'admin' } }], 401, 'invalid_token'],
    ];
    const before = await snapshot();
    for (const [args, status, code] of cases) expectError(await call(...args), status, code);
    expect(await snapshot()).toEqual(before);
    expect(await roleOf(id)).toBe('viewer');
  });

  // Last in this block: it may leave the configured admin lowered.
  it('refuses to lower the last admin (itself included) with 409 last_admin; of two admins lowering each other at once, one wins', async () => {
    const adminCount = async () => Number((await db.pool.query("SELECT count(*) FROM users WHERE role = 'admin' AND erased_at IS NULL")).rows[0].count);
    expect(await adminCount()).toBe(1);
    const before = await snapshot();
    for (const role of ['viewer', 'broadcaster']) {
      expectError(await call('PUT', rolePath(admin.userId), { token: admin.accessToken, body: { role } }), 409, 'last_admin');
    }
    expect(await snapshot()).toEqual(before);
    expect((await call('GET', '/api/v1/auth/validate', { token: admin.accessToken })).status).toBe(200);

    const second = await register();
    expect((await call('PUT', rolePath(second.tokens.userId), { token: admin.accessToken, body: { role: 'admin' } })).status).toBe(200);
    const secondSession = await login(second.email);
    const answers = await Promise.all([
      call('PUT', rolePath(second.tokens.userId), { token: admin.accessToken, body: { role: 'viewer' } }),
      call('PUT', rolePath(admin.userId), { token: secondSession.accessToken, body: { role: 'viewer' } }),
    ]);
    const statuses = answers.map((a) => a.status).sort();
    // The loser is refused as the last admin, or finds its own session already ended.
    expect(statuses[0]).toBe(200);
    expect([401, 409]).toContain(statuses[1]);
    expect(await adminCount()).toBe(1);
  });
});

describe('across nodes', () => {
  it("a logout on one node is refused on another once that node has polled the revocations", async () => {
    const other = await buildApp({ config: loadConfig(functionalTestEnv), secrets, pool: db.pool, log: silentLogger() });
    const otherBase = `http://127.0.0.1:${await other.listen('127.0.0.1', 0)}`;
    try {
      const { tokens } = await register();
      const validateOnOther = () => fetch(`${otherBase}/api/v1/auth/validate`, { headers: { authorization: `Bearer ${tokens.accessToken}` } });
      expect((await validateOnOther()).status).toBe(200);
      expect((await call('POST', '/api/v1/auth/logout', { token: tokens.accessToken, body: {} })).status).toBe(204);
      await vi.waitFor(async () => {
        const response = await validateOnOther();
        expect(response.status).toBe(401);
        expect(((await response.json()) as any).error.code).toBe('session_revoked');
      }, { timeout: 60_000, interval: 200 });
    } finally {
      await other.close();
    }
  });
});
