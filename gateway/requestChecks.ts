// The pure per-request CPU of the vote path, off the main thread: the access token's verification
// (HMAC, payload decode, claims) and the body's JSON.parse and fast check were ~20% of the main
// thread's samples at 400 connections (bench/README.md), and where cores are to spare the main
// thread can be a node's limit (on the 2-core bench box it is not: bench/README.md, "Eighth look";
// so `main` is the default). Routes with `checksOffThread` (gateway/http.ts) hand their
// requests here once the body is in; those whose bodies came in during one turn of the event loop
// go to the worker (gateway/requestChecks.worker.ts) in one message at its end, and come back in one.
// What needs the main thread's state stays there: revoked sessions, roles, abuse guards, routing.
//
// The checks are pure (the secret and the clock), so the main thread can always run them itself,
// with the same answer: when no worker is ready (starting, died, restarting), when too many
// requests wait for it, and for a batch the worker did not answer (it died, or took longer than
// answerTimeoutMs and was ended). A worker that stops is restarted, at most once a
// restartDelayMinMs, the delay doubling while new ones stop before they are ready.
import type { Worker } from 'node:worker_threads';
import { Counter, type Registry } from 'prom-client';
import { createAuthorizationVerifier, type AuthorizationVerification, type AuthorizationVerifier } from './auth/authorization.ts';
import { checkVoteBody } from './votes/voteBody.ts';
import type { Logger } from '../infra/logger.ts';
import { moduleBeside, startModuleWorker } from '../infra/workerThreads.ts';

/**
 * The body checks a worker can run, by name: a route's `checksOffThread` names one, and it must be
 * the route's own `bodyFastPath` (the router checks at registration), so both threads run one function.
 */
export const offThreadBodyChecks = { vote: checkVoteBody } as const satisfies Record<string, (json: unknown) => unknown>;
export type OffThreadBodyCheck = keyof typeof offThreadBodyChecks;

/** One request's checks: as the main thread would have made them. */
export interface CheckedRequest {
  readonly authorization: AuthorizationVerification;
  /**
   * The body as the route's fast path returns it; undefined when it does not accept it (or the
   * token was refused, and the body does not matter): the main thread parses it then, so the
   * schema words the error.
   */
  readonly body: unknown;
}

/** Whoever waits for a request's checks: one of the two is called, once, on the main thread. */
export interface CheckedRequestWaiter {
  checked(result: CheckedRequest): void;
  /** The checks threw (a bug: checkRequest never throws for any input); answered as any exception is. */
  checkFailed(error: unknown): void;
}

/** The token and the body's fast path; never throws for any input. */
export function checkRequest(verify: AuthorizationVerifier, bodyCheck: OffThreadBodyCheck, authorization: string, body: Uint8Array): CheckedRequest {
  const verification = verify(authorization);
  if (!verification.ok || body.length === 0) return { authorization: verification, body: undefined };
  let json: unknown;
  try {
    json = JSON.parse(Buffer.from(body.buffer, body.byteOffset, body.byteLength).toString('utf8'));
  } catch {
    return { authorization: verification, body: undefined };
  }
  return { authorization: verification, body: offThreadBodyChecks[bodyCheck](json) };
}

/** Main thread to worker: one batch. The bodies travel as one transferred buffer. */
export interface CheckBatchMessage {
  readonly batch: number;
  readonly authorizations: readonly string[];
  readonly bodyChecks: readonly OffThreadBodyCheck[];
  readonly bodies: Uint8Array;
  /** Where each request's body ends in `bodies`. */
  readonly bodyEnds: readonly number[];
}

/** Worker to main thread: ready once loaded, then one answer per batch, in order (null: check that one on the main thread). */
export type CheckWorkerMessage =
  | { readonly kind: 'ready' }
  | { readonly kind: 'checked'; readonly batch: number; readonly checked: readonly (CheckedRequest | null)[] };

export interface RequestChecksOptions {
  readonly jwtSecret: string;
  readonly log: Logger;
  readonly metricsRegistry?: Registry;
  /** Requests queued for or in the worker; past it, they are checked on the main thread. */
  readonly waitingMax?: number;
  /** A batch unanswered this long: the worker is taken for stuck and ended, and its requests are checked here. */
  readonly answerTimeoutMs?: number;
  readonly restartDelayMinMs?: number;
  readonly restartDelayMaxMs?: number;
  /** Tests: another worker entry (one that dies, or never answers). */
  readonly workerUrl?: URL;
}

export const requestChecksDefaults = {
  // At 400 connections at most 400 wait; room for bursts, and a bound on a stuck worker's backlog.
  waitingMax: 4096,
  answerTimeoutMs: 2000,
  restartDelayMinMs: 1000,
  restartDelayMaxMs: 30_000,
} as const;

interface WaitingRequest {
  readonly authorization: string;
  readonly body: Buffer;
  readonly bodyCheck: OffThreadBodyCheck;
  readonly waiter: CheckedRequestWaiter;
}

interface SentBatch {
  readonly id: number;
  readonly requests: readonly WaitingRequest[];
  readonly sentAtMs: number;
}

/** Beside this module: the .ts source under tsx and vitest, the compiled .js in dist/. */
const defaultWorkerUrl = moduleBeside(import.meta.url, 'requestChecks.worker');

export class RequestChecks {
  private readonly jwtSecret: string;
  private readonly verifyHere: AuthorizationVerifier;
  private readonly log: Logger;
  private readonly waitingMax: number;
  private readonly answerTimeoutMs: number;
  private readonly restartDelayMinMs: number;
  private readonly restartDelayMaxMs: number;
  private readonly workerUrl: URL;
  private worker: Worker | undefined;
  /** The worker has loaded and said so: until then requests are checked here. */
  private workerReady = false;
  private restartDelayMs: number;
  private restartTimer: NodeJS.Timeout | undefined;
  private readonly watchdog: NodeJS.Timeout;
  private closed = false;
  /** For the next batch, sent at the end of this turn. */
  private queued: WaitingRequest[] = [];
  private flushScheduled = false;
  /** Sent and not answered, oldest first (the worker answers in order). */
  private inFlight: SentBatch[] = [];
  /** Queued plus in flight: bounded by waitingMax. */
  private waiting = 0;
  private nextBatchId = 1;
  private readonly checksTotal: { worker: { inc(count?: number): void }; main: { inc(count?: number): void } } | undefined;
  private readonly workerStartsTotal: { inc(): void } | undefined;
  /** What the tests look at. */
  readonly stats = { batchesSent: 0, checkedInWorker: 0, checkedHere: 0, workerStarts: 0, workerExits: 0 };

  constructor(options: RequestChecksOptions) {
    this.jwtSecret = options.jwtSecret;
    this.verifyHere = createAuthorizationVerifier(options.jwtSecret);
    this.log = options.log.child({ component: 'request-checks' });
    this.waitingMax = options.waitingMax ?? requestChecksDefaults.waitingMax;
    this.answerTimeoutMs = options.answerTimeoutMs ?? requestChecksDefaults.answerTimeoutMs;
    this.restartDelayMinMs = options.restartDelayMinMs ?? requestChecksDefaults.restartDelayMinMs;
    this.restartDelayMaxMs = options.restartDelayMaxMs ?? requestChecksDefaults.restartDelayMaxMs;
    this.restartDelayMs = this.restartDelayMinMs;
    this.workerUrl = options.workerUrl ?? defaultWorkerUrl;
    if (options.metricsRegistry) {
      const checks = new Counter({
        name: 'livevote_request_checks_total',
        help: 'Token and body checks of checksOffThread routes (the vote route), by where they ran: the worker, or the main thread (no worker ready, too many waiting, or its batch re-checked)',
        labelNames: ['thread'] as const,
        registers: [options.metricsRegistry],
      });
      this.checksTotal = { worker: checks.labels({ thread: 'worker' }), main: checks.labels({ thread: 'main' }) };
      this.workerStartsTotal = new Counter({
        name: 'livevote_request_checks_worker_starts_total',
        help: 'Request checks workers started (the first, and one per restart after a worker stopped)',
        registers: [options.metricsRegistry],
      });
    }
    // Unref'd: it must not keep a process alive; it only ends a stuck worker.
    this.watchdog = setInterval(() => this.endStuckWorker(), Math.max(10, Math.floor(this.answerTimeoutMs / 4))).unref();
    this.start();
  }

  /** Requests queued for or in the worker. */
  waitingCount(): number {
    return this.waiting;
  }

  /** True once a worker is loaded and taking batches. */
  isWorkerReady(): boolean {
    return this.workerReady;
  }

  /**
   * Checks a request's authorization header and body: in the worker, answered at a later turn, or
   * here and now when the worker cannot take it. Calls `waiter.checked` exactly once.
   */
  check(authorization: string, body: Buffer, bodyCheck: OffThreadBodyCheck, waiter: CheckedRequestWaiter): void {
    if (!this.workerReady || this.waiting >= this.waitingMax) {
      this.checkHere(authorization, body, bodyCheck, waiter);
      return;
    }
    this.waiting++;
    this.queued.push({ authorization, body, bodyCheck, waiter });
    if (!this.flushScheduled) {
      this.flushScheduled = true;
      setImmediate(this.flush);
    }
  }

  /** Ends the worker; whatever still waits is checked here first. */
  async close(): Promise<void> {
    this.closed = true;
    clearInterval(this.watchdog);
    if (this.restartTimer) clearTimeout(this.restartTimer);
    const worker = this.worker;
    this.detachWorker();
    if (worker) await worker.terminate();
  }

  private readonly flush = (): void => {
    this.flushScheduled = false;
    const requests = this.queued;
    this.queued = [];
    if (requests.length === 0) return;
    // Guarded: setImmediate calls this, so an exception here would end the process.
    try {
      this.send(requests);
    } catch (error) {
      this.log.error({ err: error, requests: requests.length }, 'could not send a batch to the request checks worker; checked on the main thread');
      this.waiting -= requests.length;
      this.recheckHere(requests);
    }
  };

  private send(requests: WaitingRequest[]): void {
    const worker = this.worker;
    if (!worker || !this.workerReady) throw new Error('no worker ready');
    let bytes = 0;
    for (let i = 0; i < requests.length; i++) bytes += requests[i]!.body.length;
    const bodies = new Uint8Array(bytes);
    const authorizations = new Array<string>(requests.length);
    const bodyChecks = new Array<OffThreadBodyCheck>(requests.length);
    const bodyEnds = new Array<number>(requests.length);
    let offset = 0;
    for (let i = 0; i < requests.length; i++) {
      const request = requests[i]!;
      bodies.set(request.body, offset);
      offset += request.body.length;
      authorizations[i] = request.authorization;
      bodyChecks[i] = request.bodyCheck;
      bodyEnds[i] = offset;
    }
    const batch: SentBatch = { id: this.nextBatchId++, requests, sentAtMs: performance.now() };
    const message: CheckBatchMessage = { batch: batch.id, authorizations, bodyChecks, bodies, bodyEnds };
    worker.postMessage(message, [bodies.buffer]);
    this.inFlight.push(batch);
    this.stats.batchesSent++;
  }

  private start(): void {
    this.restartTimer = undefined;
    if (this.closed) return;
    let worker: Worker;
    try {
      worker = startModuleWorker(this.workerUrl, { workerData: { jwtSecret: this.jwtSecret }, name: 'livevote-request-checks' });
    } catch (error) {
      this.log.error({ err: error }, 'could not start the request checks worker; requests are checked on the main thread');
      this.scheduleRestart();
      return;
    }
    this.worker = worker;
    this.stats.workerStarts++;
    this.workerStartsTotal?.inc();
    // Not a reason to keep the process alive: requests waiting on it are, and they keep their sockets.
    worker.unref();
    worker.on('message', (message: CheckWorkerMessage) => {
      if (worker !== this.worker) return;
      try {
        this.received(message);
      } catch (error) {
        // A bug here must not leave requests waiting: end the worker, its batches are checked here.
        this.log.error({ err: error }, 'request checks: could not take the worker\'s answer; ending the worker');
        this.endWorker(worker);
      }
    });
    worker.on('error', (error) => {
      if (worker === this.worker) this.log.error({ err: error }, 'the request checks worker failed');
    });
    worker.on('messageerror', (error) => {
      if (worker !== this.worker) return;
      this.log.error({ err: error }, 'request checks: an answer of the worker could not be read; ending the worker');
      this.endWorker(worker);
    });
    worker.on('exit', (exitCode) => {
      if (worker !== this.worker) return;
      this.stats.workerExits++;
      const waiting = this.waiting;
      this.detachWorker();
      this.log.error(
        { exitCode, waiting, restartInMs: this.restartDelayMs },
        'the request checks worker stopped; its requests were checked on the main thread, as new ones are until it is restarted',
      );
      this.scheduleRestart();
    });
  }

  private received(message: CheckWorkerMessage): void {
    if (message.kind === 'ready') {
      this.workerReady = true;
      this.restartDelayMs = this.restartDelayMinMs;
      this.log.info('request checks worker ready');
      return;
    }
    const batch = this.inFlight[0];
    if (batch === undefined || batch.id !== message.batch || message.checked.length !== batch.requests.length) {
      throw new Error(`the worker answered batch ${message.batch} (${message.checked.length} requests), expected ${batch?.id} (${batch?.requests.length})`);
    }
    this.inFlight.shift();
    this.waiting -= batch.requests.length;
    this.stats.checkedInWorker += batch.requests.length;
    this.checksTotal?.worker.inc(batch.requests.length);
    for (let i = 0; i < batch.requests.length; i++) {
      const request = batch.requests[i]!;
      const checked = message.checked[i];
      if (checked) this.answer(request.waiter, checked);
      else this.checkHere(request.authorization, request.body, request.bodyCheck, request.waiter);
    }
  }

  /** The worker is gone (or going): everything that waited for it is checked here, now. */
  private detachWorker(): void {
    this.worker = undefined;
    this.workerReady = false;
    const batches = this.inFlight;
    const queued = this.queued;
    this.inFlight = [];
    this.queued = [];
    this.waiting = 0;
    for (const batch of batches) this.recheckHere(batch.requests);
    this.recheckHere(queued);
  }

  private endWorker(worker: Worker): void {
    this.detachWorker();
    this.stats.workerExits++;
    worker.terminate().catch(() => {});
    this.scheduleRestart();
  }

  private endStuckWorker(): void {
    const oldest = this.inFlight[0];
    const worker = this.worker;
    if (oldest === undefined || worker === undefined || performance.now() - oldest.sentAtMs < this.answerTimeoutMs) return;
    this.log.error({ waitedMs: Math.round(performance.now() - oldest.sentAtMs), waiting: this.waiting }, 'the request checks worker did not answer in time; ending it');
    this.endWorker(worker);
  }

  private scheduleRestart(): void {
    if (this.closed || this.restartTimer !== undefined) return;
    this.restartTimer = setTimeout(() => this.start(), this.restartDelayMs).unref();
    this.restartDelayMs = Math.min(this.restartDelayMaxMs, this.restartDelayMs * 2);
  }

  private recheckHere(requests: readonly WaitingRequest[]): void {
    for (const request of requests) this.checkHere(request.authorization, request.body, request.bodyCheck, request.waiter);
  }

  private checkHere(authorization: string, body: Buffer, bodyCheck: OffThreadBodyCheck, waiter: CheckedRequestWaiter): void {
    this.stats.checkedHere++;
    this.checksTotal?.main.inc();
    let checked: CheckedRequest;
    try {
      checked = checkRequest(this.verifyHere, bodyCheck, authorization, body);
    } catch (error) {
      this.answer(waiter, undefined, error);
      return;
    }
    this.answer(waiter, checked);
  }

  private answer(waiter: CheckedRequestWaiter, checked: CheckedRequest | undefined, error?: unknown): void {
    try {
      if (checked) waiter.checked(checked);
      else waiter.checkFailed(error);
    } catch (error) {
      // The router's waiter guards itself; a throw here is a bug, and must not stop the others.
      this.log.error({ err: error }, 'request checks: a waiter threw');
    }
  }
}
