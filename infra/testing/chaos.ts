// Chaos tests' tools (infra/chaos.*.e2e.test.ts): a vote load through every live node that
// records every answer, probes that time how long each shard takes to accept votes again after a
// fault, the checks every scenario ends with (each acknowledged vote stored once, nothing stored
// that was not sent, every node's results equal to count(*)), and a TCP proxy between one node
// and Postgres that a test can cut. The shared Postgres itself is never stopped or paused.
import { mkdir, mkdtemp, writeFile } from 'node:fs/promises';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { afterAll, afterEach } from 'vitest';
import type { TestCluster } from './clusterHarness.ts';
import { eventually } from './clusterHarness.ts';
import type { LivevoteProcess } from './processHarness.ts';
import { createVoters, type TestVoter } from './voters.ts';

export interface Answer {
  readonly status: number;
  readonly body: any;
}

/** One HTTP call that gives up after `timeoutMs` (a SIGSTOPped node never answers). */
export async function callWithTimeout(
  baseUrl: string, method: string, path: string, options: { token?: string; body?: unknown; timeoutMs?: number } = {},
): Promise<Answer> {
  const headers: Record<string, string> = {};
  if (options.token) headers.authorization = `Bearer ${options.token}`;
  if (options.body !== undefined) headers['content-type'] = 'application/json';
  const response = await fetch(baseUrl + path, {
    method, headers, body: options.body === undefined ? undefined : JSON.stringify(options.body), signal: AbortSignal.timeout(options.timeoutMs ?? 10_000),
  });
  const text = await response.text();
  let body: unknown = text;
  try {
    body = text ? JSON.parse(text) : undefined;
  } catch {
    // not JSON: keep the text
  }
  return { status: response.status, body };
}

export function isRunning(node: LivevoteProcess): boolean {
  return node.child.exitCode === null && node.child.signalCode === null;
}

/** One election of a test cluster, and what the test sent and got back for it. */
export class ChaosElection {
  readonly cluster: TestCluster;
  readonly electionId: string;
  readonly candidateIds: readonly string[];
  readonly shardCount: number;
  /** Node ids the load and the probes must not call (paused, or cut off on purpose). */
  readonly avoided = new Set<string>();
  /** Voters a vote was sent for (whatever the answer). */
  readonly attempted = new Set<number>();
  /** voterNumber → what a 200 answered. */
  readonly acknowledged = new Map<number, { candidate: number; voteId: string }>();
  private spareVoters: TestVoter[] = [];

  constructor(cluster: TestCluster, electionId: string, candidateIds: readonly string[], shardCount: number) {
    this.cluster = cluster;
    this.electionId = electionId;
    this.candidateIds = candidateIds;
    this.shardCount = shardCount;
  }

  static async create(cluster: TestCluster, via: LivevoteProcess, shardCount: number): Promise<ChaosElection> {
    const token = await cluster.adminToken();
    const created = await callWithTimeout(via.baseUrl, 'POST', '/api/v1/admin/elections', {
      token, body: { title: 'Chaos finale', candidates: [{ name: 'A' }, { name: 'B' }, { name: 'C' }], shardCount }, timeoutMs: 60_000,
    });
    if (created.status !== 201) throw new Error(`create election: ${created.status} ${JSON.stringify(created.body)}`);
    const election = new ChaosElection(cluster, created.body.electionId, created.body.candidates.map((c: { candidateId: string }) => c.candidateId), shardCount);
    const opened = await callWithTimeout(via.baseUrl, 'POST', `/api/v1/admin/elections/${election.electionId}/open`, { token, timeoutMs: 60_000 });
    if (opened.status !== 200) throw new Error(`open election: ${opened.status}`);
    return election;
  }

  /** The candidate a voter is always sent for: a stored row can be checked against it. */
  candidateOf(voterNumber: number): number {
    // Not voterNumber % candidates: with shard counts divisible by it, a shard would hold one candidate only.
    return Math.floor(voterNumber / 7) % this.candidateIds.length;
  }

  shardOf(voterNumber: number): number {
    return voterNumber % this.shardCount;
  }

  liveNodes(): [string, LivevoteProcess][] {
    return [...this.cluster.nodes].filter(([id, node]) => isRunning(node) && !this.avoided.has(id));
  }

  liveUrls(): string[] {
    return this.liveNodes().map(([, node]) => node.baseUrl);
  }

  async voters(count: number): Promise<TestVoter[]> {
    return createVoters(this.cluster.db.pool, count, this.cluster.jwtSecret);
  }

  /** A voter nobody has voted for yet whose vote falls in `shard`. */
  async spareVoterIn(shard: number): Promise<TestVoter> {
    for (;;) {
      const index = this.spareVoters.findIndex((v) => this.shardOf(v.voterNumber) === shard);
      if (index !== -1) return this.spareVoters.splice(index, 1)[0]!;
      this.spareVoters.push(...(await this.voters(this.shardCount * 8)));
    }
  }

  /** Creates spare voters now, so a timed probe does not wait for their insert. */
  async reserveSpareVoters(perShard = 4): Promise<void> {
    this.spareVoters.push(...(await this.voters(this.shardCount * perShard)));
  }

  /** One vote through one node, recorded. Throws when the node does not answer in time. */
  async castOnce(baseUrl: string, voter: TestVoter, timeoutMs = 10_000): Promise<Answer> {
    this.attempted.add(voter.voterNumber);
    const candidate = this.candidateOf(voter.voterNumber);
    const answer = await callWithTimeout(baseUrl, 'POST', '/api/v1/votes', {
      token: voter.token, body: { electionId: this.electionId, candidateId: this.candidateIds[candidate], userId: voter.userId }, timeoutMs,
    });
    if (answer.status === 200) this.record(voter.voterNumber, candidate, answer.body.voteId);
    return answer;
  }

  private record(voterNumber: number, candidate: number, voteId: string): void {
    const earlier = this.acknowledged.get(voterNumber);
    // A retry of an acknowledged vote must answer the same voteId: one vote, once.
    if (earlier !== undefined && earlier.voteId !== voteId) throw new Error(`voter ${voterNumber} acknowledged twice with different voteIds`);
    this.acknowledged.set(voterNumber, { candidate, voteId });
  }

  /**
   * Casts through the live nodes in turn (a different one each attempt) until a 200, retrying
   * 503s and calls that fail or time out. Any other answer is returned as it is.
   */
  async castUntilAccepted(voter: TestVoter, deadlineMs = 90_000): Promise<Answer & { attempts: number }> {
    const stopAt = Date.now() + deadlineMs;
    let attempts = 0;
    for (;;) {
      const urls = this.liveUrls();
      const url = urls[(voter.voterNumber + attempts) % urls.length]!;
      attempts++;
      let answer: Answer | undefined;
      try {
        answer = await this.castOnce(url, voter);
      } catch {
        // Died, paused or timed out under us: the vote may or may not be stored; the retry tells.
      }
      if (answer !== undefined && answer.status !== 503) return { ...answer, attempts };
      if (Date.now() > stopAt) return { status: answer?.status ?? 0, body: { error: { code: 'deadline' } }, attempts };
      await new Promise((resolve) => setTimeout(resolve, 40 + Math.random() * 60));
    }
  }

  /** Votes for `voters` through every live node, `concurrency` at a time. */
  startLoad(voters: readonly TestVoter[], concurrency = 8): VoteLoad {
    let next = 0;
    let stopped = false;
    const load = { sent: 0, acknowledged: 0, failures: [] as string[] };
    const worker = async () => {
      while (!stopped && next < voters.length) {
        const voter = voters[next++]!;
        load.sent++;
        const answer = await this.castUntilAccepted(voter);
        if (answer.status === 200) load.acknowledged++;
        else load.failures.push(`voter ${voter.voterNumber}: ${answer.status} ${JSON.stringify(answer.body)}`);
      }
    };
    const done = Promise.all(Array.from({ length: concurrency }, worker)).then(() => undefined);
    return {
      get sent() { return load.sent; },
      get acknowledged() { return load.acknowledged; },
      failures: load.failures,
      done,
      stop: () => { stopped = true; return done; },
    };
  }

  /**
   * For each shard, from `sinceMs` (the fault): the ms until a fresh vote in it was accepted
   * through the live nodes. Every vote is recorded like any other.
   */
  async timeUntilAccepting(shards: readonly number[], sinceMs: number, deadlineMs = 90_000): Promise<Map<number, number>> {
    const times = new Map<number, number>();
    await Promise.all(shards.map(async (shard) => {
      const voter = await this.spareVoterIn(shard);
      const answer = await this.castUntilAccepted(voter, deadlineMs);
      if (answer.status !== 200) throw new Error(`shard ${shard} did not accept a vote again: ${answer.status} ${JSON.stringify(answer.body)}`);
      times.set(shard, Date.now() - sinceMs);
    }));
    return times;
  }

  async storedVotes(): Promise<Map<number, { candidate: number; voteId: string }>> {
    const rows = await this.cluster.db.pool.query<{ voter_number: number; candidate_index: number; vote_id: string }>(
      'SELECT voter_number, candidate_index, vote_id FROM votes WHERE election_id = $1', [this.electionId],
    );
    return new Map(rows.rows.map((r) => [Number(r.voter_number), { candidate: r.candidate_index, voteId: r.vote_id }]));
  }

  /** count(*) per candidate. */
  async storedCounts(): Promise<number[]> {
    const rows = await this.cluster.db.pool.query<{ candidate_index: number; n: number }>(
      'SELECT candidate_index, count(*)::bigint AS n FROM votes WHERE election_id = $1 GROUP BY candidate_index', [this.electionId],
    );
    const counts = this.candidateIds.map(() => 0);
    for (const row of rows.rows) counts[row.candidate_index] = Number(row.n);
    return counts;
  }

  async resultsOn(baseUrl: string): Promise<number[]> {
    const answer = await callWithTimeout(baseUrl, 'GET', `/api/v1/results/${this.electionId}`, { timeoutMs: 5_000 });
    if (answer.status !== 200) throw new Error(`results: ${answer.status}`);
    return (answer.body.candidates as { votes: number }[]).map((c) => c.votes);
  }

  /**
   * What every scenario ends with, once no vote is in flight: each acknowledged vote stored once
   * with the voteId and candidate it was acknowledged with; no row for a voter never sent, or
   * for another candidate than the one sent; every live node's results equal count(*).
   */
  async expectConsistent(resultsTimeoutMs = 30_000): Promise<{ stored: number; acknowledged: number }> {
    const stored = await this.storedVotes();
    const problems: string[] = [];
    for (const [voterNumber, ack] of this.acknowledged) {
      const row = stored.get(voterNumber);
      if (row === undefined) problems.push(`acknowledged vote of voter ${voterNumber} is not stored`);
      else if (row.voteId !== ack.voteId || row.candidate !== ack.candidate) problems.push(`voter ${voterNumber}: stored ${JSON.stringify(row)}, acknowledged ${JSON.stringify(ack)}`);
    }
    for (const [voterNumber, row] of stored) {
      if (!this.attempted.has(voterNumber)) problems.push(`voter ${voterNumber} never sent but stored`);
      else if (row.candidate !== this.candidateOf(voterNumber)) problems.push(`voter ${voterNumber} stored for candidate ${row.candidate}`);
    }
    if (problems.length > 0) throw new Error(`${problems.length} problems: ${problems.slice(0, 10).join('; ')}`);
    const counts = await this.storedCounts();
    for (const [nodeId, node] of this.liveNodes()) {
      let last: number[] | undefined;
      await eventually(async () => {
        last = await this.resultsOn(node.baseUrl);
        return JSON.stringify(last) === JSON.stringify(counts) ? true : undefined;
      }, resultsTimeoutMs, `results on ${nodeId} to equal count(*) ${JSON.stringify(counts)}`).catch((error: Error) => {
        throw new Error(`${error.message}; last answered ${JSON.stringify(last)}`);
      });
    }
    return { stored: stored.size, acknowledged: this.acknowledged.size };
  }
}

/** Every node's output into `dir` (for a failed run: the node logs say what each node did). */
export async function saveNodeLogs(cluster: TestCluster, dir: string): Promise<void> {
  await mkdir(dir, { recursive: true });
  for (const [id, node] of cluster.nodes) await writeFile(path.join(dir, `${id}.log`), node.output());
}

/** The log lines of the cluster's decisions: deaths declared, map versions written, shards taken over. */
const decisionMessages = new Set([
  'members declared dead after silence; their shards go to the survivors',
  'shard map written',
  'shards taken over and served',
]);

const omittedDecisionFields = new Set(['level', 'time', 'pid', 'hostname', 'service', 'msg', 'component', 'nodeId', 'electionId']);

/**
 * The cluster's last `linesMax` decisions as its nodes logged them, in time order, one short line
 * each: what a failure's message carries, since CI keeps the test's output and not the files.
 */
export function clusterDecisions(cluster: TestCluster, linesMax = 40): string[] {
  const decisions: { time: string; text: string }[] = [];
  for (const [id, node] of cluster.nodes) {
    for (const line of node.output().split('\n')) {
      if (!line.startsWith('{') || !line.includes('"msg"')) continue;
      let entry: Record<string, unknown>;
      try {
        entry = JSON.parse(line) as Record<string, unknown>;
      } catch {
        continue;
      }
      if (typeof entry.msg !== 'string' || !decisionMessages.has(entry.msg)) continue;
      const at = typeof entry.time === 'string' ? entry.time : '';
      // What the line decided, without what every line or the prefix says, or the timestamps.
      const fields = Object.fromEntries(Object.entries(entry).filter(([key]) => !omittedDecisionFields.has(key) && !/(AtMs|SinceMs)$/.test(key)));
      decisions.push({ time: at, text: `${at.slice(11, 23)} ${id}: ${entry.msg} ${JSON.stringify(fields).slice(0, 600)}` });
    }
  }
  return decisions.sort((a, b) => (a.time < b.time ? -1 : a.time > b.time ? 1 : 0)).slice(-linesMax).map((d) => d.text);
}

/**
 * For a chaos file, called at its top: every node's log kept when one of its tests (or its
 * beforeAll) fails, in a new `$TMPDIR/livevote-<name>-*` directory whose path is added to the
 * failure's message with the cluster's last decisions (clusterDecisions); a run that passes writes
 * nothing. The logs are saved when a test fails, as that test left them, and again at the end of
 * the file (with what followed).
 */
export function keepNodeLogsOnFailure(name: string, cluster: () => TestCluster | undefined): void {
  let dir: string | undefined;
  const save = async (): Promise<string | undefined> => {
    const current = cluster();
    if (current === undefined) return undefined;
    dir ??= await mkdtemp(path.join(os.tmpdir(), `livevote-${name}-`));
    await saveNodeLogs(current, dir);
    return dir;
  };
  const say = (errors: { message: string }[] | undefined, kept: string) => {
    const line = `node logs kept in ${kept}`;
    const current = cluster();
    const decisions = current === undefined ? [] : clusterDecisions(current);
    const said = decisions.length === 0 ? line : `${line}; the cluster's last decisions:\n${decisions.join('\n')}`;
    if (errors?.[0] !== undefined && !errors[0].message.includes(line)) errors[0].message += `\n${said}`;
    console.error(said);
  };
  afterEach(async ({ task }) => {
    if (task.result?.state !== 'fail') return;
    const kept = await save();
    if (kept !== undefined) say(task.result.errors, kept);
  });
  afterAll(async ({}, suite) => {
    // A failed beforeAll fails the file's suite, and its tests never run.
    const beforeAllFailed = suite.result?.state === 'fail';
    if (dir === undefined && !beforeAllFailed) return;
    const kept = await save();
    if (kept !== undefined && beforeAllFailed) say(suite.result?.errors, kept);
  });
}

export interface VoteLoad {
  readonly sent: number;
  readonly acknowledged: number;
  /** Votes that ended with an answer other than 200 (or no answer by the deadline). */
  readonly failures: string[];
  readonly done: Promise<void>;
  /** No new vote after the ones under way; resolves when they ended. */
  stop(): Promise<void>;
}

export interface ShardRow {
  readonly shard: number;
  readonly ownerNodeId: string;
  readonly leaseNodeId: string | null;
  readonly epoch: number;
}

/** The shard map and leases of an election, straight from Postgres. */
export async function shardRows(cluster: TestCluster, electionId: string): Promise<ShardRow[]> {
  const rows = await cluster.db.pool.query<{ shard: number; owner_node: string; lease_node: string | null; epoch: number | null }>(
    `SELECT o.shard, o.owner_node, l.owner_node AS lease_node, l.epoch FROM shard_owners o
     LEFT JOIN shard_leases l ON l.election_id = o.election_id AND l.shard = o.shard WHERE o.election_id = $1 ORDER BY o.shard`,
    [electionId],
  );
  return rows.rows.map((r) => ({ shard: r.shard, ownerNodeId: r.owner_node, leaseNodeId: r.lease_node, epoch: Number(r.epoch ?? 0) }));
}

export async function memberRows(cluster: TestCluster): Promise<Map<string, { status: string; incarnation: number; az: string }>> {
  const rows = await cluster.db.pool.query<{ node_id: string; status: string; incarnation: number; az: string }>(
    'SELECT node_id, status, incarnation, az FROM cluster_nodes',
  );
  return new Map(rows.rows.map((r) => [r.node_id, { status: r.status, incarnation: Number(r.incarnation), az: r.az }]));
}

/**
 * The members as they are now (status and incarnation) against `before`, naming every node whose
 * incarnation rose since: declared dead while its process was alive (a heartbeat starved past
 * LIVEVOTE_DEAD_AFTER_MS) and back as a new incarnation that owns nothing. A test that killed a
 * node tells the kill's deaths from such false ones by this (a killed process never rejoins).
 */
export async function membersSince(cluster: TestCluster, before: ReadonlyMap<string, { incarnation: number }>): Promise<{ falseDeaths: string[]; said: string }> {
  const now = await memberRows(cluster);
  const falseDeaths = [...now].filter(([id, m]) => m.incarnation > (before.get(id)?.incarnation ?? m.incarnation)).map(([id]) => id);
  const members = [...now].sort(([x], [y]) => x.localeCompare(y)).map(([id, m]) => `${id} ${m.status} incarnation ${before.get(id)?.incarnation ?? '-'} → ${m.incarnation}`);
  const verdict = falseDeaths.length === 0
    ? 'no false death (no incarnation rose)'
    : `FALSE DEATH of ${falseDeaths.join(', ')}: declared dead while alive and rejoined as a new incarnation`;
  return { falseDeaths, said: `members: ${members.join('; ')}; ${verdict}` };
}

/** Waits until the map gives the election `shardCount` shards, spread over exactly these nodes. */
export async function waitForBalancedMap(election: ChaosElection, nodeIds: readonly string[], timeoutMs = 60_000): Promise<ShardRow[]> {
  const perNode = Math.floor(election.shardCount / nodeIds.length);
  return eventually(async () => {
    const rows = await shardRows(election.cluster, election.electionId);
    if (rows.length !== election.shardCount) return undefined;
    const counts = new Map(nodeIds.map((id) => [id, 0]));
    for (const row of rows) {
      if (!counts.has(row.ownerNodeId) || row.leaseNodeId !== row.ownerNodeId) return undefined;
      counts.set(row.ownerNodeId, counts.get(row.ownerNodeId)! + 1);
    }
    return [...counts.values()].every((n) => n >= perNode) ? rows : undefined;
  }, timeoutMs, `the map to spread ${election.shardCount} shards over ${nodeIds.join(', ')}`);
}

/** p50 / max of a set of figures, for the log lines the lead cites. */
export function summary(label: string, timesMs: Iterable<number>): string {
  const sorted = [...timesMs].sort((a, b) => a - b);
  const at = (q: number) => sorted[Math.min(sorted.length - 1, Math.floor(q * sorted.length))]!;
  return `[chaos] ${label}: ${sorted.length} shards accepting again after p50 ${at(0.5)} ms, max ${sorted[sorted.length - 1]} ms (each: ${sorted.join(', ')})`;
}

/**
 * A TCP proxy in this test process between one node and Postgres. `cut()` destroys every
 * connection and refuses new ones (the port stops listening); `heal()` listens on the same port
 * again. Only the proxied node loses Postgres.
 */
export class PostgresProxy {
  private server: net.Server | undefined;
  private readonly sockets = new Set<net.Socket>();
  /** Our side of each connection to Postgres: what pg_stat_activity shows as client_port. */
  private readonly upstreams = new Set<net.Socket>();
  port = 0;

  private readonly target: { host: string; port: number };

  /**
   * Proxies the server of `databaseUrl`. The embedded server's URLs name a socket directory
   * (percent-encoded) as the host; it listens on 127.0.0.1 at the same port too, and the proxy
   * uses that: over TCP, Postgres shows the proxied sessions' client ports (upstreamPorts()).
   */
  constructor(databaseUrl: string) {
    const url = new URL(databaseUrl);
    const host = decodeURIComponent(url.hostname);
    this.target = { host: host.startsWith('/') ? '127.0.0.1' : host, port: Number(url.port || 5432) };
  }

  async listen(): Promise<void> {
    const server = net.createServer((client) => {
      const upstream = net.connect(this.target.port, this.target.host);
      this.upstreams.add(upstream);
      upstream.on('close', () => this.upstreams.delete(upstream));
      for (const socket of [client, upstream]) {
        this.sockets.add(socket);
        socket.on('close', () => this.sockets.delete(socket));
        socket.on('error', () => { client.destroy(); upstream.destroy(); });
      }
      client.pipe(upstream);
      upstream.pipe(client);
    });
    await new Promise<void>((resolve, reject) => {
      server.once('error', reject);
      server.listen(this.port, '127.0.0.1', () => resolve());
    });
    this.port = (server.address() as net.AddressInfo).port;
    this.server = server;
  }

  /** The client ports Postgres sees for the proxied node's sessions (pg_stat_activity.client_port). */
  upstreamPorts(): number[] {
    return [...this.upstreams].map((socket) => socket.localPort).filter((port): port is number => port !== undefined);
  }

  /** The URL of `databaseUrl` with host:port replaced by the proxy's. */
  urlFor(databaseUrl: string): string {
    const url = new URL(databaseUrl);
    url.hostname = '127.0.0.1';
    url.port = String(this.port);
    return url.toString();
  }

  async cut(): Promise<void> {
    const server = this.server;
    this.server = undefined;
    const closed = server ? new Promise<void>((resolve) => server.close(() => resolve())) : Promise.resolve();
    for (const socket of this.sockets) socket.destroy();
    this.sockets.clear();
    await closed;
  }

  heal(): Promise<void> {
    return this.listen();
  }

  async close(): Promise<void> {
    await this.cut();
  }
}
