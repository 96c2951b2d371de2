// The cluster view: the leader, the members with their role, health, connectivity, log index,
// share of the jobs being executed, webhooks in flight and delivery workers; every member's
// circuits that are not closed (schedb.breaker), and the circuit changes the connected node
// pushed (`circuit` events: each node reports its own, the table shows every member's).
// The connected node's view comes with every `cluster` event; each member is also asked for its own view (its role, applied index,
// webhooks in flight, circuits) every few seconds, straight from the browser: a member that does
// not answer is shown as unreachable.
import { ApiError, callNode, connection, describeError, get } from './api.js';
import { badge, h, number, replace, time } from './dom.js';
import { on, originOf } from './live.js';

const MEMBER_POLL_MS = 3000;
const COLUMNS = [
  ['Node'], ['API address'], ['Role', "the member's own view of its role"],
  ['Health', 'does this browser reach the member'], ['Raft link', 'as the node this page talks to sees it'],
  ['Log (applied / commit)', "the member's own indexes"], ['Lag', 'entries behind the leader, as the leader sees it'],
  ['Jobs executing', 'jobs with fires handed to this member now (the lookahead), and its share of them'],
  ['Webhooks in flight', 'calls the member is making now'],
  ['Workers', "delivery worker processes (executor.workers_min–max); 'own loop': the node calls webhooks itself"],
  ['Clock offset', "the member's clock minus the connected node's, measured over HTTP; out of bound it executes nothing"]];
const HISTORY_MAX = 20;
const leaderHistory = []; // {at, from, to, term}, kept for the life of the page
let lastLeader;

function noteLeader(cluster) {
  const leader = cluster.leader?.node_id || null;
  if (lastLeader !== undefined && leader !== lastLeader) {
    leaderHistory.unshift({ at: new Date().toISOString(), from: lastLeader, to: leader, term: cluster.term });
    leaderHistory.length = Math.min(leaderHistory.length, HISTORY_MAX);
  }
  lastLeader = leader;
}
on('cluster', (event) => noteLeader(event.cluster)); // on every page, so no change goes unseen
const circuitHistory = []; // the `circuit` events, newest first, kept for the life of the page
on('circuit', (event) => {
  circuitHistory.unshift({ ...event, at: new Date().toISOString() });
  circuitHistory.length = Math.min(circuitHistory.length, HISTORY_MAX);
});

export function render(root, { session }) {
  const el = {
    cards: h('div', { class: 'cards', id: 'cluster-cards' }),
    members: h('tbody'),
    history: h('ul', { class: 'events', id: 'leader-changes' }),
    circuits: h('tbody', { id: 'circuits' }),
    circuitChanges: h('ul', { class: 'events', id: 'circuit-changes' }),
    error: h('p', { class: 'error' }),
  };
  let cluster = null;
  const own = new Map(); // node id → its own /api/v1/cluster answer, or null when unreachable
  // A key of one team sees its team's numbers, not the cluster's totals (an admin sees those).
  const team = session.whoami && session.whoami.role !== 'admin' ? { name: session.whoami.team } : null;

  root.append(
    h('h1', {}, 'Cluster'), el.cards, el.error,
    h('div', { class: 'panel' }, h('h2', {}, 'Members'),
      h('table', { id: 'members' }, h('thead', {}, h('tr', {},
        COLUMNS.map(([t, title]) => h('th', { title }, t)))), el.members)),
    h('div', { class: 'panel' }, h('h2', {}, 'Leader changes seen by this console'), el.history),
    h('div', { class: 'panel' }, h('h2', {}, 'Circuits open, half-open or failing'),
      h('table', {}, h('thead', {}, h('tr', {}, ['Node', 'Team', 'Target', 'State', 'Failures in a row', 'Open for']
        .map((t) => h('th', {}, t)))), el.circuits)),
    h('div', { class: 'panel' }, h('h2', {}, 'Circuit changes seen by this console'), el.circuitChanges),
  );

  const draw = () => {
    if (!cluster) return;
    drawCards(el.cards, cluster, team);
    replace(el.members, ...cluster.members.map((m) => memberRow(m, cluster, own)));
    replace(el.history, ...(leaderHistory.length ? leaderHistory.map(historyItem)
      : [h('li', { class: 'muted' }, 'No change since this page was opened.')]));
    const circuits = cluster.members.flatMap((m) => ((m.self ? cluster : own.get(m.node_id))?.circuits || [])
      .map((c) => ({ ...c, node: m.node_id })));
    replace(el.circuits, ...(circuits.length ? circuits.map(circuitRow)
      : [h('tr', {}, h('td', { class: 'muted', colspan: 6 }, 'Every circuit is closed.'))]));
    replace(el.circuitChanges, ...(circuitHistory.length ? circuitHistory.map(circuitItem)
      : [h('li', { class: 'muted' }, 'No change since this page was opened.')]));
  };

  const pollMembers = async () => {
    if (!cluster) return;
    if (team) await countTeam(team);
    await Promise.all(cluster.members.map(async (m) => {
      if (!m.node_id) return;
      const origin = m.self ? connection.base : originOf(m.http_addr);
      try {
        own.set(m.node_id, (await callNode(origin, 'GET', '/api/v1/cluster', { timeoutMs: 2000 })).data);
      } catch (error) {
        // A refusal (401, 429…) is an answer: the node is up. Only silence is "unreachable".
        own.set(m.node_id, error instanceof ApiError ? { refused: error.status } : null);
      }
    }));
    draw();
  };

  const offCluster = on('cluster', (event) => {
    cluster = event.cluster;
    el.error.textContent = '';
    draw();
  });
  const offCircuit = on('circuit', draw);
  const timer = setInterval(pollMembers, MEMBER_POLL_MS);
  callNode(connection.base, 'GET', '/api/v1/cluster').then(({ data }) => {
    cluster = cluster || data;
    draw();
    pollMembers();
  }).catch((error) => { el.error.textContent = describeError(error); });
  return () => { offCluster(); offCircuit(); clearInterval(timer); };
}

async function countTeam(team) {
  try {
    const [jobs, letters] = await Promise.all([get('/api/v1/jobs?limit=1&total=true'), get('/api/v1/dlq?limit=1')]);
    Object.assign(team, { jobs: jobs.total, deadLetters: letters.total });
  } catch {
    // shown as unknown until the next poll
  }
}

function drawCards(cards, c, team) {
  const card = (label, value, id) => h('div', { class: 'card' }, h('div', { class: 'label' }, label),
    h('div', { class: 'value', id }, value));
  const counts = team
    ? [card(`Jobs of team ${team.name}`, number(team.jobs), 'job-count'),
      card(`Dead letters of team ${team.name}`, number(team.deadLetters), 'dead-letter-count')]
    : [card('Jobs', number(c.jobs), 'job-count'), card('Fires in hand', number(c.active_fires), 'active-fires'),
      card('Dead letters', number(c.dead_letters), 'dead-letter-count')];
  replace(cards,
    card('Leader', c.leader?.node_id || 'none (election)', 'leader'),
    card('Term', number(c.term), 'term'),
    card('Commit index', number(c.commit_index), 'commit-index'),
    ...counts,
    card('Talking to', c.node_id, 'connected-node'));
}

function memberRow(m, cluster, own) {
  const mine = own.get(m.node_id);
  const reachable = mine !== null;
  const totalAssigned = cluster.members.reduce((sum, x) => sum + (x.jobs_assigned || 0), 0);
  const share = totalAssigned ? `${Math.round((100 * (m.jobs_assigned || 0)) / totalAssigned)}%` : '—';
  const role = mine?.role || m.role;
  const answered = mine && !mine.refused;
  const health = mine === undefined ? badge('…', 'muted') : reachable ? badge('reachable', 'ready') : badge('unreachable', 'down');
  const linkText = m.self ? 'this node' : m.connected ? 'connected' : 'disconnected';
  const lag = lagOf(m, cluster, own);
  return h('tr', { dataset: { node: m.node_id || m.raft_addr } },
    h('td', {}, m.node_id || h('span', { class: 'muted' }, 'joining'), m.draining ? badge('draining', 'paused') : ''),
    h('td', { class: 'mono' }, m.http_addr || '—'),
    h('td', { class: 'role' }, badge(role, role === 'leader' ? 'leader' : '')),
    h('td', { class: 'health' }, health),
    h('td', {}, m.self ? h('span', { class: 'muted' }, linkText) : badge(linkText, m.connected ? 'ready' : 'down')),
    h('td', { class: 'num' }, answered ? `${number(mine.last_applied)} / ${number(mine.commit_index)}` : '—'),
    h('td', { class: 'num' }, lag),
    h('td', { class: 'num' }, `${number(m.jobs_assigned)} (${share})`),
    h('td', { class: 'num in-flight' }, answered ? number(mine.executor.in_flight) : '—'),
    h('td', { class: 'num workers' }, answered ? workersText(mine.executor.workers) : '—'),
    h('td', { class: 'num clock-offset' }, clockOffset(m, cluster)));
}

function clockOffset(m, cluster) {
  if (m.clock_offset_ms === null || m.clock_offset_ms === undefined) return '—';
  const text = `${m.clock_offset_ms > 0 ? '+' : ''}${number(m.clock_offset_ms)} ms`;
  const bound = cluster.clock?.max_offset_ms;
  return bound !== undefined && Math.abs(m.clock_offset_ms) > bound ? badge(text, 'down') : text;
}

// How many log entries a member is behind the leader, as the leader sees it (the leader's
// own answer when the console has it, else the connected node's if it leads).
function lagOf(m, cluster, own) {
  const leaderView = [...own.values()].find((v) => v && v.role === 'leader') || (cluster.role === 'leader' ? cluster : null);
  const entry = leaderView?.members.find((x) => x.node_id === m.node_id);
  if (!entry) return '—';
  return entry.self ? '0' : entry.match_index == null ? '—' : number(Math.max(0, leaderView.commit_index - entry.match_index));
}

function historyItem(change) {
  return h('li', {}, time(change.at), ` leader ${change.from || 'none'} → ${change.to || 'none'}`,
    change.term ? ` (term ${change.term})` : '');
}

function workersText(workers) {
  if (!workers) return h('span', { class: 'muted' }, 'own loop');
  const pids = workers.running.map((w) => `${w.pid}: ${w.in_flight} in flight`).join(', ');
  return h('span', { title: `${workers.min}–${workers.max}; ${pids}` }, number(workers.running.length));
}

const CIRCUIT_KIND = { open: 'down', half_open: 'paused', closed: 'ready' };

function circuitRow(c) {
  return h('tr', { dataset: { target: c.target } },
    h('td', {}, c.node), h('td', {}, c.team), h('td', { class: 'mono' }, c.target),
    h('td', { class: 'state' }, badge(c.state.replace('_', '-'), CIRCUIT_KIND[c.state])),
    h('td', { class: 'num' }, number(c.failures_in_a_row)),
    h('td', { class: 'num' }, c.state === 'open' ? `${c.open_for_s} s more` : '—'));
}

function circuitItem(change) {
  return h('li', {}, time(change.at), ` ${change.node}: circuit of team ${change.team} to `,
    h('span', { class: 'mono' }, change.target), ' ', badge(change.state.replace('_', '-'), CIRCUIT_KIND[change.state]));
}
