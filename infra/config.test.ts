import { mkdtemp, readFile, rm, stat } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import { ConfigError, loadConfig } from './config.ts';
import { loadOrCreateSecrets } from './secrets.ts';

describe('loadConfig', () => {
  it('applies the documented defaults', () => {
    const config = loadConfig({});
    expect(config.port).toBe(8080);
    expect(config.host).toBe('127.0.0.1');
    expect(config.databaseUrl).toBeUndefined();
    expect(config.dataDir).toBe(path.resolve('.livevote'));
    expect(config.logLevel).toBe('info');
  });

  it('switches nothing off for measurement unless LIVEVOTE_MEASURE_WITHOUT names it', () => {
    expect([...loadConfig({}).measureWithout]).toEqual([]);
    expect([...loadConfig({ DATABASE_URL: 'postgres://db/livevote' }).measureWithout]).toEqual([]);
    expect([...loadConfig({ LIVEVOTE_MEASURE_WITHOUT: 'audit_chain, fence,metadata,metrics,token_check,body_checks,fence' }).measureWithout])
      .toEqual(['audit_chain', 'fence', 'metadata', 'metrics', 'token_check', 'body_checks']);
  });

  it('refuses LIVEVOTE_MEASURE_WITHOUT with an unknown name, with DATABASE_URL, or with a worker thread that would keep the work', () => {
    const problemsOf = (env: Record<string, string>) => {
      try {
        loadConfig(env);
      } catch (error) {
        expect(error).toBeInstanceOf(ConfigError);
        return (error as ConfigError).problems.join('\n');
      }
      return expect.unreachable();
    };
    expect(problemsOf({ LIVEVOTE_MEASURE_WITHOUT: 'metadata,jwt' })).toMatch(/LIVEVOTE_MEASURE_WITHOUT: unknown feature "jwt"; known: audit_chain, fence/);
    expect(problemsOf({ LIVEVOTE_MEASURE_WITHOUT: 'metrics', DATABASE_URL: 'postgres://db/livevote' })).toMatch(/LIVEVOTE_MEASURE_WITHOUT: measurement only, refused with DATABASE_URL set/);
    expect(problemsOf({ LIVEVOTE_MEASURE_WITHOUT: 'fence', LIVEVOTE_JOURNAL_THREAD: 'worker' })).toMatch(/not with LIVEVOTE_JOURNAL_THREAD=worker/);
    expect(problemsOf({ LIVEVOTE_MEASURE_WITHOUT: 'body_checks', LIVEVOTE_VOTE_CHECKS_THREAD: 'worker' })).toMatch(/not with LIVEVOTE_VOTE_CHECKS_THREAD=worker/);
    // The switches that do not touch a worker's path go with either thread.
    expect([...loadConfig({ LIVEVOTE_MEASURE_WITHOUT: 'metadata', LIVEVOTE_JOURNAL_THREAD: 'worker', LIVEVOTE_VOTE_CHECKS_THREAD: 'worker' }).measureWithout]).toEqual(['metadata']);
  });

  it('treats empty values as unset', () => {
    expect(loadConfig({ PORT: '', DATABASE_URL: '' }).port).toBe(8080);
  });

  it('names every bad variable in one error', () => {
    try {
      loadConfig({ PORT: '99999', DATABASE_URL: 'mysql://x', LOG_LEVEL: 'loud', LIVEVOTE_JWT_SECRET: 'short', LIVEVOTE_ADMIN_EMAIL: 'nope' });
      expect.unreachable();
    } catch (error) {
      expect(error).toBeInstanceOf(ConfigError);
      const problems = (error as ConfigError).problems.join('\n');
      for (const name of ['PORT', 'DATABASE_URL', 'LOG_LEVEL', 'LIVEVOTE_JWT_SECRET', 'LIVEVOTE_ADMIN_EMAIL']) expect(problems).toContain(name);
    }
  });

  it('reports a check of two variables beside an invalid one, in the same error, and none that names the invalid one', () => {
    try {
      loadConfig({ PORT: 'eighty', LIVEVOTE_DEAD_AFTER_MS: '1000', LIVEVOTE_HEARTBEAT_INTERVAL_MS: '800', LIVEVOTE_SPILL_QUEUE: 'sqs', LIVEVOTE_SQS_QUEUE_URL: 'not a url' });
      expect.unreachable();
    } catch (error) {
      expect(error).toBeInstanceOf(ConfigError);
      const problems = (error as ConfigError).problems;
      expect(problems.some((p) => p.startsWith('PORT:'))).toBe(true);
      expect(problems.some((p) => p.startsWith('LIVEVOTE_SQS_QUEUE_URL:'))).toBe(true);
      expect(problems).toContain('LIVEVOTE_DEAD_AFTER_MS: must be at least twice LIVEVOTE_HEARTBEAT_INTERVAL_MS');
      // The SQS pair's check names the invalid URL: only its own error is reported.
      expect(problems.filter((p) => p.includes('required when LIVEVOTE_SPILL_QUEUE is sqs'))).toEqual([]);
    }
  });

  it('refuses a port that is not a number', () => {
    expect(() => loadConfig({ PORT: '80a' })).toThrow(/PORT: must be a whole number/);
  });
});

describe('secrets', () => {
  it('generates once, keeps them private, and reuses them on the next start', async () => {
    const dir = await mkdtemp(path.join(os.tmpdir(), 'lv-secrets-'));
    try {
      const config = loadConfig({ LIVEVOTE_DATA_DIR: dir });
      const first = await loadOrCreateSecrets(config);
      expect(first.generatedAdminPassword).toBe(first.secrets.adminPassword);
      expect(first.secrets.jwtSecret.length).toBeGreaterThanOrEqual(32);
      const file = path.join(dir, 'secrets.json');
      expect((await stat(file)).mode & 0o777).toBe(0o600);
      const second = await loadOrCreateSecrets(config);
      expect(second.generatedAdminPassword).toBeUndefined();
      expect(second.secrets).toEqual(first.secrets);
      expect(await readFile(file, 'utf8')).toContain(first.secrets.jwtSecret);
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  });

  it('prefers configured values and prints no generated password when one is configured', async () => {
    const dir = await mkdtemp(path.join(os.tmpdir(), 'lv-secrets-'));
    try {
      const config = loadConfig({ LIVEVOTE_DATA_DIR: dir, LIVEVOTE_JWT_SECRET: 'j'.repeat(40), LIVEVOTE_ADMIN_EMAIL: 'Boss@Example.com', LIVEVOTE_ADMIN_PASSWORD: 'correct horse battery' });
      const loaded = await loadOrCreateSecrets(config);
      expect(loaded.generatedAdminPassword).toBeUndefined();
      expect(loaded.secrets.jwtSecret).toBe('j'.repeat(40));
      expect(loaded.secrets.adminEmail).toBe('boss@example.com');
      expect(loaded.secrets.adminPassword).toBe('correct horse battery');
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  });
});

describe('privacy settings', () => {
  it('keep request metadata 30 days by default, configurable within bounds', () => {
    expect(loadConfig({}).privacy).toEqual({ metadataRetentionDays: 30, metadataBufferRowsMax: 100_000 });
    expect(loadConfig({ LIVEVOTE_METADATA_RETENTION_DAYS: '7', LIVEVOTE_METADATA_BUFFER_ROWS_MAX: '5000' }).privacy)
      .toEqual({ metadataRetentionDays: 7, metadataBufferRowsMax: 5000 });
    for (const env of [{ LIVEVOTE_METADATA_RETENTION_DAYS: '0' }, { LIVEVOTE_METADATA_RETENTION_DAYS: '3651' }, { LIVEVOTE_METADATA_BUFFER_ROWS_MAX: '10' }]) {
      expect(() => loadConfig(env)).toThrow(Object.keys(env)[0]);
    }
  });
});

describe('secrets from an older data dir', () => {
  it('fills in secrets added since, keeping the old ones and printing no new admin password', async () => {
    const { writeFile } = await import('node:fs/promises');
    const dir = await mkdtemp(path.join(os.tmpdir(), 'lv-secrets-old-'));
    try {
      const old = { jwtSecret: 'j'.repeat(48), emailHashKey: 'e'.repeat(32), ipHashKey: 'i'.repeat(32), adminPassword: 'old admin password', embeddedDbPassword: 'db' };
      await writeFile(path.join(dir, 'secrets.json'), JSON.stringify(old), { mode: 0o600 });
      const loaded = await loadOrCreateSecrets(loadConfig({ LIVEVOTE_DATA_DIR: dir }));
      expect(loaded.generatedAdminPassword).toBeUndefined();
      expect(loaded.secrets).toMatchObject({ jwtSecret: old.jwtSecret, emailHashKey: old.emailHashKey, adminPassword: old.adminPassword });
      expect(loaded.secrets.captchaHmacKey.length).toBeGreaterThanOrEqual(32);
      expect((await loadOrCreateSecrets(loadConfig({ LIVEVOTE_DATA_DIR: dir }))).secrets.captchaHmacKey).toBe(loaded.secrets.captchaHmacKey);
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  });
});
