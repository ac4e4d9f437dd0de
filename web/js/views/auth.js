// Sign in and sign up.
import { confirmPasswordReset, requestPasswordReset, signIn, signUp } from '../api.js';
import { h, mount } from '../dom.js';
import { humanMessage } from '../errors.js';
import { go } from '../nav.js';

function field({ id, label, type = 'text', autocomplete, hint, required = true, minlength }) {
  const hintId = hint ? `${id}-hint` : null;
  return h('div', { class: 'field' },
    h('label', { for: id }, label),
    h('input', { id, name: id, type, autocomplete, required, minlength, 'aria-describedby': hintId }),
    hint ? h('p', { id: hintId, class: 'hint' }, hint) : null);
}

function authForm({ title, submit, fields, onSubmit, footer }) {
  const error = h('p', { class: 'form-error', role: 'alert', hidden: true });
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
  const form = authForm({
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
      h('p', { class: 'muted' }, h('a', { href: '/forgot', 'data-link': '' }, 'Forgot your password?')),
      h('p', { class: 'muted' }, 'New here? ',
        h('a', { href: `/signup${next !== '/' ? `?next=${encodeURIComponent(next)}` : ''}`, 'data-link': '' }, 'Create an account')),
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
    footer: h('p', { class: 'muted' }, 'Already have an account? ',
      h('a', { href: `/signin${next !== '/' ? `?next=${encodeURIComponent(next)}` : ''}`, 'data-link': '' }, 'Sign in')),
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
