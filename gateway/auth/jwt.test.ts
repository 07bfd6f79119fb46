import { createHmac, randomUUID } from 'node:crypto';
import { describe, expect, it } from 'vitest';
import {
  accessTokenAudience, accessTokenCharsMax, accessTokenIssuer, accessTokenLeewayS, accessTokenTtlS,
  createAccessTokenVerifier, signAccessToken, type AccessTokenSubject,
} from './jwt.ts';

const secret = 'test-secret-test-secret-test-secret-0123';
const nowS = 1_800_000_000;
const subject: AccessTokenSubject = { sub: randomUUID(), vn: 41, role: 'broadcaster', sid: randomUUID() };

const b64 = (value: unknown) => Buffer.from(typeof value === 'string' ? value : JSON.stringify(value)).toString('base64url');

/** Builds a token by hand, signed with HMAC-`hash` over whatever header and payload it is given. */
function forge(header: unknown, payload: unknown, options: { key?: string; hash?: 'sha256' | 'sha512' } = {}): string {
  const input = `${b64(header)}.${b64(payload)}`;
  const signature = createHmac(options.hash ?? 'sha256', options.key ?? secret).update(input).digest('base64url');
  return `${input}.${signature}`;
}

const validClaims = () => ({
  iss: accessTokenIssuer, aud: accessTokenAudience, sub: subject.sub, vn: subject.vn, role: subject.role, sid: subject.sid,
  iat: nowS, exp: nowS + accessTokenTtlS,
});

const verifyAt = (at: number) => createAccessTokenVerifier(secret, () => at);
const verify = verifyAt(nowS);

describe('access tokens', () => {
  it('round-trips the claims of a signed token', () => {
    const token = signAccessToken(subject, secret, nowS);
    const result = verify(token);
    expect(result).toEqual({ ok: true, claims: { ...subject, iss: 'livevote', aud: 'livevote-api', iat: nowS, exp: nowS + 900 } });
  });

  it('is a standard HS256 JWT: header {alg,typ}, HMAC-SHA256 over header.payload', () => {
    const token = signAccessToken(subject, secret, nowS);
    const [header, payload, signature] = token.split('.') as [string, string, string];
    expect(JSON.parse(Buffer.from(header, 'base64url').toString())).toEqual({ alg: 'HS256', typ: 'JWT' });
    expect(JSON.parse(Buffer.from(payload, 'base64url').toString())).toMatchObject({ sub: subject.sub, vn: 41, exp: nowS + 900 });
    expect(signature).toBe(createHmac('sha256', secret).update(`${header}.${payload}`).digest('base64url'));
  });

  it('lives 15 minutes: valid one second before exp, expired at exp', () => {
    expect(accessTokenTtlS).toBe(900);
    const token = signAccessToken(subject, secret, nowS);
    expect(verifyAt(nowS + accessTokenTtlS - 1)(token).ok).toBe(true);
    expect(verifyAt(nowS + accessTokenTtlS)(token)).toEqual({ ok: false, refusal: 'token_expired' });
  });

  it('accepts HS256 written with another header spelling (the signature covers it)', () => {
    expect(verify(forge({ typ: 'JWT', alg: 'HS256' }, validClaims())).ok).toBe(true);
    expect(verify(forge({ alg: 'HS256' }, validClaims())).ok).toBe(true);
  });

  it('refuses to sign what it could not verify', () => {
    expect(() => signAccessToken({ ...subject, vn: -1 }, secret, nowS)).toThrow(/vn/);
    expect(() => signAccessToken({ ...subject, sub: 'not-a-uuid' }, secret, nowS)).toThrow(/UUID/);
    expect(() => signAccessToken(subject, 'short', nowS)).toThrow(/32 characters/);
  });
});

describe('access token refusals', () => {
  const token = signAccessToken(subject, secret, nowS);
  const [header, payload, signature] = token.split('.') as [string, string, string];

  it.each([
    ['empty', ''],
    ['one segment', 'abc'],
    ['two segments', `${header}.${payload}`],
    ['four segments', `${token}.x`],
    ['empty header', `.${payload}.${signature}`],
    ['header not base64 JSON', `!!!.${payload}.${signature}`],
    ['header JSON is an array', `${b64(['HS256'])}.${payload}.${signature}`],
    ['header without alg', `${b64({ typ: 'JWT' })}.${payload}.${signature}`],
    ['header with other typ', forge({ alg: 'HS256', typ: 'JWE' }, validClaims())],
    ['header with crit', forge({ alg: 'HS256', crit: ['exp'] }, validClaims())],
    ['too long', `${token}${'A'.repeat(accessTokenCharsMax)}`],
  ])('malformed (%s) → invalid_token', (_name, bad) => {
    expect(verify(bad)).toEqual({ ok: false, refusal: 'invalid_token' });
  });

  it.each([
    ['none', `${b64({ alg: 'none', typ: 'JWT' })}.${payload}.`],
    ['none with our signature', `${b64({ alg: 'none', typ: 'JWT' })}.${payload}.${signature}`],
    ['None (case)', `${b64({ alg: 'None' })}.${payload}.`],
    ['HS512, correctly signed with our secret', forge({ alg: 'HS512', typ: 'JWT' }, validClaims(), { hash: 'sha512' })],
    ['RS256', `${b64({ alg: 'RS256', typ: 'JWT' })}.${payload}.${signature}`],
    ['ES256', `${b64({ alg: 'ES256', typ: 'JWT' })}.${payload}.${signature}`],
  ])('algorithm %s → unsupported_token_algorithm', (_name, bad) => {
    expect(verify(bad)).toEqual({ ok: false, refusal: 'unsupported_token_algorithm' });
  });

  it('a signature made with another key → invalid_token', () => {
    expect(verify(forge({ alg: 'HS256', typ: 'JWT' }, validClaims(), { key: 'another-secret-another-secret-0000000' }))).toEqual({ ok: false, refusal: 'invalid_token' });
    expect(verify(signAccessToken(subject, `${secret}x`, nowS))).toEqual({ ok: false, refusal: 'invalid_token' });
  });

  it('a payload changed after signing → invalid_token', () => {
    const admin = b64({ ...validClaims(), role: 'admin' });
    expect(verify(`${header}.${admin}.${signature}`)).toEqual({ ok: false, refusal: 'invalid_token' });
  });

  it('signatures of the wrong length, with non-ASCII, or spelled differently → invalid_token', () => {
    expect(verify(`${header}.${payload}.${signature.slice(0, -1)}`)).toEqual({ ok: false, refusal: 'invalid_token' });
    expect(verify(`${header}.${payload}.${signature}A`)).toEqual({ ok: false, refusal: 'invalid_token' });
    expect(verify(`${header}.${payload}.${signature.slice(0, -1)}é`)).toEqual({ ok: false, refusal: 'invalid_token' });
    // 43 base64url chars hold 258 bits: the last character's low 2 bits are padding, so four
    // spellings decode to the same 32 bytes. Only the canonical one is accepted.
    const last = signature.at(-1) as string;
    const alphabet = 'ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_';
    const sibling = alphabet[alphabet.indexOf(last) ^ 1] as string;
    const respelled = `${signature.slice(0, -1)}${sibling}`;
    expect(Buffer.from(respelled, 'base64url')).toEqual(Buffer.from(signature, 'base64url'));
    expect(verify(`${header}.${payload}.${respelled}`)).toEqual({ ok: false, refusal: 'invalid_token' });
  });

  it('a correctly signed payload that is not JSON → invalid_token', () => {
    expect(verify(forge({ alg: 'HS256', typ: 'JWT' }, '{not json'))).toEqual({ ok: false, refusal: 'invalid_token' });
    expect(verify(forge({ alg: 'HS256', typ: 'JWT' }, [1, 2]))).toEqual({ ok: false, refusal: 'invalid_token' });
  });

  it.each([
    ['wrong issuer', { iss: 'someone-else' }],
    ['no issuer', { iss: undefined }],
    ['wrong audience', { aud: 'other-api' }],
    ['audience as array', { aud: [accessTokenAudience] }],
    ['sub not a UUID', { sub: 'admin' }],
    ['sid missing', { sid: undefined }],
    ['negative voter number', { vn: -1 }],
    ['fractional voter number', { vn: 1.5 }],
    ['voter number as string', { vn: '41' }],
    ['unknown role', { role: 'root' }],
    ['iat missing', { iat: undefined }],
    ['exp as string', { exp: String(nowS + 900) }],
    ['exp not after iat', { exp: nowS, iat: nowS }],
    ['iat in the future beyond leeway', { iat: nowS + accessTokenLeewayS + 1, exp: nowS + 2000 }],
    ['nbf in the future beyond leeway', { nbf: nowS + accessTokenLeewayS + 1 }],
    ['nbf not a number', { nbf: 'now' }],
  ])('correctly signed but %s → invalid_token', (_name, change) => {
    expect(verify(forge({ alg: 'HS256', typ: 'JWT' }, { ...validClaims(), ...change }))).toEqual({ ok: false, refusal: 'invalid_token' });
  });

  it('tolerates small clock skew on iat and nbf', () => {
    const skewed = { ...validClaims(), iat: nowS + accessTokenLeewayS, nbf: nowS + accessTokenLeewayS, exp: nowS + 900 };
    expect(verify(forge({ alg: 'HS256', typ: 'JWT' }, skewed)).ok).toBe(true);
  });

  it('expired → token_expired (only once the signature and claims are otherwise good)', () => {
    const expired = forge({ alg: 'HS256', typ: 'JWT' }, { ...validClaims(), iat: nowS - 1000, exp: nowS - 100 });
    expect(verify(expired)).toEqual({ ok: false, refusal: 'token_expired' });
    const expiredForged = forge({ alg: 'HS256', typ: 'JWT' }, { ...validClaims(), iat: nowS - 1000, exp: nowS - 100 }, { key: 'x'.repeat(40) });
    expect(verify(expiredForged)).toEqual({ ok: false, refusal: 'invalid_token' });
  });

  it('verifies many tokens in a row without state leaking between them (no timing assertion)', () => {
    const tokens = Array.from({ length: 2000 }, (_, i) => signAccessToken({ ...subject, vn: i }, secret, nowS));
    const results = tokens.map((t) => verify(t));
    expect(results.every((r, i) => r.ok && r.claims.vn === i)).toBe(true);
  });
});
