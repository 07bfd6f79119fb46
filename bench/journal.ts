// Throughput of the durable journal: rows/s committed through PgJournal (fence + insert + audit
// digests + batch record, one transaction per batch), with a fixed number of commits in flight, as
// the node's group committer runs it, and the audit sealer running beside them as in a node
// (persistence/auditSealer.ts, every second). Not a test: prints a figure.
//
//   DATABASE_URL=postgres://postgres@127.0.0.1:5432/test node --import tsx bench/journal.ts
//   options (env): BENCH_ROWS (200000), BENCH_BATCH_ROWS (2000), BENCH_IN_FLIGHT (2), BENCH_SHARDS (16)
//
// Runs in a throwaway database created on the server of DATABASE_URL (dropped at the end).
import { randomUUID } from 'node:crypto';
import type { JournalRow } from '../actors/ports.ts';
import { acquireShardLeases } from '../cluster/leases.ts';
import { createAuditSealer } from '../persistence/auditSealer.ts';
import { createPgBatchIdSource } from '../persistence/batchIds.ts';
import { createTestDatabase } from '../persistence/testDatabase.ts';
import { createPgJournal } from '../persistence/voteJournal.ts';
import { intFromEnv, shuffledRange } from './lib/common.ts';

const rowsTotal = intFromEnv('BENCH_ROWS', 200_000, 10_000_000);
const batchRows = intFromEnv('BENCH_BATCH_ROWS', 2000, 100_000);
const inFlightMax = intFromEnv('BENCH_IN_FLIGHT', 2, 16);
const shardCount = intFromEnv('BENCH_SHARDS', 16, 1024);
const nodeId = 'bench-node';

const db = await createTestDatabase({ poolMax: inFlightMax + 2 });
try {
  const electionId = randomUUID();
  const epochs = await acquireShardLeases(db.pool, { electionId, shardCount, nodeId, leaseTtlMs: 600_000 });
  const journal = createPgJournal({ pool: db.pool, nodeId });
  const batchIds = await createPgBatchIdSource({ pool: db.pool });

  // Voters in a shuffled order, as real votes arrive: primary-key inserts land all over the index.
  const voters = shuffledRange(rowsTotal);
  const acceptedAtMs = Date.now();
  const batches: JournalRow[][] = [];
  for (let start = 0; start < rowsTotal; start += batchRows) {
    batches.push(
      voters.slice(start, start + batchRows).map((voterNumber) => {
        const shard = voterNumber % shardCount;
        return { electionId, shard, epoch: epochs[shard]!, voterNumber, candidateIndex: voterNumber % 5, voteId: randomUUID(), acceptedAtMs };
      }),
    );
  }

  let nextBatch = 0;
  const latenciesMs: number[] = [];
  const sealer = createAuditSealer({ pool: db.pool });
  sealer.start();
  const startedAt = performance.now();
  async function worker(): Promise<void> {
    while (nextBatch < batches.length) {
      const rows = batches[nextBatch++]!;
      const t0 = performance.now();
      const result = await journal.commit({ batchId: await batchIds.next(), rows });
      latenciesMs.push(performance.now() - t0);
      if (result.kind !== 'committed' || result.conflicts.length > 0) throw new Error(`unexpected outcome: ${JSON.stringify(result).slice(0, 200)}`);
    }
  }
  await Promise.all(Array.from({ length: inFlightMax }, () => worker()));
  // The last batches sealed too: a node's stop does that.
  await sealer.stop();
  const elapsedS = (performance.now() - startedAt) / 1000;
  if (sealer.stats().failures > 0 || sealer.stats().batches !== batches.length) throw new Error(`the sealer: ${JSON.stringify(sealer.stats())}`);

  const stored = (await db.pool.query<{ n: number }>('SELECT count(*) AS n FROM votes')).rows[0]!.n;
  if (stored !== rowsTotal) throw new Error(`stored ${stored} rows, expected ${rowsTotal}`);
  latenciesMs.sort((a, b) => a - b);
  const pct = (p: number) => latenciesMs[Math.min(latenciesMs.length - 1, Math.floor(p * latenciesMs.length))]!.toFixed(1);
  console.log(
    JSON.stringify({
      rowsTotal,
      batchRows,
      inFlightMax,
      shardCount,
      elapsedS: Number(elapsedS.toFixed(2)),
      rowsPerS: Math.round(rowsTotal / elapsedS),
      commitLatencyMsP50: Number(pct(0.5)),
      commitLatencyMsP99: Number(pct(0.99)),
    }),
  );
} finally {
  await db.drop();
}
