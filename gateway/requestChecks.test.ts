// The request checks worker (gateway/requestChecks.ts): its answers are the main thread's, a turn's
// requests go in one batch, and whatever happens to the worker every request is answered once.
import { afterEach, describe, expect, it } from 'vitest';
import pino from 'pino';
import { createAuthorizationVerifier } from './auth/authorization.ts';
import { accessTokenTtlS, signAccessToken, type AccessTokenSubject } from './auth/jwt.ts';
import { checkRequest, RequestChecks, type CheckedRequest, type RequestChecksOptions } from './requestChecks.ts';

const secret = 'request-checks-test-secret-0123456789abcdef';
const subject: AccessTokenSubject = { sub: '4f1c2d3e-5a6b-4c7d-8e9f-0a1b2c3d4e5f', vn: 7, role: 'viewer', sid: '0b8f4c2e-4a3b-4c1d-9e2f-1a2b3c4d5e6f' };
const nowS = () => Math.floor(Date.now() / 1000);
const uuid = '1c2d3e4f-5a6b-4c7d-8e9f-0a1b2c3d4e5f';
const validBody = JSON.stringify({ electionId: uuid, candidateId: uuid, userId: subject.sub });

/** Authorization headers and bodies, good and bad in the ways that give different answers. */
function requests(): { authorization: string; body: Buffer }[] {
  const good = `Bearer ${signAccessToken(subject, secret, nowS())}`;
  const authorizations = [
    good,
    `bearer ${signAccessToken(subject, secret, nowS())}`,
    `Bearer ${signAccessToken(subject, secret, nowS() - accessTokenTtlS - 60)}`,
    `Bearer ${signAccessToken(subject, 'another-secret-0123456789abcdef-0123', nowS())}`,
    'Bearer eyJhbGciOiJub25lIn0.e30.',
    'Bearer not-a-token',
    'Basic dXNlcjpwYXNz',
    '',
  ];
  const bodies = [validBody, JSON.stringify({ electionId: uuid, candidateId: uuid, userId: uuid, captchaToken: 'x' }), '{"electionId":', '', '[]', '{"electionId":"nope"}', '\u00ff\u0000'];
  const out: { authorization: string; body: Buffer }[] = [];
  for (const body of bodies) out.push({ authorization: good, body: Buffer.from(body) });
  for (const authorization of authorizations) out.push({ authorization, body: Buffer.from(validBody) });
  return out;
}

const log = pino({ level: 'silent' });
const opened: RequestChecks[] = [];
function open(options: Partial<RequestChecksOptions> = {}): RequestChecks {
  const checks = new RequestChecks({ jwtSecret: secret, log, ...options });
  opened.push(checks);
  return checks;
}
afterEach(async () => {
  for (const checks of opened.splice(0)) await checks.close();
});

async function until(condition: () => boolean, what: string, timeoutMs = 60_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!condition()) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((resolve) => setTimeout(resolve, 10));
  }
}

/** Submits the requests in one turn; resolves with each one's answer, and how many came synchronously. */
function checkAll(checks: RequestChecks, list: readonly { authorization: string; body: Buffer }[]): { answers: Promise<CheckedRequest[]>; synchronous: number } {
  const answers: (CheckedRequest | undefined)[] = new Array(list.length);
  let answered = 0;
  let resolve!: (value: CheckedRequest[]) => void;
  const all = new Promise<CheckedRequest[]>((r) => (resolve = r));
  list.forEach(({ authorization, body }, i) => {
    checks.check(authorization, body, 'vote', {
      checked(result) {
        expect(answers[i]).toBeUndefined();
        answers[i] = result;
        if (++answered === list.length) resolve(answers as CheckedRequest[]);
      },
      checkFailed(error) {
        throw error;
      },
    });
  });
  const synchronous = answered;
  if (list.length === 0) resolve([]);
  return { answers: all, synchronous };
}

const here = createAuthorizationVerifier(secret);
const expected = (list: readonly { authorization: string; body: Buffer }[]) => list.map(({ authorization, body }) => checkRequest(here, 'vote', authorization, body));

/** A turn's requests go to the worker in one batch, which it does not answer: all are checked here. */
async function expectBatchCheckedHere(checks: RequestChecks): Promise<void> {
  await until(() => checks.isWorkerReady(), 'the worker');
  const list = requests();
  const { answers, synchronous } = checkAll(checks, list);
  expect(synchronous).toBe(0);
  expect(await answers).toEqual(expected(list));
  expect(checks.stats).toMatchObject({ checkedInWorker: 0, checkedHere: list.length, workerExits: 1 });
  expect(checks.waitingCount()).toBe(0);
}

describe('RequestChecks', () => {
  it('answers a turn\'s requests in one batch, each as the main thread would', async () => {
    const checks = open();
    await until(() => checks.isWorkerReady(), 'the worker');
    const list = requests();
    const { answers, synchronous } = checkAll(checks, list);
    expect(synchronous).toBe(0);
    const got = await answers;
    expect(got).toEqual(expected(list));
    expect(got[0]!.authorization.ok).toBe(true);
    expect(got[0]!.body).toEqual(JSON.parse(validBody));
    expect(checks.stats).toMatchObject({ batchesSent: 1, checkedInWorker: list.length, checkedHere: 0 });
    expect(checks.waitingCount()).toBe(0);
  });

  it('checks on the main thread, at once, until the worker is ready and past waitingMax', async () => {
    const checks = open({ waitingMax: 3 });
    const list = requests().slice(0, 5);
    if (!checks.isWorkerReady()) {
      const before = checkAll(checks, list);
      expect(before.synchronous).toBe(list.length);
      expect(await before.answers).toEqual(expected(list));
    }
    await until(() => checks.isWorkerReady(), 'the worker');
    const sentBefore = checks.stats.batchesSent;
    const { answers, synchronous } = checkAll(checks, list);
    expect(synchronous).toBe(2);
    expect(checks.waitingCount()).toBe(3);
    expect(await answers).toEqual(expected(list));
    expect(checks.stats.batchesSent).toBe(sentBefore + 1);
    expect(checks.waitingCount()).toBe(0);
  });

  it('re-checks on the main thread the batch of a worker that dies, and restarts it', async () => {
    const checks = open({ workerUrl: new URL('./requestChecks.faultyWorker.ts?mode=exit', import.meta.url), restartDelayMinMs: 20, restartDelayMaxMs: 40 });
    await expectBatchCheckedHere(checks);
    // Restarted, and dies again on its next batch: every request is still answered.
    await until(() => checks.stats.workerStarts >= 2 && checks.isWorkerReady(), 'the restart');
    const list = requests();
    const again = checkAll(checks, list);
    expect(await again.answers).toEqual(expected(list));
  });

  it('restarts a dead worker no sooner than restartDelayMinMs', async () => {
    const checks = open({ workerUrl: new URL('./requestChecks.faultyWorker.ts?mode=exit', import.meta.url), restartDelayMinMs: 600_000 });
    await until(() => checks.isWorkerReady(), 'the worker');
    await checkAll(checks, requests()).answers;
    await until(() => checks.stats.workerExits === 1, 'the exit');
    await new Promise((resolve) => setTimeout(resolve, 300));
    expect(checks.stats.workerStarts).toBe(1);
    const { synchronous } = checkAll(checks, requests());
    expect(synchronous).toBe(requests().length);
  });

  it('ends a worker that does not answer within answerTimeoutMs and re-checks its batch', async () => {
    const checks = open({ workerUrl: new URL('./requestChecks.faultyWorker.ts?mode=silent', import.meta.url), answerTimeoutMs: 200, restartDelayMinMs: 600_000 });
    await expectBatchCheckedHere(checks);
  });

  it('checks on the main thread while a worker never gets ready', async () => {
    const checks = open({ workerUrl: new URL('./requestChecks.faultyWorker.ts?mode=never-ready', import.meta.url) });
    await until(() => checks.stats.workerStarts === 1, 'the start');
    const list = requests();
    const { answers, synchronous } = checkAll(checks, list);
    expect(synchronous).toBe(list.length);
    expect(await answers).toEqual(expected(list));
  });

  it('answers what is waiting when closed', async () => {
    const checks = open({ workerUrl: new URL('./requestChecks.faultyWorker.ts?mode=silent', import.meta.url) });
    await until(() => checks.isWorkerReady(), 'the worker');
    const list = requests();
    const { answers } = checkAll(checks, list);
    await new Promise((resolve) => setImmediate(resolve));
    expect(checks.stats.batchesSent).toBe(1);
    await checks.close();
    expect(await answers).toEqual(expected(list));
  });
});
