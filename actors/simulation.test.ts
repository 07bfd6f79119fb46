// Runs the deterministic simulation (simulation.ts) over many seeds and fails with the seeds
// whose runs broke an invariant. 250 fixed seeds, 250 fresh ones per run (their base is
// printed; set LIVEVOTE_SIM_SEED_BASE to replay a run), and every seed in
// simulation.seeds.json. A failing seed goes into that file, forever.
import { readFileSync } from 'node:fs';
import { describe, expect, it } from 'vitest';
import { runSimulation, type SimulationResult } from './simulation.ts';

const seedsFile = JSON.parse(readFileSync(new URL('./simulation.seeds.json', import.meta.url), 'utf8')) as {
  seeds: { seed: number; caught: string }[];
};

function failures(seeds: readonly number[]): string[] {
  const failed: SimulationResult[] = [];
  for (const seed of seeds) {
    const result = runSimulation({ seed });
    if (result.violations.length > 0) failed.push(result);
  }
  return failed.map((r) => `seed ${r.seed} (add it to actors/simulation.seeds.json):\n  ${r.violations.slice(0, 5).join('\n  ')}`);
}

describe('deterministic simulation of a vote node', () => {
  it('holds the invariants for the seeds that once failed', () => {
    expect(failures(seedsFile.seeds.map((s) => s.seed))).toEqual([]);
  });

  it('holds the invariants for 250 fixed seeds', () => {
    expect(failures(Array.from({ length: 250 }, (_, i) => i + 1))).toEqual([]);
  });

  it('holds the invariants for 250 fresh seeds', () => {
    const base = Number(process.env.LIVEVOTE_SIM_SEED_BASE ?? Math.floor(Math.random() * 2 ** 31));
    const seeds = Array.from({ length: 250 }, (_, i) => (base + i * 7919) >>> 0);
    const failed = failures(seeds);
    expect(failed, `LIVEVOTE_SIM_SEED_BASE=${base}`).toEqual([]);
  });

  it('is deterministic: a seed replays exactly', () => {
    expect(runSimulation({ seed: 4242 })).toEqual(runSimulation({ seed: 4242 }));
  });

  it('exercises the faults it claims to (coverage over the fixed seeds)', () => {
    const totals = { crashes: 0, leaseTakeovers: 0, commitsFailed: 0, batchesInDoubt: 0, rowsAbandoned: 0, accepted: 0, replayed: 0 };
    const kinds = new Set<string>();
    for (let seed = 1; seed <= 100; seed++) {
      const { summary } = runSimulation({ seed });
      totals.crashes += summary.crashes;
      totals.leaseTakeovers += summary.leaseTakeovers;
      totals.commitsFailed += summary.commitsFailed;
      totals.batchesInDoubt += summary.batchesInDoubt;
      totals.rowsAbandoned += summary.rowsAbandoned;
      for (const kind of Object.keys(summary.replies)) kinds.add(kind);
    }
    expect(totals.crashes).toBeGreaterThan(20);
    expect(totals.leaseTakeovers).toBeGreaterThan(20);
    expect(totals.commitsFailed).toBeGreaterThan(50);
    expect(totals.batchesInDoubt).toBeGreaterThan(20);
    expect(totals.rowsAbandoned).toBeGreaterThan(20);
    for (const kind of ['accepted', 'already_voted', 'overloaded', 'election_closed', 'unavailable:in_doubt', 'unavailable:fenced', 'unavailable:lookup_failed']) {
      expect(kinds, kind).toContain(kind);
    }
  });
});

describe('the simulation checker can fail', () => {
  it('catches a journal that reports committed without storing', () => {
    const result = runSimulation({ seed: 1, brokenJournal: 'commit_without_store' });
    expect(result.violations.join('\n')).toMatch(/no vote is stored|only \d+ stored/);
  });

  it('catches a journal that ignores fencing', () => {
    const caught = Array.from({ length: 30 }, (_, i) => runSimulation({ seed: i + 1, brokenJournal: 'ignore_fencing' })).filter((r) =>
      r.violations.some((v) => /stored with epoch \d+, the lease's epoch was/.test(v)),
    );
    expect(caught.length).toBeGreaterThan(0);
  });
});
