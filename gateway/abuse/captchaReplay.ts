// Where solved CAPTCHA challenges are remembered until they expire, so each solution is
// accepted once. A replay check that cannot be made answers 'unavailable' and the CAPTCHA is
// refused (captcha_unavailable): letting a solution through unchecked would make it reusable.
//
// - memory: one node (embedded mode). Bounded; when full of live entries it refuses rather than
//   forget one early, because forgetting is exactly what a replay needs.
// - redis: clusters at high rate, SET NX PX (one round trip, expires by itself).
// - postgres: clusters without Redis; a primary key does the check-and-set, a periodic purge
//   deletes expired rows.
import type { Redis } from 'ioredis';
import type { Pool } from '../../persistence/db.ts';
import { claimCaptchaSolution, purgeExpiredCaptchaSolutions } from '../../persistence/abuse.ts';
import { MapCursor } from './mapCursor.ts';

export type ClaimOutcome = 'claimed' | 'already_used' | 'unavailable';

export interface UsedChallengeStore {
  /** Marks `challengeId` used until `expiresAtMs`; 'already_used' if it was. */
  claim(challengeId: string, expiresAtMs: number, nowMs: number): ClaimOutcome | Promise<ClaimOutcome>;
}

/** Front entries dropped per claim when expired: amortised O(1), keeps pace with arrivals. */
const sweepPerClaim = 4;

export class MemoryUsedChallengeStore implements UsedChallengeStore {
  // id → expiry. Every challenge lives the same expiry time, so insertion order is (nearly)
  // expiry order: the cursor rests on the oldest live entry and drops entries as they expire.
  private readonly expiresAtMsById = new Map<string, number>();
  private readonly cursor = new MapCursor(this.expiresAtMsById);
  /** Claims refused because the store was full of live entries. */
  refusedFullCount = 0;

  constructor(private readonly entriesMax: number) {
    if (!(entriesMax >= 1)) throw new Error('entriesMax must be at least 1');
  }

  get size(): number {
    return this.expiresAtMsById.size;
  }

  claim(challengeId: string, expiresAtMs: number, nowMs: number): ClaimOutcome {
    this.sweep(nowMs, sweepPerClaim);
    const known = this.expiresAtMsById.get(challengeId);
    if (known !== undefined && known > nowMs) return 'already_used';
    if (known !== undefined) this.expiresAtMsById.delete(challengeId);
    if (this.expiresAtMsById.size >= this.entriesMax) {
      this.sweep(nowMs, this.entriesMax);
      if (this.expiresAtMsById.size >= this.entriesMax) {
        this.refusedFullCount++;
        return 'unavailable';
      }
    }
    this.expiresAtMsById.set(challengeId, expiresAtMs);
    return 'claimed';
  }

  /** Drops expired entries from the oldest on, stopping at the first live one. */
  private sweep(nowMs: number, entriesMax: number): void {
    for (let n = 0; n < entriesMax; n++) {
      const oldest = this.cursor.peek();
      if (!oldest || oldest[1] > nowMs) return;
      this.expiresAtMsById.delete(oldest[0]);
    }
  }
}

export class RedisUsedChallengeStore implements UsedChallengeStore {
  constructor(
    private readonly redis: Redis,
    private readonly keyPrefix: string,
    private readonly onError?: (error: unknown) => void,
  ) {}

  async claim(challengeId: string, expiresAtMs: number, nowMs: number): Promise<ClaimOutcome> {
    const ttlMs = Math.max(1, Math.ceil(expiresAtMs - nowMs));
    try {
      const reply = await this.redis.set(`${this.keyPrefix}captcha:${challengeId}`, '1', 'PX', ttlMs, 'NX');
      return reply === 'OK' ? 'claimed' : 'already_used';
    } catch (error) {
      this.onError?.(error);
      return 'unavailable';
    }
  }
}

export class PostgresUsedChallengeStore implements UsedChallengeStore {
  constructor(
    private readonly pool: Pool,
    private readonly onError?: (error: unknown) => void,
  ) {}

  async claim(challengeId: string, expiresAtMs: number): Promise<ClaimOutcome> {
    try {
      return (await claimCaptchaSolution(this.pool, challengeId, new Date(expiresAtMs))) ? 'claimed' : 'already_used';
    } catch (error) {
      this.onError?.(error);
      return 'unavailable';
    }
  }

  /** Deletes expired rows in batches of `rowsMax`; call on a timer. Returns rows deleted. */
  async purgeExpired(nowMs: number, rowsMax = 10_000): Promise<number> {
    return purgeExpiredCaptchaSolutions(this.pool, new Date(nowMs), rowsMax);
  }
}
