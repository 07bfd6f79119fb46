// The longest event-loop stall while the request-metadata recorder writes a second's votes
// (persistence/voteMetadata.ts): BENCH_ROWS rows (default 27,000: a second at ~27k votes/s) from
// one address, or each from an address of its own (BENCH_UNIQUE_ADDRESSES=1: two HMACs a row, as
// in the abuse-controls run), flushed four times; a setImmediate loop beside the flush measures the
// longest stretch the event loop was held, and the CPU a row cost this process and the Postgres
// backend that took the COPY (the recorder's pool has one connection; the server must be local
// for /proc to show it). Not part of `npm run bench`.
//
//   DATABASE_URL=postgres://postgres@127.0.0.1:5432/test node --import tsx bench/metadataStall.ts
//
// Runs in a throwaway database created on the server of DATABASE_URL (dropped at the end).
import { randomUUID } from 'node:crypto';
import { createPool } from '../persistence/db.ts';
import { createTestDatabase } from '../persistence/testDatabase.ts';
import { createVoteMetadataRecorder } from '../persistence/voteMetadata.ts';
import { intFromEnv } from './lib/common.ts';
import { processCpuS } from './lib/proc.ts';
const rows = intFromEnv('BENCH_ROWS', 27_000, 1_000_000);
const unique = process.env.BENCH_UNIQUE_ADDRESSES === '1';
const db = await createTestDatabase();
const pool = createPool(db.url, 1, 'metadata-stall');
const backendPid = (await pool.query<{ pid: number }>('SELECT pg_backend_pid() AS pid')).rows[0]!.pid;
for (let round = 0; round < 4; round++) {
  const recorder = createVoteMetadataRecorder({ pool, ipHashKey: 'k'.repeat(32), flushIntervalMs: 60_000 });
  const electionId = randomUUID();
  for (let i = 0; i < rows; i++) {
    const ip = unique ? `11.${(i >> 16) & 255}.${(i >> 8) & 255}.${i & 255}` : '127.0.0.1';
    recorder.record({ electionId, voterNumber: round * rows + i, clientIp: ip, networkKey: unique ? `11.${(i >> 16) & 255}.${(i >> 8) & 255}.0/24` : '127.0.0.0/24', userAgent: 'wrk', atMs: Date.now() });
  }
  let maxGapMs = 0;
  let last = performance.now();
  let monitoring = true;
  const tick = () => { const now = performance.now(); maxGapMs = Math.max(maxGapMs, now - last); last = now; if (monitoring) setImmediate(tick); };
  setImmediate(tick);
  const started = performance.now();
  const cpu0 = process.cpuUsage();
  const backend0 = processCpuS(backendPid);
  await recorder.flush();
  const cpu = process.cpuUsage(cpu0);
  const backendUsPerRow = ((processCpuS(backendPid) - backend0) * 1e6) / rows;
  monitoring = false;
  console.log(`${rows} rows (${unique ? 'unique' : 'one'} address): flush ${(performance.now() - started).toFixed(1)} ms, longest stall ${maxGapMs.toFixed(1)} ms, cpu ${((cpu.user + cpu.system) / rows).toFixed(2)} us/row, Postgres ${backendUsPerRow.toFixed(2)} us/row, written ${recorder.stats().written}`);
  await recorder.stop();
}
await pool.end();
await db.drop();
