import { readFileSync } from 'node:fs';
import { describe, expect, it } from 'vitest';
import { ApiError, errorBody, errorCatalog, type ErrorCode } from './errors.ts';

describe('error catalog', () => {
  const doc = readFileSync(new URL('../ERRORS.md', import.meta.url), 'utf8');

  it('documents every code with its status in ERRORS.md', () => {
    for (const [code, entry] of Object.entries(errorCatalog)) {
      expect(doc, `ERRORS.md is missing ${code}`).toMatch(new RegExp(`\\| \`${code}\` \\| ${entry.status} \\|`));
    }
  });

  it('documents no code that does not exist', () => {
    const documented = [...doc.matchAll(/^\| `(\w+)` \|/gm)].map((m) => m[1]);
    expect(documented.sort()).toEqual(Object.keys(errorCatalog).sort());
  });

  it('uses 4xx/5xx statuses only, with a message each', () => {
    for (const entry of Object.values(errorCatalog)) {
      expect(entry.status).toBeGreaterThanOrEqual(400);
      expect(entry.message.length).toBeGreaterThan(5);
    }
  });

  it('serialises to the one error shape', () => {
    const error = new ApiError('already_voted' satisfies ErrorCode, undefined, { voteId: 'v' });
    expect(error.status).toBe(409);
    expect(JSON.parse(errorBody(error.code, error.message, error.details))).toEqual({
      error: { code: 'already_voted', message: errorCatalog.already_voted.message, details: { voteId: 'v' } },
    });
  });
});
