// CAPTCHA: one interface, two kinds of verifier.
//
// - altcha: a self-hosted proof of work. The server hands out an HMAC-signed challenge that
//   expires (GET /api/v1/captcha/challenge); the browser spends CPU finding the counter that
//   derives a key with the signed prefix; we check the signature, the expiry and the key, then
//   claim the challenge in a replay store so the solution counts once. Challenges are made in
//   altcha's deterministic mode with a key signature, so verifying costs two HMACs whatever the
//   difficulty: cheap for us, `difficulty` hashes for the client.
// - siteverify: Cloudflare Turnstile, hCaptcha and reCAPTCHA all verify a token with
//   POST {secret, response, remoteip} to a siteverify URL answering {success, ...}. A provider
//   that is slow or down is a configured choice: fail open (let the request through, marked
//   degraded) or fail closed (captcha_unavailable). The URL is configurable for tests and
//   regional endpoints.
//
// Whether a request needs a CAPTCHA is the election's policy: off, always, or on_risk (only
// when a fraud rule flagged the request).
import { createHmac } from 'node:crypto';
import { createChallenge as createAltchaChallenge, randomInt, solveChallenge, verifySolution, type Challenge } from 'altcha-lib';
import { deriveKey as deriveShaKey } from 'altcha-lib/algorithms/sha';
import { ApiError } from '../errors.ts';
import type { UsedChallengeStore } from './captchaReplay.ts';

export type CaptchaPolicy = 'off' | 'always' | 'on_risk';
export const captchaPolicies: readonly CaptchaPolicy[] = ['off', 'always', 'on_risk'];

/** Whether a request must carry a valid CAPTCHA. `riskFlagged`: a fraud rule answered 'flag'. */
export function captchaRequired(policy: CaptchaPolicy, riskFlagged: boolean): boolean {
  switch (policy) {
    case 'off': return false;
    case 'always': return true;
    case 'on_risk': return riskFlagged;
  }
}

export type CaptchaProvider = 'altcha' | 'turnstile' | 'hcaptcha' | 'recaptcha';
export type SiteverifyProvider = Exclude<CaptchaProvider, 'altcha'>;

export interface CaptchaContext {
  /** Canonical client IP (clientAddress.ts); sent to external providers as remoteip. */
  readonly clientIp: string;
}

export type CaptchaFailureCode = 'captcha_invalid' | 'captcha_unavailable';

export type CaptchaOutcome =
  | {
      readonly ok: true;
      /** The provider could not be asked and the verifier is configured to fail open. */
      readonly degraded?: true;
    }
  | {
      readonly ok: false;
      readonly code: CaptchaFailureCode;
      /** For logs and metrics, never for the client: says which check failed. */
      readonly reason: CaptchaFailureReason;
    };

export type CaptchaFailureReason =
  | 'malformed'
  | 'expired'
  | 'bad_signature'
  | 'wrong_solution'
  | 'already_used'
  | 'rejected_by_provider'
  | 'low_score'
  | 'replay_store_unavailable'
  | 'provider_timeout'
  | 'provider_error'
  | 'provider_busy';

export interface CaptchaVerifier {
  readonly provider: CaptchaProvider;
  verify(token: string, context: CaptchaContext): Promise<CaptchaOutcome>;
}

/** Tokens longer than this are refused unread: the biggest real ones (reCAPTCHA) are ~2 KB. */
export const captchaTokenLengthMax = 8192;

const captchaOk: CaptchaOutcome = Object.freeze({ ok: true });
const captchaOkDegraded: CaptchaOutcome = Object.freeze({ ok: true, degraded: true });

function invalid(reason: CaptchaFailureReason): CaptchaOutcome {
  return { ok: false, code: 'captcha_invalid', reason };
}

function unavailable(reason: CaptchaFailureReason): CaptchaOutcome {
  return { ok: false, code: 'captcha_unavailable', reason };
}

// ---------------------------------------------------------------------------------------------
// Self-hosted proof of work (altcha)

export interface AltchaOptions {
  /** Secret the challenges are signed with (≥ 32 characters); from the secrets file. */
  readonly hmacKey: string;
  /** How long a challenge can be solved and submitted. */
  readonly expiryMs: number;
  /**
   * Hashes the client computes: the secret counter is drawn from [difficulty/2, difficulty].
   * 50 000 SHA-256 is well under a second in a browser and ~0.1 s in Node.
   */
  readonly difficulty: number;
  readonly usedChallenges: UsedChallengeStore;
  /** Wall clock in ms; injectable for tests. */
  readonly clock?: () => number;
}

const altchaAlgorithm = 'SHA-256';
export const altchaDifficultyMax = 10_000_000;

/** The payload an altcha widget submits, decoded. */
interface AltchaPayload {
  readonly challenge: Challenge;
  readonly solution: { counter: number; derivedKey: string };
}

function isRecord(value: unknown): value is Record<string, unknown> {
  return typeof value === 'object' && value !== null && !Array.isArray(value);
}

/** The widget sends base64(JSON {challenge, solution}); raw JSON is accepted too (API clients). */
export function decodeAltchaPayload(token: string): AltchaPayload | undefined {
  let json: unknown;
  try {
    const text = token.trimStart().startsWith('{') ? token : Buffer.from(token, 'base64').toString('utf8');
    json = JSON.parse(text);
  } catch {
    return undefined;
  }
  if (!isRecord(json) || !isRecord(json.challenge) || !isRecord(json.solution)) return undefined;
  const { challenge, solution } = json;
  if (!isRecord(challenge.parameters) || typeof challenge.signature !== 'string') return undefined;
  if (typeof solution.counter !== 'number' || typeof solution.derivedKey !== 'string') return undefined;
  const parameters = challenge.parameters;
  if (typeof parameters.expiresAt !== 'number' || typeof parameters.nonce !== 'string' || typeof parameters.salt !== 'string') return undefined;
  return json as unknown as AltchaPayload;
}

/** Two keys from one secret, so the challenge signature and the key signature never share one. */
function labelledKey(secret: string, label: string): string {
  return createHmac('sha256', secret).update(label).digest('hex');
}

export class AltchaCaptcha implements CaptchaVerifier {
  readonly provider = 'altcha' as const;
  private readonly signatureKey: string;
  private readonly keySignatureKey: string;
  private readonly clock: () => number;

  constructor(private readonly options: AltchaOptions) {
    if (options.hmacKey.length < 32) throw new Error('the altcha HMAC key must be at least 32 characters');
    if (!(options.expiryMs >= 1000)) throw new Error('expiryMs must be at least 1000');
    if (!(options.difficulty >= 2 && options.difficulty <= altchaDifficultyMax)) throw new Error(`difficulty must be in [2, ${altchaDifficultyMax}]`);
    this.signatureKey = labelledKey(options.hmacKey, 'livevote altcha challenge signature v1');
    this.keySignatureKey = labelledKey(options.hmacKey, 'livevote altcha key signature v1');
    this.clock = options.clock ?? Date.now;
  }

  /** A new signed challenge, to send as is (JSON) to the widget. */
  async createChallenge(): Promise<Challenge> {
    const difficulty = this.options.difficulty;
    return createAltchaChallenge({
      algorithm: altchaAlgorithm,
      cost: 1,
      counter: randomInt(difficulty, Math.ceil(difficulty / 2)),
      deriveKey: deriveShaKey,
      expiresAt: new Date(this.clock() + this.options.expiryMs),
      hmacSignatureSecret: this.signatureKey,
      hmacKeySignatureSecret: this.keySignatureKey,
    });
  }

  async verify(token: string, _context: CaptchaContext): Promise<CaptchaOutcome> {
    if (token.length === 0 || token.length > captchaTokenLengthMax) return invalid('malformed');
    const payload = decodeAltchaPayload(token);
    if (!payload) return invalid('malformed');
    const nowMs = this.clock();
    const expiresAtMs = (payload.challenge.parameters.expiresAt as number) * 1000;
    // Our clock first (tests move it); altcha checks against Date.now() again below.
    if (expiresAtMs <= nowMs) return invalid('expired');
    let result;
    try {
      result = await verifySolution({
        challenge: payload.challenge,
        solution: payload.solution,
        deriveKey: deriveShaKey,
        hmacSignatureSecret: this.signatureKey,
        hmacKeySignatureSecret: this.keySignatureKey,
      });
    } catch {
      // altcha throws on parameters it cannot even read (a forged algorithm, bad hex).
      return invalid('malformed');
    }
    if (result.expired) return invalid('expired');
    if (result.invalidSignature) return invalid('bad_signature');
    if (!result.verified) return invalid('wrong_solution');
    // Only a verified solution reaches the store: forgeries cannot fill it. The signature is
    // unique per challenge; 32 hex characters (128 bits) of it identify the challenge.
    const challengeId = (payload.challenge.signature as string).slice(0, 32);
    const claim = await this.options.usedChallenges.claim(challengeId, expiresAtMs, nowMs);
    if (claim === 'already_used') return invalid('already_used');
    if (claim === 'unavailable') return unavailable('replay_store_unavailable');
    return captchaOk;
  }
}

/**
 * Solves a challenge as the widget would, and returns the token to submit. For tests and the
 * load generator; `timeoutMs` bounds the search.
 */
export async function solveAltchaChallenge(challenge: Challenge, timeoutMs = 30_000): Promise<string> {
  const solution = await solveChallenge({ challenge, deriveKey: deriveShaKey, timeout: timeoutMs });
  if (!solution) throw new Error(`no solution found within ${timeoutMs} ms`);
  const payload = { challenge, solution: { counter: solution.counter, derivedKey: solution.derivedKey } };
  return Buffer.from(JSON.stringify(payload)).toString('base64');
}

// ---------------------------------------------------------------------------------------------
// External providers (siteverify)

export const defaultSiteverifyUrls: Readonly<Record<SiteverifyProvider, string>> = {
  turnstile: 'https://challenges.cloudflare.com/turnstile/v0/siteverify',
  hcaptcha: 'https://api.hcaptcha.com/siteverify',
  recaptcha: 'https://www.google.com/recaptcha/api/siteverify',
};

export type CaptchaFailMode = 'open' | 'closed';

export interface SiteverifyOptions {
  readonly provider: SiteverifyProvider;
  readonly secret: string;
  /** Defaults to the provider's public endpoint. */
  readonly siteverifyUrl?: string;
  /** Per request; a CAPTCHA check sits in the vote's latency budget. */
  readonly timeoutMs: number;
  /** What a timeout, network error, 5xx or unreadable answer means. */
  readonly failMode: CaptchaFailMode;
  /** Requests to the provider in flight at most; beyond, the fail mode applies at once. */
  readonly inFlightMax?: number;
  /** reCAPTCHA v3 answers a score in [0, 1]; below this is refused. Ignored when absent. */
  readonly minScore?: number;
  /** Injectable for tests; the global fetch otherwise. */
  readonly fetch?: typeof fetch;
}

interface SiteverifyAnswer {
  success?: unknown;
  score?: unknown;
  'error-codes'?: unknown;
}

/**
 * The error codes with which the providers refuse a token that was already verified (Turnstile
 * and reCAPTCHA: 'timeout-or-duplicate'; hCaptcha: 'invalid-or-already-seen-response'). The
 * vote path tells an accepted voter's retry by them (gateway/votes/routes.ts VoteGuardVerdict).
 */
const usedTokenCodes = ['timeout-or-duplicate', 'invalid-or-already-seen-response'];

function errorCodes(answer: SiteverifyAnswer): readonly unknown[] {
  return Array.isArray(answer['error-codes']) ? answer['error-codes'] : [];
}

export class SiteverifyCaptcha implements CaptchaVerifier {
  readonly provider: SiteverifyProvider;
  private readonly url: string;
  private readonly inFlightMax: number;
  private readonly fetch: typeof fetch;
  private inFlight = 0;

  constructor(private readonly options: SiteverifyOptions) {
    if (options.secret.length === 0) throw new Error(`${options.provider}: a siteverify secret is required`);
    if (!(options.timeoutMs >= 1)) throw new Error('timeoutMs must be at least 1');
    this.provider = options.provider;
    this.url = options.siteverifyUrl ?? defaultSiteverifyUrls[options.provider];
    this.inFlightMax = options.inFlightMax ?? 512;
    this.fetch = options.fetch ?? fetch;
  }

  private providerDown(reason: CaptchaFailureReason): CaptchaOutcome {
    return this.options.failMode === 'open' ? captchaOkDegraded : unavailable(reason);
  }

  async verify(token: string, context: CaptchaContext): Promise<CaptchaOutcome> {
    // Nothing to ask the provider about: refused without spending a request.
    if (token.length === 0 || token.length > captchaTokenLengthMax) return invalid('malformed');
    if (this.inFlight >= this.inFlightMax) return this.providerDown('provider_busy');
    this.inFlight++;
    try {
      const form = new URLSearchParams({ secret: this.options.secret, response: token });
      if (context.clientIp !== '') form.set('remoteip', context.clientIp);
      let response: Response;
      try {
        response = await this.fetch(this.url, {
          method: 'POST',
          body: form,
          signal: AbortSignal.timeout(this.options.timeoutMs),
        });
      } catch (error) {
        const timedOut = error instanceof DOMException && (error.name === 'TimeoutError' || error.name === 'AbortError');
        return this.providerDown(timedOut ? 'provider_timeout' : 'provider_error');
      }
      let answer: SiteverifyAnswer;
      try {
        if (!response.ok) {
          await response.body?.cancel();
          return this.providerDown('provider_error');
        }
        answer = (await response.json()) as SiteverifyAnswer;
      } catch (error) {
        const timedOut = error instanceof DOMException && (error.name === 'TimeoutError' || error.name === 'AbortError');
        return this.providerDown(timedOut ? 'provider_timeout' : 'provider_error');
      }
      if (!isRecord(answer) || typeof answer.success !== 'boolean') return this.providerDown('provider_error');
      if (!answer.success) return invalid(usedTokenCodes.some((code) => errorCodes(answer).includes(code)) ? 'already_used' : 'rejected_by_provider');
      if (this.options.minScore !== undefined && typeof answer.score === 'number' && answer.score < this.options.minScore) {
        return invalid('low_score');
      }
      return captchaOk;
    } finally {
      this.inFlight--;
    }
  }
}

// ---------------------------------------------------------------------------------------------
// The check a route makes

export type CaptchaGateOutcome =
  | { readonly ok: true; readonly checked: boolean; readonly degraded?: true }
  | { readonly ok: false; readonly code: 'captcha_required' | CaptchaFailureCode; readonly reason?: CaptchaFailureReason };

const gateSkipped: CaptchaGateOutcome = Object.freeze({ ok: true, checked: false });
const gateMissing: CaptchaGateOutcome = Object.freeze({ ok: false, code: 'captcha_required' });

/**
 * Policy, presence, verification, in that order. Synchronous when no CAPTCHA is needed so the
 * common vote pays for no promise.
 */
export function checkCaptcha(
  verifier: CaptchaVerifier,
  policy: CaptchaPolicy,
  riskFlagged: boolean,
  token: string | undefined,
  context: CaptchaContext,
): CaptchaGateOutcome | Promise<CaptchaGateOutcome> {
  if (!captchaRequired(policy, riskFlagged)) return gateSkipped;
  if (token === undefined || token === '') return gateMissing;
  return verifier.verify(token, context).then((outcome): CaptchaGateOutcome => {
    if (!outcome.ok) return { ok: false, code: outcome.code, reason: outcome.reason };
    return outcome.degraded ? { ok: true, checked: true, degraded: true } : { ok: true, checked: true };
  });
}

/** The error a route throws for a refused gate: 400 captcha_required, 403 invalid, 503 unavailable. */
export function captchaError(outcome: Extract<CaptchaGateOutcome, { ok: false }>): ApiError {
  return new ApiError(outcome.code);
}
