// The contract every SpillQueue passes with the SAME tests: the in-memory queue
// (actors/memoryAdapters.test.ts), the file queue of embedded mode and the SQS queue
// (persistence/*SpillQueue.test.ts, the latter against a real SQS-compatible server).
//
// Usage, in a *.test.ts file:
//   spillQueueContract('file', async () => ({ queue, reopen, injectUndecodable, cleanup }));
import { randomUUID } from 'node:crypto';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { isQueuedBatch, type JournalRow, type QueuedBatch, type SpilledBatch, type SpillQueue } from './ports.ts';

export interface SpillQueueContractSubject {
  readonly queue: SpillQueue;
  /** Closes the queue and opens it again on the same storage (a restart); absent when not durable. */
  readonly reopen?: () => Promise<SpillQueue>;
  /**
   * Puts a message the codec cannot decode into the queue and resolves the queue to use from
   * then on (the file queue reopens to see it); absent when the queue stores objects.
   */
  readonly injectUndecodable?: () => Promise<SpillQueue>;
  cleanup(): Promise<void>;
}

/** Leases the tests wait out: SQS counts visibility in whole seconds. */
const shortLeaseMs = 1_000;
const longLeaseMs = 60_000;
const waitDeadlineMs = 60_000;

/** `makeSubject` resolves a string instead when the queue cannot be had here: every test skips saying why. */
export function spillQueueContract(name: string, makeSubject: () => Promise<SpillQueueContractSubject | string>): void {
  describe(`spill queue contract: ${name}`, () => {
    let subject: SpillQueueContractSubject | null = null;
    let queue: SpillQueue;
    let nextBatchId: number;

    beforeEach(async (context) => {
      const made = await makeSubject();
      if (typeof made === 'string') {
        subject = null;
        return context.skip(made);
      }
      subject = made;
      queue = subject.queue;
      nextBatchId = 1 + Math.floor(Math.random() * 1e9);
    });

    afterEach(async () => {
      await subject?.cleanup();
    });

    function batch(rowCount: number, spilledAtMs = 1_700_000_000_000 + nextBatchId): SpilledBatch {
      const electionIds = [randomUUID(), randomUUID()];
      const rows: JournalRow[] = [];
      for (let i = 0; i < rowCount; i++) {
        rows.push({
          electionId: electionIds[i % 2]!,
          shard: i % 7,
          epoch: 1 + (i % 3),
          voterNumber: 1_000_000_000 + i * 7,
          candidateIndex: i % 5,
          voteId: randomUUID(),
          acceptedAtMs: spilledAtMs - 2_000 + i,
        });
      }
      return { batchId: nextBatchId++, rows, spilledAtMs };
    }

    /** Receives until `count` batches came, or fails at the deadline. */
    async function receiveBatches(count: number, leaseMs = longLeaseMs, max = 10): Promise<QueuedBatch[]> {
      const got: QueuedBatch[] = [];
      const deadline = Date.now() + waitDeadlineMs;
      while (got.length < count) {
        if (Date.now() > deadline) throw new Error(`received ${got.length} of ${count} batches before the deadline`);
        const items = await queue.receive(max, leaseMs);
        for (const item of items) {
          if (!isQueuedBatch(item)) throw new Error(`undecodable message: ${item.error}`);
          got.push(item);
        }
        if (items.length === 0) await new Promise((resolve) => setTimeout(resolve, 50));
      }
      return got;
    }

    it('gives back what was sent, row for row, and counts it in the depth', async () => {
      const sent = batch(250);
      await queue.send(sent);
      const depth = await queue.depth();
      expect(depth.batches).toBe(1);
      expect(depth.oldestSpilledAtMs).toBe(sent.spilledAtMs);
      const [received] = await receiveBatches(1);
      expect(received!.batch).toEqual(sent);
      expect(received!.receiveCount).toBe(1);
    });

    it('hides a received batch while leased, and forgets it once acked', async () => {
      await queue.send(batch(3));
      const [received] = await receiveBatches(1);
      expect(await queue.receive(10, longLeaseMs)).toEqual([]);
      await queue.ack(received!.receipt);
      expect((await queue.depth()).batches).toBe(0);
      expect((await queue.depth()).oldestSpilledAtMs).toBeNull();
      expect(await queue.receive(10, longLeaseMs)).toEqual([]);
    });

    it('delivers a batch again when its lease ends unacked, counting deliveries', async () => {
      const sent = batch(2);
      await queue.send(sent);
      const [first] = await receiveBatches(1, shortLeaseMs);
      expect(first!.receiveCount).toBe(1);
      const [second] = await receiveBatches(1, longLeaseMs);
      expect(second!.batch).toEqual(sent);
      expect(second!.receiveCount).toBe(2);
      await queue.ack(second!.receipt);
      expect((await queue.depth()).batches).toBe(0);
    });

    it('a released batch is visible again at once', async () => {
      const sent = batch(3);
      await queue.send(sent);
      const [first] = await receiveBatches(1);
      await queue.release(first!.receipt);
      const [again] = await receiveBatches(1);
      expect(again!.batch).toEqual(sent);
      await queue.ack(again!.receipt);
      expect((await queue.depth()).batches).toBe(0);
    });

    it('moves a dead-lettered batch out of the queue and counts it', async () => {
      expect(await queue.deadLetterCount()).toBe(0);
      await queue.send(batch(2));
      await queue.send(batch(2));
      const received = await receiveBatches(2);
      await queue.deadLetter(received[0]!.receipt, 'poison: test');
      await queue.ack(received[1]!.receipt);
      expect((await queue.depth()).batches).toBe(0);
      expect(await queue.deadLetterCount()).toBe(1);
    });

    it('delivers each of many batches once when each is acked', async () => {
      const sent = await Promise.all(Array.from({ length: 25 }, () => batch(4)).map(async (b) => {
        await queue.send(b);
        return b.batchId;
      }));
      expect((await queue.depth()).batches).toBe(25);
      const received = await receiveBatches(25, longLeaseMs, 7);
      await Promise.all(received.map((item) => queue.ack(item.receipt)));
      expect(received.map((item) => item.batch.batchId).sort()).toEqual(sent.sort());
      expect((await queue.depth()).batches).toBe(0);
    });

    it('keeps sent batches, and forgets acked ones, across a restart', async (context) => {
      if (subject?.reopen === undefined) return context.skip('this queue lives in memory only');
      const kept = batch(5);
      const acked = batch(5);
      await queue.send(acked);
      await queue.send(kept);
      // A lease SQS lets run out soon after the restart; a file queue forgets leases at once.
      const received = await receiveBatches(2, 3 * shortLeaseMs);
      await queue.ack(received.find((item) => item.batch.batchId === acked.batchId)!.receipt);
      queue = await subject.reopen();
      const [again] = await receiveBatches(1);
      expect(again!.batch).toEqual(kept);
      await queue.ack(again!.receipt);
      expect((await queue.depth()).batches).toBe(0);
    });

    it('hands an undecodable message over as such, so it can be dead-lettered', async (context) => {
      if (subject?.injectUndecodable === undefined) return context.skip('this queue stores objects, not bytes');
      queue = await subject.injectUndecodable();
      const deadline = Date.now() + waitDeadlineMs;
      let items = await queue.receive(10, longLeaseMs);
      while (items.length === 0 && Date.now() < deadline) {
        await new Promise((resolve) => setTimeout(resolve, 50));
        items = await queue.receive(10, longLeaseMs);
      }
      expect(items).toHaveLength(1);
      const item = items[0]!;
      expect(isQueuedBatch(item)).toBe(false);
      await queue.deadLetter(item.receipt, 'undecodable');
      expect(await queue.deadLetterCount()).toBe(1);
      expect((await queue.depth()).batches).toBe(0);
    });
  });
}
