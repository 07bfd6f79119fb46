// The stop's drain (gateway/app.ts close) and keep-alive connections. A client that chose this node
// just before its stop can send on a connection idle since before the hand-off; were the node to
// stop accepting while such a connection is open, that request would be refused 503 not_ready (a
// rolling restart under load saw 2 of 2,500 votes so). So the drain lasts until uWS has closed
// every connection an earlier answer left open, and every answer from the stop on closes its own.
import net from 'node:net';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { buildApp, type LivevoteApp } from './app.ts';
import { loadConfig } from '../infra/config.ts';
import { silentLogger } from '../infra/logger.ts';
import { functionalTestEnv, patientTestEnv, testSecrets } from '../infra/testing/appHarness.ts';
import { createTestDatabase, type TestDatabase } from '../persistence/testDatabase.ts';

let db: TestDatabase;
let app: LivevoteApp;
let port = 0;

beforeAll(async () => {
  db = await createTestDatabase();
  app = await buildApp({ config: loadConfig({ LOG_LEVEL: 'silent', ...patientTestEnv, ...functionalTestEnv }), secrets: testSecrets(), pool: db.pool, log: silentLogger() });
  port = await app.listen('127.0.0.1', 0);
});
afterAll(async () => {
  await db?.drop();
});

interface RawConnection {
  /** Sends one request and resolves with the head of its answer (status line and headers). */
  request(head: string): Promise<string>;
  readonly closed: Promise<void>;
}

async function connect(): Promise<RawConnection> {
  const socket = net.connect(port, '127.0.0.1');
  await new Promise<void>((resolve, reject) => { socket.once('connect', resolve); socket.once('error', reject); });
  const closed = new Promise<void>((resolve) => socket.once('close', () => resolve()));
  socket.on('error', () => undefined);
  let buffered = '';
  let waiter: ((head: string) => void) | undefined;
  socket.on('data', (chunk: Buffer) => {
    buffered += chunk.toString('latin1');
    const end = buffered.indexOf('\r\n\r\n');
    if (end < 0 || !waiter) return;
    const head = buffered.slice(0, end);
    const length = Number(/content-length: *(\d+)/i.exec(head)?.[1] ?? 0);
    if (buffered.length < end + 4 + length) return;
    buffered = buffered.slice(end + 4 + length);
    const resolve = waiter;
    waiter = undefined;
    resolve(head);
  });
  return {
    closed,
    request(head) {
      return new Promise((resolve) => {
        waiter = resolve;
        socket.write(`${head}\r\nHost: livevote\r\n\r\n`);
      });
    },
  };
}

async function refusesNewConnections(): Promise<boolean> {
  return new Promise((resolve) => {
    const probe = net.connect(port, '127.0.0.1');
    probe.once('connect', () => { probe.destroy(); resolve(false); });
    probe.once('error', () => resolve(true));
  });
}

describe('the stop and keep-alive connections', () => {
  it('serves until every connection left open by an earlier answer is closed, and closes each one it answers', async () => {
    const idle = await connect();
    const late = await connect();
    for (const connection of [idle, late]) {
      const head = await connection.request('GET /healthz HTTP/1.1');
      expect(head).toMatch(/^HTTP\/1.1 200/);
      expect(head).not.toMatch(/connection: close/i);
    }

    const order: string[] = [];
    void idle.closed.then(() => order.push('idle connection closed'));
    const stopped = app.close().then(() => order.push('stop finished'));
    await expect.poll(refusesNewConnections, { timeout: 60_000, interval: 50 }).toBe(true);

    // A request on a connection opened before the stop, sent after the listen socket closed: served
    // (a route that answers 503 not_ready once the node stops accepting), and its connection closed.
    const head = await late.request('GET /api/v1/results/00000000-0000-4000-8000-000000000000 HTTP/1.1');
    expect(head).toMatch(/^HTTP\/1.1 404/);
    expect(head).toMatch(/connection: close/i);
    await late.closed;

    await stopped;
    expect(order).toEqual(['idle connection closed', 'stop finished']);
  }, 120_000);
});
