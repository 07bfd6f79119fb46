// The browser pages: the broadcaster dashboard (/: sign in, pick an election, draw the results
// the WebSocket pushes) and the ops page (/ops: the cluster, move, drain, balance), each one static
// page and its script (vanilla JS), sharing /session.js for sign-in. Read once at start-up; served from memory.
// The script is a file of its own so the page's CSP can refuse inline scripts (script-src 'self'):
// an injected <script> does not run, and the session's refresh token is in an HttpOnly cookie
// anyway (gateway/auth/refreshCookie.ts).
import { readFileSync } from 'node:fs';
import { defineRoute, type RouteDefinition } from '../http.ts';

/** The sign-in both pages share, without its first line (a comment about the file itself). */
const signIn = readFileSync(new URL('./signin.html', import.meta.url), 'utf8').replace(/^<!--.*-->\n/, '');
const signInMarker = '  <!-- sign-in: signin.html, put here by routes.ts -->\n';

/** A page with the shared sign-in in place of its marker. */
function withSignIn(file: string): Buffer {
  const html = readFileSync(new URL(file, import.meta.url), 'utf8');
  if (!html.includes(signInMarker)) throw new Error(`${file} has no sign-in marker`);
  return Buffer.from(html.replace(signInMarker, signIn));
}

const page = withSignIn('./index.html');
const script = readFileSync(new URL('./dashboard.js', import.meta.url));
const sessionScript = readFileSync(new URL('./session.js', import.meta.url));
const opsPage = withSignIn('./ops.html');
const opsScript = readFileSync(new URL('./ops.js', import.meta.url));
const icon = readFileSync(new URL('./favicon.svg', import.meta.url));

const staticHeaders = { 'cache-control': 'no-cache', 'x-content-type-options': 'nosniff' };

const pageHeaders = {
  ...staticHeaders,
  'content-security-policy':
    "default-src 'self'; script-src 'self'; style-src 'unsafe-inline'; connect-src 'self' ws: wss:; frame-ancestors 'none'; base-uri 'none'; form-action 'none'",
  'referrer-policy': 'no-referrer',
};

export function dashboardRoutes(): RouteDefinition<unknown, unknown>[] {
  return [
    defineRoute({
      method: 'GET', path: '/', tag: 'dashboard', auth: 'public',
      summary: 'The broadcaster dashboard (HTML): sign in, pick an election, watch live results.',
      responses: { 200: { description: 'HTML page' } },
      handle: () => ({ raw: page, contentType: 'text/html; charset=utf-8', headers: pageHeaders }),
    }),
    defineRoute({
      method: 'GET', path: '/ops', tag: 'dashboard', auth: 'public',
      summary: 'The ops page (HTML, admins sign in): nodes by AZ with votes/s, the shard map, move, drain and balance with their progress.',
      responses: { 200: { description: 'HTML page' } },
      handle: () => ({ raw: opsPage, contentType: 'text/html; charset=utf-8', headers: pageHeaders }),
    }),
    defineRoute({
      method: 'GET', path: '/ops.js', tag: 'dashboard', auth: 'public',
      summary: "The ops page's script (an ES module).",
      responses: { 200: { description: 'JavaScript' } },
      handle: () => ({ raw: opsScript, contentType: 'text/javascript; charset=utf-8', headers: staticHeaders }),
    }),
    defineRoute({
      method: 'GET', path: '/dashboard.js', tag: 'dashboard', auth: 'public',
      summary: "The dashboard's script.",
      responses: { 200: { description: 'JavaScript' } },
      handle: () => ({ raw: script, contentType: 'text/javascript; charset=utf-8', headers: staticHeaders }),
    }),
    defineRoute({
      method: 'GET', path: '/session.js', tag: 'dashboard', auth: 'public',
      summary: "Sign-in and session of the dashboard and the ops page (an ES module).",
      responses: { 200: { description: 'JavaScript' } },
      handle: () => ({ raw: sessionScript, contentType: 'text/javascript; charset=utf-8', headers: staticHeaders }),
    }),
    // Browsers ask for /favicon.ico on their own; the page links the SVG.
    ...['/favicon.svg', '/favicon.ico'].map((path) => defineRoute({
      method: 'GET', path, tag: 'dashboard', auth: 'public',
      summary: "The dashboard's icon (SVG).",
      responses: { 200: { description: 'SVG image' } },
      handle: () => ({ raw: icon, contentType: 'image/svg+xml', headers: { ...staticHeaders, 'cache-control': 'max-age=86400' } }),
    })),
  ];
}
