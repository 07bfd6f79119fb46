// Recovery: how long the real recovery path (VoteNode.openElection on the Postgres adapters:
// latest snapshot per shard, then the stored votes after its watermark) takes to rebuild the
// shards of an election holding RECOVERY_VOTES stored votes (npm run bench: 1M).
//
// Setup, in a throwaway database on the server of DATABASE_URL (dropped at the end): the votes
// table (the product's migrations) filled with RECOVERY_VOTES rows by generate_series, voters
// 0..N-1 spread over the shards as the gateway does (shard = voter % shards), batch ids rising in
// batches of RECOVERY_BATCH_ROWS; then one snapshot per shard written through PgSnapshotStore
// (fenced by real leases), covering the first RECOVERY_SNAPSHOT_FRACTION of the votes. The rest
// is the tail recovery must replay.
//
// Prints one line: BENCH_RECOVERY_JSON {...}. Also, with RECOVERY_FULL_REPLAY=1, the time to
// recover the same election with no snapshot at all (everything replayed).
//
//   DATABASE_URL=postgres://… node --import tsx bench/recovery.ts
import { PagedBitmap } from '../actors/bitmap.ts';
import { createVoteNode } from '../actors/voteNode.ts';
import { acquireShardLeases } from '../cluster/leases.ts';
import { createPgBatchIdSource } from '../persistence/batchIds.ts';
import { createPgSnapshotStore } from '../persistence/snapshots.ts';
import { createPgStoredVoteReader } from '../persistence/storedVotes.ts';
import { createTestDatabase } from '../persistence/testDatabase.ts';
import { createPgJournal } from '../persistence/voteJournal.ts';
import { randomUUID } from 'node:crypto';
import { intFromEnv } from './lib/common.ts';

const votesTotal = intFromEnv('RECOVERY_VOTES', 10_000_000, 100_000_000);
const shardCount = intFromEnv('RECOVERY_SHARDS', 16, 1024);
const candidateCount = intFromEnv('RECOVERY_CANDIDATES', 5, 64);
const batchRows = intFromEnv('RECOVERY_BATCH_ROWS', 2000, 100_000);
const snapshotFraction = Number(process.env.RECOVERY_SNAPSHOT_FRACTION ?? 0.9);
if (!(snapshotFraction >= 0 && snapshotFraction <= 1)) throw new Error('RECOVERY_SNAPSHOT_FRACTION must be 0..1');
const fullReplay = process.env.RECOVERY_FULL_REPLAY === '1';
const insertChunkRows = 1_000_000;
const nodeId = 'bench-recovery';
/** Same as LIVEVOTE_DB_POOL_MAX's default: the pool a node recovers with. */
const poolMax = 10;

const log = (line: string) => process.stderr.write(`  recovery: ${line}\n`);
const db = await createTestDatabase({ poolMax });
try {
  const { pool } = db;
  const electionId = randomUUID();
  const epochs = await acquireShardLeases(pool, { electionId, shardCount, nodeId, leaseTtlMs: 600_000, takeOver: 'any' });
  const epochArray = `'{${epochs.join(',')}}'::bigint[]`;

  const insertStarted = performance.now();
  // Loaded without its two indexes, which are then built as the migrations define them: the same
  // table, in a fraction of the time (a sorted index build instead of a million index inserts).
  await pool.query('ALTER TABLE votes DROP CONSTRAINT votes_pkey');
  await pool.query('DROP INDEX votes_recovery');
  for (let first = 0; first < votesTotal; first += insertChunkRows) {
    const last = Math.min(votesTotal, first + insertChunkRows) - 1;
    await pool.query(
      `INSERT INTO votes (election_id, voter_number, candidate_index, shard, epoch, batch_id, vote_id, accepted_at)
       SELECT $1, v, v % ${candidateCount}, v % ${shardCount}, (${epochArray})[v % ${shardCount} + 1], 1 + v / ${batchRows}, gen_random_uuid(), now()
         FROM generate_series(${first}::bigint, ${last}::bigint) AS v`,
      [electionId],
    );
    log(`${last + 1} rows inserted`);
  }
  await pool.query('ALTER TABLE votes ADD CONSTRAINT votes_pkey PRIMARY KEY (election_id, voter_number)');
  await pool.query('CREATE INDEX votes_recovery ON votes (election_id, shard, batch_id)');
  await pool.query('ANALYZE votes');
  const insertS = (performance.now() - insertStarted) / 1000;

  // Votes with batch_id <= watermark are v < watermark * batchRows.
  const watermarkBatchId = Math.floor((votesTotal * snapshotFraction) / batchRows);
  const coveredVotes = Math.min(votesTotal, watermarkBatchId * batchRows);
  const snapshotStarted = performance.now();
  const snapshots = createPgSnapshotStore({ pool, nodeId });
  let snapshotBytes = 0;
  for (let shard = 0; shard < shardCount; shard++) {
    const bitmap = new PagedBitmap();
    const tallies = new Array<number>(candidateCount).fill(0);
    for (let v = shard; v < coveredVotes; v += shardCount) {
      bitmap.set(Math.floor(v / shardCount));
      tallies[v % candidateCount]!++;
    }
    const bytes = bitmap.exportBytes();
    snapshotBytes += bytes.byteLength;
    await snapshots.writeSnapshot({
      electionId, shard, epoch: epochs[shard]!, watermarkBatchId, tallies, voterSlots: bitmap.voterSlots(), bitmap: bytes, takenAtMs: Date.now(),
    });
  }
  const snapshotWriteS = (performance.now() - snapshotStarted) / 1000;
  log(`snapshots of ${shardCount} shards written (${coveredVotes} votes covered, watermark batch ${watermarkBatchId})`);

  const recover = async (): Promise<{ seconds: number; total: number; tallies: readonly number[]; rowsReplayed: number }> => {
    const leaseEpochs = await acquireShardLeases(pool, { electionId, shardCount, nodeId, leaseTtlMs: 600_000, takeOver: 'any' });
    const node = createVoteNode({
      journal: createPgJournal({ pool, nodeId }),
      snapshots: createPgSnapshotStore({ pool, nodeId }),
      storedVotes: createPgStoredVoteReader(pool),
      batchIds: await createPgBatchIdSource({ pool }),
      config: { snapshotIntervalMs: 3_600_000 },
    });
    const started = performance.now();
    await node.openElection({ electionId, shardCount, candidateCount, epochs: leaseEpochs });
    const seconds = (performance.now() - started) / 1000;
    const stats = node.stats(electionId);
    if (!stats) throw new Error('election not open after recovery');
    const rowsReplayed = stats.shards.reduce((sum, shard) => sum + shard.counters.rowsReplayed, 0);
    await node.close();
    return { seconds, total: stats.results.total, tallies: stats.results.tallies, rowsReplayed };
  };

  const expectedTallies = Array.from({ length: candidateCount }, (_, c) => Math.floor((votesTotal - 1 - c) / candidateCount) + 1);
  const check = (label: string, result: { total: number; tallies: readonly number[] }) => {
    if (result.total !== votesTotal || expectedTallies.some((t, c) => result.tallies[c] !== t)) {
      throw new Error(`${label}: recovered ${result.total} votes / tallies ${JSON.stringify(result.tallies)}, expected ${votesTotal} / ${JSON.stringify(expectedTallies)}`);
    }
  };
  const withSnapshot = await recover();
  check('snapshot + tail', withSnapshot);
  log(`snapshot + tail: ${withSnapshot.seconds.toFixed(2)} s (${withSnapshot.rowsReplayed} rows replayed)`);

  let noSnapshot: Awaited<ReturnType<typeof recover>> | undefined;
  if (fullReplay) {
    await pool.query('DELETE FROM shard_snapshots WHERE election_id = $1', [electionId]);
    noSnapshot = await recover();
    check('no snapshot', noSnapshot);
    log(`no snapshot (full replay): ${noSnapshot.seconds.toFixed(2)} s`);
  }

  const serverVersion = (await pool.query<{ v: string }>('SHOW server_version')).rows[0]!.v;
  process.stdout.write(
    `BENCH_RECOVERY_JSON ${JSON.stringify({
      votesTotal, shardCount, candidateCount, batchRows, snapshotFraction, watermarkBatchId, coveredVotes,
      tailVotes: votesTotal - coveredVotes, snapshotBytes, insertS, snapshotWriteS,
      recoveryS: withSnapshot.seconds, rowsReplayed: withSnapshot.rowsReplayed,
      fullReplayS: noSnapshot?.seconds ?? null, fullReplayRows: noSnapshot?.rowsReplayed ?? null, serverVersion,
    })}\n`,
  );
} finally {
  await db.drop();
}
