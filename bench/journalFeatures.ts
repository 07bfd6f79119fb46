// What each part of a vote's storage costs Postgres, measured by switching it off: the journal's
// commit statement with every part (what livevote runs), without the audit chain, without the
// fence, without both (a variant with the audit chain also pays its seal: the sealer's statements,
// on a connection of its own, once per round of BENCH_COMMITS / BENCH_ROUNDS batches, 200 by
// default, which is about what livevote commits at 100 connections in the second between seals), and the durable floor's bare INSERT … FROM unnest into a narrow table; plus
// the request-metadata COPY that livevote writes beside the votes (persistence/voteMetadata.ts).
// Postgres CPU is the backend's own (/proc/<pid>/stat of the one connection each variant uses),
// so other work on the machine does not land in it. Variants alternate in rounds, so a drift of
// the machine's speed reaches each alike. Not part of `npm run bench`: prints a markdown table.
//
//   DATABASE_URL=postgres://postgres@127.0.0.1:5432/test node --import tsx bench/journalFeatures.ts
//   options (env): BENCH_BATCH_ROWS (32: a batch at 100 connections), BENCH_COMMITS (1200 per
//   variant), BENCH_ROUNDS (6), BENCH_SHARDS (8), BENCH_COMMITS_IN_FLIGHT (1: one commit at a time;
//   2 is what a vote node runs, LIVEVOTE_COMMITS_IN_FLIGHT_MAX, so its commits of one shard wait
//   for their commit slot as they do in production)
//
// Runs in a throwaway database created on the server of DATABASE_URL (dropped at the end).
import { randomUUID } from 'node:crypto';
import type { JournalRow } from '../actors/ports.ts';
import { acquireShardLeases } from '../cluster/leases.ts';
import { sealAuditChains } from '../persistence/auditSealer.ts';
import { createPgBatchIdSource } from '../persistence/batchIds.ts';
import { createPool, type Pool } from '../persistence/db.ts';
import { createTestDatabase } from '../persistence/testDatabase.ts';
import { createVoteMetadataRecorder } from '../persistence/voteMetadata.ts';
import { createPgJournal, type CommitStatementParts } from '../persistence/voteJournal.ts';
import { intFromEnv } from './lib/common.ts';
import { processCpuS } from './lib/proc.ts';

const batchRows = intFromEnv('BENCH_BATCH_ROWS', 32, 10_000);
const commitsPerVariant = intFromEnv('BENCH_COMMITS', 1200, 1_000_000);
const rounds = intFromEnv('BENCH_ROUNDS', 6, 100);
const shardCount = intFromEnv('BENCH_SHARDS', 8, 1024);
const commitsInFlight = intFromEnv('BENCH_COMMITS_IN_FLIGHT', 1, 16);
const nodeId = 'bench-node';

/** The backends of every connection of the pool, opened now (all checked out at once). */
async function backendPids(pool: Pool, connections: number): Promise<number[]> {
  const clients = await Promise.all(Array.from({ length: connections }, () => pool.connect()));
  try {
    return await Promise.all(clients.map(async (client) => (await client.query<{ pid: number }>('SELECT pg_backend_pid() AS pid')).rows[0]!.pid));
  } finally {
    for (const client of clients) client.release();
  }
}

interface Variant {
  readonly name: string;
  readonly what: string;
  /** Stores one batch of rows. */
  commit(rows: readonly JournalRow[]): Promise<void>;
  /** Ends a round's work (the last seal, the last COPY), inside the round's measurement. */
  settle?(): Promise<void>;
  pool: Pool;
  /** One per connection: BENCH_COMMITS_IN_FLIGHT of them, the metadata COPY's one. */
  pids: number[];
  /** Commits of this variant issued at once. */
  inFlight: number;
  /** Its backends' CPU seconds over the measured rounds. */
  backendS: number;
  clientUs: number;
  commits: number;
}

const db = await createTestDatabase({ poolMax: 1 });
const pools: Pool[] = [];
try {
  const electionId = randomUUID();
  const epochs = await acquireShardLeases(db.pool, { electionId, shardCount, nodeId, leaseTtlMs: 600_000 });
  const batchIds = await createPgBatchIdSource({ pool: db.pool });
  await db.pool.query(`CREATE TABLE floor_votes (election_id uuid NOT NULL, user_id uuid NOT NULL, candidate_id uuid NOT NULL, PRIMARY KEY (election_id, user_id))`);
  const candidateIds = Array.from({ length: 4 }, () => randomUUID());

  const journalVariant = async (name: string, what: string, parts: CommitStatementParts | undefined): Promise<Variant> => {
    const pool = createPool(db.url, commitsInFlight, 'bench-journal-features');
    pools.push(pool);
    const journal = createPgJournal({ pool, nodeId, measuredVariant: parts ? { name: `bench_commit_${name.replace(/\W+/g, '_')}`, parts } : undefined });
    const sealPool = parts?.audit === false ? undefined : createPool(db.url, 1, 'bench-journal-features');
    if (sealPool) pools.push(sealPool);
    return {
      name, what, pool, pids: [...await backendPids(pool, commitsInFlight), ...(sealPool ? await backendPids(sealPool, 1) : [])], inFlight: commitsInFlight,
      backendS: 0, clientUs: 0, commits: 0,
      async commit(rows) {
        const result = await journal.commit({ batchId: await batchIds.next(), rows });
        if (result.kind !== 'committed' || result.conflicts.length > 0) throw new Error(`${name}: ${JSON.stringify(result).slice(0, 200)}`);
      },
      // Its own batches only: a round's batches are sealed before the next variant commits.
      settle: sealPool && (async () => void (await sealAuditChains(sealPool))),
    };
  };
  const floorPool = createPool(db.url, commitsInFlight, 'bench-journal-features');
  pools.push(floorPool);
  const floorVariant: Variant = {
    name: 'floor insert', what: "the durable floor's statement: INSERT … FROM unnest into (election, user, candidate) uuids",
    pool: floorPool, pids: await backendPids(floorPool, commitsInFlight), inFlight: commitsInFlight, backendS: 0, clientUs: 0, commits: 0,
    async commit(rows) {
      await floorPool.query({
        name: 'floor_insert_batch',
        text: 'INSERT INTO floor_votes (election_id, user_id, candidate_id) SELECT * FROM unnest($1::uuid[], $2::uuid[], $3::uuid[]) ON CONFLICT DO NOTHING',
        values: [rows.map((r) => r.electionId), rows.map((r) => r.voteId), rows.map((r) => candidateIds[r.candidateIndex]!)],
      });
    },
  };
  const metadataPool = createPool(db.url, 1, 'bench-journal-features');
  pools.push(metadataPool);
  const recorder = createVoteMetadataRecorder({ pool: metadataPool, ipHashKey: 'bench-ip-hash-key', bufferRowsMax: 10_000_000 });
  const metadataVariant: Variant = {
    name: 'metadata', what: 'request metadata of the same votes (one COPY per second in livevote; here one per 32 batches)',
    pool: metadataPool, pids: await backendPids(metadataPool, 1), inFlight: 1, backendS: 0, clientUs: 0, commits: 0,
    async commit(rows) {
      const atMs = Date.now();
      for (const row of rows) {
        recorder.record({ electionId: row.electionId, voterNumber: row.voterNumber, clientIp: `10.0.${row.voterNumber % 250}.7`, networkKey: `10.0.${row.voterNumber % 250}.0/24`, userAgent: 'Mozilla/5.0 (Linux; Android 14) Chrome/120.0', atMs });
      }
      if (++metadataBatches % 32 === 0) await recorder.flush();
    },
    settle: () => recorder.flush(),
  };
  let metadataBatches = 0;

  const variants: Variant[] = [
    await journalVariant('journal', 'the commit statement livevote runs (fence, insert, audit digests, batch record, conflicts) and its seal', undefined),
    await journalVariant('without audit', 'the same without the audit digests and the seal', { fence: true, audit: false }),
    await journalVariant('without fence', 'the same without the lease fence (FOR SHARE lock and epoch check)', { fence: false, audit: true }),
    await journalVariant('without fence and audit', 'insert, batch record and conflicts only', { fence: false, audit: false }),
    floorVariant,
    metadataVariant,
  ];

  let nextVoter = 0;
  const acceptedAtMs = Date.now();
  const makeBatch = (): JournalRow[] =>
    Array.from({ length: batchRows }, () => {
      const voterNumber = nextVoter++;
      // Spread over the key space as real votes arrive, not appended in order.
      const shard = voterNumber % shardCount;
      return { electionId, shard, epoch: epochs[shard]!, voterNumber: (voterNumber * 7919) % 100_000_000, candidateIndex: voterNumber % 4, voteId: randomUUID(), acceptedAtMs };
    });

  const variantBackendS = (variant: Variant) => variant.pids.reduce((sum, pid) => sum + processCpuS(pid), 0);

  // Warm-up: every statement prepared, caches filled.
  for (const variant of variants) {
    for (let i = 0; i < 64; i++) await variant.commit(makeBatch());
    await variant.settle?.();
  }

  const perRound = Math.ceil(commitsPerVariant / rounds);
  for (let round = 0; round < rounds; round++) {
    for (const variant of variants) {
      const batches = Array.from({ length: perRound }, makeBatch);
      const backend0 = variantBackendS(variant);
      const cpu0 = process.cpuUsage();
      let next = 0;
      await Promise.all(Array.from({ length: variant.inFlight }, async () => {
        while (next < batches.length) await variant.commit(batches[next++]!);
      }));
      await variant.settle?.();
      const cpu = process.cpuUsage(cpu0);
      variant.clientUs += cpu.user + cpu.system;
      variant.backendS += variantBackendS(variant) - backend0;
      variant.commits += perRound;
    }
  }

  const usPerRow = (v: Variant) => (v.backendS * 1e6) / (v.commits * batchRows);
  const journal = variants[0]!;
  process.stdout.write(`Postgres backend CPU per stored vote, batches of ${batchRows} rows over ${shardCount} shards, ${journal.commits} batches per variant in ${rounds} alternating rounds, ${commitsInFlight} in flight\n\n`);
  process.stdout.write('| variant | what | Postgres µs per vote | against the journal | client µs per vote |\n|---|---|---|---|---|\n');
  for (const v of variants) {
    const diff = usPerRow(v) - usPerRow(journal);
    process.stdout.write(`| ${v.name} | ${v.what} | ${usPerRow(v).toFixed(1)} | ${v === journal ? '—' : `${diff >= 0 ? '+' : ''}${diff.toFixed(1)}`} | ${(v.clientUs / (v.commits * batchRows)).toFixed(1)} |\n`);
  }
  process.stdout.write(`BENCH_JOURNAL_FEATURES_JSON ${JSON.stringify({ batchRows, shardCount, commitsInFlight, commits: journal.commits, variants: variants.map((v) => ({ name: v.name, postgresUsPerVote: Number(usPerRow(v).toFixed(2)), clientUsPerVote: Number((v.clientUs / (v.commits * batchRows)).toFixed(2)) })) })}\n`);
  await recorder.stop();
} finally {
  for (const pool of pools) await pool.end().catch(() => undefined);
  await db.drop();
}
