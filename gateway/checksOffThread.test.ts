// A route with `checksOffThread` (gateway/http.ts): its token and body checked in the request
// checks worker (gateway/requestChecks.ts) answers every request exactly as the same route checked
// on the main thread (status, body, content type, in the same precedence of checks), writes nothing
// to a request aborted while the worker had it, and answers through a worker that dies.
import net from 'node:net';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import pino from 'pino';
import { uws, type us_listen_socket } from './uws.ts';
import { ApiError } from './errors.ts';
import { defineRoute, HttpRouter, type HttpDeps, type Principal, type RouteDefinition } from './http.ts';
import { createAuthorizationVerifier, type AuthorizationVerification } from './auth/authorization.ts';
import { accessTokenTtlS, signAccessToken, type AccessTokenSubject } from './auth/jwt.ts';
import { RequestChecks, type RequestChecksOptions } from './requestChecks.ts';
import { checkVoteBody, voteBody } from './votes/voteBody.ts';
import { createMetrics } from '../infra/metrics.ts';

const secret = 'checks-off-thread-test-secret-0123456789abcdef';
const viewer: AccessTokenSubject = { sub: '4f1c2d3e-5a6b-4c7d-8e9f-0a1b2c3d4e5f', vn: 7, role: 'viewer', sid: '0b8f4c2e-4a3b-4c1d-9e2f-1a2b3c4d5e6f' };
const admin: AccessTokenSubject = { ...viewer, role: 'admin', sid: '1b8f4c2e-4a3b-4c1d-9e2f-1a2b3c4d5e6f' };
const revoked: AccessTokenSubject = { ...viewer, sid: '2b8f4c2e-4a3b-4c1d-9e2f-1a2b3c4d5e6f' };
const nowS = () => Math.floor(Date.now() / 1000);
const uuid = '1c2d3e4f-5a6b-4c7d-8e9f-0a1b2c3d4e5f';
const log = pino({ level: 'silent' });

const verify = createAuthorizationVerifier(secret);
/** As the auth feature's: the refusal, or the principal unless its session is revoked. */
function admit(verification: AuthorizationVerification): Principal {
  if (!verification.ok) throw new ApiError(verification.refusal);
  const claims = verification.claims;
  if (claims.sid === revoked.sid) throw new ApiError('session_revoked');
  return { userId: claims.sub, voterNumber: claims.vn, role: claims.role, sessionId: claims.sid, expiresAtS: claims.exp };
}

interface Served {
  port: number;
  readonly router: HttpRouter;
  readonly metrics: ReturnType<typeof createMetrics>;
  readonly checks: RequestChecks | undefined;
  handled: number;
  close(): Promise<void>;
}

async function serve(checksOptions: Partial<RequestChecksOptions> | 'main thread'): Promise<Served> {
  const app = uws.App();
  const metrics = createMetrics({ defaultMetrics: false });
  const checks = checksOptions === 'main thread' ? undefined : new RequestChecks({ jwtSecret: secret, log, ...checksOptions });
  const deps: HttpDeps = {
    log, metrics,
    authenticate: (header) => admit(verify(header)),
    checksOffThread: checks && { checks, admit },
    clientAddress: { honoursForwardedFor: false, resolve: (ip) => ({ ip, networkKey: ip }) },
    isAccepting: () => true,
  };
  const router = new HttpRouter(app, deps);
  const served = { port: 0, router, metrics, checks, handled: 0 } as Served;
  const route = (path: string, auth: RouteDefinition['auth']) => defineRoute({
    method: 'POST', path, tag: 'test', auth, summary: 'a vote-like route', body: voteBody, bodyFastPath: checkVoteBody, checksOffThread: 'vote',
    bodyBytesMax: 1024, responses: { 200: { description: 'ok' } },
    handle: ({ body, principal }) => {
      served.handled++;
      return { json: { body, principal } };
    },
  });
  const routes = [route('/vote', 'user'), route('/admin-vote', ['admin'])];
  for (const r of routes) router.register(r);
  router.registerFallback(routes);
  let socket: us_listen_socket | undefined;
  served.port = await new Promise<number>((resolve) => app.listen('127.0.0.1', 0, (s) => { socket = s; resolve(uws.us_socket_local_port(s)); }));
  served.close = async () => {
    if (socket) uws.us_listen_socket_close(socket);
    await checks?.close();
  };
  return served;
}

async function until(condition: () => boolean, what: string, timeoutMs = 60_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!condition()) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((resolve) => setTimeout(resolve, 10));
  }
}

interface Sent { readonly path: string; readonly authorization: string; readonly contentType: string; readonly body: string; readonly chunked?: boolean; readonly contentLength?: string }

/** What a client sees of the answer; the request id differs by design. */
async function send(port: number, request: Sent): Promise<{ status: number; contentType: string | null; body: string }> {
  const headers: Record<string, string> = { authorization: request.authorization, 'content-type': request.contentType };
  let body: BodyInit = request.body;
  if (request.chunked) {
    const bytes = new TextEncoder().encode(request.body);
    body = new ReadableStream({ start(c) { c.enqueue(bytes.slice(0, 10)); c.enqueue(bytes.slice(10)); c.close(); } });
  }
  const response = await fetch(`http://127.0.0.1:${port}${request.path}`, { method: 'POST', headers, body, duplex: 'half' } as RequestInit);
  return { status: response.status, contentType: response.headers.get('content-type'), body: await response.text() };
}

function requests(): Sent[] {
  const bearer = (subject: AccessTokenSubject, atS = nowS()) => `Bearer ${signAccessToken(subject, secret, atS)}`;
  const authorizations = [
    bearer(viewer), bearer(admin), bearer(revoked), bearer(viewer, nowS() - accessTokenTtlS - 60),
    `Bearer ${signAccessToken(viewer, 'another-secret-0123456789abcdef-0123', nowS())}`, 'Bearer eyJhbGciOiJub25lIn0.e30.', 'Bearer x', 'Basic abc', '',
  ];
  const valid = JSON.stringify({ electionId: uuid, candidateId: uuid, userId: viewer.sub });
  const bodies = [valid, JSON.stringify({ electionId: uuid, candidateId: uuid, userId: viewer.sub, captchaToken: 'c' }), '{"electionId":', '', '[]', '{"electionId":"x"}', JSON.stringify({ pad: 'x'.repeat(2000) })];
  const out: Sent[] = [];
  for (const path of ['/vote', '/admin-vote']) {
    for (const authorization of authorizations) {
      for (const body of bodies) out.push({ path, authorization, contentType: 'application/json', body });
      out.push({ path, authorization, contentType: 'text/plain', body: valid });
      out.push({ path, authorization, contentType: 'application/json', body: JSON.stringify({ pad: 'x'.repeat(2000) }), chunked: true });
      out.push({ path, authorization, contentType: 'application/json', body: valid, chunked: true });
    }
  }
  return out;
}

describe('checksOffThread', () => {
  let inWorker: Served;
  let onMain: Served;
  beforeAll(async () => {
    [inWorker, onMain] = await Promise.all([serve({}), serve('main thread')]);
    await until(() => inWorker.checks!.isWorkerReady(), 'the worker');
  });
  afterAll(async () => {
    await inWorker?.close();
    await onMain?.close();
  });

  it('answers every request as the main thread does, in the same precedence of checks', async () => {
    const list = requests();
    const statuses = new Set<number>();
    // A few at a time, so the worker gets batches of several.
    for (let i = 0; i < list.length; i += 8) {
      const slice = list.slice(i, i + 8);
      const [worker, main] = await Promise.all([Promise.all(slice.map((r) => send(inWorker.port, r))), Promise.all(slice.map((r) => send(onMain.port, r)))]);
      for (let j = 0; j < slice.length; j++) {
        expect(worker[j], JSON.stringify(slice[j]).slice(0, 200)).toEqual(main[j]);
        statuses.add(main[j]!.status);
      }
    }
    expect([...statuses].sort()).toEqual([200, 400, 401, 403, 413, 415]);
    expect(inWorker.checks!.stats.checkedInWorker).toBeGreaterThan(0);
    expect(inWorker.checks!.stats.batchesSent).toBeLessThan(inWorker.checks!.stats.checkedInWorker);
    expect(inWorker.handled).toBe(onMain.handled);
    expect(await inWorker.metrics.registry.getSingleMetricAsString('livevote_http_handler_errors_total')).not.toMatch(/} \d/);
  });
});

describe('a checksOffThread request aborted while the worker has it', () => {
  it('is not written to, and its handler does not run', async () => {
    // A worker that never answers: the request waits until answerTimeoutMs ends it and it is checked here.
    const served = await serve({ workerUrl: new URL('./requestChecks.faultyWorker.ts?mode=silent', import.meta.url), answerTimeoutMs: 500, restartDelayMinMs: 600_000 });
    try {
      await until(() => served.checks!.isWorkerReady(), 'the worker');
      const body = JSON.stringify({ electionId: uuid, candidateId: uuid, userId: viewer.sub });
      const socket = net.connect(served.port, '127.0.0.1');
      const received: Buffer[] = [];
      socket.on('data', (chunk) => received.push(chunk));
      socket.on('error', () => {});
      await new Promise<void>((resolve) => socket.on('connect', resolve));
      socket.write(`POST /vote HTTP/1.1\r\nhost: x\r\nauthorization: Bearer ${signAccessToken(viewer, secret, nowS())}\r\ncontent-type: application/json\r\ncontent-length: ${Buffer.byteLength(body)}\r\n\r\n${body}`);
      await until(() => served.checks!.stats.batchesSent === 1, 'the batch');
      socket.destroy();
      await until(() => served.router.inFlightCount() === 0, 'the abort');
      await until(() => served.checks!.stats.checkedHere === 1, 'the re-check');
      expect(served.handled).toBe(0);
      expect(received).toEqual([]);
      expect(await served.metrics.registry.getSingleMetricAsString('livevote_http_handler_errors_total')).not.toMatch(/} \d/);
    } finally {
      await served.close();
    }
  });
});

describe('a checksOffThread route whose worker dies with its batch', () => {
  it('answers from the main thread', async () => {
    const served = await serve({ workerUrl: new URL('./requestChecks.faultyWorker.ts?mode=exit', import.meta.url), restartDelayMinMs: 600_000 });
    try {
      await until(() => served.checks!.isWorkerReady(), 'the worker');
      const valid = JSON.stringify({ electionId: uuid, candidateId: uuid, userId: viewer.sub });
      const sent = { path: '/vote', authorization: `Bearer ${signAccessToken(viewer, secret, nowS())}`, contentType: 'application/json', body: valid };
      const answers = await Promise.all([send(served.port, sent), send(served.port, { ...sent, body: '{' })]);
      expect(answers.map((a) => a.status)).toEqual([200, 400]);
      expect(JSON.parse(answers[0]!.body).principal.userId).toBe(viewer.sub);
      expect(served.checks!.stats).toMatchObject({ checkedInWorker: 0, checkedHere: 2, workerExits: 1 });
    } finally {
      await served.close();
    }
  });
});

describe('registering a checksOffThread route', () => {
  it('refuses one whose bodyFastPath is not the worker\'s check', () => {
    const router = new HttpRouter(uws.App(), { log, metrics: createMetrics({ defaultMetrics: false }), authenticate: () => { throw new ApiError('unauthenticated'); }, clientAddress: { honoursForwardedFor: false, resolve: () => undefined }, isAccepting: () => true });
    expect(() => router.register(defineRoute({
      method: 'POST', path: '/x', tag: 'test', auth: 'user', summary: 'x', body: voteBody, bodyFastPath: () => undefined, checksOffThread: 'vote',
      responses: { 200: { description: 'ok' } }, handle: () => ({ json: {} }),
    }))).toThrow(/checksOffThread/);
  });
});
