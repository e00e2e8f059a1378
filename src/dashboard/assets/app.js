// Entry point: login, the header, and a hash router over the four pages.
import { token, get, whenUnauthorized } from './api.js';
import * as live from './live.js';
import * as reviews from './reviews.js';
import * as policies from './policies.js';
import * as payment from './payment.js';

const pages = { live, reviews, policies, payment };
const $ = (id) => document.getElementById(id);
let cleanup = null;
let principal = null;

function showLogin(message = '') {
  if (cleanup) { cleanup(); cleanup = null; }
  principal = null;
  $('top').hidden = true;
  $('page').replaceChildren();
  $('login').hidden = false;
  $('login-error').textContent = message;
  $('token').focus();
}

async function login(candidate) {
  token.set(candidate);
  try {
    principal = await get('/whoami');
  } catch (e) {
    token.clear();
    showLogin(e.status === 401 ? 'That token is not valid.' : `Cannot reach the admin API: ${e.message}`);
    return;
  }
  $('login').hidden = true;
  $('top').hidden = false;
  $('who').textContent = `${principal.name} (${(principal.scopes || []).join(', ')})`;
  route();
}

function route() {
  if (!principal) return;
  const [, name = 'live', ...rest] = (location.hash || '#/live').split('/');
  const page = pages[name] || live;
  for (const a of document.querySelectorAll('header nav a')) a.classList.toggle('active', a.dataset.page === name);
  if (cleanup) cleanup();
  const root = $('page');
  root.replaceChildren();
  root.dataset.page = name;
  cleanup = page.render(root, { principal, args: rest.map(decodeURIComponent) }) || null;
}

whenUnauthorized(() => { token.clear(); showLogin('The session ended: log in again.'); });
window.addEventListener('hashchange', route);
$('login-form').addEventListener('submit', (e) => {
  e.preventDefault();
  login($('token').value.trim());
  $('token').value = '';
});
$('logout').addEventListener('click', () => { token.clear(); showLogin(); });

if (token.get()) login(token.get()); else showLogin();
