// Health, readiness, metrics and the API description: what load balancers, Prometheus and
// client generators read. Tagged 'operations' so they keep answering while the node drains.
import { z } from 'zod';
import { defineRoute, type RouteDefinition } from './http.ts';
import type { Metrics } from '../infra/metrics.ts';
import type { Pool } from '../persistence/db.ts';

export interface OperationsDeps {
  readonly pool: Pool;
  readonly metrics: Metrics;
  readonly isAccepting: () => boolean;
  /** Serialised once at build time: the route table does not change while running. */
  readonly openApiJson: () => string;
}

const healthSchema = z.object({ status: z.literal('ok') });
const readySchema = z.object({ status: z.enum(['ready', 'not_ready']), checks: z.record(z.string(), z.string()) });

export function operationsRoutes(deps: OperationsDeps): RouteDefinition<unknown, unknown>[] {
  return [
    defineRoute({
      method: 'GET', path: '/healthz', tag: 'operations', auth: 'public',
      summary: 'Liveness: the process is up and its event loop answers.',
      responses: { 200: { description: 'Alive', schema: healthSchema } },
      handle: () => ({ json: { status: 'ok' } }),
    }),
    defineRoute({
      method: 'GET', path: '/readyz', tag: 'operations', auth: 'public',
      summary: 'Readiness: accepting traffic and the database answers.',
      responses: {
        200: { description: 'Ready', schema: readySchema },
        503: { description: 'Not ready (starting, draining, or database unreachable)', schema: readySchema },
      },
      handle: async () => {
        const checks: Record<string, string> = { accepting: deps.isAccepting() ? 'ok' : 'draining' };
        try {
          await deps.pool.query('SELECT 1');
          checks.database = 'ok';
        } catch (error) {
          checks.database = `unreachable: ${(error as Error).message}`;
        }
        const ready = Object.values(checks).every((v) => v === 'ok');
        return { status: ready ? 200 : 503, json: { status: ready ? 'ready' : 'not_ready', checks } };
      },
    }),
    defineRoute({
      method: 'GET', path: '/metrics', tag: 'operations', auth: 'public',
      summary: 'Prometheus metrics in the text exposition format.',
      responses: { 200: { description: 'Metrics text' } },
      handle: async () => ({ raw: await deps.metrics.registry.metrics(), contentType: deps.metrics.registry.contentType }),
    }),
    defineRoute({
      method: 'GET', path: '/api/v1/openapi.json', tag: 'operations', auth: 'public',
      summary: 'This OpenAPI 3.1 document.',
      responses: { 200: { description: 'OpenAPI document' } },
      handle: () => ({ raw: deps.openApiJson(), contentType: 'application/json' }),
    }),
  ];
}
