// The elections this node knows, in memory: the vote path resolves an election and a candidate
// without touching the database. Mutations go through the database first, then land here and
// are announced to listeners (the vote node opens and closes shards on them); `publish` waits
// for the listeners, so "opened" is answered only once the shards can take votes.
import type { ElectionRecord } from '../../persistence/elections.ts';

export interface ElectionView extends ElectionRecord {
  readonly candidateIndexById: ReadonlyMap<string, number>;
}

export type ElectionListener = (election: ElectionView, previousStatus: ElectionView['status'] | undefined) => void | Promise<void>;

export class ElectionRegistry {
  private readonly elections = new Map<string, ElectionView>();
  private readonly listeners: ElectionListener[] = [];

  get(electionId: string): ElectionView | undefined {
    return this.elections.get(electionId);
  }

  all(): ElectionView[] {
    return [...this.elections.values()];
  }

  /** Store the record as the current truth; when it is new or changed status, wait for the listeners. */
  async publish(record: ElectionRecord): Promise<ElectionView> {
    const previous = this.elections.get(record.electionId);
    const view: ElectionView = {
      ...record,
      candidateIndexById: new Map(record.candidates.map((c) => [c.candidateId, c.candidateIndex])),
    };
    this.elections.set(record.electionId, view);
    if (!previous || previous.status !== view.status) {
      for (const listener of this.listeners) await listener(view, previous?.status);
    }
    return view;
  }

  onChange(listener: ElectionListener): void {
    this.listeners.push(listener);
  }
}
