// Passwords are stored as memory-hard scrypt hashes in a self-describing string
// `scrypt$N$r$p$salt$hash` (salt and hash base64url), so the cost can be raised later and old
// hashes still verify (and are re-hashed at the next login: `needsRehash`).
// Emails are never stored: only HMAC-SHA256(emailHashKey, normalised email), enough to find the
// account at login and useless to whoever reads the table.
import { createHmac, randomBytes, scrypt, timingSafeEqual, type ScryptOptions } from 'node:crypto';

export const passwordCharsMin = 12;
export const passwordCharsMax = 256;
/** RFC 5321: a forward path is at most 256 octets including the angle brackets. */
export const emailCharsMax = 254;

export interface ScryptParams {
  /** CPU/memory cost, a power of two. */
  readonly cost: number;
  readonly blockSize: number;
  readonly parallelization: number;
}

/**
 * 32 MiB per hash. OWASP's equal-strength rows at this memory use p=3 (N=2^15, r=8, p=3); p=1
 * is the project's choice for login latency. Raising it later needs no migration: hashes carry
 * their parameters and are upgraded at the next successful login.
 */
export const defaultScryptParams: ScryptParams = { cost: 2 ** 15, blockSize: 8, parallelization: 1 };

const saltBytes = 16;
const hashBytes = 32;
// Bounds on what a stored hash may ask for, so a corrupt row cannot make us allocate gigabytes.
const costMax = 2 ** 20;
const blockSizeMax = 32;
const parallelizationMax = 16;

function scryptOptions(params: ScryptParams): ScryptOptions {
  // scrypt needs 128 * N * r bytes for V plus 128 * r * p for B; leave headroom.
  const maxmem = 128 * params.cost * params.blockSize + 128 * params.blockSize * params.parallelization + 1024 * 1024;
  return { N: params.cost, r: params.blockSize, p: params.parallelization, maxmem };
}

function scryptAsync(password: string, salt: Buffer, keyLength: number, params: ScryptParams): Promise<Buffer> {
  return new Promise((resolve, reject) => {
    scrypt(password.normalize('NFC'), salt, keyLength, scryptOptions(params), (error, key) => {
      if (error) reject(error);
      else resolve(key);
    });
  });
}

function checkParams(params: ScryptParams): void {
  const { cost, blockSize, parallelization } = params;
  if (!Number.isSafeInteger(cost) || cost < 2 || cost > costMax || (cost & (cost - 1)) !== 0) {
    throw new Error(`scrypt cost must be a power of two in 2..${costMax}: ${cost}`);
  }
  if (!Number.isSafeInteger(blockSize) || blockSize < 1 || blockSize > blockSizeMax) throw new Error(`scrypt blockSize out of range: ${blockSize}`);
  if (!Number.isSafeInteger(parallelization) || parallelization < 1 || parallelization > parallelizationMax) {
    throw new Error(`scrypt parallelization out of range: ${parallelization}`);
  }
}

export async function hashPassword(password: string, params: ScryptParams = defaultScryptParams): Promise<string> {
  checkParams(params);
  const salt = randomBytes(saltBytes);
  const hash = await scryptAsync(password, salt, hashBytes, params);
  return ['scrypt', params.cost, params.blockSize, params.parallelization, salt.toString('base64url'), hash.toString('base64url')].join('$');
}

interface DecodedHash {
  readonly params: ScryptParams;
  readonly salt: Buffer;
  readonly hash: Buffer;
}

const encodedPattern = /^scrypt\$(\d{1,8})\$(\d{1,3})\$(\d{1,3})\$([A-Za-z0-9_-]{16,88})\$([A-Za-z0-9_-]{16,88})$/;

function decodeHash(encoded: string): DecodedHash {
  const match = encodedPattern.exec(encoded);
  if (!match) throw new Error('stored password hash is not in the scrypt$N$r$p$salt$hash format');
  const params: ScryptParams = { cost: Number(match[1]), blockSize: Number(match[2]), parallelization: Number(match[3]) };
  checkParams(params);
  return { params, salt: Buffer.from(match[4] as string, 'base64url'), hash: Buffer.from(match[5] as string, 'base64url') };
}

/** True when `password` matches `encoded`. A malformed stored hash is a bug: it throws. */
export async function verifyPassword(password: string, encoded: string): Promise<boolean> {
  const decoded = decodeHash(encoded);
  const candidate = await scryptAsync(password, decoded.salt, decoded.hash.length, decoded.params);
  return timingSafeEqual(candidate, decoded.hash);
}

/** True when `encoded` was made with other parameters than `params`: re-hash at the next login. */
export function needsRehash(encoded: string, params: ScryptParams = defaultScryptParams): boolean {
  const decoded = decodeHash(encoded);
  return (
    decoded.params.cost !== params.cost ||
    decoded.params.blockSize !== params.blockSize ||
    decoded.params.parallelization !== params.parallelization ||
    decoded.hash.length !== hashBytes
  );
}

export function normaliseEmail(email: string): string {
  return email.trim().toLowerCase();
}

/** HMAC-SHA256(emailHashKey, trimmed lower-case email): the only form of an email we keep. */
export function emailHash(emailHashKey: string, email: string): Buffer {
  return createHmac('sha256', emailHashKey).update(normaliseEmail(email), 'utf8').digest();
}

export class KdfOverloadedError extends Error {
  constructor() {
    super('too many password hashes are waiting');
    this.name = 'KdfOverloadedError';
  }
}

/**
 * Admission for the KDF. scrypt runs on libuv's small thread pool (4 threads by default), which
 * file and DNS work share: a login storm must neither starve them nor queue without end. At most
 * `concurrencyMax` hashes run at once and `queueMax` wait; beyond that `KdfOverloadedError`.
 */
export class KdfLimiter {
  private running = 0;
  private readonly waiting: (() => void)[] = [];

  constructor(
    readonly concurrencyMax: number,
    readonly queueMax: number,
  ) {
    if (!Number.isSafeInteger(concurrencyMax) || concurrencyMax < 1) throw new Error(`concurrencyMax must be >= 1: ${concurrencyMax}`);
    if (!Number.isSafeInteger(queueMax) || queueMax < 0) throw new Error(`queueMax must be >= 0: ${queueMax}`);
  }

  get runningCount(): number {
    return this.running;
  }

  get waitingCount(): number {
    return this.waiting.length;
  }

  async run<T>(work: () => Promise<T>): Promise<T> {
    if (this.running >= this.concurrencyMax) {
      if (this.waiting.length >= this.queueMax) throw new KdfOverloadedError();
      await new Promise<void>((resolve) => this.waiting.push(resolve));
    } else {
      this.running++;
    }
    // Here this call holds one of the `running` slots (a finishing call hands its slot over).
    try {
      return await work();
    } finally {
      const next = this.waiting.shift();
      if (next) next();
      else this.running--;
    }
  }
}
