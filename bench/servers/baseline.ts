// The baseline: what a team would otherwise write. Plain node:http, the same JWT verifier and the
// same body schema as livevote (gateway/auth/jwt.ts, gateway/votes/routes.ts), the election's
// candidates cached in memory, and one INSERT … ON CONFLICT DO NOTHING per vote, answered after
// its own COMMIT (autocommit), on a pg pool. Durable per vote, like livevote, but without the
// group commit.
//
//   env: DATABASE_URL, LIVEVOTE_JWT_SECRET, BASELINE_ELECTION_ID, BASELINE_CANDIDATE_IDS (comma),
//        BASELINE_POOL_MAX (default 32), PORT (0 picks one; prints BENCH_LISTENING <port>)
import { randomUUID } from 'node:crypto';
import http from 'node:http';
import pg from 'pg';
import { createAccessTokenVerifier } from '../../gateway/auth/jwt.ts';
import { voteBody, voteBodyBytesMax } from '../../gateway/votes/routes.ts';

function requiredEnv(name: string): string {
  const value = process.env[name];
  if (!value) throw new Error(`baseline server: ${name} is required`);
  return value;
}

const electionId = requiredEnv('BASELINE_ELECTION_ID');
const candidateIds = new Set(requiredEnv('BASELINE_CANDIDATE_IDS').split(','));
const poolMax = Number(process.env.BASELINE_POOL_MAX ?? 32);
if (!(Number.isInteger(poolMax) && poolMax >= 1 && poolMax <= 200)) throw new Error('BASELINE_POOL_MAX must be 1..200');
const verify = createAccessTokenVerifier(requiredEnv('LIVEVOTE_JWT_SECRET'));
const pool = new pg.Pool({ connectionString: requiredEnv('DATABASE_URL'), max: poolMax, application_name: 'bench-baseline' });

await pool.query(`CREATE TABLE IF NOT EXISTS baseline_votes (
  election_id  uuid        NOT NULL,
  voter_number bigint      NOT NULL,
  user_id      uuid        NOT NULL,
  candidate_id uuid        NOT NULL,
  vote_id      uuid        NOT NULL,
  accepted_at  timestamptz NOT NULL,
  PRIMARY KEY (election_id, voter_number)
)`);

const insertVote = {
  name: 'baseline_insert_vote',
  text: `INSERT INTO baseline_votes (election_id, voter_number, user_id, candidate_id, vote_id, accepted_at)
         VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT (election_id, voter_number) DO NOTHING RETURNING 1`,
};

function send(res: http.ServerResponse, status: number, body: unknown): void {
  const json = JSON.stringify(body);
  res.writeHead(status, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(json) });
  res.end(json);
}

async function castVote(authorization: string | undefined, raw: string, res: http.ServerResponse): Promise<void> {
  if (!authorization?.startsWith('Bearer ')) return send(res, 401, { error: { code: 'unauthenticated' } });
  const verified = verify(authorization.slice(7));
  if (!verified.ok) return send(res, 401, { error: { code: verified.refusal } });
  let json: unknown;
  try {
    json = JSON.parse(raw);
  } catch {
    return send(res, 400, { error: { code: 'invalid_json' } });
  }
  const parsed = voteBody.safeParse(json);
  if (!parsed.success) return send(res, 400, { error: { code: 'validation_failed' } });
  const body = parsed.data;
  if (body.userId !== verified.claims.sub) return send(res, 403, { error: { code: 'user_mismatch' } });
  if (body.electionId !== electionId) return send(res, 404, { error: { code: 'election_not_found' } });
  if (!candidateIds.has(body.candidateId)) return send(res, 404, { error: { code: 'candidate_not_found' } });
  const voteId = randomUUID();
  const acceptedAt = new Date();
  try {
    const result = await pool.query({ ...insertVote, values: [electionId, verified.claims.vn, body.userId, body.candidateId, voteId, acceptedAt] });
    if (result.rowCount === 0) return send(res, 409, { error: { code: 'already_voted' } });
    return send(res, 200, { voteId, status: 'accepted', acceptedAt: acceptedAt.toISOString() });
  } catch {
    return send(res, 503, { error: { code: 'vote_not_stored' } });
  }
}

const server = http.createServer((req, res) => {
  if (req.method !== 'POST' || req.url !== '/api/v1/votes') return send(res, 404, { error: { code: 'not_found' } });
  const chunks: Buffer[] = [];
  let size = 0;
  req.on('data', (chunk: Buffer) => {
    size += chunk.length;
    if (size <= voteBodyBytesMax) chunks.push(chunk);
  });
  req.on('end', () => {
    if (size > voteBodyBytesMax) return send(res, 413, { error: { code: 'body_too_large' } });
    void castVote(req.headers.authorization, Buffer.concat(chunks).toString('utf8'), res);
  });
});
server.keepAliveTimeout = 60_000;
server.listen(Number(process.env.PORT ?? 0), '127.0.0.1', () => {
  const address = server.address();
  process.stdout.write(`BENCH_LISTENING ${typeof address === 'object' && address ? address.port : 0}\n`);
});
process.on('SIGTERM', () => {
  server.close();
  void pool.end().finally(() => process.exit(0));
});
