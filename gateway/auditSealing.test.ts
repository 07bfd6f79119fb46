// The audit sealer as the app runs it: committed batches reach their chains on the node's timer,
// and a node's stop seals what its last commits left, so nothing stays pending after a clean stop.
import { afterEach, describe, expect, it } from 'vitest';
import { verifyAudit } from '../persistence/audit.ts';
import { call, login, startAppHarness, testAdmin, type AppHarness } from '../infra/testing/appHarness.ts';
import { createVoters } from '../infra/testing/voters.ts';

let h: AppHarness | undefined;
afterEach(async () => {
  await h?.close();
  h = undefined;
});

async function openElectionAndVote(harness: AppHarness, voterCount: number): Promise<string> {
  const admin = await login(harness.baseUrl, testAdmin.email, testAdmin.password);
  const created = await call(harness.baseUrl, 'POST', '/api/v1/admin/elections', {
    token: admin, body: { title: 'Sealed', candidates: [{ name: 'A' }, { name: 'B' }], shardCount: 4 },
  });
  expect(created.status).toBe(201);
  const electionId = created.body.electionId as string;
  const candidateId = created.body.candidates[0].candidateId as string;
  expect((await call(harness.baseUrl, 'POST', `/api/v1/admin/elections/${electionId}/open`, { token: admin })).status).toBe(200);
  for (const voter of await createVoters(harness.db.pool, voterCount, harness.secrets.jwtSecret)) {
    const answer = await call(harness.baseUrl, 'POST', '/api/v1/votes', { token: voter.token, body: { electionId, candidateId, userId: voter.userId } });
    expect(answer.status).toBe(200);
  }
  return electionId;
}

const pendingBatches = async (harness: AppHarness) =>
  Number((await harness.db.pool.query('SELECT count(*) FROM vote_batches WHERE audit_shards IS NOT NULL')).rows[0].count);
const records = async (harness: AppHarness, electionId: string) =>
  Number((await harness.db.pool.query('SELECT count(*) FROM audit_records WHERE election_id = $1', [electionId])).rows[0].count);

describe('the audit sealer in a running node', () => {
  it('seals committed batches on its timer', async () => {
    h = await startAppHarness({ LIVEVOTE_AUDIT_SEAL_INTERVAL_MS: '50' });
    const electionId = await openElectionAndVote(h, 12);
    await expect.poll(() => pendingBatches(h!), { timeout: 60_000 }).toBe(0);
    expect(await records(h, electionId)).toBeGreaterThanOrEqual(1);
    const metrics = await (await fetch(`${h.baseUrl}/metrics`)).text();
    expect(Number(/^livevote_audit_last_seal_timestamp_seconds (\S+)$/m.exec(metrics)?.[1])).toBeGreaterThan(0);
    expect(Number(/^livevote_audit_sealed_batches_total (\S+)$/m.exec(metrics)?.[1])).toBeGreaterThanOrEqual(1);
    const report = await verifyAudit(h.db.pool, { electionId });
    expect(report.elections[0]).toMatchObject({ votes: 12, awaitingSealRows: 0, intact: true });
  });

  it('seals on stop what the timer has not', async () => {
    // The timer's first tick is a minute away: only the stop can seal these.
    h = await startAppHarness({ LIVEVOTE_AUDIT_SEAL_INTERVAL_MS: '60000' });
    const electionId = await openElectionAndVote(h, 12);
    expect(await pendingBatches(h)).toBeGreaterThanOrEqual(1);
    expect(await records(h, electionId)).toBe(0);
    await h.stopApp();
    expect(await pendingBatches(h)).toBe(0);
    const report = await verifyAudit(h.db.pool, { electionId });
    expect(report.elections[0]).toMatchObject({ votes: 12, awaitingSealRows: 0, intact: true });
  });
});
