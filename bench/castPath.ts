// What a vote costs this process between the gateway and its answer, without Postgres: the real
// vote node (actors/voteNode.ts: nact shard actors, the group committer), the real router
// (cluster/router.ts, every shard owned here) and the real HTTP layer and vote route
// (gateway/http.ts, gateway/votes/routes.ts) over a stand-in for uWS, with the in-memory journal
// answering each commit after a timer, as a commit's answer arrives a few ms later. A closed loop
// keeps BENCH_OUTSTANDING votes in flight, every vote a new voter; each round measures process
// CPU (process.cpuUsage) per vote over a window after a warm-up. Rounds alternate between the
// entry points and the loads, and the table gives every round and the median. Not part of
// `npm run bench`; prints a markdown table and one JSON line.
//
//   node --import tsx bench/castPath.ts
//   It measures what production runs: it compiles itself and what it imports with tsc (as
//   infra/build.mjs compiles livevote) into bench/out/castpath and runs that; BENCH_FROM_SOURCE=1
//   runs it under tsx instead, whose per-closure wrappers cost a vote more (bench/README.md).
//   options (env): BENCH_OUTSTANDING (100,400), BENCH_ENTRIES (gateway,router,node), BENCH_ROUNDS (5),
//   BENCH_WINDOW_MS (2000), BENCH_WARMUP_MS (500), BENCH_COMMIT_MS (2: how long a commit takes),
//   BENCH_SHARDS (8), BENCH_JOURNAL (none: answers committed and stores nothing, as Postgres keeps
//   the rows in another process; memory: MemoryVoteStore stores each batch, and its maps grow
//   with every vote, which the garbage collector then pays for), BENCH_JOURNAL_TEXT_ROWS (32: batch rows of the journal-text
//   measurement; 0 skips it), BENCH_ALLOCATIONS=1 (also samples what the measured windows
//   allocate, garbage included, and prints the top allocating functions in bytes per vote: at
//   these rates the scavenger is the largest single cost, and it grows with what a vote allocates
//   and with what each vote in flight keeps alive)
//
// Entry points, each adding a layer to the one below:
//   node     voteNode.cast with a reply callback (shard actor, committer, reply delivery)
//   router   Router.cast (the gateway's caster in every mode), with the routed-votes counter
//   gateway  HttpRouter + the vote route: body parse and check, registry, the route's answer (answerLater, ctx.answer),
//            answers written together at the end of the turn (writeSettledReplies), HTTP metrics;
//            authentication is a stand-in (the token check is not the cast path)
//
// The journal-text measurement: PgJournal.commit on a pool whose connection answers at once, so
// what it times is the client side of a commit (validation, the statement text, the pool hop),
// not Postgres or the socket.
import { spawnSync } from 'node:child_process';
import { randomUUID } from 'node:crypto';
import { mkdirSync, writeFileSync } from 'node:fs';
import { Session } from 'node:inspector/promises';
import { createRequire } from 'node:module';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { Registry } from 'prom-client';
import pino from 'pino';
import type { Journal, JournalBatch, JournalCommitResult, JournalRow } from '../actors/ports.ts';
import { createMemoryAdapters } from '../actors/memoryAdapters.ts';
import type { VoteOutcome } from '../actors/shard.ts';
import { createVoteNode, type CastRequest } from '../actors/voteNode.ts';
import type { ClusterView } from '../cluster/ports.ts';
import { Router } from '../cluster/router.ts';
import { ElectionRegistry } from '../gateway/elections/registry.ts';
import { HttpRouter, type Principal } from '../gateway/http.ts';
import type { HttpRequest, HttpResponse, TemplatedApp } from '../gateway/uws.ts';
import { voteRoutes } from '../gateway/votes/routes.ts';
import { HotCounter, type HotCounterSeries } from '../infra/hotMetrics.ts';
import { createMetrics } from '../infra/metrics.ts';
import type { Pool } from '../persistence/db.ts';
import { createPgJournal } from '../persistence/voteJournal.ts';
import { intFromEnv } from './lib/common.ts';

if (import.meta.url.endsWith('.ts') && process.env.BENCH_FROM_SOURCE !== '1') {
  const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
  const outDir = path.join(root, 'bench/out/castpath');
  mkdirSync(outDir, { recursive: true });
  const tsconfig = path.join(outDir, 'tsconfig.json');
  writeFileSync(tsconfig, JSON.stringify({
    extends: '../../../tsconfig.build.json', compilerOptions: { outDir: '.', rootDir: '../../..' }, files: ['../../../bench/castPath.ts'], include: [],
  }));
  const tsc = createRequire(import.meta.url).resolve('typescript/bin/tsc');
  const built = spawnSync(process.execPath, [tsc, '-p', tsconfig], { cwd: root, stdio: 'inherit' });
  if (built.status !== 0) throw new Error('bench/castPath.ts: tsc failed');
  const run = spawnSync(process.execPath, [...process.execArgv.filter((arg) => arg !== '--import' && arg !== 'tsx'), path.join(outDir, 'bench/castPath.js')], { stdio: 'inherit' });
  process.exit(run.status ?? 1);
}

type Entry = 'gateway' | 'router' | 'node';
const entriesKnown: readonly Entry[] = ['gateway', 'router', 'node'];

function listFromEnv<T extends string | number>(name: string, fallback: string, parse: (item: string) => T | undefined): T[] {
  const items = (process.env[name] ?? fallback).split(',').map((item) => item.trim()).filter((item) => item !== '');
  const parsed = items.map(parse);
  if (parsed.length === 0 || parsed.some((item) => item === undefined)) throw new Error(`${name}: a comma-separated list, got ${JSON.stringify(process.env[name])}`);
  return parsed as T[];
}

const outstandings = listFromEnv('BENCH_OUTSTANDING', '100,400', (s) => (/^\d+$/.test(s) && Number(s) >= 1 && Number(s) <= 20_000 ? Number(s) : undefined));
const entries = listFromEnv<Entry>('BENCH_ENTRIES', 'gateway,router,node', (s) => entriesKnown.find((e) => e === s));
const rounds = intFromEnv('BENCH_ROUNDS', 5, 100);
const windowMs = intFromEnv('BENCH_WINDOW_MS', 2000, 600_000);
const warmupMs = intFromEnv('BENCH_WARMUP_MS', 500, 600_000);
const commitMs = intFromEnv('BENCH_COMMIT_MS', 2, 1000);
const shardCount = intFromEnv('BENCH_SHARDS', 8, 1024);
const journalKind = process.env.BENCH_JOURNAL ?? 'none';
if (journalKind !== 'memory' && journalKind !== 'none') throw new Error('BENCH_JOURNAL must be memory or none');
const samplingAllocations = process.env.BENCH_ALLOCATIONS === '1';
const journalTextRows = Number(process.env.BENCH_JOURNAL_TEXT_ROWS ?? 32);
if (!(Number.isInteger(journalTextRows) && journalTextRows >= 0 && journalTextRows <= 100_000)) throw new Error('BENCH_JOURNAL_TEXT_ROWS must be 0..100000');

const nodeId = 'bench-node';
const electionId = randomUUID();
const candidateIds = [randomUUID(), randomUUID(), randomUUID(), randomUUID()];
const retryAfterMs = 1000;

// ---------------------------------------------------------------------------------------------
// The vote node, with production's vote-path settings (infra/config.ts defaults)

const memory = createMemoryAdapters();
/** A commit answers after commitMs, as Postgres's answer arrives on a later turn. */
const delayedJournal: Journal = {
  commit: (batch: JournalBatch) =>
    new Promise<JournalCommitResult>((resolve) => {
      setTimeout(() => resolve(journalKind === 'memory' ? memory.store.commitBatch(batch) : { kind: 'committed', conflicts: [] }), commitMs);
    }),
  wasCommitted: (batchId) => memory.journal.wasCommitted(batchId),
};
const voteNode = createVoteNode({
  journal: delayedJournal,
  snapshots: memory.snapshots,
  storedVotes: memory.storedVotes,
  batchIds: memory.batchIds,
  config: { flushIntervalMs: 4, batchRowsMax: 4000, commitsInFlightMax: 2, commitDeadlineMs: 2000, retryAfterMs },
});
const epochs = Array.from({ length: shardCount }, () => 1);
for (let shard = 0; shard < shardCount; shard++) memory.store.setLeaseEpoch({ electionId, shard }, 1);
await voteNode.openElection({ electionId, shardCount, candidateCount: candidateIds.length, epochs });

// The router, every shard owned here, counting routed votes as cluster/clusterNode.ts does.
const metricsRegistry = new Registry();
const routedTotal = new HotCounter({ name: 'bench_votes_routed_total', help: 'routed', labelNames: ['route', 'outcome'] as const, registers: [metricsRegistry] });
const routedSeries = { local: new Map<string, HotCounterSeries>(), forwarded: new Map<string, HotCounterSeries>(), received: new Map<string, HotCounterSeries>() };
const router = new Router({
  nodeId,
  voteNode,
  links: { request: () => { throw new Error('the bench routes no vote to a peer'); } },
  shardCountOf: (id) => (id === electionId ? shardCount : undefined),
  canServe: () => true,
  retryAfterMs,
  routeRetryMs: 3000,
  holdMs: 1500,
  onRouted: (route, outcome) => {
    const byKind = routedSeries[route];
    let series = byKind.get(outcome.kind);
    if (series === undefined) byKind.set(outcome.kind, (series = routedTotal.labels({ route, outcome: outcome.kind })));
    series.inc();
  },
});
router.applyView({
  version: 1, electionsVersion: 1, coordinatorNodeId: nodeId, operations: [], elections: [], readAtMs: 0,
  nodes: [{ nodeId, az: 'a', url: 'http://127.0.0.1:1', status: 'alive', incarnation: 1, startedAtMs: 0, lastHeartbeatAtMs: 0, draining: false }],
  shards: Array.from({ length: shardCount }, (_, shard) => ({ electionId, shard, ownerNodeId: nodeId, mapVersion: 1, epoch: 1, leaseNodeId: nodeId, leaseExpiresAtMs: Infinity })),
} as unknown as ClusterView);
if (!router.isRoutable(electionId)) throw new Error('the bench election is not routable');

// ---------------------------------------------------------------------------------------------
// The gateway: HttpRouter and the vote route over a stand-in for uWS

const registry = new ElectionRegistry();
await registry.publish({
  electionId, title: 'bench', status: 'open', shardCount, captchaPolicy: 'off', createdAt: new Date(), openedAt: new Date(), closedAt: null,
  candidates: candidateIds.map((candidateId, candidateIndex) => ({ candidateId, candidateIndex, name: `c${candidateIndex}` })),
});
const votesSeries = new Map<string, HotCounterSeries>();
const votesTotal = new HotCounter({ name: 'bench_votes_total', help: 'votes', labelNames: ['outcome'] as const, registers: [metricsRegistry] });
const [voteRoute] = voteRoutes({
  registry,
  // As gateway/votes/feature.ts: the router, every outcome counted by kind.
  caster: {
    cast: (vote, reply) =>
      router.cast(vote, (outcome) => {
        let series = votesSeries.get(outcome.kind);
        if (series === undefined) votesSeries.set(outcome.kind, (series = votesTotal.labels({ outcome: outcome.kind })));
        series.inc();
        reply(outcome);
      }),
  },
  isServing: (id) => router.isRoutable(id),
  status: { voteInElection: () => Promise.reject(new Error('not in the bench')), votesOfUser: () => Promise.reject(new Error('not in the bench')) },
});

/** Every voter has this user id (the route checks it against the token's); only voter numbers differ. */
const userId = randomUUID();
const voteBodyBytes = new TextEncoder().encode(JSON.stringify({ electionId, candidateId: candidateIds[1], userId })).buffer;
const socketAddress = new TextEncoder().encode('127.0.0.1').buffer;

let postHandler: ((res: HttpResponse, req: HttpRequest) => void) | undefined;
const app = {
  post: (_path: string, handler: (res: HttpResponse, req: HttpRequest) => void) => { postHandler = handler; },
  get: () => undefined, head: () => undefined, put: () => undefined, del: () => undefined, any: () => undefined,
} as unknown as TemplatedApp;
const http = new HttpRouter(app, {
  log: pino({ level: 'warn' }),
  metrics: createMetrics({ defaultMetrics: false }),
  // The stand-in token names its voter: "Bearer <voter number>".
  authenticate: (header) => ({ userId, voterNumber: Number(header.slice(7)), role: 'viewer', sessionId: 's', expiresAtS: 4_000_000_000 }) satisfies Principal,
  clientAddress: { honoursForwardedFor: false, resolve: (ip) => ({ ip, networkKey: ip }) },
  isAccepting: () => true,
});
http.register(voteRoute!);

/**
 * The HTTP layer passes header names and status lines as bytes made once (uWS takes a string or
 * bytes): decoded once per object here, so the stand-in allocates nothing per vote for them.
 */
const decodedBytes = new WeakMap<Uint8Array, string>();
function latin1Text(value: string | Uint8Array): string {
  if (typeof value === 'string') return value;
  let text = decodedBytes.get(value);
  if (text === undefined) decodedBytes.set(value, (text = Buffer.from(value.buffer, value.byteOffset, value.byteLength).toString('latin1')));
  return text;
}

/** One request as uWS hands it over: the headers a vote carries. */
class BenchRequest {
  constructor(private readonly authorization: string) {}
  getHeader(name: string | Uint8Array): string {
    switch (latin1Text(name)) {
      case 'authorization': return this.authorization;
      case 'content-type': return 'application/json';
      case 'content-length': return String(voteBodyBytes.byteLength);
      case 'user-agent': return 'bench';
      default: return '';
    }
  }
  getParameter(): string | undefined { return undefined; }
  getQuery(): string { return ''; }
  getUrl(): string { return '/api/v1/votes'; }
  getMethod(): string { return 'post'; }
  forEach(visit: (name: string, value: string) => void): void { visit('content-length', String(voteBodyBytes.byteLength)); }
}

/** One response: the body comes in one chunk right after the handler returns, as a vote's does. */
class BenchResponse {
  private onDataHandler: ((chunk: ArrayBuffer, isLast: boolean) => void) | undefined;
  status = '';
  constructor(private readonly answered: (ok: boolean) => void) {}
  onAborted(): this { return this; }
  onData(handler: (chunk: ArrayBuffer, isLast: boolean) => void): this { this.onDataHandler = handler; return this; }
  deliverBody(): void { this.onDataHandler?.(voteBodyBytes, true); }
  getRemoteAddressAsText(): ArrayBuffer { return socketAddress; }
  cork(write: () => void): this { write(); return this; }
  writeStatus(status: string | Uint8Array): this { this.status = latin1Text(status); return this; }
  writeHeader(): this { return this; }
  end(): this { this.answered(this.status === '200 OK'); return this; }
  endWithoutBody(): this { this.answered(false); return this; }
  close(): this { this.answered(false); return this; }
}

// ---------------------------------------------------------------------------------------------
// The closed loop

let nextVoter = 0;
let answered = 0;
let refused = 0;
let inFlight = 0;
let target = 0;
/** Votes to start on the next turn: a new request arrives from I/O, never inside an answer. */
let toStart = 0;
let startScheduled = false;

const onOutcome = (outcome: VoteOutcome): void => finished(outcome.kind === 'accepted');
const onAnswered = (ok: boolean): void => finished(ok);

function finished(ok: boolean): void {
  inFlight--;
  answered++;
  if (!ok) refused++;
  if (inFlight + toStart < target) {
    toStart++;
    if (!startScheduled) {
      startScheduled = true;
      setImmediate(startVotes);
    }
  }
}

let entry: Entry = 'node';
function startVotes(): void {
  startScheduled = false;
  const n = toStart;
  toStart = 0;
  for (let i = 0; i < n; i++) startVote();
}

function startVote(): void {
  inFlight++;
  const voterNumber = nextVoter++;
  switch (entry) {
    case 'node': {
      const vote: CastRequest = { electionId, voterNumber, candidateIndex: 1 };
      voteNode.cast(vote, onOutcome);
      break;
    }
    case 'router':
      router.cast({ electionId, voterNumber, candidateIndex: 1 }, onOutcome);
      break;
    case 'gateway': {
      const res = new BenchResponse(onAnswered);
      postHandler!(res as unknown as HttpResponse, new BenchRequest(`Bearer ${voterNumber}`) as unknown as HttpRequest);
      res.deliverBody();
      break;
    }
  }
}

const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

interface RoundResult {
  readonly entry: Entry;
  readonly outstanding: number;
  readonly cpuUsPerVote: number;
  readonly votesPerS: number;
}

async function measure(at: Entry, outstanding: number): Promise<RoundResult> {
  entry = at;
  target = outstanding;
  toStart = outstanding;
  startScheduled = true;
  setImmediate(startVotes);
  await sleep(warmupMs);
  const answered0 = answered;
  const refused0 = refused;
  const cpu0 = process.cpuUsage();
  const t0 = performance.now();
  if (allocations !== null) await allocations.start();
  await sleep(windowMs);
  const cpu = process.cpuUsage(cpu0);
  const elapsedMs = performance.now() - t0;
  const votes = answered - answered0;
  if (allocations !== null) await allocations.stop(`${at} ${outstanding}`, votes);
  // Drain: no new votes, wait for the ones in flight.
  target = 0;
  const deadlineMs = Date.now() + 10_000;
  while (inFlight > 0 && Date.now() < deadlineMs) await sleep(5);
  if (inFlight > 0) throw new Error(`${inFlight} votes not answered 10 s after the round`);
  if (refused - refused0 > 0) throw new Error(`${refused - refused0} votes not accepted in a round of ${at} at ${outstanding}`);
  return { entry: at, outstanding, cpuUsPerVote: (cpu.user + cpu.system) / votes, votesPerS: (votes * 1000) / elapsedMs };
}

// ---------------------------------------------------------------------------------------------
// Allocation sampling (BENCH_ALLOCATIONS=1): V8's sampling heap profiler, keeping the samples of
// objects the collector has freed since, so it shows what a vote allocates, not what survives.

interface SamplingNode {
  readonly callFrame: { readonly functionName: string; readonly url: string; readonly lineNumber: number };
  readonly selfSize: number;
  readonly children: readonly SamplingNode[];
}

function createAllocationSampler() {
  const session = new Session();
  session.connect();
  const bytesBySite = new Map<string, Map<string, number>>();
  return {
    async start(): Promise<void> {
      await session.post('HeapProfiler.startSampling', { samplingInterval: 4096, includeObjectsCollectedByMajorGC: true, includeObjectsCollectedByMinorGC: true });
    },
    async stop(label: string, votes: number): Promise<void> {
      const { profile } = (await session.post('HeapProfiler.stopSampling')) as unknown as { profile: { head: SamplingNode } };
      let bySite = bytesBySite.get(label);
      if (bySite === undefined) bytesBySite.set(label, (bySite = new Map()));
      const walk = (node: SamplingNode): void => {
        if (node.selfSize > 0) {
          const frame = node.callFrame;
          const site = `${frame.functionName || '(anonymous)'} ${frame.url.replace(/^.*\/castpath\//, '').replace(/^.*node_modules\//, '')}:${frame.lineNumber + 1}`;
          bySite!.set(site, (bySite!.get(site) ?? 0) + node.selfSize / votes);
        }
        for (const child of node.children) walk(child);
      };
      walk(profile.head);
      bySite.set('(votes measured)', (bySite.get('(votes measured)') ?? 0) + 1);
    },
    report(out: (line: string) => void): void {
      for (const [label, bySite] of bytesBySite) {
        const windows = bySite.get('(votes measured)') ?? 1;
        bySite.delete('(votes measured)');
        const sites = [...bySite].map(([site, bytes]) => [site, bytes / windows] as const).sort((a, b) => b[1] - a[1]);
        const total = sites.reduce((sum, [, bytes]) => sum + bytes, 0);
        out('');
        out(`Allocated per vote, ${label} (sampled every 4 KiB, ${windows} windows): ~${Math.round(total)} bytes; top sites:`);
        for (const [site, bytes] of sites.slice(0, 25)) out(`  ${Math.round(bytes).toString().padStart(6)} B  ${site}`);
      }
    },
  };
}
const allocations = samplingAllocations ? createAllocationSampler() : null;

// ---------------------------------------------------------------------------------------------
// The journal's client side: PgJournal.commit over a connection that answers at once

async function measureJournalText(rowsPerBatch: number): Promise<{ usPerRow: number; usPerCommit: number }[]> {
  const answer = { rows: [{ stale_positions: [], row_count: rowsPerBatch, conflict_positions: [] }] };
  const client = {
    query: (text: unknown) => Promise.resolve(typeof text === 'string' && text.startsWith('PREPARE') ? {} : [{}, {}, answer]),
    on: () => client,
    removeListener: () => client,
    release: () => undefined,
  };
  const pool = { connect: () => Promise.resolve(client) } as unknown as Pool;
  const journal = createPgJournal({ pool, nodeId });
  // A few distinct batches, each committed again and again under a new batch id: what is timed is
  // the journal, not making rows (nor collecting them: made fresh, they outlived the young generation).
  const batches = Array.from({ length: 64 }, (): readonly JournalRow[] =>
    Array.from({ length: rowsPerBatch }, (_, i): JournalRow => {
      const voterNumber = nextVoter++;
      return { electionId, shard: voterNumber % shardCount, epoch: 1, voterNumber, candidateIndex: i % 4, voteId: randomUUID(), acceptedAtMs: Date.now() };
    }));
  let batchId = 0;
  const commits = Math.max(200, Math.ceil(100_000 / rowsPerBatch));
  const results: { usPerRow: number; usPerCommit: number }[] = [];
  for (let round = 0; round < rounds + 1; round++) {
    const cpu0 = process.cpuUsage();
    for (let i = 0; i < commits; i++) {
      const result = await journal.commit({ batchId: ++batchId, rows: batches[i % batches.length]! });
      if (result.kind !== 'committed') throw new Error(`journal text: ${JSON.stringify(result)}`);
    }
    const cpu = process.cpuUsage(cpu0);
    // The first round warms up.
    if (round > 0) results.push({ usPerRow: (cpu.user + cpu.system) / (commits * rowsPerBatch), usPerCommit: (cpu.user + cpu.system) / commits });
  }
  return results;
}

// ---------------------------------------------------------------------------------------------

const median = (values: readonly number[]) => {
  const sorted = [...values].sort((a, b) => a - b);
  const mid = sorted.length >> 1;
  return sorted.length % 2 === 1 ? sorted[mid]! : (sorted[mid - 1]! + sorted[mid]!) / 2;
};
const fixed = (value: number) => value.toFixed(1);

const results: RoundResult[] = [];
// Warm-up of every code path, not measured.
for (const at of entries) for (const outstanding of outstandings) await measure(at, outstanding);
for (let round = 0; round < rounds; round++) {
  // Alternating, and in the other order every other round, so a drift of the machine reaches each alike.
  const order = entries.flatMap((at) => outstandings.map((outstanding) => ({ at, outstanding })));
  if (round % 2 === 1) order.reverse();
  for (const { at, outstanding } of order) results.push(await measure(at, outstanding));
}
const journalText = journalTextRows > 0 ? await measureJournalText(journalTextRows) : [];
await voteNode.close();

const out = (line: string) => process.stdout.write(`${line}\n`);
out(`Process CPU per vote, ${shardCount} shards, commits answered after ${commitMs} ms (journal: ${journalKind}), ${rounds} alternating rounds of ${windowMs} ms after ${warmupMs} ms of warm-up, load average ${(await import('node:os')).loadavg().map((l) => l.toFixed(1)).join(' ')}`);
out('');
out('| entry | outstanding votes | CPU µs per vote, median | rounds | votes/s, median |');
out('|---|---|---|---|---|');
const summary = [];
for (const at of entries) {
  for (const outstanding of outstandings) {
    const mine = results.filter((r) => r.entry === at && r.outstanding === outstanding);
    const cpu = median(mine.map((r) => r.cpuUsPerVote));
    const votesPerS = median(mine.map((r) => r.votesPerS));
    summary.push({ entry: at, outstanding, cpuUsPerVote: Number(cpu.toFixed(2)), rounds: mine.map((r) => Number(r.cpuUsPerVote.toFixed(2))), votesPerS: Math.round(votesPerS) });
    out(`| ${at} | ${outstanding} | **${fixed(cpu)}** | ${mine.map((r) => fixed(r.cpuUsPerVote)).join(' · ')} | ${Math.round(votesPerS)} |`);
  }
}
if (journalText.length > 0) {
  out('');
  out(`Journal client side (PgJournal.commit, a connection that answers at once), ${journalTextRows}-row batches: ` +
    `**${fixed(median(journalText.map((r) => r.usPerRow)))} µs per row** (${journalText.map((r) => fixed(r.usPerRow)).join(' · ')}), ` +
    `${fixed(median(journalText.map((r) => r.usPerCommit)))} µs per commit`);
}
allocations?.report(out);
out(`BENCH_CAST_PATH_JSON ${JSON.stringify({
  shardCount, commitMs, journal: journalKind, rounds, windowMs, warmupMs, summary,
  journalText: journalText.length === 0 ? null : { rowsPerBatch: journalTextRows, usPerRow: Number(median(journalText.map((r) => r.usPerRow)).toFixed(2)), usPerCommit: Number(median(journalText.map((r) => r.usPerCommit)).toFixed(1)) },
})}`);
