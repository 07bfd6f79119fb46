// The spill queue of embedded mode: append-only segment files in the data dir, fsynced before a
// send resolves. One process owns the directory (like the embedded Postgres beside it).
//
// A segment is a sequence of frames: [u32 payload length][u32 crc32 of payload][payload], the
// payload one of
//   put   [1][u48 id][f64 spilledAtMs][encoded batch (spillCodec.ts)]
//   ack   [2][u48 id]                      the batch is stored in Postgres, or dead-lettered
// Opening replays every segment in order into a SpillQueueIndex (actors/memoryAdapters.ts). A
// torn frame at the end of the last segment (a crash mid-write, never acknowledged) is cut off;
// a bad frame anywhere else means the disk lied, and opening fails rather than guess.
// A segment is deleted once every put in it and in every older segment was acked: the acks in
// it can then only name puts that are gone already.
//
// Concurrent sends share one write and one fdatasync (group commit again), so a burst of spills
// costs one disk flush, not one each.
import { mkdir, open, readdir, readFile, truncate, unlink, type FileHandle } from 'node:fs/promises';
import { join } from 'node:path';
import { crc32 } from 'node:zlib';
import type { QueuedBatch, SpilledBatch, SpillQueue, SpillQueueDepth, UndecodableMessage } from '../actors/ports.ts';
import { SpillQueueIndex, spillReceipt, spillReceiptId } from '../actors/memoryAdapters.ts';
import { decodeSpilledBatch, encodeSpilledBatch } from './spillCodec.ts';

/** A new segment is started past this size. */
export const spillSegmentBytesMaxDefault = 64 * 1024 * 1024;
const frameHeaderBytes = 8;
const putType = 1;
const ackType = 2;
const segmentPattern = /^segment-(\d{16})\.log$/;
const deadLettersFile = 'dead-letters.log';

export interface FileSpillQueueOptions {
  /** The queue's own directory (created if missing), e.g. `$LIVEVOTE_DATA_DIR/spill`. */
  readonly dir: string;
  readonly segmentBytesMax?: number;
  readonly now?: () => number;
}

interface Segment {
  readonly startId: number;
  readonly path: string;
  /** Ids of puts in this segment not acked yet. */
  readonly live: Set<number>;
}

interface PendingWrite {
  readonly frame: Buffer;
  /** Set for a put: the id to count as live in the segment it lands in. */
  readonly putId: number | null;
  resolve(): void;
  reject(error: Error): void;
}

export class FileSpillQueue implements SpillQueue {
  private readonly index: SpillQueueIndex<Buffer>;
  private readonly segments: Segment[] = [];
  private readonly segmentOfId = new Map<number, Segment>();
  private handle: FileHandle | null = null;
  private segmentBytes = 0;
  private nextId = 1;
  private deadLetters = 0;
  private pending: PendingWrite[] = [];
  private writing: Promise<void> | null = null;
  private closed = false;

  private constructor(
    private readonly dir: string,
    private readonly segmentBytesMax: number,
    now: () => number,
  ) {
    this.index = new SpillQueueIndex(now);
  }

  static async open(options: FileSpillQueueOptions): Promise<FileSpillQueue> {
    const segmentBytesMax = options.segmentBytesMax ?? spillSegmentBytesMaxDefault;
    if (!(Number.isInteger(segmentBytesMax) && segmentBytesMax >= 1024)) throw new Error('segmentBytesMax must be an integer >= 1024');
    await mkdir(options.dir, { recursive: true });
    await takeLock(options.dir);
    const queue = new FileSpillQueue(options.dir, segmentBytesMax, options.now ?? Date.now);
    try {
      await queue.replay();
    } catch (error) {
      await releaseLock(options.dir);
      throw error;
    }
    return queue;
  }

  async send(batch: SpilledBatch): Promise<void> {
    if (this.closed) throw new Error('spill queue is closed');
    const body = encodeSpilledBatch(batch);
    const id = this.nextId++;
    const payload = Buffer.allocUnsafe(1 + 6 + 8 + body.length);
    payload.writeUInt8(putType, 0);
    payload.writeUIntLE(id, 1, 6);
    payload.writeDoubleLE(batch.spilledAtMs, 7);
    body.copy(payload, 15);
    await this.write(frameOf(payload), id);
    this.index.add(id, body, batch.spilledAtMs);
  }

  async receive(max: number, leaseMs: number): Promise<(QueuedBatch | UndecodableMessage)[]> {
    return this.index.lease(max, leaseMs).map((item) => {
      const receipt = spillReceipt(item.id, item.receiveCount);
      try {
        return { batch: decodeSpilledBatch(item.value), receipt, receiveCount: item.receiveCount };
      } catch (error) {
        return { receipt, receiveCount: item.receiveCount, error: (error as Error).message };
      }
    });
  }

  async ack(receipt: string): Promise<void> {
    const id = spillReceiptId(receipt);
    if (this.index.remove(id) === undefined) return;
    await this.writeAck(id);
  }

  async release(receipt: string): Promise<void> {
    this.index.release(spillReceiptId(receipt));
  }

  async deadLetter(receipt: string, reason: string): Promise<void> {
    const id = spillReceiptId(receipt);
    const body = this.index.remove(id);
    if (body === undefined) return;
    const reasonBytes = Buffer.from(reason.slice(0, 1000), 'utf8');
    const payload = Buffer.allocUnsafe(2 + reasonBytes.length + body.length);
    payload.writeUInt16LE(reasonBytes.length, 0);
    reasonBytes.copy(payload, 2);
    body.copy(payload, 2 + reasonBytes.length);
    // The dead letter is durable before the ack removes the batch from the queue.
    const deadLetters = await open(join(this.dir, deadLettersFile), 'a');
    try {
      await deadLetters.write(frameOf(payload));
      await deadLetters.datasync();
    } finally {
      await deadLetters.close();
    }
    this.deadLetters++;
    await this.writeAck(id);
  }

  async depth(): Promise<SpillQueueDepth> {
    return this.index.depth();
  }

  async deadLetterCount(): Promise<number> {
    return this.deadLetters;
  }

  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    while (this.writing !== null) await this.writing;
    await this.handle?.close();
    this.handle = null;
    await releaseLock(this.dir);
  }

  private async writeAck(id: number): Promise<void> {
    const payload = Buffer.allocUnsafe(7);
    payload.writeUInt8(ackType, 0);
    payload.writeUIntLE(id, 1, 6);
    const segment = this.segmentOfId.get(id);
    this.segmentOfId.delete(id);
    segment?.live.delete(id);
    await this.write(frameOf(payload), null);
    await this.deleteDrainedSegments();
  }

  private write(frame: Buffer, putId: number | null): Promise<void> {
    return new Promise((resolve, reject) => {
      this.pending.push({ frame, putId, resolve, reject });
      this.writing ??= this.writeLoop().finally(() => {
        this.writing = null;
      });
    });
  }

  /** Writes everything pending with one writev and one fdatasync per round. */
  private async writeLoop(): Promise<void> {
    while (this.pending.length > 0) {
      const group = this.pending;
      this.pending = [];
      try {
        if (this.handle === null || this.segmentBytes >= this.segmentBytesMax) await this.startSegment();
        const frames = group.map((write) => write.frame);
        let bytes = 0;
        for (const frame of frames) bytes += frame.length;
        const { bytesWritten } = await this.handle!.writev(frames);
        if (bytesWritten !== bytes) throw new Error(`short write to the spill segment: ${bytesWritten} of ${bytes} bytes`);
        await this.handle!.datasync();
        this.segmentBytes += bytes;
        const segment = this.segments[this.segments.length - 1]!;
        for (const write of group) {
          if (write.putId === null) continue;
          segment.live.add(write.putId);
          this.segmentOfId.set(write.putId, segment);
        }
        for (const write of group) write.resolve();
      } catch (error) {
        // The segment may now end in a torn frame: start a new one for whatever comes next.
        await this.handle?.close().catch(() => undefined);
        this.handle = null;
        for (const write of group) write.reject(error as Error);
      }
    }
  }

  private async startSegment(): Promise<void> {
    await this.handle?.close();
    const startId = this.nextId;
    const path = join(this.dir, `segment-${String(startId).padStart(16, '0')}.log`);
    const segments = this.segments;
    // A segment whose first write failed may exist with the same start id: append to it.
    if (segments.length > 0 && segments[segments.length - 1]!.path === path) {
      this.handle = await open(path, 'a');
    } else {
      this.handle = await open(path, 'a');
      segments.push({ startId, path, live: new Set() });
      await syncDirectory(this.dir);
    }
    this.segmentBytes = (await this.handle.stat()).size;
  }

  private async deleteDrainedSegments(): Promise<void> {
    // Never the segment being written to: it is still growing.
    while (this.segments.length > 1 && this.segments[0]!.live.size === 0) {
      const segment = this.segments.shift()!;
      await unlink(segment.path).catch(() => undefined);
    }
  }

  private async replay(): Promise<void> {
    const names = (await readdir(this.dir)).filter((name) => segmentPattern.test(name)).sort();
    for (let s = 0; s < names.length; s++) {
      const path = join(this.dir, names[s]!);
      const segment: Segment = { startId: Number(segmentPattern.exec(names[s]!)![1]), path, live: new Set() };
      this.segments.push(segment);
      const bytes = await readFile(path);
      const validBytes = forEachFrame(bytes, (payload) => {
        const type = payload.readUInt8(0);
        const id = payload.readUIntLE(1, 6);
        if (type === putType) {
          this.index.add(id, Buffer.from(payload.subarray(15)), payload.readDoubleLE(7));
          segment.live.add(id);
          this.segmentOfId.set(id, segment);
          this.nextId = Math.max(this.nextId, id + 1);
        } else if (type === ackType) {
          this.index.remove(id);
          this.segmentOfId.get(id)?.live.delete(id);
          this.segmentOfId.delete(id);
        } else {
          throw new Error(`${path}: unknown frame type ${type}`);
        }
      });
      if (validBytes < bytes.length) {
        if (s !== names.length - 1) throw new Error(`${path}: corrupt frame at byte ${validBytes} in a segment that is not the last`);
        await truncate(path, validBytes);
      }
    }
    this.nextId = Math.max(this.nextId, ...this.segments.map((segment) => segment.startId));
    const deadLetterBytes = await readFile(join(this.dir, deadLettersFile)).catch(() => Buffer.alloc(0));
    forEachFrame(deadLetterBytes, () => {
      this.deadLetters++;
    });
    // Appends go to a new segment: the last one may end where a torn frame was cut.
    await this.deleteDrainedSegments();
  }
}

export function openFileSpillQueue(options: FileSpillQueueOptions): Promise<FileSpillQueue> {
  return FileSpillQueue.open(options);
}

function frameOf(payload: Buffer): Buffer {
  const frame = Buffer.allocUnsafe(frameHeaderBytes + payload.length);
  frame.writeUInt32LE(payload.length, 0);
  frame.writeUInt32LE(crc32(payload), 4);
  payload.copy(frame, frameHeaderBytes);
  return frame;
}

/** Calls onPayload for each whole, checksummed frame; returns how many bytes were good. */
function forEachFrame(bytes: Buffer, onPayload: (payload: Buffer) => void): number {
  let offset = 0;
  while (offset + frameHeaderBytes <= bytes.length) {
    const length = bytes.readUInt32LE(offset);
    const end = offset + frameHeaderBytes + length;
    if (length === 0 || end > bytes.length) break;
    const payload = bytes.subarray(offset + frameHeaderBytes, end);
    if (crc32(payload) !== bytes.readUInt32LE(offset + 4)) break;
    onPayload(payload);
    offset = end;
  }
  return offset;
}

const lockFile = 'owner.pid';

/**
 * One live process per directory: two queues appending to one segment would interleave frames.
 * A lock left by a process that is gone (kill -9) is taken over.
 */
async function takeLock(dir: string): Promise<void> {
  const path = join(dir, lockFile);
  for (let attempt = 0; attempt < 2; attempt++) {
    try {
      const handle = await open(path, 'wx');
      await handle.writeFile(String(process.pid));
      await handle.close();
      return;
    } catch (error) {
      if ((error as NodeJS.ErrnoException).code !== 'EEXIST') throw error;
      const owner = Number(await readFile(path, 'utf8').catch(() => ''));
      if (Number.isInteger(owner) && owner > 0 && isAlive(owner)) {
        throw new Error(`spill queue ${dir} is in use by process ${owner}${owner === process.pid ? ' (this one)' : ''}`);
      }
      await unlink(path).catch(() => undefined);
    }
  }
  throw new Error(`could not lock spill queue ${dir}`);
}

async function releaseLock(dir: string): Promise<void> {
  const path = join(dir, lockFile);
  if (Number(await readFile(path, 'utf8').catch(() => '')) === process.pid) await unlink(path).catch(() => undefined);
}

function isAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (error) {
    return (error as NodeJS.ErrnoException).code === 'EPERM';
  }
}

/** A new file's directory entry is durable only once the directory itself is synced. */
async function syncDirectory(dir: string): Promise<void> {
  const handle = await open(dir, 'r');
  try {
    await handle.sync();
  } finally {
    await handle.close();
  }
}
