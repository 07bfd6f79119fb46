// Issue 15's chaos: a livevote node on a Postgres of its own (embedded mode, so the spill queue is
// the fsynced file queue in its data dir) takes votes while that Postgres is frozen with SIGSTOP
// for 10 s, then resumed; and, separately, is killed with SIGKILL while its batches sit in the
// queue. Afterwards every acknowledged vote is stored exactly once, nothing that was not sent is
// stored, the results equal count(*), and the queue is empty. Answer times during the freeze are
// printed (p50/p99/max): the README promises LIVEVOTE_COMMIT_DEADLINE_MS + 250 ms.
//
// Only the test's own Postgres is stopped: its postmaster's pid comes from the postmaster.pid in
// this test's temporary data dir. The machine's shared Postgres is never touched.
import { mkdtemp, readFile, rm } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { createPool, endPool, type Pool } from '../persistence/db.ts';
import { embeddedDatabaseUrl, startEmbeddedPostgres, type EmbeddedPostgresHandle } from '../persistence/embeddedPostgres.ts';
import { silentLogger } from './logger.ts';
import { ensureSqsSpillQueues } from '../persistence/sqsSpillQueue.ts';
import { startLocalSqs } from './testing/localSqs.ts';
import { call, functionalTestEnv } from './testing/appHarness.ts';
import { embeddedPostgresPids, freezeEmbeddedPostgres, stopEmbeddedPostgres } from './testing/postmasters.ts';
import { killStartedProcesses, startLivevoteProcess, type LivevoteProcess } from './testing/processHarness.ts';
import { createVoters, type TestVoter } from './testing/voters.ts';

const jwtSecret = 'chaos-spill-jwt-secret-0123456789-abcdefghij';
const admin = { email: 'admin@spill.test', password: 'spill test admin password' };
const deadlineMs = 2_000;
const boundMs = 250;
const dirs: string[] = [];
const pools: Pool[] = [];

/** Postgres servers this file started itself (the SIGKILL case), stopped at the end. */
const ownServers: EmbeddedPostgresHandle[] = [];

afterAll(async () => {
  // Never leave a private Postgres running or stopped, whatever failed: the nodes are killed, and
  // the server of every data dir this file made (a node's, or its own) is continued and stopped.
  await killStartedProcesses();
  await stopEmbeddedPostgres(dirs);
  await Promise.all(ownServers.map((server) => server.stop().catch(() => undefined)));
  await Promise.all(pools.map((pool) => endPool(pool).catch(() => undefined)));
  for (const dir of dirs) await rm(dir, { recursive: true, force: true });
});

function isAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
}

function signal(pids: readonly number[], name: NodeJS.Signals): void {
  for (const pid of pids) {
    try {
      process.kill(pid, name);
    } catch {
      // gone already
    }
  }
}

/** The postmaster of the private server in `dataDir` and every process it forked. */
async function privatePostgresPids(dataDir: string): Promise<number[]> {
  const pids = await embeddedPostgresPids(dataDir);
  expect(pids.length, `a postmaster runs in ${dataDir}`).toBeGreaterThan(0);
  return pids;
}

/** Freezes the private server in `dataDir`, postmaster first (testing/postmasters.ts); its pids, for SIGCONT. */
async function freezePrivatePostgres(dataDir: string): Promise<number[]> {
  const pids = await freezeEmbeddedPostgres(dataDir);
  expect(pids.length, `a postmaster runs in ${dataDir}`).toBeGreaterThan(0);
  return pids;
}

async function privatePool(dataDir: string): Promise<Pool> {
  const lines = (await readFile(path.join(dataDir, 'postgres', 'postmaster.pid'), 'utf8')).split('\n');
  const secrets = JSON.parse(await readFile(path.join(dataDir, 'secrets.json'), 'utf8')) as { embeddedDbPassword: string };
  const pool = createPool(embeddedDatabaseUrl(path.join(dataDir, 'postgres'), Number(lines[3]), secrets.embeddedDbPassword, 'livevote'), 3, 'chaos-spill');
  pools.push(pool);
  return pool;
}

interface Sent {
  readonly voter: TestVoter;
  readonly candidate: number;
  startedAtMs: number;
  answerMs: number;
  status: number;
  voteId?: string;
  /** Why a 503 was not stored (error.details.reason: in_doubt, commit_failed, …). */
  reason?: string;
}

/** A node on the embedded Postgres of its data dir, or on `databaseUrl` (a server the test runs). */
async function startNode(dataDir: string, databaseUrl?: string, env: Record<string, string> = {}): Promise<LivevoteProcess> {
  return startLivevoteProcess({
    DATABASE_URL: databaseUrl, LIVEVOTE_TEST_SERVER_URL: undefined, LIVEVOTE_DATA_DIR: dataDir,
    LIVEVOTE_JWT_SECRET: jwtSecret, LIVEVOTE_ADMIN_EMAIL: admin.email, LIVEVOTE_ADMIN_PASSWORD: admin.password,
    LIVEVOTE_NODE_ID: 'chaos-spill-node', LIVEVOTE_COMMIT_DEADLINE_MS: String(deadlineMs), LIVEVOTE_SNAPSHOT_INTERVAL_MS: '500',
    // A node that cannot store its heartbeat fences itself after ¾ of LIVEVOTE_DEAD_AFTER_MS (its
    // shards may be given to another node): it then refuses votes rather than spill them. A
    // deployment that rides out a 10 s stall of its database sets these above the stall.
    LIVEVOTE_DEAD_AFTER_MS: '20000', LIVEVOTE_LEASE_TTL_MS: '30000',
    ...functionalTestEnv, LIVEVOTE_SPILL_QUEUE: 'file', ...env,
  });
}

async function openElection(node: LivevoteProcess): Promise<{ electionId: string; candidateIds: string[] }> {
  const token = (await call(node.baseUrl, 'POST', '/api/v1/auth/login', { body: admin })).body.accessToken;
  const created = await call(node.baseUrl, 'POST', '/api/v1/admin/elections', {
    token, body: { title: 'Spill', candidates: [{ name: 'A' }, { name: 'B' }, { name: 'C' }], shardCount: 4 },
  });
  expect(created.status).toBe(201);
  await call(node.baseUrl, 'POST', `/api/v1/admin/elections/${created.body.electionId}/open`, { token });
  return { electionId: created.body.electionId, candidateIds: created.body.candidates.map((c: { candidateId: string }) => c.candidateId) };
}

/** Workers that each send one vote at a time, each to a fresh voter, until `until()` says stop. */
async function voteLoad(
  baseUrl: string, election: { electionId: string; candidateIds: string[] }, voters: readonly TestVoter[], sent: Sent[], until: () => boolean, workers = 16,
): Promise<void> {
  let next = 0;
  await Promise.all(Array.from({ length: workers }, async () => {
    while (!until() && next < voters.length) {
      const voter = voters[next++]!;
      const candidate = voter.voterNumber % 3;
      const entry: Sent = { voter, candidate, startedAtMs: Date.now(), answerMs: -1, status: 0 };
      sent.push(entry);
      try {
        const response = await fetch(`${baseUrl}/api/v1/votes`, {
          method: 'POST',
          headers: { authorization: `Bearer ${voter.token}`, 'content-type': 'application/json' },
          body: JSON.stringify({ electionId: election.electionId, candidateId: election.candidateIds[candidate], userId: voter.userId }),
          signal: AbortSignal.timeout(60_000),
        });
        entry.status = response.status;
        const body = (await response.json().catch(() => ({}))) as { voteId?: string; error?: { code?: string; details?: { reason?: string } } };
        entry.voteId = body.voteId;
        entry.reason = body.error?.details?.reason ?? body.error?.code;
      } catch {
        entry.status = -1; // no answer (the node was killed, or a hang the timeout caught)
      }
      entry.answerMs = Date.now() - entry.startedAtMs;
      await new Promise((resolve) => setTimeout(resolve, 2));
    }
  }));
}

function percentile(values: readonly number[], p: number): number {
  const sorted = [...values].sort((a, b) => a - b);
  return sorted[Math.min(sorted.length - 1, Math.floor((p / 100) * sorted.length))] ?? Number.NaN;
}

async function metric(baseUrl: string, name: string): Promise<number> {
  const text = await (await fetch(`${baseUrl}/metrics`)).text();
  const line = text.split('\n').find((l) => l.startsWith(`${name} `) || l.startsWith(`${name}{`));
  return line === undefined ? Number.NaN : Number(line.slice(line.lastIndexOf(' ') + 1));
}

/**
 * Waits until `node` has queued more than `votesMin` votes. When it does not in time, the error
 * says why it could not be told from the assertion alone: the answers so far by status and reason,
 * the node's spill, commit, batch id and fence metrics, and the end of its log. (With two suites on
 * the machine a node queued 4-12 votes in 60 s: ~900 fast commits before the freeze had used up its
 * block of batch ids, so nothing more could spill; the next block is now reserved ahead.)
 */
async function untilQueued(node: LivevoteProcess, votesMin: number, sent: readonly Sent[], peer?: LivevoteProcess): Promise<void> {
  const sinceMs = Date.now();
  try {
    await expect.poll(() => metric(node.baseUrl, 'livevote_queued_votes_total'), { timeout: 60_000, interval: 100 }).toBeGreaterThan(votesMin);
  } catch (error) {
    const byStatus: Record<string, number> = {};
    for (const entry of sent) {
      const key = entry.reason === undefined ? String(entry.status) : `${entry.status}:${entry.reason}`;
      byStatus[key] = (byStatus[key] ?? 0) + 1;
    }
    const related = async (of: LivevoteProcess) => {
      const metrics = await fetch(`${of.baseUrl}/metrics`, { signal: AbortSignal.timeout(10_000) }).then((r) => r.text(), (e: unknown) => `unreadable: ${String(e)}`);
      return metrics.split('\n').filter((line) => !line.startsWith('#') && !line.includes('_bucket{') && /spill|queued|commit|batch|fenc|pending|routed|route_|served/.test(line)).join('\n');
    };
    const byPhase = (from: number, to: number) => {
      const counts: Record<string, number> = {};
      for (const entry of sent.filter((e) => e.startedAtMs >= from && e.startedAtMs < to)) {
        const key = `${entry.status}:${entry.reason ?? ''}`;
        counts[key] = (counts[key] ?? 0) + 1;
      }
      return JSON.stringify(counts);
    };
    throw new Error(
      `${String(error)}\nanswers by status: ${JSON.stringify(byStatus)}; sent before the wait ${byPhase(0, sinceMs)}, during it ${byPhase(sinceMs, Infinity)}` +
        `\nmetrics:\n${await related(node)}\nlog (end):\n${node.output().slice(-6000)}` +
        (peer === undefined ? '' : `\npeer metrics:\n${await related(peer)}\npeer log (end):\n${peer.output().slice(-4000)}`),
    );
  }
}

/** Every acknowledged vote stored once with its voteId, nothing stored that was not sent, the results converge to count(*). */
async function checkStored(pool: Pool, baseUrl: string, electionId: string, sent: readonly Sent[]): Promise<void> {
  const stored = await pool.query<{ voter_number: number; vote_id: string; candidate_index: number }>(
    'SELECT voter_number, vote_id, candidate_index FROM votes WHERE election_id = $1', [electionId]);
  const byVoter = new Map(stored.rows.map((row) => [row.voter_number, row]));
  expect(byVoter.size).toBe(stored.rows.length); // the primary key, but say it
  const sentByVoter = new Map(sent.map((entry) => [entry.voter.voterNumber, entry]));
  const accepted = sent.filter((entry) => entry.status === 200);
  for (const entry of accepted) {
    const row = byVoter.get(entry.voter.voterNumber);
    expect(row, `acknowledged vote of voter ${entry.voter.voterNumber} is not stored`).toBeDefined();
    expect(row!.vote_id).toBe(entry.voteId);
    expect(row!.candidate_index).toBe(entry.candidate);
  }
  for (const row of stored.rows) expect(sentByVoter.has(row.voter_number), `voter ${row.voter_number} stored but never sent`).toBe(true);
  // Converges (invariant 3): a shard's owner publishes its counts every publish interval
  // (cluster/results.ts), so a vote the drainer stored just now reaches the total a moment later.
  const total = async () => {
    const results = await call(baseUrl, 'GET', `/api/v1/results/${electionId}`);
    return (results.body.totalVotes ?? results.body.total) as number;
  };
  try {
    await expect.poll(total, { timeout: 60_000, interval: 250 }).toBe(stored.rows.length);
  } catch (error) {
    // Which shards the results miss, and where their stored votes came from (batch outcome,
    // epoch, against the shard's snapshot watermark): a total that never converges is a lost count.
    const results = await call(baseUrl, 'GET', `/api/v1/results/${electionId}`);
    const parts = await pool.query(
      `SELECT v.shard, v.epoch, b.outcome, count(*)::int AS votes, min(v.batch_id)::text AS min_batch, max(v.batch_id)::text AS max_batch,
              (SELECT watermark_batch_id::text || '@' || epoch FROM shard_snapshots s WHERE s.election_id = v.election_id AND s.shard = v.shard) AS snapshot
         FROM votes v LEFT JOIN vote_batches b ON b.batch_id = v.batch_id
        WHERE v.election_id = $1 GROUP BY v.election_id, v.shard, v.epoch, b.outcome ORDER BY v.shard, v.epoch, b.outcome`, [electionId]);
    throw new Error(`${String(error)}\nresults: ${JSON.stringify(results.body)}\nstored by shard, epoch, batch outcome:\n${parts.rows.map((r) => JSON.stringify(r)).join('\n')}`);
  }
}

describe('chaos: Postgres frozen, then a node killed with batches in the queue', () => {
  it('Postgres frozen 10 s under load: acknowledged votes stored once, the queue drained, answers within the deadline', async () => {
    const dataDir = await mkdtemp(path.join(os.tmpdir(), 'lv-spill-'));
    dirs.push(dataDir);
    const node = await startNode(dataDir);
    const election = await openElection(node);
    const pool = await privatePool(dataDir);
    const voters = await createVoters(pool, 20_000, jwtSecret);
    const sent: Sent[] = [];
    let stop = false;
    const load = voteLoad(node.baseUrl, election, voters, sent, () => stop);
    await new Promise((resolve) => setTimeout(resolve, 1_500));
    const freezeStartMs = Date.now();
    const frozen = await freezePrivatePostgres(dataDir);
    // While votes wait in the queue the results say so: answered, durable, not counted yet. Watched
    // for as long as Postgres stays frozen: the freeze itself can take seconds on a busy machine,
    // so a window counted from before it could close before anything was queued (a suite beside
    // another saw none, with livevote_queued_votes_total > 0).
    let queuedSeen = 0;
    let holding = true;
    const queuedWatch = (async () => {
      while (holding && queuedSeen === 0) {
        const results = await call(node.baseUrl, 'GET', `/api/v1/results/${election.electionId}`);
        queuedSeen = Math.max(queuedSeen, (results.body.queuedVotes as number | undefined) ?? 0);
        await new Promise((resolve) => setTimeout(resolve, 100));
      }
    })();
    await new Promise((resolve) => setTimeout(resolve, 10_000));
    holding = false;
    await queuedWatch;
    signal(frozen, 'SIGCONT');
    const freezeEndMs = Date.now();
    await new Promise((resolve) => setTimeout(resolve, 3_000));
    stop = true;
    await load;

    const duringFreeze = sent.filter((entry) => entry.startedAtMs >= freezeStartMs && entry.startedAtMs < freezeEndMs);
    const times = duringFreeze.map((entry) => entry.answerMs);
    const statuses = new Map<number, number>();
    for (const entry of sent) statuses.set(entry.status, (statuses.get(entry.status) ?? 0) + 1);
    console.log(`chaos spill: ${sent.length} votes sent, by status ${JSON.stringify(Object.fromEntries(statuses))}; during the freeze ${duringFreeze.length} votes, answer ms p50 ${percentile(times, 50)} p99 ${percentile(times, 99)} max ${Math.max(...times)} (deadline ${deadlineMs} + ${boundMs})`);
    expect(duringFreeze.length).toBeGreaterThan(0);
    // Every vote was answered (none hung to the client's 60 s timeout).
    expect(sent.every((entry) => entry.status > 0)).toBe(true);
    // The spill path carried votes during the freeze.
    expect(await metric(node.baseUrl, 'livevote_queued_votes_total')).toBeGreaterThan(0);
    await expect.poll(() => metric(node.baseUrl, 'livevote_spill_queue_batches'), { timeout: 120_000, interval: 200 }).toBe(0);
    await expect.poll(async () => {
      const results = await call(node.baseUrl, 'GET', `/api/v1/results/${election.electionId}`);
      return results.body.totalVotes ?? results.body.total;
    }, { timeout: 120_000, interval: 200 }).toBe(sent.filter((entry) => entry.status === 200).length);
    expect(queuedSeen, 'results never said votes were queued during the freeze').toBeGreaterThan(0);
    expect((await call(node.baseUrl, 'GET', `/api/v1/results/${election.electionId}`)).body.queuedVotes).toBe(0);
    await checkStored(pool, node.baseUrl, election.electionId, sent);
  });

  it('a node killed with SIGKILL while its batches sit in the queue: the restart drains them before serving', async () => {
    const dataDir = await mkdtemp(path.join(os.tmpdir(), 'lv-spill-kill-'));
    dirs.push(dataDir);
    const first = await startNode(dataDir);
    const election = await openElection(first);
    let pool = await privatePool(dataDir);
    const voters = await createVoters(pool, 20_000, jwtSecret);
    await endPool(pool);
    pools.splice(pools.indexOf(pool), 1);
    const sent: Sent[] = [];
    let stop = false;
    const load = voteLoad(first.baseUrl, election, voters, sent, () => stop);
    await new Promise((resolve) => setTimeout(resolve, 1_000));
    const frozen = await freezePrivatePostgres(dataDir);
    // Batches spill and are acknowledged from the queue; then the node dies with them queued.
    await untilQueued(first, 50, sent);
    first.child.kill('SIGKILL');
    await first.exited();
    stop = true;
    await load;
    signal(frozen, 'SIGCONT');
    const acknowledged = sent.filter((entry) => entry.status === 200).length;
    console.log(`chaos spill kill: ${sent.length} votes sent, ${acknowledged} acknowledged before the SIGKILL`);

    // The restart stops the orphaned Postgres, starts its own, and drains the file queue before serving.
    const second = await startNode(dataDir);
    pool = await privatePool(dataDir);
    expect(await metric(second.baseUrl, 'livevote_spill_queue_batches')).toBe(0);
    await expect.poll(async () => {
      const results = await call(second.baseUrl, 'GET', `/api/v1/results/${election.electionId}`);
      return results.body.totalVotes as number;
    }, { timeout: 120_000, interval: 200 }).toBeGreaterThanOrEqual(acknowledged);
    await checkStored(pool, second.baseUrl, election.electionId, sent);
    // A queued voter cannot vote again on the new process: another candidate is a second vote.
    const queuedVoter = sent.find((entry) => entry.status === 200 && entry.answerMs >= 900)!;
    expect(queuedVoter).toBeDefined();
    const again = await call(second.baseUrl, 'POST', '/api/v1/votes', {
      token: queuedVoter.voter.token,
      body: { electionId: election.electionId, candidateId: election.candidateIds[(queuedVoter.candidate + 1) % 3], userId: queuedVoter.voter.userId },
    });
    expect(again.status).toBe(409);
    expect(again.body.voteId ?? again.body.error?.details?.voteId).toBe(queuedVoter.voteId);
  });

  it('Postgres killed with SIGKILL under load and restarted: acknowledged votes stored once, refused ones not counted, the node recovers without a restart', async (context) => {
    // A throwaway Postgres of this test's own (never the shared one): the embedded server, in a
    // temporary directory, on a port that stays the same across the restart so the node's URL does.
    const pgDir = await mkdtemp(path.join(os.tmpdir(), 'lv-spill-pgkill-db-'));
    dirs.push(pgDir);
    const password = 'chaos-pgkill-password';
    const startServer = (port?: number) => startEmbeddedPostgres({ dataDir: pgDir, password, log: silentLogger(), durable: true, port });
    let server: EmbeddedPostgresHandle;
    try {
      server = await startServer();
    } catch (error) {
      console.warn(`SKIPPED: the Postgres killed by this test could not be started (${String(error)})`);
      context.skip();
      return;
    }
    ownServers.push(server);
    const nodeDir = await mkdtemp(path.join(os.tmpdir(), 'lv-spill-pgkill-'));
    dirs.push(nodeDir);
    const node = await startNode(nodeDir, server.url);
    const election = await openElection(node);
    const pool = createPool(server.url, 3, 'chaos-pgkill');
    pools.push(pool);
    const voters = await createVoters(pool, 20_000, jwtSecret);
    await endPool(pool);
    pools.splice(pools.indexOf(pool), 1);

    const sent: Sent[] = [];
    let stop = false;
    const load = voteLoad(node.baseUrl, election, voters, sent, () => stop);
    await new Promise((resolve) => setTimeout(resolve, 1_500));
    // Crash: the postmaster and every backend, at once, as a machine or container dying would.
    const killed = await privatePostgresPids(pgDir);
    const killedAtMs = Date.now();
    signal(killed, 'SIGKILL');
    while (killed.some(isAlive)) await new Promise((resolve) => setTimeout(resolve, 20));
    await new Promise((resolve) => setTimeout(resolve, 5_000));
    // Restarted on the same port: crash recovery replays its WAL; the node's pool reconnects.
    ownServers.splice(ownServers.indexOf(server), 1);
    server = await startServer(server.port);
    ownServers.push(server);
    const restartedAtMs = Date.now();
    // Recovered without a restart of the node: votes sent after the database is back are stored.
    await expect.poll(() => sent.filter((e) => e.startedAtMs > restartedAtMs && e.status === 200).length, { timeout: 120_000, interval: 200 }).toBeGreaterThan(100);
    stop = true;
    await load;
    expect(node.child.exitCode).toBeNull();

    const statuses = new Map<string, number>();
    for (const entry of sent) {
      const key = entry.status === 200 ? '200' : `${entry.status}:${entry.reason ?? '?'}`;
      statuses.set(key, (statuses.get(key) ?? 0) + 1);
    }
    const whileDown = sent.filter((e) => e.startedAtMs >= killedAtMs && e.startedAtMs < restartedAtMs);
    const times = whileDown.map((e) => e.answerMs);
    console.log(`chaos pg kill: ${sent.length} votes sent, by status ${JSON.stringify(Object.fromEntries(statuses))}; while Postgres was down ${whileDown.length} votes, answer ms p50 ${percentile(times, 50)} p99 ${percentile(times, 99)} max ${Math.max(...times)} (deadline ${deadlineMs} + ${boundMs})`);
    expect(whileDown.length).toBeGreaterThan(0);
    // Every vote was answered, none hung.
    expect(sent.every((entry) => entry.status > 0)).toBe(true);
    expect(await metric(node.baseUrl, 'livevote_queued_votes_total')).toBeGreaterThan(0);

    // Drained: the queue is empty and the results are complete.
    await expect.poll(() => metric(node.baseUrl, 'livevote_spill_queue_batches'), { timeout: 120_000, interval: 200 }).toBe(0);
    await expect.poll(async () => (await call(node.baseUrl, 'GET', `/api/v1/results/${election.electionId}`)).body.queuedVotes, { timeout: 120_000, interval: 200 }).toBe(0);
    const checkPool = createPool(server.url, 2, 'chaos-pgkill-check');
    pools.push(checkPool);
    await checkStored(checkPool, node.baseUrl, election.electionId, sent);
    // Refused votes are not counted: a 503 is stored only when it said its outcome was unknown
    // (in_doubt: a retry gets its voteId); every other refusal is in no row.
    const storedVoters = new Set((await checkPool.query<{ voter_number: number }>('SELECT voter_number FROM votes WHERE election_id = $1', [election.electionId])).rows.map((r) => Number(r.voter_number)));
    const refused = sent.filter((e) => e.status !== 200);
    const refusedStored = refused.filter((e) => storedVoters.has(e.voter.voterNumber));
    for (const entry of refusedStored) expect(entry.reason, `voter ${entry.voter.voterNumber} answered ${entry.status} ${entry.reason} is stored`).toBe('in_doubt');
    console.log(`chaos pg kill: ${refused.length} votes refused, ${refusedStored.length} of them (in_doubt) stored after all`);
  });

  // Its own deadlines (balance 60 s, queued 60 s, two drains 120 s each) add up past the default
  // 180 s, which two suites at load 24 reached before the load began: the phases are logged.
  it('two nodes on SQS, Postgres frozen, a node killed with its votes in the queue: the survivor stores them before it serves those shards', async (context) => {
    const startedMs = Date.now();
    const phase = (what: string) => console.log(`[chaos spill sqs] ${what} after ${Date.now() - startedMs} ms`);
    const sqs = await startLocalSqs();
    if ('absent' in sqs) {
      console.warn(`SKIPPED: ${sqs.absent}`);
      context.skip();
      return;
    }
    const pgDir = await mkdtemp(path.join(os.tmpdir(), 'lv-spill-sqs-db-'));
    dirs.push(pgDir);
    let server: EmbeddedPostgresHandle;
    try {
      server = await startEmbeddedPostgres({ dataDir: pgDir, password: 'chaos-sqs-password', log: silentLogger(), durable: true });
    } catch (error) {
      sqs.server.close();
      console.warn(`SKIPPED: the Postgres frozen by this test could not be started (${String(error)})`);
      context.skip();
      return;
    }
    ownServers.push(server);
    phase('SQS and the Postgres to freeze started');
    try {
      const urls = await ensureSqsSpillQueues(sqs.client, `chaos-spill-${process.pid}`);
      const nodeDir = await mkdtemp(path.join(os.tmpdir(), 'lv-spill-sqs-'));
      dirs.push(nodeDir);
      const env = (nodeId: string, az: string): Record<string, string> => ({
        LIVEVOTE_NODE_ID: nodeId, LIVEVOTE_AZ: az,
        LIVEVOTE_SPILL_QUEUE: 'sqs', LIVEVOTE_SQS_QUEUE_URL: urls.queueUrl, LIVEVOTE_SQS_DEAD_LETTER_QUEUE_URL: urls.deadLetterQueueUrl,
        AWS_REGION: 'us-east-1', AWS_ENDPOINT_URL_SQS: String(sqs.client.endpoint), AWS_ACCESS_KEY_ID: 'test', AWS_SECRET_ACCESS_KEY: 'test',
        // A failure detector that outlasts the 4 s freeze (a node fences itself after ¾ of it
        // without a stored heartbeat) and still declares the killed node dead within the test.
        LIVEVOTE_DEAD_AFTER_MS: '8000', LIVEVOTE_LEASE_TTL_MS: '6000',
        // A batch goes to the queue 1 s after its oldest vote arrived, not the default 5 s (half the
        // commit deadline): the node fences itself 6 s into the freeze, and with the default only
        // the votes of the freeze's first second could be queued by then. Under two suites that
        // second held 1-8 votes (one full run queued 1); this leaves five seconds of them.
        LIVEVOTE_SPILL_AFTER_MS: '1000',
      });
      const a = await startNode(nodeDir, server.url, env('sqs-a', 'a'));
      const election = await openElection(a);
      const b = await startNode(nodeDir, server.url, env('sqs-b', 'b'));
      phase('both nodes started');
      const token = (await call(a.baseUrl, 'POST', '/api/v1/auth/login', { body: admin })).body.accessToken as string;
      // Both serve shards (a joining node gets some at once).
      let shardsOfA: number[] = [];
      const balancedBy = Date.now() + 60_000;
      while (shardsOfA.length === 0 || shardsOfA.length === 4) {
        expect(Date.now() < balancedBy, 'both nodes serve shards of the election').toBe(true);
        await new Promise((resolve) => setTimeout(resolve, 200));
        const view = (await call(b.baseUrl, 'GET', '/api/v1/admin/cluster', { token })).body as { shards: { electionId: string; shard: number; ownerNodeId: string }[] };
        const mine = view.shards.filter((row) => row.electionId === election.electionId);
        shardsOfA = mine.length === 4 ? mine.filter((row) => row.ownerNodeId === 'sqs-a').map((row) => row.shard) : [];
      }
      const pool = createPool(server.url, 3, 'chaos-sqs');
      pools.push(pool);
      const voters = await createVoters(pool, 20_000, jwtSecret);
      phase('both nodes serve shards; voters created');

      // The load goes to the survivor; votes of a's shards are forwarded to a.
      const sent: Sent[] = [];
      let stop = false;
      const load = voteLoad(b.baseUrl, election, voters, sent, () => stop);
      await new Promise((resolve) => setTimeout(resolve, 1_500));
      const frozen = await freezePrivatePostgres(pgDir);
      phase('Postgres frozen');
      // A few suffice: the node queues only until it fences itself (¾ of deadAfterMs without a stored
      // heartbeat), and at load 20 that window held 8 votes where a quiet box queues hundreds.
      await untilQueued(a, 4, sent, b);
      phase('votes queued during the freeze');
      const killedAtMs = Date.now();
      a.child.kill('SIGKILL');
      await a.exited();
      signal(frozen, 'SIGCONT');
      // b is declared the owner of a's shards, stores their queued parts, recovers, serves.
      await new Promise((resolve) => setTimeout(resolve, 15_000));
      stop = true;
      await load;
      const statuses = new Map<string, number>();
      for (const entry of sent) {
        const key = entry.status === 200 ? '200' : `${entry.status}:${entry.reason ?? '?'}`;
        statuses.set(key, (statuses.get(key) ?? 0) + 1);
      }
      console.log(`chaos spill sqs: ${sent.length} votes sent, by status ${JSON.stringify(Object.fromEntries(statuses))}; a (shards ${shardsOfA.join(',')}) killed ${Date.now() - killedAtMs} ms before the end of the load`);

      await expect.poll(() => metric(b.baseUrl, 'livevote_spill_queue_batches'), { timeout: 120_000, interval: 250 }).toBe(0);
      await expect.poll(async () => (await call(b.baseUrl, 'GET', `/api/v1/results/${election.electionId}`)).body.queuedVotes, { timeout: 120_000, interval: 250 }).toBe(0);
      await checkStored(pool, b.baseUrl, election.electionId, sent);
      // A voter of a's shards answered from the queue (slowly: during the freeze) cannot vote again on b.
      const queuedVoter = sent.find((entry) => entry.status === 200 && entry.answerMs >= 900 && shardsOfA.includes(entry.voter.voterNumber % 4));
      expect(queuedVoter, 'no vote of the killed node\'s shards was answered from the queue').toBeDefined();
      const again = await call(b.baseUrl, 'POST', '/api/v1/votes', {
        token: queuedVoter!.voter.token,
        body: { electionId: election.electionId, candidateId: election.candidateIds[(queuedVoter!.candidate + 1) % 3], userId: queuedVoter!.voter.userId },
      });
      expect(again.status).toBe(409);
      expect(again.body.voteId ?? again.body.error?.details?.voteId).toBe(queuedVoter!.voteId);
    } finally {
      sqs.server.close();
    }
  }, 480_000);
});
