// The vote path as a gateway feature: the vote, status and results routes plus the results
// WebSocket. It owns no actor and no lease: votes go to the cluster's router (cluster/router.ts),
// which sends each to the node that owns its shard, and results come from the cluster's
// whole-election tallies (cluster/results.ts).
import { Counter, type Registry } from 'prom-client';
import { HotCounter, type HotCounterSeries } from '../../infra/hotMetrics.ts';
import type { VoteOutcome } from '../../actors/shard.ts';
import type { VoteNode } from '../../actors/voteNode.ts';
import type { ClusterNode } from '../../cluster/clusterNode.ts';
import type { Logger } from '../../infra/logger.ts';
import type { Pool } from '../../persistence/db.ts';
import { readUserVoteInElection, readUserVotes } from '../../persistence/storedVotes.ts';
import type { Feature } from '../app.ts';
import type { ElectionRegistry } from '../elections/registry.ts';
import type { Principal } from '../http.ts';
import type { TemplatedApp } from '../uws.ts';
import { resultsRoutes, type FraudCounts } from '../results/routes.ts';
import { createResultsStream, type ResultsStream } from '../results/stream.ts';
import { voteRoutes, type VoteGuard } from './routes.ts';
import { createVotePathMetrics } from './metrics.ts';

/** Per node: gateway-level rejections are counted for this many elections at most. */
const rejectionElectionsMax = 10_000;

export interface VotePathFeature extends Feature {
  readonly voteNode: VoteNode;
  readonly stream: ResultsStream;
}

export function createVotePathFeature(deps: {
  uwsApp: TemplatedApp;
  pool: Pool;
  log: Logger;
  cluster: ClusterNode;
  registry: ElectionRegistry;
  authenticate: (authorizationHeader: string) => Principal;
  metricsRegistry: Registry;
  votePathMetrics: ReturnType<typeof createVotePathMetrics>;
  guard?: VoteGuard;
  fraudCounts?: FraudCounts;
  onVoteAccepted?: Parameters<typeof voteRoutes>[0]['onAccepted'];
  /** Measurement only (LIVEVOTE_MEASURE_WITHOUT metrics): false leaves livevote_votes_total uncounted. Default true. */
  countVotes?: boolean;
  /** Measurement only (LIVEVOTE_MEASURE_WITHOUT body_checks): see voteRoutes. Default true. */
  bodyChecks?: boolean;
  /** An exception caught by the results stream's last-resort guard. */
  onUnhandledError?: (error: unknown) => void;
}): VotePathFeature {
  const { pool, log, registry, cluster } = deps;
  const voteNode = cluster.voteNode;
  const rejections = new Map<string, Map<string, number>>();

  // Counted on every vote: a hot-path counter (infra/hotMetrics.ts).
  const votesTotal = new HotCounter({
    name: 'livevote_votes_total',
    help: 'Vote requests answered, by outcome',
    labelNames: ['outcome'] as const,
    registers: [deps.metricsRegistry],
  });
  const votesRejectedTotal = new Counter({
    name: 'livevote_votes_rejected_at_gateway_total',
    help: 'Vote requests refused before reaching a shard, by error code',
    labelNames: ['code'] as const,
    registers: [deps.metricsRegistry],
  });

  // One series per outcome kind, found without a labels object per vote.
  const votesTotalByKind = new Map<string, HotCounterSeries>();
  const countReply = deps.countVotes === false
    ? (reply: (outcome: VoteOutcome) => void) => reply
    : (reply: (outcome: VoteOutcome) => void) => (outcome: VoteOutcome) => {
      let series = votesTotalByKind.get(outcome.kind);
      if (series === undefined) votesTotalByKind.set(outcome.kind, (series = votesTotal.labels({ outcome: outcome.kind })));
      series.inc();
      reply(outcome);
    };

  const source = {
    results: (electionId: string) => (registry.get(electionId)?.status === 'draft' ? undefined : cluster.results.results(electionId)),
    statistics: (electionId: string) => {
      if (registry.get(electionId) === undefined) return undefined;
      const outcomes: Record<string, number> = { ...(voteNode.stats(electionId)?.outcomes ?? {}) };
      for (const [code, count] of rejections.get(electionId) ?? []) outcomes[code] = (outcomes[code] ?? 0) + count;
      return { votesPerSecond: cluster.results.votesPerSecond(electionId), outcomes };
    },
  };

  const stream = createResultsStream({
    app: deps.uwsApp, registry, source, authenticate: deps.authenticate, log, onUnhandledError: deps.onUnhandledError,
  });
  const served = () => [...registry.all()].filter((e) => e.status !== 'draft').map((e) => e.electionId);
  deps.votePathMetrics.watch({ voteNode, electionIds: served, subscribers: () => stream.subscriberCount() });

  const routes = [
    ...voteRoutes({
      registry,
      caster: { cast: (vote, reply) => cluster.router.cast(vote, countReply(reply)) },
      isServing: (electionId) => cluster.router.isRoutable(electionId),
      guard: deps.guard,
      onAccepted: deps.onVoteAccepted,
      bodyChecks: deps.bodyChecks,
      onRejected: (electionId, code) => {
        votesRejectedTotal.inc({ code });
        let byCode = rejections.get(electionId);
        if (!byCode) {
          if (rejections.size >= rejectionElectionsMax) return;
          byCode = new Map();
          rejections.set(electionId, byCode);
        }
        byCode.set(code, (byCode.get(code) ?? 0) + 1);
      },
      status: {
        voteInElection: (userId, electionId) => readUserVoteInElection(pool, userId, electionId),
        votesOfUser: (userId, page) => readUserVotes(pool, userId, page),
      },
    }),
    ...resultsRoutes({ registry, source, live: stream, fraudCounts: deps.fraudCounts }),
  ];

  return {
    voteNode,
    stream,
    routes,
    extraPaths: [stream.doc],
    async start() {
      stream.start();
    },
    async stop() {
      stream.stop();
      // Leaves the cluster, drains every shard (pending votes answered, final snapshots), releases
      // the leases for the next owners, closes the links and the vote node.
      await cluster.stop();
    },
  };
}
