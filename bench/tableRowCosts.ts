// What a stored row costs Postgres in the two tables every vote writes, part by part, measured
// by building each table again without that part: `votes` (the journal's INSERT … FROM unnest, 7
// arrays, BENCH_ROWS rows a commit) with and without its recovery index, its CHECK constraints,
// or with a BRIN index on batch_id in place of the recovery index; `vote_metadata` (COPY,
// BENCH_COPY_ROWS rows a COPY) with and without its voter index and CHECKs, and as a bare heap.
// The metadata goes in COPY's text format here, the same in every variant; the recorder writes the
// binary one since the fifteenth look (bench/README.md), which parses less (~0.9 µs a row, measured
// by bench/metadataStall.ts) and leaves these differences as they are.
// Postgres CPU is the backend's own (/proc/<pid>/stat of the one connection), variants alternate
// in rounds. Not part of `npm run bench`: prints a markdown table. These are the tables' own costs;
// bench/journalFeatures.ts measures the commit statement's parts (fence, audit digests) on top.
//
//   DATABASE_URL=postgres://postgres@127.0.0.1:5432/test node --import tsx bench/tableRowCosts.ts
//   options (env): BENCH_ROWS (48: a batch at 100 connections), BENCH_COMMITS (400 per variant
//   and round), BENCH_COPY_ROWS (5,000), BENCH_COPIES (10 per variant and round), BENCH_ROUNDS (4)
//
// Runs in a throwaway database created on the server of DATABASE_URL (dropped at the end).
import { randomBytes, randomUUID } from 'node:crypto';
import { Readable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { from as copyFrom } from 'pg-copy-streams';
import { createTestDatabase } from '../persistence/testDatabase.ts';
import { intFromEnv } from './lib/common.ts';
import { processCpuS } from './lib/proc.ts';

const rowsPerCommit = intFromEnv('BENCH_ROWS', 48, 10_000);
const commits = intFromEnv('BENCH_COMMITS', 400, 100_000);
const copyRows = intFromEnv('BENCH_COPY_ROWS', 5_000, 1_000_000);
const copies = intFromEnv('BENCH_COPIES', 10, 10_000);
const rounds = intFromEnv('BENCH_ROUNDS', 4, 100);

const voteColumns = `election_id uuid NOT NULL, voter_number bigint NOT NULL, candidate_index smallint NOT NULL, shard integer NOT NULL,
  epoch bigint NOT NULL, batch_id bigint NOT NULL, vote_id uuid NOT NULL, accepted_at timestamptz NOT NULL`;
const voteChecks = ', CHECK (voter_number >= 0), CHECK (candidate_index BETWEEN 0 AND 63), CHECK (shard BETWEEN 0 AND 1023), CHECK (epoch >= 1)';
const voteVariants: Record<string, { what: string; ddl: string[] }> = {
  votes: { what: 'as migration 002 has it: primary key, recovery index, CHECKs', ddl: [`CREATE TABLE t_votes (${voteColumns}${voteChecks}, PRIMARY KEY (election_id, voter_number))`, 'CREATE INDEX ON t_votes (election_id, shard, batch_id)'] },
  votes_no_recovery_index: { what: 'without the recovery index', ddl: [`CREATE TABLE t_votes_no_recovery_index (${voteColumns}${voteChecks}, PRIMARY KEY (election_id, voter_number))`] },
  votes_no_checks: { what: 'without the CHECK constraints', ddl: [`CREATE TABLE t_votes_no_checks (${voteColumns}, PRIMARY KEY (election_id, voter_number))`, 'CREATE INDEX ON t_votes_no_checks (election_id, shard, batch_id)'] },
  votes_brin_batch: { what: 'a BRIN index on batch_id in place of the recovery index', ddl: [`CREATE TABLE t_votes_brin_batch (${voteColumns}${voteChecks}, PRIMARY KEY (election_id, voter_number))`, 'CREATE INDEX ON t_votes_brin_batch USING brin (batch_id)'] },
};
const metadataColumns = 'election_id uuid NOT NULL, voter_number bigint NOT NULL, ip_hash bytea NOT NULL, network_hash bytea NOT NULL, ua_family text NOT NULL, recorded_at timestamptz NOT NULL';
const metadataChecks = ', CHECK (voter_number >= 0), CHECK (octet_length(ip_hash) = 16), CHECK (octet_length(network_hash) = 16), CHECK (length(ua_family) BETWEEN 1 AND 40)';
const metadataVariants: Record<string, { what: string; ddl: string[] }> = {
  metadata: { what: 'as migration 005 has it: voter index, BRIN on recorded_at, CHECKs', ddl: [`CREATE TABLE t_metadata (${metadataColumns}${metadataChecks})`, 'CREATE INDEX ON t_metadata (voter_number)', 'CREATE INDEX ON t_metadata USING brin (recorded_at)'] },
  metadata_no_voter_index: { what: 'without the voter index', ddl: [`CREATE TABLE t_metadata_no_voter_index (${metadataColumns}${metadataChecks})`, 'CREATE INDEX ON t_metadata_no_voter_index USING brin (recorded_at)'] },
  metadata_no_checks: { what: 'without the CHECK constraints', ddl: [`CREATE TABLE t_metadata_no_checks (${metadataColumns})`, 'CREATE INDEX ON t_metadata_no_checks (voter_number)', 'CREATE INDEX ON t_metadata_no_checks USING brin (recorded_at)'] },
  metadata_heap_only: { what: 'the bare heap: no index, no CHECK', ddl: [`CREATE TABLE t_metadata_heap_only (${metadataColumns})`] },
};

const db = await createTestDatabase({ poolMax: 1 });
try {
  const client = await db.pool.connect();
  try {
    for (const variant of [...Object.values(voteVariants), ...Object.values(metadataVariants)]) for (const statement of variant.ddl) await client.query(statement);
    const pid = (await client.query<{ pid: number }>('SELECT pg_backend_pid() AS pid')).rows[0]!.pid;
    const electionId = randomUUID();
    const ipHashText = `\\\\x${randomBytes(16).toString('hex')}`;
    const networkHashText = `\\\\x${randomBytes(16).toString('hex')}`;
    let voter = 0;
    let batchId = 0;
    /** The backend's CPU seconds, by variant. */
    const backendSOf: Record<string, number> = {};
    for (let round = 0; round < rounds; round++) {
      for (const name of Object.keys(voteVariants)) {
        const before = processCpuS(pid);
        for (let c = 0; c < commits; c++) {
          const columns: unknown[][] = [[], [], [], [], [], [], []];
          for (let r = 0; r < rowsPerCommit; r++) {
            voter++;
            const row = [electionId, voter, voter % 4, voter % 8, 1, randomUUID(), Date.now()];
            for (let k = 0; k < row.length; k++) columns[k]!.push(row[k]);
          }
          await client.query({
            name: `insert_${name}`,
            text: `INSERT INTO t_${name} (election_id, voter_number, candidate_index, shard, epoch, batch_id, vote_id, accepted_at)
                   SELECT election_id, voter_number, candidate_index, shard, epoch, $1, vote_id, to_timestamp(accepted_at_ms::float8 / 1000)
                     FROM unnest($2::uuid[], $3::bigint[], $4::smallint[], $5::integer[], $6::bigint[], $7::uuid[], $8::bigint[])
                          AS i(election_id, voter_number, candidate_index, shard, epoch, vote_id, accepted_at_ms)`,
            values: [++batchId, ...columns],
          });
        }
        backendSOf[name] = (backendSOf[name] ?? 0) + processCpuS(pid) - before;
      }
      for (const name of Object.keys(metadataVariants)) {
        const before = processCpuS(pid);
        for (let c = 0; c < copies; c++) {
          const at = new Date().toISOString();
          let text = '';
          // Voter numbers in no order, as votes arrive: the voter index is inserted into at random places.
          for (let r = 0; r < copyRows; r++) text += `${electionId}\t${(voter = (voter + 7919) % 300_000_000)}\t${ipHashText}\t${networkHashText}\tchrome/android\t${at}\n`;
          await pipeline(Readable.from([Buffer.from(text)]), client.query(copyFrom(`COPY t_${name} FROM STDIN`)));
        }
        backendSOf[name] = (backendSOf[name] ?? 0) + processCpuS(pid) - before;
      }
    }
    const line = (name: string, what: string, rowsMeasured: number, reference: string, unit: string) => {
      const usPerRow = (backendSOf[name]! * 1e6) / rowsMeasured;
      const referenceUs = (backendSOf[reference]! * 1e6) / rowsMeasured;
      return `| ${name} | ${what} | ${usPerRow.toFixed(2)} | ${name === reference ? '—' : (usPerRow - referenceUs).toFixed(2)} | ${unit} |`;
    };
    process.stdout.write(`Postgres backend CPU per row, ${rounds} alternating rounds; votes: ${commits} commits of ${rowsPerCommit} rows per variant and round; metadata: ${copies} COPYs of ${copyRows} rows\n\n`);
    process.stdout.write('| variant | what | Postgres µs per row | against the table as built | written by |\n|---|---|---|---|---|\n');
    for (const [name, variant] of Object.entries(voteVariants)) process.stdout.write(`${line(name, variant.what, rounds * commits * rowsPerCommit, 'votes', `INSERT … FROM unnest, ${rowsPerCommit} rows`)}\n`);
    for (const [name, variant] of Object.entries(metadataVariants)) process.stdout.write(`${line(name, variant.what, rounds * copies * copyRows, 'metadata', `COPY, ${copyRows} rows`)}\n`);
  } finally {
    client.release();
  }
} finally {
  await db.drop();
}
