// POST /api/v1/votes (the hot path) and the vote status read.
import { z } from 'zod';
import { ApiError } from '../errors.ts';
import { defineRoute, type RouteDefinition, type Reply } from '../http.ts';
import type { ElectionRegistry } from '../elections/registry.ts';
import type { VoteOutcome } from '../../actors/shard.ts';

/** What the votes routes need from the vote node: admission with a reply callback. */
export interface VoteCaster {
  cast(vote: { electionId: string; voterNumber: number; candidateIndex: number }, reply: (outcome: VoteOutcome) => void): void;
}

export interface VoteStatusReader {
  /** The committed vote of that user, or null; the voter number is resolved from the user id. */
  voteStatus(userId: string, voterNumber: number | undefined, electionId: string): Promise<VoteStatus | null | 'unknown_user'>;
}

export interface VoteStatus {
  readonly voteId: string;
  readonly candidateIndex: number;
  readonly acceptedAt: Date;
}

/** Runs before a vote reaches its shard (rate limits, fraud rules, CAPTCHA); throws ApiError to refuse. */
export type VoteGuard = (vote: VoteGuardInput) => VoteGuardVerdict | Promise<VoteGuardVerdict>;

/**
 * A guard lets a vote through (undefined), or says its only objection is a CAPTCHA solution that
 * was valid but is already used: what an accepted voter's retry of the identical request carries.
 * The vote path answers that as the retry when this voter's stored vote is the same vote
 * (invariant 5), and as 403 captcha_invalid otherwise, so the used solution opens nothing new.
 */
export type VoteGuardVerdict = undefined | 'captcha_already_used';

export interface VoteGuardInput {
  readonly electionId: string;
  readonly candidateIndex: number;
  readonly userId: string;
  readonly voterNumber: number;
  readonly captchaToken: string | undefined;
  readonly captchaPolicy: 'off' | 'always' | 'on_risk';
  readonly clientIp: string;
  readonly networkKey: string;
  readonly userAgent: string;
}

/** Room for a provider CAPTCHA token (Turnstile's run to ~2 KB) plus the ids. */
export const voteBodyBytesMax = 8 * 1024;

export const voteBody = z.strictObject({
  electionId: z.uuid(),
  candidateId: z.uuid(),
  userId: z.uuid(),
  captchaToken: z.string().min(1).max(4096).optional(),
});

const acceptedSchema = z.object({
  voteId: z.uuid(),
  status: z.literal('accepted'),
  acceptedAt: z.string().describe('ISO 8601 time the vote was first accepted (the original time on a retry)'),
});

const statusSchema = z.object({
  userId: z.uuid(),
  electionId: z.uuid(),
  voted: z.boolean(),
  voteId: z.uuid().optional(),
  candidateId: z.uuid().optional(),
  acceptedAt: z.string().optional(),
});

function secondsHeader(ms: number): Record<string, string> {
  return { 'retry-after': String(Math.max(1, Math.ceil(ms / 1000))) };
}

/** Outcomes are data; this is the one place that turns them into HTTP. */
export function voteOutcomeReply(outcome: VoteOutcome): Reply {
  switch (outcome.kind) {
    case 'accepted':
      return { json: { voteId: outcome.voteId, status: 'accepted', acceptedAt: new Date(outcome.acceptedAtMs).toISOString() } };
    case 'already_voted':
      throw new ApiError('already_voted', undefined, { voteId: outcome.voteId, acceptedAt: new Date(outcome.acceptedAtMs).toISOString() });
    case 'overloaded':
      throw new ApiError('overloaded', undefined, undefined, secondsHeader(outcome.retryAfterMs));
    case 'unavailable':
      throw new ApiError('vote_not_stored', undefined, { reason: outcome.reason }, secondsHeader(outcome.retryAfterMs));
    case 'election_closed':
      throw new ApiError('election_not_open');
    case 'unknown_election':
      throw new ApiError('election_not_found');
    case 'invalid_vote':
      throw new ApiError('validation_failed', undefined, { reason: outcome.reason });
  }
}

export function voteRoutes(deps: {
  registry: ElectionRegistry;
  caster: VoteCaster;
  status: VoteStatusReader;
  guard?: VoteGuard;
  /** A vote for a known election refused at the gateway (not by its shard), by error code. */
  onRejected?: (electionId: string, code: string) => void;
  /** A vote answered accepted (also a retry of one): request metadata for the privacy recorder. */
  onAccepted?: (vote: { electionId: string; voterNumber: number; clientIp: string; networkKey: string; userAgent: string; atMs: number }) => void;
  /** True once this node can take votes for the election (its shards are recovered). */
  isServing: (electionId: string) => boolean;
}): RouteDefinition<unknown, unknown>[] {
  const { registry, caster, status } = deps;
  return [
    defineRoute({
      method: 'POST', path: '/api/v1/votes', tag: 'votes', auth: 'user',
      summary: 'Cast a vote. Answered only once the vote is durable. A retry of the same vote gets the same voteId.',
      body: voteBody,
      bodyBytesMax: voteBodyBytesMax,
      errors: [
        'user_mismatch', 'election_not_found', 'election_not_open', 'candidate_not_found', 'already_voted',
        'overloaded', 'vote_not_stored', 'rate_limited', 'captcha_required', 'captcha_invalid', 'captcha_unavailable', 'fraud_rejected',
      ],
      responses: { 200: { description: 'Accepted and durable (or the original acceptance, on a retry)', schema: acceptedSchema } },
      handle: async ({ body, principal, clientIp, networkKey, userAgent }) => {
        const viewer = principal!;
        const election = registry.get(body.electionId);
        if (!election || election.status === 'draft') throw new ApiError('election_not_found');
        const candidateIndex = election.candidateIndexById.get(body.candidateId);
        try {
          if (body.userId !== viewer.userId) throw new ApiError('user_mismatch');
          if (election.status !== 'open') throw new ApiError('election_not_open');
          if (candidateIndex === undefined) throw new ApiError('candidate_not_found');
          if (!deps.isServing(body.electionId)) {
            throw new ApiError('not_ready', 'This election is still loading on this node.', undefined, { 'retry-after': '1' });
          }
          // The guard answers synchronously unless it must wait (Redis, a CAPTCHA provider): only
          // then is there something to await.
          const guarded = deps.guard?.({
            electionId: body.electionId, candidateIndex, userId: viewer.userId, voterNumber: viewer.voterNumber,
            captchaToken: body.captchaToken, captchaPolicy: election.captchaPolicy, clientIp, networkKey, userAgent,
          });
          if ((guarded instanceof Promise ? await guarded : guarded) === 'captcha_already_used') {
            // Read-only: the stored vote answers, nothing is cast.
            const stored = await status.voteStatus(viewer.userId, viewer.voterNumber, body.electionId);
            if (stored === null || stored === 'unknown_user' || stored.candidateIndex !== candidateIndex) throw new ApiError('captcha_invalid');
            deps.onAccepted?.({ electionId: body.electionId, voterNumber: viewer.voterNumber, clientIp, networkKey, userAgent, atMs: Date.now() });
            return { json: { voteId: stored.voteId, status: 'accepted', acceptedAt: stored.acceptedAt.toISOString() } };
          }
        } catch (error) {
          if (error instanceof ApiError) deps.onRejected?.(body.electionId, error.code);
          throw error;
        }
        const outcome = await new Promise<VoteOutcome>((resolve) =>
          caster.cast({ electionId: body.electionId, voterNumber: viewer.voterNumber, candidateIndex }, resolve),
        );
        if (outcome.kind === 'accepted') {
          deps.onAccepted?.({ electionId: body.electionId, voterNumber: viewer.voterNumber, clientIp, networkKey, userAgent, atMs: Date.now() });
        }
        return voteOutcomeReply(outcome);
      },
    }),
    defineRoute({
      method: 'GET', path: '/api/v1/votes/status/{userId}', tag: 'votes', auth: 'user',
      summary: 'Whether a user has a stored vote in an election (that user, or an admin).',
      query: z.strictObject({ electionId: z.uuid() }),
      errors: ['forbidden', 'election_not_found', 'user_not_found', 'validation_failed'],
      responses: { 200: { description: 'The vote status', schema: statusSchema } },
      handle: async ({ params, query, principal }) => {
        const viewer = principal!;
        const userId = z.uuid().safeParse(params.userId);
        if (!userId.success) throw new ApiError('validation_failed', 'userId must be a UUID.');
        if (userId.data !== viewer.userId && viewer.role !== 'admin') throw new ApiError('forbidden');
        const election = registry.get(query.electionId);
        if (!election) throw new ApiError('election_not_found');
        const voterNumber = userId.data === viewer.userId ? viewer.voterNumber : undefined;
        const stored = await status.voteStatus(userId.data, voterNumber, query.electionId);
        if (stored === 'unknown_user') throw new ApiError('user_not_found');
        if (!stored) return { json: { userId: userId.data, electionId: query.electionId, voted: false } };
        return {
          json: {
            userId: userId.data,
            electionId: query.electionId,
            voted: true,
            voteId: stored.voteId,
            candidateId: election.candidates[stored.candidateIndex]?.candidateId,
            acceptedAt: stored.acceptedAt.toISOString(),
          },
        };
      },
    }),
  ];
}
