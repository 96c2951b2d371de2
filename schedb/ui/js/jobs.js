// The job list: filtered, sorted and paginated by the server (GET /api/v1/jobs), 50 at a time,
// so 10,000 jobs cost the page no more than 50. The filters live in the URL (#/jobs?q=…), so a
// filtered list can be bookmarked or shared.
import { describeError, get, query } from './api.js';
import { badge, debounce, h, number, relative, replace, throttle } from './dom.js';
import { on } from './live.js';

const PAGE = 50;
const NEXT_WINDOWS = { '': 'any time', '1m': 'within 1 min', '1h': 'within 1 h', '24h': 'within 24 h' };
const WINDOW_MS = { '1m': 60e3, '1h': 3600e3, '24h': 86400e3 };
const FILTERS = ['q', 'team', 'tag', 'status', 'next', 'sort'];

export function render(root, { query: params }) {
  const filters = Object.fromEntries(FILTERS.map((k) => [k, params.get(k) || '']));
  // cursors: the `after` of each page up to the one shown; wanted: those of the page asked for
  // last (committed to cursors when its answer comes). loading: the operator moved to another
  // page or filter and its answer has not come yet (Previous and Next wait for it). ticket:
  // the number of the newest request; an older answer arriving after it is dropped.
  const page = { cursors: [''], wanted: [''], nextCursor: null, shown: new Set(), loading: false, ticket: 0 };
  const el = elements();

  const load = async (cursors = page.wanted) => {
    const ticket = ++page.ticket;
    page.wanted = cursors;
    const started = performance.now();
    let answer;
    try {
      answer = await get(`/api/v1/jobs${query({ ...apiFilters(filters), limit: PAGE, total: 'true', after: cursors.at(-1) })}`);
    } catch (error) {
      if (ticket !== page.ticket) return;
      el.error.textContent = describeError(error);
      page.wanted = page.cursors; // still on the page shown
      settle(page, el, false);
      return;
    }
    if (ticket !== page.ticket) return; // a newer filter or page was asked for meanwhile
    page.cursors = cursors;
    showPage(page, el, answer, started);
    settle(page, el, false);
  };
  const move = (cursors) => {
    settle(page, el, true);
    load(cursors);
  };
  const refilter = () => {
    history.replaceState(null, '', `#/jobs${query(filters)}`);
    move(['']);
  };
  const typed = debounce(refilter, 250);

  // A double click is one move: its second click (detail 2) is dropped even when the first
  // page's answer came back between the two clicks and enabled the button again.
  const single = (action) => (event) => { if (event.detail <= 1) action(); };
  el.prev.addEventListener('click', single(() => move(page.cursors.slice(0, -1))));
  el.next.addEventListener('click', single(() => move([...page.cursors, page.nextCursor])));
  root.append(
    h('h1', {}, 'Jobs', h('a', { href: '#/new', class: 'badge' }, '+ New job')),
    filterBar(filters, typed, refilter),
    el.error,
    h('table', { id: 'jobs' }, h('thead', {}, h('tr', {},
      ['Job', 'Status', 'Schedule', 'Time zone', 'Next fire', 'Team', 'Tags'].map((t) => h('th', {}, t)))), el.rows),
    h('div', { class: 'pager' }, el.prev, el.next, el.count, el.timing),
  );

  // Live: a change to a job shown (or a new one, which may belong on this page) reloads the
  // page, at most once a second; an execution moves a shown job's next fire.
  const reload = throttle(() => load(), 1000);
  const offs = [
    on('jobs', () => reload()),
    on('executions', (event) => { if (event.executions.some((x) => page.shown.has(x.job_id))) reload(); }),
    on('resync', reload), on('poll', reload),
  ];
  move(['']);
  return () => { offs.forEach((off) => off()); reload.cancel(); typed.cancel(); };
}

function elements() {
  return {
    rows: h('tbody'),
    count: h('span', { id: 'jobs-count' }, '…'),
    timing: h('span', { id: 'jobs-timing', class: 'muted' }),
    prev: h('button', { id: 'jobs-prev', type: 'button', disabled: true }, '‹ Previous'),
    next: h('button', { id: 'jobs-next', type: 'button', disabled: true }, 'Next ›'),
    error: h('p', { class: 'error', id: 'jobs-error' }),
  };
}

// The newest answer drawn: its rows, "51–100 of 10,000", how long it took.
function showPage(page, el, answer, started) {
  const fetched = performance.now();
  el.error.textContent = '';
  page.shown = new Set(answer.jobs.map((j) => j.id));
  page.nextCursor = answer.next_after || null;
  const now = Date.now();
  replace(el.rows, ...(answer.jobs.length ? answer.jobs.map((job) => jobRow(job, now))
    : [h('tr', {}, h('td', { colspan: 7, class: 'muted' }, 'No job matches.'))]));
  const first = (page.cursors.length - 1) * PAGE;
  el.count.textContent = answer.jobs.length
    ? `${number(first + 1)}–${number(first + answer.jobs.length)} of ${number(answer.total)}` : `0 of ${number(answer.total)}`;
  const drawn = performance.now();
  el.timing.textContent = `loaded in ${Math.round(drawn - started)} ms (API ${Math.round(fetched - started)} ms)`;
  el.timing.dataset.ms = String(Math.round(drawn - started));
}

// Previous and Next, disabled while a move waits for its answer (a double click would skip a page).
function settle(page, el, loading) {
  page.loading = loading;
  el.prev.disabled = page.loading || page.cursors.length <= 1;
  el.next.disabled = page.loading || !page.nextCursor;
}

function filterBar(filters, typed, refilter) {
  const input = (name, label, attrs = {}) => h('label', {}, label, h('input', {
    id: `job-${name}`, type: 'search', value: filters[name], ...attrs,
    oninput: (e) => { filters[name] = e.target.value.trim(); typed(); },
  }));
  const select = (name, label, options) => h('label', {}, label, h('select', {
    id: `job-${name}`, onchange: (e) => { filters[name] = e.target.value; refilter(); },
  }, Object.entries(options).map(([value, text]) => h('option', { value, selected: value === filters[name] }, text))));
  return h('div', { class: 'filters' },
    input('q', 'Search id', { placeholder: 'part of a job id', size: 24 }),
    input('team', 'Team', { placeholder: 'any', size: 10 }),
    input('tag', 'Tag', { placeholder: 'key:value', size: 14 }),
    select('status', 'Status', { '': 'any', active: 'active', paused: 'paused', orphaned: 'orphaned' }),
    select('next', 'Next fire', NEXT_WINDOWS),
    select('sort', 'Order', { '': 'by id', next_fire: 'by next fire' }));
}

function apiFilters(filters) {
  const span = WINDOW_MS[filters.next];
  return {
    q: filters.q, team: filters.team, tag: filters.tag, status: filters.status, sort: filters.sort,
    next_before: span ? new Date(Date.now() + span).toISOString() : '',
  };
}

function jobState(job) {
  if (job.registration?.orphaned) return 'orphaned';
  return job.paused ? 'paused' : 'active';
}

function jobRow(job, now) {
  const state = jobState(job);
  const tags = Object.entries(job.tags || {}).map(([k, v]) => `${k}:${v}`).join(' ');
  return h('tr', { dataset: { job: job.id } },
    h('td', {}, h('a', { href: `#/jobs/${encodeURIComponent(job.id)}`, class: 'mono' }, job.id)),
    h('td', { class: 'state' }, badge(state)),
    h('td', { class: 'mono' }, job.schedule ?? h('span', { class: 'muted' }, `after ${(job.depends_on || []).join(', ')}`)),
    h('td', {}, job.timezone),
    h('td', { title: job.next_fire_at || '' }, job.next_fire_at ? relative(job.next_fire_at, now) : '—'),
    h('td', {}, job.team),
    h('td', { class: 'mono muted' }, tags));
}
