// Whole-election results on every node: committed counts per shard from their owners, and the
// votes each owner holds in its spill queue (answered accepted, not counted yet), so a
// broadcaster can tell that the tally is still incomplete.
import { describe, expect, it } from 'vitest';
import type { ShardTallies } from '../actors/voteNode.ts';
import type { TalliesChanged } from './protocol.ts';
import { ClusterResults } from './results.ts';

const electionId = '0190a6d2-0000-7000-8000-0000000000c1';

function resultsWith(local: () => ShardTallies[], broadcast: (event: TalliesChanged) => void = () => {}): ClusterResults {
  return new ClusterResults({
    voteNode: { shardTallies: (id) => (id === electionId ? local() : []) },
    dimensions: (id) => (id === electionId ? { shardCount: 4, candidateCount: 2 } : undefined),
    electionIds: () => [electionId],
    broadcast,
  });
}

describe('cluster results: queued votes', () => {
  it('sums the queued votes of local shards (read now) and of peers (as published), apart from the counts', () => {
    let localQueued = 5;
    let mark = 1;
    const results = resultsWith(() => [{ shard: 0, epoch: 1, counts: [2, 1], queuedVotes: localQueued, changeMark: mark }]);
    results.applyTallies({ t: 'tallies', electionId, shard: 1, epoch: 3, version: 7, counts: [4, 0], queued: 3 });
    expect(results.results(electionId)).toMatchObject({ tallies: [6, 1], total: 7, queuedVotes: 8 });

    // The local shard drained: its votes move from queued to counted, and the version moves.
    const before = results.results(electionId)!.version;
    localQueued = 0;
    mark = 2;
    expect(results.results(electionId)).toMatchObject({ total: 7, queuedVotes: 3 });
    expect(results.results(electionId)!.version).toBeGreaterThan(before);

    // A newer owner of shard 1 (it drained the queue before serving) replaces the old figures;
    // an older publication changes nothing.
    results.applyTallies({ t: 'tallies', electionId, shard: 1, epoch: 4, version: 1, counts: [7, 0], queued: 0 });
    results.applyTallies({ t: 'tallies', electionId, shard: 1, epoch: 3, version: 8, counts: [4, 0], queued: 9 });
    expect(results.results(electionId)).toMatchObject({ tallies: [9, 1], total: 10, queuedVotes: 0 });

    // A node that predates the field publishes none: read as 0, never NaN.
    results.applyTallies({ t: 'tallies', electionId, shard: 2, epoch: 1, version: 1, counts: [1, 1] });
    expect(results.results(electionId)).toMatchObject({ total: 12, queuedVotes: 0 });
  });

  it('publishes a change of the queued count alone to the other nodes', () => {
    const sent: TalliesChanged[] = [];
    let queued = 0;
    let mark = 10;
    const results = resultsWith(() => [{ shard: 3, epoch: 2, counts: [0, 0], queuedVotes: queued, changeMark: mark }], (event) => sent.push(event));
    results.publishLocal(1_000);
    expect(sent.at(-1)).toMatchObject({ shard: 3, queued: 0 });
    queued = 40;
    mark = 11; // a vote entering the queue moves the shard's change mark (voteNode's changeMark)
    results.publishLocal(1_050);
    expect(sent.at(-1)).toMatchObject({ shard: 3, version: 11, queued: 40, counts: [0, 0] });
  });
});
