// Membership: this node's heartbeat, its view of the cluster, and the self-fence.
//
//   join ──► ALIVE ──(heartbeat refused: declared dead, or a newer incarnation of this id)──► DEAD
//              │  ▲                                                                    (onDeclaredDead:
//  no heartbeat│  │ a heartbeat succeeds                                              the node stops)
//  stored for  ▼  │
//  selfFenceAfterMs
//           FENCED (serves no vote: another node may take its shards soon)
//
// Every heartbeatIntervalMs one short transaction records the heartbeat (the database's clock),
// takes or renews the coordinator lease, and returns the versions of the map and of the elections;
// a changed version (or every viewRefreshMs anyway) reloads the view, and the coordinator lease's
// holder runs a coordinator round. That follow-up runs after the heartbeat, never two at once, and
// the next heartbeat does not wait for it: a slow round must not read as silence. Another node declares this
// one dead only after deadAfterMs of silence as the DATABASE saw it; this node stops serving after
// selfFenceAfterMs (< deadAfterMs) since the start of its last heartbeat that was stored, as ITS
// clock sees it. The start is earlier than the stored time, so the node fences itself before
// anyone may take its shards over (clock rates, not clock values, must roughly agree).
//
// Silence is only evidence of death while the database was storing heartbeats. After a gap in
// this node's own heartbeats (the database stalled or was unreachable, or this process was
// starved or paused), every other member was silent for the same reason: as coordinator this node
// declares nobody dead until deadAfterMs after its heartbeats resumed, so a database outage
// longer than deadAfterMs does not end with every member but one declared dead.
import { SecretsMismatchError, type ClusterStore, type ClusterView, type HeartbeatResult, type JoinRequest } from './ports.ts';

export interface MembershipOptions {
  readonly store: ClusterStore;
  readonly self: JoinRequest;
  readonly heartbeatIntervalMs: number;
  readonly deadAfterMs: number;
  /** Reload the view at least this often even when no version changed. */
  readonly viewRefreshMs?: number;
  readonly log: { info(obj: object, msg: string): void; warn(obj: object, msg: string): void; error(obj: object, msg: string): void };
  /** A new view was read (versions changed, or the periodic refresh). */
  readonly onView: (view: ClusterView) => void;
  /** This node holds the coordinator lease after a heartbeat: run a coordinator round. */
  readonly onCoordinator: () => Promise<void>;
  /** This incarnation was declared dead: everything it served is someone else's now. */
  readonly onDeclaredDead: () => void;
  /** Monotonic clock in ms; injectable for the simulation. */
  readonly now?: () => number;
  /**
   * How long start() tries again a join that failed for another reason than the secrets (a
   * Postgres slow to answer, or still recovering from a crash); 0 or unset: one attempt.
   */
  readonly joinRetryForMs?: number;
}

/** A gap this long between two stored heartbeats of this node means the database (or this process) stalled. */
export function heartbeatGapMs(heartbeatIntervalMs: number, deadAfterMs: number): number {
  return Math.max(2 * heartbeatIntervalMs, Math.floor(deadAfterMs / 2));
}

/** The fence comes this long before the rest of the cluster may declare the node dead. */
export function selfFenceAfterMs(heartbeatIntervalMs: number, deadAfterMs: number): number {
  return Math.max(heartbeatIntervalMs, Math.min(deadAfterMs - heartbeatIntervalMs, Math.floor(deadAfterMs * 0.75)));
}

/**
 * How long one statement of the cluster store (join, heartbeat, view read, a coordinator round's)
 * may take before the node gives up on it and its connection (leases have timeouts of their own). At least 1 s, the value tuned for the default 1.5 s
 * detector; with a slower detector, a third of the self-fence window, so a heartbeat that a busy
 * box only delays is stored late instead of thrown away (a reconnect then adds to the gap), while
 * three attempts still fit before the node fences itself.
 */
export function clusterStatementTimeoutMs(heartbeatIntervalMs: number, deadAfterMs: number): number {
  return Math.max(1_000, Math.floor(selfFenceAfterMs(heartbeatIntervalMs, deadAfterMs) / 3));
}

export class Membership {
  private readonly options: MembershipOptions;
  private readonly now: () => number;
  private readonly fenceAfterMs: number;
  private incarnation = 0;
  private lastStoredBeatStartMs = -Infinity;
  /** No member is declared dead by this node before this time (see the header: heartbeat gaps). */
  private deathsHeldUntilMs = -Infinity;
  private lastViewReadMs = -Infinity;
  private versionSeen = -1;
  private electionsVersionSeen = -1;
  private timer: NodeJS.Timeout | undefined;
  /** The heartbeat in flight: true once stored with this incarnation alive. */
  private beating: Promise<boolean> | undefined;
  /** The view read and coordinator round that follow heartbeats, one at a time. */
  private followingUp: Promise<void> | undefined;
  private followUpAgain = false;
  private lastBeat: HeartbeatResult | undefined;
  private stopped = false;
  private declaredDead = false;
  /** Left on purpose: others wait for this node's leases, so it may finish its backlog. */
  private leaving = false;
  private coordinator = false;
  private currentView: ClusterView | undefined;

  constructor(options: MembershipOptions) {
    if (!(options.heartbeatIntervalMs >= 10 && options.deadAfterMs >= 2 * options.heartbeatIntervalMs)) {
      throw new Error(`deadAfterMs (${options.deadAfterMs}) must be at least twice heartbeatIntervalMs (${options.heartbeatIntervalMs}), which must be >= 10`);
    }
    this.options = options;
    this.now = options.now ?? (() => performance.now());
    this.fenceAfterMs = selfFenceAfterMs(options.heartbeatIntervalMs, options.deadAfterMs);
  }

  /** Joins (throws SecretsMismatchError), records a first heartbeat and reads the view. */
  async start(): Promise<void> {
    const deadlineMs = this.now() + (this.options.joinRetryForMs ?? 0);
    for (let attempt = 1; ; attempt++) {
      const startMs = this.now();
      try {
        // A join whose answer was lost may have been stored: the next one is a new incarnation,
        // as a restart would be, and the earlier one is never heard from.
        const { incarnation } = await this.options.store.join(this.options.self);
        this.incarnation = incarnation;
        this.lastStoredBeatStartMs = startMs;
        break;
      } catch (error) {
        if (error instanceof SecretsMismatchError || this.stopped || this.now() >= deadlineMs) throw error;
        this.options.log.warn({ err: error, attempt }, 'joining the cluster failed; trying again');
        await new Promise((resolve) => setTimeout(resolve, Math.min(2_000, 200 * attempt)));
      }
    }
    await this.beatNow();
    this.schedule();
  }

  get nodeId(): string {
    return this.options.self.nodeId;
  }

  get isCoordinator(): boolean {
    return this.coordinator;
  }

  view(): ClusterView | undefined {
    return this.currentView;
  }

  /** False once the last stored heartbeat is too old: votes must not be taken. */
  canServe(): boolean {
    if (this.declaredDead) return false;
    if (this.leaving) return true;
    return !this.stopped && this.now() - this.lastStoredBeatStartMs < this.fenceAfterMs;
  }

  /**
   * False for deadAfterMs after a gap in this node's own heartbeats: the other members' silence
   * then says nothing about them, and a coordinator round must not declare them dead.
   */
  mayDeclareDeaths(): boolean {
    return this.now() >= this.deathsHeldUntilMs;
  }

  /** Stops the heartbeat; with `leave`, tells the cluster at once (graceful stop). */
  async stop(options: { leave?: boolean } = {}): Promise<void> {
    this.stopped = true;
    if (this.timer !== undefined) clearTimeout(this.timer);
    await this.idle();
    if (options.leave && this.incarnation > 0 && !this.declaredDead) {
      this.leaving = true;
      await this.options.store.leave(this.options.self.nodeId, this.incarnation);
    }
  }

  /** After being declared dead (and dropping every shard): join again as a new incarnation. */
  async rejoin(): Promise<void> {
    if (this.stopped) return;
    await this.idle();
    this.declaredDead = false;
    this.versionSeen = -1;
    await this.start();
  }

  /** A heartbeat now, then the view read and coordinator round it calls for (tests call it to avoid waiting). */
  async beatNow(): Promise<void> {
    if (await this.heartbeatOnce()) await this.followUp();
  }

  /** Resolves once no heartbeat and no follow-up is in flight. */
  private async idle(): Promise<void> {
    while (this.beating !== undefined || this.followingUp !== undefined) {
      await this.beating?.catch(() => undefined);
      await this.followingUp?.catch(() => undefined);
    }
  }

  private heartbeatOnce(): Promise<boolean> {
    this.beating ??= this.heartbeat().finally(() => {
      this.beating = undefined;
    });
    return this.beating;
  }

  /**
   * Runs the view read and coordinator round after the latest heartbeat; asked again while one
   * runs, it runs once more after it (never two at once).
   */
  private followUp(): Promise<void> {
    this.followUpAgain = true;
    if (this.followingUp !== undefined) return this.followingUp;
    const running = this.runFollowUps();
    this.followingUp = running;
    // Cleared after it is stored, never before: a run that has nothing to do ends at once, and a
    // settled promise left behind would make idle() wait on it forever.
    const clear = () => {
      if (this.followingUp === running) this.followingUp = undefined;
    };
    running.then(clear, clear);
    return running;
  }

  private async runFollowUps(): Promise<void> {
    while (this.followUpAgain && !this.stopped && !this.declaredDead) {
      this.followUpAgain = false;
      await this.afterHeartbeat();
    }
  }

  private schedule(): void {
    if (this.stopped || this.declaredDead) return;
    this.timer = setTimeout(() => {
      // The next heartbeat waits for this one only, not for its view read or coordinator round:
      // a round slowed by a busy database must not read as this node's silence (the others would
      // declare it dead, and it would fence itself, while it is working).
      // A round that failed anyway must neither stop the heartbeat nor end the process (unhandled rejection).
      const warn = (error: unknown) => this.options.log.warn({ err: error }, 'heartbeat round failed; retrying');
      this.heartbeatOnce()
        .then((stored) => {
          if (stored) this.followUp().catch(warn);
        })
        .catch(warn)
        .finally(() => this.schedule());
    }, this.options.heartbeatIntervalMs);
    this.timer.unref();
  }

  /** Stores one heartbeat; true when it was stored and this incarnation is still alive. */
  private async heartbeat(): Promise<boolean> {
    const startMs = this.now();
    let result: HeartbeatResult;
    try {
      result = await this.options.store.heartbeat(this.options.self.nodeId, this.incarnation, {
        coordinatorLeaseMs: this.options.deadAfterMs,
        wantCoordinator: true,
      });
    } catch (error) {
      this.coordinator = false;
      if (!this.canServe()) this.options.log.warn({ err: error }, 'heartbeat failed and the self-fence is up: this node takes no votes until one succeeds');
      else this.options.log.warn({ err: error }, 'heartbeat failed; retrying');
      return false;
    }
    if (!result.alive) {
      this.coordinator = false;
      if (!this.declaredDead && !this.stopped) {
        this.declaredDead = true;
        this.options.log.error({ nodeId: this.options.self.nodeId, incarnation: this.incarnation }, 'this node was declared dead by the cluster (or replaced by a newer process with its id)');
        this.options.onDeclaredDead();
      }
      return false;
    }
    if (startMs - this.lastStoredBeatStartMs > heartbeatGapMs(this.options.heartbeatIntervalMs, this.options.deadAfterMs)) {
      this.deathsHeldUntilMs = this.now() + this.options.deadAfterMs;
      this.options.log.info(
        { gapMs: Math.round(startMs - this.lastStoredBeatStartMs), deadAfterMs: this.options.deadAfterMs },
        'heartbeats resumed after a gap: no member is declared dead until the others have had time to beat again',
      );
    }
    this.lastStoredBeatStartMs = startMs;
    this.coordinator = result.coordinator;
    this.lastBeat = result;
    return true;
  }

  /** The view read (a version moved, or the periodic refresh) and, as coordinator, a round. */
  private async afterHeartbeat(): Promise<void> {
    const result = this.lastBeat;
    if (result === undefined) return;
    const refreshMs = this.options.viewRefreshMs ?? 2_000;
    if (result.version !== this.versionSeen || result.electionsVersion !== this.electionsVersionSeen || this.now() - this.lastViewReadMs >= refreshMs) {
      try {
        await this.refreshView();
      } catch (error) {
        // The heartbeat is stored; the view is read again at the next one.
        this.options.log.warn({ err: error }, 'reading the cluster view failed; retrying at the next heartbeat');
      }
    }
    // The latest heartbeat's word, not this round's first: the lease may have moved meanwhile.
    if (this.coordinator) {
      try {
        await this.options.onCoordinator();
      } catch (error) {
        this.options.log.warn({ err: error }, 'coordinator round failed; retrying at the next heartbeat');
      }
    }
  }

  /** Reads the view now and hands it on. */
  async refreshView(): Promise<ClusterView> {
    const readStartMs = this.now();
    const view = await this.options.store.readView();
    this.lastViewReadMs = readStartMs;
    this.versionSeen = view.version;
    this.electionsVersionSeen = view.electionsVersion;
    this.currentView = view;
    this.options.onView(view);
    return view;
  }
}
