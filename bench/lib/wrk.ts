// wrk: installed from Debian when missing, run with one thread (two cores: the load generator
// must leave the other to the server), results read from the JSON line the Lua scripts print.
import { execFileSync, spawn, type ChildProcess } from 'node:child_process';
import os from 'node:os';
import path from 'node:path';
import { repoRoot } from './proc.ts';

export interface WrkLatencyUs {
  readonly min: number;
  readonly mean: number;
  readonly max: number;
  readonly stdev: number;
  readonly p50: number;
  readonly p90: number;
  readonly p99: number;
  readonly p999: number;
}

export interface WrkResult {
  /** Requests answered (any status). */
  readonly requests: number;
  readonly durationUs: number;
  readonly bytes: number;
  /** Answers with a status >= 400. */
  readonly non2xx: number;
  readonly connectErrors: number;
  readonly readErrors: number;
  readonly writeErrors: number;
  readonly timeouts: number;
  /** Requests written (votes.lua counts them; equals requests when every one was answered). */
  readonly sent: number;
  /** Voter lines sent a second time (wrap, or a connection's first request after the file ran out). */
  readonly repeats: number;
  /** 1 when the voter file ran out before the active window ended. */
  readonly exhausted: number;
  /** The window throughput is computed over: first request to quiesce (votes.lua) or wrk's duration. */
  readonly activeMs: number;
  readonly latencyUs: WrkLatencyUs;
}

export interface WrkRun {
  readonly command: string;
  readonly result: WrkResult;
  /** Answered per second of the active window. */
  readonly rps: number;
  readonly okCount: number;
  /** The machine's 1-minute load average when wrk started (the box is shared: said next to every figure). */
  readonly loadAverageAtStart: number;
}

export function wrkVersion(): string | undefined {
  try {
    const out = execFileSync('wrk', ['--version'], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'] });
    return out.split('\n')[0]?.trim();
  } catch (error) {
    // wrk --version exits 1 after printing its usage; the first line is still the version.
    const out = String((error as { stdout?: string }).stdout ?? '');
    return out.startsWith('wrk') ? out.split('\n')[0]!.trim() : undefined;
  }
}

/** Installs the Debian package when wrk is missing (root, no prompt; apt-get update on failure). */
export function ensureWrk(log: (line: string) => void): string {
  const found = wrkVersion();
  if (found) return found;
  log('wrk is missing: apt-get install -y wrk');
  const apt = (args: string[]) => execFileSync('apt-get', args, { stdio: ['ignore', 'ignore', 'inherit'], env: { ...process.env, DEBIAN_FRONTEND: 'noninteractive' } });
  try {
    apt(['install', '-y', 'wrk']);
  } catch {
    apt(['update']);
    apt(['install', '-y', 'wrk']);
  }
  const installed = wrkVersion();
  if (!installed) throw new Error('wrk could not be installed');
  return installed;
}

export interface WrkOptions {
  readonly url: string;
  readonly connections: number;
  readonly durationS: number;
  readonly script: 'votes.lua' | 'report.lua';
  readonly scriptArgs?: readonly string[];
  readonly timeoutS?: number;
  /** Called with the running wrk process (to sample its CPU). */
  readonly onStart?: (child: ChildProcess) => void;
}

export async function runWrk(options: WrkOptions): Promise<WrkRun> {
  const scriptPath = path.join(repoRoot, 'bench/lua', options.script);
  const args = [
    '-t1',
    `-c${options.connections}`,
    `-d${options.durationS}s`,
    `--timeout`,
    `${options.timeoutS ?? 10}s`,
    '--latency',
    '-s',
    scriptPath,
    options.url,
    ...(options.scriptArgs && options.scriptArgs.length > 0 ? ['--', ...options.scriptArgs] : []),
  ];
  const loadAverageAtStart = Math.round(os.loadavg()[0]! * 100) / 100;
  const child = spawn('wrk', args, { stdio: ['ignore', 'pipe', 'pipe'] });
  options.onStart?.(child);
  let stdout = '';
  let stderr = '';
  child.stdout.on('data', (chunk: Buffer) => { stdout += chunk.toString(); });
  child.stderr.on('data', (chunk: Buffer) => { stderr += chunk.toString(); });
  const code = await new Promise<number | null>((resolve) => child.on('exit', (exitCode) => resolve(exitCode)));
  const line = stdout.split('\n').find((l) => l.startsWith('BENCH_WRK_JSON '));
  if (code !== 0 || !line) throw new Error(`wrk failed (${code}):\n${stdout}\n${stderr}`);
  const result = JSON.parse(line.slice('BENCH_WRK_JSON '.length)) as WrkResult;
  const command = ['wrk', ...args.map((a) => (a === scriptPath ? `bench/lua/${options.script}` : a))].join(' ');
  return {
    command,
    result,
    rps: result.requests / (result.activeMs / 1000),
    okCount: result.requests - result.non2xx,
    loadAverageAtStart,
  };
}
