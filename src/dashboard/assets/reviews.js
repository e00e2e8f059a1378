// Review queue: payments held for review, with each rule's contribution; approve or reject.
import { get, post, items, qs } from './api.js';

/** The newest risk assessment and context recorded for `fingerprint` (from the evidence API). */
async function riskOf(fingerprint) {
  const story = await get(`/payments/${encodeURIComponent(fingerprint)}`);
  const all = items(story, 'risk');
  const last = all[all.length - 1];
  return last ? (last.risk || last) : null;
}

/** The trace events around the payment decision: the last few, texts shortened. */
function traceExcerpt(context) {
  const events = (context && context.trace && context.trace.events) || [];
  if (!events.length) return null;
  return events.slice(-6).map((e) => {
    const text = e.text || (e.data ? JSON.stringify(e.data) : '') || (e.text_sha256 ? `sha256:${e.text_sha256}` : '');
    return `${e.type}${e.tool ? ` (${e.tool})` : ''}: ${text.length > 300 ? `${text.slice(0, 300)}…` : text}`;
  }).join('\n');
}
import { h, badge, short, time, amount, unavailable, view, action } from './ui.js';

const PAGE = 50;

function pick(obj, ...paths) {
  for (const p of paths) {
    let v = obj;
    for (const k of p.split('.')) v = v == null ? undefined : v[k];
    if (v !== undefined && v !== null) return v;
  }
  return undefined;
}

function contributions(review) {
  const a = pick(review, 'assessment', 'risk.assessment', 'explanation', 'risk');
  const list = (a && (a.contributions || a.rules)) || review.contributions || [];
  return { assessment: a || {}, list: Array.isArray(list) ? list : [] };
}

function contributionTable(list) {
  if (!list.length) return h('p', { class: 'muted' }, 'No rule contributions recorded.');
  const sorted = [...list].sort((a, b) => (b.fired === true) - (a.fired === true) || (b.weight || 0) - (a.weight || 0));
  return h('table', { class: 'contributions' },
    h('thead', {}, h('tr', {}, ['rule', 'fired', 'points', 'action', 'mode', 'why'].map((t) => h('th', {}, t)))),
    h('tbody', {}, sorted.map((c) => h('tr', { 'data-rule': c.rule, class: c.fired ? '' : 'muted' },
      h('td', { class: 'mono' }, c.rule), h('td', {}, c.fired ? badge('fired', 'review') : 'no'),
      h('td', {}, c.fired ? `+${c.weight ?? 0}` : '0'), h('td', {}, c.action || ''), h('td', {}, c.mode || ''),
      h('td', {}, c.error ? `${c.description || ''} (error: ${c.error})` : c.description || '')))));
}

function excerpt(review) {
  const e = pick(review, 'trace_excerpt', 'excerpt', 'risk.trace_excerpt', 'explanation.trace_excerpt', 'trace', 'risk.context.trace');
  if (e === undefined) return null;
  return h('div', { class: 'excerpt' }, h('h3', {}, 'Trace excerpt'),
    typeof e === 'string' ? h('pre', {}, e) : view(e));
}

function card(review, onDone, pending) {
  const id = pick(review, 'id', 'review_id');
  const fp = pick(review, 'fingerprint', 'payment.fingerprint');
  const payment = pick(review, 'payment') || review;
  const { assessment, list } = contributions(review);
  const explanation = h('div', { class: 'explanation' }, contributionTable(list), excerpt(review));
  if (!list.length && fp) {
    riskOf(fp).then((risk) => {
      if (!risk) return;
      const trace = traceExcerpt(risk.context);
      explanation.replaceChildren(contributionTable((risk.assessment && risk.assessment.contributions) || []),
        trace ? h('div', { class: 'excerpt' }, h('h3', {}, 'Trace excerpt'), h('pre', {}, trace)) : h('p', { class: 'muted' }, 'No agent trace was sent with this payment.'));
    }).catch((e) => explanation.append(unavailable('The rule contributions (evidence API)', e)));
  }
  const note = h('input', { name: 'note', placeholder: 'note (optional)' });
  const decide = (verb) => async () => {
    const answer = await post(`/reviews/${encodeURIComponent(id)}/${verb}`, { note: note.value.trim() || undefined });
    actions.replaceWith(h('p', { class: 'status', 'data-decided': verb }, `${verb === 'approve' ? 'Approved' : 'Rejected'}.`));
    onDone(answer);
  };
  const actions = h('div', { class: 'row' }, note, ...action('Approve', decide('approve')), ...action('Reject', decide('reject'), 'danger'));
  return h('div', { class: 'card review', 'data-review': id },
    h('div', { class: 'row' },
      h('h2', {}, `Review ${short(String(id), 8)}`),
      badge(String(pick(review, 'status', 'state') || 'pending'), 'review'),
      (assessment.score ?? review.score) !== undefined ? h('span', {}, `score ${assessment.score ?? review.score}`) : null,
      h('span', { class: 'muted' }, time(pick(review, 'created_at_ms', 'held_at_ms')))),
    h('p', {}, 'Payment ', fp ? h('a', { href: `#/payment/${encodeURIComponent(fp)}`, class: 'mono' }, short(fp, 16)) : '(unknown)',
      payment.amount ? ` · ${amount(payment.amount, payment.decimals)} ` : '',
      payment.payer ? h('span', { class: 'mono', title: payment.payer }, ` from ${short(payment.payer)}`) : '',
      (payment.pay_to || payment.payTo) ? h('span', { class: 'mono' }, ` to ${short(payment.pay_to || payment.payTo)}`) : '',
      payment.resource ? ` for ${payment.resource}` : ''),
    (assessment.reasons || review.reasons || []).length ? h('p', {}, 'Reasons: ', (assessment.reasons || review.reasons).join('; ')) : null,
    explanation,
    h('details', {}, h('summary', {}, 'Everything recorded'), view(review)),
    pending ? actions : h('p', { class: 'muted' }, `${review.state} by ${review.decided_by || '?'} ${time(review.decided_at_ms)} ${review.note || ''}`));
}

export function render(root) {
  const list = h('div', { id: 'review-list' });
  const status = h('p', { class: 'muted' }, 'loading…');
  const state = h('select', { name: 'state', onchange: () => load() }, ['pending', 'approved', 'rejected'].map((v) => h('option', { value: v }, v)));
  root.append(h('h1', {}, 'Review queue'), h('div', { class: 'card' }, h('label', {}, 'Show ', state)), status, list);

  async function load() {
    let body;
    try {
      body = await get(`/reviews${qs({ state: state.value, limit: PAGE })}`);
    } catch (e) {
      status.replaceWith(unavailable('The review queue', e));
      return;
    }
    const reviews = items(body, 'reviews');
    list.replaceChildren();
    status.textContent = reviews.length ? (reviews.length === PAGE ? `The oldest ${PAGE} shown.` : '') : `No ${state.value} reviews.`;
    for (const r of reviews) list.append(card(r, () => {}, state.value === 'pending'));
  }
  load();
}
