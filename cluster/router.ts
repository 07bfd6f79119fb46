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
// While a shard is between owners (a move, a drain, a failover) the answers above say "not
// stored, ask again" (not_owner, shard_moving, forward_failed, node_fenced, fenced). The router
// asks again itself, with the map of the moment, every few ms (2, 4, 8, 16, then every 20) for up to routeRetryMs: this is the
// hand-off's buffer, bounded (routeRetriesMax votes waiting; past it, the 503 goes to the client).
// Asking again is safe whatever the first attempt did: a vote is idempotent per voter (a stored
// one answers its original voteId), and these outcomes all left nothing uncounted half-way.
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
  /** Counted per vote: where it went and how it ended. */
  readonly onRouted?: (route: 'local' | 'forwarded' | 'received', outcome: VoteOutcome) => void;
}

/** Outcomes that mean "not stored here, ask the shard's owner again": retried inside the cluster. */
const retryableReasons: ReadonlySet<string> = new Set(['not_owner', 'shard_moving', 'forward_failed', 'node_fenced', 'fenced']);
const routeRetriesMaxDefault = 20_000;

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
  /** Votes asked again (one count per vote that waited), for /metrics. */
  retriedVotes = 0;

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
    const startedMs = performance.now();
    let attempt = 0;
    const onOutcome = (outcome: VoteOutcome): void => {
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
      attempt++;
      setTimeout(() => this.route(vote, onOutcome), Math.min(20, 2 ** attempt));
    };
    this.route(vote, onOutcome);
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
      // Ours by the map, not served yet (the old owner is still handing it over): ask again.
      if (!this.options.voteNode.isServing(vote.electionId, shard)) return this.done('local', this.notOwner, reply);
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
      if (this.ownerOf(message.electionId, shard) !== this.options.nodeId || !this.options.voteNode.isServing(message.electionId, shard)) {
        return this.done('received', this.notOwner, reply);
      }
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
