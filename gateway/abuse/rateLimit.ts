// Token-bucket rate limits keyed by (action, scope, key): scope is who is limited (a user, a
// client IP, a network), action is what they do (register, login, vote). One `take` checks every
// bucket a request touches at once and is all-or-nothing: when the IP bucket refuses, the user
// bucket keeps its token, so a client held back by one limit is not also drained in the others.
//
// Buckets hold their level and the time it was last written; the refill since then is computed
// on read, so an idle bucket costs nothing and one that has refilled to capacity is the same as
// no bucket at all. That is what lets both backends forget idle buckets (a round-robin sweep
// here, a TTL in Redis) without changing any decision.
import { ApiError } from '../errors.ts';
import { MapCursor } from './mapCursor.ts';

export type RateScope = 'user' | 'ip' | 'network';
/**
 * `register`: registrations an address may make without a CAPTCHA; `register_challenged`: those
 * past that allowance, each asked for a CAPTCHA, until this one refuses (see feature.ts).
 */
export type RateAction = 'register' | 'register_challenged' | 'login' | 'vote';

export const rateScopes: readonly RateScope[] = ['user', 'ip', 'network'];
export const rateActions: readonly RateAction[] = ['register', 'register_challenged', 'login', 'vote'];

export interface BucketLimit {
  /** Largest burst: the bucket starts full and never holds more. */
  readonly capacity: number;
  /** Sustained rate once the burst is spent. */
  readonly refillPerSecond: number;
}

/** Per action, the limit of each scope; a scope left out is not limited for that action. */
export type RateLimits = Readonly<Record<RateAction, Readonly<Partial<Record<RateScope, BucketLimit>>>>>;

export interface BucketCheck extends BucketLimit {
  readonly action: RateAction;
  readonly scope: RateScope;
  /** The user id, canonical IP or network key (see clientAddress.ts). */
  readonly key: string;
  /** Tokens this request needs; 1 unless told. */
  readonly cost?: number;
}

export type RateDecision =
  | {
      readonly outcome: 'allowed';
      /** The backend could not be asked and the limiter is configured to fail open. */
      readonly degraded?: true;
    }
  | {
      readonly outcome: 'limited';
      /** The bucket that refused; when several did, the one that frees up last. */
      readonly scope: RateScope;
      readonly action: RateAction;
      /** When the request would be allowed if nothing else takes tokens meanwhile. */
      readonly retryAfterMs: number;
    };

export interface RateLimiter {
  /** Takes `cost` tokens from every bucket in `checks`, or from none. */
  take(checks: readonly BucketCheck[], nowMs: number): Promise<RateDecision> | RateDecision;
  close?(): Promise<void>;
}

/** One request touches at most one bucket per scope; more means a caller bug. */
export const checksPerTakeMax = 8;

export const rateAllowed: RateDecision = Object.freeze({ outcome: 'allowed' });
export const rateAllowedDegraded: RateDecision = Object.freeze({ outcome: 'allowed', degraded: true });

/**
 * Defaults, chosen for live TV, where a vote window opens on air and everyone votes in the same
 * ten seconds, and where one address is often a crowd: a mobile carrier's CGNAT puts thousands
 * of subscribers behind one IPv4, a venue's Wi-Fi a whole audience. So the per-address limits
 * are sized for a crowd, and the limit that stops a script is the per-account one: every vote
 * needs a signed-in account, and accounts from one address are challenged, then refused.
 * gateway/abuse/README.md gives the reason for each number.
 * - vote, user: the real limit. A viewer votes once per election; 5 lets a few retries and a
 *   couple of simultaneous elections through, then one every 2 s. One account or one token
 *   sending repeatedly meets this whatever address it comes from.
 * - vote, ip: a flood guard, not a per-person limit: 2,000 at once (1,000 viewers behind one
 *   address voting in the same second, each retrying once) and 200/s after that.
 * - vote, network (/24, /64): 10× the address: a carrier's /24 is many CGNAT addresses.
 * - register: 10 per address without a CAPTCHA, then one every 5 s; past that allowance a
 *   registration needs a solved CAPTCHA (register_challenged) rather than being refused.
 * - register_challenged: 200 per address, then 2/s, refused beyond (429). Asking for the CAPTCHA
 *   and answering it take one each, so about 100 people behind one address register at once.
 * - login: the user key is the account being tried (credential stuffing is many passwords on one
 *   account): 10 then one per 10 s. Per address 30 then 1/s: a login costs a memory-hard hash.
 * Operators change these per deployment (LIVEVOTE_RATE_LIMIT_* in infra/config.ts).
 */
export const defaultRateLimits: RateLimits = {
  vote: {
    user: { capacity: 5, refillPerSecond: 0.5 },
    ip: { capacity: 2000, refillPerSecond: 200 },
    network: { capacity: 20_000, refillPerSecond: 2000 },
  },
  register: {
    ip: { capacity: 10, refillPerSecond: 0.2 },
    network: { capacity: 100, refillPerSecond: 2 },
  },
  register_challenged: {
    ip: { capacity: 200, refillPerSecond: 2 },
    network: { capacity: 2000, refillPerSecond: 20 },
  },
  login: {
    user: { capacity: 10, refillPerSecond: 0.1 },
    ip: { capacity: 30, refillPerSecond: 1 },
    network: { capacity: 300, refillPerSecond: 10 },
  },
};

export interface RateSubjects {
  /** The user id (vote), or a keyed hash of the email being tried (login); absent on register. */
  readonly userKey?: string;
  readonly ip: string;
  readonly networkKey: string;
}

/** The checks one request of `action` makes, in the order scope-user, ip, network. */
export function bucketChecksFor(limits: RateLimits, action: RateAction, subjects: RateSubjects): BucketCheck[] {
  const perScope = limits[action];
  const checks: BucketCheck[] = [];
  if (perScope.user && subjects.userKey !== undefined) checks.push({ action, scope: 'user', key: subjects.userKey, ...perScope.user });
  if (perScope.ip) checks.push({ action, scope: 'ip', key: subjects.ip, ...perScope.ip });
  if (perScope.network) checks.push({ action, scope: 'network', key: subjects.networkKey, ...perScope.network });
  return checks;
}

/** Retry-After is whole seconds; round up so a client that obeys it is allowed. */
export function retryAfterSeconds(retryAfterMs: number): number {
  return Math.max(1, Math.ceil(retryAfterMs / 1000));
}

/** The 429 a route throws for a `limited` decision, with Retry-After. */
export function rateLimitedError(decision: Extract<RateDecision, { outcome: 'limited' }>): ApiError {
  const seconds = retryAfterSeconds(decision.retryAfterMs);
  return new ApiError(
    'rate_limited',
    `Too many ${decision.action === 'register_challenged' ? 'register' : decision.action} requests from this ${decision.scope === 'network' ? 'network' : decision.scope === 'ip' ? 'address' : 'account'}; retry in ${seconds} s.`,
    { scope: decision.scope, retryAfterMs: decision.retryAfterMs },
    { 'retry-after': String(seconds) },
  );
}

export class RateLimitConfigError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'RateLimitConfigError';
  }
}

/** Refuses limits no request could satisfy; called on every check list in both backends. */
export function assertChecks(checks: readonly BucketCheck[]): void {
  if (checks.length > checksPerTakeMax) throw new RateLimitConfigError(`at most ${checksPerTakeMax} buckets per take, got ${checks.length}`);
  for (const check of checks) {
    const cost = check.cost ?? 1;
    if (!(check.refillPerSecond > 0) || !Number.isFinite(check.refillPerSecond)) {
      throw new RateLimitConfigError(`${check.action}/${check.scope}: refillPerSecond must be a positive number`);
    }
    if (!(check.capacity >= 1) || !Number.isFinite(check.capacity)) throw new RateLimitConfigError(`${check.action}/${check.scope}: capacity must be at least 1`);
    if (!(cost > 0) || cost > check.capacity) throw new RateLimitConfigError(`${check.action}/${check.scope}: cost must be in (0, capacity]`);
  }
}

/** Refuses a limits table with a bucket no single request could pass; for start-up. */
export function assertRateLimits(limits: RateLimits): void {
  for (const action of rateActions) {
    for (const scope of rateScopes) {
      const limit = limits[action][scope];
      if (limit) assertChecks([{ action, scope, key: '', ...limit }]);
    }
  }
}

interface MemoryBucket {
  tokens: number;
  updatedMs: number;
  capacity: number;
  refillPerMs: number;
}

export interface MemoryRateLimiterOptions {
  /** Buckets kept at most; beyond, one is forgotten (an idle one if the sweep finds one). */
  readonly bucketsMax: number;
}

/** Entries looked at, when the limiter is full, for an idle bucket to forget instead of a busy one. */
const evictionSearchMax = 16;
/**
 * Entries of each table a take touches that the sweep looks at: more than the one bucket the take
 * can add there, so a table holds about its buckets active within one refill time.
 */
const sweepPerTableTouched = 2;

/** `nowMs` is the limiter's time, never before a bucket's `updatedMs` (MemoryRateLimiter.take). */
function levelAt(bucket: MemoryBucket, nowMs: number): number {
  const level = bucket.tokens + (nowMs - bucket.updatedMs) * bucket.refillPerMs;
  return level < bucket.capacity ? level : bucket.capacity;
}

/** The buckets of one (action, scope), keyed by the check's key as it comes. */
interface BucketTable {
  readonly buckets: Map<string, MemoryBucket>;
  readonly cursor: MapCursor<string, MemoryBucket>;
}

/**
 * In-process buckets for embedded mode (one node sees every request). Synchronous: a take runs
 * to completion on the event loop, which is what makes it atomic.
 *
 * A table per (action, scope), keyed by the bare key: no key string built per check, and a
 * vote's short-lived address buckets (2,000 tokens refilled at 200/s: gone in milliseconds) are
 * not swept among the user buckets that live seconds. One map of every bucket under a built key
 * cost a vote with rate limits on ~16 µs of the node's CPU, a take ~2.5x what this does
 * (bench/README.md, "Sixteenth look").
 *
 * Memory: every take also looks at a few buckets of each table it touches, and at one of a table
 * taken in turn, and forgets those that have refilled (indistinguishable from absent), visiting
 * more entries than it can create, so each table holds about its buckets active within one refill
 * time. When the limiter is full anyway (an attack on many keys), one bucket is forgotten early
 * (it refills early) and counted.
 */
export class MemoryRateLimiter implements RateLimiter {
  private readonly tables = new Map<string, BucketTable>();
  /** Every table, in the order the sweep of idle tables visits them. */
  private readonly tableList: BucketTable[] = [];
  private idleSweepIndex = 0;
  private latestNowMs = -Infinity;
  private bucketCount = 0;
  /** Buckets forgotten to make room (early or not): a take's reads are stale once it moves. */
  private evictions = 0;
  private readonly touched: BucketTable[] = [];
  private readonly found: (MemoryBucket | undefined)[] = [];
  private readonly levels: number[] = [];
  /** Buckets forgotten before they had refilled because the limiter was full. */
  evictedEarlyCount = 0;

  constructor(private readonly options: MemoryRateLimiterOptions) {
    if (!(options.bucketsMax >= 1)) throw new RateLimitConfigError('bucketsMax must be at least 1');
  }

  get size(): number {
    return this.bucketCount;
  }

  take(checks: readonly BucketCheck[], givenNowMs: number): RateDecision {
    assertChecks(checks);
    // The limiter's time is the latest it was given: a clock that steps back stands still, so it
    // mints nothing, and the sweeps stay exact (a bucket forgotten as full at the latest time
    // would not have been full at an earlier one).
    if (givenNowMs > this.latestNowMs) this.latestNowMs = givenNowMs;
    const nowMs = this.latestNowMs;
    // The sweeps first, so that no bucket read below is forgotten before it is written.
    for (let i = 0; i < checks.length; i++) {
      const table = this.tableOf(checks[i] as BucketCheck);
      this.touched[i] = table;
      this.sweep(table, nowMs, sweepPerTableTouched);
    }
    // Tables no take touches any more (an action that stopped) are forgotten too, one entry a take.
    if (this.tableList.length > 0) {
      this.idleSweepIndex = (this.idleSweepIndex + 1) % this.tableList.length;
      this.sweep(this.tableList[this.idleSweepIndex] as BucketTable, nowMs, 1);
    }
    let refusing: BucketCheck | undefined;
    let refusingWaitMs = 0;
    for (let i = 0; i < checks.length; i++) {
      const check = checks[i] as BucketCheck;
      const bucket = (this.touched[i] as BucketTable).buckets.get(check.key);
      const level = bucket ? levelAt(bucket, nowMs) : check.capacity;
      this.found[i] = bucket;
      this.levels[i] = level;
      const cost = check.cost ?? 1;
      if (level < cost) {
        const waitMs = Math.ceil(((cost - level) * 1000) / check.refillPerSecond);
        if (waitMs > refusingWaitMs || !refusing) {
          refusing = check;
          refusingWaitMs = waitMs;
        }
      }
    }
    if (refusing) return { outcome: 'limited', scope: refusing.scope, action: refusing.action, retryAfterMs: Math.max(1, refusingWaitMs) };
    const evictedBefore = this.evictions;
    for (let i = 0; i < checks.length; i++) {
      const check = checks[i] as BucketCheck;
      const table = this.touched[i] as BucketTable;
      const tokens = (this.levels[i] as number) - (check.cost ?? 1);
      // Making room for an earlier check may have forgotten this one's bucket: read it again then.
      const bucket = this.evictions === evictedBefore ? this.found[i] : table.buckets.get(check.key);
      if (bucket) {
        // Updated in place: no delete/insert churn in the map on the hot path.
        bucket.tokens = tokens;
        bucket.updatedMs = nowMs;
        bucket.capacity = check.capacity;
        bucket.refillPerMs = check.refillPerSecond / 1000;
      } else {
        this.makeRoom(table, nowMs);
        table.buckets.set(check.key, { tokens, updatedMs: nowMs, capacity: check.capacity, refillPerMs: check.refillPerSecond / 1000 });
        this.bucketCount++;
      }
    }
    return rateAllowed;
  }

  private tableOf(check: BucketCheck): BucketTable {
    const id = `${check.action}\u0000${check.scope}`;
    let table = this.tables.get(id);
    if (table === undefined) {
      const buckets = new Map<string, MemoryBucket>();
      table = { buckets, cursor: new MapCursor(buckets) };
      this.tables.set(id, table);
      this.tableList.push(table);
    }
    return table;
  }

  /** Forgets, among the next `entriesMax` buckets under the table's cursor, those that have refilled. */
  private sweep(table: BucketTable, nowMs: number, entriesMax: number): void {
    for (let n = 0; n < entriesMax; n++) {
      const entry = table.cursor.advance();
      if (!entry) return;
      if (levelAt(entry[1], nowMs) >= entry[1].capacity) this.forget(table, entry[0]);
    }
  }

  private forget(table: BucketTable, key: string): void {
    if (table.buckets.delete(key)) this.bucketCount--;
  }

  /** Makes room for one bucket in `table`: forgets from it, or, when it is empty, from the largest table. */
  private makeRoom(table: BucketTable, nowMs: number): void {
    while (this.bucketCount >= this.options.bucketsMax) {
      let from = table;
      if (from.buckets.size === 0) for (const other of this.tableList) if (other.buckets.size > from.buckets.size) from = other;
      let victim: [string, MemoryBucket] | undefined;
      for (let n = 0; n < evictionSearchMax; n++) {
        victim = from.cursor.advance();
        if (!victim || levelAt(victim[1], nowMs) >= victim[1].capacity) break;
      }
      if (!victim) return;
      if (levelAt(victim[1], nowMs) < victim[1].capacity) this.evictedEarlyCount++;
      this.forget(from, victim[0]);
      this.evictions++;
    }
  }
}

export function memoryRateLimiter(options: MemoryRateLimiterOptions): MemoryRateLimiter {
  return new MemoryRateLimiter(options);
}
