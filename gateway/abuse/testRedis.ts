// For tests: is there a Redis at REDIS_URL? Suites that need one skip, with this reason in their
// title, when there is not, so a run without Redis says what it did not test instead of failing.
import { Redis } from 'ioredis';

export const testRedisUrl = process.env.REDIS_URL ?? 'redis://127.0.0.1:6379';

/** Undefined when Redis answers PING, else why not (the connection error, e.g. ECONNREFUSED). */
export async function testRedisProblem(url = testRedisUrl): Promise<string | undefined> {
  let lastError: string | undefined;
  const probe = new Redis(url, { lazyConnect: true, connectTimeout: 1000, maxRetriesPerRequest: 0, retryStrategy: () => null });
  probe.on('error', (error: Error) => { lastError = error.message; });
  try {
    await probe.connect();
    const pong = await probe.ping();
    return pong === 'PONG' ? undefined : `PING answered ${pong}`;
  } catch (error) {
    return lastError ?? (error as Error).message;
  } finally {
    probe.disconnect();
  }
}

export function redisSuiteTitle(subject: string, problem: string | undefined, url = testRedisUrl): string {
  return problem === undefined
    ? `${subject} against ${url}`
    : `${subject} — SKIPPED: no Redis answered PING at ${url} (${problem}); start one or set REDIS_URL to run it`;
}
