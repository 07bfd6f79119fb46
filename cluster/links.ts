// Links between nodes: the transport of cluster/protocol.ts.
//
// Client side (`ws`, as uWS has no client): one outbound WebSocket per peer, opened on first use,
// carrying this node's requests and events to the peer and the peer's answers back.
// Server side (uWS, mounted on the node's own HTTP app by `mountLinkServer`): accepts peers'
// links, hands their requests and events to this node, queues the answers.
//
//   outbound link:  idle ──use──► connecting ──open──► open ──socket closed──► idle (next use reconnects)
//                                     │                        in-flight fail 'disconnected'
//                                     └─connect failed──► backoff (until retryAtMs: requests fail
//                                        in-flight fail       'unreachable' at once; next use after
//                                        'unreachable'        it reconnects; backoff doubles, capped)
//
// Hot path (every forwarded vote): no promise, no timer and no WebSocket message per request.
// Frames queued in one event-loop turn leave as one message per socket (setImmediate flush);
// one sweep timer fails requests past their deadline; answers find their request by id in a Map
// kept in send order, so the sweep stops at the first request still in time.
//
// Bounds: in-flight requests per peer (past it: 'overloaded' at once), bytes buffered in the
// socket (past it: requests 'overloaded', events dropped; a uWS socket that would drop an
// answer is closed, so its requester fails at once instead of timing out), events queued while
// connecting, frames and bytes per message. Every drop is counted.
import { createHmac, timingSafeEqual } from 'node:crypto';
import { Gauge, type Registry } from 'prom-client';
import WebSocket from 'ws';
import { ApiError, errorBody } from '../gateway/errors.ts';
import { statusLine } from '../gateway/http.ts';
import type { HttpResponse, TemplatedApp, WebSocket as UwsWebSocket } from '../gateway/uws.ts';
import type { WebSocketBehavior } from 'uWebSockets.js';
import { HotCounter, type HotCounterSeries } from '../infra/hotMetrics.ts';
import { silentLogger } from '../infra/logger.ts';
import { nodeIdLengthMax } from './nodeIdentity.ts';
import {
  decodeFrames,
  encodeFrames,
  frameKind,
  framesPerMessageMax,
  isAnswerTo,
  linkHeaders,
  linkPath,
  linkProtocolVersion,
  messageBytesMax,
  type AnswerTo,
  type LinkAnswer,
  type LinkEvent,
  type LinkFrame,
  type LinkRequest,
  type LinkRequestKind,
  type ReceivedFrame,
} from './protocol.ts';

export interface LinkPeer {
  readonly nodeId: string;
  /** The peer's advertise URL, e.g. http://127.0.0.1:8081 (https → wss). */
  readonly url: string;
}

export type LinkFailureReason = 'timeout' | 'disconnected' | 'overloaded' | 'closed' | 'unreachable';
export interface LinkFailure {
  readonly failed: LinkFailureReason;
}
const linkFailureReasons: readonly LinkFailureReason[] = ['timeout', 'disconnected', 'overloaded', 'closed', 'unreachable'];
const failure: Readonly<Record<LinkFailureReason, LinkFailure>> = Object.freeze({
  timeout: Object.freeze({ failed: 'timeout' }),
  disconnected: Object.freeze({ failed: 'disconnected' }),
  overloaded: Object.freeze({ failed: 'overloaded' }),
  closed: Object.freeze({ failed: 'closed' }),
  unreachable: Object.freeze({ failed: 'unreachable' }),
});

export function isLinkFailure(answer: LinkAnswer | LinkFailure): answer is LinkFailure {
  return 'failed' in answer;
}

/** Why a frame (or a whole message) was dropped: `livevote_link_frames_dropped_total{reason}`. */
export type LinkDropReason =
  /** Received: not msgpack, or not a list of frames. */
  | 'undecodable'
  /** Received: a frame of the wrong shape. */
  | 'invalid_frame'
  /** Received: an answer on the accepting side, or a request/event on the connecting side. */
  | 'unexpected_frame'
  /** Received: an answer to no request in flight (timed out, failed, or never sent). */
  | 'unknown_id'
  /** Received: an answer of the wrong shape for its request (the request then times out). */
  | 'invalid_answer'
  /** Answered twice by this node's handler: the second is dropped. */
  | 'duplicate_answer'
  /** Answered after the requester's socket closed. */
  | 'answer_after_close'
  /** Event sent while the link is down (in backoff) or lost when the socket closed. */
  | 'link_down'
  /** Event sent while connecting, past eventsQueuedMax. */
  | 'queue_full'
  /** Event sent, or answers flushed, past the socket's byte bound. */
  | 'buffer_full'
  /** A frame msgpackr cannot encode, or one larger than a whole message may be. */
  | 'unencodable'
  /** Event sent after close(). */
  | 'closed';

export interface PeerLinkStats {
  readonly nodeId: string;
  readonly url: string;
  readonly state: 'idle' | 'connecting' | 'open' | 'backoff';
  readonly connected: boolean;
  readonly inFlight: number;
  /** Every request() call, including those failed at once. */
  readonly requestsSent: number;
  readonly answered: number;
  readonly failed: Readonly<Record<LinkFailureReason, number>>;
  readonly eventsSent: number;
  readonly eventsDropped: number;
  readonly messagesSent: number;
  readonly messagesReceived: number;
  readonly bytesSent: number;
  readonly bytesReceived: number;
}

export interface InboundLinkStats {
  readonly connections: number;
  readonly upgradesRefused: number;
  readonly requestsReceived: number;
  readonly eventsReceived: number;
  readonly answersSent: number;
  readonly messagesReceived: number;
  readonly messagesSent: number;
  readonly bytesReceived: number;
  readonly bytesSent: number;
  /** Exceptions thrown by onRequest/onEvent or by an onAnswer callback: bugs, logged. */
  readonly handlerErrors: number;
}

export interface LinkStats {
  readonly peers: readonly PeerLinkStats[];
  readonly inbound: InboundLinkStats;
  readonly framesDropped: Readonly<Partial<Record<LinkDropReason, number>>>;
}

export interface Links {
  readonly nodeId: string;
  /**
   * Send a request; `onAnswer` runs exactly once, with the peer's answer or a failure, never
   * synchronously inside this call (failures decided at once arrive in a microtask).
   */
  request<R extends LinkRequest>(peer: LinkPeer, message: R, onAnswer: (answer: AnswerTo<R> | LinkFailure) => void): void;
  /** One-way; dropped and counted when the link is down or its buffer full. */
  send(peer: LinkPeer, message: LinkEvent): void;
  /** Close that peer's outbound link; its in-flight requests fail 'disconnected'. */
  forget(nodeId: string): void;
  stats(): LinkStats;
  /** Fail every in-flight request 'closed', close every link (both sides), stop the timer. */
  close(): Promise<void>;
}

/** What this module logs through: a pino logger (or child) fits. */
export interface LinkLog {
  debug(fields: Record<string, unknown>, message: string): void;
  info(fields: Record<string, unknown>, message: string): void;
  warn(fields: Record<string, unknown>, message: string): void;
  error(fields: Record<string, unknown>, message: string): void;
}

export interface LinksOptions {
  readonly nodeId: string;
  /** Shared by every node of the cluster; proves a peer at the upgrade. */
  readonly linkKey: Buffer;
  /** A peer's request; `answer` must be called once (later is fine: after the commit). */
  readonly onRequest: (fromNodeId: string, message: LinkRequest, answer: (answer: LinkAnswer) => void) => void;
  readonly onEvent: (fromNodeId: string, message: LinkEvent) => void;
  readonly inFlightMaxPerPeer?: number;
  readonly requestTimeoutMs?: number;
  /** Per socket, both sides: bytes buffered unsent past which requests fail 'overloaded'. */
  readonly sendBufferBytesMax?: number;
  readonly metricsRegistry?: Registry;
  readonly log?: LinkLog;
  /** Monotonic milliseconds (tests); default performance.now. */
  readonly nowMs?: () => number;
}

export const inFlightMaxPerPeerDefault = 10_000;
export const requestTimeoutMsDefault = 2_000;
export const sendBufferBytesMaxDefault = 8 * 1024 * 1024;
/** Events held per peer while its link connects (later ones are dropped). */
export const eventsQueuedMax = 10_000;
/** An upgrade signed further than this from the receiver's clock is refused. */
export const upgradeClockSkewMsMax = 60_000;
const backoffMsMin = 100;
const backoffMsMax = 2_000;
const idleTimeoutSeconds = 32;

// ---------------------------------------------------------------------------------------------
// Authentication of the upgrade

export interface LinkCredentials {
  readonly version: number;
  readonly fromNodeId: string;
  readonly toNodeId: string;
  /** Wall clock (Date.now) of the sender: both nodes' clocks must agree within 60 s. */
  readonly timestampMs: number;
}

/** HMAC-SHA256 of the credentials under the cluster's link key, base64url. */
export function linkSignature(linkKey: Buffer, c: LinkCredentials): string {
  return createHmac('sha256', linkKey)
    .update(`livevote-link\n${c.version}\n${c.fromNodeId}\n${c.toNodeId}\n${c.timestampMs}`)
    .digest('base64url');
}

/** The headers a connecting node sends with its upgrade request. */
export function linkUpgradeHeaders(linkKey: Buffer, fromNodeId: string, toNodeId: string, timestampMs: number = Date.now()): Record<string, string> {
  const credentials = { version: linkProtocolVersion, fromNodeId, toNodeId, timestampMs };
  return {
    [linkHeaders.version]: String(linkProtocolVersion),
    [linkHeaders.fromNodeId]: fromNodeId,
    [linkHeaders.toNodeId]: toNodeId,
    [linkHeaders.timestampMs]: String(timestampMs),
    [linkHeaders.signature]: linkSignature(linkKey, credentials),
  };
}

const nodeIdShape = new RegExp(`^[a-z0-9-]{1,${nodeIdLengthMax}}$`);

/** The sender's nodeId, or the error that refuses the upgrade. Pure: headers in, verdict out. */
export function verifyLinkUpgrade(
  headers: { readonly [K in keyof typeof linkHeaders]: string },
  linkKey: Buffer,
  ownNodeId: string,
  nowMs: number,
): { readonly fromNodeId: string } | ApiError {
  if (headers.fromNodeId === '' || headers.timestampMs === '' || headers.signature === '') {
    return new ApiError('unauthenticated', 'A link needs the sender, a timestamp and a signature.');
  }
  if (headers.version !== String(linkProtocolVersion)) {
    return new ApiError('validation_failed', `This node speaks link protocol version ${linkProtocolVersion}, the peer ${JSON.stringify(headers.version)}.`);
  }
  if (!nodeIdShape.test(headers.fromNodeId)) return new ApiError('invalid_token', 'The link sender is not a node id.');
  if (headers.toNodeId !== ownNodeId) return new ApiError('invalid_token', `This is node ${ownNodeId}, not ${JSON.stringify(headers.toNodeId)}.`);
  const timestampMs = Number(headers.timestampMs);
  if (!/^\d{1,16}$/.test(headers.timestampMs) || Math.abs(nowMs - timestampMs) > upgradeClockSkewMsMax) {
    return new ApiError('invalid_token', 'The link signature is stale (clocks more than 60 s apart?).');
  }
  const expected = Buffer.from(linkSignature(linkKey, { version: linkProtocolVersion, fromNodeId: headers.fromNodeId, toNodeId: ownNodeId, timestampMs }));
  const given = Buffer.from(headers.signature);
  if (given.length !== expected.length || !timingSafeEqual(given, expected)) {
    return new ApiError('invalid_token', 'The link signature is wrong (do the nodes share the link key?).');
  }
  return { fromNodeId: headers.fromNodeId };
}

// ---------------------------------------------------------------------------------------------
// State

interface Pending {
  readonly kind: LinkRequestKind;
  readonly onAnswer: (answer: never) => void;
  readonly deadlineMs: number;
}

interface OutboundLink {
  readonly nodeId: string;
  readonly url: string;
  readonly wsUrl: string;
  state: PeerLinkStats['state'];
  socket: WebSocket | undefined;
  retryAtMs: number;
  backoffMs: number;
  nextId: number;
  /** In send order, so in deadline order (one timeout for all). */
  readonly inFlight: Map<number, Pending>;
  /** Frames not yet written: this turn's, or all of them while connecting. */
  outbox: LinkFrame[];
  eventsInOutbox: number;
  failuresLogged: number;
  requestsSent: number;
  answered: number;
  readonly failed: Record<LinkFailureReason, number>;
  eventsSent: number;
  eventsDropped: number;
  messagesSent: number;
  messagesReceived: number;
  bytesSent: number;
  bytesReceived: number;
  readonly outcomes: Readonly<Record<'answered' | LinkFailureReason, HotCounterSeries>> | undefined;
}

interface InboundConnection {
  readonly fromNodeId: string;
  socket: UwsWebSocket<InboundData> | undefined;
  closed: boolean;
  outbox: LinkFrame[];
}

interface InboundData {
  readonly connection: InboundConnection;
}

interface LinkServerSide {
  mounted: boolean;
  readonly behavior: () => WebSocketBehavior<InboundData>;
}

const serverSides = new WeakMap<Links, LinkServerSide>();

/** Serve peers' links on this node's own HTTP app, at `linkPath`. Call once, before listening. */
export function mountLinkServer(app: TemplatedApp, links: Links): void {
  const side = serverSides.get(links);
  if (!side) throw new Error('mountLinkServer: links must come from createLinks');
  if (side.mounted) throw new Error('mountLinkServer: these links are already mounted');
  side.mounted = true;
  app.ws<InboundData>(linkPath, side.behavior());
}

export function createLinks(options: LinksOptions): Links {
  const inFlightMaxPerPeer = options.inFlightMaxPerPeer ?? inFlightMaxPerPeerDefault;
  const requestTimeoutMs = options.requestTimeoutMs ?? requestTimeoutMsDefault;
  const sendBufferBytesMax = options.sendBufferBytesMax ?? sendBufferBytesMaxDefault;
  const log: LinkLog = options.log ?? silentLogger();
  const now = options.nowMs ?? (() => performance.now());
  if (!nodeIdShape.test(options.nodeId)) throw new Error(`nodeId must be 1-${nodeIdLengthMax} of a-z, 0-9, -: ${JSON.stringify(options.nodeId)}`);
  if (options.linkKey.length < 16) throw new Error('linkKey must be at least 16 bytes');
  if (!(Number.isInteger(inFlightMaxPerPeer) && inFlightMaxPerPeer >= 1)) throw new Error(`inFlightMaxPerPeer must be a positive integer, got ${inFlightMaxPerPeer}`);
  if (!(Number.isFinite(requestTimeoutMs) && requestTimeoutMs > 0)) throw new Error(`requestTimeoutMs must be positive, got ${requestTimeoutMs}`);
  if (!(Number.isFinite(sendBufferBytesMax) && sendBufferBytesMax >= 64 * 1024)) throw new Error(`sendBufferBytesMax must be at least 64 KiB, got ${sendBufferBytesMax}`);

  const outbound = new Map<string, OutboundLink>();
  const inbound = new Set<InboundConnection>();
  const dirtyOutbound = new Set<OutboundLink>();
  const dirtyInbound = new Set<InboundConnection>();
  const framesDropped: Partial<Record<LinkDropReason, number>> = {};
  const inboundStats = {
    upgradesRefused: 0,
    requestsReceived: 0,
    eventsReceived: 0,
    answersSent: 0,
    messagesReceived: 0,
    messagesSent: 0,
    bytesReceived: 0,
    bytesSent: 0,
    handlerErrors: 0,
  };
  let closed = false;
  let flushHandle: NodeJS.Immediate | undefined;

  // -- metrics --------------------------------------------------------------------------------
  const registry = options.metricsRegistry;
  const requestsTotal = registry
    ? new HotCounter<'peer' | 'outcome'>({
        name: 'livevote_link_requests_total',
        help: 'Requests sent to peers over links, by outcome (answered, or why they failed)',
        labelNames: ['peer', 'outcome'],
        registers: [registry],
      })
    : undefined;
  const droppedTotal = registry
    ? new HotCounter<'reason'>({
        name: 'livevote_link_frames_dropped_total',
        help: 'Link frames dropped, by reason (malformed input, unknown ids, full buffers, links down)',
        labelNames: ['reason'],
        registers: [registry],
      })
    : undefined;
  if (registry) {
    new Gauge({
      name: 'livevote_link_in_flight',
      help: 'Requests sent to a peer and not yet answered or failed',
      labelNames: ['peer'] as const,
      registers: [registry],
      collect() {
        this.reset();
        for (const link of outbound.values()) this.set({ peer: link.nodeId }, link.inFlight.size);
      },
    });
    new Gauge({
      name: 'livevote_link_connected',
      help: '1 while this node\'s link to the peer is open',
      labelNames: ['peer'] as const,
      registers: [registry],
      collect() {
        this.reset();
        for (const link of outbound.values()) this.set({ peer: link.nodeId }, link.state === 'open' ? 1 : 0);
      },
    });
  }

  const drop = (reason: LinkDropReason, frames = 1) => {
    framesDropped[reason] = (framesDropped[reason] ?? 0) + frames;
    droppedTotal?.labels({ reason }).inc(frames);
  };

  // One line per second at most for what a misbehaving peer can repeat.
  let lastNoisyLogMs = -Infinity;
  const logNoisy = (fields: Record<string, unknown>, message: string) => {
    const t = now();
    if (t - lastNoisyLogMs < 1_000) return;
    lastNoisyLogMs = t;
    log.warn(fields, message);
  };

  /** Callers' callbacks never throw into a socket's event handler (that would end the process). */
  const deliver = (onAnswer: (answer: never) => void, answer: LinkAnswer | LinkFailure) => {
    try {
      (onAnswer as (answer: LinkAnswer | LinkFailure) => void)(answer);
    } catch (error) {
      inboundStats.handlerErrors++;
      log.error({ err: error }, 'link: an onAnswer callback threw');
    }
  };

  const countFailure = (link: OutboundLink, reason: LinkFailureReason) => {
    link.failed[reason]++;
    link.outcomes?.[reason].inc();
  };

  const failAll = (link: OutboundLink, reason: LinkFailureReason) => {
    if (link.inFlight.size === 0) return;
    const pending = [...link.inFlight.values()];
    link.inFlight.clear();
    for (const p of pending) {
      countFailure(link, reason);
      deliver(p.onAnswer, failure[reason]);
    }
  };

  // -- timeouts: one sweep for every link ------------------------------------------------------
  const sweepIntervalMs = Math.min(250, Math.max(10, Math.floor(requestTimeoutMs / 8)));
  const sweep = setInterval(() => {
    const t = now();
    for (const link of outbound.values()) {
      for (const [id, p] of link.inFlight) {
        if (p.deadlineMs > t) break;
        link.inFlight.delete(id);
        countFailure(link, 'timeout');
        deliver(p.onAnswer, failure.timeout);
      }
    }
  }, sweepIntervalMs);
  sweep.unref();

  // -- writing: frames of one turn → one message per socket ----------------------------------
  const scheduleFlush = () => {
    if (flushHandle === undefined) flushHandle = setImmediate(flush);
  };

  function flush() {
    flushHandle = undefined;
    // Deleted one by one: a callback run while writing may mark a socket dirty again.
    for (const link of dirtyOutbound) {
      dirtyOutbound.delete(link);
      writeOutbound(link);
    }
    for (const connection of dirtyInbound) {
      dirtyInbound.delete(connection);
      writeInbound(connection);
    }
  }

  /** Encode frames into messages within the bounds; an unencodable frame is reported and skipped. */
  const encodeMessages = (frames: readonly LinkFrame[], onUnsendable: (frame: LinkFrame) => void): Buffer[] => {
    const messages: Buffer[] = [];
    const encode = (part: readonly LinkFrame[]) => {
      let bytes: Buffer | undefined;
      try {
        bytes = encodeFrames(part);
      } catch (error) {
        if (part.length === 1) {
          log.error({ err: error }, 'link: a frame could not be encoded');
          drop('unencodable');
          onUnsendable(part[0]!);
          return;
        }
      }
      if (bytes && bytes.length <= messageBytesMax) {
        messages.push(bytes);
      } else if (part.length === 1) {
        drop('unencodable');
        onUnsendable(part[0]!);
      } else {
        const half = Math.ceil(part.length / 2);
        encode(part.slice(0, half));
        encode(part.slice(half));
      }
    };
    for (let i = 0; i < frames.length; i += framesPerMessageMax) encode(i === 0 && frames.length <= framesPerMessageMax ? frames : frames.slice(i, i + framesPerMessageMax));
    return messages;
  };

  const wsSendOptions = { binary: true, compress: false } as const;

  function writeOutbound(link: OutboundLink) {
    const socket = link.socket;
    if (link.state !== 'open' || !socket || link.outbox.length === 0) return;
    const frames = link.outbox;
    link.outbox = [];
    link.eventsInOutbox = 0;
    const messages = encodeMessages(frames, (frame) => {
      if (frame[0] !== frameKind.request) return;
      const pending = link.inFlight.get(frame[1]);
      if (!pending) return;
      link.inFlight.delete(frame[1]);
      countFailure(link, 'overloaded');
      deliver(pending.onAnswer, failure.overloaded);
    });
    for (const bytes of messages) {
      socket.send(bytes, wsSendOptions);
      link.messagesSent++;
      link.bytesSent += bytes.length;
    }
  }

  function writeInbound(connection: InboundConnection) {
    const socket = connection.socket;
    const frames = connection.outbox;
    connection.outbox = [];
    if (connection.closed || !socket) {
      drop('answer_after_close', frames.length);
      return;
    }
    const messages = encodeMessages(frames, () => {});
    socket.cork(() => {
      for (const bytes of messages) {
        // 2: dropped, past maxBackpressure. The requester would wait for answers that will never
        // come: close, so it fails them 'disconnected' now.
        if (socket.send(bytes, true, false) === 2) {
          drop('buffer_full', frames.length);
          logNoisy({ peer: connection.fromNodeId }, 'link: a peer reads answers too slowly; closing its link');
          socket.end(1013, 'answers backpressure');
          return;
        }
        inboundStats.messagesSent++;
        inboundStats.bytesSent += bytes.length;
      }
      inboundStats.answersSent += frames.length;
    });
  }

  // -- outbound links ------------------------------------------------------------------------
  const newLink = (peer: LinkPeer): OutboundLink => {
    const url = new URL(linkPath, peer.url);
    if (url.protocol === 'http:') url.protocol = 'ws:';
    else if (url.protocol === 'https:') url.protocol = 'wss:';
    else throw new Error(`peer ${peer.nodeId}: url must be http(s), got ${peer.url}`);
    const series = (outcome: 'answered' | LinkFailureReason) => requestsTotal!.labels({ peer: peer.nodeId, outcome });
    return {
      nodeId: peer.nodeId,
      url: peer.url,
      wsUrl: url.toString(),
      state: 'idle',
      socket: undefined,
      retryAtMs: 0,
      backoffMs: 0,
      nextId: 0,
      inFlight: new Map(),
      outbox: [],
      eventsInOutbox: 0,
      failuresLogged: 0,
      requestsSent: 0,
      answered: 0,
      failed: { timeout: 0, disconnected: 0, overloaded: 0, closed: 0, unreachable: 0 },
      eventsSent: 0,
      eventsDropped: 0,
      messagesSent: 0,
      messagesReceived: 0,
      bytesSent: 0,
      bytesReceived: 0,
      outcomes: requestsTotal
        ? {
            answered: series('answered'),
            timeout: series('timeout'),
            disconnected: series('disconnected'),
            overloaded: series('overloaded'),
            closed: series('closed'),
            unreachable: series('unreachable'),
          }
        : undefined,
    };
  };

  /** The link to this peer; a peer whose URL changed gets a fresh one (the old one is forgotten). */
  const linkFor = (peer: LinkPeer): OutboundLink => {
    const existing = outbound.get(peer.nodeId);
    if (existing && existing.url === peer.url) return existing;
    if (existing) closeLink(existing, 'disconnected');
    const link = newLink(peer);
    outbound.set(peer.nodeId, link);
    return link;
  };

  /** linkFor, or undefined (logged) for a peer whose URL is not http(s). */
  const linkOrLog = (peer: LinkPeer): OutboundLink | undefined => {
    try {
      return linkFor(peer);
    } catch (error) {
      log.error({ err: error, peer: peer.nodeId }, 'link: bad peer');
      return undefined;
    }
  };

  /** Whether frames may be queued on this link now (connecting it if needed). */
  const usable = (link: OutboundLink): boolean => {
    if (link.state === 'open' || link.state === 'connecting') return true;
    if (link.state === 'backoff' && now() < link.retryAtMs) return false;
    connect(link);
    return (link.state as PeerLinkStats['state']) === 'connecting';
  };

  function connect(link: OutboundLink) {
    let socket: WebSocket;
    try {
      socket = new WebSocket(link.wsUrl, {
        headers: linkUpgradeHeaders(options.linkKey, options.nodeId, link.nodeId),
        perMessageDeflate: false,
        maxPayload: messageBytesMax,
        handshakeTimeout: Math.min(requestTimeoutMs, 5_000),
        followRedirects: false,
        skipUTF8Validation: true,
      });
    } catch (error) {
      connectFailed(link, error);
      return;
    }
    link.socket = socket;
    link.state = 'connecting';
    let opened = false;
    let connectError: unknown;
    socket.on('open', () => {
      if (link.socket !== socket) return;
      opened = true;
      link.state = 'open';
      link.backoffMs = 0;
      if (link.failuresLogged > 0) log.info({ peer: link.nodeId, url: link.url }, 'link: connected again');
      link.failuresLogged = 0;
      writeOutbound(link);
    });
    socket.on('message', (data: Buffer) => {
      if (link.socket !== socket) return;
      try {
        link.messagesReceived++;
        link.bytesReceived += data.length;
        receiveAnswers(link, data);
      } catch (error) {
        // Only a bug gets here: the decoder and the callbacks are guarded.
        inboundStats.handlerErrors++;
        log.error({ err: error, peer: link.nodeId }, 'link: unexpected error reading answers');
      }
    });
    socket.on('error', (error: Error) => {
      // 'close' follows and does the work; a connect failure is logged there.
      if (opened) log.debug({ err: error, peer: link.nodeId }, 'link: socket error');
      else connectError = error;
    });
    socket.on('close', () => {
      if (link.socket !== socket) return;
      link.socket = undefined;
      if (opened) {
        link.state = 'idle';
        log.info({ peer: link.nodeId, url: link.url }, 'link: closed');
        dropOutbox(link);
        failAll(link, 'disconnected');
      } else {
        connectFailed(link, connectError);
      }
    });
  }

  function connectFailed(link: OutboundLink, error: unknown) {
    link.state = 'backoff';
    link.socket = undefined;
    link.backoffMs = Math.min(backoffMsMax, Math.max(backoffMsMin, link.backoffMs * 2));
    link.retryAtMs = now() + link.backoffMs * (0.8 + 0.4 * Math.random());
    const fields = { peer: link.nodeId, url: link.url, err: error, retryInMs: link.backoffMs };
    if (link.failuresLogged++ === 0) log.warn(fields, 'link: cannot connect to peer');
    else log.debug(fields, 'link: cannot connect to peer');
    dropOutbox(link);
    failAll(link, 'unreachable');
  }

  const dropOutbox = (link: OutboundLink) => {
    if (link.eventsInOutbox > 0) {
      drop('link_down', link.eventsInOutbox);
      link.eventsDropped += link.eventsInOutbox;
    }
    link.outbox = [];
    link.eventsInOutbox = 0;
    dirtyOutbound.delete(link);
  };

  const enqueue = (link: OutboundLink, frame: LinkFrame) => {
    link.outbox.push(frame);
    if (link.state === 'open') {
      dirtyOutbound.add(link);
      scheduleFlush();
    }
  };

  function receiveAnswers(link: OutboundLink, data: Uint8Array) {
    const decoded = decodeFrames(data);
    if (!decoded.ok) {
      drop('undecodable');
      logNoisy({ peer: link.nodeId, reason: decoded.reason }, 'link: undecodable message from peer');
      return;
    }
    if (decoded.invalidFrames > 0) drop('invalid_frame', decoded.invalidFrames);
    for (const frame of decoded.frames) {
      if (frame.kind !== frameKind.answer) {
        drop('unexpected_frame');
        continue;
      }
      const pending = link.inFlight.get(frame.id);
      if (!pending) {
        drop('unknown_id');
        continue;
      }
      if (!isAnswerTo(pending.kind, frame.body)) {
        drop('invalid_answer');
        logNoisy({ peer: link.nodeId, kind: pending.kind }, 'link: answer of the wrong shape from peer');
        continue;
      }
      link.inFlight.delete(frame.id);
      link.answered++;
      link.outcomes?.answered.inc();
      deliver(pending.onAnswer, frame.body);
    }
  }

  function closeLink(link: OutboundLink, reason: LinkFailureReason) {
    const socket = link.socket;
    link.socket = undefined;
    link.state = 'idle';
    dropOutbox(link);
    failAll(link, reason);
    if (outbound.get(link.nodeId) === link) outbound.delete(link.nodeId);
    if (socket) socket.terminate();
    return socket;
  }

  // -- inbound connections (server side) -----------------------------------------------------
  function receiveFrames(connection: InboundConnection, frames: readonly ReceivedFrame[]) {
    for (const frame of frames) {
      if (frame.kind === frameKind.request) {
        inboundStats.requestsReceived++;
        try {
          options.onRequest(connection.fromNodeId, frame.message, answerFor(connection, frame.id));
        } catch (error) {
          inboundStats.handlerErrors++;
          log.error({ err: error, peer: connection.fromNodeId, kind: frame.message.t }, 'link: onRequest threw');
        }
      } else if (frame.kind === frameKind.event) {
        inboundStats.eventsReceived++;
        try {
          options.onEvent(connection.fromNodeId, frame.message);
        } catch (error) {
          inboundStats.handlerErrors++;
          log.error({ err: error, peer: connection.fromNodeId, kind: frame.message.t }, 'link: onEvent threw');
        }
      } else {
        drop('unexpected_frame');
      }
    }
  }

  const answerFor = (connection: InboundConnection, id: number) => {
    let answered = false;
    return (answer: LinkAnswer) => {
      if (answered) {
        drop('duplicate_answer');
        return;
      }
      answered = true;
      if (connection.closed) {
        drop('answer_after_close');
        return;
      }
      connection.outbox.push([frameKind.answer, id, answer]);
      dirtyInbound.add(connection);
      scheduleFlush();
    };
  };

  const rejectUpgrade = (res: HttpResponse, error: ApiError) => {
    res.cork(() => {
      res.writeStatus(statusLine(error.status));
      res.writeHeader('content-type', 'application/json');
      res.end(errorBody(error.code, error.message), true);
    });
  };

  const behavior = (): WebSocketBehavior<InboundData> => ({
    compression: 0,
    maxPayloadLength: messageBytesMax,
    maxBackpressure: sendBufferBytesMax,
    idleTimeout: idleTimeoutSeconds,
    sendPingsAutomatically: true,
    // Everything in here is synchronous and guarded: an exception escaping a uWS callback would
    // end the process.
    upgrade: (res, req, context) => {
      try {
        // Read everything now: req is invalid after this function returns.
        const headers = {
          version: req.getHeader(linkHeaders.version),
          fromNodeId: req.getHeader(linkHeaders.fromNodeId),
          toNodeId: req.getHeader(linkHeaders.toNodeId),
          timestampMs: req.getHeader(linkHeaders.timestampMs),
          signature: req.getHeader(linkHeaders.signature),
        };
        const key = req.getHeader('sec-websocket-key');
        const protocol = req.getHeader('sec-websocket-protocol');
        const extensions = req.getHeader('sec-websocket-extensions');
        const verdict = closed
          ? new ApiError('not_ready', 'This node is stopping.')
          : req.getHeader('content-length') !== '' || req.getHeader('transfer-encoding') !== ''
            ? new ApiError('validation_failed', 'A link upgrade has no body.')
            : verifyLinkUpgrade(headers, options.linkKey, options.nodeId, Date.now());
        if (verdict instanceof ApiError) {
          inboundStats.upgradesRefused++;
          logNoisy({ from: headers.fromNodeId, code: verdict.code, reason: verdict.message }, 'link: upgrade refused');
          rejectUpgrade(res, verdict);
          return;
        }
        const connection: InboundConnection = { fromNodeId: verdict.fromNodeId, socket: undefined, closed: false, outbox: [] };
        res.upgrade<InboundData>({ connection }, key, protocol, extensions, context);
      } catch (error) {
        inboundStats.handlerErrors++;
        log.error({ err: error }, 'link: unexpected error in upgrade');
        try {
          rejectUpgrade(res, new ApiError('internal_error'));
        } catch {
          // The response is gone (upgrade failed half-way): nothing more can be said on it.
        }
      }
    },
    open: (ws: UwsWebSocket<InboundData>) => {
      try {
        const { connection } = ws.getUserData();
        connection.socket = ws;
        inbound.add(connection);
        log.info({ peer: connection.fromNodeId }, 'link: peer connected');
      } catch (error) {
        inboundStats.handlerErrors++;
        log.error({ err: error }, 'link: unexpected error in open');
      }
    },
    message: (ws: UwsWebSocket<InboundData>, message: ArrayBuffer) => {
      try {
        const { connection } = ws.getUserData();
        inboundStats.messagesReceived++;
        inboundStats.bytesReceived += message.byteLength;
        const decoded = decodeFrames(new Uint8Array(message));
        if (!decoded.ok) {
          drop('undecodable');
          logNoisy({ peer: connection.fromNodeId, reason: decoded.reason }, 'link: undecodable message from peer');
          return;
        }
        if (decoded.invalidFrames > 0) {
          drop('invalid_frame', decoded.invalidFrames);
          logNoisy({ peer: connection.fromNodeId, frames: decoded.invalidFrames }, 'link: frames of the wrong shape from peer');
        }
        receiveFrames(connection, decoded.frames);
      } catch (error) {
        inboundStats.handlerErrors++;
        log.error({ err: error }, 'link: unexpected error reading a message');
      }
    },
    close: (ws: UwsWebSocket<InboundData>) => {
      try {
        const { connection } = ws.getUserData();
        connection.closed = true;
        connection.socket = undefined;
        inbound.delete(connection);
        if (connection.outbox.length > 0) drop('answer_after_close', connection.outbox.length);
        connection.outbox = [];
        dirtyInbound.delete(connection);
        log.info({ peer: connection.fromNodeId }, 'link: peer disconnected');
      } catch (error) {
        inboundStats.handlerErrors++;
        log.error({ err: error }, 'link: unexpected error in close');
      }
    },
  });

  // -- the API -------------------------------------------------------------------------------
  const failSoon = (onAnswer: (answer: never) => void, reason: LinkFailureReason) => {
    queueMicrotask(() => deliver(onAnswer, failure[reason]));
  };

  const links: Links = {
    nodeId: options.nodeId,

    request(peer, message, onAnswer) {
      if (closed) {
        failSoon(onAnswer, 'closed');
        return;
      }
      const link = linkOrLog(peer);
      if (!link) {
        failSoon(onAnswer, 'unreachable');
        return;
      }
      link.requestsSent++;
      const reason: LinkFailureReason | undefined =
        link.inFlight.size >= inFlightMaxPerPeer
          ? 'overloaded'
          : !usable(link)
            ? 'unreachable'
            : link.socket && link.socket.bufferedAmount > sendBufferBytesMax
              ? 'overloaded'
              : undefined;
      if (reason) {
        countFailure(link, reason);
        failSoon(onAnswer, reason);
        return;
      }
      let id = link.nextId;
      while (link.inFlight.has(id)) id = (id + 1) >>> 0;
      link.nextId = (id + 1) >>> 0;
      link.inFlight.set(id, { kind: message.t, onAnswer, deadlineMs: now() + requestTimeoutMs });
      enqueue(link, [frameKind.request, id, message]);
    },

    send(peer, message) {
      if (closed) {
        drop('closed');
        return;
      }
      const link = linkOrLog(peer);
      if (!link) {
        drop('link_down');
        return;
      }
      const reason: LinkDropReason | undefined = !usable(link)
        ? 'link_down'
        : link.state !== 'open' && link.eventsInOutbox >= eventsQueuedMax
          ? 'queue_full'
          : link.socket && link.socket.bufferedAmount > sendBufferBytesMax
            ? 'buffer_full'
            : undefined;
      if (reason) {
        drop(reason);
        link.eventsDropped++;
        return;
      }
      link.eventsSent++;
      if (link.state !== 'open') link.eventsInOutbox++;
      enqueue(link, [frameKind.event, message]);
    },

    forget(nodeId) {
      const link = outbound.get(nodeId);
      if (link) closeLink(link, 'disconnected');
    },

    stats() {
      return {
        peers: [...outbound.values()].map((link) => ({
          nodeId: link.nodeId,
          url: link.url,
          state: link.state,
          connected: link.state === 'open',
          inFlight: link.inFlight.size,
          requestsSent: link.requestsSent,
          answered: link.answered,
          failed: { ...link.failed },
          eventsSent: link.eventsSent,
          eventsDropped: link.eventsDropped,
          messagesSent: link.messagesSent,
          messagesReceived: link.messagesReceived,
          bytesSent: link.bytesSent,
          bytesReceived: link.bytesReceived,
        })),
        inbound: { connections: inbound.size, ...inboundStats },
        framesDropped: { ...framesDropped },
      };
    },

    async close() {
      if (closed) return;
      closed = true;
      clearInterval(sweep);
      if (flushHandle !== undefined) clearImmediate(flushHandle);
      flushHandle = undefined;
      const closing: Promise<void>[] = [];
      for (const link of [...outbound.values()]) {
        const socket = closeLink(link, 'closed');
        if (socket && socket.readyState !== WebSocket.CLOSED) closing.push(new Promise((resolve) => socket.once('close', () => resolve())));
      }
      for (const connection of [...inbound]) {
        // end() runs the close handler at once, which forgets the connection.
        connection.socket?.end(1001, 'node stopping');
      }
      await Promise.all(closing);
    },
  };
  serverSides.set(links, { mounted: false, behavior });
  return links;
}

export { linkFailureReasons };
