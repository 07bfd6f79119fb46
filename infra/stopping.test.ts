// Stopping livevote the ways people do, on the fresh-machine path (embedded Postgres): each one
// ends with node gone, its Postgres gone, the port closed, and nothing logged as a failure.
// - `npm start`, then SIGTERM to the npm process (a process manager, `kill <pid>`): npm must
//   pass the signal on to node, not leave it running behind a dead shell.
// - Ctrl-C in a terminal: SIGINT to the whole process group. Postgres must not get it too (it
//   would end the node's sessions under it, logged as stack traces), the node stops it in order.
// - The production build (`npm run build`, `node dist/infra/main.js`): starts without npm and
//   without compiling TypeScript, finds its migrations and dashboard page, stops on SIGTERM. Its
//   cluster launcher (`node dist/infra/cli.js cluster`) starts its nodes from the build too.
import { execFile } from 'node:child_process';
import { existsSync } from 'node:fs';
import { mkdir, mkdtemp, rm } from 'node:fs/promises';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { isProcessAlive } from '../persistence/embeddedPostgres.ts';
import { call } from './testing/appHarness.ts';
import { killStartedProcesses, root, startLivevoteProcess, type LivevoteProcess } from './testing/processHarness.ts';

const generousMs = 120_000;
let dataDir: string;
let buildDir: string | undefined;

beforeAll(async () => {
  dataDir = await mkdtemp(path.join(os.tmpdir(), 'lv-stopping-'));
});
afterAll(async () => {
  // Also stops a Postgres whose node a test that failed half-way killed.
  await killStartedProcesses();
  await rm(dataDir, { recursive: true, force: true });
  if (buildDir) await rm(buildDir, { recursive: true, force: true });
});

/** Every test here starts on the same data dir (initdb once), one process at a time. */
const embeddedEnv = () => ({ DATABASE_URL: undefined, LIVEVOTE_TEST_SERVER_URL: undefined, LIVEVOTE_DATA_DIR: dataDir, LIVEVOTE_ADMIN_PASSWORD: 'stopping test admin password' });

function postmasterPid(started: LivevoteProcess): number {
  const match = /"pid":(\d+)[^\n]*embedded Postgres started/.exec(started.output());
  expect(match, 'the start log names the embedded Postgres pid').not.toBeNull();
  return Number(match![1]);
}

function portAnswers(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const socket = net.connect(port, '127.0.0.1');
    socket.once('connect', () => { socket.destroy(); resolve(true); });
    socket.once('error', () => resolve(false));
  });
}

/** JSON log lines at warn (40) or above: a clean stop has none. */
function warnings(output: string): string[] {
  return output.split('\n').filter((line) => line.startsWith('{') && (JSON.parse(line) as { level: number }).level >= 40);
}

async function expectAllGone(started: LivevoteProcess, pgPid: number): Promise<void> {
  await expect.poll(() => isProcessAlive(pgPid), { timeout: generousMs, interval: 100 }).toBe(false);
  await expect.poll(() => portAnswers(started.port), { timeout: generousMs, interval: 100 }).toBe(false);
  expect(started.output()).toContain('stopped cleanly');
  expect(warnings(started.output())).toEqual([]);
  expect(started.output()).not.toContain('administrator command');
}

/** `npm run build` into a dir of its own, made once for the tests that need it. */
async function productionBuild(): Promise<string> {
  if (buildDir !== undefined) return buildDir;
  // Inside the repository (node_modules is found from it), so a second test run beside this one
  // never sees a half-written build.
  await mkdir(path.join(root, 'tmp'), { recursive: true });
  const dir = await mkdtemp(path.join(root, 'tmp', 'build-'));
  buildDir = dir;
  await new Promise<void>((resolve, reject) => {
    execFile(process.execPath, [path.join(root, 'infra/build.mjs'), '--out-dir', dir], { cwd: root, timeout: 600_000 }, (error, _stdout, stderr) => {
      if (error) reject(new Error(`build failed: ${stderr}`)); else resolve();
    });
  });
  return dir;
}

/** A port nothing listens on now (the launcher maps PORT=0 to 8080, so it needs a real one). */
function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const server = net.createServer().once('error', reject).listen(0, '127.0.0.1', () => {
      const port = (server.address() as net.AddressInfo).port;
      server.close(() => resolve(port));
    });
  });
}

describe('stopping livevote', () => {
  it('npm start: SIGTERM to the npm process stops node and its embedded Postgres', async () => {
    const started = await startLivevoteProcess(embeddedEnv(), undefined, [], { command: ['npm', 'start', '--silent'], detached: true });
    const pgPid = postmasterPid(started);
    expect((await call(started.baseUrl, 'GET', '/readyz')).body.status).toBe('ready');
    // Answers that fall through the routes (404, 405) once unbalanced the in-flight count: the
    // stop then waited out its whole drain timeout and logged "inFlight":-2.
    expect((await call(started.baseUrl, 'GET', '/no/such/page')).status).toBe(404);
    expect((await call(started.baseUrl, 'DELETE', '/readyz')).status).toBe(405);
    started.child.kill('SIGTERM');
    expect(await started.exited()).toBe(0);
    await expectAllGone(started, pgPid);
  }, 600_000);

  it('Ctrl-C (SIGINT to the whole process group) stops in order: Postgres last, nothing logged as a failure', async () => {
    const started = await startLivevoteProcess(embeddedEnv(), undefined, [], { detached: true });
    const pgPid = postmasterPid(started);
    // A few sessions in the pool, idle when the signal comes.
    const answers = await Promise.all(Array.from({ length: 6 }, (_, i) => call(started.baseUrl, 'POST', '/api/v1/auth/login', { body: { email: `nobody-${i}@example.com`, password: 'not a real password' } })));
    expect(answers.map((a) => a.status)).toEqual(new Array(6).fill(401));
    process.kill(-started.child.pid!, 'SIGINT');
    expect(await started.exited()).toBe(0);
    await expectAllGone(started, pgPid);
  }, 600_000);

  it('the production build runs as plain JavaScript without npm and stops on SIGTERM', async () => {
    const buildDir = await productionBuild();
    const started = await startLivevoteProcess(embeddedEnv(), undefined, [], { command: [process.execPath, path.join(buildDir, 'infra/main.js')] });
    const pgPid = postmasterPid(started);
    expect((await call(started.baseUrl, 'GET', '/readyz')).body.status).toBe('ready');
    const dashboard = await fetch(`${started.baseUrl}/`);
    expect(dashboard.status).toBe(200);
    expect(await dashboard.text()).toContain('<html');
    const registered = await call(started.baseUrl, 'POST', '/api/v1/auth/register', { body: { email: 'compiled@example.com', password: 'a long enough password' } });
    expect(registered.status).toBe(201);
    started.child.kill('SIGTERM');
    expect(await started.exited()).toBe(0);
    await expectAllGone(started, pgPid);
  }, 900_000);

  it("the production build's cluster launcher starts its nodes from the build and stops them on SIGTERM", async () => {
    const buildDir = await productionBuild();
    const port = await freePort();
    const started = await startLivevoteProcess({ ...embeddedEnv(), PORT: String(port) }, undefined, [], {
      command: [process.execPath, path.join(buildDir, 'infra/cli.js'), 'cluster', '--nodes', '1', '--azs', 'a'],
    });
    expect(started.port).toBe(port);
    expect((await call(started.baseUrl, 'GET', '/readyz')).body.status).toBe('ready');
    expect(started.output()).toMatch(/node-1\s+az a\s+http:\/\/127\.0\.0\.1:\d+\s+pid \d+/);
    started.child.kill('SIGTERM');
    expect(await started.exited()).toBe(0);
    await expect.poll(() => portAnswers(port), { timeout: generousMs, interval: 100 }).toBe(false);
    // The launcher stops the embedded Postgres it started last; a stopped server leaves no pid file.
    expect(existsSync(path.join(dataDir, 'postgres', 'postmaster.pid'))).toBe(false);
    expect(warnings(started.output())).toEqual([]);
  }, 900_000);
});
