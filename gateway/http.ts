// The HTTP layer on uWebSockets.js: routes are data (method, path, auth, zod schemas, OpenAPI
// text, handler), registered here with the habits the uWS examples teach:
// - everything needed from `req` is read synchronously, before any await (req is stack memory);
// - onAborted is attached before any await, and nothing is written to an aborted response;
// - every write after an await is corked, and the answers settled in one callback go out
//   together once its microtasks have run (see queueReply);
// - onData chunks are copied unless consumed synchronously (they point into uWS's buffer);
// - large bodies go out with tryEnd/onWritable so backpressure is honoured;
// - every callback uWS calls is guarded: an exception escaping one would end the process, so
//   it is answered 500 internal_error (when an answer is still possible), logged and counted in
//   livevote_http_handler_errors_total, which the front door fuzz test expects to stay at 0.
import { randomUUID } from 'node:crypto';
import type { z } from 'zod';
import type { HttpRequest, HttpResponse, TemplatedApp } from './uws.ts';
import { ApiError, errorBody, type ErrorCode } from './errors.ts';
import { offThreadBodyChecks, type CheckedRequest, type OffThreadBodyCheck, type RequestChecks } from './requestChecks.ts';
import type { AuthorizationVerification } from './auth/authorization.ts';
import type { Logger } from '../infra/logger.ts';
import type { Metrics } from '../infra/metrics.ts';

export type HttpMethod = 'GET' | 'POST' | 'PUT' | 'DELETE';
export type Role = 'viewer' | 'broadcaster' | 'admin';

/** Who made the request, from a verified access token. */
export interface Principal {
  readonly userId: string;
  readonly voterNumber: number;
  readonly role: Role;
  readonly sessionId: string;
  /** When the access token expires (seconds since the epoch). */
  readonly expiresAtS: number;
}

/** The principal of an authenticated route; the router always sets one, so its absence is a bug, not a 4xx. */
export function principalOf(principal: Principal | undefined): Principal {
  if (!principal) throw new Error('authenticated route reached without a principal');
  return principal;
}

export interface RequestContext<Body, Query> {
  readonly method: HttpMethod;
  readonly path: string;
  readonly params: Readonly<Record<string, string>>;
  readonly query: Query;
  readonly body: Body;
  /** Present on every route whose `auth` is not 'public'. */
  readonly principal: Principal | undefined;
  readonly requestId: string;
  readonly clientIp: string;
  /** The client's network (/24 for IPv4, /64 for IPv6): what rate limits and fraud rules group by. */
  readonly networkKey: string;
  readonly userAgent: string;
  /** The request headers the route asked for in `readHeaders` ('' when absent), by lower-case name. */
  readonly headers: Readonly<Record<string, string>>;
  readonly log: Logger;
  /**
   * For a handler that returned `answerLater`: the request's answer, written with the others
   * settled in this turn (see queueReply). The first call of `answer` or `fail` settles the
   * request; neither throws.
   */
  answer(reply: Reply): void;
  /**
   * For a handler that returned `answerLater`: answer with an error, as the catalog says (an
   * ApiError) or 500 internal_error, logged and counted (anything else). Called after the request
   * was settled, it only logs and counts the error: a route bug, not a second answer.
   */
  fail(error: unknown): void;
}

/**
 * What a handler returns when it answers later through `ctx.answer` / `ctx.fail` instead of a
 * promise: the vote route, whose answer comes from the shard's reply callback, spares a promise,
 * its settling closures and a microtask per vote (bench/README.md, "Sixth look").
 */
export const answerLater: unique symbol = Symbol('answerLater');

export interface Reply {
  readonly status?: number;
  /** Serialised as JSON. */
  readonly json?: unknown;
  /** Sent as is, with `contentType`. */
  readonly raw?: string | Buffer;
  readonly contentType?: string;
  readonly headers?: Readonly<Record<string, string>>;
}

export interface ResponseDoc {
  readonly description: string;
  readonly schema?: z.ZodType;
}

export interface RouteDefinition<Body = unknown, Query = unknown> {
  readonly method: HttpMethod;
  /** OpenAPI-style: `/api/v1/elections/{electionId}`. */
  readonly path: string;
  readonly summary: string;
  readonly tag: string;
  /** 'public', any authenticated user, or only these roles. */
  readonly auth: 'public' | 'user' | readonly Role[];
  readonly body?: z.ZodType<Body>;
  /**
   * A hand check for the hot path: the body as the schema would return it, or undefined, and then
   * the schema decides (and words the error). It may accept only what the schema accepts, with the
   * schema's result: gateway/votes/routes.test.ts checks the vote body's against zod.
   */
  readonly bodyFastPath?: (json: unknown) => Body | undefined;
  /**
   * The token's verification and the body's JSON.parse and fast path run off the main thread, in
   * the request checks worker (gateway/requestChecks.ts), when the router has one: names the
   * worker's body check, which must be this route's `bodyFastPath`. Such a route authenticates
   * once its body is in (no query schema, not public).
   */
  readonly checksOffThread?: OffThreadBodyCheck;
  readonly query?: z.ZodType<Query>;
  /** Lower-case names of further request headers the handler reads (cookie, …); only routes that ask pay for them. */
  readonly readHeaders?: readonly string[];
  readonly bodyBytesMax?: number;
  /** When set, an empty body stands for this value (a body whose fields are all optional). */
  readonly emptyBodyAs?: unknown;
  /** Error codes this route can answer besides the generic ones; listed in the OpenAPI doc. */
  readonly errors?: readonly ErrorCode[];
  readonly responses: Readonly<Record<number, ResponseDoc>>;
  /**
   * A reply, a promise of one, or `answerLater` and then one call of `ctx.answer` or `ctx.fail`.
   * Whatever it throws (or its promise rejects with, or it passes to `fail`) is answered as the
   * error catalog says, or 500 internal_error.
   */
  readonly handle: (ctx: RequestContext<Body, Query>) => Reply | Promise<Reply> | typeof answerLater;
}

// Helps TypeScript infer Body/Query from the schemas while storing routes in one array.
export function defineRoute<Body = undefined, Query = Record<string, string>>(
  route: RouteDefinition<Body, Query>,
): RouteDefinition<unknown, unknown> {
  return route as unknown as RouteDefinition<unknown, unknown>;
}

export interface HttpDeps {
  readonly log: Logger;
  readonly metrics: Metrics;
  readonly authenticate: (authorizationHeader: string) => Principal;
  /**
   * For routes with `checksOffThread`: the worker that checks their tokens and bodies, and
   * `authenticate`'s second half for a header verified there (revoked sessions live on this
   * thread). Without it those routes check on this thread, as every other route does.
   */
  readonly checksOffThread?: {
    readonly checks: Pick<RequestChecks, 'check'>;
    admit(verification: AuthorizationVerification): Principal;
  };
  /**
   * The client's address: the socket's, or from X-Forwarded-For when the connection comes from a
   * trusted proxy (gateway/abuse/clientAddress.ts). The header is read only when honoured.
   */
  readonly clientAddress: {
    readonly honoursForwardedFor: boolean;
    resolve(socketIp: string, forwardedFor: string): { readonly ip: string; readonly networkKey: string } | undefined;
  };
  /** False while starting or draining: every route but health answers 503 not_ready. */
  readonly isAccepting: () => boolean;
  /**
   * True while the node hands off and drains before it stops: requests are still served, and each
   * answer closes its connection, so a keep-alive client sends its next request elsewhere instead
   * of to a node about to refuse it (or to exit under it).
   */
  readonly closingConnections?: () => boolean;
}

/** What uWS was told to serve: the OpenAPI test checks every entry is documented. */
export interface ServedRoute {
  readonly method: HttpMethod | 'WS';
  readonly path: string;
}

export const defaultBodyBytesMax = 16 * 1024;

const knownMethods = new Set(['GET', 'HEAD', 'POST', 'PUT', 'PATCH', 'DELETE', 'OPTIONS']);

const statusLines: Record<number, string> = {
  200: '200 OK', 201: '201 Created', 202: '202 Accepted', 204: '204 No Content',
  400: '400 Bad Request', 401: '401 Unauthorized', 403: '403 Forbidden', 404: '404 Not Found',
  405: '405 Method Not Allowed', 409: '409 Conflict', 413: '413 Payload Too Large',
  415: '415 Unsupported Media Type', 422: '422 Unprocessable Entity', 429: '429 Too Many Requests',
  500: '500 Internal Server Error', 503: '503 Service Unavailable',
};

export function statusLine(status: number): string {
  return statusLines[status] ?? `${status} Status`;
}

// What every answer writes and every request reads, as bytes made once: uWS takes a string
// argument by encoding it to UTF-8 on each call (v8 Utf8Length + WriteUtf8, 2% of a vote's CPU in
// perf, bench/README.md), and bytes as they are.
const statusLineBytes = new Map(Object.entries(statusLines).map(([status, line]) => [Number(status), Buffer.from(line)]));
const headerNameBytes = {
  authorization: Buffer.from('authorization'),
  contentType: Buffer.from('content-type'),
  contentLength: Buffer.from('content-length'),
  userAgent: Buffer.from('user-agent'),
  forwardedFor: Buffer.from('x-forwarded-for'),
  requestId: Buffer.from('x-request-id'),
} as const;
const jsonContentType = 'application/json';
const jsonContentTypeBytes = Buffer.from(jsonContentType);

const internalErrorBody = errorBody('internal_error');

/** A path parameter, percent-decoded; undefined when an escape is malformed (decodeURIComponent throws). */
export function decodePathParameter(raw: string): string | undefined {
  if (!raw.includes('%')) return raw;
  try {
    return decodeURIComponent(raw);
  } catch {
    return undefined;
  }
}

// req.forEach calls back synchronously, so one module-level counter spares a closure per request.
let contentLengthHeaders = 0;
function countContentLength(name: string): void {
  if (name === 'content-length') contentLengthHeaders++;
}

/**
 * More than one Content-Length header. uWS frames the body by the first one; a proxy in front
 * may use another, and the bytes between become a request of their own (request smuggling).
 * Identical repeats are refused too: nothing legitimate sends them. Call it only when the
 * request has a Content-Length: walking the headers costs about a microsecond.
 */
export function hasRepeatedContentLength(req: HttpRequest): boolean {
  contentLengthHeaders = 0;
  req.forEach(countContentLength);
  return contentLengthHeaders > 1;
}

/** The last-resort guard's report: every exception that reached it is logged and counted. */
export function reportHandlerError(deps: { readonly log: Logger; readonly metrics: Metrics }, route: string, error: unknown, requestId?: string): void {
  deps.metrics.httpHandlerErrorsTotal.inc({ route });
  deps.log.error({ requestId, route, err: error }, 'unhandled error in handler');
}

/** State of one in-flight response; `done` makes double answers impossible. */
interface ResponseState {
  aborted: boolean;
  done: boolean;
  /** A HEAD request: the status and headers GET would get, without the body. */
  readonly head: boolean;
  /** The request's framing is not to be trusted: close the connection after the answer. */
  closeConnection: boolean;
}

export class HttpRouter {
  readonly served: ServedRoute[] = [];
  private inFlight = 0;
  /** performance.now() when the latest routed request started (the stop waits for a quiet moment). */
  private lastRequestStartedMs = -Infinity;
  /**
   * performance.now() when the latest answer that left its connection open was written: the stop
   * waits until uWS has closed such connections for idleness (idleConnectionsClosedAfterMs).
   */
  private lastKeepAliveAnswerMs = -Infinity;
  private drainWaiters: (() => void)[] = [];
  /** By route, method and status. */
  private readonly metricChildren = new Map<string, Map<string, Map<number, { count: { inc(): void }; duration: { observe(value: number): void } }>>>();
  /** Request ids: unique per process start, cheap (no random bytes per request). */
  private readonly requestIdPrefix = randomUUID().slice(0, 8);
  private requestCounter = 0;
  protected readonly debugLogging: boolean;
  /** By error code (the catalog's, so few): when the next 5xx line may be logged, and how many were not. */
  private readonly serverErrorLogs = new Map<string, { nextAtMs: number; notLogged: number }>();
  /**
   * Requests answered later (a promise or ctx.answer) this turn, written together by
   * writeSettledReplies. Bounded by the requests in flight: each is settled once.
   */
  private settledReplies: Exchange[] = [];
  private settledRepliesScheduled = false;
  private readonly writeSettledReplies = (): void => {
    this.settledRepliesScheduled = false;
    const settled = this.settledReplies;
    this.settledReplies = [];
    // sendReply never throws (it is guarded).
    for (let i = 0; i < settled.length; i++) {
      const x = settled[i]!;
      this.sendReply(x.res, x.state, x.reply!, x.route.path, x.metricMethod, x.started, x.requestId);
    }
  };

  /** What Exchange.fail reports a route's late error with. */
  get reportDeps(): Pick<HttpDeps, 'log' | 'metrics'> {
    return this.deps;
  }

  constructor(
    private readonly app: TemplatedApp,
    protected readonly deps: HttpDeps,
  ) {
    this.debugLogging = deps.log.isLevelEnabled('debug');
  }

  /** Since the latest routed request started, in ms. */
  msSinceLastRequest(): number {
    return performance.now() - this.lastRequestStartedMs;
  }

  /** Since the latest answer that left its connection open, in ms. */
  msSinceLastKeepAliveAnswer(): number {
    return performance.now() - this.lastKeepAliveAnswerMs;
  }

  /** Requests started and not yet answered (or aborted). */
  inFlightCount(): number {
    return this.inFlight;
  }

  /** Resolves once no request is in flight. */
  drained(): Promise<void> {
    if (this.inFlight === 0) return Promise.resolve();
    return new Promise((resolve) => this.drainWaiters.push(resolve));
  }

  register(route: RouteDefinition<unknown, unknown>): void {
    if (
      route.checksOffThread !== undefined &&
      (offThreadBodyChecks[route.checksOffThread] !== route.bodyFastPath || !route.body || route.query || route.auth === 'public')
    ) {
      throw new Error(`${route.method} ${route.path}: checksOffThread needs a body whose bodyFastPath is the worker's check, no query schema, and authentication`);
    }
    const paramNames = [...route.path.matchAll(/\{(\w+)\}/g)].map((m) => m[1] as string);
    const uwsPath = route.path.replace(/\{(\w+)\}/g, ':$1');
    const handler = (res: HttpResponse, req: HttpRequest) => this.serve(route, paramNames, res, req, false);
    switch (route.method) {
      case 'GET':
        this.app.get(uwsPath, handler);
        // HEAD wherever GET: the same status and headers, no body (RFC 9110 9.3.2).
        this.app.head(uwsPath, (res, req) => this.serve(route, paramNames, res, req, true));
        break;
      case 'POST': this.app.post(uwsPath, handler); break;
      case 'PUT': this.app.put(uwsPath, handler); break;
      case 'DELETE': this.app.del(uwsPath, handler); break;
    }
    this.served.push({ method: route.method, path: route.path });
  }

  /** Record a route registered outside this router (WebSocket upgrade) so the doc test sees it. */
  recordServed(route: ServedRoute): void {
    this.served.push(route);
  }

  /** 404 for unknown paths, 405 for known paths with another method. Register last. */
  registerFallback(routes: readonly RouteDefinition<unknown, unknown>[]): void {
    const patterns = routes.flatMap((r) => {
      const regex = new RegExp(`^${r.path.replace(/\{\w+\}/g, '[^/]+')}$`);
      return r.method === 'GET' ? [{ method: 'GET', regex }, { method: 'HEAD', regex }] : [{ method: r.method as string, regex }];
    });
    // uWS calls this for the methods it knows (GET … PATCH); any other method, it closes the
    // connection without calling anything (gateway/frontDoor.e2e.test.ts: what uWS does itself).
    this.app.any('/*', (res, req) => {
      const started = performance.now();
      // Any string can arrive as a method: only known ones become metric labels.
      const requested = req.getMethod().toUpperCase();
      const method = knownMethods.has(requested) ? requested : 'OTHER';
      const state: ResponseState = { aborted: false, done: false, head: method === 'HEAD', closeConnection: false };
      this.inFlight++;
      res.onAborted(() => {
        state.aborted = true;
        this.finish(state);
      });
      try {
        const path = req.getUrl();
        if (req.getHeader('content-length') !== '' && hasRepeatedContentLength(req)) {
          this.refuseFraming(res, state, 'fallback', method, started);
          return;
        }
        const allowed = patterns.filter((p) => p.regex.test(path)).map((p) => p.method);
        if (allowed.length > 0 && !allowed.includes(method)) {
          this.sendError(res, state, new ApiError('method_not_allowed', undefined, undefined, { allow: [...new Set(allowed)].join(', ') }), 'fallback', method, started);
        } else {
          this.sendError(res, state, new ApiError('route_not_found'), 'fallback', method, started);
        }
      } catch (error) {
        this.unhandled(res, state, error, 'fallback', method, started);
      }
    });
  }

  private serve(
    route: RouteDefinition<unknown, unknown>,
    paramNames: readonly string[],
    res: HttpResponse,
    req: HttpRequest,
    head: boolean,
  ): void {
    const started = performance.now();
    this.lastRequestStartedMs = started;
    const state: ResponseState = { aborted: false, done: false, head, closeConnection: false };
    this.inFlight++;
    res.onAborted(() => {
      state.aborted = true;
      this.finish(state);
    });
    try {
      this.readRequest(route, paramNames, res, req, state, started);
    } catch (error) {
      this.unhandled(res, state, error, route.path, head ? 'HEAD' : route.method, started);
    }
  }

  private readRequest(
    route: RouteDefinition<unknown, unknown>,
    paramNames: readonly string[],
    res: HttpResponse,
    req: HttpRequest,
    state: ResponseState,
    started: number,
  ): void {
    const method = state.head ? 'HEAD' : route.method;
    // Everything from req, now: it is invalid after this function returns.
    // Routes without path parameters (the vote path among them) share one empty object.
    const params: Record<string, string> = paramNames.length === 0 ? noParams : {};
    let pathValid = true;
    for (let i = 0; i < paramNames.length; i++) {
      const value = decodePathParameter(req.getParameter(i) ?? '');
      if (value === undefined) pathValid = false;
      else params[paramNames[i] as string] = value;
    }
    const rawQuery = req.getQuery() ?? '';
    const authorization = req.getHeader(headerNameBytes.authorization);
    const contentType = req.getHeader(headerNameBytes.contentType);
    const contentLength = req.getHeader(headerNameBytes.contentLength);
    const userAgent = req.getHeader(headerNameBytes.userAgent);
    const forwardedFor = this.deps.clientAddress.honoursForwardedFor ? req.getHeader(headerNameBytes.forwardedFor) : '';
    const incomingRequestId = req.getHeader(headerNameBytes.requestId);
    const requestId = incomingRequestId !== '' && /^[\w.-]{1,64}$/.test(incomingRequestId)
      ? incomingRequestId
      : `${this.requestIdPrefix}-${(++this.requestCounter).toString(36)}`;
    const socketIp = Buffer.from(res.getRemoteAddressAsText()).toString();
    const address = this.deps.clientAddress.resolve(socketIp, forwardedFor);
    const clientIp = address?.ip ?? socketIp;
    const networkKey = address?.networkKey ?? socketIp;
    const path = req.getUrl();
    const headers = route.readHeaders ? readHeaders(req, route.readHeaders) : noHeaders;
    if (contentLength !== '' && hasRepeatedContentLength(req)) {
      this.refuseFraming(res, state, route.path, method, started, requestId);
      return;
    }

    // No per-request named closures here: the dev/test transform (tsx, keepNames) wraps each one
    // in a defineProperty call, 2% of a vote's CPU in the profile.
    if (!this.deps.isAccepting() && route.tag !== 'operations') {
      this.sendError(res, state, new ApiError('not_ready', undefined, undefined, { 'retry-after': '1' }), route.path, method, started, requestId);
      return;
    }
    if (!pathValid) {
      this.sendError(res, state, new ApiError('invalid_path'), route.path, method, started, requestId);
      return;
    }

    const bodyBytesMax = route.bodyBytesMax ?? defaultBodyBytesMax;
    // A route whose checks run off this thread authenticates once its body is in, the token checked
    // with the body; unless the request is refused before its body is read (415, 413 by its
    // Content-Length): that comes after authentication, on every route, so it is authenticated here.
    const authenticateWithBody = route.checksOffThread !== undefined && this.deps.checksOffThread !== undefined &&
      !isUnsupportedMediaType(contentType) && !exceedsBodyBytesMax(contentLength, bodyBytesMax);
    let principal: Principal | undefined;
    let query: unknown;
    try {
      if (route.auth !== 'public' && !authenticateWithBody) principal = this.authenticate(route, authorization);
      query = route.query ? parseWith(route.query, Object.fromEntries(new URLSearchParams(rawQuery)), 'query') : noQuery;
    } catch (error) {
      this.sendError(res, state, error, route.path, method, started, requestId);
      return;
    }

    const ctx = new Exchange(this, route, res, state, started, method, path, params, query, principal, requestId, clientIp, networkKey, userAgent, headers, this.deps.log);

    if (!route.body) {
      this.runHandler(route, ctx);
      return;
    }

    if (isUnsupportedMediaType(contentType)) {
      this.sendError(res, state, new ApiError('unsupported_media_type'), route.path, method, started, requestId);
      return;
    }
    if (exceedsBodyBytesMax(contentLength, bodyBytesMax)) {
      this.sendError(res, state, new ApiError('payload_too_large', `The body may be at most ${bodyBytesMax} bytes.`), route.path, method, started, requestId);
      return;
    }
    // Only a body that comes in several chunks needs them kept (a vote comes in one).
    let chunks: Buffer[] | undefined;
    let received = 0;
    res.onData((chunk, isLast) => {
      if (state.done) return;
      received += chunk.byteLength;
      if (received > bodyBytesMax) {
        const tooLarge = new ApiError('payload_too_large', `The body may be at most ${bodyBytesMax} bytes.`);
        // Refused before its body is read, so after its authentication (see authenticateWithBody).
        this.sendError(res, state, authenticateWithBody ? (this.authenticationError(route, authorization) ?? tooLarge) : tooLarge, route.path, method, started, requestId);
        return;
      }
      // Not the last chunk: copy, uWS reuses the memory. The last one is consumed synchronously.
      if (!isLast) {
        (chunks ??= []).push(Buffer.from(chunk.slice(0)));
        return;
      }
      const last = Buffer.from(chunk);
      const whole = chunks === undefined ? last : Buffer.concat([...chunks, last]);
      if (authenticateWithBody) {
        // Kept past this callback, so copied (`last` is a view of uWS's memory). ctx.checked
        // follows, now or once the worker has answered (continueChecked).
        ctx.bodyBytes = chunks === undefined ? Buffer.from(last) : whole;
        this.deps.checksOffThread!.checks.check(authorization, ctx.bodyBytes, route.checksOffThread!, ctx);
        return;
      }
      try {
        ctx.body = parseBody(route, whole);
      } catch (error) {
        this.sendError(res, state, error, route.path, method, started, requestId);
        return;
      }
      this.runChecked(ctx);
    });
  }

  /** `deps.authenticate` and the route's roles; throws the ApiError to answer. */
  private authenticate(route: RouteDefinition<unknown, unknown>, authorization: string): Principal {
    return permitted(route, this.deps.authenticate(authorization));
  }

  /** What authenticating would refuse the request with, or undefined. */
  private authenticationError(route: RouteDefinition<unknown, unknown>, authorization: string): unknown {
    try {
      this.authenticate(route, authorization);
      return undefined;
    } catch (error) {
      return error;
    }
  }

  /**
   * A request of a `checksOffThread` route, its token and body checked (in the worker, or here):
   * what the synchronous path does with them, in its order (authentication, roles, body).
   */
  continueChecked(ctx: Exchange, checked: CheckedRequest): void {
    const bytes = ctx.bodyBytes!;
    ctx.bodyBytes = undefined;
    // Aborted while the worker had it: nothing is written to it, and its handler does not run.
    if (ctx.state.done) return;
    const route = ctx.route;
    try {
      ctx.principal = permitted(route, this.deps.checksOffThread!.admit(checked.authorization));
      ctx.body = checked.body !== undefined ? checked.body : parseBody(route, bytes);
    } catch (error) {
      this.sendError(ctx.res, ctx.state, error, route.path, ctx.metricMethod, ctx.started, ctx.requestId);
      return;
    }
    this.runChecked(ctx);
  }

  /** The request's checks threw (a bug): answered 500, logged and counted, like any exception. */
  checkFailed(ctx: Exchange, error: unknown): void {
    ctx.bodyBytes = undefined;
    this.unhandled(ctx.res, ctx.state, error, ctx.route.path, ctx.metricMethod, ctx.started, ctx.requestId);
  }

  /** Runs the handler of a request past its checks. */
  private runChecked(ctx: Exchange): void {
    // Guarded: uWS (or the worker's answer) calls this, so an exception here would end the process.
    try {
      this.runHandler(ctx.route, ctx);
    } catch (error) {
      this.unhandled(ctx.res, ctx.state, error, ctx.route.path, ctx.metricMethod, ctx.started, ctx.requestId);
    }
  }

  private runHandler(route: RouteDefinition<unknown, unknown>, ctx: Exchange): void {
    let result: Reply | Promise<Reply> | typeof answerLater;
    try {
      result = route.handle(ctx);
    } catch (error) {
      ctx.fail(error);
      return;
    }
    if (result === answerLater) return;
    if (result instanceof Promise) {
      // answer and fail never throw, so no rejection is left unhandled.
      result.then((reply) => ctx.answer(reply), (error: unknown) => ctx.fail(error));
    } else if (!ctx.settled) {
      ctx.settled = true;
      this.sendReply(ctx.res, ctx.state, result, route.path, ctx.metricMethod, ctx.started, ctx.requestId);
    } else {
      ctx.fail(new Error('handler returned a reply after answering through ctx.answer or ctx.fail'));
    }
  }

  /**
   * A reply settled after its handler returned, written once the microtasks of the current
   * callback have run. The vote node settles a committed batch's votes together, in one loop, as
   * soon as its commit is read, so they go out in one burst, not one per answer (written one by
   * one, each woke the clients' side again; collecting them was 5-12% more votes/s,
   * bench/README.md). Written at the end of the event loop's turn instead (setImmediate), they
   * waited behind every request read in the same turn: ~1 ms of a vote's time at 100 connections
   * (bench/README.md, "Eleventh look").
   */
  queueReply(exchange: Exchange): void {
    this.settledReplies.push(exchange);
    if (!this.settledRepliesScheduled) {
      this.settledRepliesScheduled = true;
      queueMicrotask(this.writeSettledReplies);
    }
  }

  sendReply(
    res: HttpResponse,
    state: ResponseState,
    reply: Reply,
    routeLabel: string,
    method: string,
    started: number,
    requestId?: string,
  ): void {
    try {
      const status = reply.status ?? 200;
      const body = reply.raw ?? (reply.json === undefined ? '' : JSON.stringify(reply.json));
      const contentType = reply.raw !== undefined ? (reply.contentType ?? 'text/plain; charset=utf-8') : 'application/json';
      this.write(res, state, status, contentType, body, reply.headers, requestId);
      this.observe(method, routeLabel, status, started, requestId);
    } catch (error) {
      this.unhandled(res, state, error, routeLabel, method, started, requestId);
    }
  }

  sendError(
    res: HttpResponse,
    state: ResponseState,
    error: unknown,
    routeLabel: string,
    method: string,
    started: number,
    requestId?: string,
  ): void {
    if (!(error instanceof ApiError) || error.code === 'internal_error') {
      this.unhandled(res, state, error, routeLabel, method, started, requestId);
      return;
    }
    try {
      if (error.status >= 500) this.warnServerError(error, routeLabel, requestId);
      this.write(res, state, error.status, 'application/json', errorBody(error.code, error.message, error.details), error.headers, requestId);
      this.observe(method, routeLabel, error.status, started, requestId);
    } catch (unexpected) {
      this.unhandled(res, state, unexpected, routeLabel, method, started, requestId);
    }
  }

  /**
   * A 5xx answer is logged at most once a second per error code, with the number not logged since
   * the last line: under overload every shed vote is a 503, and a log line for each would add to
   * the load it reports. livevote_http_requests_total counts every one.
   */
  private warnServerError(error: ApiError, routeLabel: string, requestId: string | undefined): void {
    const nowMs = Date.now();
    let entry = this.serverErrorLogs.get(error.code);
    if (entry === undefined) this.serverErrorLogs.set(error.code, (entry = { nextAtMs: 0, notLogged: 0 }));
    if (nowMs < entry.nextAtMs) {
      entry.notLogged++;
      return;
    }
    this.deps.log.warn({ requestId, code: error.code, route: routeLabel, notLoggedSinceLastLine: entry.notLogged }, error.message);
    entry.nextAtMs = nowMs + 1000;
    entry.notLogged = 0;
  }

  /**
   * 400 duplicate_content_length, then close: where this request's body ends is not to be
   * trusted, so neither is anything after it on the connection. Answered on the next turn, not
   * now: uWS goes on parsing the bytes that follow in the same read, and would serve a request
   * smuggled there before closing; with this answer still pending, it closes the connection
   * instead of serving it.
   */
  private refuseFraming(res: HttpResponse, state: ResponseState, routeLabel: string, method: string, started: number, requestId?: string): void {
    state.closeConnection = true;
    setImmediate(() => this.sendError(res, state, new ApiError('duplicate_content_length'), routeLabel, method, started, requestId));
  }

  /**
   * The last-resort guard: whatever escaped a handler or the layer itself is logged and counted,
   * and answered 500 internal_error while an answer is still possible. Never throws.
   */
  private unhandled(res: HttpResponse, state: ResponseState, error: unknown, routeLabel: string, method: string, started: number, requestId?: string): void {
    try {
      reportHandlerError(this.deps, routeLabel, error, requestId);
    } catch {
      // A logger that throws must not take the answer with it.
    }
    if (state.done) return;
    if (state.aborted) {
      this.finish(state);
      return;
    }
    try {
      this.write(res, state, 500, 'application/json', internalErrorBody, undefined, requestId);
      this.observe(method, routeLabel, 500, started, requestId);
    } catch {
      // The failure was in writing itself: half an answer may be out, so none can follow.
      this.finish(state);
      try {
        res.close();
      } catch {
        // Already gone.
      }
    }
  }

  private write(
    res: HttpResponse,
    state: ResponseState,
    status: number,
    contentType: string,
    body: string | Buffer,
    headers: Readonly<Record<string, string>> | undefined,
    requestId: string | undefined,
  ): void {
    if (state.done) return;
    if (state.aborted) {
      this.finish(state);
      return;
    }
    // Asked at the answer, not at the request: a request that started before the stop is answered after it.
    if (!state.closeConnection && this.deps.closingConnections?.()) state.closeConnection = true;
    res.cork(() => {
      res.writeStatus(statusLineBytes.get(status) ?? statusLine(status));
      res.writeHeader(headerNameBytes.contentType, contentType === jsonContentType ? jsonContentTypeBytes : contentType);
      if (requestId) res.writeHeader(headerNameBytes.requestId, requestId);
      if (headers) for (const name in headers) res.writeHeader(name, headers[name] as string);
      if (state.head) {
        // The length GET would send, and no body. Written by hand: this uWS's endWithoutBody(length)
        // leaves the response pending, waiting for that many bytes (the next request would hang).
        if (state.closeConnection) {
          res.endWithoutBody(0, true);
        } else {
          res.writeHeader('content-length', String(typeof body === 'string' ? Buffer.byteLength(body) : body.length));
          res.endWithoutBody();
        }
        this.finish(state);
      } else if (body.length <= 64 * 1024) {
        res.end(body, state.closeConnection);
        this.finish(state);
      } else {
        // tryEnd cannot close the connection: it stays open after this answer.
        state.closeConnection = false;
        this.streamLarge(res, state, typeof body === 'string' ? Buffer.from(body) : body);
      }
    });
  }

  /** Large bodies (dashboard, OpenAPI): tryEnd + onWritable, as uWS's VideoStreamer example does. */
  private streamLarge(res: HttpResponse, state: ResponseState, body: Buffer): void {
    const total = body.length;
    const startOffset = res.getWriteOffset();
    const [ok, done] = res.tryEnd(body, total);
    if (done || ok) {
      this.finish(state);
      return;
    }
    res.onWritable((offset) => {
      try {
        const [ok2, done2] = res.tryEnd(body.subarray(offset - startOffset), total);
        if (done2 || ok2) this.finish(state);
        return ok2;
      } catch (error) {
        // Half the body is out: no other answer can follow; report it and drop the connection.
        this.finish(state);
        try {
          reportHandlerError(this.deps, 'streaming', error);
          res.close();
        } catch {
          // Already gone.
        }
        return true;
      }
    });
  }

  private finish(state: ResponseState): void {
    if (state.done) return;
    state.done = true;
    this.inFlight--;
    if (!state.aborted && !state.closeConnection) this.lastKeepAliveAnswerMs = performance.now();
    if (this.inFlight === 0 && this.drainWaiters.length > 0) {
      const waiters = this.drainWaiters;
      this.drainWaiters = [];
      for (const resolve of waiters) resolve();
    }
  }

  protected observe(method: string, route: string, status: number, started: number, requestId: string | undefined): void {
    // One access-log line per request at debug level: off by default (at tens of thousands of
    // requests a second the log would cost more than the requests), on with LOG_LEVEL=debug.
    if (this.debugLogging) this.deps.log.debug({ requestId, method, route, status, durationMs: performance.now() - started }, 'request');
    // The (route, method, status) combinations are few: keep each one's series, found without
    // building a key string per request.
    let byMethod = this.metricChildren.get(route);
    if (!byMethod) this.metricChildren.set(route, (byMethod = new Map()));
    let byStatus = byMethod.get(method);
    if (!byStatus) byMethod.set(method, (byStatus = new Map()));
    let child = byStatus.get(status);
    if (!child) {
      const labels = { method, route, status: String(status) };
      child = { count: this.deps.metrics.httpRequestsTotal.labels(labels), duration: this.deps.metrics.httpRequestDurationSeconds.labels(labels) };
      byStatus.set(status, child);
    }
    child.count.inc();
    child.duration.observe((performance.now() - started) / 1000);
  }
}

/**
 * Measurement only (LIVEVOTE_MEASURE_WITHOUT metrics): a router that counts no request in
 * livevote_http_requests_total and livevote_http_request_duration_seconds, so a knob run sees what
 * the per-request metrics cost. A class of its own, chosen when the app is composed, so the
 * product's router has no flag to test per request.
 */
export class UncountedHttpRouter extends HttpRouter {
  protected override observe(method: string, route: string, status: number, started: number, requestId: string | undefined): void {
    if (this.debugLogging) this.deps.log.debug({ requestId, method, route, status, durationMs: performance.now() - started }, 'request');
  }
}

/**
 * One request on its way through a route: the handler's context, and what answering it takes
 * (one object per request; `answer` and `fail` are methods, not closures made per request).
 */
class Exchange implements RequestContext<unknown, unknown> {
  body: unknown = undefined;
  /** Answered (or failed): later calls of answer/fail do not answer again. */
  settled = false;
  /** The answer waiting in queueReply for the end of the turn. */
  reply: Reply | undefined = undefined;
  /** A `checksOffThread` route's body while its checks run; its principal is set once they are done. */
  bodyBytes: Buffer | undefined = undefined;

  constructor(
    private readonly router: HttpRouter,
    readonly route: RouteDefinition<unknown, unknown>,
    readonly res: HttpResponse,
    readonly state: ResponseState,
    readonly started: number,
    /** The method as metrics and logs label it (HEAD for a HEAD request). */
    readonly metricMethod: string,
    readonly path: string,
    readonly params: Readonly<Record<string, string>>,
    readonly query: unknown,
    public principal: Principal | undefined,
    readonly requestId: string,
    readonly clientIp: string,
    readonly networkKey: string,
    readonly userAgent: string,
    readonly headers: Readonly<Record<string, string>>,
    readonly log: Logger,
  ) {}

  get method(): HttpMethod {
    return this.route.method;
  }

  answer(reply: Reply): void {
    if (this.settled) return;
    this.settled = true;
    this.reply = reply;
    this.router.queueReply(this);
  }

  /** CheckedRequestWaiter (gateway/requestChecks.ts): this request's token and body are checked. */
  checked(result: CheckedRequest): void {
    this.router.continueChecked(this, result);
  }

  checkFailed(error: unknown): void {
    this.router.checkFailed(this, error);
  }

  fail(error: unknown): void {
    if (this.settled) {
      try {
        reportHandlerError(this.router.reportDeps, this.route.path, error, this.requestId);
      } catch {
        // A logger that throws must not escape into the caller (a shard's reply callback).
      }
      return;
    }
    this.settled = true;
    this.router.sendError(this.res, this.state, error, this.route.path, this.metricMethod, this.started, this.requestId);
  }
}

/** Routes that read no further headers (the vote path among them) share one empty object. */
const noHeaders: Readonly<Record<string, string>> = Object.freeze({});
/** Never written to: a route without path parameters gets no properties set on it. */
const noParams: Record<string, string> = Object.freeze({}) as Record<string, string>;
const noQuery: Readonly<Record<string, string>> = Object.freeze({});

function readHeaders(req: HttpRequest, names: readonly string[]): Record<string, string> {
  const headers: Record<string, string> = {};
  for (const name of names) headers[name] = req.getHeader(name);
  return headers;
}

/** The principal, if the route lets its role in; else throws 403 forbidden. */
function permitted(route: RouteDefinition<unknown, unknown>, principal: Principal): Principal {
  if (Array.isArray(route.auth) && !route.auth.includes(principal.role)) throw new ApiError('forbidden');
  return principal;
}

function isUnsupportedMediaType(contentType: string): boolean {
  return contentType !== '' && !contentType.toLowerCase().startsWith('application/json');
}

function exceedsBodyBytesMax(contentLength: string, bodyBytesMax: number): boolean {
  return contentLength !== '' && Number(contentLength) > bodyBytesMax;
}

/** The body as the route takes it: JSON, then its fast path, else its schema (whose issues are the error). */
function parseBody(route: RouteDefinition<unknown, unknown>, whole: Buffer): unknown {
  const json = whole.length === 0 && route.emptyBodyAs !== undefined ? route.emptyBodyAs : parseJson(whole);
  const fast = route.bodyFastPath === undefined ? undefined : route.bodyFastPath(json);
  return fast !== undefined ? fast : parseWith(route.body!, json, 'body');
}

function parseJson(bytes: Buffer): unknown {
  if (bytes.length === 0) throw new ApiError('invalid_json', 'The request body is empty; a JSON object is required.');
  try {
    return JSON.parse(bytes.toString('utf8'));
  } catch (error) {
    throw new ApiError('invalid_json', `The request body is not valid JSON: ${(error as Error).message}`);
  }
}

/** Validate at the boundary; the issues go back to the client as details. */
export function parseWith<T>(schema: z.ZodType<T>, value: unknown, where: 'body' | 'query'): T {
  const parsed = schema.safeParse(value);
  if (parsed.success) return parsed.data;
  const issues = parsed.error.issues.slice(0, 20).map((issue) => ({
    path: [where, ...issue.path.map(String)].join('.'),
    message: issue.message,
  }));
  throw new ApiError('validation_failed', undefined, { issues });
}
