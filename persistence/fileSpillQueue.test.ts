// The file spill queue of embedded mode: the spill queue contract, plus what only a file can
// get wrong (a torn frame after a crash, segments rolled over and deleted once drained).
import { mkdtemp, readdir, appendFile, rm, stat } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { randomUUID } from 'node:crypto';
import { describe, expect, it } from 'vitest';
import { isQueuedBatch, type SpilledBatch } from '../actors/ports.ts';
import { spillQueueContract } from '../actors/spillQueueContract.ts';
import { openFileSpillQueue } from './fileSpillQueue.ts';

async function tempDir(): Promise<string> {
  return mkdtemp(join(tmpdir(), 'livevote-spill-'));
}

spillQueueContract('file', async () => {
  const dir = await tempDir();
  let queue = await openFileSpillQueue({ dir });
  return {
    queue,
    reopen: async () => {
      await queue.close();
      queue = await openFileSpillQueue({ dir });
      return queue;
    },
    injectUndecodable: async () => {
      // A put frame whose batch bytes are not msgpack of a batch, written the way send writes.
      const { crc32 } = await import('node:zlib');
      const payload = Buffer.alloc(15 + 4);
      payload.writeUInt8(1, 0);
      payload.writeUIntLE(900_000, 1, 6);
      payload.writeDoubleLE(1, 7);
      payload.write('junk', 15);
      const frame = Buffer.alloc(8);
      frame.writeUInt32LE(payload.length, 0);
      frame.writeUInt32LE(crc32(payload), 4);
      await queue.close();
      const segments = (await readdir(dir)).filter((name) => name.startsWith('segment-')).sort();
      const last = segments[segments.length - 1] ?? 'segment-0000000000000001.log';
      await appendFile(join(dir, last), Buffer.concat([frame, payload]));
      queue = await openFileSpillQueue({ dir });
      return queue;
    },
    cleanup: async () => {
      await queue.close();
      await rm(dir, { recursive: true, force: true });
    },
  };
});

function batch(batchId: number, rowCount: number): SpilledBatch {
  const electionId = randomUUID();
  return {
    batchId,
    spilledAtMs: 1_700_000_000_000 + batchId,
    rows: Array.from({ length: rowCount }, (_, i) => ({
      electionId, shard: i % 4, epoch: 1, voterNumber: i * 4 + (i % 4), candidateIndex: 0, voteId: randomUUID(), acceptedAtMs: 1_700_000_000_000 + i,
    })),
  };
}

describe('file spill queue, beyond the contract', () => {
  it('cuts a torn frame at the end of the last segment and keeps everything before it', async () => {
    const dir = await tempDir();
    try {
      const queue = await openFileSpillQueue({ dir });
      await queue.send(batch(1, 10));
      await queue.send(batch(2, 10));
      await queue.close();
      const [segment] = (await readdir(dir)).filter((name) => name.startsWith('segment-'));
      // A crash mid-write: a length that promises more bytes than follow.
      const torn = Buffer.alloc(12);
      torn.writeUInt32LE(5_000, 0);
      await appendFile(join(dir, segment!), torn);
      const reopened = await openFileSpillQueue({ dir });
      expect((await reopened.depth()).batches).toBe(2);
      await reopened.send(batch(3, 10));
      await reopened.close();
      const again = await openFileSpillQueue({ dir });
      const items = await again.receive(10, 60_000);
      expect(items.map((item) => (isQueuedBatch(item) ? item.batch.batchId : -1)).sort()).toEqual([1, 2, 3]);
      await again.close();
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  });

  it('rolls segments over and deletes the ones whose batches were all acked', async () => {
    const dir = await tempDir();
    try {
      const queue = await openFileSpillQueue({ dir, segmentBytesMax: 4096 });
      for (let id = 1; id <= 40; id++) await queue.send(batch(id, 20));
      const segmentsBefore = (await readdir(dir)).filter((name) => name.startsWith('segment-'));
      expect(segmentsBefore.length).toBeGreaterThan(3);
      const items = await queue.receive(40, 60_000);
      expect(items).toHaveLength(40);
      for (const item of items) await queue.ack(item.receipt);
      const segmentsAfter = (await readdir(dir)).filter((name) => name.startsWith('segment-'));
      expect(segmentsAfter).toHaveLength(1);
      expect((await stat(join(dir, segmentsAfter[0]!))).size).toBeLessThanOrEqual(4096 + 4096);
      await queue.close();
      const reopened = await openFileSpillQueue({ dir });
      expect((await reopened.depth()).batches).toBe(0);
      await reopened.close();
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  });
});
