// The router's hand-off buffers: the node the map names as a shard's new owner holds its votes
// until it serves the shard (bounded in count and time), and a view change sends them on.
import { describe, expect, it } from 'vitest';
import type { VoteOutcome } from '../actors/shard.ts';
import type { VoteNode } from '../actors/voteNode.ts';
import type { LinkFailure, LinkPeer } from './links.ts';
import type { ClusterView } from './ports.ts';
import type { CastRequest, OutcomeAnswer } from './protocol.ts';
import { Router } from './router.ts';

const electionId = '00000000-0000-4000-8000-000000000001';
const accepted = (voterNumber: number): VoteOutcome => ({ kind: 'accepted', voteId: `v${voterNumber}`, acceptedAtMs: 1, replayed: false });

function viewWith(owner: string): ClusterView {
  return {
    version: 1, electionsVersion: 1, coordinatorNodeId: 'n1', readAtMs: 0, operations: [],
    nodes: ['n1', 'n2'].map((nodeId) => ({ nodeId, az: 'a', url: `http://${nodeId}`, status: 'alive', incarnation: 1, startedAtMs: 0, lastHeartbeatAtMs: 0, draining: false })),
    shards: [{ electionId, shard: 0, ownerNodeId: owner, mapVersion: 1, epoch: 1, leaseNodeId: null, leaseExpiresAtMs: 0, pinned: false, replicaNodeIds: [] }],
    elections: [{ electionId, shardCount: 1 }],
  };
}

function setUp(options: { holdMs?: number; heldVotesMax?: number } = {}) {
  let serving = false;
  const castHere: number[] = [];
  const forwarded: { peer: string; message: CastRequest }[] = [];
  const voteNode = {
    isServing: () => serving,
    cast: (vote: { voterNumber: number }, reply: (outcome: VoteOutcome) => void) => {
      castHere.push(vote.voterNumber);
      reply(accepted(vote.voterNumber));
    },
  } as unknown as VoteNode;
  const router = new Router({
    nodeId: 'n1',
    voteNode,
    links: {
      request: (peer: LinkPeer, message: CastRequest, onAnswer: (answer: OutcomeAnswer | LinkFailure) => void) => {
        forwarded.push({ peer: peer.nodeId, message });
        onAnswer({ t: 'outcome', outcome: accepted(message.voterNumber) });
      },
    } as never,
    shardCountOf: () => 1,
    canServe: () => true,
    retryAfterMs: 1000,
    routeRetryMs: 60_000,
    ...options,
  });
  router.applyView(viewWith('n1'));
  return { router, castHere, forwarded, serve: () => { serving = true; } };
}

describe('Router: votes held by the next owner while it takes the shard over', () => {
  it('holds its own and forwarded votes until the shard is served, then casts them, each answered once', () => {
    const { router, castHere, serve } = setUp();
    const answers: [number, VoteOutcome][] = [];
    router.cast({ electionId, voterNumber: 1, candidateIndex: 0 }, (o) => answers.push([1, o]));
    router.castForwarded({ t: 'cast', electionId, voterNumber: 2, candidateIndex: 0 }, (o) => answers.push([2, o]));
    expect(answers).toEqual([]);
    expect(router.heldVotesNow).toBe(2);
    expect(castHere).toEqual([]);

    serve();
    router.shardsChanged();
    expect(castHere.sort()).toEqual([1, 2]);
    expect(answers.map(([v, o]) => [v, o.kind]).sort()).toEqual([[1, 'accepted'], [2, 'accepted']]);
    expect(router.heldVotesNow).toBe(0);
    expect(router.heldVotes).toBe(2);
  });

  it('a view that gives the shard to another node sends its own held votes there and answers forwarded ones not_owner', () => {
    const { router, castHere, forwarded } = setUp();
    const answers: [number, VoteOutcome][] = [];
    router.cast({ electionId, voterNumber: 1, candidateIndex: 0 }, (o) => answers.push([1, o]));
    router.castForwarded({ t: 'cast', electionId, voterNumber: 2, candidateIndex: 0 }, (o) => answers.push([2, o]));
    router.applyView(viewWith('n2'));
    expect(castHere).toEqual([]);
    expect(forwarded.map((f) => [f.peer, f.message.voterNumber])).toEqual([['n2', 1]]);
    expect(answers.find(([v]) => v === 1)![1].kind).toBe('accepted');
    expect(answers.find(([v]) => v === 2)![1]).toMatchObject({ kind: 'unavailable', reason: 'not_owner' });
    expect(router.heldVotesNow).toBe(0);
  });

  it('holds at most heldVotesMax votes: past it a forwarded vote is answered not_owner at once', () => {
    const { router } = setUp({ heldVotesMax: 2 });
    const answers: VoteOutcome[] = [];
    for (let voterNumber = 0; voterNumber < 3; voterNumber++) router.castForwarded({ t: 'cast', electionId, voterNumber, candidateIndex: 0 }, (o) => answers.push(o));
    expect(router.heldVotesNow).toBe(2);
    expect(answers).toEqual([expect.objectContaining({ kind: 'unavailable', reason: 'not_owner' })]);
  });

  it('holdMs 0 holds nothing (the old behaviour: not_owner, the sender asks again)', () => {
    const { router } = setUp({ holdMs: 0 });
    const answers: VoteOutcome[] = [];
    router.castForwarded({ t: 'cast', electionId, voterNumber: 1, candidateIndex: 0 }, (o) => answers.push(o));
    expect(answers).toEqual([expect.objectContaining({ kind: 'unavailable', reason: 'not_owner' })]);
    expect(router.heldVotesNow).toBe(0);
  });

  it('a held vote past holdMs gets not_owner (the sender asks again; nothing waits forever)', async () => {
    const { router } = setUp({ holdMs: 30 });
    const answers: VoteOutcome[] = [];
    router.castForwarded({ t: 'cast', electionId, voterNumber: 1, candidateIndex: 0 }, (o) => answers.push(o));
    await expect.poll(() => answers.length, { timeout: 10_000 }).toBe(1);
    expect(answers[0]).toMatchObject({ kind: 'unavailable', reason: 'not_owner' });
    expect(router.heldVotesNow).toBe(0);
  });
});
