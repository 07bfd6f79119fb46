// The journal worker thread (journalWorker.ts says why): a thin shell around PgJournal on a pool
// of its own. One message in per call, one answer out; commit() never rejects, wasCommitted()'s
// rejection is answered as data. Anything else that throws here ends the thread, and the main
// thread fails the calls in flight and starts another.
import { parentPort, workerData } from 'node:worker_threads';
import { createPool, endPool } from './db.ts';
import { decodeCommit, type FromJournalWorker, type JournalWorkerData, type ToJournalWorker } from './journalWorker.ts';
import { createPgJournal } from './voteJournal.ts';

if (parentPort === null) throw new Error('journalWorkerThread.ts runs as a worker thread (journalWorker.ts starts it)');
const port = parentPort;
const data = workerData as JournalWorkerData;
const send = (message: FromJournalWorker) => port.postMessage(message);

const pool = createPool(data.url, data.poolMax, data.applicationName, (error) =>
  send({ t: 'log', message: 'idle journal connection failed; the pool replaces it', error: String(error) }));
const journal = createPgJournal({ ...data.journal, pool });

port.on('message', (message: ToJournalWorker) => {
  switch (message.t) {
    case 'commit': {
      const batch = decodeCommit(message);
      if (typeof batch === 'string') {
        send({ t: 'committed', callId: message.callId, result: { kind: 'failed', message: `invalid batch ${message.batchId}: ${batch}` } });
        return;
      }
      void journal.commit(batch).then((result) => send({ t: 'committed', callId: message.callId, result }));
      return;
    }
    case 'check':
      journal.wasCommitted(message.batchId).then(
        (committed) => send({ t: 'checked', callId: message.callId, committed }),
        (error: unknown) => send({ t: 'check_failed', callId: message.callId, message: (error as Error).message ?? String(error) }),
      );
      return;
    case 'close':
      void endPool(pool).finally(() => send({ t: 'closed' }));
      return;
  }
});

send({ t: 'ready' });
