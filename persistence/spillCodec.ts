// The wire form of a spilled batch, shared by the file and SQS spill queues: msgpackr over a
// column layout. Rows of one batch repeat the same election ids and nearby timestamps, so the
// columns (election ids once, vote ids as 16 raw bytes, times as offsets) make a row ~30 bytes
// where msgpack of the row objects takes ~110: a 4000-row batch fits one SQS message (256 KiB).
import { Packr } from 'msgpackr';
import type { JournalRow, SpilledBatch } from '../actors/ports.ts';
import { uuidPattern } from './db.ts';

const codecVersion = 1;
const packr = new Packr({ useRecords: false, moreTypes: false });

interface EncodedBatch {
  v: number;
  /** batch id */
  b: number;
  /** spilledAtMs */
  t: number;
  /** distinct election ids */
  e: string[];
  /** per row: index into e */
  ei: number[];
  s: number[];
  p: number[];
  n: number[];
  c: number[];
  /** per row: spilledAtMs - acceptedAtMs */
  a: number[];
  /** vote ids, 16 bytes each */
  id: Uint8Array;
}

export function encodeSpilledBatch(batch: SpilledBatch): Buffer {
  const n = batch.rows.length;
  const electionIndex = new Map<string, number>();
  const e: string[] = [];
  const ei = new Array<number>(n);
  const s = new Array<number>(n);
  const p = new Array<number>(n);
  const voters = new Array<number>(n);
  const c = new Array<number>(n);
  const a = new Array<number>(n);
  const id = Buffer.alloc(16 * n);
  for (let i = 0; i < n; i++) {
    const row = batch.rows[i]!;
    let index = electionIndex.get(row.electionId);
    if (index === undefined) {
      index = e.length;
      electionIndex.set(row.electionId, index);
      e.push(row.electionId);
    }
    ei[i] = index;
    s[i] = row.shard;
    p[i] = row.epoch;
    voters[i] = row.voterNumber;
    c[i] = row.candidateIndex;
    a[i] = batch.spilledAtMs - row.acceptedAtMs;
    if (!uuidPattern.test(row.voteId)) throw new Error(`voteId is not a uuid: ${JSON.stringify(row.voteId)}`);
    id.write(row.voteId.replace(/-/g, ''), 16 * i, 16, 'hex');
  }
  const encoded: EncodedBatch = { v: codecVersion, b: batch.batchId, t: batch.spilledAtMs, e, ei, s, p, n: voters, c, a, id };
  return packr.pack(encoded);
}

/** Throws on anything that is not a well-formed batch of this codec version. */
export function decodeSpilledBatch(bytes: Uint8Array): SpilledBatch {
  const value = packr.unpack(bytes) as Partial<EncodedBatch> | null;
  if (value === null || typeof value !== 'object' || value.v !== codecVersion) throw new Error('not a spilled batch of codec version 1');
  const { b, t, e, ei, s, p, n: voters, c, a, id } = value;
  if (!Number.isSafeInteger(b) || !Number.isSafeInteger(t)) throw new Error('batch id or spill time missing');
  if (![e, ei, s, p, voters, c, a].every(Array.isArray) || !(id instanceof Uint8Array)) throw new Error('a column is missing');
  const n = voters!.length;
  if (![ei, s, p, c, a].every((column) => column!.length === n) || id.length !== 16 * n) throw new Error('columns of different lengths');
  const idBytes = Buffer.from(id.buffer, id.byteOffset, id.byteLength);
  const rows = new Array<JournalRow>(n);
  for (let i = 0; i < n; i++) {
    const electionId = e![ei![i]!];
    if (typeof electionId !== 'string' || !uuidPattern.test(electionId)) throw new Error(`row ${i}: bad election id`);
    const hex = idBytes.toString('hex', 16 * i, 16 * i + 16);
    const row: JournalRow = {
      electionId,
      shard: s![i]!,
      epoch: p![i]!,
      voterNumber: voters![i]!,
      candidateIndex: c![i]!,
      voteId: `${hex.slice(0, 8)}-${hex.slice(8, 12)}-${hex.slice(12, 16)}-${hex.slice(16, 20)}-${hex.slice(20)}`,
      acceptedAtMs: t! - a![i]!,
    };
    for (const field of ['shard', 'epoch', 'voterNumber', 'candidateIndex', 'acceptedAtMs'] as const) {
      if (!Number.isSafeInteger(row[field])) throw new Error(`row ${i}: ${field} is not an integer`);
    }
    rows[i] = row;
  }
  return { batchId: b!, spilledAtMs: t!, rows };
}
