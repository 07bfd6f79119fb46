// Where a voter lives: shard = voterNumber % shardCount, slot = floor(voterNumber / shardCount).
// Voter numbers are dense (assigned from 0 at registration), so consecutive voters spread evenly
// over the shards and a shard's bitmap is ceil(voters / shardCount) bits, slot by slot.
import type { ShardKey } from '../actors/ports.ts';

/** elections.shard_count is 1..1024. */
export const shardCountMax = 1024;

function assertShardCount(shardCount: number): void {
  if (!(Number.isInteger(shardCount) && shardCount >= 1 && shardCount <= shardCountMax)) {
    throw new Error(`shardCount must be 1..${shardCountMax}, got ${shardCount}`);
  }
}

function assertVoterNumber(voterNumber: number): void {
  if (!(Number.isSafeInteger(voterNumber) && voterNumber >= 0)) throw new Error(`voterNumber must be a non-negative safe integer, got ${voterNumber}`);
}

export function shardOf(voterNumber: number, shardCount: number): number {
  assertVoterNumber(voterNumber);
  assertShardCount(shardCount);
  return voterNumber % shardCount;
}

export function slotOf(voterNumber: number, shardCount: number): number {
  assertVoterNumber(voterNumber);
  assertShardCount(shardCount);
  return Math.floor(voterNumber / shardCount);
}

/** The inverse of (shardOf, slotOf): recovery turns bitmap slots back into voters. */
export function voterNumberOf(shard: number, slot: number, shardCount: number): number {
  assertShardCount(shardCount);
  if (!(Number.isInteger(shard) && shard >= 0 && shard < shardCount)) throw new Error(`shard must be 0..${shardCount - 1}, got ${shard}`);
  if (!(Number.isSafeInteger(slot) && slot >= 0)) throw new Error(`slot must be a non-negative safe integer, got ${slot}`);
  const voterNumber = slot * shardCount + shard;
  assertVoterNumber(voterNumber);
  return voterNumber;
}

/** Every shard of an election, in shard order. */
export function shardKeysOf(electionId: string, shardCount: number): ShardKey[] {
  assertShardCount(shardCount);
  return Array.from({ length: shardCount }, (_, shard) => ({ electionId, shard }));
}
