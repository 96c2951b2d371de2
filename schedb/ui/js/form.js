// Create and edit a job. The schedule is checked as it is typed: the server's preview
// (POST /api/v1/schedules/preview) shows it in words with its next fires, or says what is wrong.
// On save, the server's field errors are shown next to the fields they name. Editing sends the
// whole definition back with If-Match, so a concurrent change is refused rather than overwritten;
// fields the form does not show (a signing secret, say) are kept as they were.
import { ApiError, api, describeError, enc, get } from './api.js';
import { debounce, h, replace, time, toast } from './dom.js';

const READ_ONLY = ['next_fire_at', 'created_at', 'updated_at', 'version', 'registration', 'schedule_preview', 'team'];
// API field → form input; an error about `webhook.headers.X-Foo` lands on the headers box.
const INPUTS = {
  id: 'f-id', schedule: 'f-schedule', timezone: 'f-timezone', 'webhook.url': 'f-url', 'webhook.method': 'f-method',
  'webhook.headers': 'f-headers', 'webhook.body': 'f-body', 'webhook.timeout_s': 'f-timeout',
  'retry.max_attempts': 'f-attempts', 'retry.backoff_s': 'f-backoff', tags: 'f-tags', depends_on: 'f-depends',
  trigger_rule: 'f-rule', delivery: 'f-delivery', concurrency: 'f-concurrency', misfire: 'f-misfire',
  priority: 'f-priority', paused: 'f-paused',
};
const PREVIEW_WAIT_MS = 250;
const KEEP = 'Empty: the server default on a new job, the current value on an edit.';

export function render(root, { jobId }) {
  const editing = Boolean(jobId);
  const form = h('form', { class: 'job-form', id: 'job-form', novalidate: true });
  const general = h('p', { class: 'error', id: 'f-errors' });
  root.append(h('h1', {}, editing ? `Edit ${jobId}` : 'New job'), general, form);
  // One Idempotency-Key per form, kept until a save succeeds: clicking again after an answer
  // was lost gets the job the first click created (200) instead of a second job.
  const draft = { original: null, key: randomKey(), jobId };

  const preview = debounce(() => showPreview(form), PREVIEW_WAIT_MS);
  const start = (job) => {
    draft.original = job;
    buildForm(form, job, editing, preview);
    showPreview(form);
  };
  form.addEventListener('submit', (event) => {
    event.preventDefault();
    save(form, general, draft);
  });

  if (editing) {
    get(`/api/v1/jobs/${enc(jobId)}`).then(start).catch((error) => { general.textContent = describeError(error); });
  } else {
    start(null);
  }
  return () => preview.cancel();
}

async function save(form, general, draft) {
  clearErrors(form, general);
  const definition = collect(form, draft.original, general);
  if (!definition) return;
  const button = form.querySelector('#f-submit');
  button.disabled = true;
  try {
    const saved = draft.jobId
      ? await api('PUT', `/api/v1/jobs/${enc(draft.jobId)}`,
        { body: definition, headers: { 'If-Match': `"${draft.original.version}"` } })
      : await api('POST', '/api/v1/jobs', { body: definition, headers: { 'Idempotency-Key': draft.key } });
    draft.key = randomKey(); // saved: whatever this form sends next is another job
    toast(`${saved.id} ${draft.jobId ? 'saved' : 'created'}`);
    location.hash = `#/jobs/${enc(saved.id)}`;
  } catch (error) {
    showErrors(form, general, error);
  } finally {
    button.disabled = false;
  }
}

function buildForm(form, job, editing, preview) {
  const w = job?.webhook || {};
  const field = (label, input, hint) => [h('label', { for: input.id }, label),
    h('div', {}, input, hint ? h('div', { class: 'hint' }, hint) : '', h('div', { class: 'field-error', id: `${input.id}-error` }))];
  const text = (id, value, attrs = {}) => h('input', { id, type: 'text', value: value ?? '', ...attrs });
  const choice = (id, options, value) => h('select', { id },
    options.map((o) => h('option', { value: o, selected: o === value }, o || '(default)')));
  const schedule = text('f-schedule', job ? job.schedule : '*/5 * * * *', { oninput: preview, placeholder: '*/5 * * * *' });
  const timezone = text('f-timezone', job?.timezone || 'UTC', { oninput: preview, list: 'f-zones' });
  replace(form,
    field('Job id', text('f-id', job?.id, { readonly: editing, placeholder: 'nightly-report (empty: generated)' })),
    field('Schedule', schedule, 'Cron (5 or 6 fields), @every 10s, @hourly, @at 2026-12-24T18:00:00Z; empty: runs only after its upstream jobs.'),
    [h('span'), h('div', { class: 'preview', id: 'f-preview' }, '…')],
    field('Time zone', timezone, 'An IANA name, such as Europe/Berlin.'),
    h('datalist', { id: 'f-zones' }, zones().map((z) => h('option', { value: z }))),
    field('Runs after', text('f-depends', (job?.depends_on || []).join(', '), { placeholder: 'job ids, comma separated' })),
    field('Trigger rule', choice('f-rule', ['all_succeeded', 'all_done', 'any_succeeded'], job?.trigger_rule)),
    field('Webhook URL', text('f-url', w.url, { type: 'url', placeholder: 'https://example.com/hook' })),
    field('Method', choice('f-method', ['POST', 'GET', 'PUT', 'PATCH', 'DELETE'], w.method || 'POST')),
    field('Headers', h('textarea', { id: 'f-headers', rows: 3, placeholder: 'Authorization: Bearer {{secrets/TOKEN}}' },
      Object.entries(w.headers || {}).map(([k, v]) => `${k}: ${v}`).join('\n')), 'One "Name: value" per line.'),
    field('Body (JSON)', h('textarea', { id: 'f-body', rows: 4, placeholder: '{"report": "daily"}' },
      w.body === undefined || w.body === null ? '' : JSON.stringify(w.body, null, 2))),
    field('Timeout (s)', text('f-timeout', w.timeout_s ?? 30, { type: 'number', min: 0.1, step: 'any' }), KEEP),
    field('Attempts', text('f-attempts', job?.retry?.max_attempts ?? 3, { type: 'number', min: 1 }), KEEP),
    field('Backoff (s)', text('f-backoff', job?.retry?.backoff_s ?? 1, { type: 'number', min: 0, step: 'any' }), KEEP),
    field('Delivery', choice('f-delivery', ['at_least_once', 'at_most_once'], job?.delivery)),
    field('Overlap', choice('f-concurrency', ['allow', 'forbid', 'replace'], job?.concurrency)),
    field('Missed fires', choice('f-misfire', ['run_once', 'run_all', 'skip'], job?.misfire)),
    field('Priority', choice('f-priority', ['normal', 'low', 'high', 'critical'], job?.priority)),
    field('Tags', h('textarea', { id: 'f-tags', rows: 3, placeholder: 'env: prod\nowner: billing team' },
      tagsText(job?.tags)),
      'One "key: value" per line (the value may hold spaces, commas and colons), or a JSON object.'),
    field('Paused', h('input', { id: 'f-paused', type: 'checkbox', checked: Boolean(job?.paused) })),
    [h('span'), h('div', { class: 'actions' },
      h('button', { id: 'f-submit', type: 'submit', class: 'primary' }, editing ? 'Save' : 'Create job'),
      h('a', { href: editing ? `#/jobs/${enc(job.id)}` : '#/jobs' }, h('button', { type: 'button' }, 'Cancel')))],
  );
}

function zones() {
  try {
    return Intl.supportedValuesOf('timeZone');
  } catch {
    return ['UTC'];
  }
}

async function showPreview(form) {
  const box = form.querySelector('#f-preview');
  const schedule = form.querySelector('#f-schedule');
  const expression = schedule.value.trim();
  const timezone = form.querySelector('#f-timezone').value.trim() || 'UTC';
  setError(form, 'f-schedule', '');
  setError(form, 'f-timezone', '');
  if (!expression) {
    box.textContent = 'No schedule: the job runs only after the jobs it depends on.';
    return;
  }
  try {
    const answer = await api('POST', '/api/v1/schedules/preview', { body: { expression, timezone, count: 5 } });
    if (form.querySelector('#f-schedule').value.trim() !== expression) return; // typed on meanwhile
    replace(box, h('strong', { id: 'f-words' }, answer.description || expression),
      h('ol', { id: 'f-next' }, answer.next.map((at) => h('li', {}, time(at)))));
  } catch (error) {
    if (form.querySelector('#f-schedule').value.trim() !== expression) return;
    box.textContent = 'Not a schedule yet.';
    for (const e of error instanceof ApiError ? error.fieldErrors : []) {
      setError(form, e.field === 'timezone' ? 'f-timezone' : 'f-schedule', e.message);
    }
    if (!(error instanceof ApiError)) box.textContent = describeError(error);
  }
}

// The definition to send, or null (with the errors shown) when a box cannot be read. It starts
// from the job as loaded, so what the form does not show (retry.backoff_max_s, the masked
// signing secret, which the server reads as "keep the stored one") goes back as it came; an
// empty number box leaves its field out (the server's default, or the loaded value).
function collect(form, original, general) {
  const value = (id) => form.querySelector(`#${id}`).value.trim();
  const base = original ? Object.fromEntries(Object.entries(original).filter(([k]) => !READ_ONLY.includes(k))) : {};
  const problems = [];
  const numbers = (pairs) => Object.fromEntries(pairs.map(([key, id]) => [key, readNumber(form, id, problems)])
    .filter(([, n]) => n !== undefined));
  const webhook = { ...(base.webhook || {}), url: value('f-url'), method: value('f-method'),
    ...numbers([['timeout_s', 'f-timeout']]), headers: parseHeaders(value('f-headers'), problems) };
  const body = value('f-body');
  try {
    if (body) webhook.body = JSON.parse(body);
    else delete webhook.body;
  } catch (error) {
    problems.push(['f-body', `not JSON: ${error.message}`]);
  }
  const definition = { ...base, schedule: value('f-schedule') || null, timezone: value('f-timezone') || 'UTC', webhook,
    retry: { ...(base.retry || {}), ...numbers([['max_attempts', 'f-attempts'], ['backoff_s', 'f-backoff']]) },
    depends_on: value('f-depends').split(',').map((s) => s.trim()).filter(Boolean), trigger_rule: value('f-rule'),
    delivery: value('f-delivery'), concurrency: value('f-concurrency'), misfire: value('f-misfire'),
    priority: value('f-priority'), tags: parseTags(value('f-tags'), problems),
    paused: form.querySelector('#f-paused').checked };
  if (value('f-id')) definition.id = value('f-id');
  for (const [id, message] of problems) setError(form, id, message);
  if (problems.length) general.textContent = 'Some fields need a fix (see below).';
  return problems.length ? null : definition;
}

// A number box: undefined when empty; a problem when what was typed is no number.
function readNumber(form, id, problems) {
  const input = form.querySelector(`#${id}`);
  if (input.validity.badInput) {
    problems.push([id, 'not a number']);
    return undefined;
  }
  return input.value.trim() === '' ? undefined : Number(input.value);
}

function parseHeaders(text, problems) {
  const headers = {};
  for (const line of text.split('\n').map((l) => l.trim()).filter(Boolean)) {
    const colon = line.indexOf(':');
    if (colon < 1) problems.push(['f-headers', `"${line}" is not "Name: value"`]);
    else headers[line.slice(0, colon).trim()] = line.slice(colon + 1).trim();
  }
  return headers;
}

// Tags as one "key: value" per line (split at the first colon). Tags that lines cannot carry
// as they are (a colon or a leading "{" in a key, a line break, spaces at either end) are
// shown as a JSON object instead, which is read back as JSON.
function tagsText(tags = {}) {
  const entries = Object.entries(tags);
  const plain = entries.every(([k, v]) => !k.includes(':') && !k.startsWith('{') && k === k.trim() && v === v.trim()
    && !/[\r\n]/.test(k + v));
  return plain ? entries.map(([k, v]) => `${k}: ${v}`).join('\n') : JSON.stringify(tags, null, 2);
}

function parseTags(text, problems) {
  if (text.startsWith('{')) return parseJsonTags(text, problems);
  const tags = {};
  for (const line of text.split('\n').map((l) => l.trim()).filter(Boolean)) {
    const colon = line.indexOf(':');
    const key = line.slice(0, Math.max(colon, 0)).trim();
    if (!key) problems.push(['f-tags', `"${line}" is not "key: value"`]);
    else if (Object.hasOwn(tags, key)) problems.push(['f-tags', `tag "${key}" is given twice`]);
    else tags[key] = line.slice(colon + 1).trim();
  }
  return tags;
}

function parseJsonTags(text, problems) {
  try {
    const tags = JSON.parse(text);
    if (tags && typeof tags === 'object' && !Array.isArray(tags)
      && Object.values(tags).every((v) => typeof v === 'string')) return tags;
  } catch {
    // said below
  }
  problems.push(['f-tags', 'starts with "{" but is not a JSON object of strings']);
  return {};
}

function setError(form, inputId, message) {
  const input = form.querySelector(`#${inputId}`);
  const box = form.querySelector(`#${inputId}-error`);
  if (input) input.setAttribute('aria-invalid', message ? 'true' : 'false');
  if (box) box.textContent = message;
}

function clearErrors(form, general) {
  general.textContent = '';
  for (const id of Object.values(INPUTS)) setError(form, id, '');
}

function showErrors(form, general, error) {
  general.textContent = describeError(error);
  for (const e of error instanceof ApiError ? error.fieldErrors : []) {
    const key = Object.keys(INPUTS).filter((k) => e.field === k || e.field.startsWith(`${k}.`))
      .sort((a, b) => b.length - a.length)[0];
    if (key) setError(form, INPUTS[key], e.message);
  }
}

function randomKey() {
  const bytes = crypto.getRandomValues(new Uint8Array(16));
  return `console-${[...bytes].map((b) => b.toString(16).padStart(2, '0')).join('')}`;
}
