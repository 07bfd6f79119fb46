// The canary .ci/run runs on its own before the real suite, with and without DATABASE_URL: it
// must fail, and `npm test` must say so with a non-zero exit. A test command that exits 0 with a
// failing test (as it once did when the embedded Postgres' exit hook ran) is caught here.
import { expect, it } from 'vitest';
import { createTestDatabase } from '../persistence/testDatabase.ts';

it('fails on purpose, after using the test Postgres', async () => {
  const db = await createTestDatabase();
  try {
    expect((await db.pool.query('SELECT 1 AS one')).rows[0].one).toBe(1);
  } finally {
    await db.drop();
  }
  expect(1, 'the canary fails on purpose').toBe(2);
});
