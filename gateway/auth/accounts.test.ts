// The accounts service against real Postgres with a movable clock and cheap scrypt: what the
// HTTP tests cannot reach (time, races, KDF admission, the configured admin).
import { randomBytes, randomUUID } from 'node:crypto';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ApiError } from '../errors.ts';
import type { Principal, Reply } from '../http.ts';
import { silentLogger } from '../../infra/logger.ts';
import type { Secrets } from '../../infra/secrets.ts';
import { createTestDatabase, type TestDatabase } from '../../persistence/testDatabase.ts';
import { findUserByEmailHash, insertRefreshToken } from '../../persistence/users.ts';
import { Accounts, hashRefreshToken, refreshTokenTtlMs, type TokenPair } from './accounts.ts';
import { createAuthFeature } from './feature.ts';
import { createAccessTokenVerifier } from './jwt.ts';
import { KdfLimiter, emailHash, type ScryptParams } from './passwords.ts';
import { SessionRevocations } from './revocations.ts';
import type { VerifiedPrincipal } from './routes.ts';

const cheap: ScryptParams = { cost: 2 ** 10, blockSize: 8, parallelization: 1 };
const log = silentLogger();
const password = 'service test password';

const baseSecrets: Secrets = {
  jwtSecret: 'accounts-test-jwt-secret-accounts-test-jwt',
  emailHashKey: 'accounts-test-email-hash-key',
  ipHashKey: 'unused',
  captchaHmacKey: 'unused',
  adminEmail: 'root@livevote.test',
  adminPassword: 'root-password-one',
  embeddedDbPassword: 'unused',
};

class CountingLimiter extends KdfLimiter {
  runs = 0;
  override run<T>(work: () => Promise<T>): Promise<T> {
    this.runs++;
    return super.run(work);
  }
}

let db: TestDatabase;
let nowMs = Date.now();
const clock = () => nowMs;

function makeAccounts(options: { secrets?: Secrets; limiter?: KdfLimiter; params?: ScryptParams } = {}) {
  const revocations = new SessionRevocations(db.pool, log, clock);
  const accounts = new Accounts({
    pool: db.pool, secrets: options.secrets ?? baseSecrets, log, nowMs: clock, revocations,
    scryptParams: options.params ?? cheap, kdfLimiter: options.limiter ?? new KdfLimiter(4, 64),
  });
  return { accounts, revocations };
}

const verify = createAccessTokenVerifier(baseSecrets.jwtSecret, () => Math.floor(nowMs / 1000));
function principalOf(pair: TokenPair): Principal {
  const result = verify(pair.accessToken);
  if (!result.ok) throw new Error(`test token refused: ${result.refusal}`);
  return { userId: result.claims.sub, voterNumber: result.claims.vn, role: result.claims.role, sessionId: result.claims.sid, expiresAtS: result.claims.exp };
}

async function refusal(promise: Promise<unknown>): Promise<string> {
  try {
    await promise;
  } catch (error) {
    if (error instanceof ApiError) return error.code;
    throw error;
  }
  return 'no refusal';
}

const freshEmail = () => `svc-${randomUUID()}@example.com`;

beforeAll(async () => {
  db = await createTestDatabase();
});

afterAll(async () => {
  await db?.drop();
});

describe('login', () => {
  it('runs the KDF exactly once whether the email is unknown, the password wrong, or right', async () => {
    const limiter = new CountingLimiter(4, 64);
    const { accounts } = makeAccounts({ limiter });
    const email = freshEmail();
    await accounts.register({ email, password });
    await accounts.prepare();

    limiter.runs = 0;
    expect(await refusal(accounts.login({ email: freshEmail(), password }))).toBe('invalid_credentials');
    expect(limiter.runs).toBe(1);
    limiter.runs = 0;
    expect(await refusal(accounts.login({ email, password: 'wrong password here' }))).toBe('invalid_credentials');
    expect(limiter.runs).toBe(1);
    limiter.runs = 0;
    await accounts.login({ email, password });
    expect(limiter.runs).toBe(1);
  });

  it('answers auth_overloaded (503, Retry-After) when the KDF queue is full, and changes nothing', async () => {
    const limiter = new KdfLimiter(1, 0);
    const { accounts } = makeAccounts({ limiter });
    const email = freshEmail();
    await accounts.register({ email, password });
    let release!: () => void;
    const busy = limiter.run(() => new Promise<void>((resolve) => { release = resolve; }));
    try {
      const error = await accounts.login({ email, password }).catch((e: unknown) => e);
      expect(error).toBeInstanceOf(ApiError);
      expect((error as ApiError).code).toBe('auth_overloaded');
      expect((error as ApiError).status).toBe(503);
      expect((error as ApiError).headers).toEqual({ 'retry-after': '1' });
      expect(await refusal(accounts.register({ email: freshEmail(), password }))).toBe('auth_overloaded');
    } finally {
      release();
      await busy;
    }
  });

  it('re-hashes a password made with older parameters at the next login', async () => {
    const email = freshEmail();
    await makeAccounts({ params: cheap }).accounts.register({ email, password });
    const stronger: ScryptParams = { cost: 2 ** 11, blockSize: 8, parallelization: 1 };
    const { accounts } = makeAccounts({ params: stronger });
    await accounts.login({ email, password });
    const user = await findUserByEmailHash(db.pool, emailHash(baseSecrets.emailHashKey, email));
    expect(user?.passwordHash).toMatch(/^scrypt\$2048\$8\$1\$/);
    await accounts.login({ email, password });
  });
});

describe('refresh', () => {
  it('refresh tokens live 30 days', async () => {
    const { accounts } = makeAccounts();
    const email = freshEmail();
    await accounts.register({ email, password });
    const start = nowMs;
    try {
      const early = await accounts.login({ email, password });
      const late = await accounts.login({ email, password });
      nowMs = start + refreshTokenTtlMs - 1000;
      await accounts.refresh(early.refreshToken);
      nowMs = start + refreshTokenTtlMs;
      expect(await refusal(accounts.refresh(late.refreshToken))).toBe('invalid_refresh_token');
    } finally {
      nowMs = start;
    }
  });

  it('two refreshes racing with one token: one rotates, the other is reuse and kills the family', async () => {
    const { accounts, revocations } = makeAccounts();
    const email = freshEmail();
    const session = await accounts.register({ email, password });
    const results = await Promise.allSettled([accounts.refresh(session.refreshToken), accounts.refresh(session.refreshToken)]);
    const won = results.filter((r): r is PromiseFulfilledResult<TokenPair> => r.status === 'fulfilled');
    const lost = results.filter((r): r is PromiseRejectedResult => r.status === 'rejected');
    expect(won).toHaveLength(1);
    expect(lost).toHaveLength(1);
    expect((lost[0]?.reason as ApiError).code).toBe('refresh_token_reused');
    const winner = won[0]?.value as TokenPair;
    expect(await refusal(accounts.refresh(winner.refreshToken))).toBe('invalid_refresh_token');
    expect(revocations.isRevoked(principalOf(winner).sessionId)).toBe(true);
  });

  it('a straggler token in a revoked family is refused (refresh that committed under a waiting logout)', async () => {
    const { accounts } = makeAccounts();
    const session = await accounts.register({ email: freshEmail(), password });
    const { sessionId, userId } = principalOf(session);
    // What the race leaves behind: the logout revoked the token it saw, the refresh had
    // already inserted its successor, which the logout's UPDATE did not see.
    const straggler = randomBytes(32).toString('base64url');
    await db.pool.query('UPDATE refresh_tokens SET rotated_at = now(), revoked_at = now() WHERE family_id = $1', [sessionId]);
    await insertRefreshToken(db.pool, {
      tokenHash: hashRefreshToken(straggler), familyId: sessionId, userId,
      issuedAt: new Date(nowMs), expiresAt: new Date(nowMs + refreshTokenTtlMs),
    });
    expect(await refusal(accounts.refresh(straggler))).toBe('invalid_refresh_token');
  });

  it('logout racing a refresh of the same session: afterwards the session can never refresh again', async () => {
    const { accounts } = makeAccounts();
    const email = freshEmail();
    await accounts.register({ email, password });
    for (let round = 0; round < 15; round++) {
      const session = await accounts.login({ email, password });
      const [refreshed] = await Promise.allSettled([
        accounts.refresh(session.refreshToken),
        accounts.logout(principalOf(session), undefined),
      ]);
      if (refreshed.status === 'fulfilled') {
        expect(await refusal(accounts.refresh(refreshed.value.refreshToken))).toBe('invalid_refresh_token');
      } else {
        expect((refreshed.reason as ApiError).code).toBe('invalid_refresh_token');
      }
    }
  });
});

describe('grantRole', () => {
  it('refuses an unknown user with user_not_found and a malformed id with validation_failed', async () => {
    const { accounts } = makeAccounts();
    expect(await refusal(accounts.grantRole(randomUUID(), 'admin'))).toBe('user_not_found');
    expect(await refusal(accounts.grantRole('1; DROP TABLE users', 'admin'))).toBe('validation_failed');
  });
});

describe('the configured admin', () => {
  const adminHash = (secrets: Secrets) => emailHash(secrets.emailHashKey, secrets.adminEmail);

  it('is created once, even by several nodes starting together', async () => {
    const secrets = { ...baseSecrets, adminEmail: `admin-${randomUUID()}@livevote.test` };
    await Promise.all([0, 1, 2].map(() => makeAccounts({ secrets }).accounts.bootstrapAdmin()));
    const rows = await db.pool.query('SELECT role FROM users WHERE email_hash = $1', [adminHash(secrets)]);
    expect(rows.rows).toEqual([{ role: 'admin' }]);
    const pair = await makeAccounts({ secrets }).accounts.login({ email: secrets.adminEmail, password: secrets.adminPassword });
    expect(pair.role).toBe('admin');
  });

  it('gets its role back and takes the configured password, ending sessions made with the old one', async () => {
    const secrets = { ...baseSecrets, adminEmail: `admin-${randomUUID()}@livevote.test` };
    const first = makeAccounts({ secrets });
    await first.accounts.bootstrapAdmin();
    const oldSession = await first.accounts.login({ email: secrets.adminEmail, password: secrets.adminPassword });
    await db.pool.query(`UPDATE users SET role = 'viewer' WHERE email_hash = $1`, [adminHash(secrets)]);

    const rotated = { ...secrets, adminPassword: 'root-password-two' };
    const restarted = makeAccounts({ secrets: rotated });
    await restarted.accounts.bootstrapAdmin();

    expect((await findUserByEmailHash(db.pool, adminHash(secrets)))?.role).toBe('admin');
    expect(await refusal(restarted.accounts.login({ email: secrets.adminEmail, password: secrets.adminPassword }))).toBe('invalid_credentials');
    expect((await restarted.accounts.login({ email: secrets.adminEmail, password: rotated.adminPassword })).role).toBe('admin');
    expect(await refusal(restarted.accounts.refresh(oldSession.refreshToken))).toBe('invalid_refresh_token');
    expect(restarted.revocations.isRevoked(principalOf(oldSession).sessionId)).toBe(true);

    // A start with unchanged configuration changes nothing and ends no session.
    const current = await restarted.accounts.login({ email: secrets.adminEmail, password: rotated.adminPassword });
    await makeAccounts({ secrets: rotated }).accounts.bootstrapAdmin();
    await restarted.accounts.refresh(current.refreshToken);
  });
});

describe('the feature', () => {
  it('authenticates against its clock: valid until exp, then token_expired; session_revoked after logout', async () => {
    const start = nowMs;
    const secrets = { ...baseSecrets, adminEmail: `admin-${randomUUID()}@livevote.test` };
    const feature = createAuthFeature({ pool: db.pool, secrets, log, nowMs: clock, scryptParams: cheap, revocationOptions: { pollIntervalMs: 50 } });
    await feature.start();
    try {
      const login = feature.routes.find((r) => r.path === '/api/v1/auth/login');
      const logout = feature.routes.find((r) => r.path === '/api/v1/auth/logout');
      const reply = (await login?.handle({ body: { email: secrets.adminEmail, password: secrets.adminPassword }, headers: {} } as never)) as Reply | undefined;
      const pair = reply?.json as TokenPair;
      const principal = feature.authenticate(`Bearer ${pair.accessToken}`) as VerifiedPrincipal;
      expect(principal).toMatchObject({ role: 'admin', expiresAtS: Math.floor(start / 1000) + 900 });

      nowMs = start + 899_000;
      expect(feature.authenticate(`Bearer ${pair.accessToken}`).userId).toBe(principal.userId);
      nowMs = start + 900_000;
      expect(() => feature.authenticate(`Bearer ${pair.accessToken}`)).toThrow(expect.objectContaining({ code: 'token_expired' }));
      nowMs = start;

      expect(() => feature.authenticate('')).toThrow(expect.objectContaining({ code: 'unauthenticated' }));
      expect(() => feature.authenticate('Bearer')).toThrow(expect.objectContaining({ code: 'unauthenticated' }));
      await logout?.handle({ body: {}, principal, headers: {} } as never);
      expect(() => feature.authenticate(`Bearer ${pair.accessToken}`)).toThrow(expect.objectContaining({ code: 'session_revoked' }));
    } finally {
      nowMs = start;
      await feature.stop();
    }
  });
});
