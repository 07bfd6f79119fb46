import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startAppHarness, call, type AppHarness } from '../infra/testing/appHarness.ts';

let harness: AppHarness;
beforeAll(async () => { harness = await startAppHarness(); });
afterAll(async () => { await harness.close(); });

describe('OpenAPI document', () => {
  it('is served at /api/v1/openapi.json as OpenAPI 3', async () => {
    const response = await call(harness.baseUrl, 'GET', '/api/v1/openapi.json');
    expect(response.status).toBe(200);
    expect(response.body.openapi).toMatch(/^3\./);
    expect(response.body.components.securitySchemes.bearerAuth.scheme).toBe('bearer');
  });

  it('documents every route the server serves (fails when one is missing)', async () => {
    const doc = (await call(harness.baseUrl, 'GET', '/api/v1/openapi.json')).body as { paths: Record<string, Record<string, unknown>> };
    expect(harness.app.router.served.length).toBeGreaterThan(15);
    for (const served of harness.app.router.served) {
      const method = served.method === 'WS' ? 'get' : served.method.toLowerCase();
      expect(doc.paths[served.path]?.[method], `${served.method} ${served.path} is served but not documented`).toBeDefined();
    }
  });

  it('documents nothing that is not served', async () => {
    const doc = (await call(harness.baseUrl, 'GET', '/api/v1/openapi.json')).body as { paths: Record<string, Record<string, unknown>> };
    const served = new Set(harness.app.router.served.map((r) => `${r.method === 'WS' ? 'get' : r.method.toLowerCase()} ${r.path}`));
    for (const [path, operations] of Object.entries(doc.paths)) {
      for (const method of Object.keys(operations)) expect(served.has(`${method} ${path}`), `${method} ${path} documented but not served`).toBe(true);
    }
  });

  it('describes request bodies with the validating schemas and lists error codes', async () => {
    const doc = (await call(harness.baseUrl, 'GET', '/api/v1/openapi.json')).body;
    const register = doc.paths['/api/v1/auth/register'].post;
    expect(register.requestBody.content['application/json'].schema.required).toEqual(expect.arrayContaining(['email', 'password']));
    expect(register.responses['400'].description).toContain('validation_failed');
    const create = doc.paths['/api/v1/admin/elections'].post;
    expect(create['x-roles']).toEqual(['admin']);
    expect(create.responses['403'].description).toContain('forbidden');
  });

  it('documents both answers of the vote status route: one election, and the paged list of all', async () => {
    const doc = (await call(harness.baseUrl, 'GET', '/api/v1/openapi.json')).body;
    const status = doc.paths['/api/v1/votes/status/{userId}'].get;
    const parameters = Object.fromEntries(status.parameters.map((p: { name: string; in: string; required: boolean }) => [p.name, p]));
    expect(parameters.userId).toMatchObject({ in: 'path', required: true });
    for (const name of ['electionId', 'limit', 'cursor']) expect(parameters[name], name).toMatchObject({ in: 'query', required: false });
    expect(parameters.limit.schema).toMatchObject({ minimum: 1, maximum: 100 });
    const shapes = status.responses['200'].content['application/json'].schema.anyOf as { required: string[]; properties: Record<string, unknown> }[];
    expect(shapes.map((shape) => [...shape.required].sort())).toEqual([
      ['electionId', 'userId', 'voted'],
      ['nextCursor', 'userId', 'votes'],
    ]);
    expect(Object.keys((shapes[1]!.properties.votes as { items: { properties: object } }).items.properties).sort()).toEqual(['acceptedAt', 'candidateId', 'electionId', 'voteId']);
    expect(status.responses['403'].description).toContain('forbidden');
    expect(status.responses['403'].description).toContain('account_erased');
  });
});
