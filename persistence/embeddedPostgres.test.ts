// The embedded server itself is exercised by every test run without DATABASE_URL (the global
// setup) and by infra/node.test.ts; this covers the choice of its Unix socket directory.
import { describe, expect, it } from 'vitest';
import { embeddedSocketDir } from './embeddedPostgres.ts';

describe('embeddedSocketDir', () => {
  it('puts the socket in the data dir when the socket path fits in 107 bytes', () => {
    expect(embeddedSocketDir('/var/lib/livevote/postgres')).toBe('/var/lib/livevote/postgres');
    const longest = `/${'d'.repeat(91)}`; // 92 + '/.s.PGSQL.65535' (15) = 107
    expect(embeddedSocketDir(longest)).toBe(longest);
  });

  it('falls back to TCP (undefined) when the path is too long or would split the directory list', () => {
    expect(embeddedSocketDir(`/${'d'.repeat(92)}`)).toBeUndefined();
    expect(embeddedSocketDir('/data/a,b/postgres')).toBeUndefined();
  });

  it('resolves a relative data dir, as the server will', () => {
    expect(embeddedSocketDir('data/postgres')).toBe(`${process.cwd()}/data/postgres`);
  });
});
