// The file spill queue in a cluster. A file queue lives on one node's disk: only that node can
// drain it. With other nodes alive, a node that dies with votes in its file queue leaves them
// where nobody else can read them, while its shards are served by others (who may accept a
// second vote from a voter whose first one is queued). So, unless the operator says otherwise
// (LIVEVOTE_SPILL_FILE_IN_CLUSTER=allow):
// - a node with a file queue refuses to START when other members are alive (caught at deploy
//   time, with a message that names the variables), and
// - a node already running with a file queue STOPS SPILLING while a peer is alive (a peer that
//   joined later, with SQS or spilling off): a batch Postgres does not store in time is then
//   answered 503 at the deadline, as with LIVEVOTE_SPILL_QUEUE=off, never `accepted` into a place
//   the peers cannot reach. What is already queued is still drained by this node.
// With `allow`, queued votes of a dead node wait until it runs again and serves their shards
// (`livevote cluster move` brings a shard back); meant for clusters on one machine (the launcher,
// benchmarks) where a node is restarted with its id.
import type { SpillQueue } from '../actors/ports.ts';
import type { ClusterView } from './ports.ts';

export interface SpillGuardOptions {
  readonly nodeId: string;
  readonly queueKind: 'file' | 'sqs' | 'off';
  readonly fileInCluster: 'refuse' | 'allow';
  /** A member whose last stored heartbeat is older than this is not counted as alive. */
  readonly deadAfterMs: number;
}

export class FileSpillQueueInClusterError extends Error {
  constructor(readonly nodeId: string, readonly peers: readonly string[]) {
    super(
      `node ${nodeId} refuses to start: LIVEVOTE_SPILL_QUEUE=file keeps spilled votes on this node's disk, and other ` +
        `members of its cluster are alive (${peers.join(', ')}). If this node died with votes in that queue, the nodes ` +
        'taking its shards over could not drain them, and would serve its voters without them. Use ' +
        'LIVEVOTE_SPILL_QUEUE=sqs (one queue every node drains) or off (503 at the deadline instead of spilling), or set ' +
        'LIVEVOTE_SPILL_FILE_IN_CLUSTER=allow to accept that a dead node\'s queued votes wait until it serves their shards again.',
    );
    this.name = 'FileSpillQueueInClusterError';
  }
}

/** Other members alive in `view` (status alive and a heartbeat within deadAfterMs of its read). */
export function livePeerIds(view: ClusterView, nodeId: string, deadAfterMs: number): string[] {
  return view.nodes
    .filter((n) => n.nodeId !== nodeId && n.status === 'alive' && view.readAtMs - n.lastHeartbeatAtMs < deadAfterMs)
    .map((n) => n.nodeId);
}

export class SpillGuard {
  private readonly options: SpillGuardOptions;
  private pausedFor: readonly string[] = [];
  /** Logged once per change, not per refused batch. */
  onPausedChange: ((paused: boolean, peers: readonly string[]) => void) | undefined;

  constructor(options: SpillGuardOptions) {
    this.options = options;
  }

  /** Whether the rule applies at all: a file queue without the override. */
  get active(): boolean {
    return this.options.queueKind === 'file' && this.options.fileInCluster === 'refuse';
  }

  /** True while spilling is refused because peers are alive. */
  get paused(): boolean {
    return this.pausedFor.length > 0;
  }

  /** Before joining: throws FileSpillQueueInClusterError when the rule applies and peers are alive. */
  checkBeforeJoin(view: ClusterView): void {
    if (!this.active) return;
    const peers = livePeerIds(view, this.options.nodeId, this.options.deadAfterMs);
    if (peers.length > 0) throw new FileSpillQueueInClusterError(this.options.nodeId, peers);
  }

  /** Every view while running: pauses spilling while peers are alive, resumes when alone. */
  applyView(view: ClusterView): void {
    if (!this.active) return;
    const peers = livePeerIds(view, this.options.nodeId, this.options.deadAfterMs);
    const wasPaused = this.paused;
    this.pausedFor = peers;
    if (wasPaused !== this.paused) this.onPausedChange?.(this.paused, peers);
  }

  /** The queue as the vote node sees it: sends refused while paused, everything else as is. */
  wrap(queue: SpillQueue): SpillQueue {
    return {
      send: async (batch) => {
        if (this.paused) {
          throw new Error(`spilling paused: the file queue is this node's alone and peers are alive (${this.pausedFor.join(', ')})`);
        }
        return queue.send(batch);
      },
      receive: (max, leaseMs) => queue.receive(max, leaseMs),
      ack: (receipt) => queue.ack(receipt),
      release: (receipt) => queue.release(receipt),
      deadLetter: (receipt, reason) => queue.deadLetter(receipt, reason),
      depth: () => queue.depth(),
      deadLetterCount: () => queue.deadLetterCount(),
      close: () => queue.close(),
    };
  }
}
