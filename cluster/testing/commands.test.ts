// A recorded case must replay the run it was recorded from: the same work released in the same
// order, even where two pieces of pending work carry the same label.
import fc from 'fast-check';
import { expect, it } from 'vitest';
import { recordCase, replayedWork } from './commands.ts';
import type { WorldConfig } from './world.ts';

it('replays the recorded one of two pending pieces of work with the same label', async () => {
  // Two replicas' reports of one node, with their own payloads; the scheduler released the newer one first.
  const scheduler = fc.schedulerFor([2, 1, 3]);
  const released: string[] = [];
  const send = (label: string, payload: string) => scheduler.schedule(Promise.resolve(), label).then(() => released.push(payload));
  void send("n0.1 sends n1.1 its replicas' report", 'first report');
  void send("n0.1 sends n1.1 its replicas' report", 'second report');
  void send('n1.1 reads the view', 'view');
  await scheduler.waitAll();
  expect(released).toEqual(['second report', 'first report', 'view']);
  const recorded = recordCase({ config: {} as WorldConfig, commands: [], scheduler });

  const work = replayedWork(recorded.releases);
  const replayed: string[] = [];
  const sendAgain = (label: string, payload: string) => work.schedule(label).then(() => replayed.push(payload));
  void sendAgain("n0.1 sends n1.1 its replicas' report", 'first report');
  void sendAgain("n0.1 sends n1.1 its replicas' report", 'second report');
  void sendAgain('n1.1 reads the view', 'view');
  while (work.pending() > 0) {
    await work.releaseOne();
    await new Promise((resolve) => setImmediate(resolve));
  }
  expect(replayed).toEqual(released);
});
