// The profile page: name, time zone, language, bio, photo and meeting/notification preferences.
import { avatarObjectUrl, currentSession, deleteAvatar, getMyProfile, localTimeZone, updateMyProfile, uploadAvatar } from '../api.js';
import { announce, h, mount } from '../dom.js';
import { humanMessage } from '../errors.js';
import { go } from '../nav.js';
import { disablePush, enablePush, pushEnabled, pushSupported } from '../push.js';

/** IANA zones the browser knows, with the current one first if it is missing. */
function timeZones(current) {
  let zones = [];
  try {
    zones = Intl.supportedValuesOf('timeZone');
  } catch {
    zones = [];
  }
  const all = new Set(['UTC', ...zones]);
  if (current) all.add(current);
  return [...all].sort((a, b) => (a === 'UTC' ? -1 : b === 'UTC' ? 1 : a.localeCompare(b)));
}

function check(id, label, checked) {
  return h('div', { class: 'check' },
    h('input', { id, name: id, type: 'checkbox', checked }),
    h('label', { for: id }, label));
}

/** "Enable notifications on this device": subscribes this browser to web push. */
function devicePush() {
  const status = h('p', { class: 'hint', id: 'push-device-status', role: 'status' });
  const problem = h('p', { class: 'form-error', role: 'alert', hidden: true });
  const toggle = h('input', {
    id: 'push-device',
    type: 'checkbox',
    role: 'switch',
    'aria-describedby': 'push-device-status',
    disabled: !pushSupported(),
    onchange: async () => {
      problem.hidden = true;
      toggle.disabled = true;
      try {
        if (toggle.checked) {
          await enablePush();
          status.textContent = 'This browser shows MeetEase alerts as notifications.';
          announce('Notifications on.');
        } else {
          await disablePush();
          status.textContent = 'Notifications are off on this browser.';
          announce('Notifications off.');
        }
      } catch (e) {
        toggle.checked = !toggle.checked;
        problem.textContent = humanMessage(e);
        problem.hidden = false;
      } finally {
        toggle.disabled = false;
      }
    },
  });
  status.textContent = pushSupported()
    ? 'Alerts (someone joined your meeting, your meeting starts soon) as notifications, even when MeetEase is closed.'
    : 'This browser cannot show notifications from MeetEase.';
  if (pushSupported()) {
    pushEnabled().then((on) => {
      toggle.checked = on;
    }).catch(() => {});
  }
  return h('section', { class: 'card', 'aria-labelledby': 'device-title' },
    h('h2', { id: 'device-title' }, 'This device'),
    h('div', { class: 'check' },
      toggle,
      h('label', { for: 'push-device' }, 'Enable notifications on this device')),
    status,
    problem);
}

export function renderProfile(root) {
  if (!currentSession()) {
    go(`/signin?next=${encodeURIComponent('/profile')}`, { replace: true });
    return null;
  }
  const status = h('p', { class: 'muted', role: 'status' }, 'Loading your profile…');
  mount(root, h('section', { class: 'profile' }, h('h1', {}, 'Profile'), status));
  let objectUrl = null;
  let alive = true;

  async function load() {
    try {
      const profile = await getMyProfile();
      if (alive) draw(profile);
    } catch (error) {
      if (error.status === 401) {
        go(`/signin?next=${encodeURIComponent('/profile')}`, { replace: true });
        return;
      }
      status.textContent = humanMessage(error);
    }
  }

  function draw(profile) {
    const picture = h('img', { class: 'avatar-img', alt: 'Your profile photo', width: 128, height: 128 });
    const showPicture = async (p) => {
      try {
        const url = await avatarObjectUrl(p.avatar_url, 256);
        if (objectUrl) URL.revokeObjectURL(objectUrl);
        objectUrl = url;
        picture.src = url;
      } catch (error) {
        announce(humanMessage(error), { kind: 'error' });
      }
    };
    const photoError = h('p', { class: 'form-error', role: 'alert', hidden: true });
    const fileInput = h('input', {
      id: 'avatar-file',
      type: 'file',
      accept: 'image/png,image/jpeg,image/webp',
      'aria-describedby': 'avatar-hint',
      onchange: async () => {
        const file = fileInput.files && fileInput.files[0];
        if (!file) return;
        photoError.hidden = true;
        try {
          const updated = await uploadAvatar(file);
          removeButton.hidden = !updated.has_avatar;
          await showPicture(updated);
          announce('Photo updated.');
        } catch (error) {
          photoError.textContent = humanMessage(error);
          photoError.hidden = false;
        } finally {
          fileInput.value = '';
        }
      },
    });
    const removeButton = h('button', {
      type: 'button',
      class: 'btn btn-ghost',
      hidden: !profile.has_avatar,
      onclick: async () => {
        photoError.hidden = true;
        try {
          await deleteAvatar();
          removeButton.hidden = true;
          await showPicture(profile);
          announce('Photo removed.');
        } catch (error) {
          photoError.textContent = humanMessage(error);
          photoError.hidden = false;
        }
      },
    }, 'Remove photo');

    const prefs = profile.preferences || {};
    const channels = prefs.notifications || {};
    const error = h('p', { class: 'form-error', role: 'alert', hidden: true });
    const saveButton = h('button', { class: 'btn btn-primary', type: 'submit' }, 'Save profile');
    const zone = h('select', { id: 'p-time-zone', name: 'time_zone' },
      timeZones(profile.time_zone).map((z) => h('option', { value: z, selected: z === profile.time_zone }, z.replace(/_/g, ' '))));
    const form = h('form', {
      class: 'card',
      'aria-labelledby': 'details-title',
      onsubmit: async (event) => {
        event.preventDefault();
        error.hidden = true;
        for (const el of form.querySelectorAll('[aria-invalid]')) el.removeAttribute('aria-invalid');
        saveButton.disabled = true;
        const data = new FormData(form);
        try {
          const updated = await updateMyProfile({
            display_name: String(data.get('display_name') || ''),
            time_zone: String(data.get('time_zone') || 'UTC'),
            locale: String(data.get('locale') || ''),
            bio: String(data.get('bio') || ''),
            preferences: {
              join_muted: data.get('join_muted') === 'on',
              camera_off: data.get('camera_off') === 'on',
              notifications: {
                email: data.get('notify_email') === 'on',
                push: data.get('notify_push') === 'on',
                in_app: data.get('notify_in_app') === 'on',
              },
            },
          });
          announce('Profile saved.');
          // The top bar shows the name.
          const session = currentSession();
          if (session && session.user) {
            session.user.display_name = updated.display_name;
            localStorage.setItem('meetease.session', JSON.stringify(session));
            window.dispatchEvent(new CustomEvent('meetease:topbar'));
          }
        } catch (e) {
          error.textContent = humanMessage(e);
          error.hidden = false;
          const field = e.code === 'unknown_time_zone' ? 'time_zone'
            : e.code === 'invalid_field' ? String(e.message || '').split(':')[0] : null;
          const bad = field && form.elements[field];
          if (bad) {
            bad.setAttribute('aria-invalid', 'true');
            bad.focus();
          }
        } finally {
          saveButton.disabled = false;
        }
      },
    },
    h('h2', { id: 'details-title' }, 'About you'),
    h('div', { class: 'field' },
      h('label', { for: 'p-name' }, 'Display name'),
      h('input', { id: 'p-name', name: 'display_name', value: profile.display_name, required: true, maxlength: 100, autocomplete: 'name' })),
    h('div', { class: 'row' },
      h('div', { class: 'field' }, h('label', { for: 'p-time-zone' }, 'Time zone'), zone),
      h('div', { class: 'field' },
        h('label', { for: 'p-locale' }, 'Language'),
        h('input', { id: 'p-locale', name: 'locale', value: profile.locale, 'aria-describedby': 'p-locale-hint', maxlength: 35 }),
        h('p', { id: 'p-locale-hint', class: 'hint' }, 'A language tag such as en, fr or pt-BR.'))),
    h('div', { class: 'field' },
      h('label', { for: 'p-bio' }, 'Bio'),
      h('textarea', { id: 'p-bio', name: 'bio', rows: 3, maxlength: 1000 }, profile.bio)),
    h('fieldset', { class: 'prefs' },
      h('legend', {}, 'When I join a meeting'),
      check('join_muted', 'Join with my microphone off', !!prefs.join_muted),
      check('camera_off', 'Join with my camera off', !!prefs.camera_off)),
    h('fieldset', { class: 'prefs' },
      h('legend', {}, 'Notify me by'),
      check('notify_email', 'Email', channels.email !== false),
      check('notify_push', 'Push notifications', channels.push !== false),
      check('notify_in_app', 'In-app alerts', channels.in_app !== false)),
    error,
    h('div', { class: 'row end' }, saveButton));

    mount(root,
      h('section', { class: 'profile' },
        h('h1', {}, 'Profile'),
        h('section', { class: 'card photo', 'aria-labelledby': 'photo-title' },
          h('h2', { id: 'photo-title' }, 'Photo'),
          h('div', { class: 'row' },
            picture,
            h('div', {},
              h('label', { for: 'avatar-file', class: 'btn' }, 'Upload a photo'),
              fileInput,
              removeButton,
              h('p', { id: 'avatar-hint', class: 'hint' }, 'PNG, JPEG or WebP, up to 5 MB. It is cropped to a square.'))),
          photoError),
        form,
        devicePush(),
        h('p', { class: 'muted' }, `Signed in as ${profile.email}. Your browser's time zone is ${localTimeZone()}.`)));
    showPicture(profile);
  }

  load();
  return () => {
    alive = false;
    if (objectUrl) URL.revokeObjectURL(objectUrl);
  };
}
