// Plain SVG charts: no library, sized by the viewBox.
import { h, amount } from './ui.js';

const NS = 'http://www.w3.org/2000/svg';
const COLOURS = ['#2457c5', '#1b873f', '#c62828', '#b26a00', '#7b3fb5', '#00838f', '#ad1457', '#5d6b82', '#8d6e63'];

function s(tag, attrs = {}, ...children) {
  const el = document.createElementNS(NS, tag);
  for (const [k, v] of Object.entries(attrs)) el.setAttribute(k, v);
  for (const c of children) el.append(c);
  return el;
}

/** Lines of atomic amounts per bucket (`series` as decimal strings), with a legend. */
export function lineChart(buckets, lines, decimals = {}) {
  const W = 600, H = 180, P = 28;
  if (!lines.length) return h('p', { class: 'muted' }, 'No settled payments in this window.');
  // Amounts may exceed 2^53: scale in BigInt to a per-mille of the maximum first.
  const values = lines.map((l) => l.series.map((v) => BigInt(v)));
  let max = 1n;
  for (const vs of values) for (const v of vs) if (v > max) max = v;
  const n = Math.max(buckets.length, 1);
  const x = (i) => P + (n === 1 ? (W - 2 * P) / 2 : (i * (W - 2 * P)) / (n - 1));
  const y = (v) => H - P - Number((v * 1000n) / max) / 1000 * (H - 2 * P);
  const svg = s('svg', { class: 'chart', viewBox: `0 0 ${W} ${H}`, role: 'img' });
  svg.append(s('line', { x1: P, y1: H - P, x2: W - P, y2: H - P, stroke: '#c8cdd6' }));
  const label = (text, xx, yy, anchor) => {
    const t = s('text', { x: xx, y: yy, 'font-size': 10, fill: '#6b7280', 'text-anchor': anchor });
    t.textContent = text;
    return t;
  };
  if (buckets.length) {
    const hhmm = (ms) => new Date(ms).toISOString().slice(11, 16);
    svg.append(label(hhmm(buckets[0]), P, H - 8, 'start'), label(hhmm(buckets[buckets.length - 1]), W - P, H - 8, 'end'));
  }
  values.forEach((vs, li) => {
    const pts = vs.map((v, i) => `${x(i).toFixed(1)},${y(v).toFixed(1)}`).join(' ');
    svg.append(s('polyline', { points: pts, fill: 'none', stroke: COLOURS[li % COLOURS.length], 'stroke-width': 2 }));
  });
  const legend = h('div', { class: 'legend' }, lines.map((l, li) => {
    const swatch = h('i');
    swatch.style.background = COLOURS[li % COLOURS.length];
    return h('span', { title: l.key }, swatch, `${l.key}: ${amount(l.amount, decimals[l.asset])} (${l.count})`);
  }));
  return h('div', {}, svg, legend);
}

/** Horizontal bars for `[{key, count}]`. */
export function barList(rows, empty = 'None in this window.') {
  if (!rows.length) return h('p', { class: 'muted' }, empty);
  const max = Math.max(...rows.map((r) => r.count), 1);
  return h('div', { class: 'bars' }, rows.slice(0, 12).map((r) => {
    const svg = s('svg', { viewBox: '0 0 100 10', preserveAspectRatio: 'none' },
      s('rect', { x: 0, y: 0, height: 10, width: Math.max(1, (100 * r.count) / max), fill: '#c62828' }));
    return h('div', { class: 'bar' }, h('span', { class: 'label', title: r.key }, r.key), svg, h('b', {}, String(r.count)));
  }));
}
