// The OpenAPI 3.1 document is generated from the same route table the server registers, with
// request and response schemas converted from the zod schemas that validate them, so the doc
// cannot drift from what is validated. gateway/openapi.test.ts checks every served route is in it.
import { z } from 'zod';
import { errorCatalog, type ErrorCode } from './errors.ts';
import type { RouteDefinition } from './http.ts';

/** Routes the router does not own (WebSocket upgrades) but that must be documented too. */
export interface ExtraPathDoc {
  readonly path: string;
  readonly method: 'get';
  readonly operation: Record<string, unknown>;
}

const genericErrors: Record<string, ErrorCode[]> = {
  public: ['route_not_found'],
  user: ['unauthenticated', 'invalid_token', 'token_expired', 'unsupported_token_algorithm', 'session_revoked'],
};

function jsonSchemaOf(schema: z.ZodType, io: 'input' | 'output'): unknown {
  return z.toJSONSchema(schema, { io, unrepresentable: 'any', target: 'draft-2020-12' });
}

const errorSchema = {
  type: 'object',
  required: ['error'],
  properties: {
    error: {
      type: 'object',
      required: ['code', 'message'],
      properties: {
        code: { type: 'string', enum: Object.keys(errorCatalog) },
        message: { type: 'string' },
        details: {},
      },
    },
  },
};

export function buildOpenApiDocument(
  routes: readonly RouteDefinition<unknown, unknown>[],
  extras: readonly ExtraPathDoc[],
  info: { version: string },
): Record<string, unknown> {
  const paths: Record<string, Record<string, unknown>> = {};
  for (const route of routes) {
    const parameters: unknown[] = [...route.path.matchAll(/\{(\w+)\}/g)].map((m) => ({
      name: m[1], in: 'path', required: true, schema: { type: 'string' },
    }));
    if (route.query) {
      const querySchema = jsonSchemaOf(route.query, 'input') as { properties?: Record<string, unknown>; required?: string[] };
      for (const [name, schema] of Object.entries(querySchema.properties ?? {})) {
        parameters.push({ name, in: 'query', required: querySchema.required?.includes(name) ?? false, schema });
      }
    }
    const responses: Record<string, unknown> = {};
    for (const [status, doc] of Object.entries(route.responses)) {
      responses[status] = doc.schema
        ? { description: doc.description, content: { 'application/json': { schema: jsonSchemaOf(doc.schema, 'output') } } }
        : { description: doc.description };
    }
    const errorCodes = new Set<ErrorCode>(route.errors ?? []);
    if (route.body) for (const code of ['invalid_json', 'validation_failed', 'payload_too_large', 'unsupported_media_type'] as const) errorCodes.add(code);
    if (route.query) errorCodes.add('validation_failed');
    if (route.path.includes('{')) errorCodes.add('invalid_path');
    if (route.auth !== 'public') for (const code of genericErrors.user ?? []) errorCodes.add(code);
    if (Array.isArray(route.auth)) errorCodes.add('forbidden');
    const byStatus = new Map<number, ErrorCode[]>();
    for (const code of errorCodes) {
      const status = errorCatalog[code].status;
      byStatus.set(status, [...(byStatus.get(status) ?? []), code]);
    }
    for (const [status, codes] of byStatus) {
      responses[String(status)] = {
        description: `Error: ${codes.join(', ')}`,
        content: { 'application/json': { schema: errorSchema } },
      };
    }
    const operation: Record<string, unknown> = {
      summary: route.summary,
      tags: [route.tag],
      operationId: `${route.method.toLowerCase()}${route.path.replace(/[{}]/g, '').replace(/[^a-zA-Z0-9]+(.)?/g, (_m, c: string | undefined) => (c ? c.toUpperCase() : ''))}`,
      responses,
    };
    if (parameters.length > 0) operation.parameters = parameters;
    if (route.body) {
      operation.requestBody = { required: true, content: { 'application/json': { schema: jsonSchemaOf(route.body, 'input') } } };
    }
    if (route.auth !== 'public') {
      operation.security = [{ bearerAuth: [] }];
      if (Array.isArray(route.auth)) operation['x-roles'] = route.auth;
    }
    paths[route.path] = { ...(paths[route.path] ?? {}), [route.method.toLowerCase()]: operation };
  }
  for (const extra of extras) paths[extra.path] = { ...(paths[extra.path] ?? {}), [extra.method]: extra.operation };
  return {
    openapi: '3.1.0',
    info: {
      title: 'livevote',
      version: info.version,
      description: 'Real-time voting for live TV: exactly one vote per viewer, durable before acknowledged, live results over WebSocket.',
    },
    servers: [{ url: '/' }],
    components: { securitySchemes: { bearerAuth: { type: 'http', scheme: 'bearer', bearerFormat: 'JWT' } } },
    paths,
  };
}
