// The API client. One node at a time serves the console's calls (`connection.base`); live.js
// moves it to another node when that one stops answering. The API key, if the cluster needs
// one, is kept in this tab's sessionStorage only, and sent as a Bearer token.

const KEY_ITEM = 'schedb.api_key';
const TIMEOUT_MS = 8000;
const READY_TIMEOUT_MS = 1500; // the check that the node still answers, after a call failed

export const connection = {
  base: location.origin,
  nodeId: null,
  // Set by live.js: called when a call to `base` failed at the network level.
  onUnreachable: () => {},
  onUnauthorized: () => {},
};

export class ApiError extends Error {
  constructor(status, problem) {
    super(problem.detail || problem.title || `HTTP ${status}`);
    this.status = status;
    this.problem = problem;
    this.fieldErrors = Array.isArray(problem.errors) ? problem.errors : [];
  }
}

export class Unreachable extends Error {}

export const apiKey = {
  get: () => sessionStorage.getItem(KEY_ITEM) || '',
  set: (key) => sessionStorage.setItem(KEY_ITEM, key),
  clear: () => sessionStorage.removeItem(KEY_ITEM),
};

export function authHeaders(extra = {}) {
  const key = apiKey.get();
  return key ? { ...extra, Authorization: `Bearer ${key}` } : { ...extra };
}

// One call to one node; a network failure raises Unreachable (no automatic retry: a write
// may have committed before the node died, and the operator decides whether to repeat it).
export async function callNode(base, method, path, { body, headers = {}, timeoutMs = TIMEOUT_MS } = {}) {
  const init = { method, headers: authHeaders(headers), signal: AbortSignal.timeout(timeoutMs), cache: 'no-store' };
  // A state-changing call without a JSON body (pause, delete) must say it comes from a client:
  // the API refuses what a foreign web page could send unasked (schedb/api/cors.py).
  if (method !== 'GET') init.headers['X-Schedb-Client'] = 'console';
  if (body !== undefined) {
    init.body = JSON.stringify(body);
    init.headers['Content-Type'] = 'application/json';
  }
  let response;
  try {
    response = await fetch(base + path, init);
  } catch (error) {
    throw new Unreachable(`${base} did not answer (${error.name})`);
  }
  if (response.status === 204) return { data: null, response };
  const type = response.headers.get('Content-Type') || '';
  const data = type.includes('json') ? await response.json().catch(() => ({})) : {};
  if (response.status === 401) connection.onUnauthorized();
  if (!response.ok) throw new ApiError(response.status, data);
  return { data, response };
}

// A call to the console's current node. One slow or lost call is not a dead node: the console
// moves (live.js's failover) only if the node does not answer /ready either. Reads are tried
// once more after a move.
export async function api(method, path, options = {}) {
  const base = connection.base;
  try {
    return (await callNode(base, method, path, options)).data;
  } catch (error) {
    if (!(error instanceof Unreachable)) throw error;
    let moved = connection.base !== base; // moved meanwhile (the event stream noticed first)
    if (!moved) {
      if (await answers(base)) throw error;
      moved = await connection.onUnreachable();
    }
    if (!moved || method !== 'GET') throw error;
    return (await callNode(connection.base, method, path, options)).data;
  }
}

// Does the node at `origin` answer `path` (/ready: caught up with a leader; /health: alive)?
export async function answers(origin, path = '/ready', timeoutMs = READY_TIMEOUT_MS) {
  try {
    const response = await fetch(origin + path, { signal: AbortSignal.timeout(timeoutMs), cache: 'no-store' });
    return response.ok;
  } catch {
    return false;
  }
}

export const get = (path) => api('GET', path);

export function query(params) {
  const search = new URLSearchParams();
  for (const [key, value] of Object.entries(params)) {
    if (value !== undefined && value !== null && value !== '') search.set(key, value);
  }
  const text = search.toString();
  return text ? `?${text}` : '';
}

export const enc = encodeURIComponent;

// The text of an error for a toast: the problem's detail, with the fields at fault.
export function describeError(error) {
  if (error instanceof ApiError) {
    const fields = error.fieldErrors.map((e) => `${e.field || 'body'}: ${e.message}`).join('; ');
    return fields && !error.message.includes(fields) ? `${error.message} (${fields})` : error.message;
  }
  return error.message || String(error);
}
