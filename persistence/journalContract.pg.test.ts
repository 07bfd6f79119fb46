// The journal contract (actors/journalContract.ts), run against the Postgres adapters.
import { afterAll, beforeAll } from 'vitest';
import { journalContract } from '../actors/journalContract.ts';
import { createPgBatchIdSource } from './batchIds.ts';
import { pgJournalContractSubject } from './journalContractSubject.ts';
import { createTestDatabase, type TestDatabase } from './testDatabase.ts';
import { createPgJournal } from './voteJournal.ts';

const nodeId = 'contract-node';
let db: TestDatabase;

beforeAll(async () => {
  db = await createTestDatabase();
});

afterAll(async () => {
  await db?.drop();
});

journalContract('postgres', async () =>
  pgJournalContractSubject(db.pool, nodeId, createPgJournal({ pool: db.pool, nodeId }), await createPgBatchIdSource({ pool: db.pool })));
