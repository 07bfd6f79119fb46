import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createTestDatabase, type TestDatabase } from './testDatabase.ts';
import { loadMigrations, migrate, MigrationError } from './migrate.ts';

let db: TestDatabase;
let dir: string;

beforeAll(async () => {
  db = await createTestDatabase({ migrate: false });
  dir = await mkdtemp(path.join(os.tmpdir(), 'lv-migrations-'));
});
afterAll(async () => {
  await db.drop();
  await rm(dir, { recursive: true, force: true });
});

describe('migrate', () => {
  it('applies the real migrations once, in order, and records them', async () => {
    const all = (await loadMigrations()).map((m) => m.version);
    expect(all).toEqual([...all].sort((a, b) => a - b));
    expect(await migrate(db.pool)).toEqual(all);
    expect(await migrate(db.pool)).toEqual([]);
    const recorded = await db.pool.query('SELECT version FROM schema_migrations ORDER BY version');
    expect(recorded.rows.map((r) => r.version)).toEqual(all);
  });

  it('lets two nodes migrate at once without racing (advisory lock)', async () => {
    const other = await createTestDatabase({ migrate: false });
    try {
      const results = await Promise.all([migrate(other.pool), migrate(other.pool), migrate(other.pool)]);
      const appliedTotal = results.flat();
      expect(new Set(appliedTotal).size).toBe(appliedTotal.length);
      expect(appliedTotal.length).toBe((await loadMigrations()).length);
    } finally {
      await other.drop();
    }
  });

  it('stops at a failing migration with its error, leaving it unrecorded', async () => {
    const scratch = await createTestDatabase({ migrate: false });
    try {
      await writeFile(path.join(dir, '001_ok.sql'), 'CREATE TABLE ok_table (id int);');
      await writeFile(path.join(dir, '002_broken.sql'), 'CREATE TABLE broken (id int; -- syntax error');
      await writeFile(path.join(dir, '003_never.sql'), 'CREATE TABLE never_table (id int);');
      await expect(migrate(scratch.pool, dir)).rejects.toThrow(/002_broken failed: .*syntax/);
      const recorded = await scratch.pool.query('SELECT version FROM schema_migrations ORDER BY version');
      expect(recorded.rows.map((r) => r.version)).toEqual([1]);
      const never = await scratch.pool.query("SELECT to_regclass('never_table') AS t");
      expect(never.rows[0].t).toBeNull();
    } finally {
      await scratch.drop();
    }
  });

  it('refuses a migration edited after it was applied', async () => {
    const scratch = await createTestDatabase({ migrate: false });
    const editDir = await mkdtemp(path.join(os.tmpdir(), 'lv-migrations-edit-'));
    try {
      await writeFile(path.join(editDir, '001_a.sql'), 'CREATE TABLE a (id int);');
      await migrate(scratch.pool, editDir);
      await writeFile(path.join(editDir, '001_a.sql'), 'CREATE TABLE a (id bigint);');
      await expect(migrate(scratch.pool, editDir)).rejects.toBeInstanceOf(MigrationError);
    } finally {
      await scratch.drop();
      await rm(editDir, { recursive: true, force: true });
    }
  });

  it('refuses badly named files', async () => {
    const badDir = await mkdtemp(path.join(os.tmpdir(), 'lv-migrations-bad-'));
    try {
      await writeFile(path.join(badDir, '1-bad.sql'), 'SELECT 1;');
      await expect(loadMigrations(badDir)).rejects.toThrow(/must look like 001_name.sql/);
    } finally {
      await rm(badDir, { recursive: true, force: true });
    }
  });
});
