// Results: full, live (cached JSON, refreshed by the publisher), statistics (admin), and the
// WebSocket stream. Every figure here comes from COMMITTED tallies only: a vote that could still
// be rolled back is never on air.
import { z } from 'zod';
import { ApiError } from '../errors.ts';
import { defineRoute, type RouteDefinition } from '../http.ts';
import { electionIdParam } from '../elections/routes.ts';
import type { ElectionRegistry, ElectionView } from '../elections/registry.ts';
import type { ElectionResults } from '../../actors/election.ts';

/** What the results routes read from the vote node. */
export interface ResultsSource {
  results(electionId: string): ElectionResults | undefined;
  statistics(electionId: string): ElectionStatistics | undefined;
}

export interface ElectionStatistics {
  readonly votesPerSecond: number;
  /** Replies by outcome (accepted, already_voted, overloaded, unavailable:<reason>, …). */
  readonly outcomes: Readonly<Record<string, number>>;
}

/** Anti-fraud counters by rule for one election (filled in by the abuse controls). */
export type FraudCounts = (electionId: string) => Promise<Readonly<Record<string, number>>>;

export const resultsPayloadSchema = z.object({
  type: z.literal('results'),
  electionId: z.uuid(),
  title: z.string(),
  status: z.enum(['open', 'closed']),
  totalVotes: z.number().int(),
  candidates: z.array(z.object({ candidateId: z.uuid(), name: z.string(), votes: z.number().int() })),
  queuedVotes: z.number().int().describe(
    'Votes answered accepted that wait in the spill queue because the database did not store them in time: durable, ' +
      'but not in totalVotes or the candidates yet. While it is above 0 the tally is incomplete; the drainer counts them once the database answers.',
  ),
  version: z.number().int().describe('Increases with every committed change; equal versions mean equal results'),
  asOf: z.string().describe('When these committed results were read'),
});

export type ResultsPayload = z.infer<typeof resultsPayloadSchema>;

export function buildResultsPayload(election: ElectionView, results: ElectionResults, nowMs: number): ResultsPayload {
  return {
    type: 'results',
    electionId: election.electionId,
    title: election.title,
    status: election.status === 'closed' ? 'closed' : 'open',
    totalVotes: results.total,
    candidates: election.candidates.map((c) => ({ candidateId: c.candidateId, name: c.name, votes: results.tallies[c.candidateIndex] ?? 0 })),
    queuedVotes: results.queuedVotes,
    version: results.version,
    asOf: new Date(nowMs).toISOString(),
  };
}

const statisticsSchema = z.object({
  electionId: z.uuid(),
  status: z.enum(['draft', 'open', 'closed']),
  totalVotes: z.number().int(),
  votesPerSecond: z.number(),
  perShard: z.array(z.object({ shard: z.number().int(), votes: z.number().int() })),
  outcomes: z.record(z.string(), z.number().int()).describe('Replies by outcome since this node started'),
  rejectionsByReason: z.record(z.string(), z.number().int()),
  fraudRuleHits: z.record(z.string(), z.number().int()),
});

export interface LiveResultsCache {
  /** The serialised payload for an open or closed election, at most one publish interval old. */
  liveJson(electionId: string): string | undefined;
}

export function resultsRoutes(deps: {
  registry: ElectionRegistry;
  source: ResultsSource;
  live: LiveResultsCache;
  fraudCounts?: FraudCounts;
  nowMs?: () => number;
}): RouteDefinition<unknown, unknown>[] {
  const now = deps.nowMs ?? Date.now;
  const visible = (electionId: string): ElectionView => {
    const election = deps.registry.get(electionId);
    if (!election || election.status === 'draft') throw new ApiError('election_not_found');
    return election;
  };
  const resultsOf = (election: ElectionView): ElectionResults => {
    const results = deps.source.results(election.electionId);
    if (!results) throw new ApiError('not_ready', 'This election is still loading on this node.', undefined, { 'retry-after': '1' });
    return results;
  };
  return [
    defineRoute({
      method: 'GET', path: '/api/v1/results/{electionId}', tag: 'results', auth: 'public',
      summary: 'Aggregated committed results of an election, read now.',
      errors: ['election_not_found', 'validation_failed', 'not_ready'],
      responses: { 200: { description: 'Results', schema: resultsPayloadSchema } },
      handle: ({ params }) => {
        const election = visible(electionIdParam(params));
        return { json: buildResultsPayload(election, resultsOf(election), now()) };
      },
    }),
    defineRoute({
      method: 'GET', path: '/api/v1/results/live/{electionId}', tag: 'results', auth: 'public',
      summary: 'Live count for polling clients: the cached payload, at most 250 ms old, no per-request work.',
      errors: ['election_not_found', 'validation_failed', 'not_ready'],
      responses: { 200: { description: 'Results', schema: resultsPayloadSchema } },
      handle: ({ params }) => {
        const election = visible(electionIdParam(params));
        const cached = deps.live.liveJson(election.electionId);
        if (cached) return { raw: cached, contentType: 'application/json', headers: { 'cache-control': 'public, max-age=0, s-maxage=1' } };
        return { json: buildResultsPayload(election, resultsOf(election), now()) };
      },
    }),
    defineRoute({
      method: 'GET', path: '/api/v1/results/statistics/{electionId}', tag: 'results', auth: ['admin'],
      summary: 'Detailed statistics: totals, votes/s, per-shard counts, rejections by reason, fraud rule hits.',
      errors: ['election_not_found', 'validation_failed', 'not_ready'],
      responses: { 200: { description: 'Statistics', schema: statisticsSchema } },
      handle: async ({ params }) => {
        const electionId = electionIdParam(params);
        const election = deps.registry.get(electionId);
        if (!election) throw new ApiError('election_not_found');
        const results = deps.source.results(electionId);
        const statistics = deps.source.statistics(electionId);
        const outcomes = statistics?.outcomes ?? {};
        const rejectionsByReason: Record<string, number> = {};
        for (const [outcome, count] of Object.entries(outcomes)) if (outcome !== 'accepted') rejectionsByReason[outcome] = count;
        return {
          json: {
            electionId,
            status: election.status,
            totalVotes: results?.total ?? 0,
            votesPerSecond: statistics?.votesPerSecond ?? 0,
            perShard: (results?.perShard ?? []).map((votes, shard) => ({ shard, votes })),
            outcomes,
            rejectionsByReason,
            fraudRuleHits: (await deps.fraudCounts?.(electionId)) ?? {},
          },
        };
      },
    }),
  ];
}
