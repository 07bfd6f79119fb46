// The clean-up of tests' embedded Postgres servers (postmasters.ts), on real processes: a node's
// server frozen with SIGSTOP, as a chaos test that failed before its SIGCONT leaves it.
import { spawn } from 'node:child_process';
import { mkdir, mkdtemp, rm, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { embeddedPostgresPids, isProcessGone, stopEmbeddedPostgres } from './postmasters.ts';
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
