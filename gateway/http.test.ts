// The HTTP layer on its own: a uWS app with two routes, driven over real sockets.
import { randomUUID } from 'node:crypto';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { z } from 'zod';
import { uws, type us_listen_socket } from './uws.ts';
import { ApiError } from './errors.ts';
import { answerLater, defineRoute, HttpRouter, type Principal } from './http.ts';
import { ElectionRegistry } from './elections/registry.ts';
import { voteRoutes } from './votes/routes.ts';
import { createMetrics } from '../infra/metrics.ts';
import type { VoteOutcome } from '../actors/shard.ts';
import pino from 'pino';
import { Writable } from 'node:stream';
import { hasResponses, parseHttpResponses, rawExchange, rawRequest, type RawResponse } from '../infra/testing/rawHttp.ts';

const viewer: Principal = { userId: 'u1', voterNumber: 1, role: 'viewer', sessionId: 's1', expiresAtS: 2_000_000_000 };
let base = '';
let port = 0;
let socket: us_listen_socket | undefined;
const metrics = createMetrics({ defaultMetrics: false });
/** What the router logged, one parsed JSON line each. */
const logged: { level: number; code?: string; msg: string; notLoggedSinceLastLine?: number }[] = [];
const log = pino({ level: 'warn' }, new Writable({
  write(chunk: Buffer, _encoding, done) {
    for (const line of chunk.toString().split('\n')) if (line !== '') logged.push(JSON.parse(line));
    done();
  },
}));

beforeAll(async () => {
  const app = uws.App();
  const router = new HttpRouter(app, {
    log,
    metrics,
    authenticate: (header) => {
      if (header === 'Bearer good') return viewer;
      if (header === 'Bearer admin') return { ...viewer, role: 'admin' };
      throw new ApiError(header ? 'invalid_token' : 'unauthenticated');
    },
    clientAddress: { honoursForwardedFor: false, resolve: (ip) => ({ ip, networkKey: ip }) },
    isAccepting: () => true,
  });
  const routes = [
    defineRoute({
      method: 'POST', path: '/echo/{name}', tag: 'test', auth: 'user', summary: 'echo',
      body: z.strictObject({ n: z.number().int() }), bodyBytesMax: 1024,
      responses: { 200: { description: 'ok' } },
      handle: async ({ body, params, principal }) => {
        await new Promise((r) => setTimeout(r, 5));
        return { json: { n: body.n, name: params.name, user: principal?.userId } };
      },
    }),
    defineRoute({
      method: 'GET', path: '/items/{id}', tag: 'test', auth: 'public', summary: 'echoes its parameter',
      responses: { 200: { description: 'ok' } },
      handle: ({ params }) => ({ json: { id: params.id }, headers: { 'cache-control': 'no-store' } }),
    }),
    defineRoute({
      method: 'GET', path: '/admin-only', tag: 'test', auth: ['admin'], summary: 'admin',
      responses: { 200: { description: 'ok' } },
      handle: () => ({ json: { ok: true } }),
    }),
    defineRoute({
      method: 'GET', path: '/shed', tag: 'test', auth: 'public', summary: 'overloaded',
      responses: { 200: { description: 'never' } },
      handle: () => { throw new ApiError('overloaded'); },
    }),
    defineRoute({
      method: 'GET', path: '/boom', tag: 'test', auth: 'public', summary: 'throws',
      responses: { 200: { description: 'never' } },
      handle: () => { throw new Error('kaboom'); },
    }),
    defineRoute({
      method: 'GET', path: '/big', tag: 'test', auth: 'public', summary: 'large body',
      responses: { 200: { description: 'ok' } },
      handle: () => ({ raw: 'x'.repeat(3 * 1024 * 1024), contentType: 'text/plain' }),
    }),
  ];
  for (const route of routes) router.register(route);
  router.registerFallback(routes);
  await new Promise<void>((resolve) => app.listen('127.0.0.1', 0, (s) => { socket = s; port = uws.us_socket_local_port(s); base = `http://127.0.0.1:${port}`; resolve(); }));
});

afterAll(() => { if (socket) uws.us_listen_socket_close(socket); });

const post = (path: string, body: string, headers: Record<string, string> = {}) =>
  fetch(base + path, { method: 'POST', body, headers: { authorization: 'Bearer good', 'content-type': 'application/json', ...headers } });

async function expectError(response: Response, status: number, code: string) {
  expect(response.status).toBe(status);
  const json = (await response.json()) as { error: { code: string; message: string } };
  expect(json.error.code).toBe(code);
  expect(json.error.message.length).toBeGreaterThan(0);
}

describe('HttpRouter', () => {
  it('parses, validates and answers after an await, with a request id', async () => {
    const response = await post('/echo/alice', '{"n":3}');
    expect(response.status).toBe(200);
    expect(response.headers.get('x-request-id')).toMatch(/^[\w-]+$/);
    expect(await response.json()).toEqual({ n: 3, name: 'alice', user: 'u1' });
  });

  it('keeps a valid incoming x-request-id', async () => {
    const response = await post('/echo/a', '{"n":1}', { 'x-request-id': 'trace-123' });
    expect(response.headers.get('x-request-id')).toBe('trace-123');
  });

  it('refuses malformed JSON, wrong types, unknown fields, empty bodies', async () => {
    await expectError(await post('/echo/a', '{"n":'), 400, 'invalid_json');
    await expectError(await post('/echo/a', ''), 400, 'invalid_json');
    await expectError(await post('/echo/a', '{"n":"3"}'), 400, 'validation_failed');
    await expectError(await post('/echo/a', '{"n":3,"x":1}'), 400, 'validation_failed');
    await expectError(await post('/echo/a', '[]'), 400, 'validation_failed');
  });

  it('refuses oversized bodies, by header and by streamed size', async () => {
    await expectError(await post('/echo/a', JSON.stringify({ n: 1, pad: 'x'.repeat(5000) })), 413, 'payload_too_large');
    // A chunked body has no content-length: the limit is enforced while reading.
    const stream = new ReadableStream({ start(c) { c.enqueue(new TextEncoder().encode('{"n":1,"p":"' + 'x'.repeat(4000) + '"}')); c.close(); } });
    const response = await fetch(base + '/echo/a', { method: 'POST', body: stream, duplex: 'half', headers: { authorization: 'Bearer good', 'content-type': 'application/json' } } as RequestInit);
    await expectError(response, 413, 'payload_too_large');
  });

  it('reassembles a body that arrives in several chunks', async () => {
    const enc = new TextEncoder();
    const stream = new ReadableStream({ async start(c) { c.enqueue(enc.encode('{"n":')); await new Promise((r) => setTimeout(r, 20)); c.enqueue(enc.encode('42}')); c.close(); } });
    const response = await fetch(base + '/echo/a', { method: 'POST', body: stream, duplex: 'half', headers: { authorization: 'Bearer good', 'content-type': 'application/json' } } as RequestInit);
    expect(await response.json()).toMatchObject({ n: 42 });
  });

  it('refuses non-JSON content types', async () => {
    await expectError(await post('/echo/a', 'n=1', { 'content-type': 'application/x-www-form-urlencoded' }), 415, 'unsupported_media_type');
  });

  it('authenticates and authorises', async () => {
    await expectError(await post('/echo/a', '{"n":1}', { authorization: '' }), 401, 'unauthenticated');
    await expectError(await post('/echo/a', '{"n":1}', { authorization: 'Bearer forged' }), 401, 'invalid_token');
    await expectError(await fetch(base + '/admin-only', { headers: { authorization: 'Bearer good' } }), 403, 'forbidden');
    expect((await fetch(base + '/admin-only', { headers: { authorization: 'Bearer admin' } })).status).toBe(200);
  });

  it('answers 404 for unknown paths and 405 for known paths with another method', async () => {
    await expectError(await fetch(base + '/nope'), 404, 'route_not_found');
    const response = await fetch(base + '/admin-only', { method: 'DELETE' });
    expect(response.headers.get('allow')).toBe('GET, HEAD');
    await expectError(response, 405, 'method_not_allowed');
  });

  it('logs 5xx answers at most once a second per code, counting the ones it left out', async () => {
    const before = logged.filter((l) => l.code === 'overloaded').length;
    const startedMs = Date.now();
    const statuses = await Promise.all(Array.from({ length: 20 }, () => fetch(`${base}/shed`).then((r) => r.status)));
    const elapsedS = (Date.now() - startedMs) / 1000;
    expect(statuses.every((s) => s === 503)).toBe(true);
    const lines = logged.filter((l) => l.code === 'overloaded').slice(before);
    expect(lines.length).toBeGreaterThanOrEqual(1);
    // One line per started second at most, however slow the machine.
    expect(lines.length).toBeLessThanOrEqual(Math.ceil(elapsedS) + 1);
    const again = await fetch(`${base}/shed`);
    expect(again.status).toBe(503);
    await new Promise((resolve) => setTimeout(resolve, 1100));
    await fetch(`${base}/shed`);
    const last = logged.filter((l) => l.code === 'overloaded').at(-1)!;
    expect(last.notLoggedSinceLastLine).toBeGreaterThan(0);
  });

  it('turns a thrown error into a 500 internal_error without leaking it', async () => {
    const response = await fetch(base + '/boom');
    expect(response.status).toBe(500);
    const text = await response.text();
    expect(text).not.toContain('kaboom');
    expect(JSON.parse(text).error.code).toBe('internal_error');
  });

  it('streams a large body completely', async () => {
    const response = await fetch(base + '/big');
    expect((await response.text()).length).toBe(3 * 1024 * 1024);
  });

  it('counts requests by route and status', async () => {
    const text = await metrics.registry.metrics();
    expect(text).toMatch(/livevote_http_requests_total\{method="POST",route="\/echo\/\{name\}",status="200"\} \d+/);
  });
});

/** One request on its own connection; the answer parsed strictly (a HEAD answer has no body). */
async function exchange(request: Buffer, options: { headRequest?: boolean; untilClosed?: boolean } = {}): Promise<{ response: RawResponse; closedByServer: boolean; extra: number }> {
  const headRequest = options.headRequest ?? false;
  // untilClosed: read until the server closes (a generous deadline, reached only if it never does).
  const result = await rawExchange(port, request, { quietMs: 10_000, ...(options.untilClosed ? {} : { complete: hasResponses(1, { headRequest }) }) });
  const parsed = parseHttpResponses(result.received, { headRequest });
  if (!parsed.ok) throw new Error(`unparseable answer: ${parsed.reason}`);
  const [response] = parsed.responses;
  if (!response) throw new Error(`no answer (closed by server: ${result.closedByServer})`);
  return { response, closedByServer: result.closedByServer, extra: parsed.responses.length - 1 + (parsed.incomplete ? 1 : 0) };
}

const errorCodeOf = (response: RawResponse) => (JSON.parse(response.body.toString()) as { error: { code: string } }).error.code;

describe('HttpRouter at the edge of HTTP', () => {
  it('answers a malformed percent-escape in a path parameter with 400 invalid_path, and keeps serving', async () => {
    for (const escaped of ['%ZZ', '%E0%A4%A', '%', 'ok%2', '%C3%28']) {
      const response = await fetch(`${base}/items/${escaped}`);
      await expectError(response, 400, 'invalid_path');
    }
    expect(await (await fetch(`${base}/items/caf%C3%A9`)).json()).toEqual({ id: 'café' });
  });

  it('answers HEAD wherever GET answers, with the same status and headers and no body', async () => {
    const get = await exchange(rawRequest('GET /items/abc HTTP/1.1', [['Host', 'x']]));
    const head = await exchange(rawRequest('HEAD /items/abc HTTP/1.1', [['Host', 'x']]), { headRequest: true });
    expect(head.response.status).toBe(200);
    expect(head.response.body.length).toBe(0);
    expect(head.extra).toBe(0);
    for (const name of ['content-type', 'content-length', 'cache-control']) {
      expect(head.response.headers.get(name), name).toEqual(get.response.headers.get(name));
    }
    // The HEAD answer is complete: the connection takes the next request (the HEAD answer's own
    // Content-Length announces no body that would follow).
    const next = await rawExchange(port, Buffer.concat([rawRequest('HEAD /items/a HTTP/1.1', [['Host', 'x']]), rawRequest('GET /items/b HTTP/1.1', [['Host', 'x']])]), {
      quietMs: 10_000,
      complete: (received) => received.includes('{"id":"b"}'),
    });
    const headThenGet = parseHttpResponses(next.received.subarray(0, next.received.indexOf('HTTP/1.1', 1)), { headRequest: true });
    expect(headThenGet).toMatchObject({ ok: true, incomplete: false });
    expect(parseHttpResponses(next.received.subarray(next.received.indexOf('HTTP/1.1', 1)))).toMatchObject({ ok: true, incomplete: false, responses: [{ status: 200 }] });
  });

  it('answers HEAD on unknown paths 404 and on other methods\' paths 405, without a body', async () => {
    const unknown = await exchange(rawRequest('HEAD /nope HTTP/1.1', [['Host', 'x']]), { headRequest: true });
    expect([unknown.response.status, unknown.response.body.length, unknown.extra]).toEqual([404, 0, 0]);
    const postOnly = await exchange(rawRequest('HEAD /echo/a HTTP/1.1', [['Host', 'x']]), { headRequest: true });
    expect([postOnly.response.status, postOnly.response.body.length, postOnly.extra]).toEqual([405, 0, 0]);
    expect(postOnly.response.headers.get('allow')).toEqual(['POST']);
  });

  it('refuses two Content-Length headers, conflicting or identical, with 400 and closes the connection', async () => {
    const body = '{"n":1}';
    const headers = (lengths: string[]) => [['Host', 'x'], ['Authorization', 'Bearer good'], ['Content-Type', 'application/json'], ...lengths.map((l) => ['Content-Length', l] as const)] as const;
    for (const lengths of [[String(body.length), String(body.length + 2)], [String(body.length), String(body.length)]]) {
      for (const path of ['/echo/a', '/nope']) {
        const answer = await exchange(rawRequest(`POST ${path} HTTP/1.1`, headers(lengths), body + 'xx'), { untilClosed: true });
        expect(answer.response.status, `${path} ${lengths.join(',')}`).toBe(400);
        expect(errorCodeOf(answer.response)).toBe('duplicate_content_length');
        expect(answer.closedByServer).toBe(true);
      }
    }
    // One Content-Length is still fine.
    const single = await exchange(rawRequest('POST /echo/a HTTP/1.1', headers([String(body.length)]), body));
    expect(single.response.status).toBe(200);
  });
});

describe('the last-resort guard', () => {
  it('answers 500 internal_error, logs and counts whatever a handler lets escape (now or when it answers later), and keeps serving', async () => {
    const electionId = randomUUID();
    const candidateId = randomUUID();
    const registry = new ElectionRegistry();
    await registry.publish({
      electionId, title: 'guard', status: 'open', shardCount: 1, captchaPolicy: 'off', createdAt: new Date(), openedAt: new Date(), closedAt: null,
      candidates: [{ candidateId, candidateIndex: 0, name: 'c0' }],
    });
    const { default: pino } = await import('pino');
    const lines: string[] = [];
    const log = pino({ level: 'error' }, { write: (line: string) => { lines.push(line); } });
    const guardedMetrics = createMetrics({ defaultMetrics: false });
    const app = uws.App();
    const voter: Principal = { ...viewer, userId: randomUUID() };
    const router = new HttpRouter(app, {
      log, metrics: guardedMetrics, authenticate: () => voter,
      // A bug outside any handler's try: the address resolver throws on one header value.
      clientAddress: {
        honoursForwardedFor: true,
        resolve: (ip, forwardedFor) => {
          if (forwardedFor === 'explode') throw new TypeError('resolver bug');
          return { ip, networkKey: ip };
        },
      },
      isAccepting: () => true,
    });
    const routes = [
      defineRoute({ method: 'GET', path: '/ok', tag: 'test', auth: 'public', summary: 'ok', responses: { 200: { description: 'ok' } }, handle: () => ({ json: { ok: true } }) }),
      // A reply that cannot be serialised, after an await: the failure happens while answering.
      defineRoute({
        method: 'GET', path: '/bigint', tag: 'test', auth: 'public', summary: 'unserialisable', responses: { 200: { description: 'never' } },
        handle: async () => { await new Promise((r) => setTimeout(r, 1)); return { json: { n: 1n } }; },
      }),
      // Answered later through ctx.answer / ctx.fail (answerLater), from a timer as a shard's reply comes.
      defineRoute({
        method: 'GET', path: '/later-bigint', tag: 'test', auth: 'public', summary: 'unserialisable, later', responses: { 200: { description: 'never' } },
        handle: (ctx) => { setTimeout(() => ctx.answer({ json: { n: 1n } }), 1); return answerLater; },
      }),
      defineRoute({
        method: 'GET', path: '/later-shed', tag: 'test', auth: 'public', summary: 'overloaded, later', responses: { 200: { description: 'never' } },
        handle: (ctx) => { setTimeout(() => ctx.fail(new ApiError('overloaded')), 1); return answerLater; },
      }),
      defineRoute({
        method: 'GET', path: '/later-twice', tag: 'test', auth: 'public', summary: 'answers, then fails', responses: { 200: { description: 'ok' } },
        handle: (ctx) => {
          setTimeout(() => {
            ctx.answer({ json: { ok: true } });
            ctx.answer({ json: { ok: false } });
            ctx.fail(new Error('after the answer'));
          }, 1);
          return answerLater;
        },
      }),
      // The vote route, its answer's own work throwing (the privacy recorder, in the shard's reply callback).
      ...voteRoutes({
        registry,
        caster: { cast: (_vote, reply) => setTimeout(() => reply({ kind: 'accepted', voteId: randomUUID(), acceptedAtMs: Date.now() } as VoteOutcome), 1) },
        isServing: () => true,
        onAccepted: () => { throw new TypeError('recorder bug'); },
        status: { voteInElection: () => Promise.reject(new Error('unused')), votesOfUser: () => Promise.reject(new Error('unused')) },
      }).slice(0, 1),
    ];
    for (const route of routes) router.register(route);
    router.registerFallback(routes);
    const listen = await new Promise<us_listen_socket>((resolve) => app.listen('127.0.0.1', 0, (s) => resolve(s)));
    const guardedBase = `http://127.0.0.1:${uws.us_socket_local_port(listen)}`;
    try {
      await expectError(await fetch(`${guardedBase}/ok`, { headers: { 'x-forwarded-for': 'explode' } }), 500, 'internal_error');
      await expectError(await fetch(`${guardedBase}/bigint`), 500, 'internal_error');
      await expectError(await fetch(`${guardedBase}/later-bigint`), 500, 'internal_error');
      await expectError(await fetch(`${guardedBase}/later-shed`), 503, 'overloaded');
      const twice = await fetch(`${guardedBase}/later-twice`);
      expect([twice.status, await twice.json()]).toEqual([200, { ok: true }]);
      const vote = { electionId, candidateId, userId: voter.userId };
      await expectError(await fetch(`${guardedBase}/api/v1/votes`, { method: 'POST', body: JSON.stringify(vote), headers: { 'content-type': 'application/json' } }), 500, 'internal_error');
      expect((await fetch(`${guardedBase}/ok`)).status).toBe(200);
      const text = await guardedMetrics.registry.metrics();
      expect(text).toMatch(/livevote_http_handler_errors_total\{route="\/ok"\} 1\n/);
      expect(text).toMatch(/livevote_http_handler_errors_total\{route="\/bigint"\} 1\n/);
      expect(text).toMatch(/livevote_http_handler_errors_total\{route="\/later-bigint"\} 1\n/);
      // The error after the answer is a route bug: logged and counted, the first answer stands.
      expect(text).toMatch(/livevote_http_handler_errors_total\{route="\/later-twice"\} 1\n/);
      expect(text).toMatch(/livevote_http_handler_errors_total\{route="\/api\/v1\/votes"\} 1\n/);
      expect(text).not.toMatch(/livevote_http_handler_errors_total\{route="\/later-shed"\}/);
      expect(lines.map((l) => JSON.parse(l).route)).toEqual(expect.arrayContaining(['/ok', '/bigint', '/later-bigint', '/later-twice', '/api/v1/votes']));
    } finally {
      uws.us_listen_socket_close(listen);
    }
  });
});

describe('access log', () => {
  it('logs one line per request with its request id at debug level', async () => {
    const { default: pino } = await import('pino');
    const lines: string[] = [];
    const log = pino({ level: 'debug' }, { write: (line: string) => { lines.push(line); } });
    const app = uws.App();
    const router = new HttpRouter(app, {
      log, metrics: createMetrics({ defaultMetrics: false }), authenticate: () => viewer,
      clientAddress: { honoursForwardedFor: false, resolve: (ip) => ({ ip, networkKey: ip }) }, isAccepting: () => true,
    });
    const route = defineRoute({ method: 'GET', path: '/ping', tag: 'test', auth: 'public', summary: 'ping', responses: { 200: { description: 'ok' } }, handle: () => ({ json: { ok: true } }) });
    router.register(route);
    router.registerFallback([route]);
    const listen = await new Promise<us_listen_socket>((resolve) => app.listen('127.0.0.1', 0, (s) => resolve(s)));
    try {
      const response = await fetch(`http://127.0.0.1:${uws.us_socket_local_port(listen)}/ping`, { headers: { 'x-request-id': 'trace-log-1' } });
      expect(response.status).toBe(200);
      const entry = lines.map((l) => JSON.parse(l)).find((l) => l.msg === 'request');
      expect(entry).toMatchObject({ requestId: 'trace-log-1', method: 'GET', route: '/ping', status: 200 });
    } finally {
      uws.us_listen_socket_close(listen);
    }
  });
});
