// The revoked-session registry and its poller against real Postgres.
import { randomBytes, randomUUID } from 'node:crypto';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { silentLogger } from '../../infra/logger.ts';
import type { Pool } from '../../persistence/db.ts';
import { createTestDatabase, type TestDatabase } from '../../persistence/testDatabase.ts';
import { insertRefreshToken, insertUser, revokeUserSessions } from '../../persistence/users.ts';
import { SessionRevocations } from './revocations.ts';

const log = silentLogger();
let db: TestDatabase;
let nowMs = Date.now();
const clock = () => nowMs;
const ttlMs = 15 * 60 * 1000;

beforeAll(async () => {
  db = await createTestDatabase();
});

afterAll(async () => {
  await db?.drop();
});

/** A user with `families` live sessions; returns the user id and the session ids. */
async function userWithSessions(families: number): Promise<{ userId: string; sessionIds: string[] }> {
  const userId = randomUUID();
  await insertUser(db.pool, { userId, emailHash: randomBytes(32), passwordHash: 'scrypt$1024$8$1$x$y', role: 'viewer' });
  const sessionIds: string[] = [];
  for (let i = 0; i < families; i++) {
    const familyId = randomUUID();
    sessionIds.push(familyId);
    await insertRefreshToken(db.pool, {
      tokenHash: randomBytes(32), familyId, userId, issuedAt: new Date(nowMs), expiresAt: new Date(nowMs + 86_400_000),
    });
  }
  return { userId, sessionIds };
}

async function revokeAll(userId: string): Promise<void> {
  await revokeUserSessions(db.pool, userId, new Date(nowMs), new Date(nowMs + ttlMs));
}

describe('SessionRevocations', () => {
  it('loads every live revocation at start, paging through rows that share one timestamp', async () => {
    const { userId, sessionIds } = await userWithSessions(7);
    await revokeAll(userId); // one statement: seven rows with the very same revoked_at
    const registry = new SessionRevocations(db.pool, log, clock, { pageRowsMax: 3 });
    await registry.start();
    try {
      for (const id of sessionIds) expect(registry.isRevoked(id)).toBe(true);
      expect(registry.isRevoked(randomUUID())).toBe(false);
    } finally {
      await registry.stop();
    }
  });

  it('polls new rows a bounded page at a time and resumes exactly where it stopped', async () => {
    // No overlap here, so each poll's pages hold only new rows and the counts are exact.
    const registry = new SessionRevocations(db.pool, log, clock, { pageRowsMax: 3, pollPagesMax: 1, pollIntervalMs: 3_600_000, overlapMs: 0 });
    await registry.start();
    try {
      const known = registry.size;
      const { userId, sessionIds } = await userWithSessions(7);
      await revokeAll(userId);
      await registry.pollOnce();
      expect(registry.size).toBe(known + 3);
      await registry.pollOnce();
      expect(registry.size).toBe(known + 6);
      await registry.pollOnce();
      expect(registry.size).toBe(known + 7);
      await registry.pollOnce(); // caught up: nothing new, nothing lost
      expect(registry.size).toBe(known + 7);
      for (const id of sessionIds) expect(registry.isRevoked(id)).toBe(true);
    } finally {
      await registry.stop();
    }
  });

  it('sees a row stamped earlier than rows it already saw (a transaction that committed late)', async () => {
    const registry = new SessionRevocations(db.pool, log, clock, { pollIntervalMs: 3_600_000 });
    await registry.start();
    try {
      const { userId } = await userWithSessions(1);
      await revokeAll(userId);
      await registry.pollOnce();
      const late = randomUUID();
      await db.pool.query(`INSERT INTO revoked_sessions (session_id, revoked_at, expires_at) VALUES ($1, now() - interval '5 seconds', $2)`, [
        late, new Date(nowMs + ttlMs),
      ]);
      await registry.pollOnce();
      expect(registry.isRevoked(late)).toBe(true);
    } finally {
      await registry.stop();
    }
  });

  it('forgets a session once its tokens have expired, in memory and in the table', async () => {
    const start = nowMs;
    const registry = new SessionRevocations(db.pool, log, clock, { pollIntervalMs: 3_600_000, pruneEveryPolls: 1 });
    await registry.start();
    try {
      const { userId, sessionIds } = await userWithSessions(2);
      await revokeAll(userId);
      await registry.pollOnce();
      expect(sessionIds.every((id) => registry.isRevoked(id))).toBe(true);
      nowMs = start + ttlMs + 1;
      await registry.pollOnce();
      expect(sessionIds.some((id) => registry.isRevoked(id))).toBe(false);
      const left = await db.pool.query('SELECT 1 FROM revoked_sessions WHERE session_id = ANY($1::uuid[])', [sessionIds]);
      expect(left.rowCount).toBe(0);
      // Already expired on arrival: not even added.
      registry.add({ sessionId: randomUUID(), expiresAtMs: nowMs });
      expect(registry.size).toBe(0);
    } finally {
      nowMs = start;
      await registry.stop();
    }
  });

  it('is bounded: beyond entriesMax the oldest entry is evicted and counted', () => {
    const registry = new SessionRevocations(db.pool, log, clock, { entriesMax: 2 });
    const [a, b, c] = [randomUUID(), randomUUID(), randomUUID()];
    registry.add({ sessionId: a, expiresAtMs: nowMs + ttlMs });
    registry.add({ sessionId: b, expiresAtMs: nowMs + ttlMs });
    registry.add({ sessionId: b, expiresAtMs: nowMs + ttlMs + 5 }); // known: no eviction
    registry.add({ sessionId: c, expiresAtMs: nowMs + ttlMs });
    expect([registry.isRevoked(a), registry.isRevoked(b), registry.isRevoked(c)]).toEqual([false, true, true]);
    expect(registry.evictedCount).toBe(1);
  });

  it('a failing poll is logged and retried, never thrown', async () => {
    const broken = { query: () => Promise.reject(new Error('connection refused')) } as unknown as Pool;
    const registry = new SessionRevocations(broken, log, clock);
    await expect(registry.pollOnce()).resolves.toBeUndefined();
  });
});
