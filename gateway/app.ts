// Builds the whole gateway without listening: features contribute routes, the router registers
// them on one uWS app, and the OpenAPI document is generated from the same table. Tests drive
// an app built here in-process; infra/node.ts only adds the database, listen and shutdown.
import { readFileSync } from 'node:fs';
import { uws, type TemplatedApp, type us_listen_socket } from './uws.ts';
import { HttpRouter, UncountedHttpRouter, reportHandlerError, type RouteDefinition } from './http.ts';
import { RequestChecks } from './requestChecks.ts';
import { buildOpenApiDocument, type ExtraPathDoc } from './openapi.ts';
import { operationsRoutes } from './operations.ts';
import { createAuthFeature } from './auth/feature.ts';
import { createElectionsFeature } from './elections/feature.ts';
import { createVotePathFeature, type VotePathFeature } from './votes/feature.ts';
import { createAbuseFeature, type AbuseFeature } from './abuse/feature.ts';
import { createPrivacyFeature, type PrivacyFeature } from './privacy/feature.ts';
import { createAuditSealer, type AuditSealer } from '../persistence/auditSealer.ts';
import { dashboardRoutes } from './dashboard/routes.ts';
import { streamPath } from './results/stream.ts';
import { resolveNodeIdentity } from '../cluster/nodeIdentity.ts';
import { createClusterNode, type ClusterNode } from '../cluster/clusterNode.ts';
import { openSpillQueue } from '../persistence/spillQueues.ts';
import { createVotePathMetrics } from './votes/metrics.ts';
import { clusterOperationRoutes, clusterRoutes } from './cluster/routes.ts';
import { fetchMetricsText, NodeVoteRates } from './cluster/nodeRates.ts';
import type { Config } from '../infra/config.ts';
import type { Secrets } from '../infra/secrets.ts';
import type { Logger } from '../infra/logger.ts';
import { createMetrics, type Metrics } from '../infra/metrics.ts';
import { Gauge } from 'prom-client';
import type { Pool } from '../persistence/db.ts';
import type { RevokedSessionRecord } from '../persistence/users.ts';

export interface AppDeps {
  readonly config: Config;
  readonly secrets: Secrets;
  readonly pool: Pool;
  readonly log: Logger;
  readonly metrics?: Metrics;
}

/** A part of the product that brings routes and has a start/stop lifecycle. */
export interface Feature {
  readonly routes: readonly RouteDefinition<unknown, unknown>[];
  /** Documented paths the router does not register itself (WebSocket upgrades). */
  readonly extraPaths?: readonly ExtraPathDoc[];
  start(): Promise<void>;
  /** Called after the listen socket is closed and in-flight requests have drained. */
  stop(): Promise<void>;
}

export interface LivevoteApp {
  readonly uws: TemplatedApp;
  readonly router: HttpRouter;
  readonly routes: readonly RouteDefinition<unknown, unknown>[];
  readonly metrics: Metrics;
  readonly openApiDocument: Record<string, unknown>;
  readonly votePath: VotePathFeature;
  readonly cluster: ClusterNode;
  readonly abuse: AbuseFeature;
  readonly privacy: PrivacyFeature;
  /** Appends committed batches to the audit chains (persistence/auditSealer.ts); absent when measuring without it. */
  readonly auditSealer: AuditSealer | undefined;
  /** Binds and starts accepting; resolves with the port actually bound (PORT=0 picks one). */
  listen(host: string, port: number): Promise<number>;
  /** Hand the shards off, close the listen socket, serve until drained, stop accepting, stop features. */
  close(options?: AppCloseOptions): Promise<void>;
}

export interface AppCloseOptions {
  /** Longest wait, after the hand-off, for the drain; default: outlasts the two waits below. */
  readonly drainTimeoutMs?: number;
  /**
   * Wait until the connections earlier answers left open have been closed for idleness (default:
   * LIVEVOTE_STOP_AWAITS_IDLE_CONNECTIONS). Tests that stop a node nothing will call again turn it off.
   */
  readonly awaitIdleConnections?: boolean;
}

/**
 * Measured with uWS 20.30: an idle HTTP connection is closed 8.4-12.0 s after its last activity
 * (a 10 s timeout on a 4 s timer); with a margin.
 */
export const idleConnectionsClosedAfterMs = 12_500;

const packageVersion = (JSON.parse(readFileSync(new URL('../package.json', import.meta.url), 'utf8')) as { version: string }).version;

export async function buildApp(deps: AppDeps): Promise<LivevoteApp> {
  const metrics = deps.metrics ?? createMetrics({ defaultMetrics: false });
  const app = uws.App();
  let accepting = false;
  let handingOff = false;
  let listenSocket: us_listen_socket | undefined;

  // Measurement only (LIVEVOTE_MEASURE_WITHOUT, bench/features.ts): each switch is decided here,
  // once, by choosing what the app is composed of; unset, every part below is the product's own.
  const off = deps.config.measureWithout;
  if (off.size > 0) {
    deps.log.warn({ measureWithout: [...off] }, `MEASUREMENT ONLY: LIVEVOTE_MEASURE_WITHOUT switches off ${[...off].join(', ')} on every vote; this node must never serve a real election`);
  }
  new Gauge({
    name: 'livevote_measurement_features_off',
    help: 'Parts of the vote path switched off for a measurement (LIVEVOTE_MEASURE_WITHOUT); anything but 0 means this node is not fit for a real election',
    registers: [metrics.registry],
  }).set(off.size);

  const identity = resolveNodeIdentity(deps.config);
  const abuse = createAbuseFeature({ config: deps.config, secrets: deps.secrets, pool: deps.pool, log: deps.log, metricsRegistry: metrics.registry });
  // Before auth: auth's register/login record metadata into it, and it revokes sessions through auth.
  let addRevokedSessions: (sessions: readonly RevokedSessionRecord[]) => void = () => {};
  const privacy = createPrivacyFeature({
    pool: deps.pool, secrets: deps.secrets, log: deps.log, config: deps.config, metricsRegistry: metrics.registry,
    onSessionsRevoked: (sessions) => addRevokedSessions(sessions),
  });
  const auth = createAuthFeature({
    pool: deps.pool, secrets: deps.secrets, log: deps.log, guard: abuse.auth, tokenChecks: !off.has('token_check'),
    onAccountEvent: (event, meta) => (event === 'register' ? privacy.metadata.recordRegistration(meta) : privacy.metadata.recordLogin(meta)),
  });
  addRevokedSessions = (sessions) => auth.addRevokedSessions(sessions);
  const elections = createElectionsFeature({ pool: deps.pool, log: deps.log });
  const votePathMetrics = createVotePathMetrics(metrics.registry);
  const { config } = deps;
  // Where batches go when Postgres does not store them within the deadline (README, "the deadline").
  const spillQueue = await openSpillQueue(config.spill);
  votePathMetrics.watchSpillQueue(spillQueue);
  const cluster = await createClusterNode({
    pool: deps.pool,
    nodeId: identity.nodeId,
    az: identity.availabilityZone,
    settings: config.cluster,
    voteNodeConfig: {
      flushIntervalMs: config.flushIntervalMs,
      batchRowsMax: config.batchRowsMax,
      commitsInFlightMax: config.commitsInFlightMax,
      commitDeadlineMs: config.commitDeadlineMs,
      spillAfterMs: spillQueue === null ? null : config.spill.afterMs,
      shardPendingVotesMax: config.pendingVotesMax,
      snapshotIntervalMs: config.snapshotIntervalMs,
    },
    secrets: deps.secrets,
    log: deps.log,
    metricsRegistry: metrics.registry,
    election: (electionId) => {
      const election = elections.registry.get(electionId);
      return election && { shardCount: election.shardCount, candidateCount: election.candidates.length, status: election.status };
    },
    electionIds: () => elections.registry.all().map((e) => e.electionId),
    reloadElections: () => elections.reload(),
    wrapJournal: (journal) => votePathMetrics.timed(journal),
    journalThread: config.journalThread,
    measuredJournalVariant: off.has('audit_chain') || off.has('fence')
      ? { name: `livevote_journal_commit_without_${[...off].filter((f) => f === 'audit_chain' || f === 'fence').sort().join('_')}`, parts: { fence: !off.has('fence'), audit: !off.has('audit_chain') } }
      : undefined,
    onLeasesLost: (count) => votePathMetrics.leasesLostTotal.inc(count),
    spillQueue,
    spillQueueKind: config.spill.kind,
    spillFileInCluster: config.spill.fileInCluster,
  });
  elections.registry.onChange(async (election, _previousStatus, origin) => {
    if (election.status === 'closed') cluster.voteNode.closeElection(election.electionId);
    // A change made here is answered once its shards can take votes somewhere in the cluster. Told
    // per change, not by a flag around the reload: an open published while a reload runs waits too.
    if (origin === 'this_node') await cluster.electionChanged(election.electionId);
  });
  const votePath = createVotePathFeature({
    uwsApp: app, pool: deps.pool, log: deps.log, cluster, votePathMetrics,
    registry: elections.registry, authenticate: (header) => auth.authenticate(header), metricsRegistry: metrics.registry,
    guard: (vote) => abuse.guardVote(vote), fraudCounts: (electionId) => abuse.fraudCounts(electionId),
    onVoteAccepted: off.has('metadata') ? undefined : (meta) => privacy.metadata.record(meta),
    countVotes: !off.has('metrics'),
    bodyChecks: !off.has('body_checks'),
    onUnhandledError: (error) => reportHandlerError({ log: deps.log, metrics }, streamPath, error),
  });
  cluster.mount(app);
  // Stopped after the vote path (features stop in reverse): its stop seals the last commits.
  const auditSealer = off.has('audit_chain')
    ? undefined
    : createAuditSealer({ pool: deps.pool, intervalMs: config.auditSealIntervalMs, log: deps.log.child({ component: 'audit' }), metricsRegistry: metrics.registry });
  const auditSealing: Feature = { routes: [], start: async () => auditSealer?.start(), stop: async () => auditSealer?.stop() };
  const features: Feature[] = [abuse, auth, privacy, auditSealing, elections, votePath];

  // The vote route's token and body checks, on a worker thread (LIVEVOTE_VOTE_CHECKS_THREAD).
  const requestChecks = config.voteChecksThread === 'worker'
    ? new RequestChecks({ jwtSecret: deps.secrets.jwtSecret, log: deps.log, metricsRegistry: metrics.registry })
    : undefined;
  const router = new (off.has('metrics') ? UncountedHttpRouter : HttpRouter)(app, {
    log: deps.log,
    metrics,
    authenticate: (header) => auth.authenticate(header),
    checksOffThread: requestChecks && { checks: requestChecks, admit: (verification) => auth.admit(verification) },
    clientAddress: abuse.controls.clientAddress,
    isAccepting: () => accepting,
    closingConnections: () => handingOff,
  });

  let openApiJson = '';
  const routes: RouteDefinition<unknown, unknown>[] = [
    // Ready = accepting and not handing its shards off: a load balancer stops sending first.
    ...operationsRoutes({ pool: deps.pool, metrics, isAccepting: () => accepting && !handingOff, openApiJson: () => openApiJson }),
    ...features.flatMap((f) => f.routes),
    ...dashboardRoutes(),
    ...clusterRoutes({ cluster, rates: new NodeVoteRates({ fetchMetrics: fetchMetricsText, nowMs: Date.now }) }),
    ...clusterOperationRoutes({ operations: cluster.operations }),
  ];
  for (const route of routes) router.register(route);
  router.recordServed({ method: 'WS', path: streamPath });
  router.registerFallback(routes);
  const openApiDocument = buildOpenApiDocument(routes, features.flatMap((f) => f.extraPaths ?? []), { version: packageVersion });
  openApiJson = JSON.stringify(openApiDocument);

  for (const feature of features) await feature.start();

  return {
    uws: app,
    router,
    routes,
    metrics,
    openApiDocument,
    votePath,
    cluster,
    abuse,
    privacy,
    auditSealer,
    listen(host, port) {
      return new Promise((resolve, reject) => {
        app.listen(host, port, (socket) => {
          if (!socket) {
            reject(new Error(`could not listen on ${host}:${port} (in use, or not permitted)`));
            return;
          }
          listenSocket = socket;
          const boundPort = uws.us_socket_local_port(socket);
          const advertiseHost = host === '0.0.0.0' || host === '::' ? '127.0.0.1' : host;
          // Joined once the port is known: peers reach this node at its advertise URL.
          cluster.start(config.cluster.advertiseUrl ?? `http://${advertiseHost}:${boundPort}`).then(
            () => {
              accepting = true;
              resolve(boundPort);
            },
            (error: unknown) => {
              uws.us_listen_socket_close(socket);
              listenSocket = undefined;
              reject(error);
            },
          );
        });
      });
    },
    // A vote a router holds for a shard between owners waits up to routeRetryMs plus one forward:
    // the drain outlasts that, or the process would exit with it unanswered (its client sees the
    // connection closed; the rolling-restart test did, with LIVEVOTE_ROUTE_RETRY_MS 20000). It
    // also outlasts the wait for idle keep-alive connections to close (idleConnectionsClosedAfterMs).
    async close(options: AppCloseOptions = {}) {
      const drainTimeoutMs = options.drainTimeoutMs ?? Math.max(idleConnectionsClosedAfterMs + 2_000, config.cluster.routeRetryMs + config.cluster.forwardTimeoutMs + 1_000);
      const awaitIdleConnections = options.awaitIdleConnections ?? config.stopAwaitsIdleConnections;
      // First the shards leave, while this node still answers: a vote sent here meanwhile is
      // routed to the shard's new owner (load balancers see /readyz 503 and stop sending).
      // From here every answer closes its connection (closingConnections), and requests still
      // arriving on open ones are served (routed to the shards' new owners) until the drain ends:
      // a client that sent one just before the stop gets its answer, not 503.
      handingOff = true;
      await cluster.handOff();
      if (listenSocket) {
        uws.us_listen_socket_close(listenSocket);
        listenSocket = undefined;
      }
      // Drained means nothing in flight, nothing new for quietMs, and no connection left open by an
      // earlier answer: a keep-alive connection idle since before the hand-off can still carry a
      // request (a client that picked this node just before the stop, its bytes late on a busy
      // machine), and it would be refused 503 not_ready once this node stops accepting. uWS closes
      // such a connection once it has been idle for its timeout, and no answer from here on leaves
      // one open, so the wait ends; with no answer kept alive lately there is nothing to wait for.
      const quietMs = 250;
      const deadlineMs = Date.now() + drainTimeoutMs;
      let drained = false;
      while (!drained && Date.now() < deadlineMs) {
        drained = await Promise.race([
          router.drained().then(() => true),
          new Promise<boolean>((resolve) => setTimeout(() => resolve(false), deadlineMs - Date.now()).unref()),
        ]);
        const waitMs = Math.max(
          quietMs - router.msSinceLastRequest(),
          awaitIdleConnections ? idleConnectionsClosedAfterMs - router.msSinceLastKeepAliveAnswer() : 0,
        );
        if (drained && waitMs > 0) {
          drained = false;
          await new Promise((resolve) => setTimeout(resolve, Math.min(waitMs, Math.max(0, deadlineMs - Date.now()))));
        }
      }
      accepting = false;
      if (!drained && router.inFlightCount() > 0) deps.log.warn({ inFlight: router.inFlightCount() }, 'requests still in flight after the drain timeout');
      else if (!drained) deps.log.warn({ drainTimeoutMs }, 'a keep-alive connection may still be open after the drain timeout; a request on it is answered 503 not_ready');
      for (const feature of [...features].reverse()) await feature.stop();
      await spillQueue?.close();
      await requestChecks?.close();
    },
  };
}
