// One node's part of the cluster, composed: membership (heartbeat, view, self-fence), the
// coordinator (when this node holds its lease), the shard host (the shard actors this node
// serves, on its vote node), the router (where each vote goes), the links to the other nodes, the
// replication to the shards' replicas and the whole-election results. The gateway talks to
// `router` and `results` only.
//
// Two parts: `composeClusterRoles` wires the roles to each other, once, over ports (the cluster
// store, the shard leases, the vote node, the links, a clock, a log); `createClusterNode` builds
// the production ports (Postgres adapters, the links, metrics) and calls it. The simulation
// (cluster/testing/world.ts) calls `composeClusterRoles` with simulated ports, so the wiring the
// property tests check is the wiring that runs in production.
import { createHash, createHmac } from 'node:crypto';
import type { Registry } from 'prom-client';
import { Counter, Gauge } from 'prom-client';
import { HotCounter, type HotCounterSeries } from '../infra/hotMetrics.ts';
import { createVoteNode, voteNodeConfigDefault, type ShardRecovery, type VoteNode, type VoteNodeConfig } from '../actors/voteNode.ts';
import type { Journal, SnapshotStore, SpillQueue } from '../actors/ports.ts';
import { createPgBatchIdSource } from '../persistence/batchIds.ts';
import { createPgClusterStore } from '../persistence/clusterStore.ts';
import { createPool, endPool, poolUrl, type Pool } from '../persistence/db.ts';
import { createPgSnapshotStore } from '../persistence/snapshots.ts';
import { createPgStoredVoteReader } from '../persistence/storedVotes.ts';
import { createWorkerJournal } from '../persistence/journalWorker.ts';
import { createPgJournal, type PgJournalOptions } from '../persistence/voteJournal.ts';
import { createCoordinator } from './coordinator.ts';
import { createPgShardLeases } from './leases.ts';
import { createLinks, mountLinkServer, type Links } from './links.ts';
import { clusterStatementTimeoutMs, Membership, selfFenceAfterMs } from './membership.ts';
import type { ClusterOperations, ClusterStore, ClusterView, ShardLeases } from './ports.ts';
import type { LinkAnswer, LinkEvent, LinkRequest, TalliesChanged } from './protocol.ts';
import { Replication, type ReplicaLag } from './replication.ts';
import { ClusterResults } from './results.ts';
import { SpillGuard } from './spillGuard.ts';
import { Router, type RouterOptions } from './router.ts';
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
  /**
   * Warm replicas per shard (LIVEVOTE_REPLICAS), placed while this node is the coordinator;
   * unset or 0: none. Whatever it is, the node follows the replicas the map gives it and streams
   * to its own shards' replicas: the map says who replicates what, placed with the coordinator's value.
   */
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
  /** `worker`: commits and their checks run on a thread of their own (persistence/journalWorker.ts). Default `main`. */
  readonly journalThread?: 'worker' | 'main';
  /**
   * Measurement only (LIVEVOTE_MEASURE_WITHOUT audit_chain / fence): the commit statement without
   * some of its parts. Main-thread journal only (the config refuses it with the worker).
   */
  readonly measuredJournalVariant?: PgJournalOptions['measuredVariant'];
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

// ---------------------------------------------------------------------------------------------
// The composition: every role wired to the others, over ports

/** What the composition reads from the settings; the simulation runs faster intervals. */
export interface ClusterRoleSettings extends Omit<ClusterSettings, 'forwardInFlightMax'> {
  /** The retry hint of the router's own refusals (the vote node's retryAfterMs). */
  readonly retryAfterMs: number;
  /** Unset: each role's default. */
  readonly viewRefreshMs?: number;
  readonly publishIntervalMs?: number;
  readonly republishIntervalMs?: number;
  readonly replicaReportIntervalMs?: number;
}

/** Where the composition reports what metrics count (production: prom-client; the simulation: its trace). */
export interface ClusterRoleHooks {
  readonly onViewRead?: (version: number) => void;
  readonly onShardsServed?: (count: number) => void;
  readonly onRouted?: RouterOptions['onRouted'];
  readonly onLeasesLost?: (count: number) => void;
  readonly onRecovered?: (recoveries: readonly ShardRecovery[]) => void;
  /** Replication's counters. */
  readonly metricsRegistry?: Registry;
}

export interface ClusterRolePorts {
  readonly nodeId: string;
  readonly az: string;
  /** secretsFingerprint(secrets): a node with other secrets is refused at join. */
  readonly secretsFingerprint: string;
  readonly settings: ClusterRoleSettings;
  readonly store: ClusterStore;
  readonly leases: ShardLeases;
  readonly voteNode: VoteNode;
  /** Where a promoted replica reads its base and the votes after it. */
  readonly snapshots: Pick<SnapshotStore, 'readLatestSnapshot' | 'readVotesAfter'>;
  /** To the other nodes: forwarded votes, one-way events (tallies, map, released, replication), a peer gone. */
  readonly links: Pick<Links, 'request' | 'send' | 'forget'>;
  /** Built by the caller, which wraps the vote node's spill queue with it; the views reach it here. */
  readonly spillGuard: SpillGuard;
  /** The elections this node has loaded. */
  readonly election: (electionId: string) => HostedElectionInfo | undefined;
  readonly electionIds: () => Iterable<string>;
  /** Elections changed somewhere in the cluster: reload them. */
  readonly reloadElections: () => Promise<void>;
  /** Monotonic milliseconds. */
  readonly now: () => number;
  /** The node's logger; each role logs through a child of it. */
  readonly log: ClusterLog;
  readonly hooks?: ClusterRoleHooks;
}

export interface ClusterRoles {
  readonly shardHost: ShardHost;
  readonly router: Router;
  readonly results: ClusterResults;
  /** Both sides, whatever settings.replicas: the map names the replicas (placed by the coordinator's value). */
  readonly replication: Replication;
  /** Built by start (it needs the advertised URL); undefined before. */
  readonly membership: Membership | undefined;
  /** start was called (the shards are taken as the views come). */
  readonly started: boolean;
  /** A peer's request, from the links. */
  onLinkRequest(fromNodeId: string, message: LinkRequest, answer: (answer: LinkAnswer) => void): void;
  /** A peer's one-way event, from the links. */
  onLinkEvent(fromNodeId: string, event: LinkEvent): void;
  /** Join with the URL peers reach this node at; resolves once the first view has been applied. */
  start(advertiseUrl: string): Promise<void>;
  /** Leave the cluster and hand every shard to its new owner; routing goes on. */
  handOff(): Promise<void>;
  /** Hand off (if not done yet), stop publishing and replicating. The links and the vote node are the caller's. */
  stop(): Promise<void>;
}

/** A failed join is tried again this long: a Postgres that answers slowly at start delays the start rather than failing it. */
const joinRetryForMs = 60_000;

export function composeClusterRoles(ports: ClusterRolePorts): ClusterRoles {
  const { nodeId, settings, store, voteNode, links, spillGuard } = ports;
  const log = ports.log.child({ component: 'cluster', nodeId });
  const hooks = ports.hooks ?? {};
  let membership: Membership | undefined;
  let started = false;
  let handingOff: Promise<void> | undefined;
  let electionsVersionLoaded = -1;
  let peers: { nodeId: string; url: string }[] = [];
  const peerByNodeId = new Map<string, { nodeId: string; url: string }>();

  spillGuard.onPausedChange = (paused, pausedFor) => {
    if (paused) log.error({ peers: pausedFor }, 'spilling paused: this node\'s spill queue is a file only it can drain, and peers are alive; a batch Postgres does not store in time is answered 503 (LIVEVOTE_SPILL_FILE_IN_CLUSTER)');
    else log.warn({}, 'spilling resumed: no peer is alive');
  };

  // Built whatever settings.replicas says: that value is what this node places as coordinator,
  // while the replicas it follows and streams to are the map's, placed by whichever node
  // coordinates (a node with 0 among nodes with 1, as in a rolling change of the value, follows
  // the shards it is given; it followed none before, and their failover went cold).
  const replication = new Replication({
    nodeId,
    snapshots: ports.snapshots,
    dimensions: ports.election,
    log: ports.log.child({ component: 'replication' }),
    metricsRegistry: hooks.metricsRegistry,
    send: (to, event) => {
      const peer = peerByNodeId.get(to);
      if (peer !== undefined) links.send(peer, event);
    },
    peers: () => peers.map((p) => p.nodeId),
    ownerVotes: (electionId, shard) => results.shardVotes(electionId, shard),
    // A live replica's counts stand for the shard until its owner's are known (never both: one entry per
    // shard; version -1 loses to any publication of the owner in the same epoch).
    onReplicaCounts: (r) => results.applyTallies({ t: 'tallies', electionId: r.electionId, shard: r.shard, epoch: r.epoch, version: -1, counts: r.counts }),
    replicaReportIntervalMs: settings.replicaReportIntervalMs,
  });

  const shardHost: ShardHost = new ShardHost({
    nodeId,
    voteNode,
    leases: ports.leases,
    election: ports.election,
    leaseTtlMs: settings.leaseTtlMs,
    log: ports.log.child({ component: 'shard-host' }),
    onChange: () => {
      hooks.onShardsServed?.(shardHost.heldShards().length);
      router.shardsChanged();
    },
    onReleased: (toNodeId, released) => {
      const peer = peerByNodeId.get(toNodeId);
      if (peer !== undefined) links.send(peer, { t: 'released', ...released });
    },
    onLeasesLost: hooks.onLeasesLost,
    mayTakeShards: () => membership !== undefined && membership.canServe(),
    promotionBase: (electionId, shard, epoch) => replication.promotionBase(electionId, shard, epoch),
    onRecovered: (recoveries) => {
      replication.recovered(recoveries);
      hooks.onRecovered?.(recoveries);
    },
  });

  let viewReadForRetryAtMs = -Infinity;
  const router: Router = new Router({
    nodeId,
    voteNode,
    links,
    retryAfterMs: settings.retryAfterMs,
    routeRetryMs: settings.routeRetryMs,
    // A forwarded vote's sender waits forwardTimeoutMs: answer well before it gives up.
    holdMs: Math.min(settings.routeRetryMs, Math.floor(settings.forwardTimeoutMs / 2)),
    shardCountOf: (electionId) => ports.election(electionId)?.shardCount,
    canServe: () => membership !== undefined && membership.canServe(),
    onRouted: hooks.onRouted,
    // A node that left (stopping, still draining its requests) gets no map events and beats no
    // more: the votes it still routes would retry a stale map until routeRetryMs. Read it again.
    onRetrying: () => {
      const nowMs = ports.now();
      if (nowMs - viewReadForRetryAtMs < settings.heartbeatIntervalMs) return;
      viewReadForRetryAtMs = nowMs;
      void membership?.refreshView().catch(() => undefined);
    },
  });

  const results: ClusterResults = new ClusterResults({
    voteNode,
    dimensions: ports.election,
    electionIds: ports.electionIds,
    broadcast: (event: TalliesChanged) => {
      for (const peer of peers) links.send(peer, event);
    },
    publishIntervalMs: settings.publishIntervalMs,
    republishIntervalMs: settings.republishIntervalMs,
  });

  let viewChain: Promise<void> = Promise.resolve();
  const onView = (view: ClusterView) => {
    hooks.onViewRead?.(view.version);
    spillGuard.applyView(view);
    peers = view.nodes.filter((n) => n.status === 'alive' && n.nodeId !== nodeId).map((n) => ({ nodeId: n.nodeId, url: n.url }));
    peerByNodeId.clear();
    for (const peer of peers) peerByNodeId.set(peer.nodeId, peer);
    for (const node of view.nodes) if (node.status !== 'alive') links.forget(node.nodeId);
    viewChain = viewChain.then(async () => {
      if (view.electionsVersion !== electionsVersionLoaded) {
        await ports.reloadElections();
        electionsVersionLoaded = view.electionsVersion;
      }
      router.applyView(view);
      replication.applyView(view);
      // Not awaited: a reconcile waiting for a holder's release must see the next views (the
      // shard host keeps only the latest), not block the chain that would hand them over (the
      // property harness found a node retrying a stale view for good while it was awaited).
      if (started) void shardHost.apply(view);
    }).catch((error: unknown) => log.warn({ err: error }, 'applying the cluster view failed; the next one retries'));
  };

  const coordinator = createCoordinator({
    store,
    nodeId,
    deadAfterMs: settings.deadAfterMs,
    silentAfterMs: selfFenceAfterMs(settings.heartbeatIntervalMs, settings.deadAfterMs),
    movesInFlightMax: settings.movesInFlightMax,
    autoBalance: settings.autoBalance,
    replicasPerShard: settings.replicas ?? 0,
    log,
    mayDeclareDeaths: () => membership !== undefined && membership.mayDeclareDeaths(),
    onMapWritten: (version) => {
      for (const peer of peers) links.send(peer, { t: 'map', version });
      void membership?.refreshView().catch(() => undefined);
    },
  });

  const onDeclaredDead = () => {
    void (async () => {
      await shardHost.dropAll();
      log.warn({}, 'every shard dropped after being declared dead; joining again as a new incarnation');
      // Until it succeeds: a node that gave up here would stay out of the cluster for good.
      for (;;) {
        try {
          await membership!.rejoin();
          break;
        } catch (error) {
          log.error({ err: error }, 'rejoining the cluster failed; retrying');
          await new Promise((resolve) => setTimeout(resolve, settings.deadAfterMs));
        }
      }
      shardHost.resume();
    })().catch((error: unknown) => log.error({ err: error }, 'rejoining the cluster failed'));
  };

  const handOff = (): Promise<void> => {
    handingOff ??= (async () => {
      if (!started) return;
      await membership!.stop({ leave: true }).catch((error: unknown) => log.warn({ err: error }, 'leaving the cluster failed; the others will declare this node dead'));
      await shardHost.stop();
      log.info({}, 'left the cluster; every shard handed off');
    })();
    return handingOff;
  };

  return {
    shardHost,
    router,
    results,
    replication,
    get membership() {
      return membership;
    },
    get started() {
      return started;
    },
    onLinkRequest: (_fromNodeId, message, answer) => router.castForwarded(message, (outcome) => answer({ t: 'outcome', outcome })),
    onLinkEvent: (fromNodeId, event) => {
      if (event.t === 'tallies') {
        results.applyTallies(event);
        replication.replicas.ownerEpochSeen(event.electionId, event.shard, event.epoch);
      }
      else if (event.t === 'map') void membership?.refreshView().catch(() => undefined);
      else if (event.t === 'released') shardHost.holderReleased(event);
      else if (event.t === 'replicate' || event.t === 'replicas') replication.onEvent(fromNodeId, event);
    },
    async start(advertiseUrl) {
      membership = new Membership({
        store,
        self: { nodeId, az: ports.az, url: advertiseUrl, secretsFingerprint: ports.secretsFingerprint },
        heartbeatIntervalMs: settings.heartbeatIntervalMs,
        deadAfterMs: settings.deadAfterMs,
        viewRefreshMs: settings.viewRefreshMs,
        joinRetryForMs,
        log,
        now: ports.now,
        onView,
        onCoordinator: () => coordinator.round(),
        onDeclaredDead,
      });
      // A file spill queue and live peers: refused before this node is a member (spillGuard.ts).
      if (spillGuard.active) spillGuard.checkBeforeJoin(await store.readView());
      started = true;
      shardHost.start();
      results.start();
      replication.start();
      await membership.start();
      await viewChain;
    },
    handOff,
    async stop() {
      await handOff();
      if (started) results.stop();
      replication.stop();
    },
  };
}

// ---------------------------------------------------------------------------------------------
// The production shell: Postgres adapters, links, metrics

const readyWaitMs = 10_000;

export async function createClusterNode(deps: ClusterNodeDeps): Promise<ClusterNode> {
  const { pool, nodeId, settings } = deps;
  const log = deps.log.child({ component: 'cluster', nodeId });
  // Heartbeats and leases on connections of their own: a vote path that saturates the main pool
  // must not delay a heartbeat into the self-fence.
  const clusterPool = createPool(poolUrl(pool), 3, 'livevote-cluster', (error) => log.warn({ err: error }, 'idle cluster connection failed; the pool replaces it'));
  const store = deps.store ?? createPgClusterStore(clusterPool, { statementTimeoutMs: clusterStatementTimeoutMs(settings.heartbeatIntervalMs, settings.deadAfterMs) });
  // The drainer's writes stay on this thread; commits and checks go to the worker when there is one.
  if (deps.measuredJournalVariant !== undefined && deps.journalThread === 'worker') throw new Error('a measured journal variant runs on the main thread only');
  const pgJournal = createPgJournal({ pool, nodeId, measuredVariant: deps.measuredJournalVariant });
  const callsInFlightMax = deps.voteNodeConfig.commitsInFlightMax ?? voteNodeConfigDefault.commitsInFlightMax;
  const journalWorker = deps.journalThread === 'worker'
    ? await createWorkerJournal({ url: poolUrl(pool), journal: { nodeId }, callsInFlightMax, log: log.child({ component: 'journal-worker' }) })
    : undefined;
  if (journalWorker !== undefined) log.info({ callsInFlightMax }, 'journal commits run on a worker thread');
  const journal: Journal = journalWorker ?? pgJournal;
  const spillGuard = new SpillGuard({
    nodeId, queueKind: deps.spillQueue ? (deps.spillQueueKind ?? 'sqs') : 'off', fileInCluster: deps.spillFileInCluster ?? 'refuse', deadAfterMs: settings.deadAfterMs,
  });
  new Gauge({
    name: 'livevote_spill_queue_paused',
    help: '1 while this node refuses to spill because its queue is a file and other members are alive (LIVEVOTE_SPILL_FILE_IN_CLUSTER)',
    registers: [deps.metricsRegistry],
    collect() { this.set(spillGuard.paused ? 1 : 0); },
  });
  const snapshots = createPgSnapshotStore({ pool, nodeId });
  let roles: ClusterRoles | undefined;
  const voteNode = createVoteNode({
    journal: deps.wrapJournal ? deps.wrapJournal(journal) : journal,
    spill: deps.spillQueue ? { queue: spillGuard.wrap(deps.spillQueue), store: pgJournal } : undefined,
    snapshots,
    // Whatever settings.replicas: the shards' replicas are the map's (a copy of each committed
    // batch's rows, streamed when the map names replicas of its shard, only numbered otherwise).
    onBatchCommitted: (batch) => roles?.replication.streamer.onBatchCommitted(batch),
    storedVotes: createPgStoredVoteReader(pool),
    batchIds: await createPgBatchIdSource({ pool }),
    logger: deps.log.child({ component: 'vote-node' }),
    config: deps.voteNodeConfig,
  });

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
    collect() { this.set(roles?.router.retriesWaitingNow ?? 0); },
  });
  new Counter({
    name: 'livevote_route_retried_votes_total',
    help: 'Votes the router asked again because their shard was between owners',
    registers: [deps.metricsRegistry],
    collect() { this.reset(); this.inc(roles?.router.retriedVotes ?? 0); },
  });
  new Gauge({
    name: 'livevote_route_held_votes',
    help: 'Votes this node holds while it takes their shard over (a move, a drain, a failover), cast once it serves the shard',
    registers: [deps.metricsRegistry],
    collect() { this.set(roles?.router.heldVotesNow ?? 0); },
  });
  new Counter({
    name: 'livevote_route_held_votes_total',
    help: 'Votes this node held while it took their shard over',
    registers: [deps.metricsRegistry],
    collect() { this.reset(); this.inc(roles?.router.heldVotes ?? 0); },
  });
  const clusterVersion = new Gauge({ name: 'livevote_cluster_map_version', help: 'Version of the membership and shard map this node has read', registers: [deps.metricsRegistry] });

  const links = createLinks({
    nodeId,
    linkKey: createHmac('sha256', deps.secrets.jwtSecret).update('livevote-link-key-v1').digest(),
    requestTimeoutMs: settings.forwardTimeoutMs,
    inFlightMaxPerPeer: settings.forwardInFlightMax,
    metricsRegistry: deps.metricsRegistry,
    log: deps.log.child({ component: 'links' }),
    onRequest: (fromNodeId, message, answer) => roles!.onLinkRequest(fromNodeId, message, answer),
    onEvent: (fromNodeId, event) => roles!.onLinkEvent(fromNodeId, event),
  });

  const composed = composeClusterRoles({
    nodeId,
    az: deps.az,
    secretsFingerprint: secretsFingerprint(deps.secrets),
    settings: { ...settings, retryAfterMs: deps.voteNodeConfig.retryAfterMs ?? 1_000 },
    store,
    leases: deps.leases ?? createPgShardLeases(clusterPool, { nodeId, leaseTtlMs: settings.leaseTtlMs }),
    voteNode,
    snapshots,
    links,
    spillGuard,
    election: deps.election,
    electionIds: deps.electionIds,
    reloadElections: deps.reloadElections,
    now: () => performance.now(),
    log: deps.log,
    hooks: {
      onViewRead: (version) => clusterVersion.set(version),
      onShardsServed: (count) => shardsServed.set(count),
      onRouted: (route, outcome) => countRouted(route, outcome.kind),
      onLeasesLost: deps.onLeasesLost,
      metricsRegistry: deps.metricsRegistry,
    },
  });
  roles = composed;
  const { router, results, shardHost, replication } = composed;

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
    router,
    results,
    get membership() {
      // Before start there is none, as before the split: the gateway reads it only once started.
      return composed.membership as Membership;
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
      await composed.start(advertiseUrl);
      const deadlineMs = Date.now() + readyWaitMs;
      const electionIds = [...deps.electionIds()];
      const allReady = await waitUntil(() => electionIds.every(ready), deadlineMs);
      if (!allReady) log.warn({ waitedMs: readyWaitMs }, 'listening before every election was routable; votes for the rest get 503 until the map settles');
      log.info({ url: advertiseUrl, az: deps.az, shards: shardHost.heldShards().length }, 'joined the cluster');
    },
    async electionChanged(electionId) {
      if (!composed.started) return;
      await composed.membership?.beatNow().catch(() => undefined);
      if (await waitUntil(() => ready(electionId), Date.now() + readyWaitMs)) return;
      // The change is answered anyway: say why votes for it may be refused for a while.
      const shardCount = deps.election(electionId)?.shardCount ?? 0;
      const notServedHere = Array.from({ length: shardCount }, (_, shard) => shard)
        .filter((shard) => router.ownerOf(electionId, shard) === nodeId && !voteNode.isServing(electionId, shard));
      log.warn(
        { electionId, waitedMs: readyWaitMs, routable: router.isRoutable(electionId), notServedHere },
        'election change answered before its shards could take votes; votes get 503 (not_ready, or shard_unavailable once held past LIVEVOTE_ROUTE_RETRY_MS) until they can',
      );
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
          replicas: replication.lagOf(s.electionId, s.shard, s.replicaNodeIds),
        })),
      };
    },
    handOff: () => composed.handOff(),
    async stop() {
      await composed.stop();
      await links.close();
      try {
        await voteNode.close();
      } finally {
        await journalWorker?.close();
      }
      await endPool(clusterPool);
    },
  };
}
