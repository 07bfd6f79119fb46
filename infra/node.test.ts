// The fresh-machine path, for real: no DATABASE_URL, so livevote starts its embedded Postgres;
// a first start prints the generated admin password once; SIGTERM shuts down cleanly (exit 0);
// a restart keeps the data and does not print the password again.
import { mkdtemp, rm } from 'node:fs/promises';
import { createServer, type AddressInfo } from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { call } from './testing/appHarness.ts';
import { killStartedProcesses, startLivevoteProcess } from './testing/processHarness.ts';
import { createTestDatabase } from '../persistence/testDatabase.ts';

const dirs: string[] = [];
afterAll(async () => {
  await killStartedProcesses();
  for (const dir of dirs) await rm(dir, { recursive: true, force: true }); });

describe('livevote process in embedded mode', () => {
  it('starts on an embedded Postgres, survives a restart, and stops cleanly on SIGTERM', async () => {
    const dataDir = await mkdtemp(path.join(os.tmpdir(), 'lv-embedded-'));
    dirs.push(dataDir);
    const env = { DATABASE_URL: undefined, LIVEVOTE_TEST_SERVER_URL: undefined, LIVEVOTE_DATA_DIR: dataDir };

    const first = await startLivevoteProcess(env);
    const banner = /password: (\S+)/.exec(first.output());
    expect(banner, 'the first start prints the generated admin password').not.toBeNull();
    const adminPassword = banner![1]!;
    expect(first.output()).toContain('"database":"embedded"');
    // The generated password never reaches a log line.
    expect(first.output().split('\n').filter((line) => line.startsWith('{') && line.includes(adminPassword))).toEqual([]);

    expect((await call(first.baseUrl, 'GET', '/readyz')).body.status).toBe('ready');
    const registered = await call(first.baseUrl, 'POST', '/api/v1/auth/register', { body: { email: 'kept@example.com', password: 'kept across restarts' } });
    expect(registered.status).toBe(201);
    const admin = await call(first.baseUrl, 'POST', '/api/v1/auth/login', { body: { email: 'admin@livevote.local', password: adminPassword } });
    expect(admin.status).toBe(200);

    first.child.kill('SIGTERM');
    expect(await first.exited()).toBe(0);
    expect(first.output()).toContain('stopped cleanly');

    const second = await startLivevoteProcess(env);
    try {
      expect(second.output()).not.toContain('password:');
      const again = await call(second.baseUrl, 'POST', '/api/v1/auth/login', { body: { email: 'kept@example.com', password: 'kept across restarts' } });
      expect(again.status).toBe(200);
      const token = await call(second.baseUrl, 'GET', '/api/v1/auth/validate', { token: admin.body.accessToken });
      expect(token.status, 'the generated JWT secret is kept across restarts').toBe(200);
    } finally {
      second.child.kill('SIGINT');
      expect(await second.exited()).toBe(0);
    }
  }, 600_000);

  it('after kill -9, restarts on the same data: stops the orphaned embedded Postgres and keeps the data', async () => {
    const dataDir = await mkdtemp(path.join(os.tmpdir(), 'lv-embedded-kill-'));
    dirs.push(dataDir);
    const env = {
      DATABASE_URL: undefined, LIVEVOTE_TEST_SERVER_URL: undefined, LIVEVOTE_DATA_DIR: dataDir,
      LIVEVOTE_ADMIN_PASSWORD: 'kill nine admin password',
    };
    const first = await startLivevoteProcess(env);
    const registered = await call(first.baseUrl, 'POST', '/api/v1/auth/register', { body: { email: 'survivor@example.com', password: 'survives a kill -9' } });
    expect(registered.status).toBe(201);
    first.child.kill('SIGKILL');
    expect(await first.exited()).toBe('SIGKILL');

    const second = await startLivevoteProcess(env);
    try {
      expect(second.output()).toContain('stopping an embedded Postgres left running by an earlier livevote process');
      const login = await call(second.baseUrl, 'POST', '/api/v1/auth/login', { body: { email: 'survivor@example.com', password: 'survives a kill -9' } });
      expect(login.status).toBe(200);
    } finally {
      second.child.kill('SIGTERM');
      expect(await second.exited()).toBe(0);
    }
  }, 600_000);

  it('a port already in use: exits non-zero naming the address, with nothing else logged on the way out', async () => {
    const db = await createTestDatabase({ migrate: false, poolMax: 1 });
    const occupier = createServer();
    await new Promise<void>((resolve) => occupier.listen(0, '127.0.0.1', resolve));
    try {
      const busyPort = (occupier.address() as AddressInfo).port;
      const dataDir = await mkdtemp(path.join(os.tmpdir(), 'lv-port-in-use-'));
      dirs.push(dataDir);
      const started = startLivevoteProcess({ DATABASE_URL: db.url, LIVEVOTE_TEST_SERVER_URL: undefined, LIVEVOTE_DATA_DIR: dataDir, PORT: String(busyPort) });
      const failure = await started.then(() => 'listened', (error: Error) => error.message);
      expect(failure).toMatch(new RegExp(`exited \\(1\\) before listening[\\s\\S]*could not listen on 127\\.0\\.0\\.1:${busyPort}`));
      // The features were stopped before their pool ended: no warning from a timer that outlived it.
      expect(failure).not.toContain('Cannot use a pool after calling end on the pool');
      expect(failure.split('\n').filter((line) => line.startsWith('{') && /"level":(40|50)/.test(line))).toEqual([]);
    } finally {
      occupier.close();
      await db.drop();
    }
  }, 180_000);

  it('refuses to start with a bad configuration, naming the variable', async () => {
    await expect(startLivevoteProcess({ PORT: 'eighty' })).rejects.toThrow(/PORT: must be a whole number/);
  });
});
