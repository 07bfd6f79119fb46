// A test-only stand-in for the journal's worker thread (persistence/journalWorker.pg.test.ts): it
// says it is ready and never answers a call, as a worker stuck in a busy loop or a hung client would.
import { parentPort } from 'node:worker_threads';
import type { FromJournalWorker } from './journalWorker.ts';

parentPort!.postMessage({ t: 'ready' } satisfies FromJournalWorker);
// Calls are received and dropped; the port keeps the thread alive until it is terminated.
parentPort!.on('message', () => undefined);
