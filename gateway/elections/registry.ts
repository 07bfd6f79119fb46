// The elections this node knows, in memory: the vote path resolves an election and a candidate
// without touching the database. Mutations go through the database first, then land here and
// are announced to listeners (the vote node opens and closes shards on them); `publish` waits
// for the listeners, so "opened" is answered only once the shards can take votes.
//
// Two writers publish here: this node's admin routes (a change they just stored) and reads of the
// whole table (at start, and when the cluster's view says an election changed somewhere). A read
// can have been taken before a change this node stored and land after it: a status never goes
// back (draft → open → closed), so a record behind the one held is a stale read and is ignored.
import type { ElectionRecord } from '../../persistence/elections.ts';

export interface ElectionView extends ElectionRecord {
  readonly candidateIndexById: ReadonlyMap<string, number>;
}

/**
 * Where a published record comes from: `this_node`, a change this node's route stored (its answer
 * waits for the listeners); `store`, a read of the elections table (start, or another node's change).
 */
export type ElectionOrigin = 'this_node' | 'store';

export type ElectionListener = (
  election: ElectionView, previousStatus: ElectionView['status'] | undefined, origin: ElectionOrigin,
) => void | Promise<void>;

/** The order statuses move in; a record that would move one back is older than the one held. */
const statusRank: Readonly<Record<ElectionRecord['status'], number>> = { draft: 0, open: 1, closed: 2 };

export class ElectionRegistry {
  private readonly elections = new Map<string, ElectionView>();
  private readonly listeners: ElectionListener[] = [];

  get(electionId: string): ElectionView | undefined {
    return this.elections.get(electionId);
  }

  all(): ElectionView[] {
    return [...this.elections.values()];
  }

  /**
   * Store the record as the current truth, unless it is behind the one held (then the held one is
   * returned, unchanged); when it is new or changed status, wait for the listeners.
   */
  async publish(record: ElectionRecord, origin: ElectionOrigin = 'this_node'): Promise<ElectionView> {
    const previous = this.elections.get(record.electionId);
    if (previous !== undefined && statusRank[record.status] < statusRank[previous.status]) return previous;
    const view: ElectionView = {
      ...record,
      candidateIndexById: new Map(record.candidates.map((c) => [c.candidateId, c.candidateIndex])),
    };
    this.elections.set(record.electionId, view);
    if (!previous || previous.status !== view.status) {
      for (const listener of this.listeners) await listener(view, previous?.status, origin);
    }
    return view;
  }

  onChange(listener: ElectionListener): void {
    this.listeners.push(listener);
  }
}
