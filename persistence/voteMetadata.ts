// Request metadata for abuse investigation, minimised before it is stored (PRIVACY.md): no IP
// address, only keyed hashes of the address and of its network; a coarse user-agent family
// instead of the user agent; whole seconds. Kept LIVEVOTE_METADATA_RETENTION_DAYS, then purged
// (persistence/privacy.ts purgeExpiredMetadata).
//
// Never on a vote's durability path: record() only appends to a bounded in-memory buffer; a
// timer writes the buffer with one COPY per table about every second. A full buffer or a failed
// write drops metadata (counted, logged), never a vote and never a request.
import { Readable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { setImmediate } from 'node:timers/promises';
import { from as copyFrom } from 'pg-copy-streams';
import { Counter, type Registry } from 'prom-client';
import type { Logger } from '../infra/logger.ts';
import type { Pool } from './db.ts';
import { hmacSha256 } from '../infra/hmacSha256.ts';
import { isUuidText } from '../infra/uuidText.ts';
import { uuidPattern, withClient } from './db.ts';

export const metadataFlushIntervalMsDefault = 1000;
export const metadataBufferRowsMaxDefault = 100_000;
/** Bytes of HMAC-SHA256 kept: 128 bits, plenty to tell addresses apart, half the storage. */
export const metadataHashBytes = 16;
/** The logs say so on the first drop and then every this many. */
const dropLogEvery = 10_000;

export interface VoteMetadata {
  readonly electionId: string;
  readonly voterNumber: number;
  /** Canonical client IP (RequestContext.clientIp). */
  readonly clientIp: string;
  /** Its /24 or /64 (RequestContext.networkKey). */
  readonly networkKey: string;
  readonly userAgent: string;
  readonly atMs: number;
}

export interface AccountEventMetadata {
  readonly userId: string;
  readonly clientIp: string;
  readonly networkKey: string;
  readonly userAgent?: string;
  readonly atMs: number;
}

export interface MetadataRecorderStats {
  /** Accepted into the buffer. */
  readonly recorded: number;
  /** Written to Postgres. */
  readonly written: number;
  /** Dropped: buffer full, invalid, or the write failed. */
  readonly dropped: number;
}

export interface VoteMetadataRecorder {
  /** Hot path: an array push. Call it once the vote is accepted. */
  record(meta: VoteMetadata): void;
  recordRegistration(meta: AccountEventMetadata): void;
  recordLogin(meta: AccountEventMetadata): void;
  start(): void;
  /** Stops the timer and writes what is buffered. */
  stop(): Promise<void>;
  /** Writes what is buffered now (tests, shutdown). */
  flush(): Promise<void>;
  stats(): MetadataRecorderStats;
}

export interface VoteMetadataRecorderOptions {
  readonly pool: Pool;
  readonly ipHashKey: string;
  readonly flushIntervalMs?: number;
  /** Per table: rows buffered at most; beyond, records are dropped and counted. */
  readonly bufferRowsMax?: number;
  readonly log?: Logger;
  readonly metricsRegistry?: Registry;
}

/**
 * The keyed hashes of a client's address and of its network under one key: equal addresses give
 * equal hashes, and without the key nothing. HMAC-SHA256, first 16 bytes, of a labelled text.
 */
export function metadataHashes(ipHashKey: string): { ip(clientIp: string): Buffer; network(networkKey: string): Buffer } {
  const keyed = hmacSha256(ipHashKey);
  return {
    ip: (clientIp) => keyed(`livevote-ip-v1\0${clientIp}`, metadataHashBytes),
    network: (networkKey) => keyed(`livevote-network-v1\0${networkKey}`, metadataHashBytes),
  };
}

export function ipHash(ipHashKey: string, clientIp: string): Buffer {
  return metadataHashes(ipHashKey).ip(clientIp);
}

export function networkHash(ipHashKey: string, networkKey: string): Buffer {
  return metadataHashes(ipHashKey).network(networkKey);
}

const botPattern = /bot\b|crawler|spider|slurp|facebookexternalhit|preview/i;
const toolPatterns: readonly [RegExp, string][] = [
  [/^curl\//i, 'curl'],
  [/^wget\//i, 'wget'],
  [/python-requests|python-urllib|aiohttp|httpx/i, 'python'],
  [/^go-http-client/i, 'go'],
  [/okhttp/i, 'okhttp'],
  [/node-fetch|undici|axios|^node\b/i, 'node'],
  [/^java\/|apache-httpclient/i, 'java'],
  [/postmanruntime/i, 'postman'],
  [/httpie/i, 'httpie'],
];
const browserPatterns: readonly [RegExp, string][] = [
  [/headlesschrome/i, 'headless-chrome'],
  [/\bedg(e|a|ios)?\//i, 'edge'],
  [/\bopr\/|\bopera\b/i, 'opera'],
  [/samsungbrowser/i, 'samsung'],
  [/firefox\/|fxios/i, 'firefox'],
  [/chrome\/|crios|chromium/i, 'chrome'],
  [/version\/[\d.]+.*safari/i, 'safari'],
];
const osPatterns: readonly [RegExp, string][] = [
  [/android/i, 'android'],
  [/iphone|ipad|ipod|\bios\b/i, 'ios'],
  [/windows/i, 'windows'],
  [/\bcros\b/i, 'chromeos'],
  [/macintosh|mac os x/i, 'macos'],
  [/linux/i, 'linux'],
];

/**
 * A coarse family of a user agent, e.g. 'chrome/android', 'safari/ios', 'curl', 'bot': enough to
 * see a farm of identical clients, too little to fingerprint anyone. No versions are kept.
 */
export function userAgentFamily(userAgent: string): string {
  const ua = userAgent.slice(0, 512);
  if (ua.trim() === '') return 'none';
  if (botPattern.test(ua)) return 'bot';
  for (const [pattern, name] of toolPatterns) if (pattern.test(ua)) return name;
  let browser = 'other';
  for (const [pattern, name] of browserPatterns) {
    if (pattern.test(ua)) {
      browser = name;
      break;
    }
  }
  for (const [pattern, name] of osPatterns) if (pattern.test(ua)) return `${browser}/${name}`;
  return browser;
}

interface BufferedAccountEvent extends AccountEventMetadata {
  readonly event: 'register' | 'login';
}

export function createVoteMetadataRecorder(options: VoteMetadataRecorderOptions): VoteMetadataRecorder {
  const flushIntervalMs = options.flushIntervalMs ?? metadataFlushIntervalMsDefault;
  const bufferRowsMax = options.bufferRowsMax ?? metadataBufferRowsMaxDefault;
  if (!(Number.isInteger(flushIntervalMs) && flushIntervalMs >= 1)) throw new Error(`flushIntervalMs must be a positive integer, got ${flushIntervalMs}`);
  if (!(Number.isInteger(bufferRowsMax) && bufferRowsMax >= 1)) throw new Error(`bufferRowsMax must be a positive integer, got ${bufferRowsMax}`);
  if (options.ipHashKey.length === 0) throw new Error('ipHashKey must not be empty');
  const { pool, ipHashKey, log } = options;
  const earlyFlushRows = Math.max(1, Math.floor(bufferRowsMax / 2));
  const droppedCounter = options.metricsRegistry
    ? new Counter({
        name: 'livevote_request_metadata_dropped_total',
        help: 'Request metadata rows not stored (buffer full, invalid, or write failed), by reason',
        labelNames: ['reason'] as const,
        registers: [options.metricsRegistry],
      })
    : undefined;

  // A show's votes come from far fewer elections, addresses, networks and browsers than there are
  // votes: remember each field's COPY bytes instead of an HMAC (or a parse) per row.
  const hashes = metadataHashes(ipHashKey);
  const ipField = memoised(hashes.ip);
  const networkField = memoised(hashes.network);
  const userAgentField = memoised((userAgent: string) => Buffer.from(userAgentFamily(userAgent), 'utf8'));
  const uuidField = memoised(uuidBytes);
  const secondField = memoisedSecond();

  let votes = new BufferedVotes();
  let accountEvents: BufferedAccountEvent[] = [];
  let recorded = 0;
  let written = 0;
  let dropped = 0;
  let timer: NodeJS.Timeout | undefined;
  let flushing: Promise<void> | undefined;

  const drop = (count: number, reason: 'buffer_full' | 'invalid' | 'write_failed', error?: unknown) => {
    const before = dropped;
    dropped += count;
    droppedCounter?.inc({ reason }, count);
    // Log the first drop and then one line per dropLogEvery: a full buffer is a flood, not news.
    if (Math.floor(before / dropLogEvery) !== Math.floor(dropped / dropLogEvery) || before === 0) {
      log?.warn({ reason, droppedTotal: dropped, err: error }, 'request metadata dropped (votes are unaffected)');
    }
  };

  const flushOnce = async (): Promise<void> => {
    const voteRows = votes;
    const accountRows = accountEvents;
    votes = new BufferedVotes();
    accountEvents = [];
    if (voteRows.length > 0) {
      try {
        await copyRows(pool, 'vote_metadata (election_id, voter_number, ip_hash, network_hash, ua_family, recorded_at)', voteRows.length, (i, out) => {
          out.row(6);
          out.bytes(voteRows.electionIds[i]!);
          out.int8(voteRows.voterNumbers[i]!);
          out.bytes(fieldBytes(voteRows.ips[i]!, ipField.of));
          out.bytes(fieldBytes(voteRows.networks[i]!, networkField.of));
          out.bytes(fieldBytes(voteRows.userAgents[i]!, userAgentField.of));
          out.bytes(secondField(voteRows.atMs[i]!));
        });
        written += voteRows.length;
      } catch (error) {
        drop(voteRows.length, 'write_failed', error);
      }
    }
    if (accountRows.length > 0) {
      try {
        await copyRows(pool, 'account_metadata (user_id, event, ip_hash, network_hash, ua_family, recorded_at)', accountRows.length, (i, out) => {
          const m = accountRows[i]!;
          out.row(6);
          out.bytes(uuidField.of(m.userId));
          out.bytes(accountEventBytes[m.event]);
          out.bytes(ipField.of(m.clientIp));
          out.bytes(networkField.of(m.networkKey));
          out.bytes(userAgentField.of(m.userAgent ?? ''));
          out.bytes(secondField(m.atMs));
        });
        written += accountRows.length;
      } catch (error) {
        drop(accountRows.length, 'write_failed', error);
      }
    }
  };

  const flush = (): Promise<void> => {
    // One write at a time; a caller arriving during one waits for it and then writes the rest.
    if (flushing) return flushing.then(() => flush());
    if (votes.length === 0 && accountEvents.length === 0) return Promise.resolve();
    flushing = flushOnce().finally(() => {
      flushing = undefined;
    });
    return flushing;
  };

  const accountEvent = (meta: AccountEventMetadata, event: 'register' | 'login') => {
    if (!uuidPattern.test(meta.userId) || !Number.isFinite(meta.atMs)) {
      drop(1, 'invalid');
      return;
    }
    if (accountEvents.length >= bufferRowsMax) {
      drop(1, 'buffer_full');
      return;
    }
    accountEvents.push({ ...meta, event });
    recorded++;
  };

  return {
    record(meta) {
      // Validated here, so one bad row cannot fail a whole COPY (and cannot inject into it).
      if (!isUuidText(meta.electionId) || !(Number.isSafeInteger(meta.voterNumber) && meta.voterNumber >= 0) || !Number.isFinite(meta.atMs)) {
        drop(1, 'invalid');
        return;
      }
      if (votes.length >= bufferRowsMax) {
        drop(1, 'buffer_full');
        return;
      }
      // What the vote leaves here until the flush: numbers, and the bytes of fields met before
      // (the request's own strings only for an address, network or browser not seen yet, hashed
      // at the flush, off this call).
      votes.push(
        uuidField.of(meta.electionId), meta.voterNumber, meta.atMs,
        ipField.known(meta.clientIp) ?? meta.clientIp,
        networkField.known(meta.networkKey) ?? meta.networkKey,
        userAgentField.known(meta.userAgent) ?? meta.userAgent,
      );
      recorded++;
      // A burst fills the buffer faster than the timer drains it: write early, off this call.
      if (votes.length === earlyFlushRows && !flushing) void flush();
    },
    recordRegistration(meta) {
      accountEvent(meta, 'register');
    },
    recordLogin(meta) {
      accountEvent(meta, 'login');
    },
    start() {
      if (timer) return;
      timer = setInterval(() => {
        void flush();
      }, flushIntervalMs);
      timer.unref();
    },
    async stop() {
      if (timer) clearInterval(timer);
      timer = undefined;
      await flush();
    },
    flush,
    stats: () => ({ recorded, written, dropped }),
  };
}

const accountEventBytes = { register: Buffer.from('register'), login: Buffer.from('login') } as const;

/** A uuid's 16 bytes, as COPY's binary format carries a uuid (the text was validated: hex and dashes). */
function uuidBytes(uuid: string): Buffer {
  return Buffer.from(uuid.replace(/-/g, ''), 'hex');
}

/** Per recorder; cleared when full, so memory stays bounded whatever the traffic. */
const memoEntriesMax = 65_536;

interface Memo {
  /** The bytes of `key`, computed now if not remembered. */
  of(key: string): Buffer;
  /** The bytes of `key` if remembered; nothing is computed. */
  known(key: string): Buffer | undefined;
}

function memoised(compute: (key: string) => Buffer): Memo {
  const memo = new Map<string, Buffer>();
  return {
    of(key) {
      let value = memo.get(key);
      if (value === undefined) {
        if (memo.size >= memoEntriesMax) memo.clear();
        value = compute(key);
        memo.set(key, value);
      }
      return value;
    },
    known: (key) => memo.get(key),
  };
}

/** A buffered field: its bytes, or the text they are still to be computed from. */
function fieldBytes(field: Buffer | string, of: (key: string) => Buffer): Buffer {
  return typeof field === 'string' ? of(field) : field;
}

/**
 * The votes waiting for the flush, by column. Held ~1 s, an object and strings of its own per
 * vote outlived the scavenges and were copied at each; numbers and references to bytes met before
 * are not copied (bench/metadataRecord.ts: GC pauses ~0.6 → ~0.3 µs a vote, bench/README.md,
 * "Fifteenth look").
 */
class BufferedVotes {
  length = 0;
  electionIds: Buffer[] = [];
  voterNumbers = new Float64Array(1024);
  atMs = new Float64Array(1024);
  ips: (Buffer | string)[] = [];
  networks: (Buffer | string)[] = [];
  userAgents: (Buffer | string)[] = [];

  push(electionId: Buffer, voterNumber: number, atMs: number, ip: Buffer | string, network: Buffer | string, userAgent: Buffer | string): void {
    const i = this.length++;
    if (i === this.voterNumbers.length) {
      this.voterNumbers = grown(this.voterNumbers);
      this.atMs = grown(this.atMs);
    }
    this.voterNumbers[i] = voterNumber;
    this.atMs[i] = atMs;
    this.electionIds.push(electionId);
    this.ips.push(ip);
    this.networks.push(network);
    this.userAgents.push(userAgent);
  }
}

function grown(column: Float64Array<ArrayBuffer>): Float64Array<ArrayBuffer> {
  const next = new Float64Array(column.length * 2);
  next.set(column);
  return next;
}

/** Microseconds from the Unix epoch to Postgres' (2000-01-01 UTC), which a binary timestamptz counts from. */
const postgresEpochUs = 946_684_800_000_000n;

/** Rows of one flush share a handful of seconds: encode each whole second once (a timestamptz: int64 µs). */
function memoisedSecond(): (atMs: number) => Buffer {
  let second = Number.NaN;
  let bytes = Buffer.alloc(8);
  return (atMs) => {
    const s = Math.floor(atMs / 1000);
    if (s !== second) {
      second = s;
      bytes = Buffer.alloc(8);
      bytes.writeBigInt64BE(BigInt(s) * 1_000_000n - postgresEpochUs);
    }
    return bytes;
  };
}

/**
 * Rows formatted (and their addresses hashed) per turn of the event loop. A second's votes at once
 * held the loop 16-41 ms (27,000 rows from one address) and 155-206 ms (each from an address of
 * its own: two HMACs a row), once a second, every request and commit answer waiting behind it
 * (bench/metadataStall.ts). A chunk of this many is 0.2-2 ms of work; the loop turns between chunks.
 */
export const metadataCopyChunkRows = 200;

/**
 * One chunk of COPY's binary format (the Postgres manual, COPY, "Binary Format"): per row a field
 * count, then each field as its length and its bytes in the column type's binary form. Binary, not
 * text: Postgres then parses no uuid, hex or time per row, ~0.9 µs less of its CPU a row, and the
 * recorder writes stored bytes instead of formatting text (bench/README.md, "Fifteenth look").
 */
class BinaryCopyChunk {
  private buffer: Buffer;
  private length = 0;

  constructor(bytesHint: number) {
    this.buffer = Buffer.allocUnsafe(Math.max(64, bytesHint));
  }

  row(fieldCount: number): void {
    this.reserve(2);
    this.length = this.buffer.writeInt16BE(fieldCount, this.length);
  }

  bytes(value: Buffer): void {
    this.reserve(4 + value.length);
    this.length = this.buffer.writeInt32BE(value.length, this.length);
    this.length += value.copy(this.buffer, this.length);
  }

  /** A bigint column; `value` a non-negative safe integer (validated by the caller). */
  int8(value: number): void {
    this.reserve(12);
    this.length = this.buffer.writeInt32BE(8, this.length);
    this.length = this.buffer.writeUInt32BE(Math.floor(value / 0x1_0000_0000), this.length);
    this.length = this.buffer.writeUInt32BE(value >>> 0, this.length);
  }

  /** The bytes written, which the chunk no longer touches. */
  take(): Buffer {
    return this.buffer.subarray(0, this.length);
  }

  private reserve(bytes: number): void {
    if (this.length + bytes <= this.buffer.length) return;
    const grown = Buffer.allocUnsafe(Math.max(this.buffer.length * 2, this.length + bytes));
    this.buffer.copy(grown, 0, 0, this.length);
    this.buffer = grown;
  }
}

/** The signature, flags (none) and header extension length (0) that open a binary COPY. */
const binaryCopyHeader = Buffer.concat([Buffer.from('PGCOPY\n\xff\r\n\0', 'latin1'), Buffer.alloc(8)]);
/** A field count of -1 ends it. */
const binaryCopyTrailer = Buffer.from([0xff, 0xff]);

/** Bytes of a metadata row, about (a uuid, a bigint, two hashes, a short text, a time): a chunk's first size. */
const metadataRowBytesHint = 100;

/** COPYs rows 0 … rowCount - 1, each written by `write`. */
async function copyRows(pool: Pool, target: string, rowCount: number, write: (row: number, out: BinaryCopyChunk) => void): Promise<void> {
  async function* chunks(): AsyncGenerator<Buffer> {
    yield binaryCopyHeader;
    for (let start = 0; start < rowCount; start += metadataCopyChunkRows) {
      if (start > 0) await setImmediate();
      const end = Math.min(rowCount, start + metadataCopyChunkRows);
      const out = new BinaryCopyChunk((end - start) * metadataRowBytesHint);
      for (let i = start; i < end; i++) write(i, out);
      yield out.take();
    }
    yield binaryCopyTrailer;
  }
  await withClient(pool, async (client) => {
    // highWaterMark 1: the stream asks for the next chunk only once the last one is written on,
    // instead of formatting 16 ahead.
    await pipeline(Readable.from(chunks(), { highWaterMark: 1 }), client.query(copyFrom(`COPY ${target} FROM STDIN (FORMAT binary)`)));
  });
}
