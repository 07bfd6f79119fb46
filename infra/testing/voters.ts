// Many voters at once, for tests and benchmarks: users inserted in bulk (registration's
// memory-hard KDF is ~100 ms a user by design, so it is not how a test makes 10,000 voters)
// and access tokens minted with the node's JWT secret. Their password hash is '!', which no
// password verifies, so these accounts can vote but never log in.
import { randomBytes, randomUUID } from 'node:crypto';
import { signAccessToken } from '../../gateway/auth/jwt.ts';
import type { Pool } from '../../persistence/db.ts';

export interface TestVoter {
  readonly userId: string;
  readonly voterNumber: number;
  readonly token: string;
}

export async function createVoters(pool: Pool, count: number, jwtSecret: string, chunkSize = 10_000): Promise<TestVoter[]> {
  const voters: TestVoter[] = [];
  const nowS = Math.floor(Date.now() / 1000);
  for (let offset = 0; offset < count; offset += chunkSize) {
    const size = Math.min(chunkSize, count - offset);
    const ids = Array.from({ length: size }, () => randomUUID());
    const hashes = Array.from({ length: size }, () => randomBytes(32));
    const result = await pool.query<{ user_id: string; voter_number: number }>(
      `INSERT INTO users (user_id, email_hash, password_hash)
       SELECT id, h, '!' FROM unnest($1::uuid[], $2::bytea[]) AS t(id, h)
       RETURNING user_id, voter_number`,
      [ids, hashes],
    );
    for (const row of result.rows) {
      voters.push({
        userId: row.user_id,
        voterNumber: row.voter_number,
        token: viewerToken(row.user_id, row.voter_number, jwtSecret, nowS),
      });
    }
  }
  return voters;
}

/** The same voters with tokens minted now: an access token lives accessTokenTtlS, a long benchmark longer. */
export function remintAccessTokens(voters: readonly TestVoter[], jwtSecret: string): TestVoter[] {
  const nowS = Math.floor(Date.now() / 1000);
  return voters.map((voter) => ({ ...voter, token: viewerToken(voter.userId, voter.voterNumber, jwtSecret, nowS) }));
}

/** A viewer's access token, of a session of its own, issued at nowS. */
function viewerToken(userId: string, voterNumber: number, jwtSecret: string, nowS: number): string {
  return signAccessToken({ sub: userId, vn: voterNumber, role: 'viewer', sid: randomUUID() }, jwtSecret, nowS);
}
