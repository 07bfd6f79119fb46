// The pure half of authenticating a request: the Authorization header to verified claims or a
// refusal, given the secret and the clock. Nothing here reads state of the process (revoked
// sessions are the caller's: gateway/auth/feature.ts), so it runs as well in the request checks
// worker (gateway/requestChecks.worker.ts) as on the main thread, with the same answer.
import { createAccessTokenVerifier, decodeAccessTokenUnchecked, type AccessTokenClaims, type TokenRefusal } from './jwt.ts';

export type AuthorizationVerification =
  | { readonly ok: true; readonly claims: AccessTokenClaims }
  | { readonly ok: false; readonly refusal: 'unauthenticated' | TokenRefusal };

export type AuthorizationVerifier = (authorizationHeader: string) => AuthorizationVerification;

const bearerPrefix = 'bearer ';
const noBearerToken = { ok: false, refusal: 'unauthenticated' } as const satisfies AuthorizationVerification;

/** Verifies 'Bearer <jwt>'; `nowS` (unix seconds) defaults to the wall clock. */
export function createAuthorizationVerifier(secret: string, nowS?: () => number): AuthorizationVerifier {
  return bearerVerifier(createAccessTokenVerifier(secret, nowS));
}

/**
 * Measurement only (LIVEVOTE_MEASURE_WITHOUT token_check): 'Bearer <jwt>' whose payload is
 * decoded but whose signature and claims are not checked: any token of the right shape is taken
 * at its word. What is left is what the route needs of it (sub, vn, role, sid).
 */
export function createUncheckedAuthorizationDecoder(): AuthorizationVerifier {
  return bearerVerifier(decodeAccessTokenUnchecked);
}

function bearerVerifier(verify: (token: string) => AuthorizationVerification): AuthorizationVerifier {
  return (authorizationHeader) => {
    // RFC 7235: the scheme is case-insensitive ('Bearer ' first: it is what clients send).
    if (
      authorizationHeader.length <= bearerPrefix.length ||
      (!authorizationHeader.startsWith('Bearer ') && authorizationHeader.slice(0, bearerPrefix.length).toLowerCase() !== bearerPrefix)
    ) {
      return noBearerToken;
    }
    return verify(authorizationHeader.slice(bearerPrefix.length).trim());
  };
}
