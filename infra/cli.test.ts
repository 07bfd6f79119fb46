// `livevote audit verify` on a real run: votes cast over HTTP through the real app, then the
// command (as a process, and in-process for the many tamper steps) passes on the untouched store
// and fails on a changed, a deleted and an inserted vote; `audit heads`, `retention purge`, usage
// errors; and the embedded-Postgres paths: beside a running node (whose server it must not stop)
// and on its own once the node is gone.
import { execFile } from 'node:child_process';
import { randomUUID } from 'node:crypto';
import { existsSync } from 'node:fs';
import { mkdtemp, rm } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { runCli } from './cli.ts';
import { call, login, startAppHarness, testAdmin, type AppHarness } from './testing/appHarness.ts';
import { killStartedProcesses, startLivevoteProcess } from './testing/processHarness.ts';
import { createVoters } from './testing/voters.ts';

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');

interface CliRun {
  readonly status: number;
  readonly stdout: string;
  readonly stderr: string;
}

/** `npm run livevote -- …` as an operator runs it: a child process. */
function cliProcess(args: readonly string[], env: Record<string, string | undefined>): Promise<CliRun> {
  const childEnv: Record<string, string> = {};
  for (const [key, value] of Object.entries({ ...process.env, ...env })) if (value !== undefined) childEnv[key] = value;
  return new Promise((resolve) => {
    execFile(process.execPath, ['--import', 'tsx', path.join(root, 'infra/cli.ts'), ...args], { cwd: root, env: childEnv, timeout: 600_000 }, (error, stdout, stderr) => {
      const status = error ? (typeof error.code === 'number' ? error.code : -1) : 0;
      resolve({ status, stdout, stderr });
    });
  });
}

async function cliInProcess(args: readonly string[], env: Record<string, string | undefined>): Promise<CliRun> {
  let stdout = '';
  let stderr = '';
  const status = await runCli(args, { ...env, LOG_LEVEL: 'silent' }, { out: (t) => { stdout += t; }, err: (t) => { stderr += t; } });
  return { status, stdout, stderr };
}

describe('livevote audit verify on a real run', () => {
  let h: AppHarness;
  let electionId: string;
  let env: Record<string, string>;

  beforeAll(async () => {
    h = await startAppHarness();
    env = { DATABASE_URL: h.db.url };
    const admin = await login(h.baseUrl, testAdmin.email, testAdmin.password);
    const created = await call(h.baseUrl, 'POST', '/api/v1/admin/elections', {
      token: admin, body: { title: 'Audited', candidates: [{ name: 'A' }, { name: 'B' }, { name: 'C' }], shardCount: 8 },
    });
    electionId = created.body.electionId;
    const candidateIds = created.body.candidates.map((c: { candidateId: string }) => c.candidateId) as string[];
    await call(h.baseUrl, 'POST', `/api/v1/admin/elections/${electionId}/open`, { token: admin });
    const voters = await createVoters(h.db.pool, 400, h.secrets.jwtSecret);
    let next = 0;
    const worker = async () => {
      while (next < voters.length) {
        const i = next++;
        const voter = voters[i]!;
        const response = await call(h.baseUrl, 'POST', '/api/v1/votes', {
          token: voter.token, body: { electionId, candidateId: candidateIds[i % 3], userId: voter.userId },
        });
        expect(response.status).toBe(200);
      }
    };
    await Promise.all(Array.from({ length: 16 }, worker));
    // Every batch into its chain now, not within the next second: the checks below count records.
    await h.app.auditSealer!.sealNow();
  });
  afterAll(async () => {
    await h?.close();
  });

  it('passes on the untouched store (exit 0), as a process', async () => {
    const run = await cliProcess(['audit', 'verify', electionId], env);
    expect(run.stderr).toBe('');
    expect(run.status).toBe(0);
    expect(run.stdout).toMatch(new RegExp(`election ${electionId}: INTACT — 8 shard chains, \\d+ records, 400 stored votes`));
    expect(run.stdout).toMatch(/audit verify: INTACT\n$/);
    const records = Number((await h.db.pool.query('SELECT count(*) FROM audit_records WHERE election_id = $1', [electionId])).rows[0].count);
    expect(records).toBeGreaterThanOrEqual(8);
  });

  it('fails on a changed vote, passes once it is changed back', async () => {
    const victim = (await h.db.pool.query('SELECT voter_number, shard FROM votes WHERE election_id = $1 ORDER BY voter_number LIMIT 1', [electionId])).rows[0];
    await h.db.pool.query('UPDATE votes SET candidate_index = (candidate_index + 1) % 3 WHERE election_id = $1 AND voter_number = $2', [electionId, victim.voter_number]);
    const broken = await cliInProcess(['audit', 'verify', electionId], env);
    expect(broken.status).toBe(1);
    expect(broken.stdout).toMatch(new RegExp(`shard ${victim.shard}: BROKEN[^\\n]*\\n\\s+first broken link: seq \\d+ \\(batch \\d+, epoch \\d+\\): the stored votes do not match the digest[^\\n]*a vote was changed`));
    expect(broken.stdout).toMatch(/audit verify: BROKEN\n$/);
    await h.db.pool.query('UPDATE votes SET candidate_index = (candidate_index + 2) % 3 WHERE election_id = $1 AND voter_number = $2', [electionId, victim.voter_number]);
    expect((await cliInProcess(['audit', 'verify', electionId], env)).status).toBe(0);
  });

  it('fails on a deleted vote, passes once the very same row is back', async () => {
    const deleted = await h.db.pool.query('DELETE FROM votes WHERE election_id = $1 AND voter_number = (SELECT max(voter_number) FROM votes WHERE election_id = $1) RETURNING *', [electionId]);
    const row = deleted.rows[0];
    const broken = await cliInProcess(['audit', 'verify', electionId], env);
    expect(broken.status).toBe(1);
    expect(broken.stdout).toMatch(new RegExp(`shard ${row.shard}: BROKEN[\\s\\S]*1 of \\d+ recorded votes are no longer stored: votes were removed`));
    await h.db.pool.query(
      'INSERT INTO votes (election_id, voter_number, candidate_index, shard, epoch, batch_id, vote_id, accepted_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8)',
      [row.election_id, row.voter_number, row.candidate_index, row.shard, row.epoch, row.batch_id, row.vote_id, row.accepted_at]);
    expect((await cliInProcess(['audit', 'verify', electionId], env)).status).toBe(0);
  });

  it('fails on a vote inserted behind the service, as a process; other elections stay intact', async () => {
    const lease = (await h.db.pool.query('SELECT shard, epoch FROM shard_leases WHERE election_id = $1 ORDER BY shard LIMIT 1', [electionId])).rows[0];
    await h.db.pool.query(
      `INSERT INTO votes (election_id, voter_number, candidate_index, shard, epoch, batch_id, vote_id, accepted_at)
       VALUES ($1, 1000000 + $2::integer, 0, $2, $3, 987654321, $4, now())`, [electionId, lease.shard, lease.epoch, randomUUID()]);
    const run = await cliProcess(['audit', 'verify'], env);
    expect(run.status).toBe(1);
    expect(run.stdout).toMatch(new RegExp(`election ${electionId}: BROKEN[\\s\\S]*shard ${lease.shard}: BROKEN[\\s\\S]*1 stored vote\\(s\\) not covered by any audit record \\(inserted behind the service's back\\): batch 987654321`));
    await h.db.pool.query('DELETE FROM votes WHERE election_id = $1 AND batch_id = 987654321', [electionId]);
    expect((await cliInProcess(['audit', 'verify'], env)).status).toBe(0);
  });

  it('audit heads prints the heads and the fingerprint verify recomputes', async () => {
    const heads = await cliInProcess(['audit', 'heads', electionId], env);
    expect(heads.status).toBe(0);
    const fingerprint = /fingerprint ([0-9a-f]{64})/.exec(heads.stdout)?.[1];
    expect(fingerprint).toBeDefined();
    expect(heads.stdout.match(/^ {2}shard \d+ seq \d+ [0-9a-f]{64} /gm)).toHaveLength(8);
    expect((await cliInProcess(['audit', 'verify', electionId], env)).stdout).toContain(`fingerprint ${fingerprint}`);
  });

  it('retention purge deletes metadata past the retention period only', async () => {
    const hash = Buffer.alloc(16, 7);
    // An election of its own: once the app records metadata for the votes above, those are recent.
    const metadataElection = randomUUID();
    await h.db.pool.query(
      `INSERT INTO vote_metadata (election_id, voter_number, ip_hash, network_hash, ua_family, recorded_at)
       VALUES ($1, 1, $2, $2, 'curl', now() - interval '31 days'), ($1, 2, $2, $2, 'curl', now() - interval '2 days')`, [metadataElection, hash]);
    const purged = await cliInProcess(['retention', 'purge'], { ...env, LIVEVOTE_METADATA_RETENTION_DAYS: '30' });
    expect(purged.status).toBe(0);
    expect(purged.stdout).toMatch(/^retention purge: deleted 1 vote metadata and 0 account metadata rows recorded before \S+ \(retention 30 days\)\n$/);
    const left = await h.db.pool.query('SELECT voter_number FROM vote_metadata WHERE election_id = $1', [metadataElection]);
    expect(left.rows).toEqual([{ voter_number: 2 }]);
  });

  it('says an unknown election does not exist (exit 2), and a known one without votes has none (exit 0)', async () => {
    const unknown = randomUUID();
    for (const command of ['verify', 'heads']) {
      const run = await cliInProcess(['audit', command, unknown], env);
      expect([run.status, run.stdout, run.stderr], command).toEqual([2, '', `livevote: no election ${unknown}: no such election, and no votes or audit records under that id\n`]);
    }
    const admin = await login(h.baseUrl, testAdmin.email, testAdmin.password);
    const empty = (await call(h.baseUrl, 'POST', '/api/v1/admin/elections', { token: admin, body: { title: 'Empty', candidates: [{ name: 'A' }, { name: 'B' }] } })).body.electionId as string;
    const verified = await cliInProcess(['audit', 'verify', empty], env);
    expect(verified.status).toBe(0);
    expect(verified.stdout).toContain(`election ${empty}: no votes yet`);
    const heads = await cliInProcess(['audit', 'heads', empty], env);
    expect([heads.status, heads.stdout]).toEqual([0, `election ${empty}: no votes yet, no audit chains\n`]);
  });

  it('answers --help and -h for every group and command with its usage, exit 0, without a database', async () => {
    const noDatabase = { LIVEVOTE_DATA_DIR: path.join(os.tmpdir(), `lv-none-${randomUUID()}`) };
    const cases: [string[], RegExp][] = [
      [['--help'], /^usage: livevote <command>\n[\s\S]*audit verify[\s\S]*retention purge/],
      [['help'], /^usage: livevote <command>\n/],
      [['audit', '--help'], /^usage: livevote audit <verify\|heads> \[electionId\]\n[\s\S]*audit verify[\s\S]*audit heads/],
      [['audit', '-h'], /^usage: livevote audit /],
      [['help', 'audit'], /^usage: livevote audit /],
      [['audit', 'verify', '--help'], /^usage: livevote audit verify \[electionId\]\n[\s\S]*exit 0 intact, 1 broken, 2/],
      [['audit', 'heads', '-h'], /^usage: livevote audit heads \[electionId\]\n/],
      [['audit', 'verify', 'some-id', '--help'], /^usage: livevote audit verify /],
      [['retention', '--help'], /^usage: livevote retention purge\n/],
      [['retention', 'purge', '-h'], /^usage: livevote retention purge\n[\s\S]*LIVEVOTE_METADATA_RETENTION_DAYS/],
    ];
    for (const [args, expected] of cases) {
      const run = await cliInProcess(args, noDatabase);
      expect([run.status, run.stderr], args.join(' ')).toEqual([0, '']);
      expect(run.stdout, args.join(' ')).toMatch(expected);
    }
    const unknown = await cliInProcess(['nope', '--help'], noDatabase);
    expect([unknown.status, unknown.stderr]).toEqual([2, expect.stringMatching(/^livevote: unknown command: nope\n/)]);
  });

  it('answers usage and input errors with exit 2 and a message', async () => {
    for (const args of [['audit'], ['audit', 'sign'], ['retention', 'purge', 'now'], ['audit', 'verify', 'a', 'b']]) {
      const run = await cliInProcess(args, env);
      expect(run.status, args.join(' ')).toBe(2);
      expect(run.stderr).toMatch(/^livevote: /);
      expect(run.stderr).toContain('usage: livevote <command>');
    }
    const badId = await cliInProcess(['audit', 'verify', 'not-a-uuid'], env);
    expect([badId.status, badId.stderr]).toEqual([2, 'livevote: not an election id (uuid): not-a-uuid\n']);
    expect((await cliInProcess(['--help'], env)).status).toBe(0);
    const noDatabase = await cliInProcess(['audit', 'verify'], { LIVEVOTE_DATA_DIR: path.join(os.tmpdir(), `lv-none-${randomUUID()}`) });
    expect(noDatabase.status).toBe(2);
    expect(noDatabase.stderr).toMatch(/no database: DATABASE_URL is unset/);
  });
});

describe('livevote audit verify on the embedded Postgres', () => {
  let dataDir: string;
  beforeAll(async () => {
    dataDir = await mkdtemp(path.join(os.tmpdir(), 'lv-cli-'));
  });
  afterAll(async () => {
    await killStartedProcesses();
    await rm(dataDir, { recursive: true, force: true });
  });

  it("uses the running node's server without stopping it, and starts and stops one itself when none runs", async () => {
    const env = { DATABASE_URL: undefined, LIVEVOTE_TEST_SERVER_URL: undefined, LIVEVOTE_DATA_DIR: dataDir, LIVEVOTE_ADMIN_PASSWORD: 'embedded cli admin password' };
    const node = await startLivevoteProcess(env);
    let stopped = false;
    try {
      const admin = await login(node.baseUrl, 'admin@livevote.local', env.LIVEVOTE_ADMIN_PASSWORD);
      const created = await call(node.baseUrl, 'POST', '/api/v1/admin/elections', {
        token: admin, body: { title: 'Embedded', candidates: [{ name: 'A' }, { name: 'B' }], shardCount: 2 },
      });
      await call(node.baseUrl, 'POST', `/api/v1/admin/elections/${created.body.electionId}/open`, { token: admin });
      const viewer = await call(node.baseUrl, 'POST', '/api/v1/auth/register', { body: { email: 'embedded@example.com', password: 'a long enough password' } });
      const voted = await call(node.baseUrl, 'POST', '/api/v1/votes', {
        token: viewer.body.accessToken, body: { electionId: created.body.electionId, candidateId: created.body.candidates[0].candidateId, userId: viewer.body.userId },
      });
      expect(voted.status).toBe(200);

      const beside = await cliProcess(['audit', 'verify'], env);
      expect([beside.status, beside.stderr]).toEqual([0, '']);
      // The vote's batch may not be sealed yet (the sealer runs after the commit): INTACT either way.
      expect(beside.stdout).toMatch(/1 stored votes( \(1 of them in batches not sealed yet\))?\n[\s\S]*audit verify: INTACT\n$/);
      // The node's database is still there.
      expect((await call(node.baseUrl, 'GET', `/api/v1/results/${created.body.electionId}`)).body.totalVotes).toBe(1);

      node.child.kill('SIGTERM');
      expect(await node.exited()).toBe(0);
      stopped = true;
      const alone = await cliProcess(['audit', 'verify'], env);
      expect([alone.status, alone.stderr]).toEqual([0, '']);
      expect(alone.stdout).toMatch(/audit verify: INTACT\n$/);
      // It stopped the server it started.
      expect(existsSync(path.join(dataDir, 'postgres', 'postmaster.pid'))).toBe(false);
    } finally {
      if (!stopped) node.child.kill('SIGKILL');
    }
  }, 900_000);
});
