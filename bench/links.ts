// Throughput and CPU of one inter-node link (cluster/links.ts): cast requests forwarded from a
// client node to a serving node in another process, which answers each at once with an
// `accepted` outcome (no shard, no database: the cost of the link alone). Not a test: prints figures.
//
//   node --import tsx bench/links.ts
//   options (env): BENCH_SECONDS (5), BENCH_IN_FLIGHT (2000: requests kept in flight), BENCH_WARMUP_SECONDS (1)
//
// Prints forwarded requests/s, CPU µs per request on each side (process.cpuUsage, user + system)
// and the round-trip latency of a sample of requests.
import { fork, type ChildProcess } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { createLinks, isLinkFailure, mountLinkServer, type LinkPeer } from '../cluster/links.ts';
import type { CastRequest } from '../cluster/protocol.ts';
import { uws } from '../gateway/uws.ts';
import { intFromEnv } from './lib/common.ts';

const linkKey = Buffer.from('bench link key, 32 bytes long...');
const electionId = '0190a1b2-c3d4-7e5f-8a9b-0c1d2e3f4a5b';

type FromServer = { kind: 'listening'; port: number } | { kind: 'cpu'; cpuMicros: number };
type ToServer = { kind: 'mark' } | { kind: 'report' };

const cpuMicros = () => {
  const usage = process.cpuUsage();
  return usage.user + usage.system;
};

if (process.argv.includes('--serve')) {
  // The owner's side: answer every cast at once, as a shard would after its commit.
  const links = createLinks({
    nodeId: 'bench-owner',
    linkKey,
    onRequest: (_from, message, answer) => {
      answer({ t: 'outcome', outcome: { kind: 'accepted', voteId: '0190a1b2-c3d4-7e5f-8a9b-0c1d2e3f4a5b', acceptedAtMs: Date.now(), replayed: false } });
      void message;
    },
    onEvent: () => {},
  });
  const app = uws.App();
  mountLinkServer(app, links);
  let markedCpu = 0;
  app.listen('127.0.0.1', 0, (socket) => {
    if (!socket) throw new Error('cannot listen');
    process.send!({ kind: 'listening', port: uws.us_socket_local_port(socket) } satisfies FromServer);
  });
  process.on('message', (message: ToServer) => {
    if (message.kind === 'mark') markedCpu = cpuMicros();
    else process.send!({ kind: 'cpu', cpuMicros: cpuMicros() - markedCpu } satisfies FromServer);
  });
  process.on('disconnect', () => process.exit(0));
} else {
  const seconds = intFromEnv('BENCH_SECONDS', 5, 600);
  const warmupSeconds = intFromEnv('BENCH_WARMUP_SECONDS', 1, 60);
  const inFlight = intFromEnv('BENCH_IN_FLIGHT', 2000, 10_000);

  const server: ChildProcess = fork(fileURLToPath(import.meta.url), ['--serve'], { execArgv: ['--import', 'tsx'], stdio: 'inherit' });
  const fromServer = (kind: FromServer['kind']) =>
    new Promise<FromServer>((resolve) => {
      const listener = (message: FromServer) => {
        if (message.kind !== kind) return;
        server.off('message', listener);
        resolve(message);
      };
      server.on('message', listener);
    });
  const listening = await fromServer('listening');
  if (listening.kind !== 'listening') throw new Error('unexpected message');
  const peer: LinkPeer = { nodeId: 'bench-owner', url: `http://127.0.0.1:${listening.port}` };

  const links = createLinks({ nodeId: 'bench-router', linkKey, onRequest: () => {}, onEvent: () => {}, inFlightMaxPerPeer: inFlight });
  let answered = 0;
  let failed = 0;
  let running = true;
  let voterNumber = 0;
  const latenciesMs: number[] = [];
  const sampleEvery = 64;

  const sendOne = () => {
    const message: CastRequest = { t: 'cast', electionId, voterNumber: voterNumber++, candidateIndex: voterNumber % 5 };
    const sampled = voterNumber % sampleEvery === 0;
    const startedMs = sampled ? performance.now() : 0;
    links.request(peer, message, (answer) => {
      if (isLinkFailure(answer)) failed++;
      else answered++;
      if (sampled) latenciesMs.push(performance.now() - startedMs);
      if (running) sendOne();
    });
  };
  for (let i = 0; i < inFlight; i++) sendOne();

  const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));
  await sleep(warmupSeconds * 1000);
  server.send({ kind: 'mark' } satisfies ToServer);
  const answeredAtStart = answered;
  const failedAtStart = failed;
  const clientCpuAtStart = cpuMicros();
  latenciesMs.length = 0;
  const startedMs = performance.now();
  await sleep(seconds * 1000);
  const elapsedMs = performance.now() - startedMs;
  const clientCpu = cpuMicros() - clientCpuAtStart;
  const requests = answered - answeredAtStart;
  const failures = failed - failedAtStart;
  server.send({ kind: 'report' } satisfies ToServer);
  const report = await fromServer('cpu');
  running = false;
  const serverCpu = report.kind === 'cpu' ? report.cpuMicros : NaN;

  latenciesMs.sort((a, b) => a - b);
  const quantile = (q: number) => latenciesMs[Math.min(latenciesMs.length - 1, Math.floor(q * latenciesMs.length))] ?? NaN;
  const stats = links.stats().peers[0]!;
  const perSecond = (requests / elapsedMs) * 1000;
  console.log(
    [
      `link bench: ${seconds}s, ${inFlight} requests in flight, one link, two processes on this machine`,
      `  forwarded requests/s      ${Math.round(perSecond).toLocaleString('en')}  (${requests.toLocaleString('en')} answered, ${failures} failed)`,
      `  CPU µs per request         router side ${(clientCpu / requests).toFixed(2)}, owner side ${(serverCpu / requests).toFixed(2)}, both ${((clientCpu + serverCpu) / requests).toFixed(2)}`,
      `  round trip ms (sampled)    p50 ${quantile(0.5).toFixed(2)}, p99 ${quantile(0.99).toFixed(2)}`,
      `  requests per message       ${(stats.requestsSent / stats.messagesSent).toFixed(1)} sent, ${(stats.answered / stats.messagesReceived).toFixed(1)} answered`,
      `  bytes per request          ${(stats.bytesSent / stats.requestsSent).toFixed(1)} out, ${(stats.bytesReceived / stats.answered).toFixed(1)} back`,
    ].join('\n'),
  );
  await links.close();
  server.disconnect();
}
