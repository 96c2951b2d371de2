// Dead letters: fires that failed every attempt. Inspect the last error, replay one or many
// (each replay gets the job's full retry budget again), or drop one.
import { api, describeError, enc, get, query } from './api.js';
import { badge, confirmAction, debounce, h, number, replace, throttle, time, toast } from './dom.js';
import { on } from './live.js';

const SHOWN = 200;
const REPLAYS_AT_ONCE = 8;

export function render(root) {
  const picked = new Set();
  let letters = [];
  let filter = '';
  const el = {
    rows: h('tbody'),
    count: h('span', { id: 'dlq-count', class: 'muted' }),
    detail: h('div', { class: 'panel', id: 'dlq-detail', hidden: true }),
    replay: h('button', { id: 'dlq-replay-selected', type: 'button', class: 'primary', disabled: true }, 'Replay selected'),
    all: h('input', { type: 'checkbox', id: 'dlq-all', title: 'select all shown' }),
    error: h('p', { class: 'error' }),
  };

  const load = async () => {
    try {
      const answer = await get(`/api/v1/dlq${query({ limit: SHOWN, job_id: filter })}`);
      letters = answer.dead_letters;
      el.count.textContent = `${number(letters.length)} shown of ${number(answer.total)}`;
      el.error.textContent = '';
    } catch (error) {
      el.error.textContent = describeError(error);
      return;
    }
    const present = new Set(letters.map((l) => l.fire_id));
    for (const id of [...picked]) if (!present.has(id)) picked.delete(id);
    draw();
  };
  const draw = () => {
    replace(el.rows, ...(letters.length ? letters.map((l) => letterRow(l, picked, update, inspect))
      : [h('tr', {}, h('td', { colspan: 7, class: 'muted' }, 'No dead letters.'))]));
    update();
  };
  const update = () => {
    el.replay.disabled = picked.size === 0;
    el.replay.textContent = picked.size ? `Replay selected (${picked.size})` : 'Replay selected';
    el.all.checked = letters.length > 0 && picked.size === letters.length;
  };
  const inspect = (letter) => {
    el.detail.hidden = false;
    replace(el.detail, h('h2', {}, `Dead letter ${letter.fire_id}`),
      h('p', {}, 'Job ', h('a', { href: `#/jobs/${enc(letter.job_id)}` }, letter.job_id), ', scheduled ',
        time(letter.scheduled_at), `, ${letter.attempts} attempts, last ${letter.last_status}`,
        letter.last_http_status ? ` (HTTP ${letter.last_http_status})` : '', ', dead since ', time(letter.dead_at), '.'),
      h('pre', { id: 'dlq-last-error' }, letter.last_error || '(no error text)'),
      h('div', { class: 'actions' },
        h('button', { type: 'button', class: 'primary', id: 'dlq-replay-one', onclick: () => replay([letter.fire_id]) }, 'Replay'),
        h('button', { type: 'button', class: 'danger', id: 'dlq-drop-one', onclick: () => drop(letter.fire_id) }, 'Drop')));
  };
  const replay = async (ids) => {
    const what = ids.length === 1 ? ids[0] : `${ids.length} dead letters`;
    if (!(await confirmAction(`Replay ${what}? Each is delivered again, with the job's full retry budget.`, 'Replay'))) return;
    const failures = await inBatches(ids, (id) => api('POST', `/api/v1/dlq/${enc(id)}/replay`));
    ids.forEach((id) => picked.delete(id));
    if (failures.length) toast(`${failures.length} of ${ids.length} not replayed: ${failures[0]}`, 'bad');
    else toast(`${what} replayed`);
    el.detail.hidden = true;
    load();
  };
  const drop = async (id) => {
    if (!(await confirmAction(`Drop ${id}? It will not be delivered, and its record is gone.`, 'Drop'))) return;
    try {
      await api('DELETE', `/api/v1/dlq/${enc(id)}`);
      toast(`${id} dropped`);
    } catch (error) {
      toast(describeError(error), 'bad');
    }
    el.detail.hidden = true;
    load();
  };

  el.replay.addEventListener('click', () => replay([...picked]));
  el.all.addEventListener('change', () => {
    if (el.all.checked) letters.forEach((l) => picked.add(l.fire_id));
    else picked.clear();
    draw();
  });
  const typed = debounce(load, 250);
  root.append(
    h('h1', {}, 'Dead letters'),
    h('div', { class: 'filters' },
      h('label', {}, 'Job id', h('input', { id: 'dlq-job', type: 'search', placeholder: 'exact job id',
        oninput: (e) => { filter = e.target.value.trim(); typed(); } })),
      el.replay, el.count),
    el.error, el.detail,
    h('table', { id: 'dlq' }, h('thead', {}, h('tr', {}, h('th', {}, el.all),
      ['Fire', 'Job', 'Scheduled', 'Attempts', 'Last status', 'Last error'].map((t) => h('th', {}, t)))), el.rows));

  const reload = throttle(load, 1000);
  const offs = [on('dead_letters', reload), on('resync', reload), on('poll', reload)];
  load();
  return () => { offs.forEach((off) => off()); reload.cancel(); typed.cancel(); };
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

// Run fn over ids, a few at a time; returns the error texts of those that failed.
async function inBatches(ids, fn) {
  const failures = [];
  for (let i = 0; i < ids.length; i += REPLAYS_AT_ONCE) {
    const results = await Promise.allSettled(ids.slice(i, i + REPLAYS_AT_ONCE).map(fn));
    results.forEach((r) => { if (r.status === 'rejected') failures.push(describeError(r.reason)); });
  }
  return failures;
}
