// The journal on its worker thread (journalWorker.ts): the journal contract on a real Postgres,
// then what a worker that dies, one that stops answering, one that is restarting, a call beyond the
// bound and a stop do.
import { randomUUID } from 'node:crypto';
import pg from 'pg';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { JournalBatch, JournalCommitResult, ShardKey } from '../actors/ports.ts';
import { journalContract } from '../actors/journalContract.ts';
import { createPgBatchIdSource, type PgBatchIdSource } from './batchIds.ts';
import { pgJournalContractSubject, setLeaseEpoch } from './journalContractSubject.ts';
import { createWorkerJournal, decodeCommit, encodeCommit, WorkerJournal, type JournalWorkerLog, type WorkerJournalOptions } from './journalWorker.ts';
import { createTestDatabase, type TestDatabase } from './testDatabase.ts';
import { moduleBeside } from '../infra/workerThreads.ts';
import { createPgJournal } from './voteJournal.ts';

const nodeId = 'worker-journal-node';
let db: TestDatabase;
let batchIds: PgBatchIdSource;
let contractJournal: WorkerJournal;
const warnings: { obj: object; msg: string }[] = [];
const log: JournalWorkerLog = { info: () => undefined, warn: (obj, msg) => warnings.push({ obj, msg }) };

function workerOptions(applicationName: string, overrides: Partial<WorkerJournalOptions> = {}): WorkerJournalOptions {
  return { url: db.url, journal: { nodeId }, callsInFlightMax: 4, log, applicationName, ...overrides };
}

beforeAll(async () => {
  db = await createTestDatabase();
  batchIds = await createPgBatchIdSource({ pool: db.pool });
  contractJournal = await createWorkerJournal(workerOptions('lv-journal-contract'));
});

afterAll(async () => {
  await contractJournal?.close();
  await db?.drop();
});

// As in production: commits and checks through the worker, the drainer's storeSpilled on the main thread.
journalContract('postgres, commits on a worker thread', async () => {
  const mainThread = createPgJournal({ pool: db.pool, nodeId });
  const journal = {
    commit: (batch: JournalBatch) => contractJournal.commit(batch),
    wasCommitted: (batchId: number) => contractJournal.wasCommitted(batchId),
    storeSpilled: mainThread.storeSpilled.bind(mainThread),
  };
  return pgJournalContractSubject(db.pool, nodeId, journal, batchIds);
});

const setEpoch = (key: ShardKey, epoch: number) => setLeaseEpoch(db.pool, nodeId, key, epoch);

async function waitFor(what: string, condition: () => Promise<boolean> | boolean, timeoutMs = 60_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!(await condition())) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((resolve) => setTimeout(resolve, 25));
  }
}

/** Sessions of this application name, on this database, that wait for a lock. */
async function sessions(applicationName: string, waitingForLock = false): Promise<number> {
  const result = await db.pool.query<{ n: number }>(
    `SELECT count(*)::int AS n FROM pg_stat_activity
      WHERE datname = $1 AND application_name = $2 AND ($3::boolean IS FALSE OR wait_event_type = 'Lock')`,
    [db.name, applicationName, waitingForLock],
  );
  return result.rows[0]!.n;
}

/** A shard with a lease at epoch 1 and a batch of `voters` voters for it. */
async function shardWithBatch(voters: number): Promise<{ key: ShardKey; batch: JournalBatch }> {
  const key = { electionId: randomUUID(), shard: 0 };
  await setEpoch(key, 1);
  const rows = Array.from({ length: voters }, (_, i) => ({
    electionId: key.electionId, shard: 0, epoch: 1, voterNumber: i * 7, candidateIndex: i % 3, voteId: randomUUID(), acceptedAtMs: 1_700_000_000_000 + i,
  }));
  return { key, batch: { batchId: await batchIds.next(), rows } };
}

/** Holds the shard's lease row FOR UPDATE: a commit of that shard waits at its fence until released. */
async function holdLease(key: ShardKey): Promise<{ release(): Promise<void> }> {
  const client = new pg.Client({ connectionString: db.url });
  await client.connect();
  await client.query('BEGIN');
  await client.query('SELECT 1 FROM shard_leases WHERE election_id = $1 AND shard = $2 FOR UPDATE', [key.electionId, key.shard]);
  return {
    async release() {
      await client.query('ROLLBACK');
      await client.end();
    },
  };
}

async function storedRows(electionId: string): Promise<number> {
  return (await db.pool.query<{ n: number }>('SELECT count(*)::int AS n FROM votes WHERE election_id = $1', [electionId])).rows[0]!.n;
}

describe('the journal on a worker thread', () => {
  it('packs a batch into one message and unpacks the same rows', () => {
    const electionA = randomUUID();
    const electionB = randomUUID();
    const rows = [
      { electionId: electionA, shard: 3, epoch: 7, voterNumber: 2 ** 40 + 1, candidateIndex: 2, voteId: randomUUID(), acceptedAtMs: 1_764_000_000_123 },
      { electionId: electionB, shard: 0, epoch: 1, voterNumber: 0, candidateIndex: 0, voteId: randomUUID(), acceptedAtMs: 0 },
      { electionId: electionA, shard: 1023, epoch: 2 ** 50, voterNumber: 5, candidateIndex: 63, voteId: randomUUID(), acceptedAtMs: 1 },
    ];
    const { message, transfer } = encodeCommit(9, { batchId: 42, rows });
    expect(message.electionIds).toEqual([electionA, electionB]);
    expect(transfer).toEqual([message.numbers.buffer]);
    expect(decodeCommit(message)).toEqual({ batchId: 42, rows });
    expect(decodeCommit(encodeCommit(1, { batchId: 1, rows: [] }).message)).toEqual({ batchId: 1, rows: [] });
    // A vote id with the separator in it cannot come back as the same rows: refused, not misread.
    const bad = encodeCommit(2, { batchId: 2, rows: [{ ...rows[0]!, voteId: 'a,b' }] }).message;
    expect(decodeCommit(bad)).toBe('2 vote ids for 1 rows');
  });

  it('a worker that dies mid-commit: the commit resolves failed, the batch is settled by wasCommitted, the next worker commits', async () => {
    const applicationName = 'lv-journal-crash';
    // A start from the sources took over 10 s (the default bound) at load ~34: a bound for that.
    const journal = await createWorkerJournal(workerOptions(applicationName, { restartIntervalMs: 100, startTimeoutMs: 120_000 }));
    try {
      const { key, batch } = await shardWithBatch(20);
      const lease = await holdLease(key);
      let result: JournalCommitResult | undefined;
      const committing = journal.commit(batch).then((r) => (result = r));
      await waitFor('the commit to wait at its fence', async () => (await sessions(applicationName, true)) === 1);
      expect(journal.callsInFlight).toBe(1);
      const warningsBefore = warnings.length;
      await journal.currentWorker!.terminate();
      await committing;
      expect(result).toMatchObject({ kind: 'failed' });
      expect((result as { message: string }).message).toMatch(/journal worker exited/);
      expect(journal.callsInFlight).toBe(0);
      expect(warnings.slice(warningsBefore).map((w) => w.msg)).toContain('the journal worker exited; starting another');
      await lease.release();

      // Whatever the abandoned session did once the lock was free, the check answers it exactly.
      await waitFor('a second worker', () => journal.workersStarted === 2 && journal.currentWorker !== undefined);
      let stored: boolean | undefined;
      await waitFor('the check to answer', async () => {
        stored = await journal.wasCommitted(batch.batchId).catch(() => undefined);
        return stored !== undefined;
      });
      expect(await storedRows(key.electionId)).toBe(stored ? 20 : 0);

      const next = await shardWithBatch(5);
      expect(await journal.commit(next.batch)).toEqual({ kind: 'committed', conflicts: [] });
      expect(await journal.wasCommitted(next.batch.batchId)).toBe(true);
      expect(await storedRows(next.key.electionId)).toBe(5);
    } finally {
      await journal.close();
    }
  });

  it('a restarted worker gets no call until it is ready: a call fails at once meanwhile, however long the start, and the check answers once it is', async () => {
    // The stand-in loads the real worker when told: a start longer than a check's bound (2 s + 1 s),
    // as one took 2.6-6.5 s at load ~13. Before, a check sent to the starting worker timed out and
    // terminated it, and so on with every restart: beside a second suite no check answered in 60 s.
    const journal = new WorkerJournal(workerOptions('lv-journal-slow-start', {
      restartIntervalMs: 100,
      startTimeoutMs: 120_000,
      workerUrl: moduleBeside(import.meta.url, 'journalWorker.slowStartWorker'),
    }));
    const load = () => journal.currentWorker!.postMessage({ t: 'load' });
    const starting = journal.start();
    load();
    await starting;
    try {
      const { batch } = await shardWithBatch(4);
      expect(await journal.commit(batch)).toEqual({ kind: 'committed', conflicts: [] });
      const warningsBefore = warnings.length;
      await journal.currentWorker!.terminate();
      await waitFor('another worker', () => journal.workersStarted === 2 && journal.currentWorker !== undefined);
      await expect(journal.wasCommitted(batch.batchId)).rejects.toThrow(/restarting/);
      const next = await shardWithBatch(2);
      expect(await journal.commit(next.batch)).toEqual({ kind: 'failed', message: `batch ${next.batch.batchId}: the journal worker is restarting` });
      expect(journal.callsInFlight).toBe(0);
      expect(journal.isWorkerReady()).toBe(false);

      load();
      await waitFor('the worker to be ready', () => journal.isWorkerReady());
      // (A check the worker's Postgres client gave up on, on a busy machine, is asked again.)
      let stored: boolean | undefined;
      await waitFor('the check to answer', async () => {
        stored = await journal.wasCommitted(batch.batchId).catch(() => undefined);
        return stored !== undefined;
      });
      expect(stored).toBe(true);
      expect(await journal.commit(next.batch)).toEqual({ kind: 'committed', conflicts: [] });
      // The worker that was starting answered: none was terminated for its start.
      expect(journal.workersStarted).toBe(2);
      expect(warnings.slice(warningsBefore).map((w) => w.msg)).toEqual(['the journal worker exited; starting another']);
    } finally {
      await journal.close();
    }
  });

  it('a restarted worker not ready within startTimeoutMs is terminated and another started', async () => {
    // The bound is the first start's too, which must be ready within it on a busy machine (a start
    // from the sources took over 10 s at load ~33 beside two chaos suites).
    const startTimeoutMs = 30_000;
    const journal = new WorkerJournal(workerOptions('lv-journal-never-ready', {
      restartIntervalMs: 100,
      startTimeoutMs,
      workerUrl: moduleBeside(import.meta.url, 'journalWorker.slowStartWorker'),
    }));
    const starting = journal.start();
    journal.currentWorker!.postMessage({ t: 'load' });
    await starting;
    try {
      const warningsBefore = warnings.length;
      await journal.currentWorker!.terminate();
      await waitFor('a third worker', () => journal.workersStarted === 3, startTimeoutMs + 60_000);
      expect(warnings.slice(warningsBefore).map((w) => w.msg)).toEqual([
        'the journal worker exited; starting another',
        'the journal worker did not start in time; terminating it',
        'the journal worker exited; starting another',
      ]);
    } finally {
      await journal.close();
    }
  });

  it('a worker that stops answering: the call fails after the bound plus the grace, the worker is terminated and another started', async () => {
    // The stand-in says ready and never answers, as a worker stuck in a loop would.
    const journal = await createWorkerJournal(workerOptions('lv-journal-silent', {
      journal: { nodeId, statementTimeoutMs: 100, checkTimeoutMs: 100 },
      answerGraceMs: 50,
      restartIntervalMs: 100,
      // A restarted worker must be ready within this, or it is terminated too (slow starts under load).
      startTimeoutMs: 120_000,
      workerUrl: moduleBeside(import.meta.url, 'journalWorker.faultyWorker'),
    }));
    try {
      const { batch } = await shardWithBatch(3);
      const warningsBefore = warnings.length;
      // PgJournal's own bound is the statement timeout plus 2 s; the main thread waits the grace longer.
      expect(await journal.commit(batch)).toEqual({ kind: 'failed', message: 'no answer from the journal worker within 2150 ms' });
      expect(journal.callsInFlight).toBe(0);
      await waitFor('the stuck worker to be replaced', () => journal.workersStarted === 2 && journal.isWorkerReady());
      expect(warnings.slice(warningsBefore).map((w) => w.msg)).toEqual([
        'the journal worker did not answer in time; terminating it',
        'the journal worker exited; starting another',
      ]);
      // A check is bounded the same way (its own bound plus the grace), and rejects.
      await expect(journal.wasCommitted(batch.batchId)).rejects.toThrow('no answer from the journal worker within 150 ms');
      await waitFor('the next stuck worker to be replaced', () => journal.workersStarted === 3 && journal.isWorkerReady());
    } finally {
      await journal.close();
    }
  });

  it('restarts at most once per restartIntervalMs: meanwhile a commit fails and a check rejects at once', async () => {
    const journal = await createWorkerJournal(workerOptions('lv-journal-restart', { restartIntervalMs: 600_000 }));
    try {
      const worker = journal.currentWorker!;
      await worker.terminate();
      await waitFor('the exit to be seen', () => journal.currentWorker === undefined);
      const { batch } = await shardWithBatch(1);
      expect(await journal.commit(batch)).toEqual({ kind: 'failed', message: `batch ${batch.batchId}: the journal worker is restarting` });
      await expect(journal.wasCommitted(batch.batchId)).rejects.toThrow(/restarting/);
      expect(journal.workersStarted).toBe(1);
    } finally {
      await journal.close();
    }
    expect(journal.currentWorker).toBeUndefined();
  });

  it('refuses a call beyond callsInFlightMax; close lets the call in flight finish, then ends the worker and its pool', async () => {
    const applicationName = 'lv-journal-stop';
    const journal = await createWorkerJournal(workerOptions(applicationName, { callsInFlightMax: 1 }));
    const { key, batch } = await shardWithBatch(10);
    const lease = await holdLease(key);
    const committing = journal.commit(batch);
    await waitFor('the commit to wait at its fence', async () => (await sessions(applicationName, true)) === 1);

    const beyond = await shardWithBatch(1);
    expect(await journal.commit(beyond.batch)).toMatchObject({ kind: 'failed', message: expect.stringMatching(/in flight already/) });
    await expect(journal.wasCommitted(beyond.batch.batchId)).rejects.toThrow(/in flight already/);

    let closed = false;
    const closing = journal.close().then(() => (closed = true));
    expect(await journal.commit(beyond.batch)).toMatchObject({ kind: 'failed', message: expect.stringMatching(/closed/) });
    await expect(journal.wasCommitted(beyond.batch.batchId)).rejects.toThrow(/closed/);
    // The commit in flight holds the close: it is still waiting for the lease row.
    expect(await sessions(applicationName, true)).toBe(1);
    expect(closed).toBe(false);

    await lease.release();
    expect(await committing).toEqual({ kind: 'committed', conflicts: [] });
    await closing;
    expect(journal.currentWorker).toBeUndefined();
    expect(await storedRows(key.electionId)).toBe(10);
    await waitFor('the worker pool\'s sessions to end', async () => (await sessions(applicationName)) === 0);
  });
});
