// Small DOM helpers. Text always goes in as text (never as HTML).
export function h(tag, attrs = {}, ...children) {
  const el = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === undefined || v === null || v === false) continue;
    if (k.startsWith('on')) el.addEventListener(k.slice(2), v);
    else if (k === 'class') el.className = v;
    else el.setAttribute(k, v === true ? '' : v);
  }
  for (const c of children.flat()) {
    if (c === undefined || c === null || c === false) continue;
    el.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
  return el;
}

export const badge = (text, kind = text) => h('span', { class: `badge ${kind}` }, text);

export function short(text, n = 10) {
  if (!text) return '';
  const s = String(text);
  return s.length > 2 * n + 1 ? `${s.slice(0, n)}…${s.slice(-n + 2)}` : s;
}

export function time(ms) {
  if (ms === undefined || ms === null) return '';
  const d = new Date(Number(ms));
  return Number.isNaN(d.getTime()) ? String(ms) : d.toISOString().replace('T', ' ').replace(/\.\d+Z$/, 'Z');
}

/** An atomic amount shown in whole tokens when decimals are known. */
export function amount(atomic, decimals) {
  if (atomic === undefined || atomic === null || atomic === '') return '';
  try {
    const a = BigInt(atomic);
    if (decimals === undefined || decimals === null) return a.toString();
    const base = 10n ** BigInt(decimals);
    const frac = (a % base).toString().padStart(Number(decimals), '0').replace(/0+$/, '');
    return `${a / base}${frac ? `.${frac}` : ''}`;
  } catch { return String(atomic); }
}

/** A "not available" box for an API this build does not have (yet). */
export function unavailable(what, err) {
  if (err && err.unavailable) {
    return h('p', { class: 'unavailable', 'data-unavailable': what },
      `${what} is not available on this Gatehouse (the API is not in this build).`);
  }
  if (err && err.status === 403) {
    return h('p', { class: 'unavailable', 'data-forbidden': what }, `${what}: this token may not see it (${err.message}).`);
  }
  return h('p', { class: 'error', role: 'alert' }, `${what}: ${err ? err.message : 'failed'}`);
}

/** Renders any JSON value readably (objects as key/value tables). */
export function view(value, depth = 0) {
  if (value === null || value === undefined) return h('span', { class: 'muted' }, '—');
  if (Array.isArray(value)) {
    if (!value.length) return h('span', { class: 'muted' }, '(none)');
    if (depth > 2) return h('pre', {}, JSON.stringify(value, null, 2));
    return h('ol', {}, value.map((v) => h('li', {}, view(v, depth + 1))));
  }
  if (typeof value === 'object') {
    if (depth > 2) return h('pre', {}, JSON.stringify(value, null, 2));
    return h('table', {}, Object.entries(value).map(([k, v]) =>
      h('tr', {}, h('th', {}, k), h('td', { class: typeof v === 'string' && v.length > 24 ? 'mono' : '' }, view(v, depth + 1)))));
  }
  if (typeof value === 'boolean') return badge(String(value), value ? 'ok' : 'bad');
  return document.createTextNode(String(value));
}

export function field(label, input) {
  return h('label', {}, label, input);
}

/** Runs `fn` on click with the button disabled meanwhile; shows errors next to it. */
export function action(label, fn, cls = '') {
  const out = h('span', { class: 'status' });
  const btn = h('button', { type: 'button', class: cls, onclick: async () => {
    btn.disabled = true; out.textContent = '';
    try { await fn(out); } catch (e) { out.textContent = e.message; out.className = 'status error'; }
    finally { btn.disabled = false; }
  } }, label);
  return [btn, out];
}
