// The vote path through the real gateway, vote node and Postgres journal.
import { randomUUID } from 'node:crypto';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import WebSocket from 'ws';
import { call, login, startAppHarness, testAdmin, type AppHarness } from '../../infra/testing/appHarness.ts';
import { createVoters, type TestVoter } from '../../infra/testing/voters.ts';
import { countVotesByCandidate } from '../../persistence/storedVotes.ts';

let h: AppHarness;
let admin: string;
let voters: TestVoter[];
let electionId: string;
let candidates: string[];

async function createElection(title: string, open = true, shardCount = 4): Promise<{ electionId: string; candidates: string[] }> {
  const created = await call(h.baseUrl, 'POST', '/api/v1/admin/elections', {
    token: admin, body: { title, candidates: [{ name: 'Ada' }, { name: 'Grace' }, { name: 'Linus' }], shardCount },
  });
  expect(created.status).toBe(201);
  if (open) expect((await call(h.baseUrl, 'POST', `/api/v1/admin/elections/${created.body.electionId}/open`, { token: admin })).status).toBe(200);
  return { electionId: created.body.electionId, candidates: created.body.candidates.map((c: { candidateId: string }) => c.candidateId) };
}

const vote = (voter: TestVoter, candidateId: string, election = electionId, extra: Record<string, unknown> = {}) =>
  call(h.baseUrl, 'POST', '/api/v1/votes', { token: voter.token, body: { electionId: election, candidateId, userId: voter.userId, ...extra } });

const storedCount = async () => Number((await h.db.pool.query('SELECT count(*) FROM votes')).rows[0].count);

beforeAll(async () => {
  h = await startAppHarness();
  admin = await login(h.baseUrl, testAdmin.email, testAdmin.password);
  voters = await createVoters(h.db.pool, 200, h.secrets.jwtSecret);
  ({ electionId, candidates } = await createElection('Main'));
});
afterAll(async () => { await h.close(); });

describe('POST /api/v1/votes', () => {
  it('accepts a vote once it is stored, and a retry gets the same voteId', async () => {
    const voter = voters[0]!;
    const first = await vote(voter, candidates[1]!);
    expect(first.status).toBe(200);
    expect(first.body).toEqual({ voteId: expect.stringMatching(/^[0-9a-f-]{36}$/), status: 'accepted', acceptedAt: expect.any(String) });
    // Durable before answered: the row is there the moment the answer is.
    const row = await h.db.pool.query('SELECT vote_id, candidate_index FROM votes WHERE voter_number = $1', [voter.voterNumber]);
    expect(row.rows).toEqual([{ vote_id: first.body.voteId, candidate_index: 1 }]);

    const retry = await vote(voter, candidates[1]!);
    expect(retry.status).toBe(200);
    expect(retry.body).toEqual(first.body);
  });

  it('answers a second vote with 409 carrying the original voteId, and counts nothing', async () => {
    const voter = voters[1]!;
    const first = await vote(voter, candidates[0]!);
    const before = await storedCount();
    const second = await vote(voter, candidates[2]!);
    expect(second.status).toBe(409);
    expect(second.body.error.code).toBe('already_voted');
    expect(second.body.error.details.voteId).toBe(first.body.voteId);
    expect(await storedCount()).toBe(before);
  });

  it('gives concurrent identical requests one voteId and one stored row', async () => {
    const voter = voters[2]!;
    const answers = await Promise.all(Array.from({ length: 10 }, () => vote(voter, candidates[2]!)));
    expect(new Set(answers.map((a) => a.status))).toEqual(new Set([200]));
    expect(new Set(answers.map((a) => a.body.voteId)).size).toBe(1);
    const rows = await h.db.pool.query('SELECT count(*) FROM votes WHERE voter_number = $1', [voter.voterNumber]);
    expect(Number(rows.rows[0].count)).toBe(1);
  });

  it('refuses a vote for another user, an unknown or unopened election, an unknown candidate', async () => {
    const before = await storedCount();
    const [a, b] = [voters[3]!, voters[4]!];
    const mismatch = await call(h.baseUrl, 'POST', '/api/v1/votes', { token: a.token, body: { electionId, candidateId: candidates[0], userId: b.userId } });
    expect([mismatch.status, mismatch.body.error.code]).toEqual([403, 'user_mismatch']);
    const unknown = await vote(a, candidates[0]!, '00000000-0000-4000-8000-000000000000');
    expect([unknown.status, unknown.body.error.code]).toEqual([404, 'election_not_found']);
    const draft = await createElection('Draft', false);
    const notOpen = await vote(a, draft.candidates[0]!, draft.electionId);
    expect([notOpen.status, notOpen.body.error.code]).toEqual([404, 'election_not_found']);
    const badCandidate = await vote(a, '00000000-0000-4000-8000-000000000001');
    expect([badCandidate.status, badCandidate.body.error.code]).toEqual([422, 'candidate_not_found']);
    const otherElectionsCandidate = await vote(a, draft.candidates[0]!);
    expect(otherElectionsCandidate.body.error.code).toBe('candidate_not_found');
    expect(await storedCount()).toBe(before);
  });

  it('refuses votes once the election is closed, but keeps its results', async () => {
    const closing = await createElection('Closing', true, 2);
    expect((await vote(voters[5]!, closing.candidates[0]!, closing.electionId)).status).toBe(200);
    await call(h.baseUrl, 'POST', `/api/v1/admin/elections/${closing.electionId}/close`, { token: admin });
    const late = await vote(voters[6]!, closing.candidates[0]!, closing.electionId);
    expect([late.status, late.body.error.code]).toEqual([409, 'election_not_open']);
    const results = await call(h.baseUrl, 'GET', `/api/v1/results/${closing.electionId}`);
    expect(results.body).toMatchObject({ status: 'closed', totalVotes: 1 });
  });

  it('refuses bad input with a 4xx and a code, changing nothing', async () => {
    const before = await storedCount();
    const voter = voters[7]!;
    const body = { electionId, candidateId: candidates[0], userId: voter.userId };
    const cases: [unknown, number, string][] = [
      ['{"electionId":', 400, 'invalid_json'],
      [{ ...body, electionId: 'nope' }, 400, 'validation_failed'],
      [{ ...body, candidateId: 42 }, 400, 'validation_failed'],
      [{ electionId, candidateId: candidates[0] }, 400, 'validation_failed'],
      [{ ...body, extra: true }, 400, 'validation_failed'],
      [{ ...body, captchaToken: 'x'.repeat(5000) }, 400, 'validation_failed'],
      [{ ...body, captchaToken: 'x'.repeat(9000) }, 413, 'payload_too_large'],
    ];
    for (const [payload, status, code] of cases) {
      const response = await call(h.baseUrl, 'POST', '/api/v1/votes', typeof payload === 'string' ? { token: voter.token, rawBody: payload } : { token: voter.token, body: payload });
      expect([response.status, response.body.error.code], JSON.stringify(payload).slice(0, 80)).toEqual([status, code]);
    }
    const anonymous = await call(h.baseUrl, 'POST', '/api/v1/votes', { body });
    expect([anonymous.status, anonymous.body.error.code]).toEqual([401, 'unauthenticated']);
    const forged = await call(h.baseUrl, 'POST', '/api/v1/votes', { token: `${voter.token.slice(0, -2)}xx`, body });
    expect([forged.status, forged.body.error.code]).toEqual([401, 'invalid_token']);
    expect(await storedCount()).toBe(before);
  });
});

describe('status and results', () => {
  it('tells a user (or an admin) whether they voted', async () => {
    const voter = voters[0]!;
    const mine = await call(h.baseUrl, 'GET', `/api/v1/votes/status/${voter.userId}?electionId=${electionId}`, { token: voter.token });
    expect(mine.body).toMatchObject({ voted: true, candidateId: candidates[1], electionId, userId: voter.userId });
    const notYet = voters[150]!;
    expect((await call(h.baseUrl, 'GET', `/api/v1/votes/status/${notYet.userId}?electionId=${electionId}`, { token: notYet.token })).body.voted).toBe(false);
    const other = await call(h.baseUrl, 'GET', `/api/v1/votes/status/${voter.userId}?electionId=${electionId}`, { token: notYet.token });
    expect([other.status, other.body.error.code]).toEqual([403, 'forbidden']);
    const asAdmin = await call(h.baseUrl, 'GET', `/api/v1/votes/status/${voter.userId}?electionId=${electionId}`, { token: admin });
    expect(asAdmin.body.voteId).toBe(mine.body.voteId);
    const unknownUser = await call(h.baseUrl, 'GET', `/api/v1/votes/status/00000000-0000-4000-8000-000000000009?electionId=${electionId}`, { token: admin });
    expect([unknownUser.status, unknownUser.body.error.code]).toEqual([404, 'user_not_found']);
  });

  it("lists every election a user voted in, newest first, a page at a time (the seed's call without electionId)", async () => {
    const voter = voters[160]!;
    const other = voters[161]!;
    const shows = [await createElection('List A', true, 2), await createElection('List B', true, 2), await createElection('List C', true, 2)];
    const answers: { voteId: string; acceptedAt: string; status: string }[] = [];
    for (const [i, show] of shows.entries()) answers.push((await vote(voter, show.candidates[i]!, show.electionId)).body);
    expect(answers.every((a) => a.status === 'accepted')).toBe(true);
    const expected = shows.map((show, i) => ({ electionId: show.electionId, voteId: answers[i]!.voteId, candidateId: show.candidates[i], acceptedAt: answers[i]!.acceptedAt }))
      .sort((a, b) => b.acceptedAt.localeCompare(a.acceptedAt) || (a.electionId < b.electionId ? 1 : -1));

    const path = `/api/v1/votes/status/${voter.userId}`;
    const all = await call(h.baseUrl, 'GET', path, { token: voter.token });
    expect(all.status).toBe(200);
    expect(all.body).toEqual({ userId: voter.userId, votes: expected, nextCursor: null });

    const first = await call(h.baseUrl, 'GET', `${path}?limit=2`, { token: voter.token });
    expect(first.body.votes).toEqual(expected.slice(0, 2));
    expect(first.body.nextCursor).toEqual(expect.any(String));
    const second = await call(h.baseUrl, 'GET', `${path}?limit=2&cursor=${encodeURIComponent(first.body.nextCursor)}`, { token: voter.token });
    expect(second.body).toEqual({ userId: voter.userId, votes: expected.slice(2), nextCursor: null });

    // An admin may ask (support); another viewer may not.
    expect((await call(h.baseUrl, 'GET', path, { token: admin })).body.votes).toEqual(expected);
    const forbidden = await call(h.baseUrl, 'GET', path, { token: other.token });
    expect([forbidden.status, forbidden.body.error.code]).toEqual([403, 'forbidden']);
    expect((await call(h.baseUrl, 'GET', `/api/v1/votes/status/${other.userId}`, { token: other.token })).body).toEqual({ userId: other.userId, votes: [], nextCursor: null });

    // With electionId: the single-election answer, unchanged.
    const single = await call(h.baseUrl, 'GET', `${path}?electionId=${shows[1]!.electionId}`, { token: voter.token });
    expect(single.body).toEqual({ userId: voter.userId, electionId: shows[1]!.electionId, voted: true, voteId: answers[1]!.voteId, candidateId: shows[1]!.candidates[1], acceptedAt: answers[1]!.acceptedAt });

    const refusals: [string, number, string][] = [
      [`${path}?limit=0`, 400, 'validation_failed'],
      [`${path}?limit=101`, 400, 'validation_failed'],
      [`${path}?limit=two`, 400, 'validation_failed'],
      [`${path}?cursor=not-a-cursor`, 400, 'validation_failed'],
      [`${path}?cursor=${Buffer.from(`12.${shows[0]!.electionId}`).toString('base64')}%3D`, 400, 'validation_failed'],
      [`${path}?cursor=${'x'.repeat(200)}`, 400, 'validation_failed'],
      [`${path}?electionId=${shows[0]!.electionId}&limit=5`, 400, 'validation_failed'],
      [`${path}?electionId=${shows[0]!.electionId}&cursor=${encodeURIComponent(first.body.nextCursor)}`, 400, 'validation_failed'],
      [`${path}?page=2`, 400, 'validation_failed'],
      ['/api/v1/votes/status/not-a-uuid', 400, 'validation_failed'],
    ];
    for (const [url, status, code] of refusals) {
      const answer = await call(h.baseUrl, 'GET', url, { token: voter.token });
      expect([answer.status, answer.body.error?.code], url).toEqual([status, code]);
    }
    const unknown = await call(h.baseUrl, 'GET', '/api/v1/votes/status/00000000-0000-4000-8000-000000000009', { token: admin });
    expect([unknown.status, unknown.body.error.code]).toEqual([404, 'user_not_found']);
  });

  it('pages 20 votes by default, at most 100 with limit', async () => {
    // A read fixture: 25 closed elections with this voter's stored votes, written directly.
    const voter = voters[175]!;
    const electionIds = Array.from({ length: 25 }, () => randomUUID());
    await h.db.pool.query(`INSERT INTO elections (election_id, title, status, shard_count) SELECT id, 'Old show', 'closed', 1 FROM unnest($1::uuid[]) AS id`, [electionIds]);
    await h.db.pool.query(`INSERT INTO candidates (election_id, candidate_index, candidate_id, name) SELECT id, 0, gen_random_uuid(), 'A' FROM unnest($1::uuid[]) AS id`, [electionIds]);
    await h.db.pool.query(
      `INSERT INTO votes (election_id, voter_number, candidate_index, shard, epoch, batch_id, vote_id, accepted_at)
       SELECT id, $2, 0, 0, 1, 1, gen_random_uuid(), now() - make_interval(secs => n) FROM unnest($1::uuid[]) WITH ORDINALITY AS t(id, n)`,
      [electionIds, voter.voterNumber],
    );
    const path = `/api/v1/votes/status/${voter.userId}`;
    const byDefault = await call(h.baseUrl, 'GET', path, { token: voter.token });
    expect(byDefault.body.votes).toHaveLength(20);
    expect(byDefault.body.votes.map((v: { electionId: string }) => v.electionId)).toEqual(electionIds.slice(0, 20));
    const rest = await call(h.baseUrl, 'GET', `${path}?cursor=${encodeURIComponent(byDefault.body.nextCursor)}`, { token: voter.token });
    expect(rest.body).toMatchObject({ nextCursor: null });
    expect(rest.body.votes.map((v: { electionId: string }) => v.electionId)).toEqual(electionIds.slice(20));
    const widest = await call(h.baseUrl, 'GET', `${path}?limit=100`, { token: voter.token });
    expect(widest.body.votes).toHaveLength(25);
    expect(widest.body.nextCursor).toBeNull();
  });

  it('answers account_erased for an erased account, whose votes stay counted but no longer link to it', async () => {
    const voter = voters[170]!;
    const show = await createElection('Erased', true, 2);
    expect((await vote(voter, show.candidates[0]!, show.electionId)).status).toBe(200);
    await call(h.baseUrl, 'POST', `/api/v1/admin/elections/${show.electionId}/close`, { token: admin });
    const erased = await call(h.baseUrl, 'DELETE', `/api/v1/admin/users/${voter.userId}`, { token: admin });
    expect(erased.status).toBe(200);
    for (const url of [`/api/v1/votes/status/${voter.userId}`, `/api/v1/votes/status/${voter.userId}?electionId=${show.electionId}`]) {
      const answer = await call(h.baseUrl, 'GET', url, { token: admin });
      expect([answer.status, answer.body.error.code], url).toEqual([403, 'account_erased']);
    }
    expect(await countVotesByCandidate(h.db.pool, show.electionId, 3)).toEqual([1, 0, 0]);
  });

  it('shows committed tallies equal to the stored count per candidate', async () => {
    const batch = voters.slice(20, 120);
    const answers = await Promise.all(batch.map((voter, i) => vote(voter, candidates[i % 3]!)));
    expect(answers.every((a) => a.status === 200)).toBe(true);
    const results = await call(h.baseUrl, 'GET', `/api/v1/results/${electionId}`);
    const stored = await countVotesByCandidate(h.db.pool, electionId, 3);
    expect(results.body.candidates.map((c: { votes: number }) => c.votes)).toEqual(stored);
    expect(results.body.totalVotes).toBe(stored.reduce((a, b) => a + b, 0));

    // The live endpoint serves the publisher's cached copy: equal within one publish interval.
    h.app.votePath.stream.publishChanged();
    const live = await call(h.baseUrl, 'GET', `/api/v1/results/live/${electionId}`);
    expect(live.body.candidates.map((c: { votes: number }) => c.votes)).toEqual(stored);

    const statistics = await call(h.baseUrl, 'GET', `/api/v1/results/statistics/${electionId}`, { token: admin });
    expect(statistics.body.totalVotes).toBe(results.body.totalVotes);
    expect(statistics.body.perShard.reduce((sum: number, s: { votes: number }) => sum + s.votes, 0)).toBe(results.body.totalVotes);
    expect(statistics.body.rejectionsByReason.already_voted).toBeGreaterThanOrEqual(1);
    expect(statistics.body.rejectionsByReason.user_mismatch).toBeGreaterThanOrEqual(1);
    const viewerStats = await call(h.baseUrl, 'GET', `/api/v1/results/statistics/${electionId}`, { token: voters[0]!.token });
    expect(viewerStats.status).toBe(403);
  });

  // How fast: bench/RESULTS.md (fan-out, commit → delivery); here only that it arrives.
  it('pushes committed results over the WebSocket', async () => {
    const url = `ws://127.0.0.1:${h.port}/api/v1/results/stream/${electionId}?access_token=${voters[0]!.token}`;
    const socket = new WebSocket(url);
    const frames: any[] = [];
    socket.on('message', (data) => frames.push(JSON.parse(String(data))));
    await new Promise((resolve, reject) => { socket.once('open', resolve); socket.once('error', reject); });
    try {
      await expect.poll(() => frames.length, { timeout: 60_000 }).toBeGreaterThan(0);
      const before = frames.at(-1).totalVotes as number;
      expect((await vote(voters[190]!, candidates[0]!)).status).toBe(200);
      await expect.poll(() => frames.at(-1).totalVotes, { timeout: 60_000, interval: 10 }).toBe(before + 1);
      expect(frames.at(-1)).toMatchObject({ type: 'results', electionId, title: 'Main' });
    } finally {
      socket.close();
    }
  });

  it('refuses a stream without a valid token or for an unknown election', async () => {
    const attempt = (url: string) => new Promise<number>((resolve) => {
      const socket = new WebSocket(url);
      socket.on('unexpected-response', (_req, res) => resolve(res.statusCode ?? 0));
      socket.on('open', () => { socket.close(); resolve(101); });
      socket.on('error', () => resolve(-1));
    });
    expect(await attempt(`ws://127.0.0.1:${h.port}/api/v1/results/stream/${electionId}`)).toBe(401);
    expect(await attempt(`ws://127.0.0.1:${h.port}/api/v1/results/stream/${electionId}?access_token=forged`)).toBe(401);
    expect(await attempt(`ws://127.0.0.1:${h.port}/api/v1/results/stream/00000000-0000-4000-8000-000000000000?access_token=${voters[0]!.token}`)).toBe(404);
  });
});
