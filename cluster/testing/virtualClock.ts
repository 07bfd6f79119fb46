// A virtual clock for the simulated world: while installed, setTimeout / setInterval /
// setImmediate (and their clear*), Date.now and performance.now of this process run on virtual time, so the real vote node
// (its committer timer, snapshot and publish intervals) and nact (one setImmediate per message)
// run deterministically and as fast as the CPU allows. Nothing fires on its own: the world
// calls `runImmediates()` and `advanceTo()`.
//
// Faithful to Node's event loop where it matters: one callback at a time, and every microtask
// (promise continuation) runs before the next callback — `flushMicrotasks` yields one real
// macrotask turn, which drains the microtask queue completely.
//
// Install it only around one world's run (`install()` … `uninstall()` in a finally): it
// replaces globals. vitest's own timers are saved before any test runs, so they are unaffected.

interface VirtualTimer {
  readonly id: number;
  atMs: number;
  readonly intervalMs: number | null;
  readonly callback: (...args: unknown[]) => void;
  readonly args: unknown[];
  cancelled: boolean;
}

/** What setTimeout returns in Node: code calls unref()/ref()/hasRef() on it. */
class VirtualTimerHandle {
  constructor(readonly id: number) {}
  unref(): this {
    return this;
  }
  ref(): this {
    return this;
  }
  hasRef(): boolean {
    return false;
  }
  refresh(): this {
    return this;
  }
  [Symbol.toPrimitive](): number {
    return this.id;
  }
}

const realSetImmediate = globalThis.setImmediate;

/** One real macrotask turn: every pending microtask has run when this resolves. */
export function flushMicrotasks(): Promise<void> {
  return new Promise((resolve) => realSetImmediate(resolve));
}

type Saved = Pick<typeof globalThis, 'setTimeout' | 'clearTimeout' | 'setInterval' | 'clearInterval' | 'setImmediate' | 'clearImmediate'> & {
  dateNow: () => number;
  performanceNow: () => number;
};

export class VirtualClock {
  private nowMsValue: number;
  private nextId = 1;
  /** Timers by id; a small world has tens of them, so a scan beats a heap. */
  private readonly timers = new Map<number, VirtualTimer>();
  private readonly immediates: VirtualTimer[] = [];
  private saved: Saved | null = null;
  /** Bounds one drain, so a livelock shows as an error instead of a hang. */
  private readonly callbacksPerDrainMax: number;

  constructor(options: { startMs?: number; callbacksPerDrainMax?: number } = {}) {
    this.nowMsValue = options.startMs ?? 1_000_000;
    this.callbacksPerDrainMax = options.callbacksPerDrainMax ?? 200_000;
  }

  readonly now = (): number => this.nowMsValue;

  install(): void {
    if (this.saved !== null) throw new Error('virtual clock already installed');
    const g = globalThis as Record<string, unknown>;
    this.saved = {
      setTimeout: globalThis.setTimeout,
      clearTimeout: globalThis.clearTimeout,
      setInterval: globalThis.setInterval,
      clearInterval: globalThis.clearInterval,
      setImmediate: globalThis.setImmediate,
      clearImmediate: globalThis.clearImmediate,
      dateNow: Date.now,
      performanceNow: performance.now,
    };
    Date.now = this.now;
    performance.now = this.now;
    g.setTimeout = (callback: (...args: unknown[]) => void, delayMs?: number, ...args: unknown[]) =>
      this.addTimer(callback, delayMs, null, args);
    g.setInterval = (callback: (...args: unknown[]) => void, delayMs?: number, ...args: unknown[]) =>
      this.addTimer(callback, delayMs, Math.max(1, Math.floor(Number(delayMs) || 0)), args);
    g.setImmediate = (callback: (...args: unknown[]) => void, ...args: unknown[]) => {
      const timer: VirtualTimer = { id: this.nextId++, atMs: this.nowMsValue, intervalMs: null, callback, args, cancelled: false };
      this.immediates.push(timer);
      return new VirtualTimerHandle(timer.id);
    };
    const cancel = (handle: unknown) => this.cancel(handle);
    g.clearTimeout = cancel;
    g.clearInterval = cancel;
    g.clearImmediate = (handle: unknown) => {
      const id = Number(handle);
      for (const timer of this.immediates) if (timer.id === id) timer.cancelled = true;
    };
  }

  uninstall(): void {
    if (this.saved === null) return;
    const { dateNow, performanceNow, ...timers } = this.saved;
    Object.assign(globalThis, timers);
    Date.now = dateNow;
    performance.now = performanceNow;
    this.saved = null;
    this.timers.clear();
    this.immediates.length = 0;
  }

  get pendingImmediates(): number {
    return this.immediates.length;
  }

  /** Time of the next timer, or null when none is armed. */
  nextTimerAtMs(): number | null {
    let earliest: number | null = null;
    for (const timer of this.timers.values()) if (earliest === null || timer.atMs < earliest) earliest = timer.atMs;
    return earliest;
  }

  /**
   * Runs every immediate, one at a time with its microtasks, until none is left; returns how
   * many ran. Virtual time does not move.
   */
  async runImmediates(): Promise<number> {
    let ran = 0;
    await flushMicrotasks();
    while (this.immediates.length > 0) {
      const timer = this.immediates.shift()!;
      if (timer.cancelled) continue;
      if (++ran > this.callbacksPerDrainMax) throw new Error(`more than ${this.callbacksPerDrainMax} immediates in one drain: livelock`);
      timer.callback(...timer.args);
      await flushMicrotasks();
    }
    return ran;
  }

  /**
   * Moves virtual time to `targetMs`, firing every timer due on the way in time order, each
   * followed by the immediates and microtasks it caused.
   */
  async advanceTo(targetMs: number): Promise<void> {
    await this.runImmediates();
    let fired = 0;
    for (;;) {
      const due = this.earliestDue(targetMs);
      if (due === null) break;
      if (++fired > this.callbacksPerDrainMax) throw new Error(`more than ${this.callbacksPerDrainMax} timers before ${targetMs}: livelock`);
      this.nowMsValue = Math.max(this.nowMsValue, due.atMs);
      if (due.intervalMs === null) this.timers.delete(due.id);
      else due.atMs += due.intervalMs;
      due.callback(...due.args);
      await this.runImmediates();
    }
    this.nowMsValue = Math.max(this.nowMsValue, targetMs);
  }

  private earliestDue(targetMs: number): VirtualTimer | null {
    let earliest: VirtualTimer | null = null;
    for (const timer of this.timers.values()) {
      if (timer.atMs > targetMs) continue;
      // Ties go to the timer armed first, as in Node.
      if (earliest === null || timer.atMs < earliest.atMs || (timer.atMs === earliest.atMs && timer.id < earliest.id)) earliest = timer;
    }
    return earliest;
  }

  private addTimer(callback: (...args: unknown[]) => void, delayMs: unknown, intervalMs: number | null, args: unknown[]): VirtualTimerHandle {
    if (typeof callback !== 'function') throw new TypeError('callback must be a function');
    // Node: a delay below 1 (or not a number) is 1 ms.
    const delay = Math.max(1, Math.floor(Number(delayMs) || 0));
    const timer: VirtualTimer = { id: this.nextId++, atMs: this.nowMsValue + delay, intervalMs, callback, args, cancelled: false };
    this.timers.set(timer.id, timer);
    return new VirtualTimerHandle(timer.id);
  }

  private cancel(handle: unknown): void {
    if (handle === undefined || handle === null) return;
    this.timers.delete(Number(handle));
  }
}
