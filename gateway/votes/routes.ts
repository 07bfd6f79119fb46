// POST /api/v1/votes (the hot path) and the vote status read.
import { z } from 'zod';
import { ApiError } from '../errors.ts';
import { checkVoteBody, voteBody, voteBodyBytesMax } from './voteBody.ts';
import { answerLater, defineRoute, type Principal, type Reply, type RequestContext, type RouteDefinition } from '../http.ts';
import type { ElectionRegistry } from '../elections/registry.ts';
import type { VoteOutcome } from '../../actors/shard.ts';
import { uuidPattern } from '../../persistence/db.ts';
import {
  userVotesPageRowsMax, type UserLookup, type UserVote, type UserVotePosition, type UserVotesPage,
} from '../../persistence/storedVotes.ts';

/** What the votes routes need from the vote node: admission with a reply callback. */
export interface VoteCaster {
  cast(vote: { electionId: string; voterNumber: number; candidateIndex: number }, reply: (outcome: VoteOutcome) => void): void;
}

/** A user's stored votes, looked up by user id (persistence/storedVotes.ts). */
export interface VoteStatusReader {
  /** The user's stored vote in that election, or null. */
  voteInElection(userId: string, electionId: string): Promise<UserLookup<UserVote | null>>;
  /** A page of the user's stored votes, newest first. */
  votesOfUser(userId: string, page: { readonly limit: number; readonly after?: UserVotePosition }): Promise<UserLookup<UserVotesPage>>;
}

export const statusVotesLimitDefault = 20;

/** A vote past the gateway's checks, on its way to its shard. */
interface CastRequest {
  readonly electionId: string;
  readonly candidateId: string;
  readonly candidateIndex: number;
  readonly voter: Principal;
  readonly clientIp: string;
  readonly networkKey: string;
  readonly userAgent: string;
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

export { checkVoteBody, voteBody, voteBodyBytesMax } from './voteBody.ts';

/**
 * Measurement only (LIVEVOTE_MEASURE_WITHOUT body_checks): any JSON object taken as a vote body,
 * unchecked. Anything else still goes to the schema, so the handler never reads a field of null.
 */
function uncheckedVoteBody(json: unknown): z.infer<typeof voteBody> | undefined {
  return typeof json === 'object' && json !== null ? (json as z.infer<typeof voteBody>) : undefined;
}

/** The accepted answer's time: votes of one batch share their millisecond, so remember the last. */
let lastAcceptedAtMs = -1;
let lastAcceptedAtIso = '';
function isoTime(ms: number): string {
  if (ms !== lastAcceptedAtMs) {
    lastAcceptedAtIso = new Date(ms).toISOString();
    lastAcceptedAtMs = ms;
  }
  return lastAcceptedAtIso;
}

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
}).describe('With `electionId`: whether the user has a stored vote in that election.');

const votesListSchema = z.object({
  userId: z.uuid(),
  votes: z.array(z.object({
    electionId: z.uuid(),
    voteId: z.uuid(),
    candidateId: z.uuid(),
    acceptedAt: z.string().describe('ISO 8601 time the vote was accepted'),
  })).describe('Newest first (by acceptedAt, then electionId); at most `limit`.'),
  nextCursor: z.string().nullable().describe('Pass as `cursor` for the next page; null on the last page.'),
}).describe('Without `electionId`: every election the user has a stored vote in, a page at a time.');

const statusQuery = z.strictObject({
  electionId: z.uuid().optional().describe("One election: answers that election's status. Without it: the list of the user's votes."),
  limit: z.coerce.number().int().min(1).max(userVotesPageRowsMax).optional()
    .describe(`List only: votes per page (default ${statusVotesLimitDefault}, at most ${userVotesPageRowsMax}).`),
  cursor: z.string().min(1).max(128).optional().describe('List only: `nextCursor` of the previous page.'),
});

/** Opaque to clients: where the previous page ended. */
export function encodeVotesCursor(position: UserVotePosition): string {
  return Buffer.from(`${position.acceptedAtMs}.${position.electionId}`, 'utf8').toString('base64url');
}

export function decodeVotesCursor(cursor: string): UserVotePosition | undefined {
  const text = Buffer.from(cursor, 'base64url').toString('utf8');
  const match = /^(\d{1,16})\.([0-9a-f-]{36})$/.exec(text);
  if (!match) return undefined;
  const acceptedAtMs = Number(match[1]);
  const electionId = match[2] as string;
  if (!Number.isSafeInteger(acceptedAtMs) || !uuidPattern.test(electionId)) return undefined;
  // Only the canonical spelling: a cursor is something we handed out, not something to guess at.
  return encodeVotesCursor({ acceptedAtMs, electionId }) === cursor ? { acceptedAtMs, electionId } : undefined;
}

function queryIssue(path: string, message: string): ApiError {
  return new ApiError('validation_failed', undefined, { issues: [{ path: `query.${path}`, message }] });
}

function foundOrThrow<T>(lookup: UserLookup<T>): T {
  switch (lookup.kind) {
    case 'found':
      return lookup.value;
    case 'unknown_user':
      throw new ApiError('user_not_found');
    case 'erased':
      throw new ApiError('account_erased');
  }
}

function secondsHeader(ms: number): Record<string, string> {
  return { 'retry-after': String(Math.max(1, Math.ceil(ms / 1000))) };
}

const routingReasons: ReadonlySet<string> = new Set(['shard_moving', 'not_owner', 'forward_failed', 'node_fenced']);

/** Outcomes are data; this is the one place that turns them into HTTP. */
export function voteOutcomeReply(outcome: VoteOutcome): Reply {
  switch (outcome.kind) {
    case 'accepted':
      // JSON.stringify({ voteId, status, acceptedAt }) written out: a uuid and an ISO time need no escaping.
      return { raw: `{"voteId":"${outcome.voteId}","status":"accepted","acceptedAt":"${isoTime(outcome.acceptedAtMs)}"}`, contentType: 'application/json' };
    case 'already_voted':
      throw new ApiError('already_voted', undefined, { voteId: outcome.voteId, acceptedAt: new Date(outcome.acceptedAtMs).toISOString() });
    case 'overloaded':
      throw new ApiError('overloaded', undefined, undefined, secondsHeader(outcome.retryAfterMs));
    case 'unavailable':
      // Where the vote went wrong on its way to the shard (cluster/router.ts) is not a storage
      // failure: a retry reaches the shard's owner once the map has settled.
      throw new ApiError(routingReasons.has(outcome.reason) ? 'shard_unavailable' : 'vote_not_stored', undefined, { reason: outcome.reason }, secondsHeader(outcome.retryAfterMs));
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
  /**
   * Measurement only (LIVEVOTE_MEASURE_WITHOUT body_checks): false takes the vote body as
   * JSON.parse gives it, without its schema or fast check. Default true.
   */
  bodyChecks?: boolean;
}): RouteDefinition<unknown, unknown>[] {
  const { registry, caster, status } = deps;

  /** Answered through ctx.answer/ctx.fail from the shard's reply (answerLater: no promise per vote). */
  const cast = (ctx: RequestContext<unknown, unknown>, vote: CastRequest): void => {
    caster.cast({ electionId: vote.electionId, voterNumber: vote.voter.voterNumber, candidateIndex: vote.candidateIndex }, (outcome) => {
      // Everything here is caught: this runs inside the vote node's reply delivery, and whatever
      // it throws must end as the request's answer (fail), not in the vote node.
      try {
        if (outcome.kind === 'accepted') {
          deps.onAccepted?.({
            electionId: vote.electionId, voterNumber: vote.voter.voterNumber, clientIp: vote.clientIp, networkKey: vote.networkKey, userAgent: vote.userAgent, atMs: Date.now(),
          });
        }
        ctx.answer(voteOutcomeReply(outcome));
      } catch (error) {
        ctx.fail(error);
      }
    });
  };

  /** A guard that must wait, or whose only objection is a used CAPTCHA solution (see VoteGuardVerdict). */
  const afterGuard = async (ctx: RequestContext<unknown, unknown>, vote: CastRequest, guarded: VoteGuardVerdict | Promise<VoteGuardVerdict>): Promise<void> => {
    try {
      if ((await guarded) === 'captcha_already_used') {
        // Read-only: the stored vote answers, nothing is cast.
        const stored = await status.voteInElection(vote.voter.userId, vote.electionId);
        if (stored.kind !== 'found' || stored.value === null || stored.value.candidateId !== vote.candidateId) throw new ApiError('captcha_invalid');
        deps.onAccepted?.({
          electionId: vote.electionId, voterNumber: vote.voter.voterNumber, clientIp: vote.clientIp, networkKey: vote.networkKey, userAgent: vote.userAgent, atMs: Date.now(),
        });
        ctx.answer({ json: { voteId: stored.value.voteId, status: 'accepted', acceptedAt: new Date(stored.value.acceptedAtMs).toISOString() } });
        return;
      }
    } catch (error) {
      if (error instanceof ApiError) deps.onRejected?.(vote.electionId, error.code);
      throw error;
    }
    cast(ctx, vote);
  };

  return [
    defineRoute({
      method: 'POST', path: '/api/v1/votes', tag: 'votes', auth: 'user',
      summary: 'Cast a vote. Answered only once the vote is durable. A retry of the same vote gets the same voteId.',
      body: voteBody,
      // Without its checks the body can go to no worker: the worker's check is checkVoteBody.
      ...(deps.bodyChecks === false ? { bodyFastPath: uncheckedVoteBody } : { bodyFastPath: checkVoteBody, checksOffThread: 'vote' as const }),
      bodyBytesMax: voteBodyBytesMax,
      errors: [
        'user_mismatch', 'election_not_found', 'election_not_open', 'candidate_not_found', 'already_voted',
        'overloaded', 'vote_not_stored', 'shard_unavailable', 'rate_limited', 'captcha_required', 'captcha_invalid', 'captcha_unavailable', 'fraud_rejected',
      ],
      responses: { 200: { description: 'Accepted and durable (or the original acceptance, on a retry)', schema: acceptedSchema } },
      // Not an async function, and no promise: a vote that needs no await (no guard waiting on
      // Redis or a CAPTCHA provider) is answered from the shard's reply through ctx.answer.
      handle: (ctx) => {
        const { body, principal, clientIp, networkKey, userAgent } = ctx;
        const viewer = principal!;
        const election = registry.get(body.electionId);
        if (!election || election.status === 'draft') throw new ApiError('election_not_found');
        const candidateIndex = election.candidateIndexById.get(body.candidateId);
        let guarded: VoteGuardVerdict | Promise<VoteGuardVerdict>;
        try {
          if (body.userId !== viewer.userId) throw new ApiError('user_mismatch');
          if (election.status !== 'open') throw new ApiError('election_not_open');
          if (candidateIndex === undefined) throw new ApiError('candidate_not_found');
          if (!deps.isServing(body.electionId)) {
            throw new ApiError('not_ready', 'This election is still loading on this node.', undefined, { 'retry-after': '1' });
          }
          guarded = deps.guard?.({
            electionId: body.electionId, candidateIndex, userId: viewer.userId, voterNumber: viewer.voterNumber,
            captchaToken: body.captchaToken, captchaPolicy: election.captchaPolicy, clientIp, networkKey, userAgent,
          });
        } catch (error) {
          if (error instanceof ApiError) deps.onRejected?.(body.electionId, error.code);
          throw error;
        }
        const vote: CastRequest = { electionId: body.electionId, candidateId: body.candidateId, candidateIndex, voter: viewer, clientIp, networkKey, userAgent };
        if (guarded instanceof Promise || guarded === 'captcha_already_used') {
          // fail never throws: no rejection is left unhandled.
          afterGuard(ctx, vote, guarded).catch((error: unknown) => ctx.fail(error));
        } else {
          cast(ctx, vote);
        }
        return answerLater;
      },
    }),
    defineRoute({
      method: 'GET', path: '/api/v1/votes/status/{userId}', tag: 'votes', auth: 'user',
      summary:
        "A user's stored votes (that user, or an admin). With `electionId`: whether they voted in that election. Without: " +
        'every election they voted in, newest first, `limit` per page, `nextCursor` for the next page. An erased account ' +
        'answers account_erased: its votes stay counted but no longer link to it.',
      query: statusQuery,
      errors: ['forbidden', 'election_not_found', 'user_not_found', 'account_erased', 'validation_failed'],
      responses: {
        200: { description: 'With `electionId`: that election\'s status. Without: a page of the user\'s votes.', schema: z.union([statusSchema, votesListSchema]) },
      },
      handle: async ({ params, query, principal }) => {
        const viewer = principal!;
        const userId = z.uuid().safeParse(params.userId);
        if (!userId.success) throw new ApiError('validation_failed', 'userId must be a UUID.');
        if (userId.data !== viewer.userId && viewer.role !== 'admin') throw new ApiError('forbidden');
        if (query.electionId === undefined) {
          const after = query.cursor === undefined ? undefined : decodeVotesCursor(query.cursor);
          if (query.cursor !== undefined && !after) throw queryIssue('cursor', 'Not a cursor this API handed out; pass nextCursor as is.');
          const page = foundOrThrow(await status.votesOfUser(userId.data, { limit: query.limit ?? statusVotesLimitDefault, after }));
          return {
            json: {
              userId: userId.data,
              votes: page.votes.map((vote) => ({
                electionId: vote.electionId, voteId: vote.voteId, candidateId: vote.candidateId, acceptedAt: new Date(vote.acceptedAtMs).toISOString(),
              })),
              nextCursor: page.next ? encodeVotesCursor(page.next) : null,
            } satisfies z.infer<typeof votesListSchema>,
          };
        }
        if (query.limit !== undefined || query.cursor !== undefined) {
          throw queryIssue(query.limit !== undefined ? 'limit' : 'cursor', 'limit and cursor page the list of all elections; they do not apply with electionId.');
        }
        if (!registry.get(query.electionId)) throw new ApiError('election_not_found');
        const stored = foundOrThrow(await status.voteInElection(userId.data, query.electionId));
        if (!stored) return { json: { userId: userId.data, electionId: query.electionId, voted: false } };
        return {
          json: {
            userId: userId.data,
            electionId: query.electionId,
            voted: true,
            voteId: stored.voteId,
            candidateId: stored.candidateId,
            acceptedAt: new Date(stored.acceptedAtMs).toISOString(),
          } satisfies z.infer<typeof statusSchema>,
        };
      },
    }),
  ];
}
