// What the request-metadata recorder (persistence/voteMetadata.ts) costs a vote over its whole
// life, in a process that also makes a request's garbage per vote: record() on the hot path, what
// the vote leaves buffered until the flush (held ~1 s, through the scavenges of everything else),
// and the flush's COPY into Postgres, once per 20,000 votes. Process CPU per vote over 400,000
// votes after 100,000 of warm-up, and the time V8 spent collecting garbage meanwhile. Not part of `npm run bench`. Under tsx, so absolute figures are
// tsx's; compare two checkouts with it, alternating.
//
//   DATABASE_URL=postgres://postgres@127.0.0.1:5432/test node --import tsx bench/metadataRecord.ts
//   options (env): BENCH_UNIQUE_ADDRESSES=1 (an address and a network per vote: two HMACs each)
//
// Runs in a throwaway database created on the server of DATABASE_URL (dropped at the end).
import { PerformanceObserver } from 'node:perf_hooks';
import { setImmediate as nextTurn } from 'node:timers/promises';
import { createTestDatabase } from '../persistence/testDatabase.ts';
import { createVoteMetadataRecorder } from '../persistence/voteMetadata.ts';

const unique = process.env.BENCH_UNIQUE_ADDRESSES === '1';
const votesPerTurn = 200;
const votesPerFlush = 20_000;
const db = await createTestDatabase();
const recorder = createVoteMetadataRecorder({ pool: db.pool, ipHashKey: 'k'.repeat(32), flushIntervalMs: 600_000, bufferRowsMax: 1_000_000 });
const body = JSON.stringify({ electionId: 'b8f3c1de-2a4b-4c5d-8e9f-0a1b2c3d4e5f', candidateId: 'a8f3c1de-2a4b-4c5d-8e9f-0a1b2c3d4e5f', userId: 'c8f3c1de-2a4b-4c5d-8e9f-0a1b2c3d4e5f' });
const socketAddress = Buffer.from('127.0.0.1');
let kept = 0;
let voter = 0;

async function votes(count: number): Promise<void> {
  let flushing: Promise<void> | undefined;
  for (let done = 0; done < count; done += votesPerTurn) {
    for (let j = 0; j < votesPerTurn; j++) {
      const i = voter++;
      // A request's own strings and garbage, as the gateway makes them: the body parsed, the
      // address read from the socket, a few objects.
      const parsed = JSON.parse(body) as { electionId: string };
      const garbage: { k: number; s: string }[] = [];
      for (let k = 0; k < 16; k++) garbage.push({ k, s: `h${i}:${k}` });
      kept += garbage.length;
      const clientIp = unique ? `11.${(i >> 16) & 255}.${(i >> 8) & 255}.${i & 255}` : socketAddress.toString();
      const networkKey = unique ? `11.${(i >> 16) & 255}.${(i >> 8) & 255}.0/24` : `${clientIp.slice(0, 8)}0/24`;
      recorder.record({ electionId: parsed.electionId, voterNumber: i, clientIp, networkKey, userAgent: '', atMs: Date.now() });
    }
    if ((done + votesPerTurn) % votesPerFlush === 0) flushing = recorder.flush();
    await nextTurn();
  }
  await flushing;
  await recorder.flush();
}

await votes(100_000);
let gcMs = 0;
const gcObserver = new PerformanceObserver((list) => { for (const entry of list.getEntries()) gcMs += entry.duration; });
gcObserver.observe({ entryTypes: ['gc'] });
const before = process.cpuUsage();
await votes(400_000);
const used = process.cpuUsage(before);
await nextTurn();
gcObserver.disconnect();
process.stdout.write(`${unique ? 'an address per vote' : 'one address'}: ${((used.user + used.system) / 400_000).toFixed(3)} µs a vote, garbage collection ${((gcMs * 1000) / 400_000).toFixed(3)} µs a vote; ${recorder.stats().written} rows written (${kept > 0 ? 'garbage made' : ''})\n`);
await recorder.stop();
await db.drop();
