// The front door survives any bytes (issue 10), on the real app over raw sockets: first the
// findings one by one (the URLs that killed the node, HEAD, two Content-Length headers, what uWS
// does itself), then the fuzz. fast-check builds raw HTTP/1.1 requests (request lines,
// methods, versions, paths with percent-escapes, header counts and sizes, duplicate and
// conflicting headers, bodies chunked, truncated, oversized, invalid UTF-8, deeply nested) and
// sends them over node:net to the real app (real port, real Postgres), also on the WebSocket
// upgrade path. For every request: whatever comes back parses as HTTP/1.1, every 4xx/5xx JSON
// body is {"error":{"code"}} with a catalogued code and that code's status, no answer is a
// 500, the last-resort guard counted nothing, and the node still answers /healthz afterwards.
//
// What uWS (the pinned 20.30.0 binary) does itself, before any JavaScript runs, and so what
// "no answer" means here: a request it cannot parse as far as the end of its head (HTTP/1.0 or
// any version but HTTP/1.1, a request-target not starting with '/', no header line at all,
// more than 48 headers, bare LF line ends) is taken for an incomplete one: uWS waits for more
// bytes, closing at once when 4 KB are buffered, else at its 10 s idle timeout. A request with
// headers but no Host, an unknown or lower-case method, Transfer-Encoding with Content-Length,
// a non-numeric Content-Length or broken chunking is closed at once without an answer. Those
// connections get no answer (the client gives up after quietMs), and none of them reaches our
// code; the README says so for operators.
import { randomUUID } from 'node:crypto';
import fc from 'fast-check';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { signAccessToken } from './auth/jwt.ts';
import { errorCatalog } from './errors.ts';
import { call, login, startAppHarness, testAdmin, type AppHarness } from '../infra/testing/appHarness.ts';
import { hasResponses, parseHttpResponses, rawExchange, rawRequest, type RawResponse } from '../infra/testing/rawHttp.ts';
import { createVoters, type TestVoter } from '../infra/testing/voters.ts';

/** Requests sent at once in one property run; each waits at most quietMs for an answer. */
const batchSize = 60;
const quietMs = 1_500;
const httpRuns = 10;
const upgradeRuns = 3;

let h: AppHarness;
let voter: TestVoter;
let adminToken: string;
let adminUserId: string;
let electionId: string;
let candidateIds: string[];

beforeAll(async () => {
  h = await startAppHarness();
  adminToken = await login(h.baseUrl, testAdmin.email, testAdmin.password);
  adminUserId = (await call(h.baseUrl, 'GET', '/api/v1/auth/validate', { token: adminToken })).body.userId;
  [voter] = (await createVoters(h.db.pool, 1, h.secrets.jwtSecret)) as [TestVoter];
  const created = await call(h.baseUrl, 'POST', '/api/v1/admin/elections', {
    token: adminToken, body: { title: 'Fuzzed', candidates: [{ name: 'A' }, { name: 'B' }, { name: 'C' }] },
  });
  electionId = created.body.electionId;
  candidateIds = created.body.candidates.map((c: { candidateId: string }) => c.candidateId);
  await call(h.baseUrl, 'POST', `/api/v1/admin/elections/${electionId}/open`, { token: adminToken });
});
afterAll(async () => {
  await h?.close();
});

/**
 * A fresh viewer and admin for the next batch: a batch may have erased, demoted or logged out
 * the ones it was given, and every later request would stop at 401.
 */
async function renewIdentities(): Promise<void> {
  const [viewer, admin] = (await createVoters(h.db.pool, 2, h.secrets.jwtSecret)) as [TestVoter, TestVoter];
  await h.db.pool.query("UPDATE users SET role = 'admin' WHERE user_id = $1", [admin.userId]);
  voter = viewer;
  adminUserId = admin.userId;
  adminToken = signAccessToken({ sub: admin.userId, vn: admin.voterNumber, role: 'admin', sid: randomUUID() }, h.secrets.jwtSecret, Math.floor(Date.now() / 1000));
}

// ---------------------------------------------------------------------------------------------
// Generators. Each part of a request is mostly right and sometimes broken, so most requests
// reach deep into a route with one thing wrong, and some are garbage from the first byte.

/** `valid` nine times in ten, else one of `broken`. */
function mostly<T>(valid: fc.Arbitrary<T>, ...broken: fc.Arbitrary<T>[]): fc.Arbitrary<T> {
  return fc.oneof({ weight: 9, arbitrary: valid }, { weight: 1, arbitrary: fc.oneof(...broken) });
}

/** A value computed when the request is generated (the ids exist only after beforeAll). */
const late = <T>(value: () => T): fc.Arbitrary<T> => fc.constant(null).map(value);

const percentEscapes = ['%ZZ', '%E0%A4%A', '%', '%%', '%0', '%00', '%C3%28', '%F0%9F%98', '%2F', '%2e%2e', '%C3%A9', '%FF', '%u0041'];

/** Text a database or a parser may choke on: NUL, lone surrogates, quotes, escapes, long runs. */
const riskyText = fc.oneof(
  fc.array(fc.constantFrom('\u0000', 'a', 'b', '\ud800', '\udfff', '\uffff', '\u202e', 'é', '😀', ' ', '\t', '\r\n', '%ZZ', "'--", '\\', '"'), { minLength: 1, maxLength: 8 }).map((a) => a.join('')),
  fc.string({ unit: 'binary', minLength: 1, maxLength: 30 }),
  fc.integer({ min: 100, max: 5000 }).map((n) => 'x'.repeat(n)),
);

const textPiece = fc.oneof(
  fc.string({ maxLength: 40 }),
  fc.string({ unit: 'binary', maxLength: 20 }),
  fc.constantFrom(...percentEscapes),
  fc.uuid().map(String),
  fc.integer({ min: 1, max: 4000 }).map((n) => 'a'.repeat(n)),
);
const garbageText = fc.array(textPiece, { minLength: 1, maxLength: 4 }).map((parts) => parts.join(''));

/** The real id a field or parameter of this name refers to. */
function realIdFor(name: string): fc.Arbitrary<string> {
  if (name === 'candidateId') return fc.nat().map((i) => candidateIds[i % candidateIds.length]!);
  if (name === 'userId') return fc.oneof({ weight: 3, arbitrary: late(() => voter.userId) }, { weight: 1, arbitrary: late(() => adminUserId) });
  return late(() => electionId);
}

const idFor = (name: string) => mostly(realIdFor(name), fc.uuid().map(String), garbageText);

interface JsonSchema {
  readonly type?: string;
  readonly format?: string;
  readonly enum?: readonly unknown[];
  readonly properties?: Readonly<Record<string, JsonSchema>>;
  readonly required?: readonly string[];
  readonly items?: JsonSchema;
  readonly minItems?: number;
  readonly maxItems?: number;
  readonly minimum?: number;
  readonly maximum?: number;
}

/**
 * A value shaped by a route's body schema (from the OpenAPI document, so every route's real
 * fields): mostly of the right type with plausible or risky content, sometimes of another type.
 */
function valueFor(schema: JsonSchema | undefined, name: string): fc.Arbitrary<unknown> {
  const wrong = fc.jsonValue({ maxDepth: 2 });
  if (schema?.enum) return mostly(fc.constantFrom(...schema.enum), riskyText, wrong);
  if (schema?.type === 'string' && schema.format === 'uuid') return mostly(realIdFor(name), fc.uuid().map(String), riskyText, wrong);
  if (schema?.type === 'string') {
    const plausible = name === 'email'
      ? fc.emailAddress()
      : name === 'password' ? fc.string({ minLength: 12, maxLength: 40 }) : fc.string({ minLength: 1, maxLength: 30 });
    return fc.oneof({ weight: 6, arbitrary: plausible }, { weight: 3, arbitrary: riskyText }, { weight: 1, arbitrary: wrong });
  }
  if (schema?.type === 'integer' || schema?.type === 'number') {
    return mostly(fc.integer({ min: schema.minimum ?? 0, max: Math.min(schema.maximum ?? 1_000, 64) }), fc.double(), fc.constantFrom(-1, 2 ** 53, 1e308), wrong);
  }
  if (schema?.type === 'array') {
    return mostly<unknown>(fc.array(valueFor(schema.items, name), { minLength: Math.min(schema.minItems ?? 0, 3), maxLength: Math.min(schema.maxItems ?? 4, 4) }), wrong);
  }
  if (schema?.type === 'object' && schema.properties) {
    const properties = schema.properties;
    const shaped = fc.record(
      Object.fromEntries(Object.keys(properties).map((key) => [key, valueFor(properties[key], key)])),
      { requiredKeys: [...(schema.required ?? [])] as never[] },
    );
    return mostly<unknown>(shaped, fc.tuple(shaped, riskyText, wrong).map(([value, key, extra]) => ({ ...value, [key]: extra })), wrong);
  }
  return wrong;
}

const otherBody: fc.Arbitrary<Buffer> = fc.oneof(
  fc.jsonValue({ maxDepth: 4 }).map((v) => Buffer.from(JSON.stringify(v))),
  fc.integer({ min: 1, max: 20_000 }).map((n) => Buffer.from('['.repeat(n) + ']'.repeat(n))),
  fc.uint8Array({ maxLength: 300 }).map((a) => Buffer.from(a)),
  fc.integer({ min: 9_000, max: 70_000 }).map((n) => Buffer.from(JSON.stringify({ pad: 'x'.repeat(n) }))),
);

interface RouteShape {
  readonly method: string;
  readonly path: string;
  readonly hasQuery: boolean;
  readonly auth: 'none' | 'viewer' | 'admin';
  readonly body: fc.Arbitrary<Buffer> | undefined;
}

interface Operation {
  readonly requestBody?: { readonly content: Readonly<Record<string, { readonly schema: JsonSchema }>> };
  readonly parameters?: readonly { readonly in: string }[];
  readonly security?: unknown;
  readonly 'x-roles'?: readonly string[];
}

/** Every documented operation (the WebSocket upgrade's GET included), as a generator needs it. */
function routeShapes(): RouteShape[] {
  const paths = (h.app.openApiDocument as { paths: Record<string, Record<string, Operation>> }).paths;
  return Object.entries(paths).flatMap(([path, operations]) => Object.entries(operations).map(([method, operation]) => {
    const schema = operation.requestBody?.content['application/json']?.schema;
    return {
      method: method.toUpperCase(),
      path,
      hasQuery: (operation.parameters ?? []).some((p) => p.in === 'query'),
      auth: operation['x-roles'] ? 'admin' : operation.security ? 'viewer' : 'none',
      body: schema ? valueFor(schema, '').map((v) => Buffer.from(JSON.stringify(v) ?? '')) : undefined,
    };
  }));
}

const otherMethod = fc.oneof(
  fc.constantFrom('GET', 'POST', 'PUT', 'DELETE', 'HEAD', 'PATCH', 'OPTIONS', 'TRACE', 'CONNECT'),
  fc.constantFrom('FOO', 'get', 'Post', 'G ET', '', 'GET\u0000'),
  fc.string({ unit: 'binary-ascii', maxLength: 12 }),
);

const garbageTarget = fc.oneof(
  fc.array(textPiece, { maxLength: 5 }).map((parts) => `/${parts.join('/')}`),
  fc.constantFrom('*', 'http://127.0.0.1/healthz', '127.0.0.1:443', '', '//', '/healthz#frag', '/./healthz', '/%2e%2e/healthz', '/healthz?', '/api/v1/results/'),
);
const garbageQuery = fc.array(fc.tuple(textPiece, textPiece), { maxLength: 4 }).map((pairs) => `?${pairs.map(([k, v]) => `${k}=${v}`).join('&')}`);

const tokenFor = (auth: RouteShape['auth']): fc.Arbitrary<string | undefined> => mostly(
  auth === 'none' ? fc.constant(undefined) : late(() => `Bearer ${auth === 'admin' ? adminToken : voter.token}`),
  fc.constant(undefined),
  late(() => `Bearer ${auth === 'admin' ? voter.token : adminToken}`),
  fc.string({ maxLength: 300 }).map((s) => `Bearer ${s}`),
  fc.constantFrom('Basic YTpi', 'Bearer', 'bearer x.y.z', `Bearer ${'x'.repeat(9000)}`),
);

/** Method, target, token and body of a request to one of the real routes. */
const routedParts = fc.nat().chain((pick) => {
  const shapes = routeShapes();
  const route = shapes[pick % shapes.length]!;
  const targetFor = (values: readonly string[], query: string) => {
    let i = 0;
    return route.path.replace(/\{(\w+)\}/g, () => values[i++]!) + query;
  };
  const parameterNames = [...route.path.matchAll(/\{(\w+)\}/g)].map((m) => m[1]!);
  return fc.record({
    method: mostly(route.method === 'GET' ? fc.constantFrom('GET', 'GET', 'HEAD') : fc.constant(route.method), otherMethod),
    target: mostly(
      fc.tuple(fc.tuple(...parameterNames.map(idFor)), mostly(late(() => (route.hasQuery ? `?electionId=${electionId}` : '')), garbageQuery)).map(([values, query]) => targetFor(values, query)),
      garbageTarget,
    ),
    authorization: tokenFor(route.auth),
    body: route.body ? mostly(route.body, otherBody, fc.constant(Buffer.alloc(0))) : mostly(fc.constant(Buffer.alloc(0)), otherBody),
  });
});

type Framing = 'none' | 'length' | 'short-length' | 'long-length' | 'two-lengths' | 'same-two-lengths' | 'bad-length' | 'chunked' | 'bad-chunked' | 'truncated-chunked' | 'chunked-and-length';
const framing = mostly<Framing>(
  fc.constant('length'),
  fc.constantFrom<Framing>('none', 'short-length', 'long-length', 'two-lengths', 'same-two-lengths', 'bad-length', 'chunked', 'bad-chunked', 'truncated-chunked', 'chunked-and-length'),
);

function framed(body: Buffer, how: Framing): { headers: [string, string][]; body: Buffer } {
  const length = String(body.length);
  const chunked = (b: Buffer, end = '0\r\n\r\n') => Buffer.concat([Buffer.from(`${b.length.toString(16)}\r\n`), b, Buffer.from(`\r\n${end}`)]);
  switch (how) {
    case 'none': return { headers: [], body };
    case 'length': return { headers: [['Content-Length', length]], body };
    case 'short-length': return { headers: [['Content-Length', String(Math.max(0, body.length - 3))]], body };
    case 'long-length': return { headers: [['Content-Length', String(body.length + 5)]], body };
    case 'two-lengths': return { headers: [['Content-Length', length], ['Content-Length', String(body.length + 2)]], body: Buffer.concat([body, Buffer.from('xx')]) };
    case 'same-two-lengths': return { headers: [['Content-Length', length], ['Content-Length', length]], body };
    case 'bad-length': return { headers: [['Content-Length', `${length}, ${length}`]], body };
    case 'chunked': return { headers: [['Transfer-Encoding', 'chunked']], body: chunked(body) };
    case 'bad-chunked': return { headers: [['Transfer-Encoding', 'chunked']], body: Buffer.concat([Buffer.from('zz\r\n'), body]) };
    case 'truncated-chunked': return { headers: [['Transfer-Encoding', 'chunked']], body: chunked(body, '').subarray(0, Math.max(0, body.length - 1)) };
    case 'chunked-and-length': return { headers: [['Transfer-Encoding', 'chunked'], ['Content-Length', length]], body: chunked(body) };
  }
}

const headerName = mostly(
  fc.constantFrom('X-Thing', 'Accept', 'Cookie', 'User-Agent', 'X-Forwarded-For', 'X-Request-Id', 'Connection', 'Expect', 'Origin', 'Content-Type', 'Host', 'Authorization', 'Content-Length', 'Transfer-Encoding'),
  fc.string({ unit: 'binary-ascii', minLength: 1, maxLength: 20 }),
);
const headerValue = fc.oneof(
  { weight: 3, arbitrary: fc.string({ maxLength: 60 }) },
  { weight: 1, arbitrary: fc.string({ unit: 'binary', maxLength: 60 }) },
  { weight: 3, arbitrary: fc.constantFrom('close', 'keep-alive', '100-continue', 'application/json', 'text/plain', '127.0.0.1', '10.0.0.1, 203.0.113.7', '\t x \t', '0', '5', 'chunked', 'gzip, chunked', 'curl/8.5.0', 'HeadlessChrome') },
  { weight: 1, arbitrary: fc.integer({ min: 100, max: 12_000 }).map((n) => 'v'.repeat(n)) },
);
const extraHeaders = mostly(
  fc.array(fc.tuple(headerName, headerValue), { maxLength: 2 }),
  fc.array(fc.tuple(headerName, headerValue), { minLength: 3, maxLength: 8 }),
  fc.integer({ min: 40, max: 60 }).map((n) => Array.from({ length: n }, (_, i) => [`X-H${i}`, 'v'] as [string, string])),
);

interface FuzzRequest {
  readonly bytes: Buffer;
  readonly head: boolean;
  /** Responses to expect at most (a second, pipelined request makes two). */
  readonly answers: number;
}

const httpRequest = fc.record({
  parts: routedParts,
  version: mostly(fc.constant('HTTP/1.1'), fc.constantFrom('HTTP/1.0', 'HTTP/2.0', 'HTTP/0.9', 'http/1.1', 'HTTP/1.10', 'HTTP/1.1 ', '', 'HTTP/1.1\u0000')),
  host: mostly<readonly string[]>(fc.constant(['127.0.0.1']), fc.constantFrom([], ['a', 'b'], [''])),
  contentType: mostly(fc.constant('application/json'), fc.constantFrom(undefined, 'application/json; charset=utf-8', 'text/plain', 'application/jsonx', '', 'multipart/form-data; boundary=x')),
  framing,
  extraHeaders,
  lineEnd: mostly(fc.constant('\r\n'), fc.constantFrom('\n', '\r')),
  pipelineHealth: fc.boolean(),
}).map((r): FuzzRequest => {
  const { method, target, authorization } = r.parts;
  const { headers: framingHeaders, body } = framed(r.parts.body, r.framing);
  const headers: [string, string][] = [
    ...r.host.map((host) => ['Host', host] as [string, string]),
    ...(authorization !== undefined ? [['Authorization', authorization] as [string, string]] : []),
    ...(r.contentType !== undefined && body.length > 0 ? [['Content-Type', r.contentType] as [string, string]] : []),
    ...framingHeaders,
    ...r.extraHeaders,
  ];
  const head = `${method} ${target} ${r.version}${r.lineEnd}${headers.map(([n, v]) => `${n}: ${v}${r.lineEnd}`).join('')}${r.lineEnd}`;
  const isHead = method === 'HEAD';
  // A well-formed second request on the same connection, except after HEAD (its answer's
  // framing depends on the first being HEAD, which the parser is told per connection).
  const pipelined = r.pipelineHealth && !isHead;
  const bytes = Buffer.concat([Buffer.from(head, 'latin1'), body, ...(pipelined ? [Buffer.from('GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n')] : [])]);
  return { bytes, head: isHead, answers: pipelined ? 2 : 1 };
});

const upgradeRequest = fc.record({
  id: idFor('electionId'),
  token: mostly(
    fc.constantFrom('voter', 'admin').map((who) => (who === 'admin' ? adminToken : voter.token)),
    fc.constant(''), garbageText, fc.constant('x'.repeat(9000)),
  ),
  tokenIn: fc.constantFrom('query', 'header'),
  key: mostly(fc.base64String({ minLength: 24, maxLength: 24 }), fc.constant(undefined), fc.base64String({ maxLength: 40 }), fc.string({ maxLength: 30 })),
  version: mostly(fc.constant('13'), fc.constantFrom('8', '', undefined)),
  upgrade: mostly(fc.constantFrom('websocket', 'WebSocket'), fc.constantFrom('h2c', undefined)),
  extraHeaders,
  framing: mostly<Framing>(fc.constant('none'), fc.constantFrom<Framing>('two-lengths', 'same-two-lengths', 'length', 'chunked')),
}).map((r): FuzzRequest => {
  const { headers: framingHeaders, body } = framed(Buffer.from(r.framing === 'none' ? '' : '{}'), r.framing);
  const headers: [string, string][] = [['Host', '127.0.0.1'], ['Connection', 'Upgrade']];
  if (r.upgrade !== undefined) headers.push(['Upgrade', r.upgrade]);
  if (r.key !== undefined) headers.push(['Sec-WebSocket-Key', r.key]);
  if (r.version !== undefined) headers.push(['Sec-WebSocket-Version', r.version]);
  if (r.tokenIn === 'header') headers.push(['Authorization', `Bearer ${r.token}`]);
  headers.push(...framingHeaders, ...r.extraHeaders);
  const query = r.tokenIn === 'query' ? `?access_token=${r.token}` : '';
  const head = `GET /api/v1/results/stream/${r.id}${query} HTTP/1.1\r\n${headers.map(([n, v]) => `${n}: ${v}\r\n`).join('')}\r\n`;
  return { bytes: Buffer.concat([Buffer.from(head, 'latin1'), body]), head: false, answers: 1 };
});

// ---------------------------------------------------------------------------------------------
// Checks

const catalog: Readonly<Record<string, { status: number }>> = errorCatalog;

/** Why a response breaks the contract, or undefined when it keeps it. */
function contractBreach(response: RawResponse): string | undefined {
  if (response.status === 500) return `500: ${response.body.toString().slice(0, 200)}`;
  if (response.status < 400) return undefined;
  const contentType = response.headers.get('content-type')?.[0] ?? '';
  if (!contentType.startsWith('application/json')) return `${response.status} without a JSON error body (content-type ${contentType || 'none'})`;
  if (response.body.length === 0) return undefined; // a HEAD answer
  let parsed: unknown;
  try {
    parsed = JSON.parse(response.body.toString());
  } catch {
    return `${response.status} with a body that is not JSON`;
  }
  const code = (parsed as { error?: { code?: unknown } }).error?.code;
  if (typeof code !== 'string' || !(code in catalog)) return `${response.status} with an uncatalogued error code ${JSON.stringify(code)}`;
  if (catalog[code]!.status !== response.status) return `${code} answered ${response.status}, catalogued ${catalog[code]!.status}`;
  return undefined;
}

/** The last-resort guard's counts by route, e.g. {"/api/v1/votes": 1}: empty while it caught nothing. */
async function handlerErrors(): Promise<Record<string, number>> {
  const metric = await h.app.metrics.httpHandlerErrorsTotal.get();
  return Object.fromEntries(metric.values.filter((v) => v.value > 0).map((v) => [String(v.labels.route), v.value]));
}

interface BatchOutcome {
  readonly sent: number;
  readonly answered: number;
}

/** Sends a batch at once; fails on the first contract breach, then checks the node is alive. */
async function sendBatch(batch: readonly FuzzRequest[]): Promise<BatchOutcome> {
  const exchanges = await Promise.all(batch.map((request) =>
    rawExchange(h.port, request.bytes, { quietMs, complete: hasResponses(request.answers, { headRequest: request.head }) })));
  let answered = 0;
  exchanges.forEach((exchange, i) => {
    const request = batch[i]!;
    const shown = JSON.stringify(request.bytes.subarray(0, 300).toString('latin1'));
    const parsed = parseHttpResponses(exchange.received, { headRequest: request.head });
    expect(parsed.ok, `unparseable answer ${JSON.stringify(exchange.received.subarray(0, 200).toString('latin1'))} to ${shown}: ${parsed.ok ? '' : parsed.reason}`).toBe(true);
    if (!parsed.ok) return;
    if (parsed.responses.length > 0) answered++;
    for (const response of parsed.responses) {
      expect(contractBreach(response), `answer to ${shown}`).toBeUndefined();
    }
  });
  expect(await handlerErrors(), 'exceptions caught by the last-resort guard (logged as "unhandled error in handler")').toEqual({});
  expect((await fetch(`${h.baseUrl}/healthz`)).status).toBe(200);
  return { sent: batch.length, answered };
}

// ---------------------------------------------------------------------------------------------
// The findings of issue 10, one by one, before the fuzz.

const upgradeHeaders: [string, string][] = [['Host', 'x'], ['Connection', 'Upgrade'], ['Upgrade', 'websocket'], ['Sec-WebSocket-Key', 'dGhlIHNhbXBsZSBub25jZQ=='], ['Sec-WebSocket-Version', '13']];

async function answerTo(request: Buffer, options: { headRequest?: boolean } = {}): Promise<RawResponse> {
  const exchange = await rawExchange(h.port, request, { quietMs: 10_000, complete: hasResponses(1, options) });
  const parsed = parseHttpResponses(exchange.received, options);
  if (!parsed.ok || parsed.responses.length !== 1 || parsed.incomplete) throw new Error(`not one answer: ${JSON.stringify(exchange.received.toString('latin1').slice(0, 300))}`);
  return parsed.responses[0]!;
}

describe('the requests that killed the node (malformed percent-escapes)', () => {
  it('are answered 400 invalid_path, on HTTP routes and on the WebSocket upgrade, and the node lives', async () => {
    const cases: [string, string][] = [
      ['GET', '/api/v1/results/%ZZ'],
      ['GET', '/api/v1/results/%E0%A4%A'],
      ['GET', '/api/v1/votes/status/%ZZ?electionId=x'],
      ['DELETE', '/api/v1/admin/users/%E0%A4%A'],
      ['HEAD', '/api/v1/elections/%C3%28'],
    ];
    for (const [method, path] of cases) {
      const response = await answerTo(rawRequest(`${method} ${path} HTTP/1.1`, [['Host', 'x'], ['Authorization', `Bearer ${adminToken}`]]), { headRequest: method === 'HEAD' });
      expect(response.status, `${method} ${path}`).toBe(400);
      if (method !== 'HEAD') expect(JSON.parse(response.body.toString()).error.code).toBe('invalid_path');
    }
    const upgrade = await answerTo(rawRequest(`GET /api/v1/results/stream/%ZZ?access_token=${voter.token} HTTP/1.1`, upgradeHeaders));
    expect([upgrade.status, JSON.parse(upgrade.body.toString()).error.code]).toEqual([400, 'invalid_path']);
    expect((await fetch(`${h.baseUrl}/healthz`)).status).toBe(200);
    expect(await handlerErrors()).toEqual({});
  });
});

describe('HEAD', () => {
  it('answers on every GET route with the status and headers GET gets, and no body', async () => {
    const getRoutes = h.app.router.served.filter((r) => r.method === 'GET');
    expect(getRoutes.length).toBeGreaterThan(10);
    // Sign-in metadata is written behind the request: stored between a GET and its HEAD it would
    // grow /api/v1/me/export by a row (seen in CI), so it is stored before the comparison starts.
    await h.app.privacy.metadata.flush();
    for (const route of getRoutes) {
      const path = route.path.replace('{electionId}', electionId).replace('{userId}', voter.userId) + (route.path.includes('status') ? `?electionId=${electionId}` : '');
      const headers: [string, string][] = [['Host', 'x'], ['Authorization', `Bearer ${adminToken}`]];
      const get = await answerTo(rawRequest(`GET ${path} HTTP/1.1`, headers));
      const head = await answerTo(rawRequest(`HEAD ${path} HTTP/1.1`, headers), { headRequest: true });
      expect(head.status, path).toBe(get.status);
      expect(head.body.length, path).toBe(0);
      expect(head.headers.get('content-type'), path).toEqual(get.headers.get('content-type'));
      // The metrics text grows between two scrapes; every other answer is the same size.
      if (route.path !== '/metrics') expect(head.headers.get('content-length'), path).toEqual(get.headers.get('content-length'));
    }
    const unknown = await answerTo(rawRequest('HEAD /nope HTTP/1.1', [['Host', 'x']]), { headRequest: true });
    expect([unknown.status, unknown.body.length]).toEqual([404, 0]);
  });
});

describe('two Content-Length headers', () => {
  const body = () => JSON.stringify({ electionId, candidateId: candidateIds[0], userId: voter.userId });
  const voteWithLengths = (lengths: number[], after: string) => rawRequest('POST /api/v1/votes HTTP/1.1', [
    ['Host', 'x'], ['Authorization', `Bearer ${voter.token}`], ['Content-Type', 'application/json'],
    ...lengths.map((length) => ['Content-Length', String(length)] as [string, string]),
  ], body() + after);
  const stored = async () => Number((await h.db.pool.query('SELECT count(*) FROM votes WHERE election_id = $1', [electionId])).rows[0].count);
  const codes = (received: Buffer) => {
    const parsed = parseHttpResponses(received);
    if (!parsed.ok) throw new Error(parsed.reason);
    return parsed.responses.map((r) => `${r.status} ${JSON.parse(r.body.toString()).error?.code}`);
  };

  it('are refused with 400 duplicate_content_length, nothing is stored, and the connection is closed', async () => {
    const before = await stored();
    for (const lengths of [[body().length, body().length + 2], [body().length, body().length]]) {
      const exchange = await rawExchange(h.port, voteWithLengths(lengths, 'xx'), { quietMs: 10_000 });
      expect(exchange.closedByServer).toBe(true);
      expect(codes(exchange.received)).toEqual(['400 duplicate_content_length']);
    }
    expect(await stored()).toBe(before);
  });

  it('never serve a request smuggled after the body the first length frames', async () => {
    const before = await stored();
    const smuggled = 'GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n';
    const exchange = await rawExchange(h.port, voteWithLengths([body().length, body().length + smuggled.length], smuggled), { quietMs: 10_000 });
    expect(exchange.closedByServer).toBe(true);
    // The connection is closed with the 400 still pending (uWS refuses a request behind an
    // unanswered one), or after it: either way the smuggled request is not answered.
    expect(['', '400 duplicate_content_length']).toContain(codes(exchange.received).join());
    expect(await stored()).toBe(before);
  });
});

describe('what uWS does itself (the pinned binary), before any of our code runs', () => {
  // Closed at once, no answer: nothing of ours is called, so nothing better can be said.
  it.each<[string, Buffer]>([
    ['an unknown method', rawRequest('FOO /healthz HTTP/1.1', [['Host', 'x']])],
    ['a lower-case method', rawRequest('get /healthz HTTP/1.1', [['Host', 'x']])],
    ['headers but no Host', rawRequest('GET /healthz HTTP/1.1', [['Accept', '*/*']])],
    ['Transfer-Encoding with Content-Length', rawRequest('POST /api/v1/votes HTTP/1.1', [['Host', 'x'], ['Transfer-Encoding', 'chunked'], ['Content-Length', '5']], '0\r\n\r\n')],
    ['a Content-Length that is not a number', rawRequest('POST /api/v1/votes HTTP/1.1', [['Host', 'x'], ['Content-Length', '5, 5']], '{"a":')],
  ])('%s: the connection is closed without an answer', async (_name, request) => {
    const exchange = await rawExchange(h.port, request, { quietMs: 10_000 });
    expect([exchange.closedByServer, exchange.received.length]).toEqual([true, 0]);
    expect((await fetch(`${h.baseUrl}/healthz`)).status).toBe(200);
  });

  // Taken for requests whose head has not fully arrived: uWS waits for more bytes (its 10 s idle
  // timeout, or closes once 4 KB are buffered). Not reachable from JavaScript with this binary;
  // the README says so. Checked here: no garbage comes back, the node keeps serving.
  it.each<[string, Buffer]>([
    ['HTTP/1.0', rawRequest('GET /healthz HTTP/1.0', [['Host', 'x']])],
    ['HTTP/1.1 without any header line', rawRequest('GET /healthz HTTP/1.1', [])],
    ['49 headers', rawRequest('GET /healthz HTTP/1.1', [['Host', 'x'], ...Array.from({ length: 48 }, (_, i) => [`X-H${i}`, 'v'] as [string, string])])],
  ])('%s: no answer, nothing malformed, the node keeps serving', async (_name, request) => {
    const exchange = await rawExchange(h.port, request, { quietMs: 300 });
    expect(parseHttpResponses(exchange.received).ok).toBe(true);
    expect((await fetch(`${h.baseUrl}/healthz`)).status).toBe(200);
  });

  it('48 headers are still served', async () => {
    const response = await answerTo(rawRequest('GET /healthz HTTP/1.1', [['Host', 'x'], ...Array.from({ length: 47 }, (_, i) => [`X-H${i}`, 'v'] as [string, string])]));
    expect(response.status).toBe(200);
  });
});

// ---------------------------------------------------------------------------------------------
// The fuzz

/** Runs batches of `request` and checks, besides each batch, that enough was answered to have checked something. */
async function fuzz(request: fc.Arbitrary<FuzzRequest>, runs: number): Promise<void> {
  let sent = 0;
  let answered = 0;
  await fc.assert(
    fc.asyncProperty(fc.array(request, { minLength: batchSize, maxLength: batchSize }), async (batch) => {
      const outcome = await sendBatch(batch);
      sent += outcome.sent;
      answered += outcome.answered;
      await renewIdentities();
    }),
    // Shrinking re-sends whole batches with their quiet waits: the failing request is reported instead.
    { numRuns: runs, endOnFailure: true },
  );
  // Most generated requests are plausible: far more than a handful must have been answered, or
  // the checks above checked nothing.
  expect(answered).toBeGreaterThan(sent / 4);
}

describe('the front door under random bytes', () => {
  it('answers every HTTP request it can parse well-formed, never 500, and stays up', async () => {
    await fuzz(httpRequest, httpRuns);
  }, 120_000);

  it('answers every WebSocket upgrade attempt with a 101 or a catalogued error, and stays up', async () => {
    await fuzz(upgradeRequest, upgradeRuns);
  }, 120_000);
});
