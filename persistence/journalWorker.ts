// The vote journal's commit path on a thread of its own (LIVEVOTE_JOURNAL_THREAD=worker).
//
// Why: a commit's Postgres client work (the commit text built from the batch's rows, the socket
// writes and reads, the answer parsed) was ~12% of the event loop's CPU (~8 µs a vote, a perf
// profile in bench/README.md), and where cores are to spare the event loop can be a node's limit
// (on the 2-core bench box it is not: bench/README.md, "Eighth look"; so `main` is the default). Here the main
// thread only packs the batch into one message and reads the outcome back; PgJournal itself runs
// unchanged in a worker thread (journalWorkerThread.ts), on a small pool of its own to the same
// database. The drainer's writes (storeSpilled) stay on the main thread's PgJournal.
//
// The port's promises hold whatever the worker does: commit() resolves, never rejects, within
// PgJournal's own bound plus `answerGraceMs`; wasCommitted() rejects when no answer comes. A
// worker that dies (or stops answering: it is then terminated) fails every call in flight —
// `failed` commits, rejected checks, which the group committer settles through wasCommitted — and
// is started again, at most once per `restartIntervalMs`; until the new one has loaded and said
// it is ready, calls fail at once. A call goes only to a ready worker, so its bound times the
// worker's answer, never its start: a start on a busy machine (2.6-6.5 s at load ~13 on the 2-core
// box, from the sources) can outlast a check's bound (3 s), and a check sent to a starting worker
// would terminate it, again with every restart, so that no check ever answered. A restarted worker
// that is not ready within `startTimeoutMs` is terminated and started again.
//
// The batch travels columnar (journalWorkerMessages below): one Float64Array of the numbers
// (transferred, not copied), the vote ids joined into one string, the distinct election ids. On
// this machine that costs the main thread ~3.8 µs for a 40-row batch, against ~17.8 µs to post
// the array of row objects (structured clone walks every object and property).
import type { Worker } from 'node:worker_threads';
import { moduleBeside, startModuleWorker } from '../infra/workerThreads.ts';
import type { Journal, JournalBatch, JournalCommitResult, JournalRow } from '../actors/ports.ts';
import { journalClientBoundsMs, type PgJournalOptions } from './voteJournal.ts';

/** PgJournal's settings, less what the worker makes itself (its pool). */
export type WorkerPgJournalOptions = Omit<PgJournalOptions, 'pool' | 'measuredVariant'>;

export interface JournalWorkerLog {
  info(obj: object, msg: string): void;
  warn(obj: object, msg: string): void;
}

export interface WorkerJournalOptions {
  /** The database the node's own pool connects to (persistence/db.ts poolUrl), Unix socket included. */
  readonly url: string;
  readonly journal: WorkerPgJournalOptions;
  /**
   * Commits and checks at once. The group committer keeps to its commitsInFlightMax; a call beyond
   * this one is refused (a commit resolves failed, a check rejects). Also the worker pool's size.
   */
  readonly callsInFlightMax: number;
  readonly log: JournalWorkerLog;
  readonly applicationName?: string;
  /** A worker is started at most once per this. */
  readonly restartIntervalMs?: number;
  /** How much longer than PgJournal's own bound the main thread waits before it gives up on the worker. */
  readonly answerGraceMs?: number;
  /**
   * The first worker must have loaded and answered ready within this, or creation fails; a
   * restarted one, or it is terminated and another started.
   */
  readonly startTimeoutMs?: number;
  /** Tests: another worker entry (journalWorker.faultyWorker.ts, one that never answers). */
  readonly workerUrl?: URL;
}

export const journalWorkerRestartIntervalMsDefault = 1_000;
export const journalWorkerAnswerGraceMsDefault = 1_000;
const startTimeoutMsDefault = 10_000;
/** close(): the worker's pool must have ended within this, else the worker is terminated anyway. */
const closeTimeoutMs = 5_000;

// ---------------------------------------------------------------------------------------------
// Messages between the threads

/** What the worker is created with (workerData). */
export interface JournalWorkerData {
  readonly url: string;
  readonly poolMax: number;
  readonly applicationName: string;
  readonly journal: WorkerPgJournalOptions;
}

/** Numbers per row in CommitRequest.numbers, in this order. */
const numbersPerRow = 6;
const voteIdSeparator = ',';

export type ToJournalWorker =
  | {
      readonly t: 'commit';
      readonly callId: number;
      readonly batchId: number;
      /** Distinct election ids; each row names one by its index. */
      readonly electionIds: readonly string[];
      /** The rows' vote ids, joined by ','. */
      readonly voteIds: string;
      /** Per row: election index, voterNumber, candidateIndex, shard, epoch, acceptedAtMs. */
      readonly numbers: Float64Array;
    }
  | { readonly t: 'check'; readonly callId: number; readonly batchId: number }
  | { readonly t: 'close' };

export type FromJournalWorker =
  | { readonly t: 'ready' }
  | { readonly t: 'committed'; readonly callId: number; readonly result: JournalCommitResult }
  | { readonly t: 'checked'; readonly callId: number; readonly committed: boolean }
  | { readonly t: 'check_failed'; readonly callId: number; readonly message: string }
  | { readonly t: 'log'; readonly message: string; readonly error: string }
  | { readonly t: 'closed' };

type CommitRequest = Extract<ToJournalWorker, { t: 'commit' }>;

export function encodeCommit(callId: number, batch: JournalBatch): { message: CommitRequest; transfer: ArrayBuffer[] } {
  const rows = batch.rows;
  const n = rows.length;
  const numbers = new Float64Array(n * numbersPerRow);
  const voteIds = new Array<string>(n);
  const electionIds: string[] = [];
  let lastElectionId: string | undefined;
  let electionIndex = -1;
  for (let i = 0; i < n; i++) {
    const row = rows[i]!;
    if (row.electionId !== lastElectionId) {
      lastElectionId = row.electionId;
      electionIndex = electionIds.indexOf(row.electionId);
      if (electionIndex === -1) electionIndex = electionIds.push(row.electionId) - 1;
    }
    const at = i * numbersPerRow;
    numbers[at] = electionIndex;
    numbers[at + 1] = row.voterNumber;
    numbers[at + 2] = row.candidateIndex;
    numbers[at + 3] = row.shard;
    numbers[at + 4] = row.epoch;
    numbers[at + 5] = row.acceptedAtMs;
    voteIds[i] = row.voteId;
  }
  const message: CommitRequest = { t: 'commit', callId, batchId: batch.batchId, electionIds, voteIds: voteIds.join(voteIdSeparator), numbers };
  return { message, transfer: [numbers.buffer as ArrayBuffer] };
}

/** The batch back as rows; a string saying why when the message cannot be one (PgJournal's `failed` then). */
export function decodeCommit(message: CommitRequest): JournalBatch | string {
  const { numbers, electionIds } = message;
  if (numbers.length % numbersPerRow !== 0) return `${numbers.length} numbers is not whole rows`;
  const n = numbers.length / numbersPerRow;
  const voteIds = n === 0 ? [] : message.voteIds.split(voteIdSeparator);
  // A vote id with the separator in it (never a uuid, which PgJournal would refuse anyway) shows here.
  if (voteIds.length !== n) return `${voteIds.length} vote ids for ${n} rows`;
  const rows = new Array<JournalRow>(n);
  for (let i = 0; i < n; i++) {
    const at = i * numbersPerRow;
    const electionId = electionIds[numbers[at]!];
    if (electionId === undefined) return `row ${i} names election ${numbers[at]} of ${electionIds.length}`;
    rows[i] = {
      electionId,
      voterNumber: numbers[at + 1]!,
      candidateIndex: numbers[at + 2]!,
      shard: numbers[at + 3]!,
      epoch: numbers[at + 4]!,
      voteId: voteIds[i]!,
      acceptedAtMs: numbers[at + 5]!,
    };
  }
  return { batchId: message.batchId, rows };
}

// ---------------------------------------------------------------------------------------------
// The main thread's side

type PendingCall =
  | { readonly kind: 'commit'; readonly resolve: (result: JournalCommitResult) => void; readonly timer: NodeJS.Timeout; readonly settled: Promise<unknown> }
  | { readonly kind: 'check'; readonly resolve: (committed: boolean) => void; readonly reject: (error: Error) => void; readonly timer: NodeJS.Timeout; readonly settled: Promise<unknown> };

export class WorkerJournal implements Journal {
  private readonly options: WorkerJournalOptions;
  /** The worker's code: its file from the build, a loader of the .ts file from the sources. */
  private readonly entry: URL;
  private readonly commitAnswerMs: number;
  private readonly checkAnswerMs: number;
  private readonly restartIntervalMs: number;
  private readonly startTimeoutMs: number;
  private readonly pending = new Map<number, PendingCall>();
  private nextCallId = 1;
  private worker: Worker | undefined;
  /** `worker` has said it is ready: calls go to it. Until then they fail at once (restarting). */
  private workerReady = false;
  private lastStartedAtMs = 0;
  private restartTimer: NodeJS.Timeout | undefined;
  /** A restarted worker's bound for saying ready (startTimeoutMs). */
  private readyTimer: NodeJS.Timeout | undefined;
  private closing = false;
  private closed: Promise<void> | undefined;
  /** Workers started so far, the first included. */
  private started = 0;

  constructor(options: WorkerJournalOptions) {
    if (!(Number.isInteger(options.callsInFlightMax) && options.callsInFlightMax >= 1)) {
      throw new Error(`callsInFlightMax must be a positive integer, got ${options.callsInFlightMax}`);
    }
    this.options = options;
    // The compiled .js beside this one, or the .ts source under tsx and vitest (infra/workerThreads.ts).
    this.entry = options.workerUrl ?? moduleBeside(import.meta.url, 'journalWorkerThread');
    const grace = options.answerGraceMs ?? journalWorkerAnswerGraceMsDefault;
    // PgJournal's own client-side bounds, plus the grace.
    const bounds = journalClientBoundsMs(options.journal);
    this.commitAnswerMs = bounds.commitMs + grace;
    this.checkAnswerMs = bounds.checkMs + grace;
    this.restartIntervalMs = options.restartIntervalMs ?? journalWorkerRestartIntervalMsDefault;
    this.startTimeoutMs = options.startTimeoutMs ?? startTimeoutMsDefault;
  }

  /** Starts the first worker; resolves once it has loaded, rejects if it cannot. */
  async start(): Promise<void> {
    const worker = this.spawn();
    await new Promise<void>((resolve, reject) => {
      const timer = setTimeout(() => {
        cleanup();
        reject(new Error(`the journal worker did not start within ${this.startTimeoutMs} ms`));
      }, this.startTimeoutMs);
      const onMessage = (message: FromJournalWorker) => {
        if (message.t !== 'ready') return;
        cleanup();
        resolve();
      };
      let failure = '';
      const onError = (error: Error) => {
        failure = `: ${error.message}`;
      };
      const onExit = (code: number) => {
        cleanup();
        reject(new Error(`the journal worker exited with code ${code} before it was ready${failure}`));
      };
      const cleanup = () => {
        clearTimeout(timer);
        worker.off('message', onMessage);
        worker.off('error', onError);
        worker.off('exit', onExit);
      };
      worker.on('message', onMessage);
      worker.on('error', onError);
      worker.on('exit', onExit);
    }).catch(async (error: unknown) => {
      this.closing = true;
      await worker.terminate();
      throw error;
    });
  }

  get callsInFlight(): number {
    return this.pending.size;
  }

  /** Workers started since creation (1 + restarts). */
  get workersStarted(): number {
    return this.started;
  }

  /** The running worker, if any, ready or still starting: tests terminate it to see what a crash does. */
  get currentWorker(): Worker | undefined {
    return this.worker;
  }

  /** A worker runs and has said it is ready: calls go to it (else they fail at once). */
  isWorkerReady(): boolean {
    return this.worker !== undefined && this.workerReady;
  }

  commit(batch: JournalBatch): Promise<JournalCommitResult> {
    const refused = this.refusal();
    if (refused !== undefined) return Promise.resolve({ kind: 'failed', message: `batch ${batch.batchId}: ${refused}` });
    const callId = this.nextCallId++;
    const { message, transfer } = encodeCommit(callId, batch);
    let resolve!: (result: JournalCommitResult) => void;
    const settled = new Promise<JournalCommitResult>((r) => (resolve = r));
    const timer = setTimeout(() => this.noAnswer(callId, this.commitAnswerMs), this.commitAnswerMs);
    this.pending.set(callId, { kind: 'commit', resolve, timer, settled });
    this.worker!.postMessage(message, transfer);
    return settled;
  }

  wasCommitted(batchId: number): Promise<boolean> {
    const refused = this.refusal();
    if (refused !== undefined) return Promise.reject(new Error(`batch ${batchId}: ${refused}`));
    const callId = this.nextCallId++;
    let resolve!: (committed: boolean) => void;
    let reject!: (error: Error) => void;
    const settled = new Promise<boolean>((res, rej) => {
      resolve = res;
      reject = rej;
    });
    const timer = setTimeout(() => this.noAnswer(callId, this.checkAnswerMs), this.checkAnswerMs);
    this.pending.set(callId, { kind: 'check', resolve, reject, timer, settled: settled.catch(() => undefined) });
    this.worker!.postMessage({ t: 'check', callId, batchId } satisfies ToJournalWorker);
    return settled;
  }

  /**
   * Refuses new calls, lets the calls in flight finish (each is bounded), then ends the worker's
   * pool and the worker. Idempotent.
   */
  close(): Promise<void> {
    this.closed ??= this.closeOnce();
    return this.closed;
  }

  private async closeOnce(): Promise<void> {
    this.closing = true;
    clearTimeout(this.restartTimer);
    clearTimeout(this.readyTimer);
    await Promise.all([...this.pending.values()].map((call) => call.settled));
    const worker = this.worker;
    if (worker === undefined) return;
    this.worker = undefined;
    const exited = new Promise<void>((resolve) => worker.once('exit', () => resolve()));
    const poolEnded = new Promise<void>((resolve) => {
      const timer = setTimeout(resolve, closeTimeoutMs);
      worker.on('message', (message: FromJournalWorker) => {
        if (message.t !== 'closed') return;
        clearTimeout(timer);
        resolve();
      });
      worker.once('exit', () => {
        clearTimeout(timer);
        resolve();
      });
    });
    worker.postMessage({ t: 'close' } satisfies ToJournalWorker);
    await poolEnded;
    await worker.terminate();
    await exited;
  }

  private refusal(): string | undefined {
    if (this.closing) return 'the journal is closed';
    if (this.worker === undefined || !this.workerReady) return 'the journal worker is restarting';
    if (this.pending.size >= this.options.callsInFlightMax) return `${this.pending.size} journal calls in flight already (callsInFlightMax)`;
    return undefined;
  }

  private spawn(): Worker {
    const data: JournalWorkerData = {
      url: this.options.url,
      poolMax: this.options.callsInFlightMax,
      applicationName: this.options.applicationName ?? 'livevote-journal',
      journal: this.options.journal,
    };
    const worker = startModuleWorker(this.entry, { workerData: data, name: 'livevote-journal' });
    // The node's stop ends it (close()); it must never be what keeps a process alive.
    worker.unref();
    this.worker = worker;
    this.workerReady = false;
    this.lastStartedAtMs = Date.now();
    this.started++;
    worker.on('message', (message: FromJournalWorker) => this.onMessage(worker, message));
    worker.on('error', (error) => this.options.log.warn({ err: error }, 'the journal worker failed'));
    worker.on('exit', (code) => this.onExit(worker, code));
    return worker;
  }

  private onMessage(worker: Worker, message: FromJournalWorker): void {
    switch (message.t) {
      case 'committed': {
        const call = this.take(message.callId);
        if (call?.kind === 'commit') call.resolve(message.result);
        return;
      }
      case 'checked': {
        const call = this.take(message.callId);
        if (call?.kind === 'check') call.resolve(message.committed);
        return;
      }
      case 'check_failed': {
        const call = this.take(message.callId);
        if (call?.kind === 'check') call.reject(new Error(message.message));
        return;
      }
      case 'log':
        this.options.log.warn({ err: message.error }, message.message);
        return;
      case 'ready':
        if (worker === this.worker) {
          this.workerReady = true;
          clearTimeout(this.readyTimer);
        }
        return;
      case 'closed':
        return;
    }
  }

  private take(callId: number): PendingCall | undefined {
    const call = this.pending.get(callId);
    if (call === undefined) return undefined; // answered after its deadline: given up on already
    this.pending.delete(callId);
    clearTimeout(call.timer);
    return call;
  }

  /**
   * No answer within PgJournal's own bound plus the grace: the worker is stuck (its bound would
   * have answered). The call fails, and so does the worker: terminated, it is started again.
   */
  private noAnswer(callId: number, waitedMs: number): void {
    const call = this.take(callId);
    if (call === undefined) return;
    failCall(call, `no answer from the journal worker within ${waitedMs} ms`);
    const worker = this.worker;
    if (worker !== undefined && !this.closing) {
      this.options.log.warn({ waitedMs }, 'the journal worker did not answer in time; terminating it');
      void worker.terminate();
    }
  }

  private onExit(worker: Worker, code: number): void {
    if (worker !== this.worker) return; // closed, or replaced already
    this.worker = undefined;
    this.workerReady = false;
    clearTimeout(this.readyTimer);
    const calls = [...this.pending.keys()].map((callId) => this.take(callId)!);
    for (const call of calls) failCall(call, `the journal worker exited (code ${code})`);
    if (this.closing) return;
    const delayMs = Math.max(0, this.lastStartedAtMs + this.restartIntervalMs - Date.now());
    this.options.log.warn({ code, callsFailed: calls.length, restartInMs: delayMs, restarts: this.started }, 'the journal worker exited; starting another');
    this.restartTimer = setTimeout(() => {
      this.restartTimer = undefined;
      if (!this.closing) this.restart();
    }, delayMs);
  }

  /** Another worker, terminated (and so started again) if it has not said ready within startTimeoutMs. */
  private restart(): void {
    const worker = this.spawn();
    this.readyTimer = setTimeout(() => {
      this.readyTimer = undefined;
      if (worker !== this.worker || this.workerReady || this.closing) return;
      this.options.log.warn({ startTimeoutMs: this.startTimeoutMs }, 'the journal worker did not start in time; terminating it');
      void worker.terminate();
    }, this.startTimeoutMs);
  }
}

function failCall(call: PendingCall, message: string): void {
  if (call.kind === 'commit') call.resolve({ kind: 'failed', message });
  else call.reject(new Error(message));
}

/** Starts the worker; rejects when it cannot load (a build without its file, say). */
export async function createWorkerJournal(options: WorkerJournalOptions): Promise<WorkerJournal> {
  const journal = new WorkerJournal(options);
  await journal.start();
  return journal;
}
