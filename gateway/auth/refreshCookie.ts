// Cookie mode for browser clients (the dashboard): the refresh token travels in an HttpOnly
// cookie that page scripts cannot read, so an injected script can steal at most a 15-minute
// access token, never the 30-day session. API clients that do not ask keep the JSON contract.
//
// A client asks with the header `X-Livevote-Refresh: cookie` on login, refresh and logout. The
// cookie is sent back only to the refresh route (its Path) and only same-site (SameSite=Strict);
// the refresh route reads it only when the header is present. A cross-site page cannot add that
// header to a request without a CORS preflight, which livevote never grants, so a forged refresh
// neither carries the cookie nor gets read: no CSRF on the cookie-authenticated route.
import { refreshTokenTtlMs } from './accounts.ts';

export const refreshModeHeader = 'x-livevote-refresh';
export const refreshCookieName = 'livevote_refresh';
export const refreshCookiePath = '/api/v1/auth/refresh';
/** The headers the auth routes read to serve cookie mode (see RouteDefinition.readHeaders). */
export const cookieModeHeaders = [refreshModeHeader, 'origin', 'cookie'] as const;

const refreshCookieMaxAgeS = Math.floor(refreshTokenTtlMs / 1000);
/** Cookie headers longer than this are not ours to parse (browsers cap a cookie near 4 KB). */
const cookieHeaderCharsMax = 16 * 1024;

export function wantsCookieMode(headers: Readonly<Record<string, string>>): boolean {
  return (headers[refreshModeHeader] ?? '').trim().toLowerCase() === 'cookie';
}

/**
 * Secure unless the page is plainly served over http (a local `npm start`): a browser sends
 * Origin on every POST, https behind a TLS-terminating proxy included. Without an Origin (not a
 * browser) the cookie is marked Secure, the safe default.
 */
function isSecure(headers: Readonly<Record<string, string>>): boolean {
  return !(headers.origin ?? '').toLowerCase().startsWith('http:');
}

function attributes(headers: Readonly<Record<string, string>>, maxAgeS: number): string {
  return `Path=${refreshCookiePath}; Max-Age=${maxAgeS}; HttpOnly; SameSite=Strict${isSecure(headers) ? '; Secure' : ''}`;
}

export function refreshCookieHeader(refreshToken: string, headers: Readonly<Record<string, string>>): string {
  return `${refreshCookieName}=${refreshToken}; ${attributes(headers, refreshCookieMaxAgeS)}`;
}

export function clearedRefreshCookieHeader(headers: Readonly<Record<string, string>>): string {
  return `${refreshCookieName}=; ${attributes(headers, 0)}`;
}

/** The refresh token from a Cookie header, or undefined. The accounts service checks its shape. */
export function refreshTokenFromCookies(cookieHeader: string): string | undefined {
  if (cookieHeader === '' || cookieHeader.length > cookieHeaderCharsMax) return undefined;
  for (const pair of cookieHeader.split(';')) {
    const separator = pair.indexOf('=');
    if (separator < 0 || pair.slice(0, separator).trim() !== refreshCookieName) continue;
    const value = pair.slice(separator + 1).trim();
    return value === '' ? undefined : value;
  }
  return undefined;
}
