// Starting a worker thread on one of livevote's own modules, from the sources or from the build.
//
// From the build (dist/) the entry is a compiled .js and starts as it is. From the sources (tsx,
// vitest) it is a .ts file, and on Node 20 a worker's module loader does not get the hooks the
// parent's `--import tsx` registered (not even with the flag in its execArgv), so the worker loads
// its entry through tsx's API.
import { Worker, type WorkerOptions } from 'node:worker_threads';

/** `./<name>.ts` beside the caller when the caller runs from its source, else `./<name>.js`. */
export function moduleBeside(callerUrl: string, name: string): URL {
  return new URL(`./${name}.${callerUrl.endsWith('.ts') ? 'ts' : 'js'}`, callerUrl);
}

/** A worker thread running the module at `entry` (.ts through tsx, .js as it is). */
export function startModuleWorker(entry: URL, options: Omit<WorkerOptions, 'eval'>): Worker {
  if (!entry.pathname.endsWith('.ts')) return new Worker(entry, options);
  const tsxApi = import.meta.resolve('tsx/esm/api');
  const bootstrap = `import(${JSON.stringify(tsxApi)}).then((tsx) => tsx.tsImport(${JSON.stringify(entry.href)}, ${JSON.stringify(entry.href)}))`;
  return new Worker(bootstrap, { ...options, eval: true });
}
