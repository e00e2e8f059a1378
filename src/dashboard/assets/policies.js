// Policies: the policy in force, endpoints (configured and discovered) with caps and use,
// pinned recipients, circuit breakers with a reset button. Each part loads on its own.
import { get, post, items } from './api.js';
import { h, short, unavailable, view, action } from './ui.js';

const ROWS_MAX = 500;

function section(title, id) {
  const body = h('div', { class: 'body' }, h('p', { class: 'muted' }, 'loading…'));
  return { el: h('div', { class: 'card', id }, h('h2', {}, title), body), body };
}

/** A table of objects, columns from their keys (first 8), capped at ROWS_MAX rows. */
function table(rows, extra) {
  if (!rows.length) return h('p', { class: 'muted' }, 'None.');
  const cols = [...new Set(rows.slice(0, 50).flatMap((r) => Object.keys(r)))].slice(0, 8);
  const cell = (v) => (v !== null && typeof v === 'object') ? view(v, 2) : (typeof v === 'string' && v.length > 30 ? h('span', { class: 'mono', title: v }, short(v, 14)) : view(v));
  return h('div', {},
    h('table', {}, h('thead', {}, h('tr', {}, cols.map((c) => h('th', {}, c)), extra ? h('th', {}) : null)),
      h('tbody', {}, rows.slice(0, ROWS_MAX).map((r) => h('tr', {}, cols.map((c) => h('td', {}, cell(r[c]))), extra ? h('td', {}, extra(r)) : null)))),
    rows.length > ROWS_MAX ? h('p', { class: 'muted' }, `${rows.length - ROWS_MAX} more not shown.`) : null);
}

const atomicOrNone = (v) => (v === null || v === undefined ? '—' : String(v));

/** Endpoints with their source, pinned payTo, limits and the use of their current windows. */
function endpointTable(rows, total) {
  if (!rows.length) return h('p', { class: 'muted' }, 'No endpoints configured or discovered yet.');
  return h('div', {}, h('table', {},
    h('thead', {}, h('tr', {}, ['endpoint', 'source', 'payTo pinned', 'per request', 'hour / day / month caps', 'per minute', 'current use'].map((t) => h('th', {}, t)))),
    h('tbody', {}, rows.slice(0, ROWS_MAX).map((e) => {
      const l = e.limits || {};
      const usage = (e.usage || []).map((u) => `${u.period}: ${u.used}${u.reserved ? ` (+${u.reserved} held)` : ''} of ${atomicOrNone(u.cap)}`);
      return h('tr', { 'data-endpoint': e.endpoint },
        h('td', { class: 'mono' }, e.endpoint), h('td', {}, h('span', { class: `badge ${e.source === 'discovered' ? 'review' : 'ok'}` }, e.source || '')),
        h('td', { class: 'mono', title: e.pay_to || '' }, short(e.pay_to || '—', 8)), h('td', {}, atomicOrNone(l.max_per_request)),
        h('td', {}, `${atomicOrNone(l.hourly_cap)} / ${atomicOrNone(l.daily_cap)} / ${atomicOrNone(l.monthly_cap)}`),
        h('td', {}, atomicOrNone(l.requests_per_minute)), h('td', {}, usage.length ? usage.join('; ') : 'none this window'));
    }))),
  total > rows.length ? h('p', { class: 'muted' }, `${rows.length} of ${total} shown.`) : null);
}

async function fill(part, path, render) {
  try {
    const body = await get(path);
    part.body.replaceChildren(render(body));
  } catch (e) {
    part.body.replaceChildren(unavailable(part.el.querySelector('h2').textContent, e));
  }
}

export function render(root, { principal }) {
  const operator = (principal.scopes || []).includes('operator');
  const policy = section('Policy in force', 'policy');
  const endpoints = section('Endpoints (configured and discovered), caps and use', 'endpoints');
  const pins = section('Pinned recipients', 'pins');
  const breakers = section('Circuit breakers', 'breakers');
  // Outside the table, which reloads after a reset: the outcome stays readable.
  const notice = h('p', { class: 'muted', id: 'breaker-notice', role: 'status' });
  breakers.el.append(notice);
  root.append(h('h1', {}, 'Policies'), breakers.el, endpoints.el, pins.el, policy.el);

  const loadBreakers = () => fill(breakers, '/policy/breakers', (body) => {
    const rows = items(body, 'breakers');
    return table(rows, (b) => {
      if (!operator || !b.subject || (b.state && b.state === 'closed')) return null;
      const [btn, out] = action('Reset', async () => {
        await post('/policy/breakers/reset', { subject: b.subject });
        out.textContent = 'reset';
        notice.textContent = `reset ${b.subject}`;
        loadBreakers();
      }, 'danger');
      btn.dataset.subject = b.subject;
      return h('span', {}, btn, out);
    });
  });
  loadBreakers();
  fill(endpoints, '/policy/endpoints', (body) => endpointTable(items(body, 'endpoints'), body.total));
  fill(pins, '/policy/pins', (body) => table(items(body, 'pins')));
  fill(policy, '/policy', (body) => h('details', { open: true }, h('summary', {}, 'As configured (and changed through the API)'), view(body)));
  return null;
}

