// A test-only stand-in for the journal's worker thread (persistence/journalWorker.pg.test.ts): the
// real one (journalWorkerThread.ts), loaded only once the test posts it { t: 'load' }, so that its
// start lasts as long as the test wants, as a start on a busy machine can outlast a call's bound.
// Until then a call sent to it is dropped, and a close ends the thread.
import { parentPort } from 'node:worker_threads';

const port = parentPort!;
port.on('message', function untilLoad(message: { t?: string }) {
  if (message.t === 'close') process.exit(0);
  if (message.t !== 'load') return;
  port.off('message', untilLoad);
  void import('./journalWorkerThread.ts');
});
