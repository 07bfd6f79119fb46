// Auth routes (seed contract 6.2 "Auth Service") plus the admin role grant. Bodies are strict
// zod objects: unknown keys are refused, so a typo never silently does nothing.
import { z } from 'zod';
import { ApiError } from '../errors.ts';
import { defineRoute, principalOf, type Principal, type Reply, type RouteDefinition } from '../http.ts';
import type { Accounts, TokenPair } from './accounts.ts';
import type { AuthGuard } from '../abuse/feature.ts';
import { emailCharsMax, passwordCharsMax, passwordCharsMin } from './passwords.ts';
import {
  clearedRefreshCookieHeader, cookieModeHeaders, refreshCookieHeader, refreshModeHeader, refreshTokenFromCookies, wantsCookieMode,
} from './refreshCookie.ts';

/** A principal as `authenticate` returns it (kept as a name for callers; Principal has the expiry). */
export type VerifiedPrincipal = Principal;

const roleSchema = z.enum(['viewer', 'broadcaster', 'admin']);
const emailSchema = z.string().trim().max(emailCharsMax).pipe(z.email());
/** Refresh tokens are 43 characters; the bound is generous, the service checks the shape. */
const refreshTokenSchema = z.string().min(1).max(256);

const registerBody = z.strictObject({
  email: emailSchema,
  password: z.string().min(passwordCharsMin).max(passwordCharsMax),
  /** Required when the registration CAPTCHA policy asks for one, and past an address's allowance without one (GET /api/v1/captcha/challenge). */
  captchaToken: z.string().min(1).max(8192).optional(),
});
// Login accepts any length up to the max: a password set under an older, shorter minimum must
// still work, and a too-short one is simply wrong (invalid_credentials), not malformed.
const loginBody = z.strictObject({
  email: emailSchema,
  password: z.string().min(1).max(passwordCharsMax),
});
// Optional only for cookie mode, where the token comes in the cookie; otherwise required (handler).
const refreshBody = z.strictObject({ refreshToken: refreshTokenSchema.optional() });
const logoutBody = z.strictObject({ refreshToken: refreshTokenSchema.optional() });
const roleBody = z.strictObject({ role: roleSchema });

const tokenPairSchema = z.object({
  userId: z.uuid(),
  role: roleSchema,
  accessToken: z.string().describe('HS256 JWT; send as `Authorization: Bearer <accessToken>`.'),
  refreshToken: z.string().optional().describe(
    `Opaque, single use: each refresh returns a new one. Absent in cookie mode (request header \`${refreshModeHeader}: cookie\`): ` +
    'the token is then set as an HttpOnly, SameSite=Strict cookie scoped to /api/v1/auth/refresh, which the refresh route reads when the same header is sent.',
  ),
  tokenType: z.literal('Bearer'),
  expiresIn: z.number().int().describe('Seconds until the access token expires.'),
});
const validateSchema = z.object({
  userId: z.uuid(),
  role: roleSchema,
  voterNumber: z.number().int().min(0),
  sessionId: z.uuid(),
  expiresAt: z.string().describe('When the access token expires (ISO 8601).'),
});
const roleGrantSchema = z.object({ userId: z.uuid(), role: roleSchema });


/** Cookie mode: the refresh token goes into the HttpOnly cookie instead of the JSON. */
function tokenReply(status: number, pair: TokenPair, headers: Readonly<Record<string, string>>): Reply {
  if (!wantsCookieMode(headers)) return { status, json: pair };
  const { refreshToken, ...withoutRefreshToken } = pair;
  return {
    status,
    json: withoutRefreshToken,
    headers: { 'set-cookie': refreshCookieHeader(refreshToken, headers), 'cache-control': 'no-store' },
  };
}

const cookieModeNote = ` With \`${refreshModeHeader}: cookie\` (browsers) the refresh token is set as an HttpOnly cookie instead of returned.`;

export type AccountEventHook = (event: 'register' | 'login', meta: { userId: string; clientIp: string; networkKey: string; userAgent: string; atMs: number }) => void;

export function authRoutes(deps: { accounts: Accounts; guard?: AuthGuard; onAccountEvent?: AccountEventHook }): RouteDefinition<unknown, unknown>[] {
  const { accounts, guard } = deps;
  return [
    defineRoute<z.infer<typeof registerBody>>({
      method: 'POST',
      path: '/api/v1/auth/register',
      summary: 'Create a viewer account and start a session',
      tag: 'auth',
      auth: 'public',
      body: registerBody,
      errors: ['email_taken', 'auth_overloaded', 'rate_limited', 'fraud_rejected', 'captcha_required', 'captcha_invalid', 'captcha_unavailable'],
      responses: { 201: { description: 'Account created; the session tokens.', schema: tokenPairSchema } },
      handle: async ({ body, clientIp, networkKey, userAgent }) => {
        await guard?.register({ email: body.email, clientIp, networkKey, userAgent, captchaToken: body.captchaToken });
        const pair = await accounts.register({ email: body.email, password: body.password });
        deps.onAccountEvent?.('register', { userId: pair.userId, clientIp, networkKey, userAgent, atMs: Date.now() });
        return { status: 201, json: pair };
      },
    }),
    defineRoute<z.infer<typeof loginBody>>({
      method: 'POST',
      path: '/api/v1/auth/login',
      summary: `Authenticate with email and password; start a session.${cookieModeNote}`,
      tag: 'auth',
      auth: 'public',
      body: loginBody,
      readHeaders: cookieModeHeaders,
      errors: ['invalid_credentials', 'auth_overloaded', 'rate_limited', 'fraud_rejected'],
      responses: { 200: { description: 'The session tokens.', schema: tokenPairSchema } },
      handle: async ({ body, clientIp, networkKey, userAgent, headers }) => {
        await guard?.login({ email: body.email, clientIp, networkKey, userAgent });
        const pair = await accounts.login(body);
        deps.onAccountEvent?.('login', { userId: pair.userId, clientIp, networkKey, userAgent, atMs: Date.now() });
        return tokenReply(200, pair, headers);
      },
    }),
    defineRoute<z.infer<typeof refreshBody>>({
      method: 'POST',
      path: '/api/v1/auth/refresh',
      summary:
        'Exchange a refresh token for a new access and refresh token. `refreshToken` is required unless the request carries ' +
        `\`${refreshModeHeader}: cookie\`: then the token is read from the refresh cookie, and the new one replaces it.`,
      tag: 'auth',
      auth: 'public',
      body: refreshBody,
      emptyBodyAs: {},
      readHeaders: cookieModeHeaders,
      errors: ['invalid_refresh_token', 'refresh_token_reused'],
      responses: { 200: { description: 'A new token pair; the refresh token sent is now used up.', schema: tokenPairSchema } },
      handle: async ({ body, headers }) => {
        const cookieMode = wantsCookieMode(headers);
        const refreshToken = body.refreshToken ?? (cookieMode ? refreshTokenFromCookies(headers.cookie ?? '') : undefined);
        if (refreshToken === undefined && !cookieMode) {
          throw new ApiError('validation_failed', undefined, {
            issues: [{ path: 'body.refreshToken', message: `Required (or send ${refreshModeHeader}: cookie with the refresh cookie)` }],
          });
        }
        try {
          if (refreshToken === undefined) throw new ApiError('invalid_refresh_token', 'No refresh cookie was sent; sign in again.');
          return tokenReply(200, await accounts.refresh(refreshToken), headers);
        } catch (error) {
          // A dead cookie is dropped, so the browser stops presenting it.
          if (cookieMode && error instanceof ApiError) {
            throw new ApiError(error.code, error.message, error.details, { ...error.headers, 'set-cookie': clearedRefreshCookieHeader(headers) });
          }
          throw error;
        }
      },
    }),
    defineRoute<z.infer<typeof logoutBody>>({
      method: 'POST',
      path: '/api/v1/auth/logout',
      summary: `End this session: its access and refresh tokens stop working. With \`${refreshModeHeader}: cookie\` the refresh cookie is cleared too.`,
      tag: 'auth',
      auth: 'user',
      body: logoutBody,
      emptyBodyAs: {},
      readHeaders: cookieModeHeaders,
      responses: { 204: { description: 'Logged out (also ends the session of `refreshToken`, when it is yours).' } },
      handle: async ({ body, principal, headers }) => {
        await accounts.logout(principalOf(principal), body.refreshToken);
        if (!wantsCookieMode(headers)) return { status: 204 };
        return { status: 204, headers: { 'set-cookie': clearedRefreshCookieHeader(headers) } };
      },
    }),
    defineRoute({
      method: 'GET',
      path: '/api/v1/auth/validate',
      summary: 'Validate the bearer token and return who it belongs to',
      tag: 'auth',
      auth: 'user',
      responses: { 200: { description: 'The token is valid.', schema: validateSchema } },
      handle: ({ principal }) => {
        const p = principalOf(principal);
        return {
          status: 200,
          json: {
            userId: p.userId,
            role: p.role,
            voterNumber: p.voterNumber,
            sessionId: p.sessionId,
            expiresAt: new Date(p.expiresAtS * 1000).toISOString(),
          } satisfies z.infer<typeof validateSchema>,
        };
      },
    }),
    defineRoute<z.infer<typeof roleBody>>({
      method: 'PUT',
      path: '/api/v1/users/{userId}/role',
      summary: "Set a user's role (admin only); lowering it ends the user's sessions",
      tag: 'auth',
      auth: ['admin'],
      body: roleBody,
      errors: ['user_not_found', 'account_erased', 'last_admin'],
      responses: { 200: { description: 'The role now held.', schema: roleGrantSchema } },
      handle: async ({ body, params }) => {
        const userId = params.userId;
        if (userId === undefined) throw new ApiError('validation_failed');
        return { status: 200, json: await accounts.grantRole(userId, body.role) };
      },
    }),
  ];
}
