// The configuration tables (README.md "Configuration", gateway/abuse/README.md) are what an operator
// reads: every variable infra/config.ts reads must be in one of them with its true default, and
// every variable they list must be one livevote reads (a renamed or removed one would mislead).
import { readFileSync } from 'node:fs';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import { defaultFraudRulesConfig } from '../gateway/abuse/fraudRules.ts';
import { defaultRateLimits } from '../gateway/abuse/rateLimit.ts';
import { envSchema, loadConfig } from './config.ts';
import { root } from './testing/processHarness.ts';

const tableFiles = ['README.md', 'gateway/abuse/README.md'];

interface DocumentedVariable {
  readonly name: string;
  readonly file: string;
  /** The default column as written, backticks and thousands separators removed. */
  readonly documentedDefault: string;
}

/** Rows of a `| variable | default | meaning |` table: the first cell's backticked names. */
function documentedVariables(): DocumentedVariable[] {
  const out: DocumentedVariable[] = [];
  for (const file of tableFiles) {
    for (const line of readFileSync(path.join(root, file), 'utf8').split('\n')) {
      const cells = line.split('|').map((cell) => cell.trim());
      if (cells.length < 4 || !cells[1]!.startsWith('`')) continue;
      const names = [...cells[1]!.matchAll(/`([A-Z][A-Z0-9_]+)`/g)].map((m) => m[1]!);
      const documentedDefault = cells[2]!.replaceAll('`', '').replace(/(\d) (?=\d{3})/g, '$1').trim();
      for (const name of names) out.push({ name, file, documentedDefault });
    }
  }
  return out;
}

const schemaNames = Object.keys(envSchema.shape);
// What loadConfig applies when a variable is unset (optional ones: undefined).
const defaults = envSchema.parse({}) as Record<string, unknown>;

describe('the configuration tables', () => {
  const documented = documentedVariables();

  it('list every variable infra/config.ts reads', () => {
    const listed = new Set(documented.map((d) => d.name));
    expect(schemaNames.filter((name) => !listed.has(name))).toEqual([]);
  });

  it('list no variable infra/config.ts does not read', () => {
    const read = new Set(schemaNames);
    expect(documented.filter((d) => !read.has(d.name)).map((d) => `${d.name} (${d.file})`)).toEqual([]);
  });

  it("give each variable's true default", () => {
    const wrong: string[] = [];
    for (const { name, file, documentedDefault } of documented) {
      const actual = defaults[name];
      // Rate limit specs default to {} here, their values living in gateway/abuse/rateLimit.ts; a
      // variable without a default is documented as what happens instead (unset, generated, ...).
      if (actual === undefined || (typeof actual === 'object' && !Array.isArray(actual))) continue;
      const expected = Array.isArray(actual) ? (actual.length === 0 ? 'empty' : actual.join(',')) : String(actual);
      if (documentedDefault !== expected) wrong.push(`${name} (${file}): documented ${documentedDefault}, is ${expected}`);
    }
    expect(wrong).toEqual([]);
  });

  it('give the rate limits and fraud rules their code defaults (the variables only override them)', () => {
    const documentedDefault = (name: string) => documented.find((d) => d.name === name)!.documentedDefault;
    const abuse = loadConfig({
      LIVEVOTE_RATE_LIMIT_VOTE: documentedDefault('LIVEVOTE_RATE_LIMIT_VOTE'),
      LIVEVOTE_RATE_LIMIT_REGISTER: documentedDefault('LIVEVOTE_RATE_LIMIT_REGISTER'),
      LIVEVOTE_RATE_LIMIT_REGISTER_CHALLENGED: documentedDefault('LIVEVOTE_RATE_LIMIT_REGISTER_CHALLENGED'),
      LIVEVOTE_RATE_LIMIT_LOGIN: documentedDefault('LIVEVOTE_RATE_LIMIT_LOGIN'),
      LIVEVOTE_FRAUD_REGISTER_IP: documentedDefault('LIVEVOTE_FRAUD_REGISTER_IP'),
      LIVEVOTE_FRAUD_REGISTER_NETWORK: documentedDefault('LIVEVOTE_FRAUD_REGISTER_NETWORK'),
      LIVEVOTE_FRAUD_VOTE_BURST: documentedDefault('LIVEVOTE_FRAUD_VOTE_BURST'),
    }).abuse;
    expect(abuse.rateLimits).toEqual(defaultRateLimits);
    const velocity = ({ action, countMax, windowMs }: { action: string; countMax: number; windowMs: number }) => ({ action, countMax, windowMs });
    expect(abuse.fraudRegisterPerIp).toEqual(velocity(defaultFraudRulesConfig.registrationPerIp));
    expect(abuse.fraudRegisterPerNetwork).toEqual(velocity(defaultFraudRulesConfig.registrationPerNetwork));
    expect(abuse.fraudVoteBurst).toEqual(velocity(defaultFraudRulesConfig.voteBurst));
  });

  it('are found (a reformatted table would make the checks above pass on nothing)', () => {
    expect(documented.length).toBeGreaterThanOrEqual(schemaNames.length);
    expect(documented.filter((d) => d.file === 'README.md').length).toBeGreaterThan(30);
  });
});
