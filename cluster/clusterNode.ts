// One node's part of the cluster, composed: membership (heartbeat, view, self-fence), the
// coordinator (when this node holds its lease), the shard host (the shard actors this node
// serves, on its vote node), the router (where each vote goes), the links to the other nodes and
// the whole-election results. The gateway talks to `router` and `results` only.
import { createHash, createHmac } from 'node:crypto';
import type { Registry } from 'prom-client';
import { Counter, Gauge } from 'prom-client';
import { HotCounter, type HotCounterSeries } from '../infra/hotMetrics.ts';
import { createVoteNode, type VoteNode, type VoteNodeConfig } from '../actors/voteNode.ts';
import type { Journal, SpillQueue } from '../actors/ports.ts';
import { createPgBatchIdSource } from '../persistence/batchIds.ts';
import { createPgClusterStore } from '../persistence/clusterStore.ts';
import { createPool, endPool, poolUrl, type Pool } from '../persistence/db.ts';
import { createPgSnapshotStore } from '../persistence/snapshots.ts';
import { createPgStoredVoteReader } from '../persistence/storedVotes.ts';
import { createPgJournal } from '../persistence/voteJournal.ts';
import { createCoordinator } from './coordinator.ts';
import { createPgShardLeases } from './leases.ts';
import { createLinks, mountLinkServer, type Links } from './links.ts';
import { Membership } from './membership.ts';
import type { ClusterOperations, ClusterStore, ClusterView, ShardLeases } from './ports.ts';
import type { TalliesChanged } from './protocol.ts';
import { Replication, type ReplicaLag } from './replication.ts';
import { ClusterResults } from './results.ts';
import { SpillGuard } from './spillGuard.ts';
import { Router } from './router.ts';
import { ShardHost, type HostedElectionInfo } from './shardHost.ts';
import type { TemplatedApp } from '../gateway/uws.ts';

export interface ClusterSettings {
  readonly heartbeatIntervalMs: number;
  readonly deadAfterMs: number;
  readonly movesInFlightMax: number;
  readonly forwardTimeoutMs: number;
  readonly forwardInFlightMax: number;
  readonly leaseTtlMs: number;
  readonly autoBalance: boolean;
  /** How long the router keeps retrying a vote whose shard is between owners. */
  readonly routeRetryMs: number;
  /** Warm replicas per shard (LIVEVOTE_REPLICAS); unset or 0: none. */
  readonly replicas?: number;
}

export interface ClusterLog {
  info(obj: object, msg: string): void;
  warn(obj: object, msg: string): void;
  error(obj: object, msg: string): void;
  debug(obj: object, msg: string): void;
  child(bindings: object): ClusterLog;
}

export interface ClusterNodeDeps {
  readonly pool: Pool;
  readonly nodeId: string;
  readonly az: string;
  readonly settings: ClusterSettings;
  readonly voteNodeConfig: Partial<VoteNodeConfig>;
  readonly secrets: { readonly jwtSecret: string; readonly emailHashKey: string; readonly ipHashKey: string; readonly captchaHmacKey: string };
  readonly log: ClusterLog;
  readonly metricsRegistry: Registry;
  /** The elections this node has loaded (the gateway's registry). */
  readonly election: (electionId: string) => HostedElectionInfo | undefined;
  readonly electionIds: () => Iterable<string>;
  /** Elections changed somewhere in the cluster: reload them. */
  readonly reloadElections: () => Promise<void>;
  readonly wrapJournal?: (journal: Journal) => Journal;
  readonly onLeasesLost?: (count: number) => void;
  /** Where batches go when Postgres does not store them in time (voteNodeConfig.spillAfterMs then set). */
  readonly spillQueue?: SpillQueue | null;
  /** Which kind spillQueue is, and LIVEVOTE_SPILL_FILE_IN_CLUSTER (cluster/spillGuard.ts). */
  readonly spillQueueKind?: 'file' | 'sqs' | 'off';
  readonly spillFileInCluster?: 'refuse' | 'allow';
  /** Tests and the simulation: other stores. */
  readonly store?: ClusterStore;
  readonly leases?: ShardLeases;
}

/** A hash that tells whether two nodes share secrets without revealing them. */
export function secretsFingerprint(secrets: ClusterNodeDeps['secrets']): string {
  const hash = createHash('sha256').update('livevote-cluster-secrets-v1');
  for (const secret of [secrets.jwtSecret, secrets.emailHashKey, secrets.ipHashKey, secrets.captchaHmacKey]) hash.update('\0').update(secret);
  return hash.digest('hex').slice(0, 32);
}

export interface AdminClusterView {
  readonly version: number;
  readonly coordinatorNodeId: string | null;
  readonly nodes: readonly {
    nodeId: string; az: string; url: string; status: string; lastHeartbeatAt: string; startedAt: string; shardsOwned: number; incarnation: number;
    draining: boolean;
  }[];
  readonly shards: readonly {
    electionId: string; shard: number; ownerNodeId: string; epoch: number; leaseNodeId: string | null; mapVersion: number; pinned: boolean;
    replicaNodeIds: readonly string[];
    /** Each replica's lag, as this node knows it (replication.ts ReplicaLag). */
    replicas: readonly ReplicaLag[];
  }[];
}

export interface ClusterNode {
  readonly nodeId: string;
  readonly voteNode: VoteNode;
  readonly router: Router;
  readonly results: ClusterResults;
  readonly membership: Membership;
  readonly shardHost: ShardHost;
  readonly links: Links;
  /** Move, drain, balance: recorded in the store, carried out by the coordinator. */
  readonly operations: ClusterOperations;
  /** Mount the inter-node link endpoint on this node's HTTP app. */
  mount(app: TemplatedApp): void;
  /** Join with the URL peers reach this node at; resolves once this node's shards are served (bounded). */
  start(advertiseUrl: string): Promise<void>;
  /** An election changed on this node: wait (bounded) until its shards are routable and ours served. */
  electionChanged(electionId: string): Promise<void>;
  /** Fresh from the store. */
  adminView(): Promise<AdminClusterView>;
  /** Leave the cluster and hand every shard to its new owner (drained, snapshotted, released); routing goes on. */
  handOff(): Promise<void>;
  /** Graceful: hand off (if not done yet), close links and the vote node. */
  stop(): Promise<void>;
}

const readyWaitMs = 10_000;

export async function createClusterNode(deps: ClusterNodeDeps): Promise<ClusterNode> {
  const { pool, nodeId, settings } = deps;
  const log = deps.log.child({ component: 'cluster', nodeId });
  // Heartbeats and leases on connections of their own: a vote path that saturates the main pool
  // must not delay a heartbeat into the self-fence.
  const clusterPool = createPool(poolUrl(pool), 3, 'livevote-cluster', (error) => log.warn({ err: error }, 'idle cluster connection failed; the pool replaces it'));
  const store = deps.store ?? createPgClusterStore(clusterPool);
  const journal = createPgJournal({ pool, nodeId });
  const spillGuard = new SpillGuard({
    nodeId, queueKind: deps.spillQueue ? (deps.spillQueueKind ?? 'sqs') : 'off', fileInCluster: deps.spillFileInCluster ?? 'refuse', deadAfterMs: settings.deadAfterMs,
  });
  spillGuard.onPausedChange = (paused, peers) => {
    if (paused) log.error({ peers }, 'spilling paused: this node\'s spill queue is a file only it can drain, and peers are alive; a batch Postgres does not store in time is answered 503 (LIVEVOTE_SPILL_FILE_IN_CLUSTER)');
    else log.warn({}, 'spilling resumed: no peer is alive');
  };
  new Gauge({
    name: 'livevote_spill_queue_paused',
    help: '1 while this node refuses to spill because its queue is a file and other members are alive (LIVEVOTE_SPILL_FILE_IN_CLUSTER)',
    registers: [deps.metricsRegistry],
    collect() { this.set(spillGuard.paused ? 1 : 0); },
  });
  const snapshots = createPgSnapshotStore({ pool, nodeId });
  let replication: Replication | undefined;
  const voteNode = createVoteNode({
    journal: deps.wrapJournal ? deps.wrapJournal(journal) : journal,
    spill: deps.spillQueue ? { queue: spillGuard.wrap(deps.spillQueue), store: journal } : undefined,
    snapshots,
    // Only with replication on: the hook costs a copy of each committed batch's rows.
    onBatchCommitted: (settings.replicas ?? 0) > 0 ? (batch) => replication?.streamer.onBatchCommitted(batch) : undefined,
    storedVotes: createPgStoredVoteReader(pool),
    batchIds: await createPgBatchIdSource({ pool }),
    logger: deps.log.child({ component: 'vote-node' }),
    config: deps.voteNodeConfig,
  });
  const retryAfterMs = deps.voteNodeConfig.retryAfterMs ?? 1_000;

  // Counted on every vote: a hot-path counter (infra/hotMetrics.ts; prom-client's hashed the label
  // set on every inc, ~1% of a vote's busy samples), its series kept per route and outcome kind.
  const routedTotal = new HotCounter({
    name: 'livevote_votes_routed_total',
    help: 'Votes by route (local: owned here; forwarded: sent to the owner; received: forwarded here by a peer) and outcome',
    labelNames: ['route', 'outcome'] as const,
    registers: [deps.metricsRegistry],
  });
  const routedSeries = { local: new Map<string, HotCounterSeries>(), forwarded: new Map<string, HotCounterSeries>(), received: new Map<string, HotCounterSeries>() };
  const countRouted = (route: 'local' | 'forwarded' | 'received', kind: string): void => {
    const byKind = routedSeries[route];
    let series = byKind.get(kind);
    if (series === undefined) byKind.set(kind, (series = routedTotal.labels({ route, outcome: kind })));
    series.inc();
  };
  const shardsServed = new Gauge({ name: 'livevote_shards_served', help: 'Shards this node serves', registers: [deps.metricsRegistry] });
  new Gauge({
    name: 'livevote_route_retries_waiting',
    help: 'Votes waiting inside the cluster for their shard to settle on an owner (a move, a drain, a failover)',
    registers: [deps.metricsRegistry],
    collect() { this.set(router?.retriesWaitingNow ?? 0); },
  });
  new Counter({
    name: 'livevote_route_retried_votes_total',
    help: 'Votes the router asked again because their shard was between owners',
    registers: [deps.metricsRegistry],
    collect() { this.reset(); this.inc(router?.retriedVotes ?? 0); },
  });
  new Gauge({
    name: 'livevote_route_held_votes',
    help: 'Votes this node holds while it takes their shard over (a move, a drain, a failover), cast once it serves the shard',
    registers: [deps.metricsRegistry],
    collect() { this.set(router?.heldVotesNow ?? 0); },
  });
  new Counter({
    name: 'livevote_route_held_votes_total',
    help: 'Votes this node held while it took their shard over',
    registers: [deps.metricsRegistry],
    collect() { this.reset(); this.inc(router?.heldVotes ?? 0); },
  });
  const clusterVersion = new Gauge({ name: 'livevote_cluster_map_version', help: 'Version of the membership and shard map this node has read', registers: [deps.metricsRegistry] });

  let membership: Membership;
  let router: Router;
  let results: ClusterResults;
  let started = false;
  let handingOff: Promise<void> | undefined;
  let electionsVersionLoaded = -1;
  let peers: { nodeId: string; url: string }[] = [];

  const links = createLinks({
    nodeId,
    linkKey: createHmac('sha256', deps.secrets.jwtSecret).update('livevote-link-key-v1').digest(),
    requestTimeoutMs: settings.forwardTimeoutMs,
    inFlightMaxPerPeer: settings.forwardInFlightMax,
    metricsRegistry: deps.metricsRegistry,
    log: deps.log.child({ component: 'links' }),
    onRequest: (_from, message, answer) => router.castForwarded(message, (outcome) => answer({ t: 'outcome', outcome })),
    onEvent: (_from, event) => {
      if (event.t === 'tallies') {
        results.applyTallies(event);
        replication?.replicas.ownerEpochSeen(event.electionId, event.shard, event.epoch);
      }
      else if (event.t === 'map') void membership.refreshView().catch(() => undefined);
      else if (event.t === 'released') shardHost.holderReleased(event);
      else if (event.t === 'replicate' || event.t === 'replicas') replication?.onEvent(_from, event);
    },
  });

  const peerByNodeId = new Map<string, { nodeId: string; url: string }>();
  if ((settings.replicas ?? 0) > 0) {
    replication = new Replication({
      nodeId,
      snapshots,
      dimensions: (electionId) => deps.election(electionId),
      log: deps.log.child({ component: 'replication' }),
      metricsRegistry: deps.metricsRegistry,
      send: (to, event) => {
        const peer = peerByNodeId.get(to);
        if (peer !== undefined) links.send(peer, event);
      },
      peers: () => peers.map((p) => p.nodeId),
      ownerVotes: (electionId, shard) => results.shardVotes(electionId, shard),
      // A live replica's counts stand for the shard until its owner's are known (never both: one entry per
      // shard; version -1 loses to any publication of the owner in the same epoch).
      onReplicaCounts: (r) => results.applyTallies({ t: 'tallies', electionId: r.electionId, shard: r.shard, epoch: r.epoch, version: -1, counts: r.counts }),
    });
  }

  const shardHost = new ShardHost({
    nodeId,
    voteNode,
    leases: deps.leases ?? createPgShardLeases(clusterPool, { nodeId, leaseTtlMs: settings.leaseTtlMs }),
    election: deps.election,
    leaseTtlMs: settings.leaseTtlMs,
    log: deps.log.child({ component: 'shard-host' }),
    onChange: () => {
      shardsServed.set(shardHost.heldShards().length);
      router.shardsChanged();
    },
    onReleased: (toNodeId, released) => {
      const peer = peers.find((p) => p.nodeId === toNodeId);
      if (peer !== undefined) links.send(peer, { t: 'released', ...released });
    },
    onLeasesLost: deps.onLeasesLost,
    mayTakeShards: () => membership !== undefined && membership.canServe(),
    promotionBase: replication && ((electionId, shard, epoch) => replication!.promotionBase(electionId, shard, epoch)),
    onRecovered: replication && ((recoveries) => replication!.recovered(recoveries)),
  });

  let viewReadForRetryAtMs = -Infinity;
  router = new Router({
    nodeId,
    voteNode,
    links,
    retryAfterMs,
    routeRetryMs: settings.routeRetryMs,
    // A forwarded vote's sender waits forwardTimeoutMs: answer well before it gives up.
    holdMs: Math.min(settings.routeRetryMs, Math.floor(settings.forwardTimeoutMs / 2)),
    shardCountOf: (electionId) => deps.election(electionId)?.shardCount,
    canServe: () => membership.canServe(),
    onRouted: (route, outcome) => countRouted(route, outcome.kind),
    // A node that left (stopping, still draining its requests) gets no map events and beats no
    // more: the votes it still routes would retry a stale map until routeRetryMs. Read it again.
    onRetrying: () => {
      const nowMs = performance.now();
      if (nowMs - viewReadForRetryAtMs < settings.heartbeatIntervalMs) return;
      viewReadForRetryAtMs = nowMs;
      void membership.refreshView().catch(() => undefined);
    },
  });

  results = new ClusterResults({
    voteNode,
    dimensions: (electionId) => deps.election(electionId),
    electionIds: deps.electionIds,
    broadcast: (event: TalliesChanged) => {
      for (const peer of peers) links.send(peer, event);
    },
  });

  let viewChain: Promise<void> = Promise.resolve();
  const onView = (view: ClusterView) => {
    clusterVersion.set(view.version);
    spillGuard.applyView(view);
    peers = view.nodes.filter((n) => n.status === 'alive' && n.nodeId !== nodeId).map((n) => ({ nodeId: n.nodeId, url: n.url }));
    peerByNodeId.clear();
    for (const peer of peers) peerByNodeId.set(peer.nodeId, peer);
    for (const node of view.nodes) if (node.status !== 'alive') links.forget(node.nodeId);
    viewChain = viewChain.then(async () => {
      if (view.electionsVersion !== electionsVersionLoaded) {
        await deps.reloadElections();
        electionsVersionLoaded = view.electionsVersion;
      }
      router.applyView(view);
      replication?.applyView(view);
      // Not awaited: a reconcile waiting for a holder's release must see the next views (the
      // shard host keeps only the latest), not block the chain that would hand them over.
      if (started) void shardHost.apply(view);
    }).catch((error: unknown) => log.warn({ err: error }, 'applying the cluster view failed; the next one retries'));
  };

  const coordinator = createCoordinator({
    store,
    nodeId,
    deadAfterMs: settings.deadAfterMs,
    movesInFlightMax: settings.movesInFlightMax,
    autoBalance: settings.autoBalance,
    replicasPerShard: settings.replicas ?? 0,
    log,
    mayDeclareDeaths: () => membership.mayDeclareDeaths(),
    onMapWritten: (version) => {
      for (const peer of peers) links.send(peer, { t: 'map', version });
      void membership.refreshView().catch(() => undefined);
    },
  });

  const handOff = (): Promise<void> => {
    handingOff ??= (async () => {
      if (!started) return;
      await membership.stop({ leave: true }).catch((error: unknown) => log.warn({ err: error }, 'leaving the cluster failed; the others will declare this node dead'));
      await shardHost.stop();
      log.info({}, 'left the cluster; every shard handed off');
    })();
    return handingOff;
  };

  const waitUntil = async (condition: () => boolean, deadlineMs: number) => {
    while (!condition() && Date.now() < deadlineMs) await new Promise((resolve) => setTimeout(resolve, 20));
    return condition();
  };
  /** Every shard of the election has an owner, and the ones that are ours are served. */
  const ready = (electionId: string) => {
    const info = deps.election(electionId);
    if (info === undefined || info.status === 'draft') return true;
    if (!router.isRoutable(electionId)) return false;
    for (let shard = 0; shard < info.shardCount; shard++) {
      if (router.ownerOf(electionId, shard) === nodeId && !voteNode.isServing(electionId, shard)) return false;
    }
    return true;
  };

  return {
    nodeId,
    voteNode,
    get router() {
      return router;
    },
    get results() {
      return results;
    },
    get membership() {
      return membership;
    },
    shardHost,
    links,
    operations: {
      request: (request) => store.requestOperation(request),
      list: (limit = 50) => store.listOperations(limit),
      get: (operationId) => store.getOperation(operationId),
    },
    mount(app) {
      mountLinkServer(app, links);
    },
    async start(advertiseUrl) {
      membership = new Membership({
        store,
        self: { nodeId, az: deps.az, url: advertiseUrl, secretsFingerprint: secretsFingerprint(deps.secrets) },
        heartbeatIntervalMs: settings.heartbeatIntervalMs,
        deadAfterMs: settings.deadAfterMs,
        // A Postgres that answers slowly at start (e.g. just restarted after a crash) delays the
        // start rather than failing it: the CI run saw a join's COMMIT take over the 1 s timeout.
        joinRetryForMs: 60_000,
        log,
        onView,
        onCoordinator: () => coordinator.round(),
        onDeclaredDead: () => {
          void (async () => {
            await shardHost.dropAll();
            log.warn({}, 'every shard dropped after being declared dead; joining again as a new incarnation');
            // Until it succeeds: a node that gave up here would stay out of the cluster for good.
            for (;;) {
              try {
                await membership.rejoin();
                break;
              } catch (error) {
                log.error({ err: error }, 'rejoining the cluster failed; retrying');
                await new Promise((resolve) => setTimeout(resolve, settings.deadAfterMs));
              }
            }
            shardHost.resume();
          })().catch((error: unknown) => log.error({ err: error }, 'rejoining the cluster failed'));
        },
      });
      // A file spill queue and live peers: refused before this node is a member (spillGuard.ts).
      spillGuard.checkBeforeJoin(await store.readView());
      started = true;
      shardHost.start();
      results.start();
      replication?.start();
      await membership.start();
      await viewChain;
      const deadlineMs = Date.now() + readyWaitMs;
      const electionIds = [...deps.electionIds()];
      const allReady = await waitUntil(() => electionIds.every(ready), deadlineMs);
      if (!allReady) log.warn({ waitedMs: readyWaitMs }, 'listening before every election was routable; votes for the rest get 503 until the map settles');
      log.info({ url: advertiseUrl, az: deps.az, shards: shardHost.heldShards().length }, 'joined the cluster');
    },
    async electionChanged(electionId) {
      if (!started) return;
      await membership.beatNow().catch(() => undefined);
      await waitUntil(() => ready(electionId), Date.now() + readyWaitMs);
    },
    async adminView() {
      const view = await store.readView();
      const owned = new Map<string, number>();
      for (const row of view.shards) owned.set(row.ownerNodeId, (owned.get(row.ownerNodeId) ?? 0) + 1);
      return {
        version: view.version,
        coordinatorNodeId: view.coordinatorNodeId,
        nodes: view.nodes.map((n) => ({
          nodeId: n.nodeId, az: n.az, url: n.url, status: n.status, incarnation: n.incarnation, draining: n.draining,
          lastHeartbeatAt: new Date(n.lastHeartbeatAtMs).toISOString(), startedAt: new Date(n.startedAtMs).toISOString(),
          shardsOwned: owned.get(n.nodeId) ?? 0,
        })),
        shards: view.shards.map((s) => ({
          electionId: s.electionId, shard: s.shard, ownerNodeId: s.ownerNodeId, epoch: s.epoch, leaseNodeId: s.leaseNodeId, mapVersion: s.mapVersion,
          pinned: s.pinned, replicaNodeIds: s.replicaNodeIds,
          replicas: replication?.lagOf(s.electionId, s.shard, s.replicaNodeIds) ?? [],
        })),
      };
    },
    handOff,
    async stop() {
      await handOff();
      if (started) results.stop();
      replication?.stop();
      await links.close();
      await voteNode.close();
      await endPool(clusterPool);
    },
  };
}
