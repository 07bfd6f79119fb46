// The clean-up of tests' embedded Postgres servers (postmasters.ts), on real processes: a node's
// server frozen with SIGSTOP, as a chaos test that failed before its SIGCONT leaves it; and the
// freeze itself.
import { spawn } from 'node:child_process';
import { mkdir, mkdtemp, rm, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import pg from 'pg';
import { afterAll, describe, expect, it } from 'vitest';
import { startEmbeddedPostgres } from '../../persistence/embeddedPostgres.ts';
import { silentLogger } from '../logger.ts';
import { embeddedPostgresPids, freezeEmbeddedPostgres, isProcessGone, processState, stopEmbeddedPostgres } from './postmasters.ts';
import { killStartedProcesses, startLivevoteProcess } from './processHarness.ts';

const dirs: string[] = [];
afterAll(async () => {
  await killStartedProcesses();
  await stopEmbeddedPostgres(dirs);
  for (const dir of dirs) await rm(dir, { recursive: true, force: true });
});

describe('embedded Postgres of a test\'s data dir', () => {
  it('killStartedProcesses kills the node and stops its embedded Postgres, postmaster and backends frozen with SIGSTOP', async () => {
    const dataDir = await mkdtemp(path.join(os.tmpdir(), 'lv-postmasters-'));
    dirs.push(dataDir);
    const node = await startLivevoteProcess({
      DATABASE_URL: undefined, LIVEVOTE_TEST_SERVER_URL: undefined, LIVEVOTE_DATA_DIR: dataDir, LIVEVOTE_ADMIN_PASSWORD: 'postmasters test admin password',
    });
    const pids = await embeddedPostgresPids(dataDir);
    // The postmaster and at least its checkpointer, background writer, WAL writer and the node's sessions.
    expect(pids.length).toBeGreaterThan(3);
    for (const pid of pids) process.kill(pid, 'SIGSTOP');

    await killStartedProcesses();
    expect(await node.exited()).toBe('SIGKILL');
    expect((await Promise.all(pids.map(isProcessGone))).every(Boolean), `left running: ${pids.join(', ')}`).toBe(true);
    expect(await embeddedPostgresPids(dataDir)).toEqual([]);
  });

  it('freezeEmbeddedPostgres stops every process of the server, a backend forked while it looked included', async () => {
    const dataDir = await mkdtemp(path.join(os.tmpdir(), 'lv-postmasters-freeze-'));
    dirs.push(dataDir);
    const server = await startEmbeddedPostgres({ dataDir, password: 'postmasters-freeze-password', log: silentLogger(), durable: false });
    const clients: pg.Client[] = [];
    let frozen: number[] = [];
    try {
      // Sessions opened one after another while it freezes: a backend forked for each. (Listing the
      // processes first and stopping them after left such a backend running.)
      let opening = true;
      void (async () => {
        while (opening) {
          const client = new pg.Client({ connectionString: server.url });
          client.on('error', () => undefined);
          clients.push(client);
          await client.connect().catch(() => undefined); // the last one waits for the thaw
        }
      })();
      while (clients.length < 5) await new Promise((resolve) => setTimeout(resolve, 10));
      frozen = await freezeEmbeddedPostgres(dataDir);
      opening = false;
      const now = await embeddedPostgresPids(dataDir);
      expect(now.filter((pid) => !frozen.includes(pid)), 'processes of the server that it did not freeze').toEqual([]);
      // Stopped (T), or a zombie its stopped postmaster had not reaped yet (Z).
      const states = await Promise.all(now.map(async (pid) => `${pid} ${await processState(pid)}`));
      expect(states.filter((state) => !/ [TZ]$/.test(state)), 'processes of the server still running').toEqual([]);
    } finally {
      for (const pid of frozen) {
        try { process.kill(pid, 'SIGCONT'); } catch { /* gone */ }
      }
      await Promise.all(clients.map((client) => client.end().catch(() => undefined)));
      await server.stop();
    }
  });

  it('freezeEmbeddedPostgres stops the open sessions with the postmaster: never a server that runs its sessions but opens none', async () => {
    const dataDir = await mkdtemp(path.join(os.tmpdir(), 'lv-postmasters-whole-'));
    dirs.push(dataDir);
    const server = await startEmbeddedPostgres({ dataDir, password: 'postmasters-whole-password', log: silentLogger(), durable: false });
    const client = new pg.Client({ connectionString: server.url });
    client.on('error', () => undefined);
    let frozen: number[] = [];
    try {
      await client.connect();
      const backend = Number((await client.query<{ pid: number }>('SELECT pg_backend_pid() AS pid')).rows[0]!.pid);
      // Looked at once the postmaster is stopped: the session's backend must be stopping too, not
      // wait for a second look at the children (a server that opens no session but runs the open
      // ones let a node's votes commit while its heartbeats could not, and it fenced itself
      // without spilling). A SIGSTOP takes effect when its process is next scheduled, so the state
      // is polled, for as long as only a backend nobody signalled would take.
      let stateWhenPostmasterStopped: string | undefined;
      frozen = await freezeEmbeddedPostgres(dataDir, {
        postmasterStopped: async () => {
          const untilMs = Date.now() + 10_000;
          for (;;) {
            stateWhenPostmasterStopped = await processState(backend);
            if (stateWhenPostmasterStopped !== 'S' && stateWhenPostmasterStopped !== 'R' && stateWhenPostmasterStopped !== 'D') return;
            if (Date.now() > untilMs) return;
            await new Promise((resolve) => setTimeout(resolve, 20));
          }
        },
      });
      expect(frozen).toContain(backend);
      expect(stateWhenPostmasterStopped, `backend ${backend} of an open session, while the postmaster was stopped`).toBe('T');
    } finally {
      for (const pid of frozen) {
        try { process.kill(pid, 'SIGCONT'); } catch { /* gone */ }
      }
      await client.end().catch(() => undefined);
      await server.stop();
    }
  });

  it('a postmaster.pid whose pid is now another process: that process is left alone', async () => {
    const dataDir = await mkdtemp(path.join(os.tmpdir(), 'lv-postmasters-stale-'));
    dirs.push(dataDir);
    const other = spawn('sleep', ['600'], { stdio: 'ignore' });
    try {
      await mkdir(path.join(dataDir, 'postgres'));
      await writeFile(path.join(dataDir, 'postgres', 'postmaster.pid'), `${other.pid}\n${path.join(dataDir, 'postgres')}\n`);
      expect(await embeddedPostgresPids(dataDir)).toEqual([]);
      await stopEmbeddedPostgres([dataDir]);
      expect(await isProcessGone(other.pid!)).toBe(false);
    } finally {
      other.kill('SIGKILL');
    }
  });
});
