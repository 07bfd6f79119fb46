// The ops page's script (served at /ops.js as an ES module; sign-in and session: /session.js).
// Admins only. Every second it reads the cluster (members with votes/s, the shard map) and the
// latest operations, and redraws them; move, drain, undrain and balance are POSTed to the operations API
// and their progress shows up in the operations table at the next poll.
import { ApiFailure, call, startSession } from '/session.js';

const pollIntervalMs = 1000;
const operationsShown = 20;
/** A drain is asked for twice (the button arms, then confirms) within this long. */
const drainConfirmMs = 5000;
const state = { polling: false, pollTimer: null, titles: new Map(), titlesReadAtMs: 0, armed: null, armTimer: null, selected: null };
const $ = (id) => document.getElementById(id);

function element(tag, className, text) {
  const node = document.createElement(tag);
  if (className) node.className = className;
  if (text !== undefined) node.textContent = text;
  return node;
}

/** A stable colour per node, so a node's shards can be told apart at a glance. */
function colourOf(nodeId) {
  let hash = 0;
  for (const ch of nodeId) hash = (hash * 31 + ch.charCodeAt(0)) >>> 0;
  // The golden angle apart per step of the hash: node-1 and node-2 get far-apart hues.
  return 'hsl(' + ((hash * 137.508) % 360).toFixed(0) + ' 65% 58%)';
}

function secondsAgo(isoTime) {
  const seconds = Math.max(0, (Date.now() - Date.parse(isoTime)) / 1000);
  return seconds < 10 ? seconds.toFixed(1) + ' s ago' : Math.round(seconds) + ' s ago';
}

function showActionError(error) {
  $('action-error').textContent = error ? (error instanceof ApiFailure ? error.message + ' (' + error.code + ')' : 'Could not reach the server: ' + error.message) : '';
}

function describeRequest(request) {
  if (request.kind === 'move') return 'move shard ' + request.shard + ' of ' + (state.titles.get(request.electionId) || request.electionId) + ' to ' + request.toNodeId;
  if (request.kind === 'drain') return 'drain ' + request.nodeId;
  if (request.kind === 'undrain') return 'undrain ' + request.nodeId;
  return 'balance';
}

// --- actions -------------------------------------------------------------------------------

async function requestOperation(path, body) {
  showActionError(null);
  try {
    await call('/admin/cluster' + path, { method: 'POST', body: body === undefined ? undefined : JSON.stringify(body) });
    await poll();
  } catch (error) {
    showActionError(error);
  }
}

$('balance-button').addEventListener('click', () => requestOperation('/balance'));

$('move-form').addEventListener('submit', (event) => {
  event.preventDefault();
  const electionId = $('move-election').value;
  const shard = $('move-shard').value;
  requestOperation('/shards/' + encodeURIComponent(electionId) + '/' + encodeURIComponent(shard) + '/move', { toNodeId: $('move-node').value });
});

function drainClicked(nodeId, button) {
  if (state.armed !== nodeId) {
    state.armed = nodeId;
    clearTimeout(state.armTimer);
    state.armTimer = setTimeout(() => { state.armed = null; redrawDrainButtons(); }, drainConfirmMs);
    redrawDrainButtons();
    return;
  }
  state.armed = null;
  clearTimeout(state.armTimer);
  button.disabled = true;
  requestOperation('/nodes/' + encodeURIComponent(nodeId) + '/drain');
}

function redrawDrainButtons() {
  for (const button of document.querySelectorAll('button.drain')) {
    const armed = button.dataset.node === state.armed;
    button.classList.toggle('armed', armed);
    button.textContent = armed ? 'Confirm drain' : 'Drain';
  }
}

function selectShard(electionId, shard) {
  state.selected = electionId + '/' + shard;
  $('move-election').value = electionId;
  $('move-shard').value = String(shard);
  for (const cell of document.querySelectorAll('.shard')) cell.classList.toggle('selected', cell.dataset.key === state.selected);
}

// --- drawing -------------------------------------------------------------------------------

function renderNodes(cluster) {
  const byAz = new Map();
  for (const node of cluster.nodes) {
    if (!byAz.has(node.az)) byAz.set(node.az, []);
    byAz.get(node.az).push(node);
  }
  const azs = $('azs');
  azs.innerHTML = '';
  for (const az of [...byAz.keys()].sort()) {
    const column = element('div', 'az');
    column.id = 'az-' + az;
    column.appendChild(element('h3', '', 'AZ ' + az));
    for (const node of byAz.get(az).sort((a, b) => a.nodeId.localeCompare(b.nodeId))) {
      const card = element('div', 'node');
      card.id = 'node-' + node.nodeId;
      card.dataset.status = node.status;
      card.dataset.shards = String(node.shardsOwned);
      card.style.setProperty('--node-color', colourOf(node.nodeId));
      const title = element('div');
      title.appendChild(element('span', 'name', node.nodeId + (node.nodeId === cluster.coordinatorNodeId ? ' ★' : '')));
      title.appendChild(element('span', 'badge status ' + node.status, node.status));
      if (node.draining) title.appendChild(element('span', 'badge draining', 'draining'));
      card.appendChild(title);
      const facts = element('dl');
      const rate = node.votesPerSecond === null || node.votesPerSecond === undefined ? '—' : Math.round(node.votesPerSecond).toLocaleString();
      for (const [name, value, className] of [
        ['heartbeat', secondsAgo(node.lastHeartbeatAt), 'heartbeat'], ['shards', String(node.shardsOwned), 'shards'],
        ['votes/s', rate, 'rate'], ['url', node.url, 'url'],
      ]) {
        facts.appendChild(element('dt', '', name));
        facts.appendChild(element('dd', className, value));
      }
      card.appendChild(facts);
      if (node.draining) {
        // Undoing a drain takes nothing away from anyone: one click.
        const undrain = element('button', 'undrain secondary', 'Undrain');
        undrain.type = 'button';
        undrain.disabled = node.status !== 'alive';
        undrain.addEventListener('click', () => {
          undrain.disabled = true;
          requestOperation('/nodes/' + encodeURIComponent(node.nodeId) + '/undrain');
        });
        card.appendChild(undrain);
      } else {
        const drain = element('button', 'drain secondary', 'Drain');
        drain.type = 'button';
        drain.dataset.node = node.nodeId;
        drain.disabled = node.status !== 'alive';
        drain.addEventListener('click', () => drainClicked(node.nodeId, drain));
        card.appendChild(drain);
      }
      column.appendChild(card);
    }
    azs.appendChild(column);
  }
  redrawDrainButtons();
  const alive = cluster.nodes.filter((n) => n.status === 'alive').length;
  $('cluster-summary').textContent = alive + ' of ' + cluster.nodes.length + ' nodes alive · ' + cluster.shards.length + ' shards · map version ' +
    cluster.version + ' · coordinator ' + (cluster.coordinatorNodeId || 'none') + ' (★)';
}

function renderShards(cluster) {
  const byElection = new Map();
  for (const shard of cluster.shards) {
    if (!byElection.has(shard.electionId)) byElection.set(shard.electionId, []);
    byElection.get(shard.electionId).push(shard);
  }
  const container = $('elections');
  container.innerHTML = '';
  for (const [electionId, shards] of byElection) {
    const block = element('div', 'election');
    block.id = 'election-' + electionId;
    block.appendChild(element('h3', '', (state.titles.get(electionId) || electionId) + ' · ' + shards.length + ' shards'));
    const grid = element('div', 'shards');
    for (const shard of shards.sort((a, b) => a.shard - b.shard)) {
      const cell = element('button', 'shard');
      cell.type = 'button';
      cell.id = 'shard-' + electionId + '-' + shard.shard;
      cell.dataset.key = electionId + '/' + shard.shard;
      cell.dataset.owner = shard.ownerNodeId;
      cell.classList.toggle('selected', cell.dataset.key === state.selected);
      cell.style.setProperty('--node-color', colourOf(shard.ownerNodeId));
      cell.title = 'epoch ' + shard.epoch + (shard.pinned ? ' · pinned by an operator' : '') + ' · click to move it';
      cell.appendChild(element('div', 'n', '#' + shard.shard + (shard.pinned ? ' 📌' : '')));
      cell.appendChild(element('div', 'owner', shard.ownerNodeId));
      // Replicas in other AZs, with their lag in the tooltip (phase, votes behind the owner).
      if (Array.isArray(shard.replicaNodeIds) && shard.replicaNodeIds.length > 0) {
        cell.appendChild(element('div', 'replicas', '+ ' + shard.replicaNodeIds.join(', ')));
        for (const r of shard.replicas || []) {
          cell.title += ' · replica ' + r.nodeId + ': ' + r.phase + (r.votesBehind === null ? '' : ', ' + r.votesBehind + ' votes behind');
        }
      }
      if (shard.leaseNodeId !== null && shard.leaseNodeId !== shard.ownerNodeId) cell.appendChild(element('div', 'moving', 'from ' + shard.leaseNodeId));
      cell.addEventListener('click', () => selectShard(electionId, shard.shard));
      grid.appendChild(cell);
    }
    block.appendChild(grid);
    container.appendChild(block);
  }
  fillSelect($('move-election'), [...byElection.keys()].map((id) => [id, state.titles.get(id) || id]));
  fillSelect($('move-node'), cluster.nodes.filter((n) => n.status === 'alive' && !n.draining).map((n) => [n.nodeId, n.nodeId + ' (AZ ' + n.az + ')']));
}

/** Replaces a select's options only when they changed, keeping the operator's choice. */
function fillSelect(select, options) {
  const wanted = JSON.stringify(options);
  if (select.dataset.options === wanted) return;
  const chosen = select.value;
  select.innerHTML = '';
  for (const [value, label] of options) {
    const option = element('option', '', label);
    option.value = value;
    select.appendChild(option);
  }
  if (options.some(([value]) => value === chosen)) select.value = chosen;
  select.dataset.options = wanted;
}

function renderOperations(operations) {
  const body = $('operations');
  body.innerHTML = '';
  $('no-operations').classList.toggle('hidden', operations.length > 0);
  for (const operation of operations) {
    const row = element('tr', operation.status);
    row.id = 'op-' + operation.operationId;
    row.dataset.status = operation.status;
    row.dataset.kind = operation.kind;
    row.appendChild(element('td', 'num', String(operation.operationId)));
    row.appendChild(element('td', 'op-what', describeRequest(operation.request)));
    row.appendChild(element('td', 'op-status', operation.status));
    const progress = element('td', 'num op-progress');
    const bar = element('div', 'progress');
    const fill = element('div');
    fill.style.width = (operation.shardsTotal > 0 ? (100 * operation.shardsMoved) / operation.shardsTotal : operation.status === 'done' ? 100 : 0).toFixed(0) + '%';
    bar.appendChild(fill);
    progress.appendChild(bar);
    progress.appendChild(document.createTextNode(operation.shardsMoved + '/' + operation.shardsTotal + ' shards'));
    row.appendChild(progress);
    row.appendChild(element('td', 'num', new Date(operation.requestedAt).toLocaleTimeString()));
    const took = operation.finishedAt ? ((Date.parse(operation.finishedAt) - Date.parse(operation.requestedAt)) / 1000).toFixed(1) + ' s' : '';
    row.appendChild(element('td', 'num', took));
    row.appendChild(element('td', 'op-error', operation.error || ''));
    body.appendChild(row);
  }
}

// --- polling -------------------------------------------------------------------------------

async function loadTitles() {
  // Titles make the map readable; the map itself does not need them, so a failure is not shown.
  if (Date.now() - state.titlesReadAtMs < 10 * pollIntervalMs) return;
  state.titlesReadAtMs = Date.now();
  try {
    const { elections } = await call('/elections');
    for (const election of elections) state.titles.set(election.electionId, election.title);
  } catch {
    // next time
  }
}

async function poll() {
  const [cluster, { operations }] = await Promise.all([call('/admin/cluster'), call('/admin/cluster/operations?limit=' + operationsShown), loadTitles()]);
  if (!state.polling) return;
  renderNodes(cluster);
  renderShards(cluster);
  renderOperations(operations);
  $('poll-status').textContent = 'updated ' + new Date().toLocaleTimeString();
}

async function pollLoop() {
  if (!state.polling) return;
  try {
    await poll();
  } catch (error) {
    $('poll-status').textContent = 'Could not refresh (' + error.message + '); retrying…';
  }
  if (state.polling) state.pollTimer = setTimeout(pollLoop, pollIntervalMs);
}

startSession({
  roles: ['admin'],
  notAllowed: (role) => 'This account is a ' + role + ': the ops page is for admins.',
  onLive: async () => {
    state.polling = true;
    clearTimeout(state.pollTimer);
    await pollLoop();
  },
  onStop: () => {
    state.polling = false;
    clearTimeout(state.pollTimer);
    $('azs').innerHTML = '';
    $('elections').innerHTML = '';
    $('operations').innerHTML = '';
    showActionError(null);
  },
});
