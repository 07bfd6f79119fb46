// The properties the simulated world must hold, each a few lines over what the world recorded
// (world.ts): the answers clients got (with the store as it was when each answer left), the rows
// in the store with their writers, the lease grants, and the results each process shows.
//
// A property returns the violations it finds (empty = holds). `afterStep` runs after every
// command of a run, `atEnd` once the world is quiet (every fault healed, nothing owed) and a
// fresh process has recovered every election from the store (`recovered`).
//
// To add one: write a `Property` below, add it to `allProperties`, and add a test in
// properties.test.ts that plants a bug it catches (TESTING.md).

import type { ShownShardTallies, World } from './world.ts';

export interface Property {
  readonly name: string;
  afterStep?(world: World): string[];
  atEnd?(world: World, recovered: readonly ShownShardTallies[]): string[];
}

function voter(electionId: string, voterNumber: number): string {
  return `${electionId}/voter ${voterNumber}`;
}

/** Invariant 2: an `accepted` vote was stored before the answer left, and is stored once. */
export const acknowledgedVotesStoredOnce: Property = {
  name: 'every acknowledged vote is stored exactly once',
  atEnd(world) {
    const violations: string[] = [];
    for (const { request, outcome, storedThen } of world.answers) {
      if (outcome.kind !== 'accepted') continue;
      const who = voter(request.electionId, request.voterNumber);
      const rows = world.store.rowsLog.filter((r) => r.electionId === request.electionId && r.voterNumber === request.voterNumber);
      if (storedThen === null) violations.push(`${who}: accepted (#${request.requestId}) before any vote was stored`);
      if (rows.length !== 1) violations.push(`${who}: accepted, ${rows.length} rows stored`);
      else if (rows[0]!.candidateIndex !== request.candidateIndex) violations.push(`${who}: accepted for candidate ${request.candidateIndex}, stored ${rows[0]!.candidateIndex}`);
    }
    return violations;
  },
};

/** Invariants 1 and 3 (safe half): at every step, no process counts more votes for a shard than are stored. */
export const noVoterCountedTwice: Property = {
  name: 'no voter counted twice',
  afterStep(world) {
    const violations: string[] = [];
    for (const shown of world.shownShardTallies()) {
      const stored = world.storedTallies(shown.electionId, shown.shard);
      shown.counts.forEach((count, c) => {
        if (count > stored[c]!) violations.push(`${shown.processId} counts ${count} votes for ${shown.electionId}/${shown.shard} candidate ${c}, ${stored[c]} stored`);
      });
    }
    const seen = new Set<string>();
    for (const row of world.store.rowsLog) {
      const key = voter(row.electionId, row.voterNumber);
      if (seen.has(key)) violations.push(`${key} stored twice`);
      seen.add(key);
    }
    return violations;
  },
};

/** Invariant 5: every answer naming a voteId names the stored one, whatever the retries. */
export const retriesGetTheOriginalVoteId: Property = {
  name: 'retries get the original voteId',
  atEnd(world) {
    const violations: string[] = [];
    for (const { request, outcome } of world.answers) {
      if (outcome.kind !== 'accepted' && outcome.kind !== 'already_voted') continue;
      const stored = world.store.readStoredVote(request.electionId, request.voterNumber);
      if (stored?.voteId !== outcome.voteId) violations.push(`${voter(request.electionId, request.voterNumber)}: ${outcome.kind} with ${outcome.voteId}, stored ${stored?.voteId ?? 'nothing'}`);
    }
    return violations;
  },
};

/**
 * Invariant 3 (live half): once quiet, every shard's owner, a fresh recovery from the store, and
 * (cluster mode) every node's whole-election results equal the stored votes.
 */
export const talliesConvergeToStoredVotes: Property = {
  name: 'tallies converge to the stored votes',
  atEnd(world, recovered) {
    const shards = [...world.shownShardTallies().filter((s) => s.owner), ...recovered]
      .filter((s) => s.counts.join() !== world.storedTallies(s.electionId, s.shard).join())
      .map((s) => `${s.processId} counts ${s.electionId}/${s.shard} [${s.counts}], stored [${world.storedTallies(s.electionId, s.shard)}]`);
    const elections = world
      .clusterResults()
      .filter((r) => r.tallies.join() !== world.storedTallies(r.electionId).join())
      .map((r) => `${r.processId} shows ${r.electionId} [${r.tallies}], stored [${world.storedTallies(r.electionId)}]`);
    return [...shards, ...elections];
  },
};

/** Invariant 4: one (shard, epoch) is granted to one process and written by one process. */
export const oneWriterPerShardEpoch: Property = {
  name: 'never two writers for one shard epoch',
  afterStep(world) {
    const holders = new Map<string, Set<string>>();
    const add = (key: string, processId: string) => (holders.get(key) ?? holders.set(key, new Set()).get(key)!).add(processId);
    for (const grant of world.leaseGrants) add(`${grant.key}@${grant.epoch}`, grant.processId);
    for (const write of world.rowWrites) add(`${write.row.electionId}/${write.row.shard}@${write.row.epoch}`, write.writerId);
    return [...holders].filter(([, ids]) => ids.size > 1).map(([key, ids]) => `${key} held or written by ${[...ids].join(' and ')}`);
  },
};

/** Invariant 4 seen by clients: a new vote is acknowledged only if it was stored under a lease still held. */
export const nothingAcknowledgedAfterLeaseLost: Property = {
  name: 'nothing acknowledged after the lease was lost',
  atEnd(world) {
    const violations: string[] = [];
    for (const { request, outcome } of world.answers) {
      if (outcome.kind !== 'accepted' || outcome.replayed) continue;
      const write = world.rowWrites.find((w) => w.row.voteId === outcome.voteId);
      if (write !== undefined && write.leaseEpochThen !== write.row.epoch) {
        violations.push(`${write.writerId} acknowledged ${voter(request.electionId, request.voterNumber)} stored under epoch ${write.row.epoch} while the lease was at ${write.leaseEpochThen}`);
      }
    }
    return violations;
  },
};

/** Liveness: every request to a process still running got exactly one answer; the world saw nothing odd. */
export const everyRequestAnswered: Property = {
  name: 'every request to a running process is answered once',
  atEnd(world) {
    const unanswered = world.requests.filter((r) => r.outcome === null && !r.lost).map((r) => `request #${r.requestId} to ${r.processId} never answered`);
    return [...unanswered, ...world.anomalies];
  },
};

/** Cluster: every operator's operation ends (done or failed), whatever died during it: none hangs. */
export const everyOperationEnds: Property = {
  name: 'every operation ends',
  atEnd: (world) => world.openOperations(),
};

export const allProperties: readonly Property[] = [
  acknowledgedVotesStoredOnce,
  noVoterCountedTwice,
  retriesGetTheOriginalVoteId,
  talliesConvergeToStoredVotes,
  oneWriterPerShardEpoch,
  nothingAcknowledgedAfterLeaseLost,
  everyRequestAnswered,
  everyOperationEnds,
];
