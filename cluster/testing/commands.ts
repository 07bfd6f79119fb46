// fast-check commands over the simulated world: client actions and faults, each a small class
// with `check` (may it run now), `run` (do it) and `toString` (how it prints in a counterexample).
// Arguments are indices resolved against the world when the command runs (modulo what exists),
// so a shrunk command list still means something.
//
// `worldCase` is the arbitrary of one whole case: the world's shape and node configuration, the
// commands, and the scheduler that orders async completions. `runWorldCase` runs it and checks
// the properties; it throws with the trace of the run when one fails.

import fc from 'fast-check';
import type { VoteNodeConfig } from '../../actors/voteNode.ts';
import type { Property } from './properties.ts';
import { asyncWorkOf, World, type AsyncWork, type ClusterTimings, type ElectionSpec, type InjectedFault, type PlantedBug, type SimElection, type WorldConfig } from './world.ts';

/** What the commands need to know before running; the world itself is the "real" system. */
export interface Model {
  elections: number;
  zombies: number;
  readonly nodeCount: number;
}

/** A command as data: its class name and constructor arguments (regressions.json keeps these). */
export type CommandData = readonly [string, ...(number | string | boolean)[]];

export interface WorldCommand extends fc.AsyncCommand<Model, World> {
  toJSON(): CommandData;
}

function electionAt(world: World, index: number): SimElection {
  return world.elections[index % world.elections.length]!;
}

export const votersPerElection = 6;

/** A vote; cluster mode: sent to the `entry`-th node, which routes it to the owner. */
class Vote implements WorldCommand {
  constructor(
    readonly election: number,
    readonly voter: number,
    readonly candidate: number,
    readonly stale: boolean,
    readonly entry = 0,
  ) {}
  check = () => true;
  async run(_model: Model, world: World) {
    const election = electionAt(world, this.election);
    world.vote(election, this.voter, this.candidate % election.candidateCount, this.stale ? 'stale' : 'owner', this.entry);
    await world.settle();
  }
  toString = () => `Vote(e${this.election} voter ${this.voter} → ${this.candidate}${this.entry > 0 ? ` via node ${this.entry}` : ''}${this.stale ? ', stale route' : ''})`;
  toJSON = (): CommandData => ['Vote', this.election, this.voter, this.candidate, this.stale, this.entry];
}

/** The same request again, to the election's current owner (a client that saw no answer, or an impatient one). */
class Retry implements WorldCommand {
  constructor(readonly request: number) {}
  check = () => true;
  async run(_model: Model, world: World) {
    if (world.requests.length === 0) return;
    const earlier = world.requests[this.request % world.requests.length]!;
    const election = world.elections.find((e) => e.electionId === earlier.electionId)!;
    world.vote(election, earlier.voterNumber, earlier.candidateIndex, 'owner', this.request);
    await world.settle();
  }
  toString = () => `Retry(request ${this.request})`;
  toJSON = (): CommandData => ['Retry', this.request];
}

class Deliver implements WorldCommand {
  constructor(readonly count: number) {}
  check = () => true;
  async run(_model: Model, world: World) {
    await world.deliver(this.count);
  }
  toString = () => `Deliver(${this.count})`;
  toJSON = (): CommandData => ['Deliver', this.count];
}

class Tick implements WorldCommand {
  constructor(readonly ms: number) {}
  check = () => true;
  async run(_model: Model, world: World) {
    await world.tick(this.ms);
  }
  toString = () => `Tick(${this.ms}ms)`;
  toJSON = (): CommandData => ['Tick', this.ms];
}

class Fault implements WorldCommand {
  constructor(readonly fault: InjectedFault) {}
  check = () => true;
  async run(_model: Model, world: World) {
    world.injectFault(this.fault);
  }
  toString = () => `Fault(${this.fault})`;
  toJSON = (): CommandData => ['Fault', this.fault];
}

class StallJournal implements WorldCommand {
  check = () => true;
  async run(_model: Model, world: World) {
    world.stallJournal();
  }
  toString = () => 'StallJournal';
  toJSON = (): CommandData => ['StallJournal'];
}

class Heal implements WorldCommand {
  check = () => true;
  async run(_model: Model, world: World) {
    world.heal();
    await world.settle();
  }
  toString = () => 'Heal';
  toJSON = (): CommandData => ['Heal'];
}

/**
 * kill -9: the process is gone. Elections mode: a fresh one takes its slot, its elections move
 * under new epochs. Cluster mode: declared dead, its shards go to the survivors; a new process
 * with the same node id joins later.
 */
class Kill implements WorldCommand {
  constructor(readonly slot: number) {}
  check = () => true;
  async run(model: Model, world: World) {
    world.replace(this.slot % model.nodeCount, 'kill');
    await world.settle();
  }
  toString = () => `Kill(n${this.slot})`;
  toJSON = (): CommandData => ['Kill', this.slot];
}

/**
 * Elections mode: a long pause, the process's leases go to another owner while it still runs (a
 * zombie). Cluster mode: the process is cut off from the store and the other nodes until healed
 * (it fences itself, is declared dead, its shards move to the survivors).
 */
class LoseLeases implements WorldCommand {
  constructor(readonly slot: number) {}
  check = (model: Readonly<Model>) => model.zombies < 2;
  async run(model: Model, world: World) {
    model.zombies++;
    world.replace(this.slot % model.nodeCount, 'pause');
    await world.settle();
  }
  toString = () => `LoseLeases(n${this.slot})`;
  toJSON = (): CommandData => ['LoseLeases', this.slot];
}

class OpenElection implements WorldCommand {
  constructor(readonly spec: ElectionSpec) {}
  check = (model: Readonly<Model>) => model.elections < 3;
  async run(model: Model, world: World) {
    model.elections++;
    world.openElection(this.spec);
    await world.settle();
  }
  toString = () => `OpenElection(${this.spec.shardCount} shards, ${this.spec.candidateCount} candidates)`;
  toJSON = (): CommandData => ['OpenElection', this.spec.shardCount, this.spec.candidateCount];
}

/** Cluster mode: an operator moves a shard, drains or undrains a node, or balances (no-op in elections mode). */
class Operate implements WorldCommand {
  constructor(
    readonly kind: 'move' | 'drain' | 'undrain' | 'balance',
    readonly election: number,
    readonly shard: number,
    readonly node: number,
  ) {}
  check = () => true;
  async run(_model: Model, world: World) {
    await world.operate(this.kind, this.election, this.shard, this.node);
    await world.settle();
  }
  toString = () => (this.kind === 'move' ? `Move(e${this.election}/${this.shard} → n${this.node})` : this.kind === 'drain' ? `Drain(n${this.node})` : this.kind === 'undrain' ? `Undrain(n${this.node})` : 'Balance');
  toJSON = (): CommandData => ['Operate', this.kind, this.election, this.shard, this.node];
}

/** Cluster mode: a move, and the moment the map names the new owner, a kill of its target or of the old owner. */
class MoveThenKill implements WorldCommand {
  constructor(
    readonly election: number,
    readonly shard: number,
    readonly node: number,
    readonly victim: 'target' | 'owner',
  ) {}
  check = () => true;
  async run(_model: Model, world: World) {
    await world.moveThenKill(this.election, this.shard, this.node, this.victim);
    await world.settle();
  }
  toString = () => `MoveThenKill(e${this.election}/${this.shard} → n${this.node}, kill the ${this.victim})`;
  toJSON = (): CommandData => ['MoveThenKill', this.election, this.shard, this.node, this.victim];
}

class CloseElection implements WorldCommand {
  constructor(readonly election: number) {}
  check = () => true;
  async run(_model: Model, world: World) {
    world.closeElection(electionAt(world, this.election));
    await world.settle();
  }
  toString = () => `CloseElection(e${this.election})`;
  toJSON = (): CommandData => ['CloseElection', this.election];
}

// ---------------------------------------------------------------------------------------------
// Arbitraries

const electionSpec: fc.Arbitrary<ElectionSpec> = fc.record({
  shardCount: fc.integer({ min: 1, max: 3 }),
  candidateCount: fc.integer({ min: 2, max: 3 }),
});

const nodeConfig: fc.Arbitrary<Partial<VoteNodeConfig>> = fc
  .record({
    batchRowsMax: fc.integer({ min: 1, max: 4 }),
    bufferSlack: fc.integer({ min: 0, max: 8 }),
    flushIntervalMs: fc.integer({ min: 1, max: 8 }),
    commitsInFlightMax: fc.integer({ min: 1, max: 2 }),
    commitDeadlineMs: fc.integer({ min: 20, max: 500 }),
    checkRetryIntervalMs: fc.integer({ min: 5, max: 60 }),
    inDoubtBatchesMax: fc.integer({ min: 1, max: 3 }),
    shardPendingVotesMax: fc.integer({ min: 1, max: 8 }),
    shardMailboxCastsMax: fc.integer({ min: 1, max: 16 }),
    snapshotIntervalMs: fc.integer({ min: 10, max: 300 }),
    releaseSnapshotTailRowsMin: fc.constantFrom(0, 3, 20_000),
  })
  .map(({ bufferSlack, ...config }) => ({
    ...config,
    bufferRowsMax: config.batchRowsMax + bufferSlack,
    retryAfterMs: 100,
    resultsPublishIntervalMs: 10_000,
    closeTimeoutMs: 1_000,
  }));

const clusterTimings: fc.Arbitrary<ClusterTimings> = fc
  .record({
    heartbeatIntervalMs: fc.integer({ min: 40, max: 150 }),
    beatsToDead: fc.integer({ min: 3, max: 6 }),
    leaseSlackMs: fc.integer({ min: 0, max: 300 }),
    movesInFlightMax: fc.integer({ min: 1, max: 2 }),
    autoBalance: fc.boolean(),
    routeRetryMs: fc.constantFrom(0, 300),
    replicasPerShard: fc.constantFrom(1, 1, 1, 0, 2),
  })
  .map(({ heartbeatIntervalMs, beatsToDead, leaseSlackMs, ...rest }) => ({
    heartbeatIntervalMs,
    deadAfterMs: heartbeatIntervalMs * beatsToDead,
    leaseTtlMs: heartbeatIntervalMs * beatsToDead + leaseSlackMs,
    ...rest,
  }));

export interface WorldShapeOptions {
  readonly nodeCountMax: number;
  readonly mode?: 'elections' | 'cluster';
  readonly plantedBug?: PlantedBug;
}

export function worldConfigArbitrary(options: WorldShapeOptions): fc.Arbitrary<WorldConfig> {
  const mode = options.mode ?? 'elections';
  return fc.record({
    nodeCount: fc.integer({ min: mode === 'cluster' ? Math.min(2, options.nodeCountMax) : 1, max: options.nodeCountMax }),
    elections: fc.array(electionSpec, { minLength: 1, maxLength: 2 }),
    node: nodeConfig,
    batchIdBlockSize: fc.integer({ min: 1, max: 4 }),
    cluster: clusterTimings,
  }).map(({ cluster, ...config }): WorldConfig => ({
    ...config,
    ...(mode === 'cluster' ? { mode, cluster } : {}),
    ...(options.plantedBug === undefined ? {} : { plantedBug: options.plantedBug }),
  }));
}

const faults: InjectedFault[] = ['commitLost', 'commitStoredButReportedFailed', 'commitCheckFails', 'lookupFails', 'snapshotWriteFails', 'forwardLost', 'forwardAnswerLost', 'replicateLost'];

/** One arbitrary of every command, weighted: mostly votes and I/O completing, now and then a fault. */
export const worldCommand: fc.Arbitrary<WorldCommand> = fc.oneof(
  // Clients: a few voters per election, so retries, changes of mind and duplicates are common.
  { weight: 20, arbitrary: fc.tuple(fc.nat(5), fc.nat(votersPerElection - 1), fc.nat(2), fc.boolean(), fc.nat(2)).map(([e, v, c, stale, entry]) => new Vote(e, v, c, stale, entry)) },
  { weight: 6, arbitrary: fc.nat(40).map((r) => new Retry(r)) },
  { weight: 16, arbitrary: fc.integer({ min: 1, max: 8 }).map((n) => new Deliver(n)) },
  { weight: 8, arbitrary: fc.oneof(fc.integer({ min: 1, max: 50 }), fc.integer({ min: 1, max: 400 })).map((ms) => new Tick(ms)) },
  { weight: 4, arbitrary: fc.constantFrom(...faults).map((f) => new Fault(f)) },
  { weight: 2, arbitrary: fc.constant(new StallJournal()) },
  { weight: 2, arbitrary: fc.constant(new Heal()) },
  { weight: 2, arbitrary: fc.nat(3).map((slot) => new Kill(slot)) },
  { weight: 2, arbitrary: fc.nat(3).map((slot) => new LoseLeases(slot)) },
  { weight: 1, arbitrary: electionSpec.map((spec) => new OpenElection(spec)) },
  { weight: 1, arbitrary: fc.nat(5).map((e) => new CloseElection(e)) },
  { weight: 1, arbitrary: fc.tuple(fc.nat(5), fc.nat(3), fc.nat(3), fc.constantFrom('target' as const, 'owner' as const)).map(([e, s, n, v]) => new MoveThenKill(e, s, n, v)) },
  { weight: 2, arbitrary: fc.tuple(fc.constantFrom('move' as const, 'move' as const, 'drain' as const, 'undrain' as const, 'balance' as const), fc.nat(5), fc.nat(3), fc.nat(3)).map(([k, e, s, n]) => new Operate(k, e, s, n)) },
);

export function commandFromData(data: CommandData): WorldCommand {
  const [name, ...args] = data;
  const n = (i: number) => Number(args[i]);
  switch (name) {
    case 'Vote': return new Vote(n(0), n(1), n(2), Boolean(args[3]), Number(args[4] ?? 0));
    case 'Retry': return new Retry(n(0));
    case 'Deliver': return new Deliver(n(0));
    case 'Tick': return new Tick(n(0));
    case 'Fault': return new Fault(String(args[0]) as InjectedFault);
    case 'StallJournal': return new StallJournal();
    case 'Heal': return new Heal();
    case 'Kill': return new Kill(n(0));
    case 'LoseLeases': return new LoseLeases(n(0));
    case 'OpenElection': return new OpenElection({ shardCount: n(0), candidateCount: n(1) });
    case 'CloseElection': return new CloseElection(n(0));
    case 'MoveThenKill': return new MoveThenKill(n(0), n(1), n(2), String(args[3]) as 'target' | 'owner');
    case 'Operate': return new Operate(String(args[0]) as 'move' | 'drain' | 'undrain' | 'balance', n(1), n(2), n(3));
    default: throw new Error(`unknown command ${name}`);
  }
}

export interface WorldCase {
  readonly config: WorldConfig;
  /** fast-check's wrappers around WorldCommands. */
  readonly commands: Iterable<fc.AsyncCommand<Model, World>>;
  readonly scheduler: fc.Scheduler;
}

/**
 * `replayPath`: to replay a shrunk failure from its seed and path, fast-check's commands also
 * need the `/*replayPath="…"*\/` printed in the counterexample.
 */
export function worldCaseArbitrary(options: WorldShapeOptions & { commandsMax: number; replayPath?: string }): fc.Arbitrary<WorldCase> {
  return fc.record({
    config: worldConfigArbitrary(options),
    commands: fc.commands([worldCommand], { maxCommands: options.commandsMax, size: 'max', replayPath: options.replayPath }),
    scheduler: fc.scheduler(),
  });
}

/**
 * A case as data, replayable without fast-check's generation: the config, the commands that
 * ran, and the order in which the scheduler released async work (by label). This is what
 * regressions.json keeps, so a kept case survives changes to the arbitraries — and to the code:
 * if a release no longer happens (the code behaves differently now), the oldest pending work goes.
 */
export interface RecordedCase {
  readonly config: WorldConfig;
  readonly commands: readonly CommandData[];
  readonly releases: readonly RecordedRelease[];
}

/**
 * One release: its label, or, when older work with the same label was pending then, the label
 * and how many of those the scheduler passed over. Labels are not unique (two forwards of one
 * voter, two replicas' reports of one node, each with its own payload): by label alone a replay
 * releases the oldest of them, another piece of work than the recorded run did.
 */
export type RecordedRelease = string | readonly [label: string, olderAlikePending: number];

export function recordCase(worldCase: WorldCase): RecordedCase {
  const ran = [...worldCase.commands].filter((c) => (c as unknown as { hasRan?: boolean }).hasRan !== false);
  return {
    config: worldCase.config,
    commands: ran.map((c) => ((c as unknown as { cmd?: WorldCommand }).cmd ?? (c as WorldCommand)).toJSON()),
    releases: releasesOf(worldCase.scheduler.report()),
  };
}

/**
 * The released tasks in order, each with how many older tasks of its label were pending when it
 * went: task ids follow the order of scheduling, and a task older than a pending one was
 * scheduled by then, so it was pending unless already released.
 */
export function releasesOf(report: readonly { readonly taskId: number; readonly label: string; readonly status: string }[]): RecordedRelease[] {
  const releasedIds = new Set<number>();
  return report
    .filter((task) => task.status === 'resolved')
    .map((task) => {
      const olderAlikePending = report.filter((other) => other.label === task.label && other.taskId < task.taskId && !releasedIds.has(other.taskId)).length;
      releasedIds.add(task.taskId);
      return olderAlikePending === 0 ? task.label : ([task.label, olderAlikePending] as const);
    });
}

/**
 * Releases work in the recorded order: the pending work of the recorded label, passing over as
 * many older ones of that label as the recorded run did; unknown or missing labels fall back to
 * the oldest pending work.
 */
export function replayedWork(releases: readonly RecordedRelease[]): AsyncWork {
  const pending: { label: string; release: () => void }[] = [];
  let cursor = 0;
  return {
    schedule: (label) => new Promise<void>((resolve) => pending.push({ label, release: resolve })),
    pending: () => pending.length,
    async releaseOne() {
      const recorded = releases[cursor++];
      const [wanted, olderAlikePending] = typeof recorded === 'string' || recorded === undefined ? [recorded, 0] : recorded;
      const alike = pending.flatMap((task, index) => (task.label === wanted ? [index] : []));
      const index = alike.length === 0 ? 0 : alike[Math.min(olderAlikePending, alike.length - 1)]!;
      pending.splice(index, 1)[0]?.release();
      await Promise.resolve();
    },
  };
}

/** Thrown when a property fails: carries what to print. */
export class PropertyViolation extends Error {
  constructor(
    readonly violations: readonly string[],
    readonly trace: readonly string[],
  ) {
    super(`${violations.slice(0, 8).join('\n')}\n-- last events of the run --\n${trace.slice(-60).join('\n')}`);
    this.name = 'PropertyViolation';
  }
}

/** `onTrace`: given the run's trace at its end, failed or not (to compare a replay with its recording). */
export interface RunOptions {
  readonly onTrace?: (trace: readonly string[]) => void;
}

/** Runs one generated case. */
export function runWorldCase(worldCase: WorldCase, properties: readonly Property[], options: RunOptions = {}): Promise<void> {
  return runWorld(worldCase.config, worldCase.commands, asyncWorkOf(worldCase.scheduler), properties, options);
}

/** Runs one recorded case (regressions.json). */
export function runRecordedCase(recorded: RecordedCase, properties: readonly Property[], options: RunOptions = {}): Promise<void> {
  return runWorld(recorded.config, recorded.commands.map(commandFromData), replayedWork(recorded.releases), properties, options);
}

/** Commands (checking `afterStep` after each), quiesce, recovery by a fresh process, `atEnd`. */
async function runWorld(config: WorldConfig, commands: Iterable<fc.AsyncCommand<Model, World>>, work: AsyncWork, properties: readonly Property[], options: RunOptions): Promise<void> {
  const world = new World(config, work);
  const check = (phase: 'afterStep' | 'atEnd', recovered: Parameters<NonNullable<Property['atEnd']>>[1] = []) => {
    const violations = properties.flatMap((p) => (p[phase]?.(world, recovered) ?? []).map((v) => `[${p.name}] ${v}`));
    if (violations.length > 0) throw new PropertyViolation(violations, world.trace);
  };
  try {
    await world.start();
    const model: Model = { elections: config.elections.length, zombies: 0, nodeCount: config.nodeCount };
    await fc.asyncModelRun(
      () => ({ model, real: world }),
      [...commands].map((command) => ({
        check: (m: Readonly<Model>) => command.check(m),
        run: async (m: Model, w: World) => {
          await command.run(m, w);
          check('afterStep');
        },
        toString: () => command.toString(),
      })),
    );
    await world.quiesce();
    check('afterStep');
    const recovered = await world.recoverAll();
    check('afterStep');
    check('atEnd', recovered);
  } finally {
    world.dispose();
    options.onTrace?.(world.trace);
  }
}
