// The abuse controls as a gateway feature: the CAPTCHA challenge route, and the guards the
// vote, register and login routes run before they do any real work. Cheapest check first:
// rate limit (a map lookup), fraud rules (counters), then CAPTCHA (a hash, or a remote call).
import { z } from 'zod';
import type { Registry } from 'prom-client';
import { ApiError } from '../errors.ts';
import { defineRoute } from '../http.ts';
import type { Feature } from '../app.ts';
import type { VoteGuardInput, VoteGuardVerdict } from '../votes/routes.ts';
import type { Config } from '../../infra/config.ts';
import type { Logger } from '../../infra/logger.ts';
import type { Secrets } from '../../infra/secrets.ts';
import type { Pool } from '../../persistence/db.ts';
import { emailHash } from '../auth/passwords.ts';
import { captchaError, createAbuseControls, rateLimitedError, type AbuseControls, type CaptchaPolicy, type RateDecision } from './index.ts';


/** What the auth routes tell the guard about a register or login attempt. */
export interface AuthAttempt {
  readonly email: string;
  readonly clientIp: string;
  readonly networkKey: string;
  readonly userAgent: string;
  readonly captchaToken?: string | undefined;
}

export interface AuthGuard {
  register(attempt: AuthAttempt): Promise<void>;
  login(attempt: AuthAttempt): Promise<void>;
}

export interface AbuseFeature extends Feature {
  readonly controls: AbuseControls;
  /** Throws ApiError (429, 403, 400) to refuse a vote; resolves to let it through (see VoteGuardVerdict). */
  guardVote(vote: VoteGuardInput): VoteGuardVerdict | Promise<VoteGuardVerdict>;
  readonly auth: AuthGuard;
  /** Fraud rule hits for one election's votes, flattened to `rule:flagged|rejected` counts. */
  fraudCounts(electionId: string): Promise<Record<string, number>>;
}

function refuseIfLimited(decision: RateDecision): void {
  if (decision.outcome === 'limited') throw rateLimitedError(decision);
}

const challengeSchema = z.object({
  provider: z.enum(['altcha', 'turnstile', 'hcaptcha', 'recaptcha']),
  challenge: z.unknown().optional().describe('altcha only: the challenge to solve (algorithm, challenge, salt, signature, maxnumber)'),
});

export function createAbuseFeature(deps: { config: Config; secrets: Secrets; pool: Pool; log: Logger; metricsRegistry: Registry }): AbuseFeature {
  const controls = createAbuseControls({
    config: deps.config.abuse,
    captchaHmacKey: deps.secrets.captchaHmacKey,
    registry: deps.metricsRegistry,
    pool: deps.pool,
    log: deps.log.child({ component: 'abuse' }),
  });
  const registerCaptchaPolicy = deps.config.registerCaptchaPolicy;

  const checkCaptcha = async (policy: CaptchaPolicy, flagged: boolean, token: string | undefined, clientIp: string) => {
    const gate = await controls.checkCaptcha(policy, flagged, token, { clientIp });
    if (!gate.ok) throw captchaError(gate);
  };

  /** A vote's CAPTCHA: a solution already used is not refused here, the vote path decides (VoteGuardVerdict). */
  const checkVoteCaptcha = async (policy: CaptchaPolicy, flagged: boolean, token: string | undefined, clientIp: string): Promise<VoteGuardVerdict> => {
    const gate = await controls.checkCaptcha(policy, flagged, token, { clientIp });
    if (gate.ok) return undefined;
    if (gate.reason === 'already_used') return 'captcha_already_used';
    throw captchaError(gate);
  };

  /** Fraud rules, then the CAPTCHA the policy asks for; runs once the rate limits let the vote through. */
  function screenVote(vote: VoteGuardInput): Promise<VoteGuardVerdict> | undefined {
    const fraud = controls.fraud.evaluateVote(
      { electionId: vote.electionId, candidate: vote.candidateIndex, networkKey: vote.networkKey, userAgent: vote.userAgent }, Date.now());
    if (fraud.verdict === 'reject') throw new ApiError('fraud_rejected', undefined, { rules: fraud.hits.map((h) => h.rule) });
    const flagged = fraud.verdict === 'flag';
    // The common case (policy off, or on_risk and nothing flagged) stays synchronous.
    if (vote.captchaPolicy === 'off' || (vote.captchaPolicy === 'on_risk' && !flagged)) return undefined;
    return checkVoteCaptcha(vote.captchaPolicy, flagged, vote.captchaToken, vote.clientIp);
  }

  return {
    controls,
    routes: [
      defineRoute({
        method: 'GET', path: '/api/v1/captcha/challenge', tag: 'abuse', auth: 'public',
        summary: 'A fresh CAPTCHA challenge (self-hosted proof of work), single use, expiring; or which external provider to use.',
        responses: { 200: { description: 'The challenge, or the provider to use', schema: challengeSchema } },
        handle: async () => ({
          json: controls.altcha
            ? { provider: 'altcha', challenge: await controls.altcha.createChallenge() }
            : { provider: controls.captcha.provider },
          headers: { 'cache-control': 'no-store' },
        }),
      }),
    ],
    guardVote(vote) {
      const decision = controls.limit('vote', { userKey: vote.userId, ip: vote.clientIp, networkKey: vote.networkKey });
      if (decision instanceof Promise) return decision.then((d) => { refuseIfLimited(d); return screenVote(vote); });
      refuseIfLimited(decision);
      return screenVote(vote);
    },
    auth: {
      async register(attempt) {
        const subjects = { ip: attempt.clientIp, networkKey: attempt.networkKey };
        // Past the address's allowance without a CAPTCHA, a crowd behind one address (a venue's
        // Wi-Fi, a carrier's NAT) is challenged before it is refused: every such request, with
        // a solution or asking for the challenge, takes from the challenged allowance, which
        // refuses (429) once spent. Whatever the registration CAPTCHA policy: the choice here is
        // between a CAPTCHA and a refusal.
        const unchallenged = await controls.limit('register', subjects);
        const challenged = unchallenged.outcome === 'limited';
        if (challenged) refuseIfLimited(await controls.limit('register_challenged', subjects));
        const fraud = controls.fraud.evaluateRegistration(
          { ip: attempt.clientIp, networkKey: attempt.networkKey, email: attempt.email, userAgent: attempt.userAgent }, Date.now());
        if (fraud.verdict === 'reject') throw new ApiError('fraud_rejected', undefined, { rules: fraud.hits.map((h) => h.rule) });
        await checkCaptcha(challenged ? 'always' : registerCaptchaPolicy, fraud.verdict === 'flag', attempt.captchaToken, attempt.clientIp);
      },
      async login(attempt) {
        // Keyed by the email's hash: a password-guessing run against one account is slowed
        // whatever addresses it comes from, without keeping the address it targets.
        const userKey = emailHash(deps.secrets.emailHashKey, attempt.email).toString('base64url');
        refuseIfLimited(await controls.limit('login', { userKey, ip: attempt.clientIp, networkKey: attempt.networkKey }));
        const fraud = controls.fraud.evaluateLogin({ userAgent: attempt.userAgent });
        if (fraud.verdict === 'reject') throw new ApiError('fraud_rejected', undefined, { rules: fraud.hits.map((h) => h.rule) });
      },
    },
    async fraudCounts(electionId) {
      const counts: Record<string, number> = {};
      for (const [rule, hits] of Object.entries(await controls.fraudStatsFor(electionId))) {
        if (!hits) continue;
        if (hits.flagged > 0) counts[`${rule}:flagged`] = hits.flagged;
        if (hits.rejected > 0) counts[`${rule}:rejected`] = hits.rejected;
      }
      return counts;
    },
    start: () => controls.start(),
    stop: () => controls.stop(),
  };
}
