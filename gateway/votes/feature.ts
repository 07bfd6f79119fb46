// The vote path as a gateway feature: it owns this node's VoteNode (actors/) on the Postgres
// adapters (persistence/), takes the shard leases of every election it serves (cluster/), and
// brings the vote, status and results routes plus the results WebSocket.
import { Counter, type Registry } from 'prom-client';
import { HotCounter } from '../../infra/hotMetrics.ts';
import { createVoteNode, type VoteNode } from '../../actors/voteNode.ts';
import type { VoteOutcome } from '../../actors/shard.ts';
import { acquireShardLeases, ShardLeaseKeeper } from '../../cluster/leases.ts';
import type { NodeIdentity } from '../../cluster/nodeIdentity.ts';
import type { Config } from '../../infra/config.ts';
import type { Logger } from '../../infra/logger.ts';
import type { Pool } from '../../persistence/db.ts';
import { createPgBatchIdSource } from '../../persistence/batchIds.ts';
import { createPgSnapshotStore } from '../../persistence/snapshots.ts';
import { createPgStoredVoteReader, readUserVoteInElection, readUserVotes } from '../../persistence/storedVotes.ts';
import { openSpillQueue } from '../../persistence/spillQueues.ts';
import { createPgJournal } from '../../persistence/voteJournal.ts';
import type { Feature } from '../app.ts';
import type { ElectionRegistry, ElectionView } from '../elections/registry.ts';
import type { Principal } from '../http.ts';
import type { TemplatedApp } from '../uws.ts';
import { resultsRoutes, type FraudCounts } from '../results/routes.ts';
import { createResultsStream, type ResultsStream } from '../results/stream.ts';
import { voteRoutes, type VoteGuard } from './routes.ts';
import { createVotePathMetrics } from './metrics.ts';

/** Leases outlive a few missed renewals; a node that stops renewing is fenced by the next owner. */
const leaseTtlMs = 15_000;
/** Per node: gateway-level rejections are counted for this many elections at most. */
const rejectionElectionsMax = 10_000;

export interface VotePathFeature extends Feature {
  readonly voteNode: VoteNode;
  readonly stream: ResultsStream;
}

export async function createVotePathFeature(deps: {
  uwsApp: TemplatedApp;
  pool: Pool;
  config: Config;
  log: Logger;
  identity: NodeIdentity;
  registry: ElectionRegistry;
  authenticate: (authorizationHeader: string) => Principal;
  metricsRegistry: Registry;
  guard?: VoteGuard;
  fraudCounts?: FraudCounts;
  onVoteAccepted?: Parameters<typeof voteRoutes>[0]['onAccepted'];
  /** An exception caught by the results stream's last-resort guard. */
  onUnhandledError?: (error: unknown) => void;
}): Promise<VotePathFeature> {
  const { pool, config, log, identity, registry } = deps;
  const nodeId = identity.nodeId;
  const votePathMetrics = createVotePathMetrics(deps.metricsRegistry);
  const journal = createPgJournal({ pool, nodeId });
  // Where batches go when Postgres does not store them in time (README, "the deadline").
  const spillQueue = await openSpillQueue(config.spill);
  const voteNode = createVoteNode({
    journal: votePathMetrics.timed(journal),
    spill: spillQueue === null ? undefined : { queue: spillQueue, store: journal },
    snapshots: createPgSnapshotStore({ pool, nodeId }),
    storedVotes: createPgStoredVoteReader(pool),
    batchIds: await createPgBatchIdSource({ pool }),
    logger: log.child({ component: 'vote-node' }),
    config: {
      flushIntervalMs: config.flushIntervalMs,
      batchRowsMax: config.batchRowsMax,
      commitsInFlightMax: config.commitsInFlightMax,
      commitDeadlineMs: config.commitDeadlineMs,
      spillAfterMs: spillQueue === null ? null : config.spill.afterMs,
      shardPendingVotesMax: config.pendingVotesMax,
      snapshotIntervalMs: config.snapshotIntervalMs,
    },
  });
  const keepers = new Map<string, ShardLeaseKeeper>();
  const serving = new Set<string>();
  const rejections = new Map<string, Map<string, number>>();

  // Counted on every vote: a hot-path counter (infra/hotMetrics.ts).
  const votesTotal = new HotCounter({
    name: 'livevote_votes_total',
    help: 'Vote requests answered by the vote node, by outcome',
    labelNames: ['outcome'] as const,
    registers: [deps.metricsRegistry],
  });
  const votesRejectedTotal = new Counter({
    name: 'livevote_votes_rejected_at_gateway_total',
    help: 'Vote requests refused before reaching a shard, by error code',
    labelNames: ['code'] as const,
    registers: [deps.metricsRegistry],
  });

  /** Take the leases (bumping epochs: any earlier writer is fenced) and recover the shards. */
  const serve = async (election: ElectionView) => {
    if (serving.has(election.electionId)) return;
    // Single-node mode: no other node can hold these shards; a previous process of this node
    // must be fenced at once, not waited out (cluster/leases.ts).
    const epochs = await acquireShardLeases(pool, {
      electionId: election.electionId, shardCount: election.shardCount, nodeId, leaseTtlMs, takeOver: 'any',
    });
    const keeper = new ShardLeaseKeeper({
      pool, electionId: election.electionId, nodeId, leaseTtlMs,
      leases: epochs.map((epoch, shard) => ({ shard, epoch })),
      onLost: (shards) => {
        votePathMetrics.leasesLostTotal.inc(shards.length);
        log.error({ electionId: election.electionId, shards }, 'shard leases lost to another node; their writes are fenced');
      },
      onError: (error) => log.warn({ electionId: election.electionId, err: error }, 'lease renewal failed; retrying'),
    });
    keeper.start();
    keepers.set(election.electionId, keeper);
    const started = Date.now();
    await voteNode.openElection({
      electionId: election.electionId, shardCount: election.shardCount, candidateCount: election.candidates.length, epochs,
    });
    if (election.status === 'closed') voteNode.closeElection(election.electionId);
    serving.add(election.electionId);
    log.info({ electionId: election.electionId, shards: election.shardCount, recoveryMs: Date.now() - started, status: election.status }, 'election served');
  };

  registry.onChange(async (election) => {
    if (election.status === 'open') await serve(election);
    if (election.status === 'closed') {
      if (!serving.has(election.electionId)) await serve(election);
      voteNode.closeElection(election.electionId);
    }
  });

  const countReply = (reply: (outcome: VoteOutcome) => void) => (outcome: VoteOutcome) => {
    votesTotal.labels({ outcome: outcome.kind }).inc();
    reply(outcome);
  };

  const source = {
    results: (electionId: string) => (serving.has(electionId) ? voteNode.results(electionId) : undefined),
    statistics: (electionId: string) => {
      const stats = voteNode.stats(electionId);
      if (!stats) return undefined;
      const outcomes: Record<string, number> = { ...stats.outcomes };
      for (const [code, count] of rejections.get(electionId) ?? []) outcomes[code] = (outcomes[code] ?? 0) + count;
      return { votesPerSecond: stats.votesPerSecond, outcomes };
    },
  };

  const stream = createResultsStream({
    app: deps.uwsApp, registry, source, authenticate: deps.authenticate, log, onUnhandledError: deps.onUnhandledError,
  });
  votePathMetrics.watch({ voteNode, electionIds: () => serving, subscribers: () => stream.subscriberCount(), spillQueue });

  const routes = [
    ...voteRoutes({
      registry,
      caster: { cast: (vote, reply) => voteNode.cast(vote, countReply(reply)) },
      isServing: (electionId) => serving.has(electionId),
      guard: deps.guard,
      onAccepted: deps.onVoteAccepted,
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
      for (const election of registry.all()) if (election.status !== 'draft') await serve(election);
      stream.start();
    },
    async stop() {
      stream.stop();
      // Flushes pending votes, answers every waiting request, writes final snapshots.
      await voteNode.close();
      await spillQueue?.close();
      for (const keeper of keepers.values()) await keeper.stop({ release: true });
    },
  };
}
