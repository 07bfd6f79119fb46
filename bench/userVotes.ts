// The status route's list of a user's votes (GET /api/v1/votes/status/{userId} without electionId)
// reads one votes-primary-key probe per election (persistence/storedVotes.ts readUserVotes) instead
// of a second index on votes. This measures both sides of that choice:
//   1. the read: latency of a first page for a user who voted in every election and for one who
//      voted in none (the probes are the same; only the sort differs), with its buffer counts;
//   2. the write it saves: PgJournal rows/s and WAL bytes per row into the same filled table, with
//      and without the index the read would otherwise need, (voter_number, accepted_at, election_id),
//      alternated so a busy machine disturbs both alike.
//
// Setup, in a throwaway database on the server of DATABASE_URL (dropped at the end): ELECTIONS
// elections with two candidates, VOTERS users who each voted in every election (votes by
// generate_series, not through the journal: this is a read fixture). Prints one JSON line.
//
//   DATABASE_URL=postgres://… node --import tsx bench/userVotes.ts
//   options (env): USERVOTES_ELECTIONS (1000), USERVOTES_VOTERS (5000), USERVOTES_READS (200),
//                  USERVOTES_JOURNAL_ROWS (100000), USERVOTES_ROUNDS (2)
import { randomUUID } from 'node:crypto';
import type { JournalRow } from '../actors/ports.ts';
import { acquireShardLeases } from '../cluster/leases.ts';
import { createPgBatchIdSource } from '../persistence/batchIds.ts';
import type { Pool } from '../persistence/db.ts';
import { readUserVotes, selectUserVotes } from '../persistence/storedVotes.ts';
import { createTestDatabase } from '../persistence/testDatabase.ts';
import { createPgJournal } from '../persistence/voteJournal.ts';
import { intFromEnv, shuffledRange } from './lib/common.ts';

const electionsTotal = intFromEnv('USERVOTES_ELECTIONS', 1000, 100_000);
const votersTotal = intFromEnv('USERVOTES_VOTERS', 5000, 1_000_000);
const readsTotal = intFromEnv('USERVOTES_READS', 200, 100_000);
const journalRows = intFromEnv('USERVOTES_JOURNAL_ROWS', 100_000, 10_000_000);
const rounds = intFromEnv('USERVOTES_ROUNDS', 2, 10);
const batchRows = 2000;
const nodeId = 'bench-user-votes';
const indexSql = 'CREATE INDEX bench_votes_by_voter ON votes (voter_number, accepted_at DESC, election_id DESC)';

const percentile = (sorted: number[], p: number) => Number(sorted[Math.min(sorted.length - 1, Math.floor(p * sorted.length))]!.toFixed(2));

async function timeReads(pool: Pool, userId: string): Promise<{ p50Ms: number; p99Ms: number; votes: number }> {
  const latenciesMs: number[] = [];
  let votes = 0;
  for (let i = 0; i < readsTotal; i++) {
    const t0 = performance.now();
    const page = await readUserVotes(pool, userId, { limit: 20 });
    latenciesMs.push(performance.now() - t0);
    if (page.kind !== 'found') throw new Error(`unexpected ${page.kind}`);
    votes = page.value.votes.length;
  }
  latenciesMs.sort((a, b) => a - b);
  return { p50Ms: percentile(latenciesMs, 0.5), p99Ms: percentile(latenciesMs, 0.99), votes };
}

interface PlanNode { 'Node Type': string; 'Relation Name'?: string; 'Index Name'?: string; Plans?: PlanNode[]; 'Shared Hit Blocks': number; 'Shared Read Blocks': number }

/** The real statement's plan: buffers touched (shared hit + read) and how it reads votes. */
async function planOf(pool: Pool, userId: string): Promise<{ buffers: number; votesAccess: string[] }> {
  const plan = await pool.query<{ 'QUERY PLAN': [{ Plan: PlanNode }] }>(
    `EXPLAIN (ANALYZE, BUFFERS, FORMAT JSON) ${selectUserVotes.text}`,
    [userId, null, null, 21],
  );
  const top = plan.rows[0]!['QUERY PLAN'][0].Plan;
  const votesAccess: string[] = [];
  const walk = (node: PlanNode) => {
    if (node['Relation Name'] === 'votes') votesAccess.push(`${node['Node Type']}${node['Index Name'] ? ` using ${node['Index Name']}` : ''}`);
    for (const child of node.Plans ?? []) walk(child);
  };
  walk(top);
  return { buffers: top['Shared Hit Blocks'] + top['Shared Read Blocks'], votesAccess };
}

async function journalRun(pool: Pool): Promise<{ rowsPerS: number; walBytesPerRow: number }> {
  const electionId = randomUUID();
  const [epoch] = await acquireShardLeases(pool, { electionId, shardCount: 1, nodeId, leaseTtlMs: 600_000 });
  const journal = createPgJournal({ pool, nodeId });
  const batchIds = await createPgBatchIdSource({ pool });
  const voters = shuffledRange(journalRows);
  const acceptedAtMs = Date.now();
  const batches: JournalRow[][] = [];
  for (let start = 0; start < journalRows; start += batchRows) {
    batches.push(voters.slice(start, start + batchRows).map((voterNumber) => ({
      electionId, shard: 0, epoch: epoch!, voterNumber, candidateIndex: voterNumber % 2, voteId: randomUUID(), acceptedAtMs,
    })));
  }
  const walBefore = (await pool.query<{ lsn: string }>('SELECT pg_current_wal_lsn()::text AS lsn')).rows[0]!.lsn;
  let next = 0;
  const startedAt = performance.now();
  const worker = async () => {
    while (next < batches.length) {
      const rows = batches[next++]!;
      const result = await journal.commit({ batchId: await batchIds.next(), rows });
      if (result.kind !== 'committed') throw new Error(`unexpected outcome ${result.kind}`);
    }
  };
  await Promise.all([worker(), worker()]);
  const elapsedS = (performance.now() - startedAt) / 1000;
  const wal = await pool.query<{ bytes: string }>('SELECT pg_wal_lsn_diff(pg_current_wal_lsn(), $1::pg_lsn)::text AS bytes', [walBefore]);
  return { rowsPerS: Math.round(journalRows / elapsedS), walBytesPerRow: Math.round(Number(wal.rows[0]!.bytes) / journalRows) };
}

const db = await createTestDatabase({ poolMax: 4 });
try {
  const pool = db.pool;
  await pool.query(
    `INSERT INTO users (user_id, email_hash, password_hash)
     SELECT gen_random_uuid(), sha256(int8send(i)), '!' FROM generate_series(0, $1::int - 1) AS i`,
    [votersTotal + 1],
  );
  const electionIds = Array.from({ length: electionsTotal }, () => randomUUID());
  await pool.query(
    `INSERT INTO elections (election_id, title, status, shard_count) SELECT id, 'bench', 'closed', 1 FROM unnest($1::uuid[]) AS id`,
    [electionIds],
  );
  await pool.query(
    `INSERT INTO candidates (election_id, candidate_index, candidate_id, name)
     SELECT id, i, gen_random_uuid(), 'c' FROM unnest($1::uuid[]) AS id, generate_series(0, 1) AS i`,
    [electionIds],
  );
  // Election by election, so each insert stays a bounded statement.
  for (const [n, electionId] of electionIds.entries()) {
    await pool.query(
      `INSERT INTO votes (election_id, voter_number, candidate_index, shard, epoch, batch_id, vote_id, accepted_at)
       SELECT $1, u.voter_number, u.voter_number % 2, 0, 1, 1, gen_random_uuid(), now() - make_interval(secs => $2::int)
         FROM users u WHERE u.voter_number < $3`,
      [electionId, electionsTotal - n, votersTotal],
    );
  }
  await pool.query('ANALYZE');
  const userOf = async (voterNumber: number) =>
    (await pool.query<{ user_id: string }>('SELECT user_id::text FROM users WHERE voter_number = $1', [voterNumber])).rows[0]!.user_id;
  const voted = await userOf(0);
  const none = await userOf(votersTotal);
  const votesStored = electionsTotal * votersTotal;

  await timeReads(pool, voted); // warm-up
  const readVotedInAll = { ...(await timeReads(pool, voted)), ...(await planOf(pool, voted)) };
  const readVotedInNone = { ...(await timeReads(pool, none)), ...(await planOf(pool, none)) };

  const withoutIndex: { rowsPerS: number; walBytesPerRow: number }[] = [];
  const withIndex: { rowsPerS: number; walBytesPerRow: number }[] = [];
  for (let round = 0; round < rounds; round++) {
    withoutIndex.push(await journalRun(pool));
    await pool.query(indexSql);
    withIndex.push(await journalRun(pool));
    await pool.query('DROP INDEX bench_votes_by_voter');
  }
  const mean = (runs: { rowsPerS: number }[]) => Math.round(runs.reduce((sum, r) => sum + r.rowsPerS, 0) / runs.length);
  console.log(JSON.stringify({
    electionsTotal, votersTotal, votesStored, readsTotal,
    firstPageLimit20: { votedInEveryElection: readVotedInAll, votedInNone: readVotedInNone },
    journal: {
      rowsPerRun: journalRows,
      withoutIndex, withIndex,
      rowsPerSWithoutIndex: mean(withoutIndex), rowsPerSWithIndex: mean(withIndex),
    },
  }));
} finally {
  await db.drop();
}
