// Real livevote node processes on one real Postgres (a test database of their own), sharing one
// data dir for their secrets: a cluster as the launcher starts it, for tests that kill and pause
// nodes. Each node is `node --import tsx infra/main.ts` (infra/testing/processHarness.ts).
import { mkdtemp, rm } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { createTestDatabase, type TestDatabase } from '../../persistence/testDatabase.ts';
import { loadConfig } from '../config.ts';
import { loadOrCreateSecrets } from '../secrets.ts';
import { call, functionalTestEnv, patientTestEnv } from './appHarness.ts';
import { killStartedProcesses, startLivevoteProcess, type LivevoteProcess } from './processHarness.ts';

export const clusterAdmin = { email: 'admin@cluster.test', password: 'cluster test admin password' };

export interface TestCluster {
  readonly db: TestDatabase;
  readonly jwtSecret: string;
  readonly nodes: Map<string, LivevoteProcess>;
  /** Starts (or restarts) a node with this id and AZ; resolves once it listens. */
  startNode(nodeId: string, az: string, env?: Record<string, string>): Promise<LivevoteProcess>;
  adminToken(): Promise<string>;
  close(): Promise<void>;
}

export async function startTestCluster(env: Record<string, string> = {}): Promise<TestCluster> {
  const db = await createTestDatabase();
  const dataDir = await mkdtemp(path.join(os.tmpdir(), 'lv-cluster-'));
  const jwtSecret = 'cluster-test-jwt-secret-0123456789-abcdefgh';
  const baseEnv: Record<string, string> = {
    DATABASE_URL: db.url,
    LIVEVOTE_DATA_DIR: dataDir,
    LIVEVOTE_JWT_SECRET: jwtSecret,
    LIVEVOTE_ADMIN_EMAIL: clusterAdmin.email,
    LIVEVOTE_ADMIN_PASSWORD: clusterAdmin.password,
    // Several node processes share one Postgres with other test files.
    LIVEVOTE_DB_POOL_MAX: '5',
    ...patientTestEnv,
    ...functionalTestEnv,
    // Failover is what these tests are about: the default failure detector, not the patient one.
    LIVEVOTE_DEAD_AFTER_MS: '1500',
    ...env,
  };
  // The secrets file first, so the nodes read one set rather than race to create several.
  await loadOrCreateSecrets(loadConfig(baseEnv));
  const nodes = new Map<string, LivevoteProcess>();
  let token: string | undefined;
  return {
    db,
    jwtSecret,
    nodes,
    async startNode(nodeId, az, extraEnv = {}) {
      const node = await startLivevoteProcess({ ...baseEnv, LIVEVOTE_NODE_ID: nodeId, LIVEVOTE_AZ: az, ...extraEnv });
      nodes.set(nodeId, node);
      return node;
    },
    async adminToken() {
      if (token) return token;
      const any = [...nodes.values()][0]!;
      const response = await call(any.baseUrl, 'POST', '/api/v1/auth/login', { body: clusterAdmin });
      if (response.status !== 200) throw new Error(`admin login failed: ${response.status} ${JSON.stringify(response.body)}`);
      token = response.body.accessToken as string;
      return token;
    },
    async close() {
      await killStartedProcesses();
      await db.drop();
      await rm(dataDir, { recursive: true, force: true });
    },
  };
}

/** Polls until `check` returns a value (not undefined), or throws after `timeoutMs` with the last error. */
export async function eventually<T>(check: () => Promise<T | undefined>, timeoutMs = 60_000, what = 'condition', intervalMs = 100): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  let lastError: unknown;
  for (;;) {
    try {
      const value = await check();
      if (value !== undefined) return value;
    } catch (error) {
      lastError = error;
    }
    if (Date.now() > deadline) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}${lastError ? `: ${String(lastError)}` : ''}`);
    await new Promise((resolve) => setTimeout(resolve, intervalMs));
  }
}

export interface VoteAttempt {
  readonly status: number;
  readonly voteId?: string;
  readonly code?: string;
}

/**
 * Casts one vote through `baseUrls` in turn, retrying on 503 (the cluster's answer while a shard
 * moves or its owner is gone) until an answer that is not 503, or the deadline. Never on 2xx/4xx.
 */
export async function castWithRetries(
  baseUrls: () => readonly string[],
  voter: { token: string; userId: string },
  body: { electionId: string; candidateId: string },
  deadlineMs = 90_000,
): Promise<VoteAttempt & { attempts: number; unavailable: number }> {
  const stopAt = Date.now() + deadlineMs;
  let attempts = 0;
  let unavailable = 0;
  for (;;) {
    const urls = baseUrls();
    const url = urls[attempts % urls.length]!;
    attempts++;
    let response: Awaited<ReturnType<typeof call>> | undefined;
    try {
      response = await call(url, 'POST', '/api/v1/votes', { token: voter.token, body: { ...body, userId: voter.userId } });
    } catch {
      // The node died under us: the vote may or may not be stored; the retry tells.
    }
    if (response !== undefined && response.status !== 503) {
      return { status: response.status, voteId: response.body?.voteId, code: response.body?.error?.code, attempts, unavailable };
    }
    unavailable++;
    if (Date.now() > stopAt) return { status: response?.status ?? 0, code: 'deadline', attempts, unavailable };
    await new Promise((resolve) => setTimeout(resolve, 50 + Math.random() * 100));
  }
}
