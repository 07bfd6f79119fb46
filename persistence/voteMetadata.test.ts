import { randomUUID } from 'node:crypto';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createPool } from './db.ts';
import { createTestDatabase, type TestDatabase } from './testDatabase.ts';
import { createVoteMetadataRecorder, ipHash, metadataCopyChunkRows, networkHash, userAgentFamily } from './voteMetadata.ts';

const key = 'metadata-test-ip-hash-key';
let db: TestDatabase;

beforeAll(async () => {
  db = await createTestDatabase();
});
afterAll(async () => {
  await db?.drop();
});

describe('userAgentFamily', () => {
  it.each([
    ['Mozilla/5.0 (Linux; Android 14; Pixel 8) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0.0.0 Mobile Safari/537.36', 'chrome/android'],
    ['Mozilla/5.0 (iPhone; CPU iPhone OS 17_5 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.5 Mobile/15E148 Safari/604.1', 'safari/ios'],
    ['Mozilla/5.0 (Windows NT 10.0; Win64; x64; rv:133.0) Gecko/20100101 Firefox/133.0', 'firefox/windows'],
    ['Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0.0.0 Safari/537.36 Edg/131.0.0.0', 'edge/windows'],
    ['Mozilla/5.0 (Macintosh; Intel Mac OS X 14_5) AppleWebKit/537.36 (KHTML, like Gecko) HeadlessChrome/131.0.0.0 Safari/537.36', 'headless-chrome/macos'],
    ['curl/8.5.0', 'curl'],
    ['python-requests/2.32.3', 'python'],
    ['Googlebot/2.1 (+http://www.google.com/bot.html)', 'bot'],
    ['', 'none'],
    ['something else entirely', 'other'],
  ])('%s → %s', (ua, family) => {
    expect(userAgentFamily(ua)).toBe(family);
  });

  it('never keeps a version or anything the client chose', () => {
    for (const ua of ['Mozilla/5.0 (X11; Linux x86_64) Chrome/131.0.6778.85', 'evil\t\n\\x00 payload', 'a'.repeat(10_000)]) {
      expect(userAgentFamily(ua)).toMatch(/^[a-z-]+(\/[a-z]+)?$/);
    }
  });
});

describe('the metadata recorder', () => {
  it('stores keyed hashes, a user-agent family and whole seconds; never the address or the user agent', async () => {
    const recorder = createVoteMetadataRecorder({ pool: db.pool, ipHashKey: key, flushIntervalMs: 60_000 });
    const electionId = randomUUID();
    const userId = randomUUID();
    const atMs = Date.UTC(2026, 0, 2, 3, 4, 5, 678);
    const ua = 'Mozilla/5.0 (Linux; Android 14) Chrome/131.0.0.0 Mobile Safari/537.36';
    recorder.record({ electionId, voterNumber: 42, clientIp: '203.0.113.9', networkKey: '203.0.113.0/24', userAgent: ua, atMs });
    recorder.recordRegistration({ userId, clientIp: '2001:db8::1', networkKey: '2001:db8::/64', atMs });
    recorder.recordLogin({ userId, clientIp: '203.0.113.9', networkKey: '203.0.113.0/24', userAgent: 'curl/8.5.0', atMs });
    await recorder.stop();
    expect(recorder.stats()).toEqual({ recorded: 3, written: 3, dropped: 0 });

    const votes = await db.pool.query('SELECT * FROM vote_metadata WHERE election_id = $1', [electionId]);
    expect(votes.rows).toEqual([{
      election_id: electionId, voter_number: 42,
      ip_hash: ipHash(key, '203.0.113.9'), network_hash: networkHash(key, '203.0.113.0/24'),
      ua_family: 'chrome/android', recorded_at: new Date(Date.UTC(2026, 0, 2, 3, 4, 5)),
    }]);
    expect(votes.rows[0].ip_hash).toHaveLength(16);
    const accounts = await db.pool.query('SELECT event, ip_hash, ua_family FROM account_metadata WHERE user_id = $1 ORDER BY event DESC', [userId]);
    expect(accounts.rows).toEqual([
      { event: 'register', ip_hash: ipHash(key, '2001:db8::1'), ua_family: 'none' },
      { event: 'login', ip_hash: ipHash(key, '203.0.113.9'), ua_family: 'curl' },
    ]);
    // Nothing anywhere in those rows spells the address, the network or the user agent.
    const text = JSON.stringify((await db.pool.query('SELECT m::text AS t FROM vote_metadata m UNION ALL SELECT a::text FROM account_metadata a')).rows);
    for (const secret of ['203.0.113', '2001:db8', 'Android 14', '131.0']) expect(text).not.toContain(secret);
    // A different key gives different hashes: without the key the hashes lead nowhere.
    expect(ipHash('another key', '203.0.113.9').equals(ipHash(key, '203.0.113.9'))).toBe(false);
  });

  it('stores every field right whether its address, network and browser were seen in an earlier flush or not, past the buffer first size', async () => {
    const recorder = createVoteMetadataRecorder({ pool: db.pool, ipHashKey: key, flushIntervalMs: 60_000 });
    const electionId = randomUUID();
    const perFlush = 2_500;
    const ip = (i: number) => `192.0.${(i >> 8) & 255}.${i & 255}`;
    const network = (i: number) => `192.0.${(i >> 8) & 255}.0/24`;
    const userAgent = (i: number) => (i % 3 === 0 ? 'curl/8.5.0' : i % 3 === 1 ? 'Mozilla/5.0 (Windows NT 10.0) Firefox/133.0' : '');
    // The second flush's voters reuse the first flush's addresses for even numbers, new ones for odd.
    const address = (voter: number) => (voter >= perFlush && voter % 2 === 0 ? voter - perFlush : voter);
    for (let flush = 0; flush < 2; flush++) {
      for (let i = 0; i < perFlush; i++) {
        const voter = flush * perFlush + i;
        const a = address(voter);
        recorder.record({ electionId, voterNumber: voter, clientIp: ip(a), networkKey: network(a), userAgent: userAgent(a), atMs: Date.UTC(2026, 11, 3, 9, 0, flush) });
      }
      await recorder.flush();
    }
    await recorder.stop();
    expect(recorder.stats()).toEqual({ recorded: 2 * perFlush, written: 2 * perFlush, dropped: 0 });
    const stored = await db.pool.query('SELECT voter_number, ip_hash, network_hash, ua_family, recorded_at FROM vote_metadata WHERE election_id = $1 ORDER BY voter_number', [electionId]);
    expect(stored.rows).toHaveLength(2 * perFlush);
    const family = ['curl', 'firefox/windows', 'none'];
    stored.rows.forEach((row, voter) => {
      const a = address(voter);
      expect(row).toEqual({
        voter_number: voter, ip_hash: ipHash(key, ip(a)), network_hash: networkHash(key, network(a)), ua_family: family[a % 3],
        recorded_at: new Date(Date.UTC(2026, 11, 3, 9, 0, voter < perFlush ? 0 : 1)),
      });
    });
  });

  it('stores a voter number past 2^32, an upper-case election id and a time before 2000 as recorded (the binary COPY fields)', async () => {
    const recorder = createVoteMetadataRecorder({ pool: db.pool, ipHashKey: key, flushIntervalMs: 60_000 });
    const electionId = randomUUID();
    const voterNumber = 2 ** 40 + 7;
    recorder.record({ electionId: electionId.toUpperCase(), voterNumber, clientIp: '198.51.100.1', networkKey: '198.51.100.0/24', userAgent: '', atMs: Date.UTC(1999, 11, 31, 23, 59, 58, 999) });
    recorder.record({ electionId, voterNumber: Number.MAX_SAFE_INTEGER, clientIp: '198.51.100.1', networkKey: '198.51.100.0/24', userAgent: '', atMs: Date.UTC(2026, 11, 3, 8, 0, 1, 1) });
    await recorder.stop();
    const stored = await db.pool.query('SELECT voter_number::text AS v, recorded_at FROM vote_metadata WHERE election_id = $1 ORDER BY recorded_at', [electionId]);
    expect(stored.rows).toEqual([
      { v: String(voterNumber), recorded_at: new Date(Date.UTC(1999, 11, 31, 23, 59, 58)) },
      { v: String(Number.MAX_SAFE_INTEGER), recorded_at: new Date(Date.UTC(2026, 11, 3, 8, 0, 1)) },
    ]);
  });

  it('writes on its timer', async () => {
    const recorder = createVoteMetadataRecorder({ pool: db.pool, ipHashKey: key, flushIntervalMs: 50 });
    recorder.start();
    const electionId = randomUUID();
    try {
      for (let i = 0; i < 100; i++) recorder.record({ electionId, voterNumber: i, clientIp: '198.51.100.1', networkKey: '198.51.100.0/24', userAgent: '', atMs: Date.now() });
      await expect.poll(async () => Number((await db.pool.query('SELECT count(*) FROM vote_metadata WHERE election_id = $1', [electionId])).rows[0].count), { timeout: 60_000 }).toBe(100);
    } finally {
      await recorder.stop();
    }
  });

  it('writes a flush of several COPY chunks whole, each row once', async () => {
    const recorder = createVoteMetadataRecorder({ pool: db.pool, ipHashKey: key, flushIntervalMs: 60_000 });
    const electionId = randomUUID();
    const rows = metadataCopyChunkRows * 2 + 7;
    for (let i = 0; i < rows; i++) {
      recorder.record({ electionId, voterNumber: i, clientIp: `198.51.${i >> 8}.${i & 255}`, networkKey: `198.51.${i >> 8}.0/24`, userAgent: 'curl/8', atMs: Date.now() });
    }
    await recorder.stop();
    const stored = await db.pool.query('SELECT voter_number, ip_hash FROM vote_metadata WHERE election_id = $1 ORDER BY voter_number', [electionId]);
    expect(stored.rows.map((r) => Number(r.voter_number))).toEqual(Array.from({ length: rows }, (_, i) => i));
    expect(stored.rows[rows - 1].ip_hash).toEqual(ipHash(key, `198.51.${(rows - 1) >> 8}.${(rows - 1) & 255}`));
  });

  it('is bounded: beyond bufferRowsMax it drops and counts, and logs it', async () => {
    const warnings: unknown[] = [];
    const log = { warn: (...args: unknown[]) => warnings.push(args) } as never;
    const recorder = createVoteMetadataRecorder({ pool: db.pool, ipHashKey: key, flushIntervalMs: 60_000, bufferRowsMax: 10, log });
    const electionId = randomUUID();
    for (let i = 0; i < 25; i++) recorder.record({ electionId, voterNumber: i, clientIp: '198.51.100.1', networkKey: '198.51.100.0/24', userAgent: '', atMs: Date.now() });
    await recorder.stop();
    // Half full (5) starts an early write of those 5; the buffer then fills to 10 while that
    // write is in flight, and the last 10 are dropped.
    expect(recorder.stats()).toEqual({ recorded: 15, written: 15, dropped: 10 });
    expect(warnings).toHaveLength(1);
  });

  it('drops invalid records and counts a failed write, never throwing to the caller', async () => {
    const deadPool = createPool(db.url, 1, 'metadata-test-dead');
    await deadPool.end();
    const recorder = createVoteMetadataRecorder({ pool: deadPool, ipHashKey: key, flushIntervalMs: 60_000 });
    recorder.record({ electionId: 'not-a-uuid', voterNumber: 1, clientIp: 'x', networkKey: 'y', userAgent: '', atMs: 0 });
    recorder.record({ electionId: randomUUID(), voterNumber: -1, clientIp: 'x', networkKey: 'y', userAgent: '', atMs: 0 });
    recorder.recordLogin({ userId: 'nope', clientIp: 'x', networkKey: 'y', atMs: 0 });
    recorder.record({ electionId: randomUUID(), voterNumber: 1, clientIp: '198.51.100.1', networkKey: '198.51.100.0/24', userAgent: '', atMs: 0 });
    await recorder.stop();
    expect(recorder.stats()).toEqual({ recorded: 1, written: 0, dropped: 4 });
  });
});
