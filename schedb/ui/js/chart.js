// A small SVG line chart of each execution's delay (started − scheduled) and duration, oldest on
// the left. Hand-written: two series and two axes are less code than any charting library.
const NS = 'http://www.w3.org/2000/svg';
const WIDTH_DEFAULT = 800;
const HEIGHT = 200; // as style.css sets it
const PAD = { left: 56, right: 12, top: 12, bottom: 28 };
const BAD = new Set(['failed', 'timed_out', 'unknown']);

function el(tag, attrs = {}, text) {
  const node = document.createElementNS(NS, tag);
  for (const [key, value] of Object.entries(attrs)) node.setAttribute(key, String(value));
  if (text !== undefined) node.textContent = text;
  return node;
}

// points: [{t: scheduled ms, delay: ms, duration: ms, status}] in time order
export function drawChart(svg, points) {
  svg.replaceChildren();
  // Drawn at the size it is shown: a scaled viewBox would stretch the labels.
  const width = Math.round(svg.getBoundingClientRect().width) || WIDTH_DEFAULT;
  svg.setAttribute('viewBox', `0 0 ${width} ${HEIGHT}`);
  svg.dataset.points = String(points.length);
  if (!points.length) {
    svg.append(el('text', { x: width / 2, y: HEIGHT / 2, 'text-anchor': 'middle' }, 'No calls yet'));
    return;
  }
  const top = niceMax(Math.max(1, ...points.map((p) => Math.max(p.delay, p.duration))));
  const innerW = width - PAD.left - PAD.right;
  const innerH = HEIGHT - PAD.top - PAD.bottom;
  const x = (i) => PAD.left + (points.length === 1 ? innerW / 2 : (i * innerW) / (points.length - 1));
  const y = (v) => PAD.top + innerH - (Math.min(v, top) / top) * innerH;

  for (const fraction of [0, 0.5, 1]) {
    const value = top * fraction;
    svg.append(el('line', { class: 'axis', x1: PAD.left, x2: width - PAD.right, y1: y(value), y2: y(value) }));
    svg.append(el('text', { x: PAD.left - 6, y: y(value) + 4, 'text-anchor': 'end' }, label(value)));
  }
  const first = new Date(points[0].t).toLocaleTimeString();
  const last = new Date(points[points.length - 1].t).toLocaleTimeString();
  svg.append(el('text', { x: PAD.left, y: HEIGHT - 8 }, first));
  svg.append(el('text', { x: width - PAD.right, y: HEIGHT - 8, 'text-anchor': 'end' }, last));

  for (const series of ['delay', 'duration']) {
    const path = points.map((p, i) => `${i ? 'L' : 'M'}${x(i).toFixed(1)},${y(p[series]).toFixed(1)}`).join(' ');
    svg.append(el('path', { class: series, d: path }));
  }
  points.forEach((p, i) => {
    if (!BAD.has(p.status)) return;
    const dot = el('circle', { class: 'dot-bad', cx: x(i), cy: y(p.duration), r: 3.5 });
    dot.append(el('title', {}, `${p.status} at ${new Date(p.t).toISOString()}`));
    svg.append(dot);
  });
}

function niceMax(value) {
  const magnitude = 10 ** Math.floor(Math.log10(value));
  for (const step of [1, 2, 5, 10]) if (value <= step * magnitude) return step * magnitude;
  return 10 * magnitude;
}

function label(ms) {
  return ms >= 1000 ? `${(ms / 1000).toFixed(ms % 1000 ? 1 : 0)} s` : `${Math.round(ms)} ms`;
}
