// The broadcaster dashboard's script (served at /dashboard.js as an ES module; the page's CSP
// allows no inline script). Sign-in and the session: /session.js, shared with the ops page.
import { accessToken, api, call, startSession } from '/session.js';

/** The README's rule: the dashboard is for broadcasters and admins. */
const dashboardRoles = ['broadcaster', 'admin'];
const reconnectDelayMs = 1000;
const state = { socket: null, electionId: null, reconnectTimer: null };
const $ = (id) => document.getElementById(id);

function stopLive() {
  clearTimeout(state.reconnectTimer);
  if (state.socket) {
    state.socket.onclose = null;
    state.socket.close();
  }
  state.socket = null;
  state.electionId = null;
  $('bars').innerHTML = '';
  $('results').classList.add('hidden');
}

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
  const socket = new WebSocket(scheme + location.host + api + '/results/stream/' + encodeURIComponent(electionId) + '?access_token=' + encodeURIComponent(accessToken()));
  state.socket = socket;
  $('results').classList.remove('hidden');
  $('stream-status').className = 'status';
  $('stream-status').textContent = 'connecting…';
  socket.onopen = () => { $('stream-status').className = 'status live'; $('stream-status').textContent = 'live'; };
  socket.onmessage = (event) => render(JSON.parse(event.data));
  socket.onclose = () => {
    $('stream-status').className = 'status';
    $('stream-status').textContent = 'disconnected; retrying…';
    state.reconnectTimer = setTimeout(() => { if (state.electionId === electionId && accessToken()) connect(electionId); }, reconnectDelayMs);
  };
}

function render(results) {
  if (results.type !== 'results' || results.electionId !== state.electionId) return;
  $('title').textContent = results.title + (results.status === 'closed' ? ' — final' : '');
  $('total').textContent = results.totalVotes.toLocaleString();
  // Votes accepted while the database was slow wait in the spill queue: durable, not counted yet.
  const queued = results.queuedVotes ?? 0;
  $('queued').classList.toggle('hidden', queued === 0);
  $('queued').textContent = queued === 0 ? '' : '+ ' + queued.toLocaleString() + ' accepted votes queued, not counted yet: the tally is incomplete';
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

startSession({
  roles: dashboardRoles,
  notAllowed: (role) => 'This account is a ' + role + ', not a broadcaster: the dashboard is for broadcasters and admins. ' +
    'An admin can make you a broadcaster (PUT /api/v1/users/{userId}/role).',
  onLive: loadElections,
  onStop: stopLive,
});
