// Revoked sessions, known in-process so `authenticate` stays I/O-free on the hot path.
// A logout on this node is added at once; other nodes' logouts arrive through a poller that reads
// revoked_sessions rows after its cursor every `pollIntervalMs`. The cursor steps back
// `overlapMs` each poll, because rows are stamped when their transaction starts and can commit
// out of order; re-reading a row is harmless (the map is keyed by session id).
// An entry lives until every access token of its session has expired, then it is pruned.
import type { Logger } from '../../infra/logger.ts';
import type { Pool } from '../../persistence/db.ts';
import { deleteExpiredRevokedSessions, revokedSessionsAfter, type RevokedSessionRecord } from '../../persistence/users.ts';

export interface RevocationOptions {
  readonly pollIntervalMs: number;
  /** How far each poll steps back behind the newest row it has seen. */
  readonly overlapMs: number;
  readonly pageRowsMax: number;
  /** Pages one poll reads at most; the next poll resumes exactly where this one stopped. */
  readonly pollPagesMax: number;
  /** Entries kept at most; beyond, the oldest entry is evicted and a warning logged. */
  readonly entriesMax: number;
  /** Every this many polls, expired rows are deleted from the table (any node may do it). */
  readonly pruneEveryPolls: number;
  readonly pruneRowsMax: number;
}

export const defaultRevocationOptions: RevocationOptions = {
  pollIntervalMs: 2000,
  overlapMs: 10_000,
  pageRowsMax: 5000,
  pollPagesMax: 20,
  entriesMax: 1_000_000,
  pruneEveryPolls: 300,
  pruneRowsMax: 10_000,
};

const zeroUuid = '00000000-0000-0000-0000-000000000000';

interface Cursor {
  readonly revokedAtUs: number;
  readonly sessionId: string;
}

function isAfter(a: Cursor, b: Cursor): boolean {
  return a.revokedAtUs > b.revokedAtUs || (a.revokedAtUs === b.revokedAtUs && a.sessionId > b.sessionId);
}

export class SessionRevocations {
  /** sessionId → ms since the epoch after which no access token of that session is valid. */
  private readonly revoked = new Map<string, number>();
  private readonly options: RevocationOptions;
  /** Newest row seen (by revoked_at, then session id); the next poll starts `overlapMs` before it. */
  private newestSeen: Cursor = { revokedAtUs: 0, sessionId: zeroUuid };
  /** Set when a poll stopped at pollPagesMax: the next one resumes exactly here, no overlap. */
  private resumeAt: Cursor | undefined;
  private timer: NodeJS.Timeout | undefined;
  private polling: Promise<void> | undefined;
  private pollsDone = 0;
  private evictedTotal = 0;

  constructor(
    private readonly pool: Pool,
    private readonly log: Logger,
    private readonly nowMs: () => number,
    options: Partial<RevocationOptions> = {},
  ) {
    this.options = { ...defaultRevocationOptions, ...options };
    if (this.options.pageRowsMax < 1 || this.options.pollPagesMax < 1) throw new Error('pageRowsMax and pollPagesMax must be >= 1');
    if (this.options.entriesMax < 1) throw new Error('entriesMax must be >= 1');
  }

  /** Hot path: one Map lookup. */
  isRevoked(sessionId: string): boolean {
    return this.revoked.has(sessionId);
  }

  get size(): number {
    return this.revoked.size;
  }

  get evictedCount(): number {
    return this.evictedTotal;
  }

  add(session: Pick<RevokedSessionRecord, 'sessionId' | 'expiresAtMs'>): void {
    if (session.expiresAtMs <= this.nowMs()) return;
    const known = this.revoked.get(session.sessionId);
    if (known !== undefined) {
      if (session.expiresAtMs > known) this.revoked.set(session.sessionId, session.expiresAtMs);
      return;
    }
    if (this.revoked.size >= this.options.entriesMax) {
      // Insertion order is roughly expiry order: the first entry is the closest to expiring.
      const oldest = this.revoked.keys().next();
      if (!oldest.done) this.revoked.delete(oldest.value);
      this.evictedTotal++;
      if (this.evictedTotal % 1000 === 1) {
        this.log.warn({ entriesMax: this.options.entriesMax, evictedTotal: this.evictedTotal }, 'revoked-session map full: evicting the oldest entries');
      }
    }
    this.revoked.set(session.sessionId, session.expiresAtMs);
  }

  /** Loads every revoked session that has not expired, then polls on a timer. */
  async start(): Promise<void> {
    if (this.timer) return;
    this.newestSeen = { revokedAtUs: 0, sessionId: zeroUuid };
    this.resumeAt = undefined;
    // Unbounded pages on purpose: at start we must know every live revocation before serving.
    await this.readPages(Number.MAX_SAFE_INTEGER);
    this.timer = setInterval(() => { void this.pollOnce(); }, this.options.pollIntervalMs);
    this.timer.unref();
  }

  async stop(): Promise<void> {
    if (this.timer) clearInterval(this.timer);
    this.timer = undefined;
    await this.polling;
  }

  /** One poll: new rows, expired entries out; never overlaps itself, never throws. */
  pollOnce(): Promise<void> {
    if (this.polling) return this.polling;
    this.polling = (async () => {
      try {
        await this.readPages(this.options.pollPagesMax);
        this.pruneMemory();
        this.pollsDone++;
        if (this.pollsDone % this.options.pruneEveryPolls === 0) {
          const deleted = await deleteExpiredRevokedSessions(this.pool, new Date(this.nowMs()), this.options.pruneRowsMax);
          if (deleted > 0) this.log.debug({ deleted }, 'deleted expired revoked sessions');
        }
      } catch (error) {
        this.log.warn({ err: error }, 'revoked-session poll failed; retrying at the next interval');
      } finally {
        this.polling = undefined;
      }
    })();
    return this.polling;
  }

  /** Reads up to `pagesMax` pages; true when it stopped because of that limit. */
  private async readPages(pagesMax: number): Promise<boolean> {
    let cursor: Cursor = this.resumeAt ?? (this.options.overlapMs > 0
      ? { revokedAtUs: Math.max(0, this.newestSeen.revokedAtUs - this.options.overlapMs * 1000), sessionId: zeroUuid }
      : this.newestSeen);
    for (let page = 0; page < pagesMax; page++) {
      const rows = await revokedSessionsAfter(this.pool, cursor, new Date(this.nowMs()), this.options.pageRowsMax);
      for (const row of rows) {
        this.add(row);
        if (isAfter(row, this.newestSeen)) this.newestSeen = { revokedAtUs: row.revokedAtUs, sessionId: row.sessionId };
      }
      const last = rows[rows.length - 1];
      if (!last || rows.length < this.options.pageRowsMax) {
        this.resumeAt = undefined;
        return false;
      }
      cursor = { revokedAtUs: last.revokedAtUs, sessionId: last.sessionId };
    }
    this.resumeAt = cursor;
    return true;
  }

  private pruneMemory(): void {
    const now = this.nowMs();
    for (const [sessionId, expiresAtMs] of this.revoked) if (expiresAtMs <= now) this.revoked.delete(sessionId);
  }
}
