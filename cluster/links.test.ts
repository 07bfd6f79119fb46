// Links between nodes, over real sockets: uWS servers on ephemeral ports and `ws` clients, all in
// this process. Tests wait for conditions (generous deadlines), never for time.
import { afterEach, describe, expect, it } from 'vitest';
import { Registry } from 'prom-client';
import net from 'node:net';
import WebSocket from 'ws';
import { encode } from 'msgpackr';
import { uws, type TemplatedApp, type us_listen_socket } from '../gateway/uws.ts';
import {
  createLinks,
  isLinkFailure,
  linkUpgradeHeaders,
  mountLinkServer,
  type LinkFailure,
  type LinkPeer,
  type Links,
  type LinksOptions,
} from './links.ts';
import { linkPath, messageBytesMax, type CastRequest, type LinkAnswer, type LinkEvent, type LinkRequest, type OutcomeAnswer } from './protocol.ts';

const linkKey = Buffer.from('0123456789abcdef0123456789abcdef');
const electionId = '0190a1b2-c3d4-7e5f-8a9b-0c1d2e3f4a5b';
const cast = (voterNumber: number, candidateIndex = 0): CastRequest => ({ t: 'cast', electionId, voterNumber, candidateIndex });
const acceptedFor = (m: LinkRequest): OutcomeAnswer => ({
  t: 'outcome',
  outcome: { kind: 'accepted', voteId: `vote-${m.voterNumber}-${m.candidateIndex}`, acceptedAtMs: m.voterNumber, replayed: false },
});

async function waitFor(condition: () => boolean, what: string, deadlineMs = 30_000): Promise<void> {
  const started = Date.now();
  while (!condition()) {
    if (Date.now() - started > deadlineMs) throw new Error(`timed out waiting for ${what}`);
    await new Promise((resolve) => setTimeout(resolve, 5));
  }
}

const ask = (links: Links, peer: LinkPeer, message: LinkRequest) =>
  new Promise<LinkAnswer | LinkFailure>((resolve) => links.request(peer, message, resolve));

interface TestNode {
  readonly nodeId: string;
  readonly links: Links;
  readonly peer: LinkPeer;
  readonly port: number;
  readonly requests: { from: string; message: LinkRequest; answer: (a: LinkAnswer) => void }[];
  readonly events: { from: string; message: LinkEvent }[];
  /** Stop listening and close the links (both sides). */
  stop(): Promise<void>;
}

/** What each test started, stopped after it in reverse order. */
const cleanups: (() => Promise<void>)[] = [];
afterEach(async () => {
  for (const stop of cleanups.splice(0).reverse()) await stop();
});

/**
 * A node serving links. `answer`: 'now' answers every request at once with acceptedFor(request);
 * 'hold' keeps them in `requests` for the test to answer.
 */
async function startNode(
  nodeId: string,
  answer: 'now' | 'hold',
  overrides: Partial<LinksOptions> = {},
  port = 0,
): Promise<TestNode> {
  const requests: TestNode['requests'] = [];
  const events: TestNode['events'] = [];
  const links = createLinks({
    nodeId,
    linkKey,
    onRequest: (from, message, reply) => {
      if (answer === 'now') reply(acceptedFor(message));
      else requests.push({ from, message, answer: reply });
    },
    onEvent: (from, message) => events.push({ from, message }),
    ...overrides,
  });
  const app: TemplatedApp = uws.App();
  mountLinkServer(app, links);
  const listenSocket = await new Promise<us_listen_socket>((resolve, reject) =>
    app.listen('127.0.0.1', port, (s) => (s ? resolve(s) : reject(new Error(`cannot listen on ${port}`)))),
  );
  const boundPort = uws.us_socket_local_port(listenSocket);
  let stopped = false;
  const node: TestNode = {
    nodeId,
    links,
    requests,
    events,
    port: boundPort,
    peer: { nodeId, url: `http://127.0.0.1:${boundPort}` },
    async stop() {
      if (stopped) return;
      stopped = true;
      uws.us_listen_socket_close(listenSocket);
      await links.close();
    },
  };
  cleanups.push(() => node.stop());
  return node;
}

/** A client-only node (its own server side is never mounted). */
function clientLinks(overrides: Partial<LinksOptions> = {}): Links {
  const links = createLinks({ nodeId: 'client', linkKey, onRequest: () => {}, onEvent: () => {}, ...overrides });
  cleanups.push(() => links.close());
  return links;
}

/**
 * A TCP relay to a port on this machine, which can stop (dropping every connection) and start
 * again, or stall: stop reading in one direction, so the writer's buffers fill up.
 */
type Direction = 'toTarget' | 'fromTarget';
async function startRelay(targetPort: number): Promise<{ port: number; stop(): Promise<void>; start(): Promise<void>; stall(direction: Direction): void; resume(direction: Direction): void }> {
  const pairs = new Set<{ incoming: net.Socket; outgoing: net.Socket }>();
  let server: net.Server | undefined;
  let port = 0;
  const start = async () => {
    server = net.createServer((incoming) => {
      const outgoing = net.connect(targetPort, '127.0.0.1');
      const pair = { incoming, outgoing };
      pairs.add(pair);
      for (const s of [incoming, outgoing]) s.on('error', () => {});
      incoming.pipe(outgoing).pipe(incoming);
      incoming.on('close', () => outgoing.destroy());
      outgoing.on('close', () => {
        incoming.destroy();
        pairs.delete(pair);
      });
    });
    await new Promise<void>((resolve) => server!.listen(port, '127.0.0.1', () => resolve()));
    port = (server.address() as net.AddressInfo).port;
  };
  await start();
  const relay = {
    port,
    start,
    async stop() {
      const closing = new Promise<void>((resolve) => server!.close(() => resolve()));
      for (const { incoming, outgoing } of pairs) {
        incoming.destroy();
        outgoing.destroy();
      }
      await closing;
    },
    stall(direction: Direction) {
      for (const { incoming, outgoing } of pairs) {
        const [from, to] = direction === 'toTarget' ? [incoming, outgoing] : [outgoing, incoming];
        from.unpipe(to);
        from.pause();
      }
    },
    resume(direction: Direction) {
      for (const { incoming, outgoing } of pairs) {
        const [from, to] = direction === 'toTarget' ? [incoming, outgoing] : [outgoing, incoming];
        from.pipe(to);
      }
    },
  };
  cleanups.push(() => (server?.listening ? relay.stop() : Promise.resolve()));
  return relay;
}

function rawSocket(url: string, headers: Record<string, string>): Promise<{ socket: WebSocket } | { status: number; body: string }> {
  return new Promise((resolve, reject) => {
    const socket = new WebSocket(url, { headers, perMessageDeflate: false, maxPayload: 64 * 1024 * 1024 });
    socket.on('open', () => resolve({ socket }));
    socket.on('unexpected-response', (_req, res) => {
      let body = '';
      res.on('data', (chunk: Buffer) => (body += chunk.toString()));
      res.on('end', () => resolve({ status: res.statusCode ?? 0, body }));
    });
    socket.on('error', reject);
  });
}

describe('links: requests and answers', () => {
  it('answers many requests, each with its own answer, coalesced into few messages', async () => {
    const server = await startNode('server-a', 'now');
    const client = clientLinks();
    // First turn: queued while connecting, written as one message once open.
    const first = await Promise.all(Array.from({ length: 1000 }, (_, i) => ask(client, server.peer, cast(i, i % 5))));
    first.forEach((answer, i) => expect(answer).toEqual(acceptedFor(cast(i, i % 5))));
    const afterFirst = client.stats().peers[0]!;
    expect(afterFirst.messagesSent).toBe(1);
    expect(server.links.stats().inbound.messagesReceived).toBe(1);

    // Second turn on the open link: 2000 more requests, one message each way.
    const second = await Promise.all(Array.from({ length: 2000 }, (_, i) => ask(client, server.peer, cast(10_000 + i, i % 7))));
    second.forEach((answer, i) => expect(answer).toEqual(acceptedFor(cast(10_000 + i, i % 7))));
    const peerStats = client.stats().peers[0]!;
    expect(peerStats.messagesSent).toBe(2);
    expect(peerStats.messagesReceived).toBe(2);
    expect(peerStats).toMatchObject({ nodeId: 'server-a', connected: true, inFlight: 0, requestsSent: 3000, answered: 3000 });
    expect(server.links.stats().inbound).toMatchObject({ connections: 1, requestsReceived: 3000, answersSent: 3000, messagesReceived: 2 });
  });

  it('matches answers given out of order to their requests', async () => {
    const server = await startNode('server-b', 'hold');
    const client = clientLinks();
    const count = 300;
    const answers = Array.from({ length: count }, (_, i) => ask(client, server.peer, cast(i, i % 3)));
    await waitFor(() => server.requests.length === count, 'requests to arrive');
    expect(server.requests.every((r) => r.from === 'client')).toBe(true);
    // Answer in a scrambled order, across several turns.
    const order = server.requests.map((_, i) => i).sort((a, b) => ((a * 7919) % count) - ((b * 7919) % count));
    for (const [n, i] of order.entries()) {
      const held = server.requests[i]!;
      held.answer(acceptedFor(held.message));
      if (n % 50 === 0) await new Promise((resolve) => setImmediate(resolve));
    }
    const results = await Promise.all(answers);
    results.forEach((answer, i) => expect(answer).toEqual(acceptedFor(cast(i, i % 3))));
  });

  it('fails a request that gets no answer with timeout, and drops the late answer', async () => {
    const server = await startNode('server-c', 'hold');
    const client = clientLinks({ requestTimeoutMs: 200 });
    const answer = await ask(client, server.peer, cast(1));
    expect(answer).toEqual({ failed: 'timeout' });
    await waitFor(() => server.requests.length === 1, 'the request to arrive');
    server.requests[0]!.answer(acceptedFor(cast(1)));
    await waitFor(() => (client.stats().framesDropped.unknown_id ?? 0) === 1, 'the late answer to be dropped');
    expect(client.stats().peers[0]).toMatchObject({ inFlight: 0, answered: 0, failed: { timeout: 1 } });
    // The link still works.
    const next = ask(client, server.peer, cast(2));
    await waitFor(() => server.requests.length === 2, 'the next request');
    server.requests[1]!.answer(acceptedFor(cast(2)));
    expect(await next).toEqual(acceptedFor(cast(2)));
  });

  it('answers overloaded at once past the in-flight bound, never synchronously', async () => {
    const server = await startNode('server-d', 'hold');
    const client = clientLinks({ inFlightMaxPerPeer: 10 });
    const held = Array.from({ length: 10 }, (_, i) => ask(client, server.peer, cast(i)));
    let over: LinkAnswer | LinkFailure | undefined;
    client.request(server.peer, cast(99), (a) => (over = a));
    expect(over).toBeUndefined();
    await waitFor(() => over !== undefined, 'the overloaded answer');
    expect(over).toEqual({ failed: 'overloaded' });
    await waitFor(() => server.requests.length === 10, 'the held requests');
    for (const r of server.requests) r.answer(acceptedFor(r.message));
    expect((await Promise.all(held)).every((a) => !isLinkFailure(a))).toBe(true);
    // Room again.
    const again = ask(client, server.peer, cast(100));
    await waitFor(() => server.requests.length === 11, 'the request after the bound');
    server.requests[10]!.answer(acceptedFor(cast(100)));
    expect(await again).toEqual(acceptedFor(cast(100)));
    expect(client.stats().peers[0]!.failed.overloaded).toBe(1);
  });

  it('fails requests to a node nobody listens on as unreachable', async () => {
    const client = clientLinks();
    const probe = await startNode('gone', 'now');
    const peer = probe.peer;
    await probe.stop();
    expect(await ask(client, peer, cast(1))).toEqual({ failed: 'unreachable' });
    // In backoff: refused at once, still unreachable.
    expect(await ask(client, peer, cast(2))).toEqual({ failed: 'unreachable' });
    expect(client.stats().peers[0]).toMatchObject({ state: 'backoff', connected: false, inFlight: 0 });
  });

  it('fails requests to a peer whose URL is not http(s) as unreachable, and drops its events', async () => {
    const client = clientLinks();
    const peer = { nodeId: 'odd', url: 'ftp://127.0.0.1:21' };
    expect(await ask(client, peer, cast(1))).toEqual({ failed: 'unreachable' });
    client.send(peer, { t: 'map', version: 1 });
    expect(client.stats().framesDropped.link_down).toBe(1);
  });

  it('fails in-flight requests disconnected when the peer goes away, unreachable while it is away, and reconnects once it is back', async () => {
    const server = await startNode('server-e', 'hold');
    // The peer is reached through a TCP relay that can vanish and come back on the same port.
    const relay = await startRelay(server.port);
    const peer: LinkPeer = { nodeId: 'server-e', url: `http://127.0.0.1:${relay.port}` };
    const client = clientLinks();
    const inFlight = Array.from({ length: 5 }, (_, i) => ask(client, peer, cast(i)));
    await waitFor(() => server.requests.length === 5, 'requests to arrive');
    await relay.stop();
    for (const answer of await Promise.all(inFlight)) expect(answer).toEqual({ failed: 'disconnected' });
    expect(await ask(client, peer, cast(6))).toEqual({ failed: 'unreachable' });
    expect(client.stats().peers[0]).toMatchObject({ connected: false, inFlight: 0 });

    await relay.start();
    const answered = new Promise<LinkAnswer | LinkFailure>((resolve) => {
      // Until the backoff ends, requests fail unreachable at once; then one connects.
      const attempt = () =>
        client.request(peer, cast(7), (answer) => {
          if (isLinkFailure(answer) && answer.failed === 'unreachable') setTimeout(attempt, 20);
          else resolve(answer);
        });
      attempt();
    });
    await waitFor(() => server.requests.length === 6, 'the request after the peer came back');
    server.requests[5]!.answer(acceptedFor(cast(7)));
    expect(await answered).toEqual(acceptedFor(cast(7)));
    expect(client.stats().peers[0]).toMatchObject({ connected: true, failed: { disconnected: 5 } });
  });

  it('forget() fails that peer\'s in-flight requests disconnected; the next request connects afresh', async () => {
    const server = await startNode('server-f', 'hold');
    const client = clientLinks();
    const inFlight = ask(client, server.peer, cast(1));
    await waitFor(() => server.requests.length === 1, 'the request');
    client.forget('server-f');
    expect(await inFlight).toEqual({ failed: 'disconnected' });
    expect(client.stats().peers).toHaveLength(0);
    const next = ask(client, server.peer, cast(2));
    await waitFor(() => server.requests.length === 2, 'the next request');
    server.requests[1]!.answer(acceptedFor(cast(2)));
    expect(await next).toEqual(acceptedFor(cast(2)));
    // The first request's answer arrives on a socket that is gone: dropped, counted.
    server.requests[0]!.answer(acceptedFor(cast(1)));
    await waitFor(() => (server.links.stats().framesDropped.answer_after_close ?? 0) === 1, 'the orphan answer to be dropped');
  });

  it('close() fails in-flight requests closed, and later ones too', async () => {
    const server = await startNode('server-g', 'hold');
    const client = createLinks({ nodeId: 'closer', linkKey, onRequest: () => {}, onEvent: () => {} });
    const inFlight = Array.from({ length: 3 }, (_, i) => ask(client, server.peer, cast(i)));
    await waitFor(() => server.requests.length === 3, 'requests to arrive');
    await client.close();
    for (const answer of await Promise.all(inFlight)) expect(answer).toEqual({ failed: 'closed' });
    expect(await ask(client, server.peer, cast(9))).toEqual({ failed: 'closed' });
    await waitFor(() => server.links.stats().inbound.connections === 0, 'the server to see the link close');
  });

  it('close() on the accepting side ends its inbound links: the requester fails disconnected', async () => {
    const server = await startNode('server-h', 'hold');
    const client = clientLinks();
    const inFlight = ask(client, server.peer, cast(1));
    await waitFor(() => server.requests.length === 1, 'the request');
    await server.links.close();
    expect(await inFlight).toEqual({ failed: 'disconnected' });
    // Answering after close is harmless.
    server.requests[0]!.answer(acceptedFor(cast(1)));
  });
});

describe('links: backpressure', () => {
  it('past the byte bound of a socket the peer does not read, requests fail overloaded and events are dropped', async () => {
    const server = await startNode('server-p', 'now');
    const relay = await startRelay(server.port);
    const peer: LinkPeer = { nodeId: 'server-p', url: `http://127.0.0.1:${relay.port}` };
    const sendBufferBytesMax = 64 * 1024;
    const client = clientLinks({ sendBufferBytesMax, requestTimeoutMs: 600_000 });
    expect(await ask(client, peer, cast(1))).toEqual(acceptedFor(cast(1)));
    relay.stall('toTarget');
    // Fill the kernel's buffers, then the socket's own, one turn at a time.
    const tallies: LinkEvent = { t: 'tallies', electionId, shard: 1, epoch: 1, version: 1, counts: new Array(64).fill(123_456_789) };
    let turns = 0;
    while ((client.stats().framesDropped.buffer_full ?? 0) === 0) {
      if (++turns > 10_000) throw new Error('the socket never reported a full buffer');
      for (let i = 0; i < 1000; i++) client.send(peer, tallies);
      await new Promise((resolve) => setImmediate(resolve));
    }
    expect(await ask(client, peer, cast(2))).toEqual({ failed: 'overloaded' });
    expect(client.stats().peers[0]).toMatchObject({ connected: true, failed: { overloaded: 1 } });
  });

  it('the accepting side closes a link whose answers pile up past its bound, rather than drop answers silently', async () => {
    const server = await startNode('server-q', 'now', { sendBufferBytesMax: 64 * 1024 });
    const relay = await startRelay(server.port);
    const peer: LinkPeer = { nodeId: 'server-q', url: `http://127.0.0.1:${relay.port}` };
    // No timeout in reach: every request must end answered or disconnected.
    const client = clientLinks({ inFlightMaxPerPeer: 10_000_000, requestTimeoutMs: 3_600_000 });
    expect(await ask(client, peer, cast(1))).toEqual(acceptedFor(cast(1)));
    relay.stall('fromTarget');
    const answers: Promise<LinkAnswer | LinkFailure>[] = [];
    let turns = 0;
    while (server.links.stats().framesDropped.buffer_full === undefined) {
      if (++turns > 2_000) throw new Error('the accepting side never reported a full buffer');
      for (let i = 0; i < 5000; i++) answers.push(ask(client, peer, cast(i)));
      await new Promise((resolve) => setTimeout(resolve, 1));
    }
    await waitFor(() => server.links.stats().inbound.connections === 0, 'the accepting side to close the link');
    relay.resume('fromTarget');
    const results = await Promise.all(answers);
    expect(results.some((a) => isLinkFailure(a) && a.failed === 'disconnected')).toBe(true);
    expect(results.every((a) => !isLinkFailure(a) || a.failed === 'disconnected')).toBe(true);
    expect(client.stats().peers[0]).toMatchObject({ inFlight: 0, failed: { timeout: 0 } });
  });
});

describe('links: events', () => {
  it('delivers events in order, and tallies and map events keep their fields', async () => {
    const server = await startNode('server-i', 'now');
    const client = clientLinks();
    const tallies: LinkEvent = { t: 'tallies', electionId, shard: 3, epoch: 2, version: 17, counts: [5, 0, 12] };
    client.send(server.peer, tallies);
    for (let version = 1; version <= 100; version++) client.send(server.peer, { t: 'map', version });
    await waitFor(() => server.events.length === 101, 'events to arrive');
    expect(server.events[0]).toEqual({ from: 'client', message: tallies });
    expect(server.events.slice(1).map((e) => (e.message as { version: number }).version)).toEqual(Array.from({ length: 100 }, (_, i) => i + 1));
    expect(client.stats().peers[0]).toMatchObject({ eventsSent: 101, eventsDropped: 0 });
  });

  it('drops and counts events while the link is down', async () => {
    const client = clientLinks();
    const probe = await startNode('gone-events', 'now');
    await probe.stop();
    client.send(probe.peer, { t: 'map', version: 1 });
    await waitFor(() => client.stats().peers[0]?.state === 'backoff', 'the connect to fail');
    client.send(probe.peer, { t: 'map', version: 2 });
    expect(client.stats().peers[0]!.eventsDropped).toBe(2);
    expect(client.stats().framesDropped.link_down).toBe(2);
  });
});

describe('links: authentication of the upgrade', () => {
  it('refuses a peer with another key: its requests fail unreachable', async () => {
    const server = await startNode('server-j', 'now');
    const intruder = clientLinks({ linkKey: Buffer.from('another key, not the cluster one') });
    expect(await ask(intruder, server.peer, cast(1))).toEqual({ failed: 'unreachable' });
    expect(server.links.stats().inbound).toMatchObject({ connections: 0, requestsReceived: 0, upgradesRefused: 1 });
  });

  it('answers 401 to a missing, bad, stale or misdirected signature and 400 to a signed upgrade of another version', async () => {
    const server = await startNode('server-k', 'now');
    const url = `ws://127.0.0.1:${server.port}${linkPath}`;
    const good = linkUpgradeHeaders(linkKey, 'peer-1', 'server-k');
    const cases: [string, Record<string, string>, number][] = [
      ['no headers', {}, 401],
      ['no signature', { ...good, 'x-livevote-link-signature': '' }, 401],
      ['bad signature', { ...good, 'x-livevote-link-signature': good['x-livevote-link-signature']!.replace(/^./, (c) => (c === 'A' ? 'B' : 'A')) }, 401],
      ['stale', linkUpgradeHeaders(linkKey, 'peer-1', 'server-k', Date.now() - 61_000), 401],
      ['from the future', linkUpgradeHeaders(linkKey, 'peer-1', 'server-k', Date.now() + 61_000), 401],
      ['misdirected', linkUpgradeHeaders(linkKey, 'peer-1', 'server-z'), 401],
      ['signed for another sender', { ...good, 'x-livevote-link-from': 'peer-2' }, 401],
      ['not a node id', linkUpgradeHeaders(linkKey, 'Peer 1', 'server-k'), 401],
      ['another version', { ...good, 'x-livevote-link-version': '999' }, 400],
    ];
    for (const [name, headers, status] of cases) {
      const result = await rawSocket(url, headers);
      expect('status' in result ? result.status : 'upgraded', name).toBe(status);
      if ('body' in result) expect(JSON.parse(result.body).error.code, name).toMatch(/^(unauthenticated|invalid_token|validation_failed)$/);
    }
    expect(server.links.stats().inbound).toMatchObject({ connections: 0, upgradesRefused: cases.length });
    // The real thing is accepted.
    const ok = await rawSocket(url, linkUpgradeHeaders(linkKey, 'peer-1', 'server-k'));
    expect('socket' in ok).toBe(true);
    if ('socket' in ok) ok.socket.close();
  });
});

describe('links: bad bytes from a peer', () => {
  it('garbage, wrong msgpack, frames of the wrong shape and oversized messages change nothing and crash nothing', async () => {
    const server = await startNode('server-l', 'hold');
    const url = `ws://127.0.0.1:${server.port}${linkPath}`;
    const opened = await rawSocket(url, linkUpgradeHeaders(linkKey, 'raw-peer', 'server-l'));
    if (!('socket' in opened)) throw new Error(`upgrade refused: ${opened.status}`);
    const raw = opened.socket;
    const received: Buffer[] = [];
    raw.on('message', (data: Buffer) => received.push(data));

    const bad: Buffer[] = [
      Buffer.from([0xc1]), // never used in msgpack
      Buffer.from('not msgpack at all, just text'),
      Buffer.from([0xdd, 0xff, 0xff, 0xff, 0xff]), // array32 claiming 4G elements
      encode('a string'),
      encode({ t: 'cast' }),
      encode([]),
      encode([[0, 1, { t: 'cast', electionId, voterNumber: -1, candidateIndex: 0 }]]),
      encode([[0, 1, { t: 'cast', electionId, voterNumber: 1.5, candidateIndex: 0 }]]),
      encode([[0, 1, { t: 'cast', electionId, voterNumber: '1', candidateIndex: 0 }]]),
      encode([[0, 1, { t: 'cast', electionId: '', voterNumber: 1, candidateIndex: 0 }]]),
      encode([[0, 1, { t: 'cast', electionId: 'x'.repeat(65), voterNumber: 1, candidateIndex: 0 }]]),
      encode([[0, -1, cast(1)]]),
      encode([[0, 2 ** 32, cast(1)]]),
      encode([[0, 1, cast(1), 'extra']]),
      encode([[0, 1, { t: 'drop_tables' }]]),
      encode([[1, 1, acceptedFor(cast(1))]]), // an answer sent to the accepting side
      encode([[2, { t: 'tallies', electionId, shard: 1024, epoch: 1, version: 1, counts: [1] }]]),
      encode([[2, { t: 'tallies', electionId, shard: 1, epoch: 1, version: 1, counts: new Array(65).fill(0) }]]),
      encode([[2, { t: 'tallies', electionId, shard: 1, epoch: 1, version: 1, counts: [1, -1] }]]),
      encode([[2, { t: 'map' }]]),
      encode([[9, 1, cast(1)]]),
      encode([null, 'x', 3]),
      encode(new Array(9000).fill([2, { t: 'map', version: 1 }])), // more frames than a message may hold
    ];
    for (const bytes of bad) raw.send(bytes, { binary: true });
    // A good frame after them: proves the socket still works and the bad ones were read first.
    raw.send(encode([[0, 7, cast(42)]]), { binary: true });
    await waitFor(() => server.requests.length === 1, 'the good request');
    expect(server.requests[0]!.message).toEqual(cast(42));
    expect(server.events).toHaveLength(0);
    server.requests[0]!.answer(acceptedFor(cast(42)));
    await waitFor(() => received.length === 1, 'the answer');

    const dropped = server.links.stats().framesDropped;
    expect(dropped.undecodable).toBe(7);
    expect(dropped.invalid_frame).toBe(17);
    expect(dropped.unexpected_frame).toBe(1);

    // Larger than a message may be: uWS closes that socket, nothing else happens.
    const closedCode = new Promise<number>((resolve) => raw.on('close', (code) => resolve(code)));
    raw.send(Buffer.alloc(messageBytesMax + 1), { binary: true });
    expect(await closedCode).not.toBe(1000);
    await waitFor(() => server.links.stats().inbound.connections === 0, 'the server to drop the socket');

    // The node still serves links.
    const client = clientLinks();
    const answer = ask(client, server.peer, cast(43));
    await waitFor(() => server.requests.length === 2, 'a request from a proper peer');
    server.requests[1]!.answer(acceptedFor(cast(43)));
    expect(await answer).toEqual(acceptedFor(cast(43)));
    expect(server.links.stats().inbound.handlerErrors).toBe(0);
  });

  it('an answer of the wrong shape is dropped and the request times out', async () => {
    const server = await startNode('server-m', 'hold');
    const client = clientLinks({ requestTimeoutMs: 300 });
    const answer = ask(client, server.peer, cast(1));
    await waitFor(() => server.requests.length === 1, 'the request');
    server.requests[0]!.answer({ t: 'outcome', outcome: { kind: 'accepted' } } as unknown as LinkAnswer);
    expect(await answer).toEqual({ failed: 'timeout' });
    expect(client.stats().framesDropped.invalid_answer).toBe(1);
  });

  it('exceptions from handlers and callbacks are counted and never reach the event loop', async () => {
    const server = await startNode('server-n', 'now', {
      onRequest: (_from, message, reply) => {
        if (message.voterNumber === 13) throw new Error('handler bug');
        reply(acceptedFor(message));
      },
      onEvent: () => {
        throw new Error('event handler bug');
      },
    });
    const client = clientLinks({ requestTimeoutMs: 300 });
    client.send(server.peer, { t: 'map', version: 1 });
    let calls = 0;
    client.request(server.peer, cast(1), () => {
      calls++;
      throw new Error('callback bug');
    });
    expect(await ask(client, server.peer, cast(13))).toEqual({ failed: 'timeout' });
    expect(calls).toBe(1);
    expect(await ask(client, server.peer, cast(2))).toEqual(acceptedFor(cast(2)));
    expect(server.links.stats().inbound.handlerErrors).toBe(2);
    expect(client.stats().inbound.handlerErrors).toBe(1);
  });
});

describe('links: metrics', () => {
  it('counts requests by peer and outcome, in-flight, connected and drops', async () => {
    const registry = new Registry();
    const server = await startNode('server-o', 'now');
    const client = clientLinks({ metricsRegistry: registry, inFlightMaxPerPeer: 1 });
    expect(await ask(client, server.peer, cast(1))).toEqual(acceptedFor(cast(1)));
    const a = ask(client, server.peer, cast(2));
    const b = ask(client, server.peer, cast(3));
    expect(await b).toEqual({ failed: 'overloaded' });
    await a;
    client.send({ nodeId: 'nobody', url: 'http://127.0.0.1:1' }, { t: 'map', version: 1 });
    await waitFor(() => client.stats().peers.find((p) => p.nodeId === 'nobody')?.state === 'backoff', 'the connect to fail');
    const text = await registry.metrics();
    expect(text).toContain('livevote_link_requests_total{peer="server-o",outcome="answered"} 2');
    expect(text).toContain('livevote_link_requests_total{peer="server-o",outcome="overloaded"} 1');
    expect(text).toContain('livevote_link_in_flight{peer="server-o"} 0');
    expect(text).toContain('livevote_link_connected{peer="server-o"} 1');
    expect(text).toContain('livevote_link_connected{peer="nobody"} 0');
    expect(text).toContain('livevote_link_frames_dropped_total{reason="link_down"} 1');
  });
});
