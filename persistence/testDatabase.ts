// Every test file that touches Postgres gets a database of its own, created from scratch and
// migrated, so files run in parallel and leave nothing behind. The server is DATABASE_URL when
// set, else the embedded one the vitest global setup started (infra/testGlobalSetup.ts).
import { randomBytes } from 'node:crypto';
import pg from 'pg';
import { createPool, type Pool } from './db.ts';
import { migrate } from './migrate.ts';

export interface TestDatabase {
  readonly url: string;
  readonly name: string;
  readonly pool: Pool;
  drop(): Promise<void>;
}

export function testServerUrl(): string {
  const url = process.env.LIVEVOTE_TEST_SERVER_URL ?? process.env.DATABASE_URL;
  if (!url) throw new Error('no Postgres for tests: set DATABASE_URL or run through vitest (its global setup starts an embedded one)');
  return url;
}

function withDatabase(url: string, database: string): string {
  const parsed = new URL(url);
  parsed.pathname = `/${database}`;
  return parsed.toString();
}

async function onServer<T>(work: (client: pg.Client) => Promise<T>): Promise<T> {
  const client = new pg.Client({ connectionString: testServerUrl() });
  await client.connect();
  try {
    return await work(client);
  } finally {
    await client.end();
  }
}

export async function createTestDatabase(options: { migrate?: boolean; poolMax?: number } = {}): Promise<TestDatabase> {
  const name = `lv_test_${Date.now().toString(36)}_${randomBytes(4).toString('hex')}`;
  await onServer((client) => client.query(`CREATE DATABASE ${name}`));
  const url = withDatabase(testServerUrl(), name);
  const pool = createPool(url, options.poolMax ?? 8, 'livevote-test');
  if (options.migrate !== false) await migrate(pool);
  let dropped = false;
  return {
    url,
    name,
    pool,
    async drop() {
      if (dropped) return;
      dropped = true;
      await pool.end().catch(() => undefined);
      await onServer((client) => client.query(`DROP DATABASE IF EXISTS ${name} WITH (FORCE)`));
    },
  };
}
