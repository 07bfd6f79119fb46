// `npm run livevote -- cluster --nodes 2` as a user runs it: every node it starts must come up and
// serve, with the defaults. The launcher gives all its nodes one data dir, and what in it belongs
// to one node (the spill queue, persistence/fileSpillQueue.ts) must not be shared: each node holds
// a spill queue of its own. And it stops as `npm start` does: SIGTERM to the npm process (a
// process manager, `kill <pid>`) stops the launcher and every node, none left running orphaned
// (npm signals its child, a shell that did not pass it on until the script said `exec`). A
// launcher killed with SIGKILL cannot stop anyone: its nodes notice that its IPC channel closed
// and stop by themselves.
import { spawn, type ChildProcess } from 'node:child_process';
import { mkdtemp, readdir, readFile, rm } from 'node:fs/promises';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { afterAll, expect, it } from 'vitest';
import { createTestDatabase, type TestDatabase } from '../persistence/testDatabase.ts';
import { eventually } from './testing/clusterHarness.ts';
import { root } from './testing/processHarness.ts';

const dbs: TestDatabase[] = [];
const dataDirs: string[] = [];

afterAll(async () => {
  for (const db of dbs) await db.drop();
  for (const dir of dataDirs) await rm(dir, { recursive: true, force: true });
});

/**
 * Two consecutive free ports (the launcher puts its nodes on PORT, PORT+1), below Linux's
 * ephemeral range (32768 up): a port there may be taken as the local end of another test's
 * outgoing connection between this probe and the launcher's listen (seen in CI: "in use").
 */
async function freePortPair(): Promise<number> {
  for (let attempt = 0; attempt < 50; attempt++) {
    const base = 20_000 + Math.floor(Math.random() * 12_000);
    const free = await Promise.all([base, base + 1].map((port) => new Promise<boolean>((resolve) => {
      const server = net.createServer().once('error', () => resolve(false)).listen(port, '127.0.0.1', () => server.close(() => resolve(true)));
    })));
    if (free.every(Boolean)) return base;
  }
  throw new Error('no two consecutive free ports');
}

const isRunning = (pid: number): boolean => {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
};

interface StartedCluster {
  readonly launcher: ChildProcess;
  readonly exited: Promise<number | string>;
  readonly nodePids: number[];
  readonly dataDir: string;
  output(): string;
  /** Whatever is left of the launcher's process group is stopped (SIGTERM, then SIGKILL). */
  cleanUp(): Promise<void>;
}

/** `npm run livevote -- cluster --nodes 2`, until both nodes answer /readyz 200. */
async function startCluster(): Promise<StartedCluster> {
  const db = await createTestDatabase();
  dbs.push(db);
  const dataDir = await mkdtemp(path.join(os.tmpdir(), 'lv-launcher-'));
  dataDirs.push(dataDir);
  const port = await freePortPair();
  const launcher = spawn('npm', ['run', '--silent', 'livevote', '--', 'cluster', '--nodes', '2', '--azs', 'a,b'], {
    cwd: root,
    env: {
      ...process.env, DATABASE_URL: db.url, PORT: String(port), HOST: '127.0.0.1', LIVEVOTE_DATA_DIR: dataDir, LIVEVOTE_DB_POOL_MAX: '3',
      LIVEVOTE_JWT_SECRET: 'launcher-test-jwt-secret-0123456789-abcdefgh', LIVEVOTE_DEAD_AFTER_MS: '15000', LOG_LEVEL: 'warn',
    },
    stdio: ['ignore', 'pipe', 'pipe'],
    detached: true,
  });
  let output = '';
  launcher.stdout!.on('data', (chunk: Buffer) => { output += chunk.toString(); });
  launcher.stderr!.on('data', (chunk: Buffer) => { output += chunk.toString(); });
  const exited = new Promise<number | string>((resolve) => launcher.on('exit', (code, signal) => resolve(code ?? signal ?? 'unknown')));
  const nodePids = () => [...output.matchAll(/node-\d+\s+az \S+\s+\S+\s+pid (\d+)/g)].map((m) => Number(m[1])).sort();
  // The launcher's process group (-pid: npm and the launcher; SIGTERM stops them all, as Ctrl-C
  // does) and each node by its own pid (a node outlives the group's leader when it is killed).
  const signalAll = (signal: NodeJS.Signals) => {
    for (const pid of [-launcher.pid!, ...nodePids()]) {
      try { process.kill(pid, signal); } catch { /* already gone */ }
    }
  };
  const cleanUp = async () => {
    signalAll('SIGTERM');
    const timer = setTimeout(() => signalAll('SIGKILL'), 30_000);
    await exited;
    await eventually(async () => (nodePids().some(isRunning) ? undefined : true), 60_000, 'every node gone');
    clearTimeout(timer);
  };
  try {
    const deadline = Date.now() + 150_000;
    const ready = new Set<number>();
    while (ready.size < 2 && Date.now() < deadline && !/exited/.test(output)) {
      for (const nodePort of [port, port + 1]) {
        if (ready.has(nodePort)) continue;
        const response = await fetch(`http://127.0.0.1:${nodePort}/readyz`).catch(() => undefined);
        if (response?.status === 200) ready.add(nodePort);
        await response?.text();
      }
      await new Promise((resolve) => setTimeout(resolve, 250));
    }
    expect(output).not.toMatch(/exited/);
    expect([...ready].sort()).toEqual([port, port + 1]);
    expect(nodePids()).toHaveLength(2);
  } catch (error) {
    await cleanUp();
    throw error;
  }
  return { launcher, exited, nodePids: nodePids(), dataDir, output: () => output, cleanUp };
}

it('starts every node of a local cluster, each one serves, and SIGTERM to npm stops them all', async () => {
  const cluster = await startCluster();
  try {
    // The pid in each spill queue's lock file (owner.pid): every node must own one.
    const lockFiles = (await readdir(cluster.dataDir, { recursive: true })).filter((f) => path.basename(f) === 'owner.pid');
    const lockOwners = (await Promise.all(lockFiles.map(async (f) => Number(await readFile(path.join(cluster.dataDir, f), 'utf8'))))).sort();
    expect(lockOwners).toEqual(cluster.nodePids);

    cluster.launcher.kill('SIGTERM');
    await eventually(async () => (cluster.nodePids.some(isRunning) ? undefined : true), 120_000, 'every node stopped');
    expect(await cluster.exited).toBe(0);
  } finally {
    await cluster.cleanUp();
  }
}, 240_000);

it('a launcher killed with SIGKILL leaves no node running: each stops by itself when its IPC channel closes', async () => {
  const cluster = await startCluster();
  try {
    // npm execs nothing itself: the launcher is the node process that is the nodes' parent.
    const parentOf = async (pid: number) => Number((await readFile(`/proc/${pid}/stat`, 'utf8')).replace(/^.*\) /s, '').split(' ')[1]);
    const launcherPids = new Set(await Promise.all(cluster.nodePids.map(parentOf)));
    expect(launcherPids.size).toBe(1);
    const [launcherPid] = [...launcherPids];
    process.kill(launcherPid!, 'SIGKILL');
    await eventually(async () => (cluster.nodePids.some(isRunning) ? undefined : true), 120_000, 'every node stopped by itself');
    expect(cluster.output()).not.toMatch(/"level":50/);
  } finally {
    await cluster.cleanUp();
  }
}, 240_000);
