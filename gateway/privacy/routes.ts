// Privacy routes (PRIVACY.md): a user's export of their data, erasure by the user (with their
// password again) and by an admin (for requests received by other channels).
import { z } from 'zod';
import { ApiError } from '../errors.ts';
import { defineRoute, principalOf, type RouteDefinition } from '../http.ts';
import type { Privacy } from './service.ts';

const isoTime = z.string().describe('ISO 8601');
const hashHex = z.string().describe('Hex of a keyed hash (HMAC-SHA256 with a server-side key); never the value itself.');

const exportSchema = z.object({
  account: z.object({
    userId: z.uuid(),
    role: z.enum(['viewer', 'broadcaster', 'admin']),
    createdAt: isoTime,
    voterNumber: z.number().int().min(0).describe('Your pseudonym in the votes table.'),
    emailHash: hashHex.nullable().describe('The email is not stored; this keyed hash of it is.'),
  }),
  votes: z.array(z.object({
    electionId: z.uuid(),
    electionTitle: z.string().nullable(),
    candidateId: z.uuid().nullable(),
    candidateName: z.string().nullable(),
    voteId: z.uuid(),
    acceptedAt: isoTime,
  })),
  sessions: z.array(z.object({
    issuedAt: isoTime,
    lastRefreshedAt: isoTime,
    expiresAt: isoTime,
    revokedAt: isoTime.nullable(),
  })).describe('Sign-in sessions still on record (refresh tokens live 30 days); no token material.'),
  metadata: z.object({
    votes: z.array(z.object({ electionId: z.uuid(), ipHash: hashHex, networkHash: hashHex, userAgentFamily: z.string(), recordedAt: isoTime })),
    account: z.array(z.object({ event: z.enum(['register', 'login']), ipHash: hashHex, networkHash: hashHex, userAgentFamily: z.string(), recordedAt: isoTime })),
  }).describe('Request metadata kept for abuse investigation, deleted after the retention period.'),
  retention: z.object({ metadataDays: z.number().int() }),
  truncated: z.boolean().describe('A section held more rows than one export returns (10,000).'),
  exportedAt: isoTime,
});

const erasedSchema = z.object({
  userId: z.uuid(),
  erasedAt: isoTime,
  alreadyErased: z.boolean().describe('True when the account had been erased before this request.'),
});

const eraseBody = z.strictObject({ password: z.string().min(1).max(256) });


export function privacyRoutes(deps: { privacy: Privacy }): RouteDefinition<unknown, unknown>[] {
  const { privacy } = deps;
  return [
    defineRoute({
      method: 'GET',
      path: '/api/v1/me/export',
      summary: 'Everything stored about you: account, votes, sessions, request metadata (GDPR art. 15/20, CCPA right to know)',
      tag: 'privacy',
      auth: 'user',
      errors: ['account_erased'],
      responses: { 200: { description: 'Your data, as JSON.', schema: exportSchema } },
      handle: async ({ principal }) => ({
        status: 200,
        json: await privacy.exportData(principalOf(principal).userId),
        headers: { 'cache-control': 'no-store' },
      }),
    }),
    defineRoute<z.infer<typeof eraseBody>>({
      method: 'DELETE',
      path: '/api/v1/me',
      summary: 'Erase your account: your counted votes stay counted but are no longer linked to you; sessions end (GDPR art. 17, CCPA deletion)',
      tag: 'privacy',
      auth: 'user',
      body: eraseBody,
      errors: ['reauthentication_failed', 'erasure_deferred', 'account_erased', 'auth_overloaded'],
      responses: { 200: { description: 'Erased; every token of the account stops working.', schema: erasedSchema } },
      handle: async ({ principal, body }) => ({ status: 200, json: await privacy.eraseSelf(principalOf(principal), body.password) }),
    }),
    defineRoute({
      method: 'DELETE',
      path: '/api/v1/admin/users/{userId}',
      summary: "Erase a user's account on their request received by another channel (admin only); idempotent",
      tag: 'privacy',
      auth: ['admin'],
      errors: ['user_not_found', 'erasure_deferred'],
      responses: { 200: { description: 'Erased (now, or earlier: alreadyErased).', schema: erasedSchema } },
      handle: async ({ params }) => {
        const userId = z.uuid().safeParse(params.userId);
        if (!userId.success) {
          throw new ApiError('validation_failed', 'userId must be a UUID.', { issues: [{ path: 'params.userId', message: 'must be a UUID' }] });
        }
        return { status: 200, json: await privacy.eraseByAdmin(userId.data) };
      },
    }),
  ];
}
