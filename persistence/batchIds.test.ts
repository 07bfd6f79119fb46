import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { batchIdBlockSize, createPgBatchIdSource } from './batchIds.ts';
import { createPool } from './db.ts';
import { createTestDatabase, type TestDatabase } from './testDatabase.ts';

let db: TestDatabase;

beforeAll(async () => {
  db = await createTestDatabase();
});

afterAll(async () => {
  await db?.drop();
});

describe('PgBatchIdSource', () => {
  it('starts lastAssigned at the block start minus one, before the first next()', async () => {
    const source = await createPgBatchIdSource({ pool: db.pool });
    const floor = source.lastAssigned();
    const first = await source.next();
    expect(first).toBe(floor + 1);
    expect(source.lastAssigned()).toBe(first);
    expect((first - 1) % batchIdBlockSize).toBe(0);
  });

  it('two sources (two processes): ids never collide and a later reservation is above the earlier ids', async () => {
    const a = await createPgBatchIdSource({ pool: db.pool });
    const idsA = [await a.next(), await a.next()];
    const b = await createPgBatchIdSource({ pool: db.pool });
    const idsB = [await b.next(), await b.next()];
    expect(Math.min(...idsB)).toBeGreaterThan(Math.max(...idsA));
    // a keeps using its own block: still increasing for a, and below b's block.
    const laterA = await a.next();
    expect(laterA).toBeGreaterThan(idsA[1]!);
    expect(laterA).toBeLessThan(idsB[0]!);
    // Once a's block is used up, its next block is above everything b was handed.
    const moreA: number[] = [];
    for (let i = 0; i < batchIdBlockSize; i++) moreA.push(await a.next());
    expect(moreA.at(-1)!).toBeGreaterThan(b.lastAssigned());
    const all = [...idsA, laterA, ...moreA, ...idsB];
    expect(new Set(all).size).toBe(all.length);
  });

  it('concurrent next() calls across block boundaries hand out unique ids, reserving one block at a time', async () => {
    const source = await createPgBatchIdSource({ pool: db.pool });
    const before = (await db.pool.query<{ last_value: number }>('SELECT last_value FROM vote_batch_seq')).rows[0]!.last_value;
    const ids = await Promise.all(Array.from({ length: 2500 }, () => source.next()));
    expect(new Set(ids).size).toBe(2500);
    const after = (await db.pool.query<{ last_value: number }>('SELECT last_value FROM vote_batch_seq')).rows[0]!.last_value;
    // 2500 ids from a fresh block: two more blocks, and at most one reserved ahead; not one per waiting caller.
    expect((after - before) / batchIdBlockSize).toBeGreaterThanOrEqual(2);
    expect((after - before) / batchIdBlockSize).toBeLessThanOrEqual(3);
    expect(source.lastAssigned()).toBe(Math.max(...ids));
  });

  it('each id is above the lastAssigned() read before asking for it (the admission floor)', async () => {
    const source = await createPgBatchIdSource({ pool: db.pool });
    for (let i = 0; i < 1500; i++) {
      const floor = source.lastAssigned();
      expect(await source.next()).toBeGreaterThan(floor);
    }
  });

  it('the reserved ceiling is at least every id any source was or will be handed from its blocks, and below the next block', async () => {
    const a = await createPgBatchIdSource({ pool: db.pool });
    const b = await createPgBatchIdSource({ pool: db.pool });
    const idsB = [await b.next(), await b.next()];
    const ceiling = await a.reservedCeiling();
    // b's block was reserved last: its end is the ceiling, and every id of a's block lies below.
    expect(ceiling).toBe(idsB[0]! + batchIdBlockSize - 1);
    const idsA: number[] = [];
    for (let i = 0; i < batchIdBlockSize; i++) idsA.push(await a.next());
    expect(Math.max(...idsA)).toBeLessThanOrEqual(ceiling);
    // a's next block, reserved after the read, and any other source's are above it.
    expect(await a.next()).toBeGreaterThan(ceiling);
    const c = await createPgBatchIdSource({ pool: db.pool });
    expect(await c.next()).toBeGreaterThan(ceiling);
  });

  it('rejects next() when no block can be reserved, once the reserved one is used', async () => {
    const pool = createPool(db.url, 1, 'batch-ids-dead');
    const source = await createPgBatchIdSource({ pool });
    await pool.end();
    for (let i = 0; i < batchIdBlockSize; i++) await source.next();
    expect(source.hasSpareBlock()).toBe(false);
    await expect(source.next()).rejects.toThrow();
  });

  it('reserves the next block once half of the current one is used, so ids go on while Postgres cannot answer', async () => {
    // A Postgres stall must not stop the spill: every spilled batch needs an id.
    const pool = createPool(db.url, 1, 'batch-ids-ahead');
    const source = await createPgBatchIdSource({ pool });
    const ids: number[] = [];
    for (let i = 0; i < batchIdBlockSize / 2; i++) ids.push(await source.next());
    expect(source.hasSpareBlock()).toBe(false);
    ids.push(await source.next());
    await expect.poll(() => source.hasSpareBlock(), { timeout: 60_000, interval: 20 }).toBe(true);
    await pool.end();
    // The rest of this block and the whole spare one, with no Postgres to ask.
    while (ids.length < 2 * batchIdBlockSize) ids.push(await source.next());
    expect(new Set(ids).size).toBe(ids.length);
    for (let i = 1; i < ids.length; i++) expect(ids[i]!).toBeGreaterThan(ids[i - 1]!);
    expect(source.lastAssigned()).toBe(ids.at(-1));
    await expect(source.next()).rejects.toThrow();
  });
});
