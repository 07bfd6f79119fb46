// The embedded server itself is exercised by every test run without DATABASE_URL (the global
// setup) and by infra/node.test.ts; this covers the choice of its Unix socket directory.
import { describe, expect, it } from 'vitest';
import { embeddedDatabaseUrl, embeddedSocketDir } from './embeddedPostgres.ts';

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

  it('builds the URL on the socket when it fits, else on 127.0.0.1, with the password encoded', () => {
    // How node-postgres reads it (pg-connection-string): the host decoded, so a path means a socket.
    const parts = (url: string) => {
      const u = new URL(url);
      return { host: decodeURIComponent(u.hostname), port: u.port, user: u.username, password: decodeURIComponent(u.password), database: u.pathname.slice(1) };
    };
    expect(parts(embeddedDatabaseUrl('/var/lib/livevote/postgres', 5433, 'p@ss/w', 'livevote'))).toEqual({
      host: '/var/lib/livevote/postgres', port: '5433', user: 'postgres', password: 'p@ss/w', database: 'livevote',
    });
    expect(parts(embeddedDatabaseUrl(`/${'d'.repeat(92)}`, 5433, 'pw', 'x'))).toMatchObject({ host: '127.0.0.1', database: 'x' });
  });
});
