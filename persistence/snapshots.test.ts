import { randomBytes, randomUUID } from 'node:crypto';
import { afterAll, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import type { JournalRow, ShardSnapshot } from '../actors/ports.ts';
import { acquireShardLeases } from '../cluster/leases.ts';
import { createPgBatchIdSource, type PgBatchIdSource } from './batchIds.ts';
import { createPgSnapshotStore, SnapshotFencedError, voteRowParser, type PgSnapshotStore } from './snapshots.ts';
import { createTestDatabase, type TestDatabase } from './testDatabase.ts';
import { createPgJournal, type PgJournal } from './voteJournal.ts';

const nodeId = 'snapshot-test-node';
const shardCount = 2;
let db: TestDatabase;
let store: PgSnapshotStore;
let journal: PgJournal;
let batchIds: PgBatchIdSource;
let electionId: string;
let epochs: number[];

beforeAll(async () => {
  db = await createTestDatabase();
  store = createPgSnapshotStore({ pool: db.pool, nodeId, replayChunkRows: 1000 });
  journal = createPgJournal({ pool: db.pool, nodeId });
  batchIds = await createPgBatchIdSource({ pool: db.pool });
});

afterAll(async () => {
  await db?.drop();
});

beforeEach(async () => {
  electionId = randomUUID();
  epochs = await acquireShardLeases(db.pool, { electionId, shardCount, nodeId, leaseTtlMs: 60_000 });
});

function snapshotOf(overrides: Partial<ShardSnapshot> = {}): ShardSnapshot {
  const voterSlots = 1_000_003;
  return {
    electionId,
    shard: 1,
    epoch: epochs[1]!,
    watermarkBatchId: 1234,
    tallies: [5, 0, 17, 2 ** 40],
    voterSlots,
    bitmap: new Uint8Array(randomBytes(Math.ceil(voterSlots / 8))),
    takenAtMs: 1_700_000_000_123,
    ...overrides,
  };
}

async function commitVoters(voterNumbers: readonly number[]): Promise<number> {
  const rows: JournalRow[] = voterNumbers.map((voterNumber) => {
    const shard = voterNumber % shardCount;
    return { electionId, shard, epoch: epochs[shard]!, voterNumber, candidateIndex: voterNumber % 7, voteId: randomUUID(), acceptedAtMs: 1 };
  });
  const batchId = await batchIds.next();
  expect(await journal.commit({ batchId, rows })).toEqual({ kind: 'committed', conflicts: [] });
  return batchId;
}

async function readAfter(shard: number, afterBatchId: number): Promise<{ rows: { voterNumber: number; candidateIndex: number }[]; chunkSizes: number[] }> {
  const rows: { voterNumber: number; candidateIndex: number }[] = [];
  const chunkSizes: number[] = [];
  await store.readVotesAfter({ electionId, shard }, afterBatchId, (chunk) => {
    chunkSizes.push(chunk.length);
    rows.push(...chunk);
  });
  rows.sort((a, b) => a.voterNumber - b.voterNumber);
  return { rows, chunkSizes };
}

describe('PgSnapshotStore', () => {
  it('round-trips a snapshot: bitmap bytes exact, tallies, watermark, slots, epoch, time', async () => {
    const snapshot = snapshotOf();
    await store.writeSnapshot(snapshot);
    const read = await store.readLatestSnapshot({ electionId, shard: 1 });
    expect(read).not.toBeNull();
    expect(Buffer.from(read!.bitmap).equals(Buffer.from(snapshot.bitmap))).toBe(true);
    expect({ ...read!, bitmap: null }).toEqual({ ...snapshot, bitmap: null });
    expect(await store.readLatestSnapshot({ electionId, shard: 0 })).toBeNull();
    expect(await store.readLatestSnapshot({ electionId: 'not-a-uuid', shard: 0 })).toBeNull();
  });

  it('round-trips an empty bitmap and no tallies', async () => {
    const snapshot = snapshotOf({ voterSlots: 0, bitmap: new Uint8Array(0), tallies: [] });
    await store.writeSnapshot(snapshot);
    const read = await store.readLatestSnapshot({ electionId, shard: 1 });
    expect(read?.bitmap.length).toBe(0);
    expect(read?.tallies).toEqual([]);
  });

  it('keeps the latest: a newer snapshot replaces, an older one (lower watermark) does not', async () => {
    await store.writeSnapshot(snapshotOf({ watermarkBatchId: 10, tallies: [1] }));
    await store.writeSnapshot(snapshotOf({ watermarkBatchId: 20, tallies: [2] }));
    await store.writeSnapshot(snapshotOf({ watermarkBatchId: 15, tallies: [3] }));
    const read = await store.readLatestSnapshot({ electionId, shard: 1 });
    expect(read?.watermarkBatchId).toBe(20);
    expect(read?.tallies).toEqual([2]);
  });

  it('refuses a snapshot under a stale epoch or from a node that does not own the shard', async () => {
    const oldEpoch = epochs[1]!;
    epochs = await acquireShardLeases(db.pool, { electionId, shardCount, nodeId, leaseTtlMs: 60_000 });
    await expect(store.writeSnapshot(snapshotOf({ epoch: oldEpoch }))).rejects.toBeInstanceOf(SnapshotFencedError);
    const stranger = createPgSnapshotStore({ pool: db.pool, nodeId: 'someone-else' });
    await expect(stranger.writeSnapshot(snapshotOf())).rejects.toBeInstanceOf(SnapshotFencedError);
    await expect(store.writeSnapshot(snapshotOf({ electionId: randomUUID() }))).rejects.toBeInstanceOf(SnapshotFencedError);
    expect(await store.readLatestSnapshot({ electionId, shard: 1 })).toBeNull();
    // The store still works after refusals (connections rolled back and returned clean).
    await store.writeSnapshot(snapshotOf());
    expect((await store.readLatestSnapshot({ electionId, shard: 1 }))?.epoch).toBe(epochs[1]);
  });

  it('refuses an inconsistent snapshot before any I/O', async () => {
    await expect(store.writeSnapshot(snapshotOf({ voterSlots: 17, bitmap: new Uint8Array(2) }))).rejects.toThrow(/cannot cover/);
    await expect(store.writeSnapshot(snapshotOf({ tallies: [-1] }))).rejects.toThrow(/tallies/);
    await expect(store.writeSnapshot(snapshotOf({ shard: 1024 }))).rejects.toThrow(/key/);
  });

  it('readVotesAfter returns exactly the shard\'s rows after the watermark, in bounded chunks', async () => {
    const early = Array.from({ length: 3000 }, (_, i) => i);
    const late = Array.from({ length: 2500 }, (_, i) => 10_000 + i);
    const firstBatch = await commitVoters(early);
    const secondBatch = await commitVoters(late);
    const all = await readAfter(1, 0);
    expect(all.rows.map((r) => r.voterNumber)).toEqual([...early, ...late].filter((v) => v % 2 === 1));
    expect(all.rows.every((r) => r.candidateIndex === r.voterNumber % 7)).toBe(true);
    expect(Math.max(...all.chunkSizes)).toBeLessThanOrEqual(1000);
    const after = await readAfter(1, firstBatch);
    expect(after.rows.map((r) => r.voterNumber)).toEqual(late.filter((v) => v % 2 === 1));
    expect((await readAfter(0, secondBatch)).rows).toEqual([]);
    expect((await readAfter(0, firstBatch)).rows.map((r) => r.voterNumber)).toEqual(late.filter((v) => v % 2 === 0));
  });

  it('readElectionVotesAfter returns every shard\'s rows after its own watermark, in one scan', async () => {
    const first = await commitVoters([0, 1, 2, 3]);
    await commitVoters([4, 5, 6, 7]);
    const rows: { shard: number; voterNumber: number; candidateIndex: number }[] = [];
    // Shard 0 from the start, shard 1 after the first batch.
    await store.readElectionVotesAfter(electionId, [0, first], (chunk) => rows.push(...chunk));
    rows.sort((a, b) => a.voterNumber - b.voterNumber);
    expect(rows).toEqual([0, 2, 4, 5, 6, 7].map((v) => ({ shard: v % 2, voterNumber: v, candidateIndex: v % 7 })));
    await expect(store.readElectionVotesAfter(electionId, [], () => {})).rejects.toThrow(/watermarks/);
  });

  it('readVotesAfter rejects when onRows throws, and the store keeps working', async () => {
    await commitVoters([1, 3, 5]);
    await expect(
      store.readVotesAfter({ electionId, shard: 1 }, 0, () => {
        throw new Error('consumer failed');
      }),
    ).rejects.toThrow('consumer failed');
    expect((await readAfter(1, 0)).rows.length).toBe(3);
  });
});

describe('voteRowParser', () => {
  it('parses COPY text split at every possible byte boundary', () => {
    const text = Buffer.from('0\t3\n12345678901\t63\n7\t0\n');
    const expected = [
      { voterNumber: 0, candidateIndex: 3 },
      { voterNumber: 12345678901, candidateIndex: 63 },
      { voterNumber: 7, candidateIndex: 0 },
    ];
    for (let split = 0; split <= text.length; split++) {
      const rows: { voterNumber: number; candidateIndex: number }[] = [];
      const parser = voteRowParser(2, (chunk) => rows.push(...chunk));
      parser.push(text.subarray(0, split));
      parser.push(text.subarray(split));
      parser.end();
      expect(rows).toEqual(expected);
    }
  });

  it('refuses malformed input', () => {
    expect(() => voteRowParser(10, () => {}).push(Buffer.from('1\t\n'))).toThrow();
    expect(() => voteRowParser(10, () => {}).push(Buffer.from('-1\t2\n'))).toThrow();
    expect(() => voteRowParser(10, () => {}).push(Buffer.from('12345678901234567\t2\n'))).toThrow();
    const parser = voteRowParser(10, () => {});
    parser.push(Buffer.from('1\t2'));
    expect(() => parser.end()).toThrow(/middle of a row/);
  });
});
