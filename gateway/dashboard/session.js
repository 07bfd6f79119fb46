// The sign-in and session of livevote's pages (the dashboard at /, the ops page at /ops), served
// at /session.js as an ES module. The session survives reloads without a token in page-readable
// storage: login and refresh run in cookie mode (`X-Livevote-Refresh: cookie`), so the refresh
// token lives in an HttpOnly cookie that only the refresh route receives, and the 15-minute access
// token lives in this module's memory only. On load the page asks the refresh route for a new
// access token (the cookie rotates); a minute before it expires it asks again. Sign-out revokes
// the session.
//
// The page provides the elements #resuming, #signin (with #signin-form, #email, #password,
// #signin-button, #signin-error, #signin-notice), #who and #signout-button; elements with the
// class `live-only` are shown only while signed in with an allowed role.

export const api = '/api/v1';
const cookieMode = { 'x-livevote-refresh': 'cookie' };
const renewRetryMs = 5000;
const session = { accessToken: null, refreshTimer: null };
const $ = (id) => document.getElementById(id);

export class ApiFailure extends Error {
  constructor(status, code, message) {
    super(message);
    this.status = status;
    this.code = code;
  }
}

/** The current access token (null when signed out): for the WebSocket URL. */
export function accessToken() {
  return session.accessToken;
}

/** A JSON call to the API with the session's bearer token; throws ApiFailure on an error answer. */
export async function call(path, options = {}) {
  const headers = { ...(options.headers || {}) };
  if (options.body !== undefined) headers['content-type'] = 'application/json';
  if (session.accessToken && options.bearer !== false) headers.authorization = 'Bearer ' + session.accessToken;
  const response = await fetch(api + path, { method: options.method || 'GET', headers, body: options.body, credentials: 'same-origin' });
  const body = response.status === 204 ? null : await response.json().catch(() => null);
  if (!response.ok) {
    const error = body && body.error;
    throw new ApiFailure(response.status, error ? error.code : 'http_' + response.status, (error && error.message) || response.statusText);
  }
  return body;
}

// Tabs share the cookie. Two of them refreshing at once would present the same token twice, which
// the server takes for a stolen token and answers by revoking the session: one refresh at a time.
function oneRefreshAtATime(work) {
  return navigator.locks ? navigator.locks.request('livevote-refresh', work) : work();
}

function refreshSession() {
  return oneRefreshAtATime(() => call('/auth/refresh', { method: 'POST', headers: cookieMode, bearer: false }));
}

/** Revokes the session server-side (its cookie is cleared too). True once the session is over. */
async function endSession() {
  for (let attempt = 0; attempt < 2; attempt++) {
    try {
      await call('/auth/logout', { method: 'POST', headers: cookieMode });
      return true;
    } catch (error) {
      if (!(error instanceof ApiFailure)) throw error;
      // The access token expired while the page slept: renew it once, then end the session.
      if (error.code === 'token_expired' && attempt === 0) {
        try {
          session.accessToken = (await refreshSession()).accessToken;
          continue;
        } catch (refreshError) {
          if (refreshError instanceof ApiFailure) return true; // no live session left to end
          throw refreshError;
        }
      }
      if (error.status === 401) return true; // already revoked or expired
      throw error;
    }
  }
  return true;
}

/**
 * Runs the page's session: resumes it on load, signs in and out, renews the access token.
 * `page.roles`: who may use the page; `page.notAllowed(role)`: what others are told (their
 * session ends at once); `page.onLive(tokens)`: signed in (or resumed) with an allowed role;
 * `page.onStop()`: signed out, or the session ended.
 */
export function startSession(page) {
  function show(view) {
    $('resuming').classList.toggle('hidden', view !== 'resuming');
    $('signin').classList.toggle('hidden', view !== 'signed-out');
    $('signout-button').classList.toggle('hidden', view !== 'live');
    for (const element of document.querySelectorAll('.live-only')) element.classList.toggle('hidden', view !== 'live');
    if (view !== 'live') $('who').textContent = '';
  }

  function showSignedOut(notice, error) {
    clearTimeout(session.refreshTimer);
    session.accessToken = null;
    page.onStop();
    show('signed-out');
    $('signin-notice').textContent = notice || '';
    $('signin-error').textContent = error || '';
  }

  function keepTokens(tokens) {
    session.accessToken = tokens.accessToken;
    clearTimeout(session.refreshTimer);
    // A minute before the access token expires. An open WebSocket needs no new token (it was
    // checked at connect); a reconnect takes the newest one.
    session.refreshTimer = setTimeout(renew, Math.max(5, tokens.expiresIn - 60) * 1000);
  }

  async function renew() {
    try {
      await begin(await refreshSession(), { renewal: true });
    } catch (error) {
      if (error instanceof ApiFailure) showSignedOut('Your session ended: ' + error.message + ' Sign in again.');
      else session.refreshTimer = setTimeout(renew, renewRetryMs); // offline for a moment: try again
    }
  }

  /** A session just started, resumed or renewed: keep it if its role may use the page. */
  async function begin(tokens, options = {}) {
    if (!page.roles.includes(tokens.role)) {
      // Nothing here is for this role: the session ends at once, and no cookie is left behind.
      session.accessToken = tokens.accessToken;
      await endSession().catch(() => undefined);
      showSignedOut('', page.notAllowed(tokens.role));
      return;
    }
    keepTokens(tokens);
    if (options.renewal) return;
    show('live');
    $('who').textContent = 'signed in as ' + tokens.role;
    await page.onLive(tokens);
  }

  async function resume() {
    show('resuming');
    try {
      await begin(await refreshSession());
    } catch (error) {
      showSignedOut(error instanceof ApiFailure ? '' : 'Could not reach the server: ' + error.message);
    }
  }

  $('signin-form').addEventListener('submit', async (event) => {
    event.preventDefault();
    $('signin-error').textContent = '';
    $('signin-notice').textContent = '';
    $('signin-button').disabled = true;
    try {
      const tokens = await call('/auth/login', {
        method: 'POST', headers: cookieMode, bearer: false,
        body: JSON.stringify({ email: $('email').value, password: $('password').value }),
      });
      $('password').value = '';
      await begin(tokens);
    } catch (error) {
      $('signin-error').textContent = error.message;
    } finally {
      $('signin-button').disabled = false;
    }
  });

  $('signout-button').addEventListener('click', async () => {
    $('signout-button').disabled = true;
    try {
      await endSession();
      showSignedOut('Signed out.');
    } catch (error) {
      // Still signed in server-side: say so rather than pretend.
      $('who').textContent = 'Sign-out failed (' + error.message + '); try again.';
    } finally {
      $('signout-button').disabled = false;
    }
  });

  resume();
}
