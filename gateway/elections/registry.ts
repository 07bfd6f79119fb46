// The elections this node knows, in memory: the vote path resolves an election and a candidate
// without touching the database. Mutations go through the database first, then land here and
// are announced to listeners (the vote node opens and closes shards on them).
import type { ElectionRecord } from '../../persistence/elections.ts';

export interface ElectionView extends ElectionRecord {
  readonly candidateIndexById: ReadonlyMap<string, number>;
}

export type ElectionListener = (election: ElectionView) => void;

export class ElectionRegistry {
  private readonly elections = new Map<string, ElectionView>();
  private readonly listeners: ElectionListener[] = [];

  get(electionId: string): ElectionView | undefined {
    return this.elections.get(electionId);
  }

  all(): ElectionView[] {
    return [...this.elections.values()];
  }

  /** Store the record as the current truth and tell listeners when it is new or changed status. */
  put(record: ElectionRecord): ElectionView {
    const previous = this.elections.get(record.electionId);
    const view: ElectionView = {
      ...record,
      candidateIndexById: new Map(record.candidates.map((c) => [c.candidateId, c.candidateIndex])),
    };
    this.elections.set(record.electionId, view);
    if (!previous || previous.status !== view.status) for (const listener of this.listeners) listener(view);
    return view;
  }

  onChange(listener: ElectionListener): void {
    this.listeners.push(listener);
  }
}
