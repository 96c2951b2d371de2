// The console's entry point: who is logged in, the hash router, and the live connection.
import { ApiError, apiKey, connection, get } from './api.js';
import { $, replace, h } from './dom.js';
import * as live from './live.js';
import * as clusterView from './cluster.js';
import * as jobsView from './jobs.js';
import * as jobView from './job.js';
import * as formView from './form.js';
import * as dlqView from './dlq.js';

// Hash routes: #/cluster, #/jobs?…, #/jobs/<id>, #/jobs/<id>/edit, #/new, #/dlq
const ROUTES = [
  [/^#\/jobs\/([^/?]+)\/edit$/, (m) => ['jobs', formView, { jobId: decodeURIComponent(m[1]) }]],
  [/^#\/jobs\/([^/?]+)$/, (m) => ['jobs', jobView, { jobId: decodeURIComponent(m[1]) }]],
  [/^#\/jobs(\?.*)?$/, (m) => ['jobs', jobsView, { query: new URLSearchParams((m[1] || '').slice(1)) }]],
  [/^#\/new$/, () => ['new', formView, {}]],
  [/^#\/dlq$/, () => ['dlq', dlqView, {}]],
  [/^(#\/cluster)?$|^#?\/?$/, () => ['cluster', clusterView, {}]],
];

export const session = { whoami: null };
let current = { cleanup: null, hash: null };

function route() {
  const hash = location.hash || '#/cluster';
  for (const [pattern, pick] of ROUTES) {
    const match = hash.match(pattern);
    if (!match) continue;
    let picked;
    try {
      picked = pick(match);
    } catch (error) {
      if (!(error instanceof URIError)) throw error;
      break; // a malformed escape (#/jobs/%E0%A4%A): no page of ours
    }
    show(...picked, hash);
    return;
  }
  notFound();
}

function notFound() {
  if (current.cleanup) current.cleanup();
  current = { cleanup: null, hash: null };
  for (const a of document.querySelectorAll('[data-nav]')) a.classList.remove('active');
  replace($('#view'), h('p', { id: 'not-found' }, 'No such page. ', h('a', { href: '#/cluster' }, 'Back to the cluster.')));
}

function show(nav, view, params, hash) {
  if (current.cleanup) current.cleanup();
  for (const a of document.querySelectorAll('[data-nav]')) a.classList.toggle('active', a.dataset.nav === nav);
  const root = $('#view');
  root.replaceChildren();
  current = { hash, cleanup: view.render(root, { ...params, session }) || null };
}

async function identify() {
  try {
    session.whoami = await get('/api/v1/whoami');
  } catch (error) {
    if (error instanceof ApiError && error.status === 401) return false;
    throw error;
  }
  const who = session.whoami;
  $('#whoami').textContent = who.auth ? `team ${who.team} · ${who.role} · key ${who.key_id}` : `team ${who.team} (auth off)`;
  $('#logout').hidden = !who.auth;
  return true;
}

function askForKey(message = '') {
  const dialog = $('#login');
  $('#login-error').textContent = message;
  if (!dialog.open) dialog.showModal();
  $('#api-key').focus();
}

async function logIn() {
  const key = $('#api-key').value.trim();
  if (!key) return;
  apiKey.set(key);
  if (await identify()) {
    $('#login').close();
    $('#api-key').value = '';
    live.restart();
    route();
  } else {
    apiKey.clear();
    askForKey('That key is unknown or revoked.');
  }
}

function logOut() {
  live.stop(); // the stream was opened with the key that is going
  apiKey.clear();
  session.whoami = null;
  $('#whoami').textContent = '';
  if (current.cleanup) current.cleanup();
  current = { cleanup: null, hash: null };
  $('#view').replaceChildren();
  askForKey();
}

async function boot() {
  connection.onUnauthorized = () => askForKey(apiKey.get() ? 'The key was refused (revoked?).' : '');
  $('#login-submit').addEventListener('click', logIn);
  $('#api-key').addEventListener('keydown', (e) => { if (e.key === 'Enter') logIn(); });
  $('#login').addEventListener('cancel', (e) => e.preventDefault()); // no data without a key
  $('#logout').addEventListener('click', logOut);
  window.addEventListener('hashchange', route);
  live.start();
  if (await identify()) route();
  else askForKey();
}

boot().catch((error) => {
  replace($('#view'), h('p', { class: 'error' }, `The console could not start: ${error.message}`));
});
