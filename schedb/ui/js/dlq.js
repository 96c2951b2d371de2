// Dead letters: fires that failed every attempt. Inspect the last error, replay one or many
// (each replay gets the job's full retry budget again), or drop one.
import { api, describeError, enc, get, query } from './api.js';
import { badge, confirmAction, debounce, h, number, replace, throttle, time, toast } from './dom.js';
import { on } from './live.js';

const STEP = 200; // dead letters shown at first, and added by each "Show more"
const SHOWN_MAX = 1000; // the most GET /api/v1/dlq returns at once (newest first)
const REPLAYS_AT_ONCE = 8;

export function render(root) {
  // picked: fire ids ticked; limit: how many of the newest are asked for; ticket: the newest
  // request (an older answer arriving after it is dropped).
  const view = { picked: new Set(), letters: [], total: 0, filter: '', limit: STEP, ticket: 0 };
  const el = elements();

  const load = async () => {
    const ticket = ++view.ticket;
    let answer;
    try {
      answer = await get(`/api/v1/dlq${query({ limit: view.limit, job_id: view.filter })}`);
    } catch (error) {
      if (ticket === view.ticket) el.error.textContent = describeError(error);
      return;
    }
    if (ticket !== view.ticket) return;
    el.error.textContent = '';
    view.letters = answer.dead_letters;
    view.total = answer.total;
    const present = new Set(view.letters.map((l) => l.fire_id));
    for (const id of [...view.picked]) if (!present.has(id)) view.picked.delete(id);
    draw();
  };
  const draw = () => {
    replace(el.rows, ...(view.letters.length ? view.letters.map((l) => letterRow(l, view.picked, update, inspect))
      : [h('tr', {}, h('td', { colspan: 7, class: 'muted' }, 'No dead letters.'))]));
    showCount(view, el);
    update();
  };
  const update = () => showSelection(view, el);
  const inspect = (letter) => showDetail(el.detail, letter, { replay, drop });
  const replay = async (ids) => {
    if (!(await replayLetters(ids, view.picked))) return;
    el.detail.hidden = true;
    load();
  };
  const drop = async (id) => {
    if (!(await dropLetter(id))) return;
    el.detail.hidden = true;
    load();
  };

  el.replay.addEventListener('click', () => replay([...view.picked]));
  el.all.addEventListener('change', () => {
    if (el.all.checked) view.letters.forEach((l) => view.picked.add(l.fire_id));
    else view.picked.clear();
    draw();
  });
  el.more.addEventListener('click', () => {
    view.limit = Math.min(view.limit + STEP, SHOWN_MAX);
    load();
  });
  const typed = debounce(load, 250);
  const filtered = (e) => {
    view.filter = e.target.value.trim();
    view.limit = STEP;
    typed();
  };
  root.append(...layout(el, filtered));

  const reload = throttle(load, 1000);
  const offs = [on('dead_letters', reload), on('resync', reload), on('poll', reload)];
  load();
  return () => { offs.forEach((off) => off()); reload.cancel(); typed.cancel(); };
}

function elements() {
  return {
    rows: h('tbody'),
    count: h('span', { id: 'dlq-count', class: 'muted' }),
    more: h('button', { id: 'dlq-more', type: 'button', hidden: true }, 'Show more'),
    detail: h('div', { class: 'panel', id: 'dlq-detail', hidden: true }),
    replay: h('button', { id: 'dlq-replay-selected', type: 'button', class: 'primary', disabled: true }, 'Replay selected'),
    all: h('input', { type: 'checkbox', id: 'dlq-all', title: 'select all shown' }),
    error: h('p', { class: 'error' }),
  };
}

function layout(el, filtered) {
  return [
    h('h1', {}, 'Dead letters'),
    h('div', { class: 'filters' },
      h('label', {}, 'Job id', h('input', { id: 'dlq-job', type: 'search', placeholder: 'exact job id', oninput: filtered })),
      el.replay, el.count),
    el.error, el.detail,
    h('table', { id: 'dlq' }, h('thead', {}, h('tr', {}, h('th', {}, el.all),
      ['Fire', 'Job', 'Scheduled', 'Attempts', 'Last status', 'Last error'].map((t) => h('th', {}, t)))), el.rows),
    h('div', { class: 'pager' }, el.more),
  ];
}

// "200 shown of 5,120", and "Show more" while more can be fetched; past the most one answer
// holds, it says so (a job id narrows the list to one job's dead letters).
function showCount(view, el) {
  const shown = view.letters.length;
  const text = `${number(shown)} shown of ${number(view.total)}`;
  const capped = view.total > shown && view.limit >= SHOWN_MAX;
  el.count.textContent = capped ? `${text} (the newest ${number(SHOWN_MAX)}; filter by job id to see others)` : text;
  el.more.hidden = !(view.total > shown && view.limit < SHOWN_MAX);
  el.more.textContent = `Show more (${number(Math.min(STEP, SHOWN_MAX - view.limit, view.total - shown))})`;
}

function showSelection(view, el) {
  const { picked, letters } = view;
  el.replay.disabled = picked.size === 0;
  el.replay.textContent = picked.size ? `Replay selected (${picked.size})` : 'Replay selected';
  el.all.checked = letters.length > 0 && picked.size === letters.length;
}

function showDetail(panel, letter, { replay, drop }) {
  panel.hidden = false;
  replace(panel, h('h2', {}, `Dead letter ${letter.fire_id}`),
    h('p', {}, 'Job ', h('a', { href: `#/jobs/${enc(letter.job_id)}` }, letter.job_id), ', scheduled ',
      time(letter.scheduled_at), `, ${letter.attempts} attempts, last ${letter.last_status}`,
      letter.last_http_status ? ` (HTTP ${letter.last_http_status})` : '', ', dead since ', time(letter.dead_at), '.'),
    h('pre', { id: 'dlq-last-error' }, letter.last_error || '(no error text)'),
    h('div', { class: 'actions' },
      h('button', { type: 'button', class: 'primary', id: 'dlq-replay-one', onclick: () => replay([letter.fire_id]) }, 'Replay'),
      h('button', { type: 'button', class: 'danger', id: 'dlq-drop-one', onclick: () => drop(letter.fire_id) }, 'Drop')));
}

// Replays ids after asking (false: not confirmed). The replayed ones are unticked; those that
// failed stay ticked, to be tried again.
async function replayLetters(ids, picked) {
  const what = ids.length === 1 ? ids[0] : `${ids.length} dead letters`;
  if (!(await confirmAction(`Replay ${what}? Each is delivered again, with the job's full retry budget.`, 'Replay'))) {
    return false;
  }
  const failures = await inBatches(ids, (id) => api('POST', `/api/v1/dlq/${enc(id)}/replay`));
  ids.filter((id) => !failures.has(id)).forEach((id) => picked.delete(id));
  if (failures.size) {
    const [first] = failures.values();
    toast(`${failures.size} of ${ids.length} not replayed (still selected): ${first}`, 'bad');
  } else {
    toast(`${what} replayed`);
  }
  return true;
}

async function dropLetter(id) {
  if (!(await confirmAction(`Drop ${id}? It will not be delivered, and its record is gone.`, 'Drop'))) return false;
  try {
    await api('DELETE', `/api/v1/dlq/${enc(id)}`);
    toast(`${id} dropped`);
  } catch (error) {
    toast(describeError(error), 'bad');
  }
  return true;
}

function letterRow(letter, picked, update, inspect) {
  const box = h('input', { type: 'checkbox', class: 'pick', checked: picked.has(letter.fire_id),
    onclick: (e) => e.stopPropagation(),
    onchange: (e) => { if (e.target.checked) picked.add(letter.fire_id); else picked.delete(letter.fire_id); update(); } });
  return h('tr', { class: 'clickable', dataset: { fire: letter.fire_id }, onclick: () => inspect(letter) },
    h('td', {}, box),
    h('td', { class: 'mono' }, letter.fire_id),
    h('td', {}, h('a', { href: `#/jobs/${enc(letter.job_id)}`, onclick: (e) => e.stopPropagation() }, letter.job_id)),
    h('td', {}, time(letter.scheduled_at)),
    h('td', { class: 'num' }, letter.attempts),
    h('td', {}, badge(letter.last_status), letter.last_http_status ? ` ${letter.last_http_status}` : ''),
    h('td', { class: 'error' }, (letter.last_error || '').slice(0, 120)));
}

// Run fn over ids, a few at a time; returns the ids that failed, each with its error text.
async function inBatches(ids, fn) {
  const failures = new Map();
  for (let i = 0; i < ids.length; i += REPLAYS_AT_ONCE) {
    const batch = ids.slice(i, i + REPLAYS_AT_ONCE);
    const results = await Promise.allSettled(batch.map(fn));
    results.forEach((r, j) => { if (r.status === 'rejected') failures.set(batch[j], describeError(r.reason)); });
  }
  return failures;
}
