// The privacy controls through real HTTP on a real app and Postgres: export holds exactly the
// caller's data; erasure keeps the vote counted and leaves nothing that links it to the person;
// the admin variant; the retention purge. Once gateway/app.ts wires the feature (and exposes it
// as `app.privacy`), this file drives that wiring, metadata recording by the vote, register and
// login routes included; until then it registers the feature's routes on the harness's router
// itself and calls the metadata recorder where those routes will.
import { createHash, randomUUID } from 'node:crypto';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { call, login, register, startAppHarness, testAdmin, type AppHarness } from '../../infra/testing/appHarness.ts';
import { silentLogger } from '../../infra/logger.ts';
import type { RevokedSessionRecord } from '../../persistence/users.ts';
import { ipHash, networkHash } from '../../persistence/voteMetadata.ts';
import { createPrivacyFeature, type PrivacyFeature } from './feature.ts';

const browserUa = 'Mozilla/5.0 (Linux; Android 14; Pixel 8) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0.0.0 Mobile Safari/537.36';
const password = 'a long enough password';
let h: AppHarness;
let privacy: PrivacyFeature;
/** The app wires the feature itself: its routes record metadata and revoke sessions in memory. */
let wired = false;
let adminToken: string;
const revokedByHook: RevokedSessionRecord[] = [];

beforeAll(async () => {
  h = await startAppHarness();
  const fromApp = (h.app as { privacy?: PrivacyFeature }).privacy;
  wired = fromApp !== undefined;
  if (fromApp) {
    privacy = fromApp;
  } else {
    privacy = createPrivacyFeature({
      pool: h.db.pool, secrets: h.secrets, log: silentLogger(), config: h.config,
      onSessionsRevoked: (sessions) => revokedByHook.push(...sessions),
      metadataFlushIntervalMs: 60_000,
    });
    for (const route of privacy.routes) h.app.router.register(route);
    await privacy.start();
  }
  adminToken = await login(h.baseUrl, testAdmin.email, testAdmin.password);
});
afterAll(async () => {
  if (!wired) await privacy?.stop();
  await h?.close();
});

/** What the routes record once the feature is wired; done here until then. */
function asTheRoutesWill(record: () => void): void {
  if (!wired) record();
}

interface Viewer {
  readonly email: string;
  readonly userId: string;
  accessToken: string;
  refreshToken: string;
  voterNumber: number;
}

/** Registers through the API, as a person would; records what the register route will record. */
async function newViewer(): Promise<Viewer> {
  const email = `viewer-${randomUUID()}@example.com`;
  const response = await call(h.baseUrl, 'POST', '/api/v1/auth/register', { body: { email, password }, headers: { 'user-agent': browserUa } });
  expect(response.status).toBe(201);
  const userId = response.body.userId as string;
  asTheRoutesWill(() => privacy.metadata.recordRegistration({ userId, clientIp: '127.0.0.1', networkKey: '127.0.0.0/24', userAgent: browserUa, atMs: Date.now() }));
  const validated = await call(h.baseUrl, 'GET', '/api/v1/auth/validate', { token: response.body.accessToken });
  return { email, userId, accessToken: response.body.accessToken, refreshToken: response.body.refreshToken, voterNumber: validated.body.voterNumber };
}

async function newElection(title: string): Promise<{ electionId: string; candidateIds: string[] }> {
  const created = await call(h.baseUrl, 'POST', '/api/v1/admin/elections', {
    token: adminToken, body: { title, candidates: [{ name: 'Ada' }, { name: 'Grace' }], shardCount: 4 },
  });
  expect(created.status).toBe(201);
  const electionId = created.body.electionId as string;
  expect((await call(h.baseUrl, 'POST', `/api/v1/admin/elections/${electionId}/open`, { token: adminToken })).status).toBe(200);
  return { electionId, candidateIds: created.body.candidates.map((c: { candidateId: string }) => c.candidateId) };
}

/** Votes through the API; records what the vote route will record once the vote is accepted. */
async function vote(viewer: Viewer, electionId: string, candidateId: string): Promise<string> {
  const response = await call(h.baseUrl, 'POST', '/api/v1/votes', {
    token: viewer.accessToken, headers: { 'user-agent': browserUa }, body: { electionId, candidateId, userId: viewer.userId },
  });
  expect(response.status, `vote answered ${JSON.stringify(response.body)}`).toBe(200);
  asTheRoutesWill(() => privacy.metadata.record({ electionId, voterNumber: viewer.voterNumber, clientIp: '127.0.0.1', networkKey: '127.0.0.0/24', userAgent: browserUa, atMs: Date.now() }));
  return response.body.voteId as string;
}

async function closeElection(electionId: string): Promise<void> {
  expect((await call(h.baseUrl, 'POST', `/api/v1/admin/elections/${electionId}/close`, { token: adminToken })).status).toBe(200);
}

const storedVoteCount = async (electionId: string) =>
  Number((await h.db.pool.query('SELECT count(*) FROM votes WHERE election_id = $1', [electionId])).rows[0].count);

/** Every table of the schema, its rows as text, searched for a value. */
async function tablesMentioning(value: string): Promise<string[]> {
  const tables = await h.db.pool.query<{ table_name: string }>(
    "SELECT table_name FROM information_schema.tables WHERE table_schema = 'public' AND table_type = 'BASE TABLE' ORDER BY 1");
  const found: string[] = [];
  for (const { table_name: table } of tables.rows) {
    const hits = await h.db.pool.query(`SELECT 1 FROM "${table}" t WHERE t::text ILIKE '%' || $1 || '%' LIMIT 1`, [value]);
    if (hits.rows.length > 0) found.push(table);
  }
  return found;
}

describe('GET /api/v1/me/export', () => {
  it("holds exactly the caller's account, votes, sessions and metadata, and no token material", async () => {
    const a = await newViewer();
    const b = await newViewer();
    const second = await call(h.baseUrl, 'POST', '/api/v1/auth/login', { body: { email: a.email, password }, headers: { 'user-agent': 'curl/8.5.0' } });
    expect(second.status).toBe(200);
    asTheRoutesWill(() => privacy.metadata.recordLogin({ userId: a.userId, clientIp: '127.0.0.1', networkKey: '127.0.0.0/24', userAgent: 'curl/8.5.0', atMs: Date.now() }));
    const one = await newElection('Export one');
    const two = await newElection('Export two');
    const aVote1 = await vote(a, one.electionId, one.candidateIds[0]!);
    const aVote2 = await vote(a, two.electionId, two.candidateIds[1]!);
    const bVote = await vote(b, one.electionId, one.candidateIds[1]!);
    await privacy.metadata.flush();

    const response = await call(h.baseUrl, 'GET', '/api/v1/me/export', { token: a.accessToken });
    expect(response.status).toBe(200);
    expect(response.headers.get('cache-control')).toBe('no-store');
    const data = response.body;
    expect(data.account).toMatchObject({ userId: a.userId, role: 'viewer', voterNumber: a.voterNumber });
    expect(data.account.emailHash).toMatch(/^[0-9a-f]{64}$/);
    expect(data.votes).toEqual([
      { electionId: one.electionId, electionTitle: 'Export one', candidateId: one.candidateIds[0], candidateName: 'Ada', voteId: aVote1, acceptedAt: expect.any(String) },
      { electionId: two.electionId, electionTitle: 'Export two', candidateId: two.candidateIds[1], candidateName: 'Grace', voteId: aVote2, acceptedAt: expect.any(String) },
    ]);
    expect(data.sessions).toHaveLength(2);
    for (const session of data.sessions) expect(Object.keys(session).sort()).toEqual(['expiresAt', 'issuedAt', 'lastRefreshedAt', 'revokedAt']);
    const localHash = ipHash(h.secrets.ipHashKey, '127.0.0.1').toString('hex');
    expect(data.metadata.votes).toEqual([one, two].map((e) => ({
      electionId: e.electionId, ipHash: localHash, networkHash: networkHash(h.secrets.ipHashKey, '127.0.0.0/24').toString('hex'),
      userAgentFamily: 'chrome/android', recordedAt: expect.any(String),
    })));
    expect(data.metadata.account.map((m: { event: string; userAgentFamily: string }) => [m.event, m.userAgentFamily])).toEqual([['register', 'chrome/android'], ['login', 'curl']]);
    expect(data.retention).toEqual({ metadataDays: 30 });
    expect(data.truncated).toBe(false);

    const text = JSON.stringify(data);
    expect(text).not.toContain(bVote);
    expect(text).not.toContain(b.userId);
    expect(text).not.toContain('127.0.0.1');
    for (const token of [a.refreshToken, second.body.refreshToken as string]) {
      expect(text).not.toContain(token);
      expect(text).not.toContain(createHash('sha256').update(token).digest('hex'));
    }
    expect((await call(h.baseUrl, 'GET', '/api/v1/me/export')).status).toBe(401);
  });
});

describe('DELETE /api/v1/me (erasure)', () => {
  it('keeps the vote counted and leaves nothing linking it to the person', async () => {
    const a = await newViewer();
    const b = await newViewer();
    const election = await newElection('Erasure');
    const aVoteId = await vote(a, election.electionId, election.candidateIds[0]!);
    await vote(b, election.electionId, election.candidateIds[0]!);
    await privacy.metadata.flush();

    // While the election is open, erasure would let the same email come back and vote again.
    const early = await call(h.baseUrl, 'DELETE', '/api/v1/me', { token: a.accessToken, body: { password } });
    expect(early.status).toBe(409);
    expect(early.body.error).toMatchObject({ code: 'erasure_deferred', details: { openElectionIds: [election.electionId] } });
    await closeElection(election.electionId);

    const wrong = await call(h.baseUrl, 'DELETE', '/api/v1/me', { token: a.accessToken, body: { password: 'not the password at all' } });
    expect(wrong.status).toBe(403);
    expect(wrong.body.error.code).toBe('reauthentication_failed');
    expect((await call(h.baseUrl, 'DELETE', '/api/v1/me', { token: a.accessToken, body: {} })).status).toBe(400);

    const resultsBefore = (await call(h.baseUrl, 'GET', `/api/v1/results/${election.electionId}`)).body;
    const countBefore = await storedVoteCount(election.electionId);
    expect(countBefore).toBe(2);
    expect(resultsBefore.totalVotes).toBe(2);
    const hookCallsBefore = revokedByHook.length;

    const erased = await call(h.baseUrl, 'DELETE', '/api/v1/me', { token: a.accessToken, body: { password } });
    expect(erased.status).toBe(200);
    expect(erased.body).toEqual({ userId: a.userId, erasedAt: expect.any(String), alreadyErased: false });
    if (!wired) expect(revokedByHook.length).toBeGreaterThan(hookCallsBefore);

    // Still counted: the stored vote, count(*) and the results are unchanged.
    expect(await storedVoteCount(election.electionId)).toBe(countBefore);
    const resultsAfter = (await call(h.baseUrl, 'GET', `/api/v1/results/${election.electionId}`)).body;
    expect(resultsAfter.candidates).toEqual(resultsBefore.candidates);
    expect(resultsAfter.totalVotes).toBe(resultsBefore.totalVotes);
    const stored = await h.db.pool.query('SELECT vote_id::text FROM votes WHERE election_id = $1 AND voter_number = $2', [election.electionId, a.voterNumber]);
    expect(stored.rows).toEqual([{ vote_id: aVoteId }]);

    // No longer linked: the user id survives only in the tombstone (which has no voter number),
    // and the voter number only in the votes row itself (and the shard bitmap, as a bit).
    expect(await tablesMentioning(a.userId)).toEqual(['erased_accounts']);
    const tombstone = await h.db.pool.query('SELECT * FROM erased_accounts WHERE user_id = $1', [a.userId]);
    expect(Object.keys(tombstone.rows[0]).sort()).toEqual(['erased_at', 'requested_by', 'user_id']);
    const voterColumns = await h.db.pool.query<{ table_name: string }>(
      "SELECT table_name FROM information_schema.columns WHERE table_schema = 'public' AND column_name = 'voter_number' ORDER BY 1");
    for (const { table_name: table } of voterColumns.rows) {
      const rows = await h.db.pool.query(`SELECT count(*) AS n FROM "${table}" WHERE voter_number = $1`, [a.voterNumber]);
      expect([table, Number(rows.rows[0].n)]).toEqual([table, table === 'votes' ? 1 : 0]);
    }
    const linked = await h.db.pool.query(
      `SELECT (SELECT count(*) FROM vote_metadata WHERE voter_number = $1) + (SELECT count(*) FROM account_metadata WHERE user_id = $2)
            + (SELECT count(*) FROM users WHERE user_id = $2 OR voter_number = $1) + (SELECT count(*) FROM refresh_tokens WHERE user_id = $2) AS n`,
      [a.voterNumber, a.userId]);
    expect(Number(linked.rows[0].n)).toBe(0);
    // Someone else's data is untouched.
    const other = await call(h.baseUrl, 'GET', '/api/v1/me/export', { token: b.accessToken });
    expect(other.body.votes).toHaveLength(1);
    expect(other.body.metadata.votes).toHaveLength(1);

    // The account is gone: no login, no refresh, the access token is refused once revoked.
    expect((await call(h.baseUrl, 'POST', '/api/v1/auth/login', { body: { email: a.email, password } })).body.error.code).toBe('invalid_credentials');
    expect((await call(h.baseUrl, 'POST', '/api/v1/auth/refresh', { body: { refreshToken: a.refreshToken } })).status).toBe(401);
    const again = await call(h.baseUrl, 'DELETE', '/api/v1/me', { token: a.accessToken, body: { password } });
    expect([401, 403]).toContain(again.status);
    expect(['session_revoked', 'account_erased']).toContain(again.body.error.code);
    await expect.poll(async () => (await call(h.baseUrl, 'GET', '/api/v1/auth/validate', { token: a.accessToken })).body?.error?.code, { timeout: 60_000, interval: 200 })
      .toBe('session_revoked');
    // The vote status route no longer resolves the person to a vote, for one election or all.
    for (const query of [`?electionId=${election.electionId}`, '']) {
      const status = await call(h.baseUrl, 'GET', `/api/v1/votes/status/${a.userId}${query}`, { token: adminToken });
      expect([status.status, status.body.error.code]).toEqual([403, 'account_erased']);
    }
  });

  it('erases an admin who created elections: the elections stay, without a creator', async () => {
    const d = await newViewer();
    expect((await call(h.baseUrl, 'PUT', `/api/v1/users/${d.userId}/role`, { token: adminToken, body: { role: 'admin' } })).status).toBe(200);
    const dToken = await login(h.baseUrl, d.email, password);
    const created = await call(h.baseUrl, 'POST', '/api/v1/admin/elections', {
      token: dToken, body: { title: 'Made by D', candidates: [{ name: 'X' }, { name: 'Y' }], shardCount: 1 },
    });
    expect(created.status).toBe(201);
    const erased = await call(h.baseUrl, 'DELETE', '/api/v1/me', { token: dToken, body: { password } });
    expect(erased.status).toBe(200);
    const row = await h.db.pool.query('SELECT title, created_by FROM elections WHERE election_id = $1', [created.body.electionId]);
    expect(row.rows).toEqual([{ title: 'Made by D', created_by: null }]);
  });
});

describe('DELETE /api/v1/admin/users/{userId}', () => {
  it('erases on request from another channel, idempotently; admins only', async () => {
    const c = await newViewer();
    const viewer = await newViewer();
    expect((await call(h.baseUrl, 'DELETE', `/api/v1/admin/users/${c.userId}`, { token: viewer.accessToken })).status).toBe(403);
    const first = await call(h.baseUrl, 'DELETE', `/api/v1/admin/users/${c.userId}`, { token: adminToken });
    expect(first.status).toBe(200);
    expect(first.body).toMatchObject({ userId: c.userId, alreadyErased: false });
    const second = await call(h.baseUrl, 'DELETE', `/api/v1/admin/users/${c.userId.toUpperCase()}`, { token: adminToken });
    expect(second.status).toBe(200);
    expect(second.body).toEqual({ userId: c.userId, erasedAt: first.body.erasedAt, alreadyErased: true });
    const unknown = await call(h.baseUrl, 'DELETE', `/api/v1/admin/users/${randomUUID()}`, { token: adminToken });
    expect([unknown.status, unknown.body.error.code]).toEqual([404, 'user_not_found']);
    expect((await call(h.baseUrl, 'DELETE', '/api/v1/admin/users/not-a-uuid', { token: adminToken })).body.error.code).toBe('validation_failed');
    expect((await h.db.pool.query("SELECT requested_by FROM erased_accounts WHERE user_id = $1", [c.userId])).rows).toEqual([{ requested_by: 'admin' }]);
  });

  it('defers while the user has a vote in an open election', async () => {
    const e = await newViewer();
    const election = await newElection('Admin deferral');
    await vote(e, election.electionId, election.candidateIds[0]!);
    const deferred = await call(h.baseUrl, 'DELETE', `/api/v1/admin/users/${e.userId}`, { token: adminToken });
    expect([deferred.status, deferred.body.error.code]).toEqual([409, 'erasure_deferred']);
    await closeElection(election.electionId);
    expect((await call(h.baseUrl, 'DELETE', `/api/v1/admin/users/${e.userId}`, { token: adminToken })).status).toBe(200);
  });
});

describe('retention', () => {
  it('purges only metadata older than the retention period', async () => {
    const dayMs = 24 * 3600 * 1000;
    const now = Date.now();
    const electionId = randomUUID();
    const userId = randomUUID();
    const meta = (voterNumber: number, atMs: number) => ({ electionId, voterNumber, clientIp: '192.0.2.1', networkKey: '192.0.2.0/24', userAgent: '', atMs });
    privacy.metadata.record(meta(1, now - 31 * dayMs));
    privacy.metadata.record(meta(2, now - 29 * dayMs));
    privacy.metadata.record(meta(3, now));
    privacy.metadata.recordLogin({ userId, clientIp: '192.0.2.1', networkKey: '192.0.2.0/24', atMs: now - 40 * dayMs });
    privacy.metadata.recordLogin({ userId, clientIp: '192.0.2.1', networkKey: '192.0.2.0/24', atMs: now - dayMs });
    await privacy.metadata.flush();
    const result = await privacy.purgeExpiredMetadata();
    expect(result.voteMetadataDeleted).toBeGreaterThanOrEqual(1);
    expect(result.accountMetadataDeleted).toBeGreaterThanOrEqual(1);
    expect(result.incomplete).toBe(false);
    const left = await h.db.pool.query('SELECT voter_number FROM vote_metadata WHERE election_id = $1 ORDER BY 1', [electionId]);
    expect(left.rows.map((r) => r.voter_number)).toEqual([2, 3]);
    const accounts = await h.db.pool.query('SELECT count(*) AS n FROM account_metadata WHERE user_id = $1', [userId]);
    expect(Number(accounts.rows[0].n)).toBe(1);
    const old = await h.db.pool.query("SELECT count(*) AS n FROM vote_metadata WHERE recorded_at < now() - interval '30 days'");
    expect(Number(old.rows[0].n)).toBe(0);
  });
});
