// Test-only stand-ins for the request checks worker (gateway/requestChecks.test.ts), chosen by the
// URL's `mode`: `exit` says it is ready and dies on its first batch; `silent` says it is ready and
// never answers; `never-ready` loads and says nothing.
import { parentPort } from 'node:worker_threads';
import type { CheckWorkerMessage } from './requestChecks.ts';

const mode = new URL(import.meta.url).searchParams.get('mode');
const port = parentPort!;
if (mode !== 'never-ready') port.postMessage({ kind: 'ready' } satisfies CheckWorkerMessage);
port.on('message', () => {
  if (mode === 'exit') process.exit(3);
});
