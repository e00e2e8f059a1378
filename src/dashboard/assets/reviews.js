// Review queue: payments held for review, with each rule's contribution; approve or reject.
import { get, post, items, qs } from './api.js';
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

function card(review, onDone) {
  const id = pick(review, 'id', 'review_id');
  const fp = pick(review, 'fingerprint', 'payment.fingerprint');
  const payment = pick(review, 'payment', 'risk.context.payment') || {};
  const { assessment, list } = contributions(review);
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
      assessment.score !== undefined ? h('span', {}, `score ${assessment.score}`) : null,
      h('span', { class: 'muted' }, time(pick(review, 'created_at_ms', 'held_at_ms')))),
    h('p', {}, 'Payment ', fp ? h('a', { href: `#/payment/${encodeURIComponent(fp)}`, class: 'mono' }, short(fp, 16)) : '(unknown)',
      payment.amount ? ` · ${amount(payment.amount, payment.decimals)} ` : '',
      payment.payer ? h('span', { class: 'mono', title: payment.payer }, ` from ${short(payment.payer)}`) : '',
      (payment.pay_to || payment.payTo) ? h('span', { class: 'mono' }, ` to ${short(payment.pay_to || payment.payTo)}`) : '',
      payment.resource ? ` for ${payment.resource}` : ''),
    (assessment.reasons && assessment.reasons.length) ? h('p', {}, 'Reasons: ', assessment.reasons.join('; ')) : null,
    contributionTable(list),
    excerpt(review),
    h('details', {}, h('summary', {}, 'Everything recorded'), view(review)),
    actions);
}

export function render(root) {
  const list = h('div', { id: 'review-list' });
  const status = h('p', { class: 'muted' }, 'loading…');
  let cursor = null;
  const more = h('button', { type: 'button', class: 'secondary', hidden: true, onclick: () => load(cursor) }, 'Older');
  root.append(h('h1', {}, 'Review queue'), status, list, h('div', { class: 'pager' }, more));

  async function load(after) {
    let body;
    try {
      body = await get(`/reviews${qs({ status: 'pending', limit: PAGE, after })}`);
    } catch (e) {
      status.replaceWith(unavailable('The review queue', e));
      return;
    }
    const reviews = items(body, 'reviews');
    if (!after) list.replaceChildren();
    status.textContent = reviews.length || after ? '' : 'Nothing is waiting for review.';
    for (const r of reviews) {
      list.append(card(r, () => {}));
    }
    cursor = body && body.next;
    more.hidden = !cursor;
  }
  load();
}
