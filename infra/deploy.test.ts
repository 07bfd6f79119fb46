// Deployment as code is code: every metric the alert rules and the dashboard name must be one
// livevote exports (a renamed metric silently blinds an alert otherwise), and the rules must be
// valid Prometheus (promtool, when installed; .ci/run installs it).
import { execFileSync } from 'node:child_process';
import { existsSync, readFileSync } from 'node:fs';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { buildApp, type LivevoteApp } from '../gateway/app.ts';
import { createTestDatabase, type TestDatabase } from '../persistence/testDatabase.ts';
import { loadConfig } from './config.ts';
import { silentLogger } from './logger.ts';
import { createMetrics } from './metrics.ts';
import { call, functionalTestEnv, login, testAdmin, testSecrets } from './testing/appHarness.ts';
import { createVoters } from './testing/voters.ts';

const rulesFile = new URL('./deploy/prometheus/livevote.rules.yml', import.meta.url);
const dashboardFile = new URL('./deploy/grafana/livevote-dashboard.json', import.meta.url);
const promtool = ['/usr/bin/promtool', '/usr/local/bin/promtool'].find((p) => existsSync(p));

let db: TestDatabase;
let app: LivevoteApp;
let exported: Set<string>;

beforeAll(async () => {
  db = await createTestDatabase();
  const secrets = testSecrets();
  app = await buildApp({ config: loadConfig({ LOG_LEVEL: 'silent', ...functionalTestEnv }), secrets, pool: db.pool, log: silentLogger(), metrics: createMetrics({ defaultMetrics: true }) });
  const base = `http://127.0.0.1:${await app.listen('127.0.0.1', 0)}`;
  // One vote through the whole path, so every label set the rules use has been touched once.
  const admin = await login(base, testAdmin.email, testAdmin.password);
  const created = await call(base, 'POST', '/api/v1/admin/elections', { token: admin, body: { title: 'Metrics', candidates: [{ name: 'A' }, { name: 'B' }] } });
  await call(base, 'POST', `/api/v1/admin/elections/${created.body.electionId}/open`, { token: admin });
  const [voter] = await createVoters(db.pool, 1, secrets.jwtSecret);
  await call(base, 'POST', '/api/v1/votes', { token: voter!.token, body: { electionId: created.body.electionId, candidateId: created.body.candidates[0].candidateId, userId: voter!.userId } });
  const text = await (await fetch(`${base}/metrics`)).text();
  exported = new Set([...text.matchAll(/^# TYPE (\S+) /gm)].map((m) => m[1]!));
});
afterAll(async () => {
  await app?.close({ drainTimeoutMs: 2_000, awaitIdleConnections: false });
  await db?.drop();
});

function referencedMetrics(text: string): string[] {
  return [...new Set([...text.matchAll(/\blivevote_[a-z0-9_]+/g)].map((m) => m[0]))];
}

function isExported(name: string): boolean {
  if (exported.has(name)) return true;
  const histogramPart = /^(.*)_(bucket|sum|count)$/.exec(name);
  return histogramPart !== null && exported.has(histogramPart[1]!);
}

describe('deployment as code', () => {
  it('alerts only on metrics livevote exports', () => {
    const names = referencedMetrics(readFileSync(rulesFile, 'utf8'));
    expect(names.length).toBeGreaterThan(8);
    for (const name of names) expect(isExported(name), `${name} is in the alert rules but not in /metrics`).toBe(true);
  });

  it('charts only metrics livevote exports, in a well-formed dashboard', () => {
    const dashboard = JSON.parse(readFileSync(dashboardFile, 'utf8')) as { panels: { targets: { expr: string }[] }[] };
    const exprs = dashboard.panels.flatMap((p) => p.targets.map((t) => t.expr));
    expect(exprs.length).toBeGreaterThan(10);
    for (const name of referencedMetrics(exprs.join('\n'))) expect(isExported(name), `${name} is charted but not in /metrics`).toBe(true);
  });

  it.skipIf(!promtool)(`rules pass promtool check rules${promtool ? '' : ' (SKIPPED: no promtool; apt-get install prometheus)'}`, () => {
    const output = execFileSync(promtool!, ['check', 'rules', rulesFile.pathname], { encoding: 'utf8' });
    expect(output).toMatch(/SUCCESS: \d+ rules found/);
  });
});
