// Runs livevote as a real child process (`node --import tsx infra/main.ts`, as `npm start` does,
// or another command: `npm start` itself, the compiled build), for tests of start-up, signals
// and kill -9 recovery.
import { spawn, type ChildProcess } from 'node:child_process';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { stopEmbeddedPostgres } from './postmasters.ts';

export const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../..');

const started = new Set<ChildProcess>();
/** Started detached: each leads a process group of its own (`npm start`'s node is in npm's). */
const groupLeaders = new Set<ChildProcess>();
/** The LIVEVOTE_DATA_DIR of each, where a node without DATABASE_URL runs its embedded Postgres. */
const dataDirs = new Set<string>();

/**
 * For afterAll: a test that failed half-way must leave no livevote running, nor the embedded
 * Postgres of one (a postmaster outlives its node's SIGKILL, and a test may have frozen it):
 * the nodes are killed, then their data dirs' servers stopped; resolves once they are gone.
 */
export async function killStartedProcesses(): Promise<void> {
  for (const child of started) {
    if (groupLeaders.has(child) && child.pid !== undefined) {
      // The leader may be gone while others in its group live on: signal the group.
      try { process.kill(-child.pid, 'SIGKILL'); } catch { /* no process left in it */ }
    } else if (child.exitCode === null && child.signalCode === null) {
      child.kill('SIGKILL');
    }
  }
  started.clear();
  groupLeaders.clear();
  const dirs = [...dataDirs];
  dataDirs.clear();
  await stopEmbeddedPostgres(dirs);
}

export interface LaunchOptions {
  /** The program and its arguments; by default node [nodeArgs] --import tsx infra/main.ts. */
  readonly command?: readonly [string, ...string[]];
  /**
   * In a process group of its own, so a test can signal the whole group (`process.kill(-pid)`)
   * as a terminal's Ctrl-C does.
   */
  readonly detached?: boolean;
}

export interface LivevoteProcess {
  readonly child: ChildProcess;
  readonly port: number;
  readonly baseUrl: string;
  /** Everything written to stdout so far (JSON log lines and the first-start banner). */
  output(): string;
  /** Resolves with the exit code (or signal name). */
  exited(): Promise<number | string>;
}

/**
 * `nodeArgs` go before the entry point (e.g. --cpu-prof, which NODE_OPTIONS refuses). The start
 * timeout only catches a start that hangs: a first start runs initdb, and a busy machine is slow.
 */
export async function startLivevoteProcess(
  env: Record<string, string | undefined>,
  startTimeoutMs = 180_000,
  nodeArgs: readonly string[] = [],
  launch: LaunchOptions = {},
): Promise<LivevoteProcess> {
  const childEnv: Record<string, string> = {};
  // LOG_LEVEL info: the start is detected by its 'livevote is listening' log line.
  for (const [key, value] of Object.entries({ ...process.env, PORT: '0', ...env, LOG_LEVEL: 'info' })) {
    if (value !== undefined) childEnv[key] = value;
  }
  const [program, ...args] = launch.command ?? [process.execPath, ...nodeArgs, '--import', 'tsx', path.join(root, 'infra/main.ts')];
  if (childEnv.LIVEVOTE_DATA_DIR !== undefined) dataDirs.add(path.resolve(root, childEnv.LIVEVOTE_DATA_DIR));
  const child = spawn(program, args, { cwd: root, env: childEnv, stdio: ['ignore', 'pipe', 'pipe'], detached: launch.detached ?? false });
  started.add(child);
  if (launch.detached) groupLeaders.add(child);
  let stdout = '';
  let stderr = '';
  child.stdout!.on('data', (chunk: Buffer) => { stdout += chunk.toString(); });
  child.stderr!.on('data', (chunk: Buffer) => { stderr += chunk.toString(); });
  const exit = new Promise<number | string>((resolve) => child.on('exit', (code, signal) => resolve(code ?? signal ?? 'unknown')));
  const port = await new Promise<number>((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`livevote did not start in ${startTimeoutMs} ms\nstdout:\n${stdout}\nstderr:\n${stderr}`)), startTimeoutMs);
    const onData = () => {
      const match = /"port":(\d+)[^\n]*livevote is listening/.exec(stdout);
      if (match) {
        clearTimeout(timer);
        child.stdout!.off('data', onData);
        resolve(Number(match[1]));
      }
    };
    child.stdout!.on('data', onData);
    void exit.then((code) => { clearTimeout(timer); reject(new Error(`livevote exited (${code}) before listening\nstdout:\n${stdout}\nstderr:\n${stderr}`)); });
  });
  return { child, port, baseUrl: `http://127.0.0.1:${port}`, output: () => stdout + stderr, exited: () => exit };
}
