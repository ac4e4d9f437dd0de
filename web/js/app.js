// The app shell: a small client-side router over history.pushState.
import { currentSession, signOut, userName } from './api.js';
import { h, mount } from './dom.js';
import {
  completeOauthSignIn, renderForgot, renderReset, renderSignIn, renderSignUp,
} from './views/auth.js';
import { renderDashboard } from './views/dashboard.js';
import { renderHome } from './views/home.js';
import { renderMeetingPage } from './views/meeting.js';
import { renderProfile } from './views/profile.js';

const main = document.getElementById('main');
const topbar = document.getElementById('topbar');
let cleanup = null;

const routes = [
  { path: /^\/$/, view: (root) => (currentSession() ? renderHome(root) : renderWelcome(root)) },
  { path: /^\/signin\/?$/, view: (root) => renderSignIn(root, nextFromQuery()) },
  { path: /^\/signup\/?$/, view: (root) => renderSignUp(root, nextFromQuery()) },
  { path: /^\/forgot\/?$/, view: (root) => renderForgot(root) },
  { path: /^\/reset\/?$/, view: (root) => renderReset(root) },
  { path: /^\/profile\/?$/, view: (root) => renderProfile(root) },
  { path: /^\/dashboard\/?$/, view: (root) => renderDashboard(root) },
  { path: /^\/m\/([^/]+)\/?$/, view: (root, [code]) => renderMeetingPage(root, decodeURIComponent(code)) },
];

function nextFromQuery() {
  const next = new URLSearchParams(location.search).get('next');
  // Only same-site paths, never an open redirect.
  return next && next.startsWith('/') && !next.startsWith('//') ? next : '/';
}

export function navigate(path, { replace = false } = {}) {
  if (replace) history.replaceState({}, '', path);
  else history.pushState({}, '', path);
  render();
}

function render() {
  if (typeof cleanup === 'function') {
    try {
      cleanup();
    } catch (error) {
      console.error(error);
    }
  }
  cleanup = null;
  renderTopbar();
  // Back from an OpenID provider (#oauth_code=… or #oauth_error=…).
  if (completeOauthSignIn(main)) return;
  const path = location.pathname;
  for (const route of routes) {
    const match = path.match(route.path);
    if (match) {
      cleanup = route.view(main, match.slice(1)) || null;
      focusMain();
      return;
    }
  }
  mount(
    main,
    h('section', { class: 'card narrow' },
      h('h1', {}, 'Page not found'),
      h('p', {}, 'There is nothing at this address.'),
      h('a', { href: '/', 'data-link': '' }, 'Go to MeetEase')),
  );
  focusMain();
}

function focusMain() {
  // Move focus to the new page for keyboard and screen-reader users, unless a view focused a field.
  if (!main.contains(document.activeElement)) main.focus({ preventScroll: true });
}

function renderTopbar() {
  const session = currentSession();
  const inMeeting = document.body.classList.contains('in-meeting');
  mount(
    topbar,
    h('a', { class: 'brand', href: '/', 'data-link': '' }, h('span', { class: 'logo', 'aria-hidden': 'true' }, '◉'), 'MeetEase'),
    inMeeting
      ? null
      : h('nav', { class: 'account', 'aria-label': 'Account' },
        session
          ? [
            h('a', { class: 'btn btn-ghost', href: '/dashboard', 'data-link': '' }, 'Dashboard'),
            h('a', { class: 'who', href: '/profile', 'data-link': '', title: 'Your profile' }, userName(session)),
            h('button', {
              type: 'button',
              class: 'btn btn-ghost',
              onclick: async () => {
                await signOut();
                navigate('/signin');
              },
            }, 'Sign out'),
          ]
          : [
            h('a', { class: 'btn btn-ghost', href: '/signin', 'data-link': '' }, 'Sign in'),
            h('a', { class: 'btn btn-primary', href: '/signup', 'data-link': '' }, 'Sign up'),
          ]),
  );
}

function renderWelcome(root) {
  mount(
    root,
    h('section', { class: 'hero' },
      h('h1', {}, 'Meetings that work in any browser'),
      h('p', { class: 'lead' }, 'Sign in to start or schedule a meeting. Got a link? Open it to join — no account needed.'),
      h('div', { class: 'row' },
        h('a', { class: 'btn btn-primary', href: '/signup', 'data-link': '' }, 'Create an account'),
        h('a', { class: 'btn', href: '/signin', 'data-link': '' }, 'I have an account')),
      h('form', {
        class: 'join-code',
        onsubmit: (event) => {
          event.preventDefault();
          const value = new FormData(event.target).get('code').toString().trim();
          const code = value.includes('/m/') ? value.split('/m/')[1].split(/[?#/]/)[0] : value;
          if (code) navigate(`/m/${encodeURIComponent(code)}`);
        },
      },
      h('label', { for: 'join-code' }, 'Meeting link or code'),
      h('div', { class: 'row' },
        h('input', { id: 'join-code', name: 'code', required: true, autocomplete: 'off' }),
        h('button', { class: 'btn', type: 'submit' }, 'Go to meeting')))),
  );
}

// Same-origin links marked data-link navigate without a page load.
document.addEventListener('click', (event) => {
  const link = event.target.closest && event.target.closest('a[data-link]');
  if (!link || event.defaultPrevented || event.button !== 0 || event.metaKey || event.ctrlKey || event.shiftKey) return;
  event.preventDefault();
  navigate(link.getAttribute('href'));
});
window.addEventListener('popstate', render);
window.addEventListener('meetease:navigate', (event) => navigate(event.detail.path, event.detail));
window.addEventListener('meetease:session', renderTopbar);
window.addEventListener('meetease:topbar', renderTopbar);

render();
