// The inter-node protocol's codec and shape checks: what a peer's bytes can and cannot do.
import { describe, expect, it } from 'vitest';
import fc from 'fast-check';
import { encode } from 'msgpackr';
import type { VoteOutcome } from '../actors/shard.ts';
import {
  decodeFrames,
  encodeFrames,
  frameKind,
  framesPerMessageMax,
  isAnswerTo,
  isLinkEvent,
  isLinkRequest,
  isVoteOutcome,
  talliesSupersede,
  type LinkFrame,
} from './protocol.ts';

const electionId = '0190a1b2-c3d4-7e5f-8a9b-0c1d2e3f4a5b';
const count = fc.integer({ min: 0, max: Number.MAX_SAFE_INTEGER });
const requestId = fc.integer({ min: 0, max: 0xffff_ffff });

const outcomes: VoteOutcome[] = [
  { kind: 'accepted', voteId: 'v', acceptedAtMs: 1, replayed: false },
  { kind: 'already_voted', voteId: 'v', acceptedAtMs: 1 },
  { kind: 'overloaded', retryAfterMs: 1000 },
  { kind: 'unavailable', reason: 'in_doubt', retryAfterMs: 1000 },
  { kind: 'election_closed' },
  { kind: 'unknown_election' },
  { kind: 'invalid_vote', reason: 'candidate_index_invalid' },
];

const frame: fc.Arbitrary<LinkFrame> = fc.oneof(
  fc.tuple(requestId, count, fc.integer({ min: 0, max: 63 })).map(([id, voterNumber, candidateIndex]): LinkFrame => [frameKind.request, id, { t: 'cast', electionId, voterNumber, candidateIndex }]),
  fc.tuple(requestId, fc.constantFrom(...outcomes)).map(([id, outcome]): LinkFrame => [frameKind.answer, id, { t: 'outcome', outcome }]),
  fc.tuple(fc.integer({ min: 0, max: 1023 }), count, count, fc.array(count, { maxLength: 64 })).map(([shard, epoch, version, counts]): LinkFrame => [
    frameKind.event,
    { t: 'tallies', electionId, shard, epoch, version, counts },
  ]),
  count.map((version): LinkFrame => [frameKind.event, { t: 'map', version }]),
  fc.tuple(fc.integer({ min: 0, max: 1023 }), count).map(([shard, epoch]): LinkFrame => [frameKind.event, { t: 'released', electionId, shard, epoch }]),
);

describe('protocol codec', () => {
  it('decodes what it encodes, frame for frame', () => {
    fc.assert(
      fc.property(fc.array(frame, { minLength: 1, maxLength: 50 }), (frames) => {
        const decoded = decodeFrames(encodeFrames(frames));
        expect(decoded.ok).toBe(true);
        if (!decoded.ok) return;
        expect(decoded.invalidFrames).toBe(0);
        expect(decoded.frames).toEqual(
          frames.map((f) =>
            f[0] === frameKind.request ? { kind: f[0], id: f[1], message: f[2] } : f[0] === frameKind.answer ? { kind: f[0], id: f[1], body: f[2] } : { kind: f[0], message: f[1] },
          ),
        );
      }),
    );
  });

  it('decodes frames from an encoder without records (plain msgpack maps)', () => {
    const decoded = decodeFrames(encode([[0, 1, { t: 'cast', electionId, voterNumber: 5, candidateIndex: 1 }]]));
    expect(decoded).toEqual({ ok: true, invalidFrames: 0, frames: [{ kind: 0, id: 1, message: { t: 'cast', electionId, voterNumber: 5, candidateIndex: 1 } }] });
  });

  it('never throws on arbitrary bytes, and whatever it accepts is well-formed', () => {
    fc.assert(
      fc.property(fc.uint8Array({ maxLength: 512 }), (bytes) => {
        const decoded = decodeFrames(bytes);
        if (decoded.ok) for (const f of decoded.frames) expect(f.kind === frameKind.answer || (f.kind === frameKind.request ? isLinkRequest(f.message) : isLinkEvent(f.message))).toBe(true);
      }),
      { numRuns: 2000 },
    );
  });

  it('never throws on arbitrary msgpack values, frame-like or not', () => {
    const frameLike = fc.tuple(fc.constantFrom(0, 1, 2, 3), fc.anything(), fc.anything());
    fc.assert(
      fc.property(fc.oneof(fc.anything(), fc.array(fc.oneof(frameLike, fc.anything()), { maxLength: 20 })), (value) => {
        let bytes: Buffer;
        try {
          bytes = encode(value);
        } catch {
          return; // not every JS value encodes
        }
        decodeFrames(bytes);
      }),
      { numRuns: 1000 },
    );
  });

  it('refuses messages with no frames or more than framesPerMessageMax', () => {
    expect(decodeFrames(encode([]))).toEqual({ ok: false, reason: 'not_a_frame_list' });
    const tooMany = new Array(framesPerMessageMax + 1).fill([2, { t: 'map', version: 1 }]);
    expect(decodeFrames(encode(tooMany))).toEqual({ ok: false, reason: 'not_a_frame_list' });
    expect(decodeFrames(encode(tooMany.slice(1)))).toMatchObject({ ok: true, invalidFrames: 0 });
  });
});

describe('protocol shape checks', () => {
  it('accepts every kind of vote outcome, and refuses one with a field missing or of the wrong type', () => {
    for (const outcome of outcomes) {
      expect(isVoteOutcome(outcome)).toBe(true);
      expect(isAnswerTo('cast', { t: 'outcome', outcome })).toBe(true);
      for (const field of Object.keys(outcome).filter((k) => k !== 'kind')) {
        expect(isVoteOutcome({ ...outcome, [field]: undefined }), `${outcome.kind} without ${field}`).toBe(false);
        expect(isVoteOutcome({ ...outcome, [field]: {} }), `${outcome.kind} with ${field} an object`).toBe(false);
      }
    }
    expect(isVoteOutcome({ kind: 'unavailable', reason: 'because', retryAfterMs: 1 })).toBe(false);
    expect(isVoteOutcome({ kind: 'toString' })).toBe(false);
    expect(isVoteOutcome({ kind: 'overloaded', retryAfterMs: -1 })).toBe(false);
    expect(isAnswerTo('cast', { t: 'other', outcome: outcomes[0] })).toBe(false);
  });

  it('refuses requests and events out of bounds', () => {
    const castOf = (fields: object) => ({ t: 'cast', electionId, voterNumber: 1, candidateIndex: 0, ...fields });
    expect(isLinkRequest(castOf({}))).toBe(true);
    for (const bad of [{ voterNumber: -1 }, { voterNumber: 2 ** 53 }, { voterNumber: NaN }, { candidateIndex: 0.5 }, { electionId: 7 }, { electionId: 'x'.repeat(65) }, { t: 'constructor' }]) {
      expect(isLinkRequest(castOf(bad)), JSON.stringify(bad)).toBe(false);
    }
    const tallies = { t: 'tallies', electionId, shard: 0, epoch: 1, version: 1, counts: [0, 3] };
    expect(isLinkEvent(tallies)).toBe(true);
    expect(isLinkEvent({ ...tallies, queued: 12 })).toBe(true);
    for (const bad of [{ shard: 1024 }, { shard: -1 }, { epoch: -1 }, { counts: 'x' }, { counts: [1.5] }, { counts: new Array(65).fill(0) }, { queued: -1 }, { queued: 1.5 }, { queued: '3' }]) {
      expect(isLinkEvent({ ...tallies, ...bad }), JSON.stringify(bad)).toBe(false);
    }
    expect(isLinkEvent({ t: 'map', version: 3 })).toBe(true);
    expect(isLinkEvent({ t: 'map', version: '3' })).toBe(false);
    const released = { t: 'released', electionId, shard: 2, epoch: 7 };
    expect(isLinkEvent(released)).toBe(true);
    for (const bad of [{ shard: 1024 }, { shard: 0.5 }, { epoch: -1 }, { electionId: '' }]) {
      expect(isLinkEvent({ ...released, ...bad }), JSON.stringify(bad)).toBe(false);
    }
    expect(isLinkEvent([2, 3])).toBe(false);
  });

  it('tallies: the highest (epoch, version) wins', () => {
    expect(talliesSupersede({ epoch: 2, version: 1 }, { epoch: 1, version: 99 })).toBe(true);
    expect(talliesSupersede({ epoch: 1, version: 5 }, { epoch: 1, version: 4 })).toBe(true);
    expect(talliesSupersede({ epoch: 1, version: 4 }, { epoch: 1, version: 4 })).toBe(false);
    expect(talliesSupersede({ epoch: 1, version: 99 }, { epoch: 2, version: 1 })).toBe(false);
  });
});
