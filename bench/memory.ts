// Memory: the shard state of one election sized for MEMORY_VOTERS (300M) voters over
// MEMORY_SHARDS shards, driven through the real shard step function (createShardState +
// stepShard ReplayStoredVotes, as recovery does), with votes spread over the whole voter range
// (every MEMORY_STRIDE-th voter of every shard, and the very last voter), so every bitmap page
// of every shard is allocated. Compared with ceil(voters / 8) bytes.
//
// Run in a fresh process with --expose-gc, so the RSS delta is this election's alone:
//   node --expose-gc --import tsx bench/memory.ts      → BENCH_MEMORY_JSON {...}
import { createShardState, stepShard, type ShardState } from '../actors/shard.ts';
import { intFromEnv } from './lib/common.ts';

const voters = intFromEnv('MEMORY_VOTERS', 300_000_000, 2 ** 40);
const shardCount = intFromEnv('MEMORY_SHARDS', 64, 1024);
const candidateCount = intFromEnv('MEMORY_CANDIDATES', 5, 64);
const stride = intFromEnv('MEMORY_STRIDE', 97, 1_000_000);
const chunkRows = 10_000;
const gc = (globalThis as { gc?: () => void }).gc;
if (!gc) throw new Error('run with --expose-gc');

const settle = () => {
  for (let i = 0; i < 3; i++) gc();
  return process.memoryUsage();
};

const electionId = '00000000-0000-4000-8000-000000000300';
const before = settle();
const shards: ShardState[] = [];
for (let shard = 0; shard < shardCount; shard++) {
  shards.push(createShardState({
    key: { electionId, shard },
    shardCount,
    candidateCount,
    epoch: 1,
    config: { pendingVotesMax: 20_000, retryAfterMs: 1000 },
  }));
}

const started = performance.now();
let votes = 0;
for (const state of shards) {
  const shard = state.key.shard;
  let rows: { voterNumber: number; candidateIndex: number }[] = [];
  const flush = () => {
    if (rows.length === 0) return;
    stepShard(state, { kind: 'ReplayStoredVotes', rows });
    votes += rows.length;
    rows = [];
  };
  // Voters of this shard are shard, shard + shardCount, …; take every stride-th of them.
  for (let voter = shard; voter < voters; voter += shardCount * stride) {
    rows.push({ voterNumber: voter, candidateIndex: voter % candidateCount });
    if (rows.length >= chunkRows) flush();
  }
  // The last voter of the electorate that falls in this shard: the bitmap spans the whole range.
  const lastVoter = voters - 1 - ((voters - 1 - shard) % shardCount);
  if (lastVoter >= shard && !state.bitmap.has(Math.floor(lastVoter / shardCount))) rows.push({ voterNumber: lastVoter, candidateIndex: 0 });
  flush();
}
const fillMs = performance.now() - started;
const after = settle();

const bitmapBytes = shards.reduce((sum, state) => sum + state.bitmap.byteLength(), 0);
const bitsSet = shards.reduce((sum, state) => sum + state.bitmap.count(), 0);
const slotsCovered = shards.reduce((sum, state) => sum + state.bitmap.voterSlots(), 0);
const idealBytes = Math.ceil(voters / 8);
process.stdout.write(
  `BENCH_MEMORY_JSON ${JSON.stringify({
    voters, shardCount, candidateCount, stride, votes, bitsSet, slotsCovered,
    pageBytes: shards[0]!.bitmap.pageBytes,
    bitmapBytes, idealBytes, ratio: bitmapBytes / idealBytes,
    rssDeltaBytes: after.rss - before.rss,
    arrayBuffersDeltaBytes: after.arrayBuffers - before.arrayBuffers,
    heapUsedDeltaBytes: after.heapUsed - before.heapUsed,
    rssBeforeBytes: before.rss, rssAfterBytes: after.rss,
    fillMs,
  })}\n`,
);
// Keep the shards reachable until the figures are taken.
if (shards.length !== shardCount) process.exit(1);
