// The embedded Postgres servers of tests' data directories (a node's, in its LIVEVOTE_DATA_DIR,
// or one a test started itself with startEmbeddedPostgres), found by the postmaster.pid in the
// directory, frozen whole (freezeEmbeddedPostgres), and stopped whatever state a failed test left
// them in. Such a postmaster runs in a process group of its own (persistence/embeddedPostgres.ts):
// a node killed with SIGKILL leaves it running, and a test that froze it with SIGSTOP and failed
// before SIGCONT leaves it stopped.
import { readdir, readFile } from 'node:fs/promises';
import path from 'node:path';

/** The state letter of `pid` in /proc (R, S, D, T: stopped, Z: zombie…), or undefined when it is gone. */
export async function processState(pid: number): Promise<string | undefined> {
  const stat = await readFile(`/proc/${pid}/stat`, 'utf8').catch(() => '');
  // pid (comm) state …: comm may hold spaces, so read after the last ')'.
  return stat === '' ? undefined : stat.charAt(stat.lastIndexOf(')') + 2);
}

/** Whether `pid` is gone: no such process, or a zombie nobody reaps (this machine's init may not). */
export async function isProcessGone(pid: number): Promise<boolean> {
  try {
    process.kill(pid, 0);
  } catch {
    return true;
  }
  const state = await processState(pid);
  return state === undefined || state === 'Z';
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

/**
 * The processes whose parent is `pid` (a postmaster's backends and auxiliary processes): the
 * kernel's own list of them, one read (a postmaster has one thread, whose list it is). Only where
 * the kernel keeps no such list, a walk of /proc, which reads a file per process and takes seconds
 * on a busy machine (3-4 s for 120-430 processes beside a test suite and two CPU hogs).
 */
async function childrenOf(pid: number): Promise<number[]> {
  const listed = await readFile(`/proc/${pid}/task/${pid}/children`, 'utf8').catch(() => undefined);
  if (listed !== undefined) return listed.split(' ').filter((entry) => entry !== '').map(Number);
  if (await isProcessGone(pid)) return [];
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

const stoppedWithinMs = 30_000;

/** Resolves once every one of `pids` is stopped (or gone); throws, naming them, after 30 s. */
async function untilStopped(pids: readonly number[]): Promise<void> {
  const sinceMs = Date.now();
  for (;;) {
    const states = await Promise.all(pids.map(processState));
    const running = pids.filter((_, i) => !(states[i] === undefined || states[i] === 'T' || states[i] === 'Z'));
    if (running.length === 0) return;
    if (Date.now() - sinceMs > stoppedWithinMs) throw new Error(`processes ${running.join(', ')} not stopped 30 s after SIGSTOP`);
    await new Promise((resolve) => setTimeout(resolve, 20));
  }
}

export interface FreezeHooks {
  /** Called once the postmaster is stopped, before its children are listed again (a test's seam). */
  readonly postmasterStopped?: (postmaster: number) => Promise<void>;
}

/**
 * Freezes the embedded server of `dataDir` with SIGSTOP, whole and at once: the postmaster and the
 * processes it had forked are stopped in one burst of signals; once the postmaster is stopped (it
 * forks nothing more) its children are listed again and any forked meanwhile is stopped too.
 * Resolves with them all, the postmaster first (for SIGCONT), once each is stopped; empty when no
 * server runs.
 *
 * Never the postmaster alone for a while: a server in that state opens no session but goes on
 * running the open ones, which no real stall does. Stopping the postmaster first and its children
 * only after a walk of /proc did that for seconds on a busy machine, and a node whose cluster
 * connection had to be replaced then (one that timed out under load, say) could store no heartbeat while
 * its votes still committed: it fenced itself 6 s later without a vote slow enough to spill, and
 * the two-nodes-on-SQS chaos test saw 503 node_fenced and nothing queued. Listing the children
 * first and stopping them after missed a backend forked meanwhile, which went on committing votes
 * through the freeze: hence the second look.
 */
export async function freezeEmbeddedPostgres(dataDir: string, hooks: FreezeHooks = {}): Promise<number[]> {
  const postmaster = await runningPostmaster(dataDir);
  if (postmaster === undefined) return [];
  signal([postmaster, ...(await childrenOf(postmaster))], 'SIGSTOP');
  await untilStopped([postmaster]);
  await hooks.postmasterStopped?.(postmaster);
  const children = await childrenOf(postmaster);
  signal(children, 'SIGSTOP');
  await untilStopped(children);
  return [postmaster, ...children];
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
