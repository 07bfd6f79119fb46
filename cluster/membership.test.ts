// Membership and the coordinator's death verdicts on a hand-driven clock, against the in-memory
// cluster store the property harness uses (it states in memory what persistence/clusterStore.ts
// states in SQL). Each step: the clock moves one heartbeat interval and every member that is
// beating (and can reach the store) beats once.
import { afterEach, beforeEach, describe, expect, it, vi } from 'vitest';
import { MemoryVoteStore } from '../actors/memoryAdapters.ts';
import { createCoordinator } from './coordinator.ts';
import { clusterStatementTimeoutMs, Membership, selfFenceAfterMs } from './membership.ts';
import { SecretsMismatchError, type ClusterStore } from './ports.ts';
import { SimClusterState } from './testing/simCluster.ts';

const heartbeatIntervalMs = 250;
const deadAfterMs = 1_500;
const silent = { info() {}, warn() {}, error() {} };

function cluster(nodeIds: readonly string[]) {
  let nowMs = 0;
  let databaseDown = false;
  const state = new SimClusterState(() => nowMs, new MemoryVoteStore(), () => []);
  const inner = state.store();
  // Every call fails while the database is down, as a frozen or unreachable Postgres does.
  const store = new Proxy(inner, {
    get: (target, key: keyof ClusterStore) => {
      const method = target[key] as (...args: unknown[]) => Promise<unknown>;
      return (...args: unknown[]) => (databaseDown ? Promise.reject(new Error('database unreachable')) : method.apply(target, args));
    },
  });
  const declaredDead: string[] = [];
  const members = nodeIds.map((nodeId) => {
    let membership: Membership;
    const coordinator = createCoordinator({
      store, nodeId, deadAfterMs, silentAfterMs: selfFenceAfterMs(heartbeatIntervalMs, deadAfterMs), movesInFlightMax: 4, autoBalance: true, log: silent, mayDeclareDeaths: () => membership.mayDeclareDeaths(),
    });
    membership = new Membership({
      store,
      self: { nodeId, az: 'a', url: `http://${nodeId}`, secretsFingerprint: 'f' },
      heartbeatIntervalMs,
      deadAfterMs,
      log: silent,
      now: () => nowMs,
      onView: () => undefined,
      onCoordinator: () => coordinator.round(),
      onDeclaredDead: () => declaredDead.push(nodeId),
    });
    return { nodeId, membership, beating: true };
  });
  return {
    members,
    declaredDead,
    statusOf: (nodeId: string) => state.nodes.get(nodeId)?.status,
    setDatabaseDown: (down: boolean) => { databaseDown = down; },
    async start() {
      for (const m of members) await m.membership.start();
    },
    /** One heartbeat interval passes; every beating member beats (failures are logged, not thrown). */
    async step(count = 1) {
      for (let i = 0; i < count; i++) {
        nowMs += heartbeatIntervalMs;
        for (const m of members) if (m.beating) await m.membership.beatNow().catch(() => undefined);
      }
    },
  };
}

describe('Membership: death verdicts', () => {
  // Membership schedules its own beats with setTimeout; the tests beat by hand instead.
  beforeEach(() => { vi.useFakeTimers({ toFake: ['setTimeout', 'clearTimeout'] }); });
  afterEach(() => { vi.useRealTimers(); });

  it('declares a member dead after deadAfterMs of silence while the others beat', async () => {
    const c = cluster(['n1', 'n2', 'n3']);
    await c.start();
    await c.step(4);
    c.members[2]!.beating = false;
    await c.step(Math.ceil(deadAfterMs / heartbeatIntervalMs) + 2);
    expect(['n1', 'n2', 'n3'].map(c.statusOf)).toEqual(['alive', 'alive', 'dead']);
  });

  it('declares nobody dead when the database was down for longer than deadAfterMs and every member beats again', async () => {
    const c = cluster(['n1', 'n2', 'n3']);
    await c.start();
    await c.step(4);
    c.setDatabaseDown(true);
    await c.step(Math.ceil((3 * deadAfterMs) / heartbeatIntervalMs));
    expect(c.members.every((m) => !m.membership.canServe())).toBe(true); // each fenced itself meanwhile
    c.setDatabaseDown(false);
    // The first member to beat again becomes coordinator while the others' last beats are
    // 4.5 s old: without the hold it declares them both dead in that very round.
    await c.step(Math.ceil((2 * deadAfterMs) / heartbeatIntervalMs));
    expect(['n1', 'n2', 'n3'].map(c.statusOf)).toEqual(['alive', 'alive', 'alive']);
    expect(c.declaredDead).toEqual([]);
    expect(c.members.every((m) => m.membership.canServe())).toBe(true);
    // The hold ends: a member that stays silent is declared dead as usual.
    c.members[1]!.beating = false;
    await c.step(Math.ceil(deadAfterMs / heartbeatIntervalMs) + 2);
    expect(['n1', 'n2', 'n3'].map(c.statusOf)).toEqual(['alive', 'dead', 'alive']);
  });
});

describe('joining at start', () => {
  function joinOnly(failures: Error[]) {
    const state = new SimClusterState(() => 0, new MemoryVoteStore(), () => []);
    const inner = state.store();
    let joins = 0;
    const store = new Proxy(inner, {
      get: (target, key: keyof ClusterStore) => {
        const method = target[key] as (...args: unknown[]) => Promise<unknown>;
        if (key !== 'join') return method.bind(target);
        return (...args: unknown[]) => {
          joins++;
          const failure = failures.shift();
          return failure ? Promise.reject(failure) : method.apply(target, args);
        };
      },
    });
    const membership = (joinRetryForMs?: number) => new Membership({
      store, self: { nodeId: 'n1', az: 'a', url: 'http://n1', secretsFingerprint: 'f' }, heartbeatIntervalMs, deadAfterMs, log: silent,
      onView: () => undefined, onCoordinator: async () => undefined, onDeclaredDead: () => undefined, joinRetryForMs,
    });
    return { membership, joins: () => joins };
  }

  it('tries a failed join again (a Postgres slow at start), and serves once one is stored', async () => {
    const c = joinOnly([new Error('Query read timeout'), new Error('Connection terminated')]);
    const m = c.membership(60_000);
    await m.start();
    expect(c.joins()).toBe(3);
    expect(m.canServe()).toBe(true);
    await m.stop();
  });

  it('gives up at once on other secrets, and after one attempt without joinRetryForMs', async () => {
    const secrets = joinOnly([new SecretsMismatchError('n1')]);
    await expect(secrets.membership(60_000).start()).rejects.toBeInstanceOf(SecretsMismatchError);
    expect(secrets.joins()).toBe(1);
    const once = joinOnly([new Error('Query read timeout')]);
    await expect(once.membership().start()).rejects.toThrow('Query read timeout');
    expect(once.joins()).toBe(1);
  });
});

describe('Membership: the heartbeat does not wait for the coordinator round', () => {
  beforeEach(() => { vi.useFakeTimers({ toFake: ['setTimeout', 'clearTimeout'] }); });
  afterEach(() => { vi.useRealTimers(); });

  it('goes on beating (and serving) while a coordinator round is held up, and runs one more round after it', async () => {
    let nowMs = 0;
    const state = new SimClusterState(() => nowMs, new MemoryVoteStore(), () => []);
    const inner = state.store();
    let heartbeats = 0;
    const store = new Proxy(inner, {
      get: (target, key: keyof ClusterStore) => {
        const method = target[key] as (...args: unknown[]) => Promise<unknown>;
        return (...args: unknown[]) => {
          if (key === 'heartbeat') heartbeats++;
          return method.apply(target, args);
        };
      },
    });
    // A round held up as one waiting on a busy database is, for longer than deadAfterMs.
    let release: (() => void) | undefined;
    let rounds = 0;
    const membership = new Membership({
      store, self: { nodeId: 'n1', az: 'a', url: 'http://n1', secretsFingerprint: 'f' }, heartbeatIntervalMs, deadAfterMs, log: silent, now: () => nowMs,
      onView: () => undefined,
      onCoordinator: () => {
        rounds++;
        return rounds === 1 ? Promise.resolve() : new Promise<void>((resolve) => { release = resolve; });
      },
      onDeclaredDead: () => undefined,
    });
    await membership.start();
    expect(membership.isCoordinator).toBe(true);
    const intervals = Math.ceil((2 * deadAfterMs) / heartbeatIntervalMs);
    for (let i = 0; i < intervals; i++) {
      nowMs += heartbeatIntervalMs;
      await vi.advanceTimersByTimeAsync(heartbeatIntervalMs);
    }
    expect(release).toBeDefined();
    expect(rounds).toBe(2);
    // Every interval stored its heartbeat although the round never ended: the node is not silent.
    expect(heartbeats).toBe(1 + intervals);
    expect(membership.canServe()).toBe(true);
    expect(state.nodes.get('n1')?.status).toBe('alive');
    // Asked for again while held up: one more round once it ends, not one per heartbeat.
    release!();
    nowMs += heartbeatIntervalMs;
    await vi.advanceTimersByTimeAsync(heartbeatIntervalMs);
    expect(rounds).toBe(3);
    release!();
    await membership.stop();
  });
});

describe('Membership: stopping', () => {
  it('stops again after a heartbeat asked for once stopped (the follow-up has nothing to do and ends at once)', async () => {
    const state = new SimClusterState(() => 0, new MemoryVoteStore(), () => []);
    const membership = new Membership({
      store: state.store(), self: { nodeId: 'n1', az: 'a', url: 'http://n1', secretsFingerprint: 'f' }, heartbeatIntervalMs, deadAfterMs, log: silent,
      now: () => 0, onView: () => undefined, onCoordinator: async () => undefined, onDeclaredDead: () => undefined,
    });
    await membership.start();
    await membership.stop();
    // What a late caller does (an election changed while the node stops): its follow-up ends at once.
    await membership.beatNow();
    // A stop that never ends spins in microtasks, so no timer could fail this test: count them.
    let turns = 0;
    const watchdog = (async () => {
      while (turns < 100_000) {
        turns++;
        await null;
      }
      return 'still waiting';
    })();
    const outcome = await Promise.race([membership.stop().then(() => 'stopped'), watchdog]);
    if (outcome !== 'stopped') {
      // Let the spinning wait end so the test can report (the field it waits on, cleared by hand).
      (membership as unknown as { followingUp: unknown }).followingUp = undefined;
    }
    turns = 100_000;
    expect(outcome).toBe('stopped');
  });
});

describe('cluster statement timeout', () => {
  it('is 1 s for the default detector and a third of the self-fence window for slower ones', () => {
    expect(clusterStatementTimeoutMs(250, 1_500)).toBe(1_000);
    expect(clusterStatementTimeoutMs(250, 3_000)).toBe(1_000);
    expect(selfFenceAfterMs(250, 12_000)).toBe(9_000);
    expect(clusterStatementTimeoutMs(250, 12_000)).toBe(3_000);
    expect(clusterStatementTimeoutMs(250, 15_000)).toBe(3_750);
    // Past the 1 s floor, three attempts fit before the node fences itself.
    for (const deadAfterMs of [4_000, 12_000, 60_000]) {
      expect(3 * clusterStatementTimeoutMs(250, deadAfterMs)).toBeLessThanOrEqual(selfFenceAfterMs(250, deadAfterMs));
    }
  });
});
