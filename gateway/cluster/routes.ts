// The cluster as an operator sees it: members and the shard map, fresh from the store.
import { z } from 'zod';
import type { ClusterNode } from '../../cluster/clusterNode.ts';
import { defineRoute, type RouteDefinition } from '../http.ts';

const clusterSchema = z.object({
  version: z.number().int(),
  coordinatorNodeId: z.string().nullable(),
  nodes: z.array(z.object({
    nodeId: z.string(), az: z.string(), url: z.string(), status: z.enum(['alive', 'dead', 'left']),
    lastHeartbeatAt: z.string(), startedAt: z.string(), shardsOwned: z.number().int(), incarnation: z.number().int(),
  })),
  shards: z.array(z.object({
    electionId: z.string(), shard: z.number().int(), ownerNodeId: z.string(), epoch: z.number().int(),
    leaseNodeId: z.string().nullable(), mapVersion: z.number().int(),
  })),
});

export function clusterRoutes(deps: { cluster: Pick<ClusterNode, 'adminView'> }): RouteDefinition<unknown, unknown>[] {
  return [
    defineRoute({
      method: 'GET',
      path: '/api/v1/admin/cluster',
      summary: 'The cluster: every member (status, AZ, URL, last heartbeat, shards owned) and the shard map with lease epochs (admin only)',
      tag: 'cluster',
      auth: ['admin'],
      responses: { 200: { description: 'Members and shard map', schema: clusterSchema } },
      handle: async () => ({ json: await deps.cluster.adminView() }),
    }),
  ];
}
