// The router: where a vote goes. Any node accepts any vote; the router sends it to the owner of
// its shard as the map says (Akka's ShardRegion forwarding to the region that hosts the shard):
//
//   owner is this node  ──► the local vote node (unless the self-fence is up: 503 node_fenced)
//   owner is a peer     ──► a `cast` request over the link; the owner's outcome comes back unchanged
//                           (`accepted` = durable on the owner); a link failure (timeout, peer
//                           gone) is unavailable(forward_failed): never a false accepted, and the
//                           retry, idempotent by voter, reaches whichever node owns the shard then
//   no live owner       ──► unavailable(not_owner) with Retry-After, until the coordinator assigns it
//
// A forwarded vote is never forwarded again: a node that receives a cast for a shard it does not
// serve answers not_owner, and the sender retries.
//
// While a shard is between owners (a move, a drain, a failover) two bounded buffers keep its votes:
//
//   - the node the map names as the new owner HOLDS the votes it gets for the shard (its own and
//     forwarded ones) while it takes the shard over (lease, recovery), up to holdMs and
//     heldVotesMax, and casts them the moment the shard is served (`shardsChanged`); a view that
//     gives the shard to another node sends its own held votes there (forwarded ones get not_owner);
//   - anywhere else, the answers that say "not stored, ask again" (not_owner, shard_moving,
//     forward_failed, node_fenced, fenced) are asked again by the router itself, with the map of
//     the moment: at once when a new view arrives or a shard starts being served here, else after
//     2, 4, 8, 16, then every 20 ms, for up to routeRetryMs (routeRetriesMax votes waiting; past
//     it, the 503 goes to the client).
//
// Holding and asking again are safe whatever the first attempt did: a vote is idempotent per voter
// (a stored one answers its original voteId), and these outcomes all left nothing uncounted half-way.
import type { VoteOutcome } from '../actors/shard.ts';
import type { CastRequest as CastVote, VoteNode } from '../actors/voteNode.ts';
import { isLinkFailure, type LinkFailure, type LinkPeer, type Links } from './links.ts';
import type { CastRequest, OutcomeAnswer } from './protocol.ts';
import type { ClusterView } from './ports.ts';

export interface RouterOptions {
  readonly nodeId: string;
  readonly voteNode: VoteNode;
  readonly links: Pick<Links, 'request'>;
  readonly shardCountOf: (electionId: string) => number | undefined;
  readonly canServe: () => boolean;
  readonly retryAfterMs: number;
  /** Keep asking again this long while the shard is between owners; 0 answers at once. */
  readonly routeRetryMs: number;
  /** Votes waiting to be asked again, at most (the hand-off buffer's bound). */
  readonly routeRetriesMax?: number;
  /**
   * How long the node the map names as a shard's owner holds a vote while it takes the shard over;
   * 0 answers not_owner at once. Keep it below the links' request timeout (a forwarded vote's sender
   * stops waiting then). Default routeRetryMs.
   */
  readonly holdMs?: number;
  /** Votes held at once, at most (past it: not_owner, and the sender asks again). */
  readonly heldVotesMax?: number;
  /** Counted per vote: where it went and how it ended. */
  readonly onRouted?: (route: 'local' | 'forwarded' | 'received', outcome: VoteOutcome) => void;
  /** A vote is asked again: the view this node routes by may be stale (read it again, throttled). */
  readonly onRetrying?: () => void;
}

/** Outcomes that mean "not stored here, ask the shard's owner again": retried inside the cluster. */
const retryableReasons: ReadonlySet<string> = new Set(['not_owner', 'shard_moving', 'forward_failed', 'node_fenced', 'fenced']);
const routeRetriesMaxDefault = 20_000;
const heldVotesMaxDefault = 20_000;
/** How often held votes are checked against their deadline. */
const holdSweepMs = 25;

/** A vote held by the shard's next owner until it serves the shard. */
interface HeldVote {
  readonly vote: CastVote;
  readonly reply: (outcome: VoteOutcome) => void;
  readonly route: 'local' | 'received';
  readonly deadlineMs: number;
}

/** A vote waiting to be asked again: its timer, and how to ask now instead. */
interface RetryWaiter {
  timer: NodeJS.Timeout | undefined;
  readonly now: () => void;
}

export class Router {
  private readonly options: RouterOptions;
  /** Owner node id per election, indexed by shard (no key string per vote). */
  private owners = new Map<string, (string | undefined)[]>();
  /** Elections found routable under the current view, with the shard count they were checked at. */
  private routable = new Map<string, number>();
  private peers = new Map<string, LinkPeer>();
  private readonly notOwner: VoteOutcome;
  private readonly forwardFailed: VoteOutcome;
  private readonly fenced: VoteOutcome;
  private retriesWaiting = 0;
  private readonly retryWaiters = new Set<RetryWaiter>();
  /** Held votes by shard key (holdMs, heldVotesMax). */
  private readonly held = new Map<string, { electionId: string; shard: number; votes: HeldVote[] }>();
  private heldNow = 0;
  private holdSweep: NodeJS.Timeout | undefined;
  /** Votes asked again (one count per vote that waited), for /metrics. */
  retriedVotes = 0;
  /** Votes held by this node while it took their shard over (one count per vote), for /metrics. */
  heldVotes = 0;

  constructor(options: RouterOptions) {
    this.options = options;
    this.notOwner = Object.freeze({ kind: 'unavailable', reason: 'not_owner', retryAfterMs: options.retryAfterMs });
    this.forwardFailed = Object.freeze({ kind: 'unavailable', reason: 'forward_failed', retryAfterMs: options.retryAfterMs });
    this.fenced = Object.freeze({ kind: 'unavailable', reason: 'node_fenced', retryAfterMs: options.retryAfterMs });
  }

  /** A new view: owners and live peers. */
  applyView(view: ClusterView): void {
    const owners = new Map<string, (string | undefined)[]>();
    for (const row of view.shards) {
      let byShard = owners.get(row.electionId);
      if (byShard === undefined) owners.set(row.electionId, (byShard = []));
      byShard[row.shard] = row.ownerNodeId;
    }
    const peers = new Map<string, LinkPeer>();
    for (const node of view.nodes) if (node.status === 'alive') peers.set(node.nodeId, { nodeId: node.nodeId, url: node.url });
    this.owners = owners;
    this.routable = new Map();
    this.peers = peers;
    this.settleHeld();
    this.wakeRetries();
  }

  /** Shards started or stopped being served here: cast the votes held for them, ask waiting ones again. */
  shardsChanged(): void {
    this.settleHeld();
    this.wakeRetries();
  }

  /** Votes held now while their shard is taken over here. */
  get heldVotesNow(): number {
    return this.heldNow;
  }

  ownerOf(electionId: string, shard: number): string | undefined {
    return this.owners.get(electionId)?.[shard];
  }

  /**
   * Every shard of the election has an owner in the map: votes can be routed. Asked on every
   * vote, so a yes is remembered until the next view (owners change only with a view).
   */
  isRoutable(electionId: string): boolean {
    const shardCount = this.options.shardCountOf(electionId);
    if (shardCount === undefined) return false;
    if (this.routable.get(electionId) === shardCount) return true;
    const byShard = this.owners.get(electionId);
    if (byShard === undefined) return false;
    for (let shard = 0; shard < shardCount; shard++) if (byShard[shard] === undefined) return false;
    this.routable.set(electionId, shardCount);
    return true;
  }

  /** Votes waiting now for their shard to settle. */
  get retriesWaitingNow(): number {
    return this.retriesWaiting;
  }

  /** A vote from this node's gateway. `reply` is called exactly once. */
  cast(vote: CastVote, reply: (outcome: VoteOutcome) => void): void {
    if (this.options.routeRetryMs <= 0) return this.route(vote, reply);
    this.attempt(vote, reply, performance.now(), 0);
  }

  /**
   * One try of a gateway's vote (attempt 0 is the first). A vote whose shard is served here, the
   * common case, costs one closure, which counts the route and settles the attempt: the retry
   * state (counters, timer, waiter) is made only for a vote that is asked again.
   */
  private attempt(vote: CastVote, reply: (outcome: VoteOutcome) => void, startedMs: number, attempt: number): void {
    if (this.servedHere(vote)) {
      this.options.voteNode.cast(vote, (outcome) => {
        this.options.onRouted?.('local', outcome);
        this.settleAttempt(vote, reply, startedMs, attempt, outcome);
      });
      return;
    }
    this.route(vote, (outcome) => this.settleAttempt(vote, reply, startedMs, attempt, outcome));
  }

  /** The attempt's outcome goes to the client, or the vote waits to be asked again (see the top of the file). */
  private settleAttempt(vote: CastVote, reply: (outcome: VoteOutcome) => void, startedMs: number, attempt: number, outcome: VoteOutcome): void {
    if (
      outcome.kind !== 'unavailable' ||
      !retryableReasons.has(outcome.reason) ||
      performance.now() - startedMs >= this.options.routeRetryMs ||
      (attempt === 0 && this.retriesWaiting >= (this.options.routeRetriesMax ?? routeRetriesMaxDefault))
    ) {
      if (attempt > 0) this.retriesWaiting--;
      return reply(outcome);
    }
    if (attempt === 0) {
      this.retriesWaiting++;
      this.retriedVotes++;
    }
    this.options.onRetrying?.();
    const waiter: RetryWaiter = {
      timer: undefined,
      now: () => {
        clearTimeout(waiter.timer);
        this.retryWaiters.delete(waiter);
        this.attempt(vote, reply, startedMs, attempt + 1);
      },
    };
    waiter.timer = setTimeout(waiter.now, Math.min(20, 2 ** (attempt + 1)));
    this.retryWaiters.add(waiter);
  }

  /** The vote's shard is this node's by the map, served here, and the node is not fenced: `route` would cast it here. */
  private servedHere(vote: CastVote): boolean {
    const shardCount = this.options.shardCountOf(vote.electionId);
    if (shardCount === undefined || !Number.isSafeInteger(vote.voterNumber) || vote.voterNumber < 0) return false;
    const shard = vote.voterNumber % shardCount;
    return this.ownerOf(vote.electionId, shard) === this.options.nodeId && this.options.voteNode.isServing(vote.electionId, shard) && this.options.canServe();
  }

  /** Something changed (a view, a shard served): every waiting vote asks again now, not at its timer. */
  private wakeRetries(): void {
    if (this.retryWaiters.size === 0) return;
    const waiters = [...this.retryWaiters];
    for (const waiter of waiters) waiter.now();
  }

  /** The shard is ours by the map and taken over now: keep the vote until it is served (bounded). */
  private hold(electionId: string, shard: number, vote: CastVote, reply: (outcome: VoteOutcome) => void, route: 'local' | 'received'): void {
    const holdMs = this.options.holdMs ?? this.options.routeRetryMs;
    if (holdMs <= 0 || this.heldNow >= (this.options.heldVotesMax ?? heldVotesMaxDefault)) return this.done(route, this.notOwner, reply);
    const key = `${electionId}/${shard}`;
    let entry = this.held.get(key);
    if (entry === undefined) this.held.set(key, (entry = { electionId, shard, votes: [] }));
    entry.votes.push({ vote, reply, route, deadlineMs: performance.now() + holdMs });
    this.heldNow++;
    this.heldVotes++;
    if (this.holdSweep === undefined) {
      this.holdSweep = setInterval(() => this.settleHeld(), holdSweepMs);
      this.holdSweep.unref();
    }
  }

  /**
   * Held votes whose shard is served here now are cast; those whose shard the map gave to another
   * node go there (ours) or back to their sender (forwarded: not_owner, it asks again); those past
   * their deadline get not_owner.
   */
  private settleHeld(): void {
    if (this.heldNow === 0) return;
    const nowMs = performance.now();
    for (const [key, entry] of [...this.held]) {
      const ours = this.ownerOf(entry.electionId, entry.shard) === this.options.nodeId;
      const served = ours && this.options.voteNode.isServing(entry.electionId, entry.shard);
      const keep: HeldVote[] = [];
      const go: HeldVote[] = [];
      for (const held of entry.votes) (ours && !served && held.deadlineMs > nowMs ? keep : go).push(held);
      if (go.length === 0) continue;
      if (keep.length === 0) this.held.delete(key);
      else entry.votes = keep;
      this.heldNow -= go.length;
      for (const held of go) {
        if (served) this.castHere(held.vote, held.reply, held.route);
        else if (!ours && held.route === 'local') this.route(held.vote, held.reply);
        else this.done(held.route, this.notOwner, held.reply);
      }
    }
    if (this.heldNow === 0 && this.holdSweep !== undefined) {
      clearInterval(this.holdSweep);
      this.holdSweep = undefined;
    }
  }

  private route(vote: CastVote, reply: (outcome: VoteOutcome) => void): void {
    const shardCount = this.options.shardCountOf(vote.electionId);
    if (shardCount === undefined || !Number.isSafeInteger(vote.voterNumber) || vote.voterNumber < 0) {
      // Not routable: the vote node gives the precise refusal (unknown election, bad voter).
      return this.castHere(vote, reply, 'local');
    }
    const shard = vote.voterNumber % shardCount;
    const owner = this.ownerOf(vote.electionId, shard);
    if (owner === this.options.nodeId) {
      // Ours by the map, not served yet (the old owner is still handing it over): hold it.
      if (!this.options.voteNode.isServing(vote.electionId, shard)) return this.hold(vote.electionId, shard, vote, reply, 'local');
      return this.castHere(vote, reply, 'local');
    }
    const peer = owner === undefined ? undefined : this.peers.get(owner);
    if (peer === undefined) return this.done('forwarded', this.notOwner, reply);
    const message: CastRequest = { t: 'cast', electionId: vote.electionId, voterNumber: vote.voterNumber, candidateIndex: vote.candidateIndex };
    this.options.links.request(peer, message, (answer: OutcomeAnswer | LinkFailure) => {
      this.done('forwarded', isLinkFailure(answer) ? this.forwardFailed : answer.outcome, reply);
    });
  }

  /** A vote forwarded by a peer: served here or refused, never forwarded again. */
  castForwarded(message: CastRequest, reply: (outcome: VoteOutcome) => void): void {
    const shardCount = this.options.shardCountOf(message.electionId);
    if (shardCount !== undefined) {
      const shard = message.voterNumber % shardCount;
      if (this.ownerOf(message.electionId, shard) !== this.options.nodeId) return this.done('received', this.notOwner, reply);
      if (!this.options.voteNode.isServing(message.electionId, shard)) return this.hold(message.electionId, shard, message, reply, 'received');
    }
    this.castHere(message, reply, 'received');
  }

  private castHere(vote: CastVote, reply: (outcome: VoteOutcome) => void, route: 'local' | 'received'): void {
    if (!this.options.canServe()) return this.done(route, this.fenced, reply);
    this.options.voteNode.cast(vote, (outcome) => this.done(route, outcome, reply));
  }

  private done(route: 'local' | 'forwarded' | 'received', outcome: VoteOutcome, reply: (outcome: VoteOutcome) => void): void {
    this.options.onRouted?.(route, outcome);
    reply(outcome);
  }
}
