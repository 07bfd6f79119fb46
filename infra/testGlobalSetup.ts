// vitest global setup: on a machine with no Postgres configured (DATABASE_URL unset), start one
// embedded Postgres for the whole run; test files create their own databases on it.
import { mkdtemp, rm } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { startEmbeddedPostgres, type EmbeddedPostgresHandle } from '../persistence/embeddedPostgres.ts';
import { createLogger } from './logger.ts';

let server: EmbeddedPostgresHandle | undefined;
let dataDir: string | undefined;

export async function setup(): Promise<void> {
  if (process.env.DATABASE_URL) {
    process.env.LIVEVOTE_TEST_SERVER_URL = process.env.DATABASE_URL;
    return;
  }
  dataDir = await mkdtemp(path.join(os.tmpdir(), 'livevote-test-pg-'));
  server = await startEmbeddedPostgres({
    dataDir,
    password: 'livevote-test',
    log: createLogger('warn', { component: 'test-setup' }),
    durable: false,
  });
  process.env.LIVEVOTE_TEST_SERVER_URL = server.url;
}

export async function teardown(): Promise<void> {
  await server?.stop();
  if (dataDir) await rm(dataDir, { recursive: true, force: true });
}
