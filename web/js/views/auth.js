// Sign in and sign up.
import {
  confirmPasswordReset, exchangeOauthCode, oauthProviders, oauthStartUrl, requestPasswordReset, signIn, signUp,
} from '../api.js';
import { h, mount } from '../dom.js';
import { ApiError, humanMessage } from '../errors.js';
import { go } from '../nav.js';

// Where to go after a provider sign-in: kept for the round trip through the provider.
const OAUTH_NEXT = 'meetease.oauth_next';
// A provider sign-in that failed, shown once by the next sign-in page.
let oauthFailure = null;

const PROVIDER_LABELS = { github: 'GitHub', gitlab: 'GitLab', google: 'Google', microsoft: 'Microsoft', apple: 'Apple' };

/** "google" → "Google", "my-idp" → "My idp". */
export function providerLabel(name) {
  const text = String(name);
  return PROVIDER_LABELS[text] || (text.charAt(0).toUpperCase() + text.slice(1)).replace(/-/g, ' ');
}

function withNext(path, next) {
  return `${path}${next !== '/' ? `?next=${encodeURIComponent(next)}` : ''}`;
}

/**
 * "Continue with …" for each provider auth offers; stays empty (and hidden)
 * when there is none or the list cannot be fetched.
 */
function providerButtons(next) {
  const list = h('div', { class: 'providers-list' });
  const box = h('div', { class: 'providers', hidden: true, 'aria-label': 'Other ways to sign in', role: 'group' },
    h('p', { class: 'divider muted' }, 'or'),
    list);
  oauthProviders().then((names) => {
    mount(list, names.map((name) => h('a', {
      class: 'btn btn-provider',
      href: oauthStartUrl(name),
      onclick: () => {
        try {
          sessionStorage.setItem(OAUTH_NEXT, next);
        } catch {
          // Storage blocked: land on the home page instead.
        }
      },
    }, `Continue with ${providerLabel(name)}`)));
    box.hidden = names.length === 0;
  }, () => {
    box.hidden = true;
  });
  return box;
}

function takeOauthNext() {
  let next = null;
  try {
    next = sessionStorage.getItem(OAUTH_NEXT);
    sessionStorage.removeItem(OAUTH_NEXT);
  } catch {
    // Storage blocked.
  }
  return next && next.startsWith('/') && !next.startsWith('//') ? next : '/';
}

/**
 * The return from a provider: auth sends the browser to the app with
 * `#oauth_code=…` (exchanged here for a session) or `#oauth_error=<code>`.
 * Returns false when the URL carries neither.
 */
export function completeOauthSignIn(root) {
  const params = new URLSearchParams(location.hash.slice(1));
  const code = params.get('oauth_code');
  const error = params.get('oauth_error');
  if (!code && !error) return false;
  // The code works once; keep it out of the history, bookmarks and shared links.
  history.replaceState(history.state, '', location.pathname + location.search);
  const next = takeOauthNext();
  const failed = (failure) => {
    oauthFailure = failure;
    go(withNext('/signin', next), { replace: true });
  };
  if (!code) {
    failed(new ApiError(error, '', 0));
    return true;
  }
  mount(root, h('section', { class: 'card narrow', role: 'status', 'aria-live': 'polite' },
    h('h1', {}, 'Signing you in…')));
  exchangeOauthCode(code).then(
    () => go(next, { replace: true }),
    (e) => failed(e.code === 'invalid_one_time_token' ? new ApiError('oauth_code_expired', '', e.status) : e),
  );
  return true;
}

function field({ id, label, type = 'text', autocomplete, hint, required = true, minlength }) {
  const hintId = hint ? `${id}-hint` : null;
  return h('div', { class: 'field' },
    h('label', { for: id }, label),
    h('input', { id, name: id, type, autocomplete, required, minlength, 'aria-describedby': hintId }),
    hint ? h('p', { id: hintId, class: 'hint' }, hint) : null);
}

function authForm({ title, submit, fields, onSubmit, footer, failure = null }) {
  const error = h('p', { class: 'form-error', role: 'alert', hidden: !failure }, failure ? humanMessage(failure) : null);
  const button = h('button', { class: 'btn btn-primary', type: 'submit' }, submit);
  const form = h('form', {
    class: 'card narrow',
    'aria-labelledby': 'form-title',
    novalidate: false,
    onsubmit: async (event) => {
      event.preventDefault();
      error.hidden = true;
      button.disabled = true;
      button.setAttribute('aria-busy', 'true');
      try {
        await onSubmit(Object.fromEntries(new FormData(form)));
      } catch (e) {
        error.textContent = humanMessage(e);
        error.hidden = false;
        const bad = e.code === 'email_taken' || e.code === 'invalid_credentials' ? form.elements.email
          : e.code === 'weak_password' ? form.elements.password : null;
        if (bad) {
          bad.setAttribute('aria-invalid', 'true');
          bad.focus();
        }
      } finally {
        button.disabled = false;
        button.removeAttribute('aria-busy');
      }
    },
  },
  h('h1', { id: 'form-title' }, title),
  fields.map(field),
  error,
  button,
  footer);
  return form;
}

export function renderSignIn(root, next = '/') {
  const failure = oauthFailure;
  oauthFailure = null;
  const form = authForm({
    failure,
    title: 'Sign in to MeetEase',
    submit: 'Sign in',
    fields: [
      { id: 'email', label: 'Email', type: 'email', autocomplete: 'username' },
      { id: 'password', label: 'Password', type: 'password', autocomplete: 'current-password' },
    ],
    onSubmit: async ({ email, password }) => {
      await signIn({ email: email.trim(), password });
      go(next, { replace: true });
    },
    footer: [
      providerButtons(next),
      h('p', { class: 'muted' }, h('a', { href: '/forgot', 'data-link': '' }, 'Forgot your password?')),
      h('p', { class: 'muted' }, 'New here? ',
        h('a', { href: withNext('/signup', next), 'data-link': '' }, 'Create an account')),
    ],
  });
  mount(root, form);
  form.elements.email.focus();
}

export function renderSignUp(root, next = '/') {
  const form = authForm({
    title: 'Create your MeetEase account',
    submit: 'Sign up',
    fields: [
      { id: 'display_name', label: 'Name', autocomplete: 'name', hint: 'Shown to others in meetings.' },
      { id: 'email', label: 'Email', type: 'email', autocomplete: 'email' },
      {
        id: 'password', label: 'Password', type: 'password', autocomplete: 'new-password', minlength: 8,
        hint: 'At least 8 characters.',
      },
    ],
    onSubmit: async ({ display_name, email, password }) => {
      await signUp({ email: email.trim(), password, display_name: display_name.trim() });
      go(next, { replace: true });
    },
    footer: [
      providerButtons(next),
      h('p', { class: 'muted' }, 'Already have an account? ',
        h('a', { href: withNext('/signin', next), 'data-link': '' }, 'Sign in')),
    ],
  });
  mount(root, form);
  form.elements.display_name.focus();
}

/** Ask for a reset link by email. */
export function renderForgot(root) {
  const done = h('p', { class: 'notice', role: 'status', hidden: true });
  const form = authForm({
    title: 'Reset your password',
    submit: 'Send reset link',
    fields: [{ id: 'email', label: 'Email', type: 'email', autocomplete: 'username' }],
    onSubmit: async ({ email }) => {
      await requestPasswordReset(email.trim());
      done.textContent = 'If an account uses this email, a reset link is on its way. Check your inbox.';
      done.hidden = false;
    },
    footer: [done, h('p', { class: 'muted' }, h('a', { href: '/signin', 'data-link': '' }, 'Back to sign in'))],
  });
  mount(root, form);
  form.elements.email.focus();
}

/** The page a reset link opens: /reset?token=... */
export function renderReset(root) {
  const token = new URLSearchParams(location.search).get('token') || '';
  const form = authForm({
    title: 'Choose a new password',
    submit: 'Set password',
    fields: [{
      id: 'password', label: 'New password', type: 'password', autocomplete: 'new-password', minlength: 8,
      hint: 'At least 8 characters.',
    }],
    onSubmit: async ({ password }) => {
      await confirmPasswordReset(token, password);
      go('/signin', { replace: true });
    },
    footer: h('p', { class: 'muted' }, h('a', { href: '/forgot', 'data-link': '' }, 'Ask for a new link')),
  });
  mount(root, form);
  form.elements.password.focus();
}
