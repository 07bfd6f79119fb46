// The broadcaster dashboard: one static page (vanilla JS) that signs in, picks an election and
// draws the results the WebSocket pushes. Read once at start-up; served from memory.
import { readFileSync } from 'node:fs';
import { defineRoute, type RouteDefinition } from '../http.ts';

const page = readFileSync(new URL('./index.html', import.meta.url));

export function dashboardRoutes(): RouteDefinition<unknown, unknown>[] {
  return [
    defineRoute({
      method: 'GET', path: '/', tag: 'dashboard', auth: 'public',
      summary: 'The broadcaster dashboard (HTML): sign in, pick an election, watch live results.',
      responses: { 200: { description: 'HTML page' } },
      handle: () => ({
        raw: page,
        contentType: 'text/html; charset=utf-8',
        headers: {
          'cache-control': 'no-cache',
          'content-security-policy': "default-src 'self'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; connect-src 'self' ws: wss:",
          'x-content-type-options': 'nosniff',
        },
      }),
    }),
  ];
}
