// Small SVG charts without a library: bars over days, lines over time. Each chart
// is an <svg role="img"> with a text summary for screen readers; every drawn point
// carries data-* attributes (its series, time and value) and a <title> tooltip.

const NS = 'http://www.w3.org/2000/svg';
const WIDTH = 640;
const HEIGHT = 220;
const PAD = { left: 52, right: 14, top: 14, bottom: 30 };
/** Colours for series, distinguishable on the dark panel. */
export const PALETTE = ['#4f8cff', '#30a46c', '#f5a524', '#e5484d', '#a972ff', '#12a5b8', '#ff7ab6', '#c2c94a'];

function s(tag, attrs = {}, ...children) {
  const el = document.createElementNS(NS, tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (v !== null && v !== undefined) el.setAttribute(k, String(v));
  }
  for (const c of children) if (c !== null && c !== undefined) el.append(c instanceof Node ? c : document.createTextNode(String(c)));
  return el;
}

/** A "nice" upper bound for an axis: 1, 2 or 5 times a power of ten. */
export function niceMax(value) {
  if (!(value > 0)) return 1;
  const power = 10 ** Math.floor(Math.log10(value));
  for (const step of [1, 2, 5, 10]) {
    if (value <= step * power) return step * power;
  }
  return 10 * power;
}

function frame(label) {
  return s('svg', {
    class: 'chart',
    viewBox: `0 0 ${WIDTH} ${HEIGHT}`,
    role: 'img',
    'aria-label': label,
    preserveAspectRatio: 'xMidYMid meet',
  });
}

/** Grid lines at whole steps for counts (0, 1 for a maximum of 1), quarters otherwise. */
function yAxis(svg, max, integer = false) {
  const bottom = HEIGHT - PAD.bottom;
  const span = bottom - PAD.top;
  const steps = !integer ? 4 : max <= 5 ? max : max % 5 === 0 ? 5 : 4;
  for (let i = 0; i <= steps; i += 1) {
    const y = bottom - (span * i) / steps;
    svg.append(
      s('line', { class: 'grid', x1: PAD.left, x2: WIDTH - PAD.right, y1: y, y2: y }),
      s('text', { class: 'tick', x: PAD.left - 6, y: y + 4, 'text-anchor': 'end' }, String(Number(((max * i) / steps).toFixed(2)))),
    );
  }
}

/**
 * Bars, one per entry: `points` = [{label, value, title}], left to right; values
 * are counts (whole numbers).
 * Labels under the bars are thinned out to fit.
 */
export function barChart({ label, points, format = (v) => String(Math.round(v)) }) {
  const svg = frame(label);
  const max = niceMax(Math.max(0, ...points.map((p) => p.value)));
  yAxis(svg, max, true);
  const bottom = HEIGHT - PAD.bottom;
  const slot = (WIDTH - PAD.left - PAD.right) / Math.max(1, points.length);
  const every = Math.max(1, Math.ceil(points.length / 8));
  points.forEach((p, i) => {
    const height = ((bottom - PAD.top) * p.value) / max;
    const x = PAD.left + i * slot;
    svg.append(s('rect', {
      class: 'bar',
      x: x + slot * 0.15,
      y: bottom - height,
      width: slot * 0.7,
      height: Math.max(0, height),
      'data-label': p.label,
      'data-value': p.value,
    }, s('title', {}, p.title || `${p.label}: ${p.value}`)));
    if (i % every === 0 || i === points.length - 1) {
      svg.append(s('text', { class: 'tick', x: x + slot / 2, y: HEIGHT - 10, 'text-anchor': 'middle' }, p.short || p.label));
    }
  });
  return svg;
}

/**
 * Lines over time: `series` = [{name, points: [{t: Date, v: number}]}]; points
 * without a value are left out. The time axis spans every series.
 */
export function lineChart({ label, series, format = (v) => String(Math.round(v)) }) {
  const svg = frame(label);
  const all = series.flatMap((x) => x.points);
  const max = niceMax(Math.max(0, ...all.map((p) => p.v)));
  const t0 = Math.min(...all.map((p) => p.t.getTime()));
  const t1 = Math.max(...all.map((p) => p.t.getTime()));
  const spanT = Math.max(1, t1 - t0);
  yAxis(svg, max);
  const bottom = HEIGHT - PAD.bottom;
  const xOf = (t) => PAD.left + ((WIDTH - PAD.left - PAD.right) * (t.getTime() - t0)) / spanT;
  const yOf = (v) => bottom - ((bottom - PAD.top) * v) / max;
  if (all.length) {
    const clock = (ms) => new Date(ms).toLocaleTimeString([], { hour: '2-digit', minute: '2-digit', second: '2-digit' });
    svg.append(
      s('text', { class: 'tick', x: PAD.left, y: HEIGHT - 10, 'text-anchor': 'start' }, clock(t0)),
      s('text', { class: 'tick', x: WIDTH - PAD.right, y: HEIGHT - 10, 'text-anchor': 'end' }, clock(t1)),
    );
  }
  series.forEach((x, i) => {
    const colour = PALETTE[i % PALETTE.length];
    const group = s('g', { class: 'series', 'data-series': x.name });
    if (x.points.length > 1) {
      group.append(s('polyline', {
        class: 'line',
        fill: 'none',
        stroke: colour,
        points: x.points.map((p) => `${xOf(p.t).toFixed(1)},${yOf(p.v).toFixed(1)}`).join(' '),
      }));
    }
    for (const p of x.points) {
      group.append(s('circle', {
        class: 'point',
        cx: xOf(p.t).toFixed(1),
        cy: yOf(p.v).toFixed(1),
        r: 3.5,
        fill: colour,
        'data-series': x.name,
        'data-t': p.t.toISOString(),
        'data-value': p.v,
      }, s('title', {}, `${x.name}, ${p.t.toLocaleTimeString()}: ${format(p.v)}`)));
    }
    svg.append(group);
  });
  return svg;
}
