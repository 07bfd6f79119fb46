// The request checks worker (gateway/requestChecks.ts): verifies the tokens and runs the body fast
// paths of one batch, and answers the batch in one message. Pure: the secret and the clock.
import { parentPort, workerData } from 'node:worker_threads';
import { createAuthorizationVerifier } from './auth/authorization.ts';
import { checkRequest, type CheckBatchMessage, type CheckedRequest, type CheckWorkerMessage } from './requestChecks.ts';

const port = parentPort;
if (!port) throw new Error('gateway/requestChecks.worker.ts runs as a worker thread');
const verify = createAuthorizationVerifier((workerData as { jwtSecret: string }).jwtSecret);

port.on('message', (message: CheckBatchMessage) => {
  const { authorizations, bodyChecks, bodies, bodyEnds } = message;
  const checked = new Array<CheckedRequest | null>(authorizations.length);
  let start = 0;
  for (let i = 0; i < authorizations.length; i++) {
    const end = bodyEnds[i]!;
    try {
      checked[i] = checkRequest(verify, bodyChecks[i]!, authorizations[i]!, bodies.subarray(start, end));
    } catch {
      // Never for any input; should it happen, the main thread checks this one again and answers it as it would.
      checked[i] = null;
    }
    start = end;
  }
  port.postMessage({ kind: 'checked', batch: message.batch, checked } satisfies CheckWorkerMessage);
});
port.postMessage({ kind: 'ready' } satisfies CheckWorkerMessage);
