// The inter-node protocol: every message one livevote node sends another, in one place.
//
// Transport (cluster/links.ts): each node opens ONE WebSocket to each peer it talks to, at
// `linkPath` on the peer's own HTTP port, authenticated at the upgrade (HMAC of the shared link
// key over protocol version, sender, receiver and time). Requests and events travel from the
// connecting node to the accepting one; the answers to its requests come back on the same socket.
// So A's requests to B and B's answers ride A's connection; B's requests to A ride B's.
//
// Messages, by direction (requests are imperative, events past tense):
//
//   kind     direction  sender                                    reply
//   ───────  ─────────  ────────────────────────────────────────  ──────────────────────────────
//   cast     request    router of a node that does not own the    outcome { VoteOutcome, passed
//                       voter's shard → the shard's owner          unchanged from actors/shard.ts }
//   tallies  event      a shard's owner, when its committed        none; receivers keep the highest
//                       counts changed → every other node          (epoch, version) per shard
//   map      event      the coordinator, after it changed the      none; receivers reload the shard
//                       shard map → every other node               map now
//   released event      a shard's old owner, right after it        none; the receiver serves under the
//                       handed the lease over (or released it) in  granted epoch (or takes the lease
//                       a hand-off → the new owner the map names   now rather than at its next look)
//   replicate event     a shard's owner, after its batches are     none; a replica applies each
//                       committed → each replica of those shards   shard's batch in seq order and
//                       (several shards per event)                 catches up from Postgres on a gap
//   replicas event      every node holding replicas, every         none; receivers list each
//                       replicaReportIntervalMs → every other node replica's lag (admin view)
//
// Adding a kind: its interface below, its member in LinkRequest (+ LinkAnswerOf) or LinkEvent,
// and its shape check in `requestKinds` or `eventKinds` (the compiler refuses a missing one).
//
// Wire: one WebSocket binary message = a msgpackr-encoded array of 1..framesPerMessageMax frames
// (frames queued in one event-loop turn travel together):
//
//   [0, id, LinkRequest]   request; id: uint32, unique among the sender's in-flight requests
//   [1, id, LinkAnswer]    the answer to request `id` of this socket
//   [2, LinkEvent]         one-way event
//
// A peer is trusted (it holds the link key) but its bytes are still checked: a message that does
// not decode, or a frame of the wrong shape, is counted and dropped; nothing here throws.
import { Packr, Unpackr } from 'msgpackr';
import type { InvalidVoteReason, UnavailableReason, VoteOutcome } from '../actors/shard.ts';
import { candidateCountMax } from '../persistence/storedVotes.ts';
import { shardCountMax } from './shardMap.ts';

export const linkPath = '/internal/v1/link';
/** Checked at the upgrade: nodes of different versions refuse to link (400), never misread. */
export const linkProtocolVersion = 1;

/** Upgrade request headers that carry the sender's identity and proof of the key. */
export const linkHeaders = {
  version: 'x-livevote-link-version',
  fromNodeId: 'x-livevote-link-from',
  toNodeId: 'x-livevote-link-to',
  timestampMs: 'x-livevote-link-timestamp',
  signature: 'x-livevote-link-signature',
} as const;

/** Bounds of one WebSocket message, on both sides (the receiver closes a link that exceeds them). */
export const messageBytesMax = 4 * 1024 * 1024;
export const framesPerMessageMax = 8192;

// ---------------------------------------------------------------------------------------------
// Messages

/** Request. Sender: the router of a node that does not own the voter's shard. Reply: OutcomeAnswer. */
export interface CastRequest {
  readonly t: 'cast';
  readonly electionId: string;
  readonly voterNumber: number;
  readonly candidateIndex: number;
}

/** Answer to CastRequest: the owner's outcome, unchanged (`accepted` = durable on the owner). */
export interface OutcomeAnswer {
  readonly t: 'outcome';
  readonly outcome: VoteOutcome;
}

/** Event. Sender: the shard's owner, when its committed counts changed. */
export interface TalliesChanged {
  readonly t: 'tallies';
  readonly electionId: string;
  readonly shard: number;
  /** The owner's lease epoch: a newer owner's counts win over an older one's. */
  readonly epoch: number;
  /** Grows with every change within an epoch. */
  readonly version: number;
  /** Committed votes per candidate index. */
  readonly counts: readonly number[];
  /**
   * Votes of the shard answered `accepted` that wait in the owner's spill queue, not in `counts`
   * yet. Absent from a node that predates it: read as 0.
   */
  readonly queued?: number;
}

/**
 * One shard's committed batch, streamed by its owner to the shard's replicas (cluster/replicas.ts
 * says why the watermark makes a replica as good as a snapshot).
 */
export interface ReplicatedShardBatch {
  readonly electionId: string;
  readonly shard: number;
  /** The owner's lease epoch; a newer one makes the replica catch up in full. */
  readonly epoch: number;
  /** 1, 2, 3… per (shard, epoch): a missing number is a batch the sender or the link dropped. */
  readonly seq: number;
  readonly batchId: number;
  /** Every batch at or below it that touched the shard is in this batch, an earlier one, or was stored before the epoch began. */
  readonly watermarkBatchId: number;
  /** Stored votes of this batch and shard, as parallel arrays. */
  readonly voterNumbers: readonly number[];
  readonly candidateIndexes: readonly number[];
}

/** Event. Sender: a shard's owner, after commits; to each replica, the batches of the shards it replicates. */
export interface ReplicateBatches {
  readonly t: 'replicate';
  readonly batches: readonly ReplicatedShardBatch[];
}

/** How far one replica on the sending node is (ReplicaReport). */
export interface ReplicaShardReport {
  readonly electionId: string;
  readonly shard: number;
  readonly epoch: number;
  readonly phase: 'catching_up' | 'live';
  /** Batches received but not applied yet (buffered during a catch-up). */
  readonly batchesBehind: number;
  /** Committed votes this replica holds. */
  readonly votes: number;
  /** Since the replica last applied a batch or a catch-up, by the sender's clock. */
  readonly sinceAppliedMs: number;
  /** Committed counts per candidate (a source of results while the owner's are unknown). */
  readonly counts: readonly number[];
}

/** Event. Sender: every node holding replicas, periodically; to every other node. */
export interface ReplicaReport {
  readonly t: 'replicas';
  readonly shards: readonly ReplicaShardReport[];
}

/** Event. Sender: the coordinator, after it changed the shard map. */
export interface ShardMapChanged {
  readonly t: 'map';
  readonly version: number;
}

/**
 * Event. Sender: a shard's old owner, once it resolved the shard's backlog and released its lease
 * (a move, a drain, a stop). Receiver: the node the sender's map names as the new owner, which
 * acquires the lease at once instead of waiting for its next poll: the shard's pause is shorter.
 * Only a hint: the lease in Postgres decides; a lost or stale one changes nothing.
 */
export interface ShardReleased {
  readonly t: 'released';
  readonly electionId: string;
  readonly shard: number;
  /** The lease epoch the sender held (the new owner's will be higher). */
  readonly epoch: number;
  /**
   * Set when the sender handed the lease to the receiver (epoch + 1) rather than releasing it: the
   * receiver serves under this epoch without an acquisition of its own, if its map names it.
   */
  readonly grantedEpoch?: number;
  /** The map version the sender acted on: a receiver whose map is newer and names another node gives a grant back. */
  readonly mapVersion?: number;
}

/** Each request kind and the answer it gets. */
export interface LinkAnswerOf {
  cast: OutcomeAnswer;
}
export type LinkRequest = CastRequest;
export type LinkRequestKind = LinkRequest['t'];
export type LinkAnswer = LinkAnswerOf[LinkRequestKind];
export type AnswerTo<R extends LinkRequest> = LinkAnswerOf[R['t']];
export type LinkEvent = TalliesChanged | ShardMapChanged | ShardReleased | ReplicateBatches | ReplicaReport;
export type LinkEventKind = LinkEvent['t'];

/** Whether tallies `a` replace `b` for the same shard: the highest (epoch, version) wins. */
export function talliesSupersede(a: Pick<TalliesChanged, 'epoch' | 'version'>, b: Pick<TalliesChanged, 'epoch' | 'version'>): boolean {
  return a.epoch > b.epoch || (a.epoch === b.epoch && a.version > b.version);
}

// ---------------------------------------------------------------------------------------------
// Shape checks: cheap, hand-written (this is the hot path of every forwarded vote).

type Shape = (value: Record<string, unknown>) => boolean;

const electionIdLengthMax = 64;
const isElectionId = (v: unknown): v is string => typeof v === 'string' && v.length > 0 && v.length <= electionIdLengthMax;
const isCount = (v: unknown): v is number => typeof v === 'number' && Number.isSafeInteger(v) && v >= 0;
const isRetryAfterMs = (v: unknown) => typeof v === 'number' && Number.isFinite(v) && v >= 0;
const isObject = (v: unknown): v is Record<string, unknown> => typeof v === 'object' && v !== null && !Array.isArray(v);

const unavailableReasons: Readonly<Record<UnavailableReason, true>> = {
  commit_failed: true,
  fenced: true,
  in_doubt: true,
  lookup_failed: true,
  vote_not_found: true,
  node_stopping: true,
  shard_stopped: true,
  shard_moving: true,
  not_owner: true,
  forward_failed: true,
  node_fenced: true,
};
const invalidVoteReasons: Readonly<Record<InvalidVoteReason, true>> = { voter_number_invalid: true, candidate_index_invalid: true };
const has = (table: object, key: unknown) => typeof key === 'string' && Object.hasOwn(table, key);

const outcomeShapes: { readonly [K in VoteOutcome['kind']]: Shape } = {
  accepted: (o) => typeof o.voteId === 'string' && typeof o.acceptedAtMs === 'number' && typeof o.replayed === 'boolean',
  already_voted: (o) => typeof o.voteId === 'string' && typeof o.acceptedAtMs === 'number',
  overloaded: (o) => isRetryAfterMs(o.retryAfterMs),
  unavailable: (o) => has(unavailableReasons, o.reason) && isRetryAfterMs(o.retryAfterMs),
  election_closed: () => true,
  unknown_election: () => true,
  invalid_vote: (o) => has(invalidVoteReasons, o.reason),
};

export function isVoteOutcome(value: unknown): value is VoteOutcome {
  return isObject(value) && has(outcomeShapes, value.kind) && outcomeShapes[value.kind as VoteOutcome['kind']](value);
}

/** Per request kind: the shape of the request and of its answer. */
export const requestKinds: { readonly [K in LinkRequestKind]: { readonly request: Shape; readonly answer: Shape } } = {
  cast: {
    request: (m) => isElectionId(m.electionId) && isCount(m.voterNumber) && isCount(m.candidateIndex),
    answer: (m) => m.t === 'outcome' && isVoteOutcome(m.outcome),
  },
};

const isShard = (v: unknown) => typeof v === 'number' && Number.isInteger(v) && v >= 0 && v < shardCountMax;

export const eventKinds: { readonly [K in LinkEventKind]: Shape } = {
  tallies: (m) =>
    isElectionId(m.electionId) &&
    isShard(m.shard) &&
    isCount(m.epoch) &&
    isCount(m.version) &&
    Array.isArray(m.counts) && m.counts.length <= candidateCountMax && m.counts.every(isCount) &&
    (m.queued === undefined || isCount(m.queued)),
  map: (m) => isCount(m.version),
  released: (m) => isElectionId(m.electionId) && isShard(m.shard) && isCount(m.epoch) &&
    (m.grantedEpoch === undefined || isCount(m.grantedEpoch)) && (m.mapVersion === undefined || isCount(m.mapVersion)),
  replicate: (m) => Array.isArray(m.batches) && m.batches.length <= replicatedShardsPerEventMax && m.batches.every(isReplicatedShardBatch),
  replicas: (m) => Array.isArray(m.shards) && m.shards.length <= replicaReportsPerEventMax && m.shards.every(isReplicaShardReport),
};

/** Bounds of the replication events (a sender splits larger ones). */
export const replicatedShardsPerEventMax = 4096;
export const replicatedRowsPerBatchMax = 100_000;
export const replicaReportsPerEventMax = 65_536;

function isReplicatedShardBatch(b: unknown): b is ReplicatedShardBatch {
  if (!isObject(b)) return false;
  const { voterNumbers, candidateIndexes } = b;
  return isElectionId(b.electionId) && isShard(b.shard) && isCount(b.epoch) && isCount(b.seq) && isCount(b.batchId) && isCount(b.watermarkBatchId) &&
    Array.isArray(voterNumbers) && Array.isArray(candidateIndexes) && voterNumbers.length === candidateIndexes.length &&
    voterNumbers.length <= replicatedRowsPerBatchMax && voterNumbers.every(isCount) &&
    candidateIndexes.every((c) => typeof c === 'number' && Number.isInteger(c) && c >= 0 && c < candidateCountMax);
}

function isReplicaShardReport(r: unknown): r is ReplicaShardReport {
  return isObject(r) && isElectionId(r.electionId) && isShard(r.shard) && isCount(r.epoch) && (r.phase === 'catching_up' || r.phase === 'live') &&
    isCount(r.batchesBehind) && isCount(r.votes) && isCount(r.sinceAppliedMs) &&
    Array.isArray(r.counts) && r.counts.length <= candidateCountMax && r.counts.every(isCount);
}

export function isLinkRequest(value: unknown): value is LinkRequest {
  return isObject(value) && has(requestKinds, value.t) && requestKinds[value.t as LinkRequestKind].request(value);
}

export function isLinkEvent(value: unknown): value is LinkEvent {
  return isObject(value) && has(eventKinds, value.t) && eventKinds[value.t as LinkEventKind](value);
}

/** Whether `value` is a well-formed answer to a request of kind `kind`. */
export function isAnswerTo(kind: LinkRequestKind, value: unknown): value is LinkAnswer {
  return isObject(value) && requestKinds[kind].answer(value);
}

// ---------------------------------------------------------------------------------------------
// Frames and the codec

export const frameKind = { request: 0, answer: 1, event: 2 } as const;

export type LinkFrame =
  | readonly [typeof frameKind.request, number, LinkRequest]
  | readonly [typeof frameKind.answer, number, LinkAnswer]
  | readonly [typeof frameKind.event, LinkEvent];

/**
 * A decoded frame: requests and events are shape-checked; an answer's body is checked by the
 * requester, which alone knows what it asked (`isAnswerTo`).
 */
export type ReceivedFrame =
  | { readonly kind: typeof frameKind.request; readonly id: number; readonly message: LinkRequest }
  | { readonly kind: typeof frameKind.answer; readonly id: number; readonly body: unknown }
  | { readonly kind: typeof frameKind.event; readonly message: LinkEvent };

export type DecodedMessage =
  | { readonly ok: true; readonly frames: readonly ReceivedFrame[]; /** frames of the wrong shape, dropped */ readonly invalidFrames: number }
  | { readonly ok: false; readonly reason: 'undecodable' | 'not_a_frame_list' };

const isRequestId = (v: unknown): v is number => typeof v === 'number' && Number.isInteger(v) && v >= 0 && v <= 0xffff_ffff;

// Records (msgpackr's default) write each object shape once per message: a message of many cast
// frames is about half the size of plain maps and decodes about twice as fast. No shared
// structures: every message decodes on its own, so a reconnected peer needs no state.
const packr = new Packr();
// mapsAsObjects: plain msgpack maps (a peer encoding without records) decode as objects too, not
// as Maps. copyBuffers: a uWS message's ArrayBuffer is neutered when its callback returns.
const unpackr = new Unpackr({ mapsAsObjects: true, copyBuffers: true });

/** One WebSocket message. Throws only for a value msgpackr cannot encode (a bug of the caller). */
export function encodeFrames(frames: readonly LinkFrame[]): Buffer {
  return packr.pack(frames);
}

export function decodeFrames(bytes: Uint8Array): DecodedMessage {
  let decoded: unknown;
  try {
    decoded = unpackr.unpack(bytes);
  } catch {
    return { ok: false, reason: 'undecodable' };
  }
  if (!Array.isArray(decoded) || decoded.length === 0 || decoded.length > framesPerMessageMax) return { ok: false, reason: 'not_a_frame_list' };
  const frames: ReceivedFrame[] = [];
  let invalidFrames = 0;
  for (const frame of decoded as unknown[]) {
    const received = Array.isArray(frame) ? receivedFrame(frame) : undefined;
    if (received) frames.push(received);
    else invalidFrames++;
  }
  return { ok: true, frames, invalidFrames };
}

function receivedFrame(frame: readonly unknown[]): ReceivedFrame | undefined {
  switch (frame[0]) {
    case frameKind.request:
      return frame.length === 3 && isRequestId(frame[1]) && isLinkRequest(frame[2]) ? { kind: frameKind.request, id: frame[1], message: frame[2] } : undefined;
    case frameKind.answer:
      return frame.length === 3 && isRequestId(frame[1]) ? { kind: frameKind.answer, id: frame[1], body: frame[2] } : undefined;
    case frameKind.event:
      return frame.length === 2 && isLinkEvent(frame[1]) ? { kind: frameKind.event, message: frame[1] } : undefined;
    default:
      return undefined;
  }
}
