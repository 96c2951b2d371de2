// One job: its definition, the schedule in words and its next five fires, pause / resume /
// run now / edit / delete (each confirmed first), its execution history and a chart of delay
// and duration. New executions arrive live and are added at the top.
import { ApiError, api, describeError, enc, get } from './api.js';
import { drawChart } from './chart.js';
import { badge, confirmAction, h, ms, replace, throttle, time, toast } from './dom.js';
import { on } from './live.js';

const HISTORY = 100;
const CALLED = new Set(['succeeded', 'failed', 'timed_out', 'unknown']);
// Charted: first attempts of scheduled fires that called the webhook. A retry's delay holds its
// backoff, and an `unknown` outcome has no real start: both would bury the delays that matter.
const CHARTED = new Set(['succeeded', 'failed', 'timed_out']);
const STATS_WINDOW_S = 86400;

export function render(root, { jobId }) {
  const path = `/api/v1/jobs/${enc(jobId)}`;
  const el = elements(jobId);
  const history = new History(el);

  const loadJob = async () => {
    let job;
    try {
      job = await get(`${path}?preview=true`);
    } catch (error) {
      if (error instanceof ApiError && error.status === 404) gone(root, jobId);
      else el.error.textContent = describeError(error);
      return;
    }
    el.error.textContent = '';
    if (!el.title.isConnected) replace(root, ...layout(el)); // shown as gone, then it came (a lagging node)
    drawJob(el, job);
    replace(el.actions, ...actionButtons(job, act));
  };
  const loadHistory = async () => {
    try {
      const [rows, stats] = await Promise.all([get(`${path}/executions?limit=${HISTORY}`),
        get(`${path}/stats?window=${STATS_WINDOW_S}`)]);
      history.reset(rows.executions);
      el.stats.textContent = statsText(stats);
    } catch (error) {
      if (!(error instanceof ApiError && error.status === 404)) el.error.textContent = describeError(error);
    }
  };
  const act = async (verb, request, success) => {
    try {
      await request();
      toast(success);
      if (verb === 'delete') location.hash = '#/jobs';
      else loadJob();
    } catch (error) {
      if (!(error instanceof Cancelled)) toast(describeError(error), 'bad');
    }
  };

  root.append(...layout(el));
  const reloadJob = throttle(loadJob, 1500);
  const reloadAll = throttle(() => { loadJob(); loadHistory(); }, 2000);
  const redraw = throttle(() => history.draw(), 250);
  window.addEventListener('resize', redraw);
  const offs = [
    on('executions', (event) => {
      const mine = event.executions.filter((x) => x.job_id === jobId);
      if (mine.length) { history.add(mine); reloadJob(); }
    }),
    on('jobs', (event) => { if (event.many || event.ids.includes(jobId)) reloadJob(); }),
    on('resync', reloadAll),
    on('poll', reloadAll),
  ];
  loadJob();
  loadHistory();
  return () => {
    offs.forEach((off) => off());
    [reloadJob, reloadAll, redraw].forEach((f) => f.cancel());
    window.removeEventListener('resize', redraw);
  };
}

function elements(jobId) {
  const chart = document.createElementNS('http://www.w3.org/2000/svg', 'svg');
  chart.setAttribute('class', 'chart');
  chart.id = 'job-chart';
  return {
    title: h('h1', { id: 'job-title' }, h('span', { class: 'mono' }, jobId), h('span', { id: 'job-state' })),
    actions: h('div', { class: 'actions', id: 'job-actions' }),
    words: h('p', { id: 'job-words' }),
    next: h('ol', { id: 'job-next-fires', class: 'mono' }),
    stats: h('p', { id: 'job-stats', class: 'muted' }),
    registration: h('p', { id: 'job-registration', class: 'muted' }),
    definition: h('pre', { id: 'job-def' }),
    chart,
    rows: h('tbody'),
    error: h('p', { class: 'error' }),
  };
}

function layout(el) {
  const legend = h('div', { class: 'legend' },
    h('span', {}, h('span', { class: 'swatch sw-delay' }), 'delay (start − scheduled)'),
    h('span', {}, h('span', { class: 'swatch sw-duration' }), 'duration'), h('span', {}, '● failed call'));
  const columns = ['Scheduled', 'Status', 'Node', 'Attempt', 'Delay', 'Duration', 'HTTP', 'Triggered by', 'Error'];
  return [el.title, el.actions, el.error,
    h('div', { class: 'grid' },
      h('div', { class: 'panel' }, h('h2', {}, 'Schedule'), el.words, h('div', { class: 'muted' }, 'Next fires'),
        el.next, el.stats, el.registration),
      h('div', { class: 'panel' }, h('h2', {}, 'Delay and duration of the last calls'), legend, el.chart)),
    h('div', { class: 'panel' }, h('h2', {}, 'Executions'), h('table', { id: 'executions' },
      h('thead', {}, h('tr', {}, columns.map((t) => h('th', {}, t)))), el.rows)),
    h('details', { class: 'panel', id: 'job-def-panel' }, h('summary', {}, 'Definition (JSON, as the API returns it)'),
      el.definition)];
}

function gone(root, jobId) {
  replace(root, h('h1', {}, jobId), h('p', { id: 'job-gone' }, 'This job does not exist (any more). ',
    h('a', { href: '#/jobs' }, 'Back to the jobs.')));
}

// The executions shown: the last HISTORY, newest first; those pushed live are marked fresh.
class History {
  constructor(el) {
    this.el = el;
    this.rows = new Map(); // execution key → record
  }

  reset(executions) {
    this.rows.clear();
    this.put(executions, false);
  }

  add(executions) {
    this.put(executions, true);
  }

  put(executions, fresh) {
    const key = (x) => `${x.fire_id}/${x.attempt}/${x.status}/${x.committed_at}`;
    for (const x of executions) this.rows.set(key(x), { ...x, fresh });
    this.sorted().slice(HISTORY).forEach((x) => this.rows.delete(key(x)));
    this.draw();
  }

  sorted() {
    return [...this.rows.values()].sort((a, b) => (b.committed_at || '').localeCompare(a.committed_at || ''));
  }

  draw() {
    const rows = this.sorted();
    replace(this.el.rows, ...(rows.length ? rows.map(executionRow)
      : [h('tr', {}, h('td', { colspan: 9, class: 'muted' }, 'No execution yet.'))]));
    drawChart(this.el.chart, chartPoints(rows));
  }
}

function actionButtons(job, act) {
  const path = `/api/v1/jobs/${enc(job.id)}`;
  const button = (id, text, cls, onclick) => h('button', { id, type: 'button', class: cls, onclick }, text);
  const pause = button('job-pause', 'Pause', '', async () => {
    if (await confirmAction(`Pause ${job.id}? It will not fire until it is resumed.`, 'Pause')) {
      act('pause', () => api('POST', `${path}/pause`), `${job.id} paused`);
    }
  });
  const resume = button('job-resume', 'Resume', 'primary', async () => {
    if (await confirmAction(`Resume ${job.id}? It fires again from its next scheduled time.`, 'Resume')) {
      act('resume', () => api('POST', `${path}/resume`), `${job.id} resumed`);
    }
  });
  const trigger = button('job-trigger', 'Run now', '', async () => {
    if (!(await confirmAction(`Run ${job.id} now, once, outside its schedule?`, 'Run now'))) return;
    act('trigger', () => runNow(path, job.id), `${job.id} triggered`);
  });
  const remove = button('job-delete', 'Delete', 'danger', async () => {
    if (!(await confirmAction(`Delete ${job.id}? Its schedule and history are removed for good.`, 'Delete'))) return;
    act('delete', () => deleteJob(path, job.id), `${job.id} deleted`);
  });
  const edit = h('a', { id: 'job-edit', href: `#/jobs/${enc(job.id)}/edit` }, h('button', { type: 'button' }, 'Edit'));
  return [job.paused ? resume : pause, trigger, edit, remove];
}

class Cancelled extends Error {}

// 409: a run is in progress (trigger) or other jobs depend on this one (delete): ask again.
async function runNow(path, id) {
  try {
    await api('POST', `${path}/trigger`, { body: {} });
  } catch (error) {
    if (!(error instanceof ApiError && error.status === 409)) throw error;
    if (!(await confirmAction(`${error.message}. Run ${id} anyway?`, 'Run anyway'))) throw new Cancelled();
    await api('POST', `${path}/trigger`, { body: { force: true } });
  }
}

async function deleteJob(path, id) {
  try {
    await api('DELETE', path);
  } catch (error) {
    if (!(error instanceof ApiError && error.status === 409)) throw error;
    if (!(await confirmAction(`${error.message}. Delete ${id} anyway?`, 'Delete anyway'))) throw new Cancelled();
    await api('DELETE', `${path}?force=true`);
  }
}

function drawJob(el, job) {
  const state = job.registration?.orphaned ? 'orphaned' : job.paused ? 'paused' : 'active';
  replace(el.title.querySelector('#job-state'), badge(state));
  const preview = job.schedule_preview;
  el.words.textContent = job.schedule === null ? `Runs after ${job.depends_on.join(', ')} (${job.trigger_rule})`
    : `${preview?.description || job.schedule} — ${job.schedule} (${job.timezone})`;
  replace(el.next, ...(preview?.next || []).map((at) => h('li', {}, time(at))));
  const { schedule_preview: _, ...definition } = job;
  el.definition.textContent = JSON.stringify(definition, null, 2);
  el.registration.textContent = registrationText(job.registration, job.schedule);
}

// A service's job (POST /api/v1/registrations): who declared it, and whether an operator's
// schedule overrides the declared one.
function registrationText(r, schedule) {
  if (!r) return '';
  const override = r.schedule_override ? ` An operator's schedule (${schedule}) overrides it.` : '';
  const orphaned = r.orphaned ? ' The service no longer declares it (orphaned).' : '';
  const about = r.description ? `: ${r.description}` : '';
  return `Registered by service ${r.service} as ${r.name}${about}. Declared schedule: ${r.default_schedule ?? 'none'}.`
    + override + orphaned;
}

function executionRow(x) {
  return h('tr', { class: x.fresh ? 'fresh' : '', dataset: { fire: x.fire_id, attempt: String(x.attempt) } },
    h('td', {}, time(x.scheduled_at)),
    h('td', { class: 'status' }, badge(x.status)),
    h('td', {}, x.node || '—'),
    h('td', { class: 'num' }, x.attempt),
    h('td', { class: 'num' }, CALLED.has(x.status) ? ms(delayOf(x)) : '—'),
    h('td', { class: 'num' }, CALLED.has(x.status) ? ms(x.duration_ms) : '—'),
    h('td', { class: 'num' }, x.http_status ?? '—'),
    h('td', { class: 'mono' }, x.triggered_by),
    h('td', { class: 'error' }, x.error || x.reason || ''));
}

const delayOf = (x) => Math.max(0, Date.parse(x.started_at) - Date.parse(x.scheduled_at));

function chartPoints(rows) {
  return rows.filter((x) => CHARTED.has(x.status) && x.trigger === 'schedule' && x.attempt === 1).reverse()
    .map((x) => ({ t: Date.parse(x.scheduled_at), delay: delayOf(x), duration: x.duration_ms, status: x.status }));
}

function statsText(s) {
  if (!s.attempts) return 'No calls in the last 24 h.';
  const rate = s.success_rate === null ? '—' : `${(100 * s.success_rate).toFixed(1)}%`;
  return `Last 24 h: ${s.attempts} calls, ${rate} succeeded, duration p50 ${ms(s.duration_ms.p50)}, `
    + `p95 ${ms(s.duration_ms.p95)}, max ${ms(s.duration_ms.max)}.`;
}
