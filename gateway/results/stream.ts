// WebSocket /api/v1/results/stream/{electionId}: broadcasters subscribe to an election's topic;
// a publisher serialises changed results once per tick (at most every 250 ms) and uWS pub/sub
// fans the same bytes out to every subscriber. Results are whole snapshots, so a subscriber
// that falls behind (backpressure) can skip frames and lose nothing: the next one catches it up.
import { ApiError, errorBody } from '../errors.ts';
import { decodePathParameter, hasRepeatedContentLength, statusLine, type Principal } from '../http.ts';
import type { TemplatedApp, WebSocket } from '../uws.ts';
import type { ElectionRegistry } from '../elections/registry.ts';
import type { Logger } from '../../infra/logger.ts';
import { buildResultsPayload, type LiveResultsCache, type ResultsSource } from './routes.ts';
import type { ExtraPathDoc } from '../openapi.ts';

export const streamPath = '/api/v1/results/stream/{electionId}';
export const publishIntervalMs = 250;
/** Per node. Past it, new subscribers get 503 and should connect to another node. */
export const streamSubscribersMax = 50_000;
/** Per socket; past it uWS skips this subscriber's frames until it drains. */
const subscriberBackpressureBytesMax = 256 * 1024;

interface SubscriberData {
  readonly electionId: string;
  readonly userId: string;
}

const topicOf = (electionId: string) => `results/${electionId}`;

export interface ResultsStream extends LiveResultsCache {
  readonly doc: ExtraPathDoc;
  start(): void;
  stop(): void;
  subscriberCount(): number;
  /** Publish now whatever changed (the timer calls this every publishIntervalMs). */
  publishChanged(): void;
}

export function createResultsStream(deps: {
  app: TemplatedApp;
  registry: ElectionRegistry;
  source: ResultsSource;
  authenticate: (authorizationHeader: string) => Principal;
  log: Logger;
  /** The last-resort guard's report (gateway/http.ts reportHandlerError): logged and counted. */
  onUnhandledError?: (error: unknown) => void;
  onPublished?: (electionId: string, version: number) => void;
  nowMs?: () => number;
}): ResultsStream {
  const now = deps.nowMs ?? Date.now;
  const publishedVersion = new Map<string, number>();
  const liveJsonByElection = new Map<string, string>();
  let subscribers = 0;
  let timer: NodeJS.Timeout | undefined;

  const payloadJson = (electionId: string): string | undefined => {
    const election = deps.registry.get(electionId);
    const results = deps.source.results(electionId);
    if (!election || election.status === 'draft' || !results) return undefined;
    return JSON.stringify(buildResultsPayload(election, results, now()));
  };

  const reportUnhandled = (error: unknown) => {
    if (deps.onUnhandledError) deps.onUnhandledError(error);
    else deps.log.error({ err: error, route: streamPath }, 'unhandled error in handler');
  };

  const rejectUpgrade = (res: import('../uws.ts').HttpResponse, error: ApiError, closeConnection: boolean) => {
    res.cork(() => {
      res.writeStatus(statusLine(error.status));
      res.writeHeader('content-type', 'application/json');
      res.end(errorBody(error.code, error.message), closeConnection);
    });
  };

  deps.app.ws<SubscriberData>(streamPath.replace('{electionId}', ':electionId'), {
    compression: 0,
    maxPayloadLength: 1024,
    maxBackpressure: subscriberBackpressureBytesMax,
    idleTimeout: 120,
    sendPingsAutomatically: true,
    // Everything in here is answered synchronously, and guarded: an exception escaping a uWS
    // callback would end the process.
    upgrade: (res, req, context) => {
      try {
        // Read everything now: req is invalid after this function returns.
        const electionId = decodePathParameter(req.getParameter(0) ?? '');
        const query = new URLSearchParams(req.getQuery() ?? '');
        const header = req.getHeader('authorization');
        const key = req.getHeader('sec-websocket-key');
        const protocol = req.getHeader('sec-websocket-protocol');
        const extensions = req.getHeader('sec-websocket-extensions');
        if (req.getHeader('content-length') !== '' && hasRepeatedContentLength(req)) {
          // As gateway/http.ts refuseFraming: answered next turn, so a request smuggled behind
          // this one finds it pending and uWS closes the connection instead of serving it.
          let aborted = false;
          res.onAborted(() => { aborted = true; });
          setImmediate(() => {
            try {
              if (!aborted) rejectUpgrade(res, new ApiError('duplicate_content_length'), true);
            } catch (error) {
              reportUnhandled(error);
            }
          });
          return;
        }
        if (electionId === undefined) throw new ApiError('invalid_path');
        // Browsers cannot set headers on a WebSocket: the token may come as ?access_token=.
        const token = query.get('access_token');
        const principal = deps.authenticate(header || (token ? `Bearer ${token}` : ''));
        const election = deps.registry.get(electionId);
        if (!election || election.status === 'draft') throw new ApiError('election_not_found');
        if (subscribers >= streamSubscribersMax) throw new ApiError('not_ready', 'This node has as many subscribers as it serves; try another.');
        res.upgrade<SubscriberData>({ electionId, userId: principal.userId }, key, protocol, extensions, context);
      } catch (error) {
        if (!(error instanceof ApiError)) reportUnhandled(error);
        try {
          rejectUpgrade(res, error instanceof ApiError ? error : new ApiError('internal_error'), false);
        } catch (unexpected) {
          // The response is gone (upgrade failed half-way): nothing more can be said on it.
          reportUnhandled(unexpected);
        }
      }
    },
    open: (ws: WebSocket<SubscriberData>) => {
      subscribers++;
      try {
        const { electionId } = ws.getUserData();
        ws.subscribe(topicOf(electionId));
        const json = liveJsonByElection.get(electionId) ?? payloadJson(electionId);
        if (json) ws.send(json, false);
      } catch (error) {
        reportUnhandled(error);
        try {
          ws.end(1011, 'internal error');
        } catch {
          // Already closed.
        }
      }
    },
    message: () => {
      // Subscribers only listen; anything they send is ignored.
    },
    close: () => {
      subscribers--;
    },
  });

  const publishChanged = () => {
    for (const election of deps.registry.all()) {
      if (election.status === 'draft') continue;
      const results = deps.source.results(election.electionId);
      if (!results) continue;
      if (publishedVersion.get(election.electionId) === results.version && liveJsonByElection.has(election.electionId)) continue;
      const json = JSON.stringify(buildResultsPayload(election, results, now()));
      publishedVersion.set(election.electionId, results.version);
      liveJsonByElection.set(election.electionId, json);
      deps.app.publish(topicOf(election.electionId), json, false);
      deps.onPublished?.(election.electionId, results.version);
    }
  };

  // An election changing status (closed) must show at once, even with no new votes.
  deps.registry.onChange((election) => {
    publishedVersion.delete(election.electionId);
  });

  return {
    doc: {
      path: streamPath,
      method: 'get',
      operation: {
        summary: 'WebSocket stream of committed results, pushed at most every 250 ms while they change.',
        tags: ['results'],
        description:
          'Upgrade to WebSocket. Authenticate with `Authorization: Bearer <token>` or `?access_token=<token>` (browsers). ' +
          'Each text frame is a results payload (the same JSON as GET /api/v1/results/{electionId}); the first arrives on connect.',
        parameters: [
          { name: 'electionId', in: 'path', required: true, schema: { type: 'string', format: 'uuid' } },
          { name: 'access_token', in: 'query', required: false, schema: { type: 'string' } },
        ],
        security: [{ bearerAuth: [] }],
        responses: {
          '101': { description: 'Switching protocols; results frames follow' },
          '400': { description: 'Error: invalid_path, duplicate_content_length' },
          '401': { description: 'Error: unauthenticated, invalid_token, token_expired, unsupported_token_algorithm, session_revoked' },
          '404': { description: 'Error: election_not_found' },
          '503': { description: 'Error: not_ready (subscriber limit)' },
        },
      },
    },
    start() {
      timer = setInterval(() => {
        try {
          publishChanged();
        } catch (error) {
          reportUnhandled(error);
        }
      }, publishIntervalMs);
      timer.unref();
    },
    stop() {
      if (timer) clearInterval(timer);
      timer = undefined;
    },
    subscriberCount: () => subscribers,
    publishChanged,
    liveJson: (electionId) => liveJsonByElection.get(electionId),
  };
}
