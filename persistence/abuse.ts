// SQL for abuse controls (migration 004_abuse.sql): single-use CAPTCHA solutions shared by the
// cluster, and fraud rule hit counts for the statistics endpoint. Parameterised queries only; no
// other file holds SQL for these tables. Times come from the caller's clock so tests can move it.
import type { Queryable } from './users.ts';

/**
 * Records a solved challenge. True the first time this id is claimed, false if it already was
 * (a replay). The primary key makes the check-and-set atomic across nodes.
 */
export async function claimCaptchaSolution(db: Queryable, challengeId: string, expiresAt: Date): Promise<boolean> {
  const result = await db.query(
    `INSERT INTO captcha_solutions_used (challenge_id, expires_at) VALUES ($1, $2)
     ON CONFLICT (challenge_id) DO NOTHING`,
    [challengeId, expiresAt],
  );
  return result.rowCount === 1;
}

/** Deletes up to `rowsMax` expired solutions; returns how many. Run periodically. */
export async function purgeExpiredCaptchaSolutions(db: Queryable, now: Date, rowsMax: number): Promise<number> {
  const result = await db.query(
    `DELETE FROM captcha_solutions_used WHERE challenge_id IN (
       SELECT challenge_id FROM captcha_solutions_used WHERE expires_at <= $1 LIMIT $2)`,
    [now, rowsMax],
  );
  return result.rowCount ?? 0;
}

export interface FraudHitDelta {
  /** '' for rules not tied to an election. */
  readonly electionId: string;
  readonly rule: string;
  readonly action: 'flag' | 'reject';
  readonly hits: number;
}

/** Adds every delta in one statement (one round trip per flush, whatever the number of rules). */
export async function addFraudRuleHits(db: Queryable, deltas: readonly FraudHitDelta[]): Promise<void> {
  if (deltas.length === 0) return;
  await db.query(
    `INSERT INTO fraud_rule_hits (election_id, rule, action, hits)
     SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::bigint[])
     ON CONFLICT (election_id, rule, action) DO UPDATE SET hits = fraud_rule_hits.hits + EXCLUDED.hits`,
    [deltas.map((d) => d.electionId), deltas.map((d) => d.rule), deltas.map((d) => d.action), deltas.map((d) => d.hits)],
  );
}

export interface FraudRuleHitRow {
  readonly rule: string;
  readonly action: 'flag' | 'reject';
  readonly hits: number;
}

/** Hits recorded under one election ('' for the rules not tied to an election). */
export async function fraudRuleHitsFor(db: Queryable, electionId: string): Promise<FraudRuleHitRow[]> {
  const result = await db.query<{ rule: string; action: 'flag' | 'reject'; hits: number }>(
    'SELECT rule, action, hits FROM fraud_rule_hits WHERE election_id = $1 ORDER BY rule, action',
    [electionId],
  );
  return result.rows.map((row) => ({ rule: row.rule, action: row.action, hits: row.hits }));
}
