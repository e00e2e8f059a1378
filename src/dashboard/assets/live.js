// Live: decisions as they happen (server-sent events), totals and charts.
import { token, get, qs } from './api.js';
import { h, badge, short, time, amount, unavailable, field } from './ui.js';
import { lineChart, barList } from './charts.js';

const ROWS_MAX = 200;
const WINDOWS = { '1h': 3600e3, '24h': 86400e3, '7d': 7 * 86400e3 };

export function render(root) {
  const filters = { decision: '', endpoint: '', payer: '' };
  let windowMs = WINDOWS['24h'];
  let source = null;
  let timer = null;
  const status = h('span', { class: 'status muted', id: 'live-status' }, 'connecting…');
  const rows = h('tbody', { id: 'live-rows' });
  const totals = h('div', { class: 'totals', id: 'totals' });
  const charts = h('div', { class: 'grid', id: 'charts' });

  const decision = h('select', { name: 'decision' }, ['', 'allow', 'deny', 'review'].map((d) => h('option', { value: d }, d || 'any')));
  const endpoint = h('input', { name: 'endpoint', placeholder: 'host/path' });
  const payer = h('input', { name: 'payer', placeholder: '0x…' });
  const win = h('select', { name: 'window' }, Object.keys(WINDOWS).map((k) => h('option', { value: k, selected: k === '24h' }, k)));
  const form = h('form', { class: 'inline', id: 'live-filters', onsubmit: (e) => {
    e.preventDefault();
    Object.assign(filters, { decision: decision.value, endpoint: endpoint.value.trim(), payer: payer.value.trim() });
    windowMs = WINDOWS[win.value];
    rows.replaceChildren();
    lastSeq = 0;
    connect();
    refresh();
  } }, field('Decision', decision), field('Endpoint', endpoint), field('Payer', payer), field('Chart window', win),
  h('button', { type: 'submit' }, 'Apply'));

  root.append(
    h('h1', {}, 'Live'),
    h('div', { class: 'card' }, form),
    totals,
    charts,
    h('div', { class: 'card' }, h('div', { class: 'row' }, h('h2', {}, 'Decisions'), status),
      h('table', {}, h('thead', {}, h('tr', {}, ['#', 'time', 'kind', 'decision', 'endpoint', 'payer', 'payee', 'amount', 'why'].map((t) => h('th', {}, t)))), rows)),
  );

  let lastSeq = 0;
  function row(e) {
    // A reconnect that resumes without Last-Event-ID replays the backlog: show each record once.
    if (e.seq <= lastSeq) return;
    lastSeq = e.seq;
    const why = [...e.controls, ...e.rules.map((r) => `rule:${r}`)].join(', ');
    const tr = h('tr', { class: `fresh ${e.fingerprint ? 'clickable' : ''}`, 'data-seq': e.seq, 'data-kind': e.kind, 'data-decision': e.decision,
      onclick: () => { if (e.fingerprint) location.hash = `#/payment/${encodeURIComponent(e.fingerprint)}`; } },
    h('td', {}, e.seq), h('td', {}, time(e.created_at_ms)), h('td', {}, e.kind), h('td', {}, badge(e.decision)),
    h('td', { class: 'mono' }, e.endpoint || ''), h('td', { class: 'mono', title: e.payer || '' }, short(e.payer)),
    h('td', { class: 'mono', title: e.pay_to || '' }, short(e.pay_to)),
    h('td', {}, e.amount ? `${amount(e.amount, e.decimals)}${e.settled ? ' ✓' : ''}` : ''), h('td', {}, why));
    rows.prepend(tr);
    while (rows.children.length > ROWS_MAX) rows.lastChild.remove();
  }

  function connect() {
    if (source) source.close();
    const url = `/admin/dashboard/live${qs({ ...filters, backlog: 50, access_token: token.get() })}`;
    source = new EventSource(url);
    source.addEventListener('open', () => { status.textContent = 'live'; status.className = 'status'; });
    source.addEventListener('evidence', (m) => { row(JSON.parse(m.data)); scheduleRefresh(); });
    source.addEventListener('gap', () => { status.textContent = 'some records were skipped (the feed fell behind)'; });
    source.addEventListener('error', () => {
      status.textContent = source.readyState === EventSource.CLOSED ? 'disconnected' : 'reconnecting…';
      status.className = 'status error';
    });
  }

  let pending = null;
  function scheduleRefresh() {
    if (!pending) pending = setTimeout(() => { pending = null; refresh(); }, 1000);
  }

  async function refresh() {
    const until = Math.ceil(Date.now() / 60e3) * 60e3 + 60e3;
    const since = until - windowMs;
    const bucket = Math.max(60, Math.ceil(windowMs / 60 / 60e3) * 60);
    let s;
    try {
      s = await get(`/dashboard/summary${qs({ since, until, bucket })}`);
    } catch (e) {
      totals.replaceChildren(unavailable('Summary', e));
      return;
    }
    const t = s.totals;
    totals.replaceChildren(...[['allowed', t.allow], ['denied', t.deny], ['held for review', t.review], ['settled', t.settled]]
      .map(([k, v]) => h('div', { class: 'total', 'data-total': k }, h('b', {}, String(v)), k)));
    const card = (title, body) => h('div', { class: 'card' }, h('h2', {}, title), body);
    charts.replaceChildren(
      card('Spend per endpoint', lineChart(s.buckets, s.spend.by_endpoint, s.decimals)),
      card('Spend per payer', lineChart(s.buckets, s.spend.by_payer, s.decimals)),
      card('Spend per asset', lineChart(s.buckets, s.spend.by_asset, s.decimals)),
      card('Denials by control', barList(s.denials.by_control)),
      card('Denials and holds by risk rule', barList(s.denials.by_rule)),
    );
  }

  connect();
  refresh();
  timer = setInterval(refresh, 15_000);
  return () => { if (source) source.close(); clearInterval(timer); clearTimeout(pending); };
}
