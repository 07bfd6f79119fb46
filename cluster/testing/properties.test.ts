// Exactly-once, property-tested over the real vote node code (see TESTING.md).
//
// - Every property of properties.ts over generated worlds: LIVEVOTE_PROPERTY_RUNS cases (CI
//   default below), plus every counterexample kept in regressions.json, replayed from its seed
//   and path.
// - For each property, a planted bug it must catch: a mutation of the world's adapters switched
//   on only in that test.
import { readFileSync } from 'node:fs';
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { PagedBitmap } from '../../actors/bitmap.ts';
import { recordCase, runRecordedCase, runWorldCase, worldCaseArbitrary, type PropertyViolation, type RecordedCase, type WorldCase, type WorldShapeOptions } from './commands.ts';
import {
  acknowledgedVotesStoredOnce,
  allProperties,
  everyOperationEnds,
  everyRequestAnswered,
  noVoterCountedTwice,
  nothingAcknowledgedAfterLeaseLost,
  oneWriterPerShardEpoch,
  retriesGetTheOriginalVoteId,
  talliesConvergeToStoredVotes,
  type Property,
} from './properties.ts';
import type { PlantedBug } from './world.ts';

/** Cases per run of `npm test` (CI), shared between the worlds below. */
const runs = Number(process.env.LIVEVOTE_PROPERTY_RUNS ?? 1000);
const seedFromEnv = process.env.LIVEVOTE_PROPERTY_SEED === undefined ? undefined : Number(process.env.LIVEVOTE_PROPERTY_SEED);
const pathFromEnv = process.env.LIVEVOTE_PROPERTY_PATH || undefined;
const replayPathFromEnv = process.env.LIVEVOTE_PROPERTY_REPLAY_PATH || undefined;

interface WorldShape {
  readonly world: string;
  readonly mode?: 'elections' | 'cluster';
  readonly nodeCountMax: number;
  readonly commandsMax: number;
}

interface KeptCase extends RecordedCase {
  readonly caught: string;
}

interface SoakSeed extends WorldShape {
  readonly seed: number;
  readonly caught: string;
}

const kept = JSON.parse(readFileSync(new URL('./regressions.json', import.meta.url), 'utf8')) as { cases: KeptCase[]; soakSeeds: SoakSeed[] };

const worlds: (WorldShape & { readonly share: number })[] = [
  { world: 'one process', nodeCountMax: 1, commandsMax: 40, share: 0.5 },
  { world: 'several processes', nodeCountMax: 3, commandsMax: 40, share: 0.35 },
  // A cluster case costs about five of the others (heartbeats, leases, forwards): fewer, shorter.
  { world: 'cluster', mode: 'cluster', nodeCountMax: 3, commandsMax: 30, share: 0.15 },
];

function property(options: WorldShapeOptions & { commandsMax: number; replayPath?: string }, properties: readonly Property[]) {
  return fc.asyncProperty(worldCaseArbitrary(options), (worldCase) => runWorldCase(worldCase, properties));
}

/** fc.check over every property; on failure: the report, the run's trace, how to replay it and how to keep it. */
async function assertWorlds(shape: WorldShape, parameters: fc.Parameters<[WorldCase]>, replayPath?: string): Promise<void> {
  const details = await fc.check(property({ ...shape, replayPath }, allProperties), parameters);
  if (!details.failed) return;
  const counterexample = details.counterexample?.[0];
  const keep: KeptCase | null = counterexample === undefined ? null : { caught: 'what it caught', ...recordCase(counterexample) };
  const commandsReplayPath = /replayPath="([^"]*)"/.exec(String(counterexample?.commands))?.[1] ?? '';
  throw new Error(
    `${fc.defaultReportMessage(details)}\n\n${String(details.errorInstance)}\n\n` +
      `Replay: npm run test:properties -- --world '${shape.world}' --seed=${details.seed} --path='${details.counterexamplePath}' --replay-path='${commandsReplayPath}'\n` +
      `Keep it (replayed on every run): add to "cases" in cluster/testing/regressions.json:\n${JSON.stringify(keep)}`,
  );
}

// Generous: only a hang should hit it (the machine may be busy); a big local run scales it.
const timeoutMs = 180_000 + runs * 200;

describe.each(worlds)('exactly-once over the real vote node: $world', (shape) => {
  const numRuns = Math.max(1, Math.round(runs * shape.share));
  it(`holds every property (${numRuns} generated cases)`, async () => {
    await assertWorlds(shape, { numRuns, seed: seedFromEnv, path: pathFromEnv, endOnFailure: pathFromEnv !== undefined }, replayPathFromEnv);
  }, timeoutMs);
});

describe('counterexamples kept in regressions.json', () => {
  it.each(kept.cases.map((c) => [c.caught, c] as const))('replays: %s', async (_caught, keptCase) => {
    await runRecordedCase(keptCase, allProperties);
  });
  it.each(kept.soakSeeds.map((s) => [s.seed, s] as const))('soak seed %s: the first case of the seed, long', async (_seed, soak) => {
    await assertWorlds(soak, { seed: soak.seed, numRuns: 1 });
  }, timeoutMs);
});

/**
 * A planted bug: either a mutation of the world's adapters (`plantedBug`, see world.ts), or a
 * mutation of the real node code patched in for the duration of one test (`patch` returns the
 * undo). Neither exists outside these tests.
 */
interface PlantedBugCase {
  readonly bug: string;
  readonly caughtBy: Property;
  readonly plantedBug?: PlantedBug;
  readonly patch?: () => () => void;
  /** The world it is planted in (default: several processes, elections mode). */
  readonly mode?: 'elections' | 'cluster';
  /** A written scenario instead of generated cases, for a bug generated cases reach too rarely for CI. */
  readonly scenario?: RecordedCase;
}

const scenarios = JSON.parse(readFileSync(new URL('./scenarios.json', import.meta.url), 'utf8')) as Record<'snapshotWhileInDoubt' | 'isolatedOwner' | 'everyNodeDrained' | 'replicationGapHidden', RecordedCase>;

/** Replay forgets that a voter's bit was already set: a stored vote restored from a snapshot is counted again. */
function replayForgetsSetBits(): () => void {
  const original = PagedBitmap.prototype.set;
  PagedBitmap.prototype.set = function set(this: PagedBitmap, slot: number): boolean {
    original.call(this, slot);
    return true;
  };
  return () => {
    PagedBitmap.prototype.set = original;
  };
}

const plantedBugCases: PlantedBugCase[] = [
  { bug: 'the journal answers committed and stores nothing', caughtBy: acknowledgedVotesStoredOnce, plantedBug: 'journalAcksWithoutStoring' },
  // Generated cases reach this now and then (a snapshot whose watermark sits below a committed vote): a written scenario.
  { bug: 'the bitmap says every bit was clear before (real code, patched)', caughtBy: noVoterCountedTwice, patch: replayForgetsSetBits, scenario: scenarios.snapshotWhileInDoubt },
  { bug: 'the stored-vote lookup answers another voteId', caughtBy: retriesGetTheOriginalVoteId, plantedBug: 'lookupAnswersAnotherVoteId' },
  { bug: 'recovery reads every stored vote but the first', caughtBy: talliesConvergeToStoredVotes, plantedBug: 'replaySkipsFirstRow' },
  { bug: 'a new owner gets the old owner\'s epochs', caughtBy: oneWriterPerShardEpoch, plantedBug: 'leaseGrantReusesEpoch' },
  { bug: 'the journal does not fence stale epochs', caughtBy: nothingAcknowledgedAfterLeaseLost, plantedBug: 'journalIgnoresFencing' },
  { bug: 'the snapshot reader loses the bitmap', caughtBy: everyRequestAnswered, plantedBug: 'snapshotReadLosesBitmap' },
  { bug: 'cluster: owners\' counts never reach the other nodes', caughtBy: talliesConvergeToStoredVotes, plantedBug: 'tallyEventsLost', mode: 'cluster' },
  { bug: 'cluster: a lease taken over keeps its epoch', caughtBy: oneWriterPerShardEpoch, plantedBug: 'leaseGrantReusesEpoch', mode: 'cluster' },
  // Generated cases end an operation failed now and then, not in every 500: a written scenario (a drain with nowhere to go, kept in regressions.json).
  { bug: 'cluster: an operation\'s end as failed is never stored', caughtBy: everyOperationEnds, plantedBug: 'operationFailuresLost', mode: 'cluster', scenario: scenarios.everyNodeDrained },
  // Generated cluster cases reach this about once in 300 (a promotion after two streamed batches): a
  // written scenario, seed 7's case (its 217th), shrunk; that recording replays faithfully (below).
  { bug: 'cluster: replication loses batches and hides the gaps (a promoted replica misses votes)', caughtBy: talliesConvergeToStoredVotes, plantedBug: 'replicationHidesGaps', mode: 'cluster', scenario: scenarios.replicationGapHidden },
  // Generated cluster cases reach this about once in 1,000: a written scenario (also kept in regressions.json without the bug).
  { bug: 'cluster: the journal does not fence stale epochs', caughtBy: nothingAcknowledgedAfterLeaseLost, plantedBug: 'journalIgnoresFencing', mode: 'cluster', scenario: scenarios.isolatedOwner },
];

// Detection is the point here, so no shrinking (endOnFailure): the first failing case suffices.
describe('each property catches a bug planted for it', () => {
  it.each(plantedBugCases.map((c) => [c.caughtBy.name, c.bug, c] as const))('%s: catches "%s"', async (_name, _bug, { caughtBy, plantedBug, patch, mode, scenario }) => {
    const undo = patch?.();
    try {
      if (scenario !== undefined) {
        await expect(runRecordedCase({ ...scenario, config: { ...scenario.config, plantedBug } }, [caughtBy])).rejects.toThrow(`[${caughtBy.name}]`);
        return;
      }
      const details = await fc.check(property({ nodeCountMax: mode === 'cluster' ? 3 : 2, mode, commandsMax: 40, plantedBug }, [caughtBy]), { numRuns: 500, seed: seedFromEnv, endOnFailure: true });
      expect(details.failed, `not caught in ${details.numRuns} cases`).toBe(true);
      expect(String(details.errorInstance)).toContain(`[${caughtBy.name}]`);
    } finally {
      undo?.();
    }
  });
});

// A kept case is only worth keeping if its replay is the run it was recorded from: a generated
// failing case, recorded as data and replayed, fails the same way after the same events.
describe('a recorded case replays the run it was recorded from', () => {
  it('seed 7\'s first failing cluster case under replication\'s planted bug (its 217th)', async () => {
    let generatedTrace: readonly string[] = [];
    const details = await fc.check(
      fc.asyncProperty(worldCaseArbitrary({ nodeCountMax: 3, mode: 'cluster', commandsMax: 40, plantedBug: 'replicationHidesGaps' }), (worldCase) =>
        runWorldCase(worldCase, [talliesConvergeToStoredVotes], { onTrace: (trace) => (generatedTrace = trace) }),
      ),
      { numRuns: 500, seed: 7, endOnFailure: true },
    );
    expect(details.failed, `not caught in ${details.numRuns} cases`).toBe(true);
    let replayedTrace: readonly string[] = [];
    const replay = runRecordedCase(recordCase(details.counterexample![0]), [talliesConvergeToStoredVotes], { onTrace: (trace) => (replayedTrace = trace) });
    await expect(replay).rejects.toThrow((details.errorInstance as PropertyViolation).violations.join('\n'));
    expect(replayedTrace).toEqual(generatedTrace);
  }, timeoutMs);
});
