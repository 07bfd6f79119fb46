// The operations routes over real sockets, against a small in-memory ClusterOperations that
// refuses the way the port says (the real one, in Postgres and on a running cluster, is driven by
// gateway/cluster/ops.e2e.test.ts): what each request answers, every refusal's code, bad
// parameters, roles, and a port that fails.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ClusterOperationRefused, type ClusterOperation, type ClusterOperationRequest, type ClusterOperations } from '../../cluster/ports.ts';
import { createMetrics } from '../../infra/metrics.ts';
import { silentLogger } from '../../infra/logger.ts';
import { buildOpenApiDocument } from '../openapi.ts';
import { ApiError } from '../errors.ts';
import { HttpRouter, type Principal } from '../http.ts';
import { uws, type us_listen_socket } from '../uws.ts';
import { clusterOperationRoutes } from './routes.ts';

const electionId = '7f0c1d2e-3a4b-4c5d-8e6f-0123456789ab';
const otherElectionId = '00000000-0000-4000-8000-000000000000';

/** Nodes a (alive), b (alive), c (dead); election 4 shards: 0, 1 on a, 2, 3 on b. */
class MemoryOperations implements ClusterOperations {
  readonly recorded: ClusterOperation[] = [];
  failWith: Error | undefined;
  private readonly nodes = new Map([['node-a', 'alive'], ['node-b', 'alive'], ['node-c', 'dead']]);
  private readonly owners = new Map([[0, 'node-a'], [1, 'node-a'], [2, 'node-b'], [3, 'node-b']]);

  async request(request: ClusterOperationRequest): Promise<ClusterOperation> {
    if (this.failWith) throw this.failWith;
    const nodeId = request.kind === 'move' ? request.toNodeId : request.kind === 'drain' || request.kind === 'undrain' ? request.nodeId : undefined;
    if (request.kind === 'move' && (request.electionId !== electionId || !this.owners.has(request.shard))) {
      throw new ClusterOperationRefused('shard_not_found', `no shard ${request.shard} of election ${request.electionId}`);
    }
    if (nodeId !== undefined && !this.nodes.has(nodeId)) throw new ClusterOperationRefused('node_not_found', `no node ${nodeId}`);
    if (nodeId !== undefined && this.nodes.get(nodeId) !== 'alive') throw new ClusterOperationRefused('node_not_alive', `${nodeId} is not alive`);
    if (request.kind === 'undrain' && !this.recorded.some((o) => o.request.kind === 'drain' && o.request.nodeId === request.nodeId)) {
      throw new ClusterOperationRefused('node_not_draining', `${request.nodeId} is not draining`);
    }
    if (request.kind === 'move' && this.owners.get(request.shard) === request.toNodeId) {
      throw new ClusterOperationRefused('already_there', `shard ${request.shard} is on ${request.toNodeId} already`);
    }
    const operation: ClusterOperation = {
      operationId: this.recorded.length + 1, request, status: 'pending', shardsTotal: 0, shardsMoved: 0,
      requestedAtMs: Date.UTC(2026, 11, 1, 12), finishedAtMs: null, error: null,
    };
    this.recorded.push(operation);
    return operation;
  }

  async list(limit = 20): Promise<readonly ClusterOperation[]> {
    if (this.failWith) throw this.failWith;
    return [...this.recorded].reverse().slice(0, limit);
  }

  async get(operationId: number): Promise<ClusterOperation | undefined> {
    return this.recorded.find((o) => o.operationId === operationId);
  }
}

const admin: Principal = { userId: 'u-admin', voterNumber: 1, role: 'admin', sessionId: 's1', expiresAtS: 2_000_000_000 };
const operations = new MemoryOperations();
const metrics = createMetrics({ defaultMetrics: false });
const routes = clusterOperationRoutes({ operations });
let base = '';
let socket: us_listen_socket | undefined;

beforeAll(async () => {
  const app = uws.App();
  const router = new HttpRouter(app, {
    log: silentLogger(),
    metrics,
    authenticate: (header) => {
      if (header === 'Bearer admin') return admin;
      if (header === 'Bearer viewer') return { ...admin, role: 'viewer' };
      throw new ApiError(header ? 'invalid_token' : 'unauthenticated');
    },
    clientAddress: { honoursForwardedFor: false, resolve: (ip) => ({ ip, networkKey: ip }) },
    isAccepting: () => true,
  });
  for (const route of routes) router.register(route);
  router.registerFallback(routes);
  await new Promise<void>((resolve) => app.listen('127.0.0.1', 0, (s) => { socket = s; base = `http://127.0.0.1:${uws.us_socket_local_port(s)}`; resolve(); }));
});

afterAll(() => { if (socket) uws.us_listen_socket_close(socket); });

async function send(method: string, path: string, body?: unknown, token = 'admin'): Promise<{ status: number; body: any }> {
  const response = await fetch(base + path, {
    method,
    headers: { ...(token ? { authorization: `Bearer ${token}` } : {}), ...(body === undefined ? {} : { 'content-type': 'application/json' }) },
    body: body === undefined ? undefined : typeof body === 'string' ? body : JSON.stringify(body),
  });
  return { status: response.status, body: await response.json() };
}

const movePath = (shard: string | number, election = electionId) => `/api/v1/admin/cluster/shards/${election}/${shard}/move`;

describe('cluster operations API', () => {
  it('records a move, a drain and a balance (202 with the operation) and lists them newest first', async () => {
    const move = await send('POST', movePath(1), { toNodeId: 'node-b' });
    expect(move.status).toBe(202);
    expect(move.body).toEqual({
      operationId: 1, kind: 'move', request: { kind: 'move', electionId, shard: 1, toNodeId: 'node-b' },
      status: 'pending', shardsTotal: 0, shardsMoved: 0, requestedAt: '2026-12-01T12:00:00.000Z', finishedAt: null, error: null,
    });
    const drain = await send('POST', '/api/v1/admin/cluster/nodes/node-a/drain');
    expect([drain.status, drain.body.kind, drain.body.request]).toEqual([202, 'drain', { kind: 'drain', nodeId: 'node-a' }]);
    const balance = await send('POST', '/api/v1/admin/cluster/balance');
    expect([balance.status, balance.body.operationId, balance.body.request]).toEqual([202, 3, { kind: 'balance' }]);

    const listed = await send('GET', '/api/v1/admin/cluster/operations');
    expect(listed.status).toBe(200);
    expect(listed.body.operations.map((o: { operationId: number }) => o.operationId)).toEqual([3, 2, 1]);
    expect((await send('GET', '/api/v1/admin/cluster/operations?limit=1')).body.operations.map((o: { kind: string }) => o.kind)).toEqual(['balance']);
    const one = await send('GET', '/api/v1/admin/cluster/operations/2');
    expect([one.status, one.body]).toEqual([200, drain.body]);
    const undrain = await send('POST', '/api/v1/admin/cluster/nodes/node-a/undrain');
    expect([undrain.status, undrain.body.kind, undrain.body.request]).toEqual([202, 'undrain', { kind: 'undrain', nodeId: 'node-a' }]);
  });

  it('answers each refusal with its own code, and records nothing', async () => {
    const before = operations.recorded.length;
    const cases: [string, string, unknown, number, string][] = [
      ['POST', movePath(1), { toNodeId: 'node-z' }, 404, 'node_not_found'],
      ['POST', movePath(1), { toNodeId: 'node-c' }, 409, 'node_not_alive'],
      ['POST', movePath(0), { toNodeId: 'node-a' }, 409, 'shard_already_there'],
      ['POST', movePath(9), { toNodeId: 'node-b' }, 404, 'shard_not_found'],
      ['POST', movePath(0, otherElectionId), { toNodeId: 'node-b' }, 404, 'shard_not_found'],
      ['POST', '/api/v1/admin/cluster/nodes/node-z/drain', undefined, 404, 'node_not_found'],
      ['POST', '/api/v1/admin/cluster/nodes/node-c/drain', undefined, 409, 'node_not_alive'],
      ['POST', '/api/v1/admin/cluster/nodes/node-z/undrain', undefined, 404, 'node_not_found'],
      ['POST', '/api/v1/admin/cluster/nodes/node-b/undrain', undefined, 409, 'node_not_draining'],
      ['GET', '/api/v1/admin/cluster/operations/999', undefined, 404, 'operation_not_found'],
    ];
    for (const [method, path, body, status, code] of cases) {
      const answer = await send(method, path, body);
      expect([path, answer.status, answer.body.error?.code]).toEqual([path, status, code]);
      expect(answer.body.error.message.length).toBeGreaterThan(5);
    }
    expect(operations.recorded.length).toBe(before);
  });

  it('refuses bad parameters with 400 validation_failed, before the port is asked', async () => {
    const before = operations.recorded.length;
    const cases: [string, string, unknown][] = [
      ['POST', movePath(1, 'not-a-uuid'), { toNodeId: 'node-b' }],
      ['POST', movePath('x'), { toNodeId: 'node-b' }],
      ['POST', movePath('-1'), { toNodeId: 'node-b' }],
      ['POST', movePath('1.5'), { toNodeId: 'node-b' }],
      ['POST', movePath('1e2'), { toNodeId: 'node-b' }],
      ['POST', movePath(1024), { toNodeId: 'node-b' }],
      ['POST', movePath(1), {}],
      ['POST', movePath(1), { toNodeId: 'Node B' }],
      ['POST', movePath(1), { toNodeId: 'node-b', extra: 1 }],
      ['POST', movePath(1), { toNodeId: 42 }],
      ['POST', movePath(1), { toNodeId: 'n'.repeat(41) }],
      ['POST', '/api/v1/admin/cluster/nodes/NODE_A/drain', undefined],
      ['POST', `/api/v1/admin/cluster/nodes/${'n'.repeat(41)}/drain`, undefined],
      ['GET', '/api/v1/admin/cluster/operations/0', undefined],
      ['GET', '/api/v1/admin/cluster/operations/abc', undefined],
      ['GET', '/api/v1/admin/cluster/operations/99999999999999999999', undefined],
      ['GET', '/api/v1/admin/cluster/operations?limit=0', undefined],
      ['GET', '/api/v1/admin/cluster/operations?limit=201', undefined],
      ['GET', '/api/v1/admin/cluster/operations?limit=x', undefined],
      ['GET', '/api/v1/admin/cluster/operations?other=1', undefined],
    ];
    for (const [method, path, body] of cases) {
      const answer = await send(method, path, body);
      expect([path, JSON.stringify(body), answer.status, answer.body.error?.code]).toEqual([path, JSON.stringify(body), 400, 'validation_failed']);
    }
    expect((await send('POST', movePath(1), '{"toNodeId":')).body.error.code).toBe('invalid_json');
    expect(operations.recorded.length).toBe(before);
  });

  it('is for admins only', async () => {
    expect((await send('POST', '/api/v1/admin/cluster/balance', undefined, '')).status).toBe(401);
    const viewer = await send('POST', '/api/v1/admin/cluster/balance', undefined, 'viewer');
    expect([viewer.status, viewer.body.error.code]).toEqual([403, 'forbidden']);
    expect((await send('GET', '/api/v1/admin/cluster/operations', undefined, 'viewer')).status).toBe(403);
  });

  it('answers 500 internal_error when the store fails, and keeps serving', async () => {
    operations.failWith = new Error('connection terminated');
    try {
      const failed = await send('POST', '/api/v1/admin/cluster/balance');
      expect([failed.status, failed.body.error.code]).toEqual([500, 'internal_error']);
    } finally {
      operations.failWith = undefined;
    }
    expect((await send('POST', '/api/v1/admin/cluster/balance')).status).toBe(202);
  });

  it('is documented in the OpenAPI document with its error codes', () => {
    const paths = buildOpenApiDocument(routes, [], { version: 'test' }).paths as Record<string, Record<string, { responses: Record<string, { description: string }> }>>;
    const move = paths['/api/v1/admin/cluster/shards/{electionId}/{shard}/move']!.post!;
    expect(Object.keys(move.responses).sort()).toEqual(['202', '400', '401', '403', '404', '409', '413', '415']);
    expect(move.responses['404']!.description).toContain('shard_not_found');
    expect(move.responses['409']!.description).toContain('shard_already_there');
    expect(paths['/api/v1/admin/cluster/operations/{operationId}']!.get!.responses['404']!.description).toContain('operation_not_found');
    expect(paths['/api/v1/admin/cluster/nodes/{nodeId}/drain']!.post).toBeDefined();
    expect(paths['/api/v1/admin/cluster/nodes/{nodeId}/undrain']!.post).toBeDefined();
    expect(paths['/api/v1/admin/cluster/balance']!.post).toBeDefined();
  });
});
