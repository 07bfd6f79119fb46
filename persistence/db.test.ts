// The pool's shutdown: every session of ours is gone once endPool resolves, so the embedded
// Postgres stopped right after has none to terminate (each would be an error on an idle client,
// "terminating connection due to administrator command", once logged with its stack at shutdown).
import { randomUUID } from 'node:crypto';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createPool, endPool, isServerShutdownError } from './db.ts';
import { createTestDatabase, type TestDatabase } from './testDatabase.ts';

let db: TestDatabase;
beforeAll(async () => { db = await createTestDatabase(); });
afterAll(async () => { await db?.drop(); });

describe('endPool', () => {
  it('resolves only once every connection of the pool has closed', async () => {
    const errors: Error[] = [];
    const pool = createPool(db.url, 6, `lv-endpool-${randomUUID().slice(0, 8)}`, (error) => errors.push(error));
    let connected = 0;
    let closed = 0;
    pool.on('connect', (client) => {
      connected++;
      client.once('end', () => closed++);
    });
    // Six sessions at once, then idle in the pool.
    await Promise.all(Array.from({ length: 6 }, () => pool.query('SELECT pg_sleep(0.05)')));
    expect(connected).toBe(6);
    await endPool(pool);
    // pool.end() alone resolves with none of them closed yet.
    expect(closed).toBe(6);
    expect(errors).toEqual([]);
  });

  it('knows a server shutting down from other failures', () => {
    expect(isServerShutdownError({ code: '57P01' })).toBe(true);
    expect(isServerShutdownError({ code: '57P03' })).toBe(true);
    expect(isServerShutdownError({ code: '23505' })).toBe(false);
    expect(isServerShutdownError(new Error('boom'))).toBe(false);
    expect(isServerShutdownError(null)).toBe(false);
  });
});
