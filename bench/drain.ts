// Drain rate: votes/s the spill drainer replays from the queue into Postgres once Postgres answers
// again (issue 15), through the real path: a vote node hosting the election's shards, its drainer
// (receive, the fenced per-shard store in PgJournal.storeSpilled, the shards told, ack), the file
// queue (fsynced segments, embedded mode's) or SQS (local-aws-sqs in this process). Not a test:
// prints figures.
//
//   DATABASE_URL=postgres://postgres@127.0.0.1:5432/test node --import tsx bench/drain.ts
//   options (env): BENCH_QUEUE (file | sqs), BENCH_VOTES (100000), BENCH_BATCH_ROWS (500), BENCH_SHARDS (16)
//
// The queue is filled first (what a stall of Postgres leaves behind), then timed from the first
// receive to the last ack; every vote must then be stored once and counted.
import { randomUUID } from 'node:crypto';
import { mkdtemp, rm } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import type { JournalRow, SpillQueue } from '../actors/ports.ts';
import { createVoteNode } from '../actors/voteNode.ts';
import { acquireShardLeases } from '../cluster/leases.ts';
import { startLocalSqs } from '../infra/testing/localSqs.ts';
import { createPgBatchIdSource } from '../persistence/batchIds.ts';
import { openFileSpillQueue } from '../persistence/fileSpillQueue.ts';
import { createPgSnapshotStore } from '../persistence/snapshots.ts';
import { createSqsSpillQueue, ensureSqsSpillQueues } from '../persistence/sqsSpillQueue.ts';
import { createPgStoredVoteReader } from '../persistence/storedVotes.ts';
import { createTestDatabase } from '../persistence/testDatabase.ts';
import { createPgJournal } from '../persistence/voteJournal.ts';
import { intFromEnv, shuffledRange } from './lib/common.ts';

const queueKind = process.env.BENCH_QUEUE ?? 'file';
if (queueKind !== 'file' && queueKind !== 'sqs') throw new Error('BENCH_QUEUE must be file or sqs');
const votesTotal = intFromEnv('BENCH_VOTES', 100_000, 10_000_000);
const batchRows = intFromEnv('BENCH_BATCH_ROWS', 500, 4_000);
const shardCount = intFromEnv('BENCH_SHARDS', 16, 1024);
const candidateCount = 5;
const nodeId = 'bench-drain-node';

const db = await createTestDatabase({ poolMax: 4 });
const spillDir = await mkdtemp(path.join(os.tmpdir(), 'lv-bench-drain-'));
let closeSqs: (() => void) | undefined;
try {
  let queue: SpillQueue;
  if (queueKind === 'file') {
    queue = await openFileSpillQueue({ dir: spillDir });
  } else {
    const sqs = await startLocalSqs();
    if ('absent' in sqs) throw new Error(sqs.absent);
    closeSqs = () => sqs.server.close();
    const urls = await ensureSqsSpillQueues(sqs.client, `bench-drain-${process.pid}`);
    queue = createSqsSpillQueue({ ...urls, client: sqs.client, requestTimeoutMs: 30_000 });
  }
  const electionId = randomUUID();
  const epochs = await acquireShardLeases(db.pool, { electionId, shardCount, nodeId, leaseTtlMs: 600_000 });
  const journal = createPgJournal({ pool: db.pool, nodeId });
  const batchIds = await createPgBatchIdSource({ pool: db.pool });
  // Where the drain's time goes: the store (Postgres), and the queue's receive and ack.
  const spentMs = { store: 0, receive: 0, ack: 0 };
  const timed = <T>(what: keyof typeof spentMs, run: () => Promise<T>): Promise<T> => {
    const t0 = performance.now();
    return run().finally(() => { spentMs[what] += performance.now() - t0; });
  };
  const timedQueue: SpillQueue = {
    ...queue,
    send: (batch) => queue.send(batch),
    receive: (max, leaseMs) => timed('receive', () => queue.receive(max, leaseMs)),
    ack: (receipt) => timed('ack', () => queue.ack(receipt)),
    release: (receipt) => queue.release(receipt),
    deadLetter: (receipt, reason) => queue.deadLetter(receipt, reason),
    depth: () => queue.depth(),
    deadLetterCount: () => queue.deadLetterCount(),
    close: () => queue.close(),
  };
  const node = createVoteNode({
    journal,
    spill: { queue: timedQueue, store: { storeSpilled: (batch, held) => timed('store', () => journal.storeSpilled(batch, held)) } },
    snapshots: createPgSnapshotStore({ pool: db.pool, nodeId }),
    storedVotes: createPgStoredVoteReader(db.pool),
    batchIds,
    // Only the timed call drains: the periodic drainer would start on the fill.
    config: { spillAfterMs: 1_000, drainIntervalMs: 3_600_000, snapshotIntervalMs: 3_600_000 },
  });
  await node.openElection({ electionId, shardCount, candidateCount, epochs });

  // What a stall leaves: batches of one node's group commit, rows of every shard, voters in a
  // shuffled order (primary-key inserts land all over the index, as live votes do).
  const voters = shuffledRange(votesTotal);
  const acceptedAtMs = Date.now();
  const fillStartedAt = performance.now();
  for (let start = 0; start < votesTotal; start += batchRows) {
    const rows: JournalRow[] = voters.slice(start, start + batchRows).map((voterNumber) => {
      const shard = voterNumber % shardCount;
      return { electionId, shard, epoch: epochs[shard]!, voterNumber, candidateIndex: voterNumber % candidateCount, voteId: randomUUID(), acceptedAtMs };
    });
    await queue.send({ batchId: await batchIds.next(), rows, spilledAtMs: Date.now() });
  }
  const fillS = (performance.now() - fillStartedAt) / 1000;
  const batches = Math.ceil(votesTotal / batchRows);

  const startedAt = performance.now();
  const report = await node.drainSpillQueue(Date.now() + 3_600_000);
  const drainS = (performance.now() - startedAt) / 1000;

  const stored = Number((await db.pool.query<{ n: string }>('SELECT count(*) AS n FROM votes WHERE election_id = $1', [electionId])).rows[0]!.n);
  if (stored !== votesTotal) throw new Error(`stored ${stored} votes, expected ${votesTotal}`);
  if (report.batches !== batches) throw new Error(`drained ${report.batches} batches, expected ${batches}`);
  if ((await queue.depth()).batches !== 0) throw new Error('the queue is not empty after the drain');
  // The shards were told: the drained votes are counted.
  await new Promise((resolve) => setTimeout(resolve, 200));
  const counted = node.results(electionId)?.total;
  if (counted !== votesTotal) throw new Error(`counted ${counted} votes, expected ${votesTotal}`);
  console.log(
    `drain (${queueKind} queue): ${votesTotal} votes in ${batches} batches of ${batchRows} rows over ${shardCount} shards: ` +
      `${Math.round(votesTotal / drainS)} votes/s (${Math.round(batches / drainS)} batches/s, ${drainS.toFixed(2)} s); ` +
      `time in store ${(spentMs.store / 1000).toFixed(2)} s, receive ${(spentMs.receive / 1000).toFixed(2)} s, ack ${(spentMs.ack / 1000).toFixed(2)} s; ` +
      `filling the queue took ${fillS.toFixed(2)} s (${Math.round(votesTotal / fillS)} votes/s); every vote stored once and counted`,
  );
  await node.close();
  await queue.close();
} finally {
  closeSqs?.();
  await db.drop();
  await rm(spillDir, { recursive: true, force: true });
}
