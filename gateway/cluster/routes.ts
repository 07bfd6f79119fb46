// The cluster as an operator sees it (members and the shard map, fresh from the store), and the
// operations an operator asks of it: move a shard, drain a node (and undo it), balance. A request is recorded
// and answered 202 at once; the coordinator carries it out and its progress is read back with
// GET …/operations/{operationId} (the ops page polls it, the CLI's --wait too).
import { z } from 'zod';
import type { ClusterNode } from '../../cluster/clusterNode.ts';
import { ClusterOperationRefused, type ClusterOperation, type ClusterOperationRequest, type ClusterOperations } from '../../cluster/ports.ts';
import { electionIdParam, shardCountMax } from '../elections/routes.ts';
import { ApiError, type ErrorCode } from '../errors.ts';
import { defineRoute, type RouteDefinition } from '../http.ts';
import type { NodeVoteRates } from './nodeRates.ts';

const clusterSchema = z.object({
  version: z.number().int(),
  coordinatorNodeId: z.string().nullable(),
  nodes: z.array(z.object({
    nodeId: z.string(), az: z.string(), url: z.string(), status: z.enum(['alive', 'dead', 'left']),
    lastHeartbeatAt: z.string(), startedAt: z.string(), shardsOwned: z.number().int(), incarnation: z.number().int(),
    draining: z.boolean(),
    votesPerSecond: z.number().nullable().describe("Votes its shards handled per second (any outcome), from the node's livevote_votes_routed_total; null when unknown (not alive, not answering, or first reading)."),
  })),
  shards: z.array(z.object({
    electionId: z.string(), shard: z.number().int(), ownerNodeId: z.string(), epoch: z.number().int(),
    leaseNodeId: z.string().nullable(), mapVersion: z.number().int(), pinned: z.boolean(),
    replicaNodeIds: z.array(z.string()).describe('Warm replicas of the shard (LIVEVOTE_REPLICAS), in other AZs than the owner\'s when possible; a failover promotes one.'),
    replicas: z.array(z.object({
      nodeId: z.string(),
      phase: z.enum(['live', 'catching_up', 'unknown']).describe('live: applying the owner\'s stream in order; catching_up: reading Postgres after a gap, a new owner epoch or a late start; unknown: no report from its node yet.'),
      epoch: z.number().int().nullable().describe('The owner lease epoch the replica follows.'),
      votesBehind: z.number().int().nullable().describe("The owner's committed votes of the shard as last published to the answering node (every 100 ms when they change) minus the votes the replica held at its last report (every 500 ms); null when either is unknown or their epochs differ."),
      batchesBehind: z.number().int().nullable().describe('Batches the replica received but has not applied yet (buffered while it catches up).'),
      sinceAppliedMs: z.number().int().nullable().describe('Milliseconds since the replica last applied a batch or a catch-up, by its clock, as of its report.'),
      reportAgeMs: z.number().int().nullable().describe("Age of the replica's report at the answering node."),
    })).describe("Each replica's lag."),
  })),
});

export function clusterRoutes(deps: { cluster: Pick<ClusterNode, 'adminView'>; rates: NodeVoteRates }): RouteDefinition<unknown, unknown>[] {
  return [
    defineRoute({
      method: 'GET',
      path: '/api/v1/admin/cluster',
      summary: 'The cluster: every member (status, AZ, URL, last heartbeat, shards owned) and the shard map with lease epochs (admin only)',
      tag: 'cluster',
      auth: ['admin'],
      responses: { 200: { description: 'Members and shard map', schema: clusterSchema } },
      handle: async () => {
        const view = await deps.cluster.adminView();
        const rates = await deps.rates.ratesOf(view.nodes);
        return { json: { ...view, nodes: view.nodes.map((n) => ({ ...n, votesPerSecond: rates.get(n.nodeId) ?? null })) } };
      },
    }),
  ];
}

/** Same rule as LIVEVOTE_NODE_ID (cluster/nodeIdentity.ts). */
const nodeIdSchema = z.string().regex(/^[a-z0-9-]{1,40}$/, 'must be 1-40 of a-z, 0-9, -');
const shardSchema = z.string().regex(/^\d{1,4}$/, 'must be a shard number').transform(Number)
  .pipe(z.number().max(shardCountMax - 1, `must be below ${shardCountMax}`));
const operationIdSchema = z.string().regex(/^[1-9]\d{0,14}$/, 'must be an operation id (a positive integer)').transform(Number);
export const operationsListLimitDefault = 20;
export const operationsListLimitMax = 200;

const requestSchema = z.discriminatedUnion('kind', [
  z.object({ kind: z.literal('move'), electionId: z.string(), shard: z.number().int(), toNodeId: z.string() }),
  z.object({ kind: z.literal('drain'), nodeId: z.string() }),
  z.object({ kind: z.literal('undrain'), nodeId: z.string() }),
  z.object({ kind: z.literal('balance') }),
]);

const operationSchema = z.object({
  operationId: z.number().int(),
  kind: z.enum(['move', 'drain', 'undrain', 'balance']),
  request: requestSchema.describe('What was asked: the shard and its target node (move), the node (drain, undrain), nothing more (balance).'),
  status: z.enum(['pending', 'running', 'done', 'failed']),
  shardsTotal: z.number().int().describe('Shards this operation moves, known once it runs.'),
  shardsMoved: z.number().int().describe('Of those, how many have arrived at their new owner.'),
  requestedAt: z.string(),
  finishedAt: z.string().nullable(),
  error: z.string().nullable().describe('Why it failed (null unless status is failed).'),
});

export type OperationJson = z.infer<typeof operationSchema>;

export function operationJson(operation: ClusterOperation): OperationJson {
  return {
    operationId: operation.operationId,
    kind: operation.request.kind,
    request: { ...operation.request },
    status: operation.status,
    shardsTotal: operation.shardsTotal,
    shardsMoved: operation.shardsMoved,
    requestedAt: new Date(operation.requestedAtMs).toISOString(),
    finishedAt: operation.finishedAtMs === null ? null : new Date(operation.finishedAtMs).toISOString(),
    error: operation.error,
  };
}

const refusalCodes: Record<ClusterOperationRefused['reason'], ErrorCode> = {
  node_not_found: 'node_not_found',
  node_not_alive: 'node_not_alive',
  node_not_draining: 'node_not_draining',
  shard_not_found: 'shard_not_found',
  already_there: 'shard_already_there',
};

function param<T>(schema: z.ZodType<T>, params: Readonly<Record<string, string>>, name: string): T {
  const parsed = schema.safeParse(params[name]);
  if (!parsed.success) {
    const message = parsed.error.issues[0]?.message ?? 'invalid';
    throw new ApiError('validation_failed', `${name}: ${message}.`, { issues: [{ path: `params.${name}`, message }] });
  }
  return parsed.data;
}

/** Records the request; a refusal (nothing recorded) becomes its catalogued 404/409. */
async function requestOperation(operations: ClusterOperations, request: ClusterOperationRequest): Promise<{ status: number; json: OperationJson }> {
  try {
    return { status: 202, json: operationJson(await operations.request(request)) };
  } catch (error) {
    if (error instanceof ClusterOperationRefused) throw new ApiError(refusalCodes[error.reason], error.message);
    throw error;
  }
}

const accepted = { 202: { description: 'Recorded; the coordinator carries it out. Poll GET /api/v1/admin/cluster/operations/{operationId}.', schema: operationSchema } };

export function clusterOperationRoutes(deps: { operations: ClusterOperations }): RouteDefinition<unknown, unknown>[] {
  const { operations } = deps;
  return [
    defineRoute({
      method: 'POST',
      path: '/api/v1/admin/cluster/shards/{electionId}/{shard}/move',
      summary: 'Move one shard to another live node: the old owner hands it off (its pending votes committed, new ones buffered and forwarded) and the new one takes the lease with epoch + 1 (admin only)',
      tag: 'cluster',
      auth: ['admin'],
      body: z.strictObject({ toNodeId: nodeIdSchema.describe('The live node that is to own the shard.') }),
      errors: ['validation_failed', 'shard_not_found', 'node_not_found', 'node_not_alive', 'shard_already_there'],
      responses: accepted,
      handle: ({ params, body }) => requestOperation(operations, {
        kind: 'move', electionId: electionIdParam(params), shard: param(shardSchema, params, 'shard'), toNodeId: body.toNodeId,
      }),
    }),
    defineRoute({
      method: 'POST',
      path: '/api/v1/admin/cluster/nodes/{nodeId}/drain',
      summary: 'Drain a node: it receives no new shard and all of its shards move away, a few at a time; then it can stop (admin only)',
      tag: 'cluster',
      auth: ['admin'],
      errors: ['validation_failed', 'node_not_found', 'node_not_alive'],
      responses: accepted,
      handle: ({ params }) => requestOperation(operations, { kind: 'drain', nodeId: param(nodeIdSchema, params, 'nodeId') }),
    }),
    defineRoute({
      method: 'POST',
      path: '/api/v1/admin/cluster/nodes/{nodeId}/undrain',
      summary: 'End a drain: the node receives shards again (balancing, automatic or asked for, brings them back); a drain of it still running ends failed (admin only)',
      tag: 'cluster',
      auth: ['admin'],
      errors: ['validation_failed', 'node_not_found', 'node_not_alive', 'node_not_draining'],
      responses: accepted,
      handle: ({ params }) => requestOperation(operations, { kind: 'undrain', nodeId: param(nodeIdSchema, params, 'nodeId') }),
    }),
    defineRoute({
      method: 'POST',
      path: '/api/v1/admin/cluster/balance',
      summary: 'Balance the shards across the live nodes and AZs (least-shard allocation, a few moves at a time) (admin only)',
      tag: 'cluster',
      auth: ['admin'],
      responses: accepted,
      handle: () => requestOperation(operations, { kind: 'balance' }),
    }),
    defineRoute({
      method: 'GET',
      path: '/api/v1/admin/cluster/operations',
      summary: 'The latest cluster operations with their progress, newest first (admin only)',
      tag: 'cluster',
      auth: ['admin'],
      query: z.strictObject({
        limit: z.coerce.number().int().min(1).max(operationsListLimitMax).optional()
          .describe(`How many (default ${operationsListLimitDefault}, at most ${operationsListLimitMax}).`),
      }),
      responses: { 200: { description: 'Newest first', schema: z.object({ operations: z.array(operationSchema) }) } },
      handle: async ({ query }) => ({
        json: { operations: (await operations.list(query.limit ?? operationsListLimitDefault)).map(operationJson) },
      }),
    }),
    defineRoute({
      method: 'GET',
      path: '/api/v1/admin/cluster/operations/{operationId}',
      summary: 'One cluster operation and its progress (admin only)',
      tag: 'cluster',
      auth: ['admin'],
      errors: ['validation_failed', 'operation_not_found'],
      responses: { 200: { description: 'The operation', schema: operationSchema } },
      handle: async ({ params }) => {
        const operation = await operations.get(param(operationIdSchema, params, 'operationId'));
        if (!operation) throw new ApiError('operation_not_found');
        return { json: operationJson(operation) };
      },
    }),
  ];
}
