// HS256 access tokens with node:crypto only. Every vote verifies one, so verification is built
// for the hot path: the expected header segment is precomputed and compared as a string (one
// comparison for every token we issued), the HMAC key is a prepared KeyObject, and the payload
// is parsed only after the signature matched (nothing an attacker wrote is JSON-parsed before).
// Refusals are data (`TokenVerification`), not exceptions; the caller maps them to ApiErrors.
import { createHmac, createSecretKey, type KeyObject } from 'node:crypto';
import { isLowerCaseUuidText } from '../../infra/uuidText.ts';
import type { Role } from '../http.ts';

/** Access tokens live 15 minutes; a refresh token buys the next one. */
export const accessTokenTtlS = 15 * 60;
export const accessTokenIssuer = 'livevote';
export const accessTokenAudience = 'livevote-api';
/** Clock skew tolerated for iat/nbf between nodes (exp gets none: we issue and check it). */
export const accessTokenLeewayS = 30;
/** Our tokens are ~330 characters; anything far longer is not one of ours. */
export const accessTokenCharsMax = 2048;

const roles: readonly Role[] = ['viewer', 'broadcaster', 'admin'];
const uuidPattern = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/;

/** base64url of 32 bytes, unpadded: 43 characters. */
const signatureChars = 43;

/** What the caller decides; iss, aud, iat and exp are added by `signAccessToken`. */
export interface AccessTokenSubject {
  /** User id (UUID). */
  readonly sub: string;
  /** Voter number: dense, assigned at registration, indexes the shard bitmaps. */
  readonly vn: number;
  readonly role: Role;
  /** Session id: the refresh-token family this token was minted from. */
  readonly sid: string;
}

export interface AccessTokenClaims extends AccessTokenSubject {
  readonly iss: string;
  readonly aud: string;
  readonly iat: number;
  readonly exp: number;
}

export type TokenRefusal = 'invalid_token' | 'token_expired' | 'unsupported_token_algorithm';

export type TokenVerification =
  | { readonly ok: true; readonly claims: AccessTokenClaims }
  | { readonly ok: false; readonly refusal: TokenRefusal };

export type AccessTokenVerifier = (token: string) => TokenVerification;

const headerSegment = Buffer.from(JSON.stringify({ alg: 'HS256', typ: 'JWT' })).toString('base64url');

function hmacKey(secret: string): KeyObject {
  if (secret.length < 32) throw new Error('the JWT secret must be at least 32 characters');
  return createSecretKey(Buffer.from(secret, 'utf8'));
}

function sign(key: KeyObject, signingInput: string): string {
  return createHmac('sha256', key).update(signingInput).digest('base64url');
}

/** Signs `subject` as an access token issued at `nowS` (unix seconds), valid `accessTokenTtlS`. */
export function signAccessToken(subject: AccessTokenSubject, secret: string, nowS: number): string {
  if (!Number.isSafeInteger(nowS) || nowS < 0) throw new Error(`nowS must be a whole number of seconds: ${nowS}`);
  if (!Number.isSafeInteger(subject.vn) || subject.vn < 0) throw new Error(`vn must be an integer >= 0: ${subject.vn}`);
  if (!uuidPattern.test(subject.sub) || !uuidPattern.test(subject.sid)) throw new Error('sub and sid must be lower-case UUIDs');
  const claims: AccessTokenClaims = {
    iss: accessTokenIssuer,
    aud: accessTokenAudience,
    sub: subject.sub,
    vn: subject.vn,
    role: subject.role,
    sid: subject.sid,
    iat: nowS,
    exp: nowS + accessTokenTtlS,
  };
  const signingInput = `${headerSegment}.${Buffer.from(JSON.stringify(claims)).toString('base64url')}`;
  return `${signingInput}.${sign(hmacKey(secret), signingInput)}`;
}

const refuse = {
  invalid: { ok: false, refusal: 'invalid_token' },
  expired: { ok: false, refusal: 'token_expired' },
  algorithm: { ok: false, refusal: 'unsupported_token_algorithm' },
} as const satisfies Record<string, TokenVerification>;

/**
 * A header that is not byte-for-byte ours: HS256 written differently is still checked (the
 * signature covers it); any other algorithm, `none` included, is refused as unsupported.
 */
function classifyForeignHeader(segment: string): 'hs256' | TokenVerification {
  let header: unknown;
  try {
    header = JSON.parse(Buffer.from(segment, 'base64url').toString('utf8'));
  } catch {
    return refuse.invalid;
  }
  if (typeof header !== 'object' || header === null || Array.isArray(header)) return refuse.invalid;
  const { alg, typ, crit } = header as Record<string, unknown>;
  if (typeof alg !== 'string') return refuse.invalid;
  if (alg !== 'HS256') return refuse.algorithm;
  if (typ !== undefined && typ !== 'JWT') return refuse.invalid;
  // RFC 7515 4.1.11: extensions we do not understand must make the token invalid.
  if (crit !== undefined) return refuse.invalid;
  return 'hs256';
}

function isWholeSeconds(value: unknown): value is number {
  return typeof value === 'number' && Number.isSafeInteger(value) && value >= 0;
}

function checkClaims(payload: unknown, nowS: number): TokenVerification {
  if (typeof payload !== 'object' || payload === null || Array.isArray(payload)) return refuse.invalid;
  const c = payload as Record<string, unknown>;
  if (c.iss !== accessTokenIssuer) return refuse.invalid;
  if (c.aud !== accessTokenAudience) return refuse.invalid;
  if (typeof c.sub !== 'string' || !isLowerCaseUuidText(c.sub)) return refuse.invalid;
  if (typeof c.sid !== 'string' || !isLowerCaseUuidText(c.sid)) return refuse.invalid;
  if (!isWholeSeconds(c.vn)) return refuse.invalid;
  if (!roles.includes(c.role as Role)) return refuse.invalid;
  if (!isWholeSeconds(c.iat) || !isWholeSeconds(c.exp)) return refuse.invalid;
  if (c.exp <= c.iat) return refuse.invalid;
  if (c.iat > nowS + accessTokenLeewayS) return refuse.invalid;
  if (c.nbf !== undefined && (!isWholeSeconds(c.nbf) || c.nbf > nowS + accessTokenLeewayS)) return refuse.invalid;
  if (c.exp <= nowS) return refuse.expired;
  return {
    ok: true,
    claims: {
      iss: c.iss,
      aud: c.aud,
      sub: c.sub,
      vn: c.vn,
      role: c.role as Role,
      sid: c.sid,
      iat: c.iat,
      exp: c.exp,
    },
  };
}

/**
 * Compares two strings of equal, public length (a signature's is fixed) touching every character
 * whatever they hold, like crypto.timingSafeEqual, without the two Buffers per call that it needs.
 */
function equalStringsInConstantTime(a: string, b: string): boolean {
  if (a.length !== b.length) return false;
  let difference = 0;
  for (let i = 0; i < a.length; i++) difference |= a.charCodeAt(i) ^ b.charCodeAt(i);
  return difference === 0;
}

/**
 * Measurement only (LIVEVOTE_MEASURE_WITHOUT token_check, never in a show): the token's payload,
 * base64url-decoded and JSON-parsed as verification does, with no signature, header or claims
 * check. What remains of a vote's token work once "signature and claims checks" are off.
 */
export function decodeAccessTokenUnchecked(token: string): TokenVerification {
  const firstDot = token.indexOf('.');
  const secondDot = firstDot < 0 ? -1 : token.indexOf('.', firstDot + 1);
  if (secondDot < 0) return refuse.invalid;
  try {
    const claims = JSON.parse(Buffer.from(token.slice(firstDot + 1, secondDot), 'base64url').toString('utf8')) as AccessTokenClaims | null;
    return typeof claims === 'object' && claims !== null ? { ok: true, claims } : refuse.invalid;
  } catch {
    return refuse.invalid;
  }
}

/** Returns a verifier bound to `secret`; `nowS` (unix seconds) defaults to the wall clock. */
export function createAccessTokenVerifier(
  secret: string,
  nowS: () => number = () => Math.floor(Date.now() / 1000),
): AccessTokenVerifier {
  const key = hmacKey(secret);
  return (token) => {
    if (token.length > accessTokenCharsMax) return refuse.invalid;
    const firstDot = token.indexOf('.');
    const secondDot = firstDot < 0 ? -1 : token.indexOf('.', firstDot + 1);
    if (firstDot <= 0 || secondDot < 0 || token.indexOf('.', secondDot + 1) >= 0) return refuse.invalid;
    const header = token.slice(0, firstDot);
    if (header !== headerSegment) {
      const classified = classifyForeignHeader(header);
      if (classified !== 'hs256') return classified;
    }
    const signature = token.slice(secondDot + 1);
    if (signature.length !== signatureChars) return refuse.invalid;
    // The expected base64url string, not decoded bytes, is compared: base64url decoding is
    // lenient, so comparing bytes would accept several spellings of one signature.
    if (!equalStringsInConstantTime(sign(key, token.slice(0, secondDot)), signature)) return refuse.invalid;
    let payload: unknown;
    try {
      payload = JSON.parse(Buffer.from(token.slice(firstDot + 1, secondDot), 'base64url').toString('utf8'));
    } catch {
      return refuse.invalid;
    }
    return checkClaims(payload, nowS());
  };
}
