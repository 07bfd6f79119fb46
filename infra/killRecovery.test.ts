// Invariant 2 for real: votes stream into a livevote process, which is killed with SIGKILL
// mid-stream; after a restart every vote that was answered `accepted` is counted exactly once,
// nothing that was never sent is counted, the live tally equals count(*), retries of the
// acknowledged votes get their original voteIds, and every stored vote reaches its audit chain.
import { mkdtemp, rm } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { verifyAudit } from '../persistence/audit.ts';
import { createTestDatabase, type TestDatabase } from '../persistence/testDatabase.ts';
import { call, functionalTestEnv, patientTestEnv } from './testing/appHarness.ts';
import { killStartedProcesses, startLivevoteProcess } from './testing/processHarness.ts';
import { createVoters, type TestVoter } from './testing/voters.ts';

const jwtSecret = 'kill-test-jwt-secret-0123456789-abcdefghij';
const admin = { email: 'admin@kill.test', password: 'kill test admin password' };
let db: TestDatabase;
let dataDir: string;

beforeAll(async () => {
  db = await createTestDatabase();
  dataDir = await mkdtemp(path.join(os.tmpdir(), 'lv-kill-'));
});
afterAll(async () => {
  await killStartedProcesses();
  await db.drop();
  await rm(dataDir, { recursive: true, force: true });
});

interface Sent {
  readonly voter: TestVoter;
  readonly candidate: number;
  outcome: 'accepted' | 'refused' | 'no_answer';
  voteId?: string;
}

describe('kill -9 mid-stream', () => {
  // Both places the journal's commits can run (LIVEVOTE_JOURNAL_THREAD): on the event loop, or
  // on a worker thread that the SIGKILL takes down with the process.
  it.each(['main', 'worker'] as const)('loses no acknowledged vote and counts nothing twice (commits on the %s thread)', async (journalThread) => {
    const env = {
      LIVEVOTE_JOURNAL_THREAD: journalThread,
      DATABASE_URL: db.url, LIVEVOTE_DATA_DIR: dataDir, LIVEVOTE_JWT_SECRET: jwtSecret,
      LIVEVOTE_ADMIN_EMAIL: admin.email, LIVEVOTE_ADMIN_PASSWORD: admin.password,
      // The restart is the same node: it takes its shards back at once instead of waiting for the
      // cluster to declare its killed predecessor dead.
      LIVEVOTE_NODE_ID: 'kill-recovery-node',
      // Snapshots during the run, so recovery goes through snapshot + tail, not just the tail.
      LIVEVOTE_SNAPSHOT_INTERVAL_MS: '200',
      ...patientTestEnv,
      ...functionalTestEnv,
    };
    const first = await startLivevoteProcess(env);
    expect(first.output().includes('journal commits run on a worker thread')).toBe(journalThread === 'worker');
    const adminToken = (await call(first.baseUrl, 'POST', '/api/v1/auth/login', { body: admin })).body.accessToken;
    const created = await call(first.baseUrl, 'POST', '/api/v1/admin/elections', {
      token: adminToken, body: { title: 'Kill', candidates: [{ name: 'A' }, { name: 'B' }, { name: 'C' }], shardCount: 4 },
    });
    const electionId = created.body.electionId as string;
    const candidateIds = created.body.candidates.map((c: { candidateId: string }) => c.candidateId) as string[];
    await call(first.baseUrl, 'POST', `/api/v1/admin/elections/${electionId}/open`, { token: adminToken });
    const voters = await createVoters(db.pool, 6000, jwtSecret);

    const sent: Sent[] = [];
    let next = 0;
    let killed = false;
    const worker = async () => {
      while (next < voters.length && !killed) {
        const voter = voters[next]!;
        const record: Sent = { voter, candidate: next % 3, outcome: 'no_answer' };
        next++;
        sent.push(record);
        try {
          const response = await call(first.baseUrl, 'POST', '/api/v1/votes', {
            token: voter.token, body: { electionId, candidateId: candidateIds[record.candidate], userId: voter.userId },
          });
          if (response.status === 200) {
            record.outcome = 'accepted';
            record.voteId = response.body.voteId;
          } else {
            record.outcome = 'refused';
          }
        } catch {
          record.outcome = 'no_answer';
        }
      }
    };
    const workers = Array.from({ length: 48 }, worker);
    // Kill once a good number of votes are acknowledged and snapshots have been written: counts,
    // however long a busy machine takes to get there (6,000 voters leave room for them).
    const snapshotCount = async () => Number((await db.pool.query('SELECT count(*) FROM shard_snapshots WHERE election_id = $1', [electionId])).rows[0].count);
    await expect.poll(() => sent.filter((s) => s.outcome === 'accepted').length, { timeout: 300_000, interval: 20 }).toBeGreaterThan(1500);
    await expect.poll(snapshotCount, { timeout: 300_000, interval: 50 }).toBeGreaterThan(0);
    first.child.kill('SIGKILL');
    killed = true;
    expect(await first.exited()).toBe('SIGKILL');
    await Promise.all(workers);

    const accepted = sent.filter((s) => s.outcome === 'accepted');
    expect(accepted.length).toBeGreaterThan(1500);

    const second = await startLivevoteProcess(env);
    try {
      const stored = await db.pool.query<{ voter_number: number; vote_id: string; candidate_index: number }>(
        'SELECT voter_number, vote_id::text AS vote_id, candidate_index FROM votes WHERE election_id = $1', [electionId]);
      const storedByVoter = new Map(stored.rows.map((r) => [r.voter_number, r]));
      const sentByVoter = new Map(sent.map((s) => [s.voter.voterNumber, s]));
      // Every acknowledged vote is stored, as acknowledged.
      for (const vote of accepted) {
        expect(storedByVoter.get(vote.voter.voterNumber), `accepted vote of voter ${vote.voter.voterNumber} lost`).toEqual({
          voter_number: vote.voter.voterNumber, vote_id: vote.voteId, candidate_index: vote.candidate,
        });
      }
      // Nothing stored that was not sent, or for another candidate.
      for (const row of stored.rows) {
        const origin = sentByVoter.get(row.voter_number);
        expect(origin, `stored vote of voter ${row.voter_number} was never sent`).toBeDefined();
        expect(row.candidate_index).toBe(origin!.candidate);
      }
      // The recovered live tally equals count(*) per candidate: no vote counted twice or lost.
      const perCandidate = [0, 0, 0];
      for (const row of stored.rows) perCandidate[row.candidate_index]!++;
      const results = await call(second.baseUrl, 'GET', `/api/v1/results/${electionId}`);
      expect(results.body.candidates.map((c: { votes: number }) => c.votes)).toEqual(perCandidate);
      expect(results.body.totalVotes).toBe(stored.rows.length);

      // Retries after the crash: acknowledged votes get their original voteId; unanswered ones
      // are either found stored (same voteId as stored) or stored now, once.
      for (const vote of [...accepted.slice(0, 200), ...sent.filter((s) => s.outcome === 'no_answer')]) {
        const retry = await call(second.baseUrl, 'POST', '/api/v1/votes', {
          token: vote.voter.token, body: { electionId, candidateId: candidateIds[vote.candidate], userId: vote.voter.userId },
        });
        expect(retry.status).toBe(200);
        const expected = vote.voteId ?? storedByVoter.get(vote.voter.voterNumber)?.vote_id;
        if (expected) expect(retry.body.voteId).toBe(expected);
      }
      const finalCount = Number((await db.pool.query('SELECT count(*) FROM votes WHERE election_id = $1', [electionId])).rows[0].count);
      const finalResults = await call(second.baseUrl, 'GET', `/api/v1/results/${electionId}`);
      expect(finalResults.body.totalVotes).toBe(finalCount);
      // The restarted node seals what the killed one committed but had not sealed: every stored
      // vote reaches its shard's audit chain, and the chains verify.
      await expect.poll(async () => (await verifyAudit(db.pool, { electionId })).elections[0], { timeout: 60_000, interval: 500 })
        .toMatchObject({ votes: finalCount, awaitingSealRows: 0, intact: true });
    } finally {
      second.child.kill('SIGTERM');
      expect(await second.exited()).toBe(0);
    }
  }, 900_000);
});
