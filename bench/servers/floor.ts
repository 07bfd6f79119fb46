// The durable floor: the ceiling server plus the one thing every vote server here must also do,
// store the vote in this Postgres before answering, done the cheapest way we know and nothing
// else. It parses the body (to know what to store), group-commits the rows (one INSERT … SELECT
// FROM unnest(arrays) ON CONFLICT DO NOTHING per batch, a named prepared statement, up to two
// commits in flight, a batch leaves as soon as a commit slot is free) into a table with a primary
// key, and answers each request after its batch's COMMIT (synchronous_commit as the server has it).
// No token check, no validation, no actors, no audit, no metadata, no metrics. For the report it
// keeps three sums (GET /stats, the same shape as livevote's vote stage metrics): each stored
// vote's wait for its batch to start, its batch's commit time, and its request's time.
//
// It is not a vote server (it trusts the body); it measures what storing before answering costs
// on this machine, so the ceiling ratio can be read against it: no correct server on this stack
// that stores each vote in this Postgres before answering can go faster than this one.
//
//   env: DATABASE_URL, FLOOR_POOL_MAX (default 4), PORT (0 picks one; prints BENCH_LISTENING <port>)
import pg from 'pg';
import type { HttpResponse } from 'uWebSockets.js';
import { uws } from '../../gateway/uws.ts';

const databaseUrl = process.env.DATABASE_URL;
if (!databaseUrl) throw new Error('floor server: DATABASE_URL is required');
const commitsInFlightMax = 2;
const batchRowsMax = 2000;
/** Requests waiting for a batch: past this the server answers 503 (it never queues without bound). */
const pendingMax = 20_000;
const bodyBytesMax = 4 * 1024;
const pool = new pg.Pool({ connectionString: databaseUrl, max: Number(process.env.FLOOR_POOL_MAX ?? 4), application_name: 'bench-floor' });

await pool.query(`CREATE TABLE IF NOT EXISTS floor_votes (
  election_id  uuid NOT NULL,
  user_id      uuid NOT NULL,
  candidate_id uuid NOT NULL,
  PRIMARY KEY (election_id, user_id)
)`);

const insertBatch = {
  name: 'floor_insert_batch',
  text: `INSERT INTO floor_votes (election_id, user_id, candidate_id)
         SELECT * FROM unnest($1::uuid[], $2::uuid[], $3::uuid[]) ON CONFLICT DO NOTHING`,
};

interface PendingVote {
  readonly res: HttpResponse;
  /** performance.now() when its body was read. */
  readonly receivedMs: number;
  readonly electionId: string;
  readonly userId: string;
  readonly candidateId: string;
  aborted: boolean;
}

const accepted = JSON.stringify({ status: 'accepted' });
/** Sums over stored votes, in ms (GET /stats). */
const stageSums = { votes: 0, bufferedMs: 0, committingMs: 0, requestMs: 0 };
const pending: PendingVote[] = [];
let commitsInFlight = 0;
let flushScheduled = false;

function answer(vote: PendingVote, status: string, body: string): void {
  if (vote.aborted) return;
  vote.res.cork(() => {
    vote.res.writeStatus(status).writeHeader('content-type', 'application/json').end(body);
  });
}

function scheduleFlush(): void {
  if (flushScheduled || commitsInFlight >= commitsInFlightMax || pending.length === 0) return;
  flushScheduled = true;
  // After this turn's I/O callbacks: every request that arrived in it joins the batch.
  setImmediate(flush);
}

function flush(): void {
  flushScheduled = false;
  if (commitsInFlight >= commitsInFlightMax || pending.length === 0) return;
  const batch = pending.splice(0, batchRowsMax);
  commitsInFlight++;
  const startedMs = performance.now();
  pool.query({ ...insertBatch, values: [batch.map((v) => v.electionId), batch.map((v) => v.userId), batch.map((v) => v.candidateId)] }).then(
    () => {
      const endedMs = performance.now();
      for (const vote of batch) answer(vote, '200 OK', accepted);
      const answeredMs = performance.now();
      stageSums.votes += batch.length;
      stageSums.committingMs += (endedMs - startedMs) * batch.length;
      for (const vote of batch) {
        stageSums.bufferedMs += startedMs - vote.receivedMs;
        stageSums.requestMs += answeredMs - vote.receivedMs;
      }
    },
    () => {
      for (const vote of batch) answer(vote, '503 Service Unavailable', '{"error":{"code":"vote_not_stored"}}');
    },
  ).finally(() => {
    commitsInFlight--;
    scheduleFlush();
  });
  scheduleFlush();
}

const app = uws.App();
app.post('/api/v1/votes', (res) => {
  let received = 0;
  const chunks: Buffer[] = [];
  const state = { aborted: false, vote: undefined as PendingVote | undefined };
  res.onAborted(() => {
    state.aborted = true;
    if (state.vote) state.vote.aborted = true;
  });
  res.onData((chunk, isLast) => {
    received += chunk.byteLength;
    if (received <= bodyBytesMax) chunks.push(Buffer.from(chunk.slice(0)));
    if (state.aborted || !isLast) return;
    let body: { electionId?: unknown; userId?: unknown; candidateId?: unknown };
    try {
      body = received > bodyBytesMax ? {} : JSON.parse(Buffer.concat(chunks).toString('utf8'));
    } catch {
      body = {};
    }
    if (typeof body.electionId !== 'string' || typeof body.userId !== 'string' || typeof body.candidateId !== 'string') {
      res.cork(() => res.writeStatus('400 Bad Request').end());
      return;
    }
    if (pending.length >= pendingMax) {
      res.cork(() => res.writeStatus('503 Service Unavailable').end());
      return;
    }
    state.vote = { res, receivedMs: performance.now(), electionId: body.electionId, userId: body.userId, candidateId: body.candidateId, aborted: false };
    pending.push(state.vote);
    scheduleFlush();
  });
});
app.get('/stats', (res) => {
  res.cork(() => res.writeHeader('content-type', 'application/json').end(JSON.stringify(stageSums)));
});
app.any('/*', (res) => {
  res.writeStatus('404 Not Found').end();
});

app.listen('127.0.0.1', Number(process.env.PORT ?? 0), (socket) => {
  if (!socket) {
    process.stderr.write('floor server: could not listen\n');
    process.exit(1);
  }
  process.stdout.write(`BENCH_LISTENING ${uws.us_socket_local_port(socket)}\n`);
});
process.on('SIGTERM', () => {
  void pool.end().finally(() => process.exit(0));
});
