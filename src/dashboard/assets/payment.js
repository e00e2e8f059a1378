// Payments: a keyset-paged list, and one payment's story, evidence and chain verification,
// its disputes, and the evidence bundle.
import { get, post, download, items, qs } from './api.js';
import { h, badge, short, time, amount, unavailable, view, action, field } from './ui.js';

const PAGE = 50;

function pick(obj, ...keys) {
  for (const k of keys) if (obj && obj[k] !== undefined && obj[k] !== null) return obj[k];
  return undefined;
}

function search() {
  const input = h('input', { name: 'fingerprint', placeholder: 'fingerprint', size: 60 });
  return h('form', { class: 'inline', id: 'payment-search', onsubmit: (e) => {
    e.preventDefault();
    if (input.value.trim()) location.hash = `#/payment/${encodeURIComponent(input.value.trim())}`;
  } }, field('Find a payment', input), h('button', { type: 'submit' }, 'Open'));
}

function list(root) {
  const body = h('div', { id: 'payment-list' }, h('p', { class: 'muted' }, 'loading…'));
  const cursors = [];
  let next = null;
  const older = h('button', { type: 'button', class: 'secondary', onclick: () => { cursors.push(next); load(next); } }, 'Older');
  const newer = h('button', { type: 'button', class: 'secondary', onclick: () => { cursors.pop(); load(cursors[cursors.length - 1]); } }, 'Newer');
  root.append(h('div', { class: 'card' }, h('h2', {}, 'Recent payments'), body, h('div', { class: 'pager' }, newer, older)));

  async function load(after) {
    let answer;
    try {
      answer = await get(`/payments${qs({ limit: PAGE, after })}`);
    } catch (e) {
      body.replaceChildren(unavailable('The payments list', e));
      older.hidden = true; newer.hidden = true;
      return;
    }
    const rows = items(answer, 'payments');
    next = answer && answer.next;
    older.hidden = !next;
    newer.hidden = cursors.length === 0;
    if (!rows.length) { body.replaceChildren(h('p', { class: 'muted' }, 'No payments.')); return; }
    body.replaceChildren(h('table', {},
      h('thead', {}, h('tr', {}, ['fingerprint', 'last seen', 'decision', 'settlement', 'payer', 'payee', 'tx', 'endpoint'].map((t) => h('th', {}, t)))),
      h('tbody', {}, rows.map((p) => {
        const fp = pick(p, 'fingerprint');
        const pay = p.payment || p;
        const decision = pick(p, 'decision', 'last_decision');
        return h('tr', { class: 'clickable', 'data-fingerprint': fp, onclick: () => { location.hash = `#/payment/${encodeURIComponent(fp)}`; } },
          h('td', { class: 'mono', title: fp }, short(fp, 14)), h('td', {}, time(pick(p, 'last_seen_ms', 'updated_at_ms', 'created_at_ms', 'last_at_ms'))),
          h('td', {}, decision ? badge(decision) : ''), h('td', {}, pick(p, 'state', 'settlement_state', 'status') || ''),
          h('td', { class: 'mono', title: pay.payer || '' }, short(pay.payer)), h('td', { class: 'mono' }, short(pick(pay, 'pay_to', 'payee', 'payTo'))),
          h('td', {}, pick(p, 'tx') ? h('span', { class: 'mono', title: p.tx }, short(p.tx, 8)) : amount(pay.amount, pay.decimals)), h('td', {}, pick(p, 'endpoint', 'resource') || pay.resource || ''));
      }))));
  }
  load();
}

function verification(story) {
  const v = pick(story, 'chain_verification', 'verification', 'chain', 'verified');
  if (v === undefined) return h('p', { class: 'muted' }, 'No chain verification in the answer.');
  const ok = typeof v === 'boolean' ? v : (v.ok ?? v.valid ?? v.verified);
  return h('div', { id: 'chain-verification' },
    ok === undefined ? null : badge(ok ? 'chain verified' : 'chain BROKEN', ok ? 'ok' : 'bad'),
    typeof v === 'object' ? view(v) : null);
}

function evidenceList(story) {
  const records = items(story, 'evidence', 'records');
  if (!records.length) return h('p', { class: 'muted' }, 'No evidence records.');
  return h('div', { id: 'evidence' }, records.map((r) => {
    let body = r.body;
    if (typeof body === 'string') { try { body = JSON.parse(body); } catch { /* shown as text */ } }
    return h('details', { class: 'record', 'data-seq': r.seq },
      h('summary', {}, `#${r.seq} ${time(r.created_at_ms)} · ${r.kind} · `, badge(r.decision || '?', r.decision), r.hash ? h('span', { class: 'mono muted' }, ` ${short(r.hash, 8)}`) : ''),
      typeof body === 'string' ? h('pre', {}, body) : view(body));
  }));
}

function disputes(root, fp, principal) {
  const box = h('div', { class: 'card', id: 'disputes' }, h('h2', {}, 'Disputes'));
  const listEl = h('div', {}, h('p', { class: 'muted' }, 'loading…'));
  const reason = h('textarea', { name: 'reason', rows: 2, cols: 60, placeholder: 'what went wrong' });
  const open = h('form', { class: 'inline', id: 'open-dispute', onsubmit: async (e) => {
    e.preventDefault();
    try {
      await post(`/payments/${encodeURIComponent(fp)}/disputes`, { reason: reason.value.trim() });
      reason.value = '';
      load();
    } catch (err) { listEl.prepend(unavailable('Opening a dispute', err)); }
  } }, field('Open a dispute', reason), h('button', { type: 'submit' }, 'Open dispute'));
  box.append(listEl, open);
  root.append(box);
  const operator = (principal.scopes || []).includes('operator');

  async function load() {
    let answer;
    try { answer = await get(`/disputes${qs({ fingerprint: fp })}`); } catch (e) {
      listEl.replaceChildren(unavailable('Disputes', e));
      if (e.unavailable) open.hidden = true;
      return;
    }
    const rows = items(answer, 'disputes').filter((d) => !d.fingerprint || d.fingerprint === fp);
    if (!rows.length) { listEl.replaceChildren(h('p', { class: 'muted' }, 'No disputes.')); return; }
    // The list has no statements: load each dispute whole (at most a page of them), then render once.
    const full = await Promise.all(rows.slice(0, 50).map((d) => get(`/disputes/${encodeURIComponent(d.id)}`).catch(() => d)));
    listEl.replaceChildren(...full.map((d) => dispute(d)));
  }

  function dispute(summary) {
    const el = h('div', { class: 'dispute', 'data-dispute': (summary.dispute || summary).id });
    const statement = h('input', { name: 'statement', placeholder: 'statement', size: 50 });
    const outcome = h('select', { name: 'outcome' }, ['refund_owed', 'rejected', 'settled'].map((o) => h('option', { value: o }, o)));
    const note = h('input', { name: 'note', placeholder: 'resolution note' });
    const show = (answer) => {
      // GET /disputes/{id} answers {dispute, statements, payment}; the list answers bare disputes.
      const d = answer.dispute ? { ...answer.dispute, statements: answer.statements } : answer;
      const state = String(d.state || d.status || 'open');
      el.replaceChildren(h('h3', {}, `Dispute ${short(String(d.id), 8)} `, badge(state, state === 'open' ? 'review' : 'ok')),
        view(d),
        h('div', { class: 'row' }, statement, ...action('Add statement', async () => {
          await post(`/disputes/${encodeURIComponent(d.id)}/statements`, { text: statement.value.trim() });
          statement.value = '';
          show(await get(`/disputes/${encodeURIComponent(d.id)}`));
        }, 'secondary')),
        operator && state === 'open' ? h('div', { class: 'row' }, outcome, note, ...action('Resolve', async () => {
          await post(`/disputes/${encodeURIComponent(d.id)}/resolve`, { outcome: outcome.value, note: note.value.trim() || undefined });
          show(await get(`/disputes/${encodeURIComponent(d.id)}`));
        })) : null);
    };
    show(summary);
    return el;
  }
  load();
}

function detail(root, fp, principal) {
  const head = h('div', { class: 'card', id: 'payment-story' }, h('p', { class: 'muted' }, 'loading…'));
  const safe = fp.replace(/[^A-Za-z0-9._-]+/g, '_').slice(0, 120);
  const [bundle, bundleOut] = action('Download evidence bundle', async (out) => {
    await download(`/payments/${encodeURIComponent(fp)}/bundle`, `gatehouse-evidence-${safe}.json`);
    out.textContent = 'downloaded';
  });
  bundle.id = 'bundle';
  root.append(h('h1', {}, 'Payment ', h('span', { class: 'mono' }, fp)), h('div', { class: 'row' }, bundle, bundleOut), head);
  (async () => {
    let story;
    try { story = await get(`/payments/${encodeURIComponent(fp)}`); } catch (e) {
      head.replaceChildren(unavailable('This payment', e));
      return;
    }
    const withPayment = items(story, 'records').find((r) => r.body && typeof r.body === 'object' && r.body.payment);
    const pay = story.payment || (withPayment && withPayment.body.payment) || {};
    const settlement = story.settlement || {};
    head.replaceChildren(
      h('h2', {}, 'Story'),
      h('p', {}, amount(pay.amount, pay.decimals), ' ', h('span', { class: 'mono', title: pay.asset || '' }, short(pay.asset)), ' from ',
        h('span', { class: 'mono' }, story.payer || pay.payer || '?'), ' to ', h('span', { class: 'mono' }, story.payee || pay.pay_to || '?'),
        (story.endpoint || pay.resource) ? ` for ${story.endpoint || pay.resource}` : ''),
      h('p', {}, 'Settlement: ', settlement.state ? badge(settlement.state, settlement.state === 'settled' ? 'ok' : 'review') : h('span', { class: 'muted' }, 'none'),
        (story.tx || settlement.transaction) ? h('span', { class: 'mono' }, ` tx ${story.tx || settlement.transaction}`) : ''),
      h('h3', {}, 'Chain verification'), verification(story),
      h('h3', {}, 'Evidence'), evidenceList(story),
      h('details', {}, h('summary', {}, 'Verdicts, risk and upstream answers'), view(Object.fromEntries(Object.entries(story).filter(([k]) => !['evidence', 'records', 'disputes', 'chain'].includes(k))))));
  })();
  disputes(root, fp, principal);
}

export function render(root, { principal, args }) {
  const fp = args[0];
  if (fp) { detail(root, fp, principal); return null; }
  root.append(h('h1', {}, 'Payments'), h('div', { class: 'card' }, search()));
  list(root);
  return null;
}
