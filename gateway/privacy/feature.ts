// The privacy controls as a gateway feature: the export and erasure routes, the request-metadata
// recorder (the vote, register and login routes call `metadata.record…`), and the hourly
// retention purge. PRIVACY.md says what is stored and why.
import type { Registry } from 'prom-client';
import type { Feature } from '../app.ts';
import type { KdfLimiter } from '../auth/passwords.ts';
import type { Config } from '../../infra/config.ts';
import type { Logger } from '../../infra/logger.ts';
import type { Secrets } from '../../infra/secrets.ts';
import type { Pool } from '../../persistence/db.ts';
import { purgeExpiredMetadata, type PurgeResult } from '../../persistence/privacy.ts';
import type { RevokedSessionRecord } from '../../persistence/users.ts';
import { createVoteMetadataRecorder, type VoteMetadataRecorder } from '../../persistence/voteMetadata.ts';
import { privacyRoutes } from './routes.ts';
import { Privacy } from './service.ts';

export const retentionPurgeIntervalMsDefault = 3600 * 1000;

export interface PrivacyFeature extends Feature {
  /** Request metadata: `record` on an accepted vote, `recordRegistration` / `recordLogin` on those. */
  readonly metadata: VoteMetadataRecorder;
  /** One retention purge now (the feature also runs one at start and then every hour). */
  purgeExpiredMetadata(): Promise<PurgeResult>;
}

export interface PrivacyFeatureDeps {
  readonly pool: Pool;
  readonly secrets: Secrets;
  readonly log: Logger;
  readonly config: Config;
  /**
   * Sessions an erasure revoked: hand them to the auth feature's in-memory revocation list so
   * the erased user's access tokens stop at once on this node (other nodes, and this one without
   * the hook, pick them up from revoked_sessions within the revocation poll interval, 2 s).
   */
  readonly onSessionsRevoked?: (sessions: readonly RevokedSessionRecord[]) => void;
  readonly metricsRegistry?: Registry;
  readonly nowMs?: () => number;
  /** Tests: a faster metadata flush, a different purge cadence, a shared KDF limiter. */
  readonly metadataFlushIntervalMs?: number;
  readonly retentionPurgeIntervalMs?: number;
  readonly kdfLimiter?: KdfLimiter;
}

export function createPrivacyFeature(deps: PrivacyFeatureDeps): PrivacyFeature {
  const nowMs = deps.nowMs ?? Date.now;
  const log = deps.log.child({ component: 'privacy' });
  const { metadataRetentionDays, metadataBufferRowsMax } = deps.config.privacy;
  const metadata = createVoteMetadataRecorder({
    pool: deps.pool,
    ipHashKey: deps.secrets.ipHashKey,
    bufferRowsMax: metadataBufferRowsMax,
    flushIntervalMs: deps.metadataFlushIntervalMs,
    log,
    metricsRegistry: deps.metricsRegistry,
  });
  const privacy = new Privacy({
    pool: deps.pool, log, nowMs, metadataRetentionDays, onSessionsRevoked: deps.onSessionsRevoked, kdfLimiter: deps.kdfLimiter,
  });
  const retention = createRetentionScheduler({
    pool: deps.pool, log, nowMs, retentionDays: metadataRetentionDays, intervalMs: deps.retentionPurgeIntervalMs,
  });

  return {
    routes: privacyRoutes({ privacy }),
    metadata,
    purgeExpiredMetadata: () => retention.runOnce(),
    async start() {
      metadata.start();
      retention.start();
    },
    async stop() {
      await retention.stop();
      await metadata.stop();
    },
  };
}

export interface RetentionScheduler {
  /** Purges once soon after start (in the background), then every interval. */
  start(): void;
  stop(): Promise<void>;
  /** One purge now; concurrent calls share it. Throws what the database throws. */
  runOnce(): Promise<PurgeResult>;
}

/**
 * The retention purge on a timer. Every node may run it: concurrent purges delete disjoint or
 * already-deleted rows, which is harmless. A failed purge is logged and retried next interval.
 */
export function createRetentionScheduler(deps: {
  pool: Pool;
  log: Logger;
  retentionDays: number;
  nowMs?: () => number;
  intervalMs?: number;
}): RetentionScheduler {
  const nowMs = deps.nowMs ?? Date.now;
  const intervalMs = deps.intervalMs ?? retentionPurgeIntervalMsDefault;
  if (!(Number.isInteger(intervalMs) && intervalMs >= 1)) throw new Error(`intervalMs must be a positive integer, got ${intervalMs}`);
  let timer: NodeJS.Timeout | undefined;
  let first: NodeJS.Immediate | undefined;
  let running: Promise<PurgeResult> | undefined;

  const runOnce = (): Promise<PurgeResult> => {
    running ??= purgeExpiredMetadata(deps.pool, { retentionDays: deps.retentionDays, nowMs: nowMs() })
      .then((result) => {
        const deleted = result.voteMetadataDeleted + result.accountMetadataDeleted;
        if (deleted > 0 || result.incomplete) deps.log.info({ ...result }, 'request metadata past retention purged');
        return result;
      })
      .finally(() => {
        running = undefined;
      });
    return running;
  };
  const runInBackground = () => {
    runOnce().catch((error: unknown) => deps.log.warn({ err: error }, 'retention purge failed; retrying at the next interval'));
  };

  return {
    start() {
      if (timer) return;
      timer = setInterval(runInBackground, intervalMs);
      timer.unref();
      // Not awaited: a backlog to purge must not hold up start-up.
      first = setImmediate(runInBackground);
    },
    async stop() {
      if (timer) clearInterval(timer);
      if (first) clearImmediate(first);
      timer = undefined;
      first = undefined;
      await running?.catch(() => undefined);
    },
    runOnce,
  };
}
