// Live updates and failover.
//
// The console listens to GET /api/v1/events (Server-Sent Events, read with fetch so the API key
// can go in a header). Views subscribe with on(type, fn) to: cluster, executions, jobs,
// dead_letters, circuit, resync (fetch again everything shown), poll (polling mode's tick) and node
// (the console moved to another node).
//
// When the stream breaks: if the node still answers /ready, the stream is opened again (after
// three failures in a row the console polls every few seconds instead, and tries the stream
// again later); if the node does not answer, the console moves to another node it learnt
// from the cluster view, shows that in the banner, and carries on there.
// `?transport=poll` in the page URL forces polling (for proxies that buffer event streams).
import { answers, authHeaders, connection } from './api.js';
import { $ } from './dom.js';

const bus = new EventTarget();
const POLL_MS = 3000;
const RECONNECT_MS = 1000;
const STREAM_RETRY_MS = 30000;
const SILENCE_MS = 25000; // the server pings every 10 s: this long without a byte means a dead node

const link = {
  nodes: new Map(), // node id → origin, from the cluster view
  stream: null, // the AbortController of the open stream
  failures: 0,
  pollTimer: null,
  failing: null,
  forcePoll: new URLSearchParams(location.search).get('transport') === 'poll',
};

export function on(type, fn) {
  const handler = (event) => fn(event.detail);
  bus.addEventListener(type, handler);
  return () => bus.removeEventListener(type, handler);
}

function emit(type, detail = {}) {
  bus.dispatchEvent(new CustomEvent(type, { detail }));
}

export function knownNodes() {
  return [...link.nodes.entries()].map(([id, origin]) => ({ id, origin }));
}

export function start() {
  connection.onUnreachable = failover;
  connect();
}

// Open the stream again, e.g. after logging in with a key.
export function restart() {
  stop();
  connect();
}

// Close the stream and stop polling (logging out).
export function stop() {
  stopStream();
  stopPolling();
  setMode('connecting', 'logged out');
}

function connect() {
  if (link.forcePoll) startPolling();
  else openStream();
}

function setMode(mode, text) {
  const el = $('#conn');
  el.dataset.state = mode;
  const node = connection.nodeId || new URL(connection.base).host;
  el.textContent = text || { live: `live · ${node}`, polling: `polling · ${node}`, connecting: 'connecting…' }[mode];
}

function stopStream() {
  const stream = link.stream;
  link.stream = null;
  if (stream) stream.abort();
}

async function openStream() {
  stopStream();
  const controller = new AbortController();
  link.stream = controller;
  let response;
  try {
    response = await fetch(`${connection.base}/api/v1/events`, {
      headers: authHeaders({ Accept: 'text/event-stream' }), signal: controller.signal, cache: 'no-store',
    });
  } catch {
    if (link.stream === controller) streamLost();
    return;
  }
  if (response.status === 401) {
    connection.onUnauthorized();
    return;
  }
  if (!response.ok || !response.body) {
    if (link.stream === controller) streamLost();
    return;
  }
  stopPolling();
  await readStream(response.body, controller);
  if (link.stream === controller) streamLost();
}

async function readStream(body, controller) {
  const reader = body.pipeThrough(new TextDecoderStream()).getReader();
  let buffer = '';
  let watchdog = setTimeout(() => controller.abort(), SILENCE_MS);
  try {
    for (;;) {
      const { value, done } = await reader.read();
      if (done) break;
      clearTimeout(watchdog);
      watchdog = setTimeout(() => controller.abort(), SILENCE_MS);
      buffer += value;
      let end;
      while ((end = buffer.indexOf('\n\n')) >= 0) {
        handleFrame(buffer.slice(0, end));
        buffer = buffer.slice(end + 2);
      }
    }
  } catch {
    // aborted or the connection dropped: the caller decides what next
  } finally {
    clearTimeout(watchdog);
  }
}

function handleFrame(frame) {
  const data = frame.split('\n').filter((l) => l.startsWith('data:')).map((l) => l.slice(5).trimStart()).join('\n');
  if (!data) return; // a ping, or the retry hint
  const event = JSON.parse(data);
  if (event.type === 'unauthorized') {
    connection.onUnauthorized();
    return;
  }
  if (event.type === 'hello') {
    link.failures = 0;
    learn(event.cluster);
    setMode('live');
    emit('cluster', event);
    emit('resync'); // whatever happened while the console was not listening
    return;
  }
  if (event.type === 'cluster') learn(event.cluster);
  emit(event.type, event);
}

function learn(cluster) {
  if (!cluster) return;
  connection.nodeId = cluster.node_id;
  for (const member of cluster.members || []) {
    if (member.node_id && member.http_addr) link.nodes.set(member.node_id, originOf(member.http_addr));
  }
}

// A member's http address as the browser can reach it: a wildcard listen address means
// "this host", so the host the page came from is used with the member's port.
export function originOf(httpAddr) {
  const colon = httpAddr.lastIndexOf(':');
  let host = httpAddr.slice(0, colon);
  if (['0.0.0.0', '::', '[::]', ''].includes(host)) host = location.hostname;
  return `${location.protocol}//${host}:${httpAddr.slice(colon + 1)}`;
}

async function streamLost() {
  link.stream = null;
  setMode('connecting');
  if (await answers(connection.base)) {
    link.failures += 1;
    if (link.failures >= 3) {
      startPolling();
      setTimeout(() => { if (!link.stream && !link.failing) openStream(); }, STREAM_RETRY_MS);
    } else {
      setTimeout(openStream, RECONNECT_MS);
    }
    return;
  }
  await failover();
}

function startPolling() {
  stopPolling();
  setMode('polling');
  const tick = async () => {
    try {
      const response = await fetch(`${connection.base}/api/v1/cluster`, { headers: authHeaders(), cache: 'no-store' });
      if (response.status === 401) connection.onUnauthorized();
      else if (response.ok) {
        const cluster = await response.json();
        learn(cluster);
        setMode('polling');
        emit('cluster', { cluster });
        emit('poll');
      }
    } catch {
      failover();
    }
  };
  tick();
  link.pollTimer = setInterval(tick, POLL_MS);
}

function stopPolling() {
  clearInterval(link.pollTimer);
  link.pollTimer = null;
}

// Resolves true once the console talks to another node (false: it is back on the same one).
export function failover() {
  if (!link.failing) link.failing = moveToAnotherNode().finally(() => { link.failing = null; });
  return link.failing;
}

async function moveToAnotherNode() {
  const lost = { id: connection.nodeId, base: connection.base };
  stopStream();
  stopPolling();
  setMode('down', `${lost.id || new URL(lost.base).host} unreachable`);
  for (let round = 0; ; round += 1) {
    // Other nodes first; the lost one last, in case it comes back. After a few rounds a node
    // that answers at all (/health) will do: with no quorum, none is ready.
    const candidates = [...knownNodes().filter((n) => n.origin !== lost.base), { id: lost.id, origin: lost.base }];
    for (const node of candidates) {
      if (await answers(node.origin, round < 5 ? '/ready' : '/health')) {
        arrive(lost, node);
        return node.origin !== lost.base;
      }
    }
    await new Promise((resolve) => setTimeout(resolve, Math.min(1000 + round * 250, 5000)));
  }
}

function arrive(lost, node) {
  connection.base = node.origin;
  connection.nodeId = node.id;
  if (node.origin !== lost.base) {
    const banner = $('#banner');
    banner.textContent = `Node ${lost.id || lost.base} (${lost.base}) stopped answering at `
      + `${new Date().toLocaleTimeString()}; the console now talks to ${node.id} (${node.origin}).`;
    banner.hidden = false;
    emit('node', { from: lost, to: node });
  }
  link.failures = 0;
  connect(); // its hello (or the first poll) makes the views fetch afresh
}
