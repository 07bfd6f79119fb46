// The embedded Postgres servers of tests' data directories (a node's, in its LIVEVOTE_DATA_DIR,
// or one a test started itself with startEmbeddedPostgres), found by the postmaster.pid in the
// directory, and stopped whatever state a failed test left them in. Such a postmaster runs in a
// process group of its own (persistence/embeddedPostgres.ts): a node killed with SIGKILL leaves
// it running, and a test that froze it with SIGSTOP and failed before SIGCONT leaves it stopped.
import { readdir, readFile } from 'node:fs/promises';
import path from 'node:path';

/** Whether `pid` is gone: no such process, or a zombie nobody reaps (this machine's init may not). */
export async function isProcessGone(pid: number): Promise<boolean> {
  try {
    process.kill(pid, 0);
  } catch {
    return true;
  }
  const stat = await readFile(`/proc/${pid}/stat`, 'utf8').catch(() => '');
  // pid (comm) state …: comm may hold spaces, so read after the last ')'.
  return stat === '' || stat.slice(stat.lastIndexOf(')') + 2).startsWith('Z');
}

function signal(pids: readonly number[], name: NodeJS.Signals): void {
  for (const pid of pids) {
    try {
      process.kill(pid, name);
    } catch {
      // gone already
    }
  }
}

/**
 * The postmaster running on the embedded server of `dataDir` (its `postgres` directory), or
 * undefined. The pid file outlives a postmaster killed with SIGKILL, and its pid may be another
 * process's by now: only a process whose command line names this directory after -D counts.
 */
async function runningPostmaster(dataDir: string): Promise<number | undefined> {
  const databaseDir = path.resolve(dataDir, 'postgres');
  const pidFile = await readFile(path.join(databaseDir, 'postmaster.pid'), 'utf8').catch(() => undefined);
  const pid = Number(pidFile?.split('\n')[0]);
  if (!Number.isInteger(pid) || pid <= 1) return undefined;
  const args = (await readFile(`/proc/${pid}/cmdline`, 'utf8').catch(() => '')).split('\0');
  const flag = args.indexOf('-D');
  return flag >= 0 && path.resolve(args[flag + 1] ?? '') === databaseDir ? pid : undefined;
}

/** The processes whose parent is `pid` (a postmaster's backends and auxiliary processes). */
async function childrenOf(pid: number): Promise<number[]> {
  const children: number[] = [];
  for (const entry of await readdir('/proc')) {
    if (!/^\d+$/.test(entry)) continue;
    const stat = await readFile(`/proc/${entry}/stat`, 'utf8').catch(() => '');
    const ppid = Number(stat.slice(stat.lastIndexOf(')') + 2).split(' ')[1]);
    if (ppid === pid) children.push(Number(entry));
  }
  return children;
}

/** The postmaster of the embedded server in `dataDir` and every process it forked; empty when none runs. */
export async function embeddedPostgresPids(dataDir: string): Promise<number[]> {
  const postmaster = await runningPostmaster(dataDir);
  return postmaster === undefined ? [] : [postmaster, ...(await childrenOf(postmaster))];
}

const fastShutdownGraceMs = 10_000;
const killedGoneWithinMs = 30_000;

/**
 * Stops the embedded server of each of `dataDirs` that still runs, in whatever state: all of its
 * processes are continued (a frozen backend would hold a shutdown up for good), the postmaster is
 * asked for a fast shutdown (SIGINT), and whatever is left after 10 s is killed. Resolves once
 * every one of those processes is gone; throws, naming them, if any outlives its SIGKILL by 30 s.
 */
export async function stopEmbeddedPostgres(dataDirs: Iterable<string>): Promise<void> {
  await Promise.all([...new Set(dataDirs)].map(async (dataDir) => {
    const pids = await embeddedPostgresPids(dataDir);
    if (pids.length === 0) return;
    signal(pids, 'SIGCONT');
    signal(pids.slice(0, 1), 'SIGINT');
    const graceEndsAtMs = Date.now() + fastShutdownGraceMs;
    const anyLeft = async () => (await Promise.all(pids.map(isProcessGone))).includes(false);
    while (Date.now() < graceEndsAtMs && (await anyLeft())) await new Promise((resolve) => setTimeout(resolve, 50));
    if (!(await anyLeft())) return;
    // Forked since the first look (a shutdown checkpointer) counts too, while the postmaster lives.
    pids.push(...(await childrenOf(pids[0]!)).filter((pid) => !pids.includes(pid)));
    signal(pids, 'SIGCONT');
    signal(pids, 'SIGKILL');
    const killedAtMs = Date.now();
    while (await anyLeft()) {
      if (Date.now() - killedAtMs > killedGoneWithinMs) throw new Error(`embedded Postgres of ${dataDir}: processes ${pids.join(', ')} still there 30 s after SIGKILL`);
      await new Promise((resolve) => setTimeout(resolve, 50));
    }
  }));
}
