// Child processes for the benchmark: servers started by script path, stopped by their own pid,
// and CPU time per process tree read from /proc (to show who used the two cores during a run).
import { spawn, execFileSync, type ChildProcess } from 'node:child_process';
import { readdirSync, readFileSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

export const repoRoot = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../..');

export interface BenchServer {
  readonly child: ChildProcess;
  readonly port: number;
  output(): string;
  /** SIGTERM, then SIGKILL after graceMs; resolves with the exit code or signal. */
  stop(graceMs?: number): Promise<number | string>;
}

/** Starts `node [nodeArgs] --import tsx <script>` and waits for its `BENCH_LISTENING <port>` line. */
export async function startBenchServer(script: string, env: Record<string, string | undefined>, options: { nodeArgs?: string[]; startTimeoutMs?: number } = {}): Promise<BenchServer> {
  const childEnv: Record<string, string> = {};
  for (const [key, value] of Object.entries({ ...process.env, ...env })) if (value !== undefined) childEnv[key] = value;
  const child = spawn(process.execPath, [...(options.nodeArgs ?? []), '--import', 'tsx', path.join(repoRoot, script)], {
    cwd: repoRoot,
    env: childEnv,
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let output = '';
  const append = (chunk: Buffer) => {
    // Bounded: a server that logs under load must not grow this process without limit.
    output = (output + chunk.toString()).slice(-200_000);
  };
  child.stdout!.on('data', append);
  child.stderr!.on('data', append);
  const exited = new Promise<number | string>((resolve) => child.on('exit', (code, signal) => resolve(code ?? signal ?? 'unknown')));
  const startTimeoutMs = options.startTimeoutMs ?? 30_000;
  const port = await new Promise<number>((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`${script} did not start in ${startTimeoutMs} ms:\n${output}`)), startTimeoutMs);
    const onData = () => {
      const match = /BENCH_LISTENING (\d+)/.exec(output);
      if (match) {
        clearTimeout(timer);
        child.stdout!.off('data', onData);
        resolve(Number(match[1]));
      }
    };
    child.stdout!.on('data', onData);
    void exited.then((code) => {
      clearTimeout(timer);
      reject(new Error(`${script} exited (${code}) before listening:\n${output}`));
    });
  });
  return { child, port, output: () => output, stop: (graceMs) => stopChild(child, exited, graceMs) };
}

/** Stops one child by its pid: SIGTERM, then SIGKILL if it has not exited after graceMs. */
export async function stopChild(child: ChildProcess, exited: Promise<number | string>, graceMs = 20_000): Promise<number | string> {
  if (child.exitCode !== null || child.signalCode !== null) return exited;
  child.kill('SIGTERM');
  const timer = setTimeout(() => child.kill('SIGKILL'), graceMs);
  try {
    return await exited;
  } finally {
    clearTimeout(timer);
  }
}

/** Runs a script to completion and returns its stdout; throws with its output on a non-zero exit. */
export function runNodeScript(script: string, env: Record<string, string | undefined>, nodeArgs: string[] = []): Promise<string> {
  const childEnv: Record<string, string> = {};
  for (const [key, value] of Object.entries({ ...process.env, ...env })) if (value !== undefined) childEnv[key] = value;
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, [...nodeArgs, '--import', 'tsx', path.join(repoRoot, script)], { cwd: repoRoot, env: childEnv, stdio: ['ignore', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    child.stdout!.on('data', (chunk: Buffer) => { stdout += chunk.toString(); });
    child.stderr!.on('data', (chunk: Buffer) => { stderr = (stderr + chunk.toString()).slice(-50_000); });
    child.on('exit', (code, signal) => {
      if (code === 0) resolve(stdout);
      else reject(new Error(`${script} failed (${code ?? signal}):\n${stdout.slice(-5000)}\n${stderr}`));
    });
  });
}

// ---------------------------------------------------------------------------------------------
// CPU time per process tree

const clockTicksPerS = (() => {
  try {
    return Number(execFileSync('getconf', ['CLK_TCK'], { encoding: 'utf8' }).trim()) || 100;
  } catch {
    return 100;
  }
})();

interface ProcStat {
  readonly pid: number;
  readonly ppid: number;
  readonly cpuS: number;
}

function readStat(pid: number): ProcStat | undefined {
  try {
    const text = readFileSync(`/proc/${pid}/stat`, 'utf8');
    // The command name is in parentheses and may hold spaces: fields start after the last ')'.
    const fields = text.slice(text.lastIndexOf(')') + 2).split(' ');
    // utime + stime, plus cutime + cstime: the CPU of children this process has reaped. Postgres
    // backends come and go; their time then moves to the postmaster's cutime, so a tree's sum only
    // ever grows.
    const ticks = Number(fields[11]) + Number(fields[12]) + Number(fields[13]) + Number(fields[14]);
    return { pid, ppid: Number(fields[1]), cpuS: ticks / clockTicksPerS };
  } catch {
    return undefined;
  }
}

function allStats(): ProcStat[] {
  const out: ProcStat[] = [];
  for (const name of readdirSync('/proc')) {
    if (!/^\d+$/.test(name)) continue;
    const stat = readStat(Number(name));
    if (stat) out.push(stat);
  }
  return out;
}

/** The pids of `root` and all its descendants. */
export function processTree(root: number, stats: readonly ProcStat[] = allStats()): number[] {
  const children = new Map<number, number[]>();
  for (const s of stats) {
    const list = children.get(s.ppid);
    if (list) list.push(s.pid);
    else children.set(s.ppid, [s.pid]);
  }
  const out: number[] = [];
  const queue = [root];
  while (queue.length > 0) {
    const pid = queue.pop()!;
    out.push(pid);
    for (const child of children.get(pid) ?? []) queue.push(child);
  }
  return out;
}

export interface CpuGroups {
  /** Group name → how to find its pids at sampling time. */
  readonly [name: string]: () => readonly number[];
}

export interface CpuSample {
  readonly atMs: number;
  readonly cpuS: Record<string, number>;
  /** Names in cpuS that are a thread of a group's process: already counted in that group. */
  readonly threads: readonly string[];
}

/** A process's main thread (its thread id is the pid): the event loop of a Node process. 0 once it is gone. */
export function mainThreadCpuS(pid: number): number {
  try {
    return ownCpuS(`/proc/${pid}/task/${pid}/stat`);
  } catch {
    return 0;
  }
}

/** A process's own CPU seconds, without its reaped children's (a Postgres backend's, say); throws once it is gone. */
export function processCpuS(pid: number): number {
  return ownCpuS(`/proc/${pid}/stat`);
}

/** utime + stime of a process or thread stat file, in seconds. */
function ownCpuS(statPath: string): number {
  const text = readFileSync(statPath, 'utf8');
  const fields = text.slice(text.lastIndexOf(')') + 2).split(' ');
  return (Number(fields[11]) + Number(fields[12])) / clockTicksPerS;
}

/** Busy CPU seconds of the whole machine (all cores) since boot, from /proc/stat. */
function machineBusyS(): number {
  const fields = readFileSync('/proc/stat', 'utf8').split('\n')[0]!.trim().split(/\s+/).slice(1).map(Number);
  // user nice system idle iowait irq softirq steal …: everything but idle and iowait is busy.
  const [user = 0, nice = 0, system = 0, , , irq = 0, softirq = 0, steal = 0] = fields;
  return (user + nice + system + irq + softirq + steal) / clockTicksPerS;
}

/**
 * Samples each group's CPU seconds, plus `machine` (every process on the box, ours included), and
 * each of `threads` (a thread's CPU seconds, e.g. a process's main thread: part of its group).
 */
export function sampleCpu(groups: CpuGroups, threads: Readonly<Record<string, () => number>> = {}): CpuSample {
  const stats = new Map(allStats().map((s) => [s.pid, s]));
  const cpuS: Record<string, number> = { machine: machineBusyS() };
  for (const [name, pids] of Object.entries(groups)) {
    let total = 0;
    for (const pid of pids()) total += stats.get(pid)?.cpuS ?? 0;
    cpuS[name] = total;
  }
  for (const [name, read] of Object.entries(threads)) cpuS[name] = read();
  return { atMs: performance.now(), cpuS, threads: Object.keys(threads) };
}

/**
 * Percent of one core each group used between two samples (200 = both cores of this machine);
 * `other` is the machine's busy time not in any group: other work on the box during the run.
 */
export function cpuPercent(before: CpuSample, after: CpuSample): Record<string, number> {
  const wallS = (after.atMs - before.atMs) / 1000;
  const out: Record<string, number> = {};
  let ours = 0;
  for (const name of Object.keys(after.cpuS)) {
    const used = (after.cpuS[name] ?? 0) - (before.cpuS[name] ?? 0);
    out[name] = Math.round((100 * used) / wallS);
    if (name !== 'machine' && !after.threads.includes(name)) ours += used;
  }
  out.other = Math.max(0, Math.round((100 * ((after.cpuS.machine ?? 0) - (before.cpuS.machine ?? 0) - ours)) / wallS));
  return out;
}

/** The pids of every process whose command line contains `needle` under `root`'s tree. */
export function treeWithCommand(root: number, needle: string): number[] {
  return processTree(root).filter((pid) => {
    try {
      return readFileSync(`/proc/${pid}/cmdline`, 'utf8').includes(needle);
    } catch {
      return false;
    }
  });
}

/**
 * The box may be shared: before a measured run, wait (boundedly, within a budget for the whole
 * run) until other work settles, so the figures are the benchmark's and not a neighbour's.
 * Whatever remains is measured during the run and reported as "other" CPU.
 */
export function createQuietWaiter(budgetMs: number, log: (line: string) => void, busyPercentMax = 30): { wait(label: string): Promise<number>; waitedMs(): number } {
  let left = budgetMs;
  let waited = 0;
  const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));
  return {
    async wait(label) {
      for (;;) {
        const first = sampleCpu({});
        await sleep(1000);
        const busy = cpuPercent(first, sampleCpu({})).other ?? 0;
        if (busy <= busyPercentMax || left <= 0) return busy;
        const waitMs = Math.min(5000, left);
        log(`${label}: other work is using ${busy}% of a core; waiting up to ${(waitMs / 1000).toFixed(0)} s for it to settle`);
        left -= waitMs + 1000;
        waited += waitMs + 1000;
        await sleep(waitMs);
      }
    },
    waitedMs: () => waited,
  };
}
