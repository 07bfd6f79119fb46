// The broadcaster dashboard's script (served at /dashboard.js; the page's CSP allows no inline
// script). The session survives reloads without a token in page-readable storage: login and
// refresh run in cookie mode (`X-Livevote-Refresh: cookie`), so the refresh token lives in an
// HttpOnly cookie that only the refresh route receives, and the 15-minute access token lives in
// this script's memory only. On load the page asks the refresh route for a new access token (the
// cookie rotates); a minute before it expires it asks again. Sign-out revokes the session.
'use strict';

const api = '/api/v1';
const cookieMode = { 'x-livevote-refresh': 'cookie' };
/** The README's rule: the dashboard is for broadcasters and admins. */
const dashboardRoles = ['broadcaster', 'admin'];
const reconnectDelayMs = 1000;
const renewRetryMs = 5000;
const state = { accessToken: null, socket: null, electionId: null, refreshTimer: null, reconnectTimer: null };
const $ = (id) => document.getElementById(id);

class ApiFailure extends Error {
  constructor(status, code, message) {
    super(message);
    this.status = status;
    this.code = code;
  }
}

async function call(path, options = {}) {
  const headers = { ...(options.headers || {}) };
  if (options.body !== undefined) headers['content-type'] = 'application/json';
  if (state.accessToken && options.bearer !== false) headers.authorization = 'Bearer ' + state.accessToken;
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
          state.accessToken = (await refreshSession()).accessToken;
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

function show(view) {
  $('resuming').classList.toggle('hidden', view !== 'resuming');
  $('signin').classList.toggle('hidden', view !== 'signed-out');
  $('picker').classList.toggle('hidden', view !== 'live');
  $('signout-button').classList.toggle('hidden', view !== 'live');
  if (view !== 'live') {
    $('results').classList.add('hidden');
    $('who').textContent = '';
  }
}

function showSignedOut(notice, error) {
  stopLive();
  show('signed-out');
  $('signin-notice').textContent = notice || '';
  $('signin-error').textContent = error || '';
}

function stopLive() {
  clearTimeout(state.refreshTimer);
  clearTimeout(state.reconnectTimer);
  if (state.socket) {
    state.socket.onclose = null;
    state.socket.close();
  }
  state.socket = null;
  state.accessToken = null;
  state.electionId = null;
  $('bars').innerHTML = '';
}

function keepTokens(tokens) {
  state.accessToken = tokens.accessToken;
  clearTimeout(state.refreshTimer);
  // A minute before the access token expires. The open stream needs no new token (it was checked
  // at connect); a reconnect takes the newest one.
  state.refreshTimer = setTimeout(renew, Math.max(5, tokens.expiresIn - 60) * 1000);
}

async function renew() {
  try {
    await begin(await refreshSession(), { renewal: true });
  } catch (error) {
    if (error instanceof ApiFailure) showSignedOut('Your session ended: ' + error.message + ' Sign in again.');
    else state.refreshTimer = setTimeout(renew, renewRetryMs); // offline for a moment: try again
  }
}

/** A session just started, resumed or renewed: keep it if its role may use the dashboard. */
async function begin(tokens, options = {}) {
  if (!dashboardRoles.includes(tokens.role)) {
    // A viewer's session ends at once: nothing here is for them, and no cookie is left behind.
    state.accessToken = tokens.accessToken;
    await endSession().catch(() => undefined);
    showSignedOut('', 'This account is a ' + tokens.role + ', not a broadcaster: the dashboard is for broadcasters and admins. ' +
      'An admin can make you a broadcaster (PUT /api/v1/users/{userId}/role).');
    return;
  }
  keepTokens(tokens);
  if (options.renewal) return;
  $('who').textContent = 'signed in as ' + tokens.role;
  show('live');
  await loadElections();
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

async function loadElections() {
  $('picker-error').textContent = '';
  let elections;
  try {
    ({ elections } = await call('/elections'));
  } catch (error) {
    $('picker-error').textContent = 'Could not load the elections: ' + error.message;
    return;
  }
  const select = $('election');
  select.innerHTML = '';
  for (const election of elections) {
    const option = document.createElement('option');
    option.value = election.electionId;
    option.textContent = election.title + ' (' + election.status + ')';
    select.appendChild(option);
  }
  if (elections.length > 0) connect(elections[0].electionId);
}

$('election').addEventListener('change', (event) => connect(event.target.value));

function connect(electionId) {
  if (state.electionId !== electionId) $('bars').innerHTML = '';
  state.electionId = electionId;
  clearTimeout(state.reconnectTimer);
  if (state.socket) { state.socket.onclose = null; state.socket.close(); }
  const scheme = location.protocol === 'https:' ? 'wss://' : 'ws://';
  const socket = new WebSocket(scheme + location.host + api + '/results/stream/' + encodeURIComponent(electionId) + '?access_token=' + encodeURIComponent(state.accessToken));
  state.socket = socket;
  $('results').classList.remove('hidden');
  $('stream-status').className = 'status';
  $('stream-status').textContent = 'connecting…';
  socket.onopen = () => { $('stream-status').className = 'status live'; $('stream-status').textContent = 'live'; };
  socket.onmessage = (event) => render(JSON.parse(event.data));
  socket.onclose = () => {
    $('stream-status').className = 'status';
    $('stream-status').textContent = 'disconnected; retrying…';
    state.reconnectTimer = setTimeout(() => { if (state.electionId === electionId && state.accessToken) connect(electionId); }, reconnectDelayMs);
  };
}

function render(results) {
  if (results.type !== 'results' || results.electionId !== state.electionId) return;
  $('title').textContent = results.title + (results.status === 'closed' ? ' — final' : '');
  $('total').textContent = results.totalVotes.toLocaleString();
  const bars = $('bars');
  const top = Math.max(1, ...results.candidates.map((c) => c.votes));
  for (const candidate of results.candidates) {
    let row = document.getElementById('c-' + candidate.candidateId);
    if (!row) {
      row = document.createElement('div');
      row.className = 'row';
      row.id = 'c-' + candidate.candidateId;
      row.innerHTML = '<div class="name"></div><div class="bar"><div class="fill"></div></div><div class="votes"></div>';
      row.querySelector('.name').textContent = candidate.name;
      bars.appendChild(row);
    }
    row.querySelector('.fill').style.width = (100 * candidate.votes / top).toFixed(2) + '%';
    row.querySelector('.votes').textContent = candidate.votes.toLocaleString();
    row.dataset.votes = String(candidate.votes);
  }
}

resume();
