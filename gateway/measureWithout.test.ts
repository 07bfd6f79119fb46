// LIVEVOTE_MEASURE_WITHOUT (bench/features.ts's knob runs): each switch really removes its work,
// and only where it is set. The same vote goes to an app with every switch at its default and to
// apps with switches off; what each part leaves behind (audit records, metadata rows, metric
// series) or refuses (a forged token, a body the schema refuses, a write under a stale lease
// epoch) is compared.
import { randomUUID } from 'node:crypto';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { call, login, register, startAppHarness, testAdmin, type AppHarness } from '../infra/testing/appHarness.ts';

// Lease renewals every TTL/3 (200 s) would notice the fence test's moved epochs themselves and
// drop the shards before the vote gets there; the test wants the vote's own commit to meet them.
const patientLeases = { LIVEVOTE_LEASE_TTL_MS: '600000' };
let on: AppHarness;
let fenceOff: AppHarness;
/** Every switch but the fence (which has an app of its own, so its test shows the fence alone). */
let restOff: AppHarness;

beforeAll(async () => {
  [on, fenceOff, restOff] = await Promise.all([
    startAppHarness(patientLeases),
    startAppHarness({ ...patientLeases, LIVEVOTE_MEASURE_WITHOUT: 'fence' }),
    startAppHarness({ ...patientLeases, LIVEVOTE_MEASURE_WITHOUT: 'audit_chain,metadata,metrics,token_check,body_checks' }),
  ]);
}, 120_000);
afterAll(async () => {
  await Promise.all([on?.close(), fenceOff?.close(), restOff?.close()]);
});

async function openElection(h: AppHarness): Promise<{ electionId: string; candidateId: string }> {
  const admin = await login(h.baseUrl, testAdmin.email, testAdmin.password);
  const created = await call(h.baseUrl, 'POST', '/api/v1/admin/elections', {
    token: admin, body: { title: 'Measured', candidates: [{ name: 'Ada' }, { name: 'Grace' }], shardCount: 2 },
  });
  expect(created.status).toBe(201);
  const electionId = created.body.electionId as string;
  expect((await call(h.baseUrl, 'POST', `/api/v1/admin/elections/${electionId}/open`, { token: admin })).status).toBe(200);
  // Served once its shards are recovered on this node.
  await expect.poll(async () => (await call(h.baseUrl, 'GET', `/api/v1/results/${electionId}`)).status, { timeout: 60_000 }).toBe(200);
  return { electionId, candidateId: created.body.candidates[0].candidateId as string };
}

async function vote(h: AppHarness, election: { electionId: string; candidateId: string }, options: { token?: string; extra?: Record<string, unknown> } = {}) {
  const voter = await register(h.baseUrl, `voter-${randomUUID()}@example.com`);
  return call(h.baseUrl, 'POST', '/api/v1/votes', {
    token: options.token ?? voter.accessToken,
    body: { electionId: election.electionId, candidateId: election.candidateId, userId: voter.userId, ...options.extra },
  });
}

const countOf = async (h: AppHarness, sql: string, electionId: string) => Number((await h.db.pool.query(sql, [electionId])).rows[0].count);

describe('LIVEVOTE_MEASURE_WITHOUT', () => {
  it('says on /metrics how many parts are off', async () => {
    const gauge = async (h: AppHarness) => /^livevote_measurement_features_off (\d+)$/m.exec(await (await fetch(`${h.baseUrl}/metrics`)).text())?.[1];
    expect(await gauge(on)).toBe('0');
    expect(await gauge(fenceOff)).toBe('1');
    expect(await gauge(restOff)).toBe('5');
  });

  it('audit_chain: a stored vote leaves nothing to seal and appends no audit record', async () => {
    const auditRecords = 'SELECT count(*) FROM audit_records WHERE election_id = $1';
    const pendingParts = `SELECT count(*) FROM vote_batches b, unnest(b.audit_election_ids) AS p(election_id)
                           WHERE b.audit_shards IS NOT NULL AND p.election_id = $1`;
    expect(restOff.app.auditSealer).toBeUndefined();
    for (const [h, expected] of [[on, 1], [restOff, 0]] as const) {
      const election = await openElection(h);
      expect((await vote(h, election)).status).toBe(200);
      expect(await countOf(h, 'SELECT count(*) FROM votes WHERE election_id = $1', election.electionId)).toBe(1);
      // One statement, one snapshot: the node's sealer may seal the batch between two reads.
      expect(await countOf(h, `SELECT (${pendingParts}) + (${auditRecords}) AS count`, election.electionId)).toBe(expected);
      await h.app.auditSealer?.sealNow();
      expect(await countOf(h, auditRecords, election.electionId)).toBe(expected);
    }
  });

  it('fence: a commit under a lease epoch that moved on is stored as it is, where the fence refuses it', async () => {
    // With the fence, the stale write is refused (the shard's lease is lost, taken again, the vote
    // retried inside the node and stored under the new epoch, or answered 503 if that outlasts
    // the route retry on a busy machine); without it, stored under the old epoch at once.
    const staleRows = `SELECT count(*) FROM votes v JOIN shard_leases l USING (election_id, shard)
                        WHERE v.election_id = $1 AND v.epoch < l.epoch`;
    for (const [h, expectedStale] of [[on, 0], [fenceOff, 1]] as const) {
      const election = await openElection(h);
      // As if another node had taken every shard over: the epochs this node holds are stale.
      await h.db.pool.query('UPDATE shard_leases SET epoch = epoch + 1 WHERE election_id = $1', [election.electionId]);
      const answer = await vote(h, election);
      if (expectedStale === 1) expect(answer.status, JSON.stringify(answer.body)).toBe(200);
      else expect([200, 503], JSON.stringify(answer.body)).toContain(answer.status);
      if (answer.status === 200) expect(await countOf(h, 'SELECT count(*) FROM votes WHERE election_id = $1', election.electionId)).toBe(1);
      expect(await countOf(h, staleRows, election.electionId)).toBe(expectedStale);
    }
  });

  it('metadata: an accepted vote records no request metadata', async () => {
    for (const [h, expected] of [[on, 1], [restOff, 0]] as const) {
      const election = await openElection(h);
      expect((await vote(h, election)).status).toBe(200);
      await h.app.privacy.metadata.flush();
      expect(await countOf(h, 'SELECT count(*) FROM vote_metadata WHERE election_id = $1', election.electionId)).toBe(expected);
    }
  });

  it('metrics: a vote is counted in no per-request series', async () => {
    for (const [h, counted] of [[on, true], [restOff, false]] as const) {
      expect((await vote(h, await openElection(h))).status).toBe(200);
      const text = await (await fetch(`${h.baseUrl}/metrics`)).text();
      expect(/^livevote_votes_total\{outcome="accepted"\} \d+$/m.test(text)).toBe(counted);
      expect(/^livevote_http_requests_total\{[^}]*route="\/api\/v1\/votes"[^}]*\} \d+$/m.test(text)).toBe(counted);
      expect(/^livevote_http_request_duration_seconds_count\{[^}]*route="\/api\/v1\/votes"[^}]*\} \d+$/m.test(text)).toBe(counted);
    }
  });

  it('token_check: a token with a wrong signature is taken only with the check off', async () => {
    for (const [h, expected] of [[on, 401], [restOff, 200]] as const) {
      const election = await openElection(h);
      const voter = await register(h.baseUrl, `voter-${randomUUID()}@example.com`);
      const [header, payload] = voter.accessToken.split('.');
      const forged = `${header}.${payload}.${'A'.repeat(43)}`;
      const answer = await call(h.baseUrl, 'POST', '/api/v1/votes', { token: forged, body: { electionId: election.electionId, candidateId: election.candidateId, userId: voter.userId } });
      expect(answer.status, JSON.stringify(answer.body)).toBe(expected);
      if (expected === 401) expect(answer.body.error.code).toBe('invalid_token');
    }
    // Not a token at all is still refused: the payload must decode to the claims the route needs.
    expect((await vote(restOff, await openElection(restOff), { token: 'not-a-token' })).status).toBe(401);
  });

  it('body_checks: a body the schema refuses is taken only with the checks off', async () => {
    for (const [h, expected] of [[on, 400], [restOff, 200]] as const) {
      const answer = await vote(h, await openElection(h), { extra: { unexpected: 'field' } });
      expect(answer.status, JSON.stringify(answer.body)).toBe(expected);
    }
  });
});
