import { createHmac, scryptSync } from 'node:crypto';
import { describe, expect, it } from 'vitest';
import {
  KdfLimiter, KdfOverloadedError, defaultScryptParams, emailHash, hashPassword, needsRehash, normaliseEmail, verifyPassword,
  type ScryptParams,
} from './passwords.ts';

// Cheap parameters for most tests; one test runs the real ones.
const cheap: ScryptParams = { cost: 2 ** 10, blockSize: 8, parallelization: 1 };

describe('password hashing', () => {
  it('uses scrypt N=2^15 r=8 p=1 with a 16-byte salt by default, encoded with its parameters', async () => {
    expect(defaultScryptParams).toEqual({ cost: 32768, blockSize: 8, parallelization: 1 });
    const encoded = await hashPassword('correct horse battery staple');
    const [scheme, n, r, p, salt, hash] = encoded.split('$') as string[];
    expect([scheme, n, r, p]).toEqual(['scrypt', '32768', '8', '1']);
    expect(Buffer.from(salt as string, 'base64url')).toHaveLength(16);
    expect(Buffer.from(hash as string, 'base64url')).toHaveLength(32);
    // Independently recomputed: the encoding is plain scrypt, nothing home-made.
    const expected = scryptSync('correct horse battery staple', Buffer.from(salt as string, 'base64url'), 32, { N: 32768, r: 8, p: 1, maxmem: 64 * 1024 * 1024 });
    expect(Buffer.from(hash as string, 'base64url')).toEqual(expected);
    expect(await verifyPassword('correct horse battery staple', encoded)).toBe(true);
  });

  it('verifies the right password and refuses a wrong one', async () => {
    const encoded = await hashPassword('a long enough password', cheap);
    expect(await verifyPassword('a long enough password', encoded)).toBe(true);
    expect(await verifyPassword('a long enough passwore', encoded)).toBe(false);
    expect(await verifyPassword('', encoded)).toBe(false);
  });

  it('salts: the same password hashes differently twice', async () => {
    expect(await hashPassword('same password here', cheap)).not.toBe(await hashPassword('same password here', cheap));
  });

  it('treats canonically equal Unicode spellings as the same password', async () => {
    const encoded = await hashPassword('caf\u00e9-password-1', cheap);
    expect(await verifyPassword('cafe\u0301-password-1', encoded)).toBe(true);
  });

  it('verifies hashes made with other parameters, and says they need re-hashing', async () => {
    const old = await hashPassword('an older password', cheap);
    expect(await verifyPassword('an older password', old)).toBe(true);
    expect(needsRehash(old)).toBe(true);
    expect(needsRehash(old, cheap)).toBe(false);
  });

  it.each([
    ['not scrypt', 'bcrypt$2b$10$abc'],
    ['missing parts', 'scrypt$1024$8$1$c2FsdHNhbHRzYWx0c2FsdA'],
    ['cost not a power of two', 'scrypt$1000$8$1$c2FsdHNhbHRzYWx0c2FsdA$aGFzaGhhc2hoYXNoaGFzaGhhc2hoYXNoaGFzaGhhc2g'],
    ['cost too large', 'scrypt$67108864$8$1$c2FsdHNhbHRzYWx0c2FsdA$aGFzaGhhc2hoYXNoaGFzaGhhc2hoYXNoaGFzaGhhc2g'],
    ['block size too large', 'scrypt$1024$99$1$c2FsdHNhbHRzYWx0c2FsdA$aGFzaGhhc2hoYXNoaGFzaGhhc2hoYXNoaGFzaGhhc2g'],
  ])('a corrupt stored hash (%s) is a bug: it throws', async (_name, encoded) => {
    await expect(verifyPassword('whatever password', encoded)).rejects.toThrow();
  });
});

describe('email hash', () => {
  const key = 'email-hash-key';

  it('is HMAC-SHA256(key, trimmed lower-case email)', () => {
    const expected = createHmac('sha256', key).update('viewer@example.com').digest();
    expect(emailHash(key, '  Viewer@Example.COM ')).toEqual(expected);
    expect(normaliseEmail(' A@B.C ')).toBe('a@b.c');
  });

  it('depends on the key', () => {
    expect(emailHash(key, 'a@b.co')).not.toEqual(emailHash(`${key}2`, 'a@b.co'));
  });
});

describe('KDF admission', () => {
  it('runs at most concurrencyMax at once, queues up to queueMax, refuses beyond', async () => {
    const limiter = new KdfLimiter(2, 1);
    const releases: (() => void)[] = [];
    const gate = () => new Promise<void>((resolve) => releases.push(resolve));
    const running = [limiter.run(gate), limiter.run(gate)];
    const queued = limiter.run(gate);
    expect(limiter.runningCount).toBe(2);
    expect(limiter.waitingCount).toBe(1);
    await expect(limiter.run(gate)).rejects.toBeInstanceOf(KdfOverloadedError);
    releases.shift()?.();
    await running[0];
    // The finished call handed its slot to the queued one.
    await new Promise((resolve) => setImmediate(resolve));
    expect(limiter.runningCount).toBe(2);
    expect(limiter.waitingCount).toBe(0);
    for (const release of releases.splice(0)) release();
    await Promise.all([running[1], queued]);
    expect(limiter.runningCount).toBe(0);
  });

  it('frees the slot when the work fails', async () => {
    const limiter = new KdfLimiter(1, 0);
    await expect(limiter.run(() => Promise.reject(new Error('boom')))).rejects.toThrow('boom');
    expect(limiter.runningCount).toBe(0);
    await expect(limiter.run(() => Promise.resolve(7))).resolves.toBe(7);
  });
});
