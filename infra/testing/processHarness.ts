// Runs livevote as a real child process (`node --import tsx infra/main.ts`), the way `npm start`
// does, for tests of start-up, signals and kill -9 recovery.
import { spawn, type ChildProcess } from 'node:child_process';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../..');

const started = new Set<ChildProcess>();

/** For afterAll: a test that failed half-way must not leave a livevote running. */
export function killStartedProcesses(): void {
  for (const child of started) if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL');
  started.clear();
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

/** `nodeArgs` go before the entry point (e.g. --cpu-prof, which NODE_OPTIONS refuses). */
export async function startLivevoteProcess(
  env: Record<string, string | undefined>,
  startTimeoutMs = 60_000,
  nodeArgs: readonly string[] = [],
): Promise<LivevoteProcess> {
  const childEnv: Record<string, string> = {};
  // LOG_LEVEL info: the start is detected by its 'livevote is listening' log line.
  for (const [key, value] of Object.entries({ ...process.env, PORT: '0', ...env, LOG_LEVEL: 'info' })) {
    if (value !== undefined) childEnv[key] = value;
  }
  const child = spawn(process.execPath, [...nodeArgs, '--import', 'tsx', path.join(root, 'infra/main.ts')], { cwd: root, env: childEnv, stdio: ['ignore', 'pipe', 'pipe'] });
  started.add(child);
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
