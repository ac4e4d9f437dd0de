// The meetings home: start now, schedule, upcoming and past meetings.
import { createMeeting, currentSession, listMeetings, localTimeZone, normalizeMeeting } from '../api.js';
import { announce, formatWhen, h, mount } from '../dom.js';
import { humanMessage } from '../errors.js';
import { go } from '../nav.js';

export function renderHome(root) {
  if (!currentSession()) {
    go('/signin', { replace: true });
    return null;
  }
  const upcoming = h('ul', { class: 'meetings', 'aria-labelledby': 'upcoming-title' });
  const past = h('ul', { class: 'meetings', 'aria-labelledby': 'past-title' });
  const status = h('p', { class: 'muted', role: 'status' }, 'Loading your meetings…');
  const dialog = scheduleDialog(() => refresh());

  const newButton = h('button', {
    type: 'button',
    class: 'btn btn-primary btn-big',
    onclick: async () => {
      newButton.disabled = true;
      try {
        const meeting = normalizeMeeting(await createMeeting({ title: 'Instant meeting', settings: { guests_allowed: true } }));
        go(`/m/${encodeURIComponent(meeting.code)}`);
      } catch (error) {
        announce(humanMessage(error), { kind: 'error' });
      } finally {
        newButton.disabled = false;
      }
    },
  }, 'New meeting');

  const scheduleButton = h('button', {
    type: 'button',
    class: 'btn btn-big',
    'aria-haspopup': 'dialog',
    onclick: () => dialog.showModal(),
  }, 'Schedule');

  mount(
    root,
    h('section', { class: 'home' },
      h('div', { class: 'home-actions' },
        h('h1', {}, 'Meetings'),
        h('div', { class: 'row' }, newButton, scheduleButton)),
      status,
      h('section', { class: 'card' }, h('h2', { id: 'upcoming-title' }, 'Upcoming'), upcoming),
      h('section', { class: 'card' }, h('h2', { id: 'past-title' }, 'Past'), past)),
    dialog,
  );

  async function refresh() {
    try {
      const [up, done] = await Promise.all([listMeetings('upcoming'), listMeetings('past')]);
      up.sort((a, b) => (a.startsAt || 0) - (b.startsAt || 0));
      done.sort((a, b) => (b.startsAt || 0) - (a.startsAt || 0));
      mount(upcoming, up.length ? up.map((m) => meetingItem(m, false)) : h('li', { class: 'empty' }, 'Nothing scheduled. Start a meeting now or schedule one.'));
      mount(past, done.length ? done.map((m) => meetingItem(m, true)) : h('li', { class: 'empty' }, 'No past meetings yet.'));
      status.textContent = '';
    } catch (error) {
      if (error.status === 401) {
        go(`/signin?next=${encodeURIComponent('/')}`, { replace: true });
        return;
      }
      status.textContent = humanMessage(error);
    }
  }
  refresh();
  return () => dialog.close();
}

function meetingItem(m, isPast) {
  return h('li', { class: 'meeting' },
    h('div', { class: 'meeting-main' },
      h('strong', {}, m.title),
      h('span', { class: 'muted' }, m.startsAt ? formatWhen(m.startsAt) : ''),
      m.invitees && m.invitees.length ? h('span', { class: 'muted' }, `${m.invitees.length} invited`) : null),
    h('div', { class: 'row' },
      h('button', {
        type: 'button',
        class: 'btn btn-ghost',
        'aria-label': `Copy link to ${m.title}`,
        onclick: () => copyLink(m.link),
      }, 'Copy link'),
      isPast ? null : h('a', { class: 'btn', href: `/m/${encodeURIComponent(m.code)}`, 'data-link': '' }, 'Open')));
}

export async function copyLink(link) {
  try {
    await navigator.clipboard.writeText(link);
    announce('Link copied.');
  } catch {
    // Clipboard refused (no permission, insecure context): show it to copy by hand.
    window.prompt('Copy this link:', link);
  }
}

function scheduleDialog(onDone) {
  const error = h('p', { class: 'form-error', role: 'alert', hidden: true });
  const startDefault = new Date(Date.now() + 60 * 60 * 1000);
  startDefault.setMinutes(0, 0, 0);
  const local = new Date(startDefault.getTime() - startDefault.getTimezoneOffset() * 60000).toISOString().slice(0, 16);
  const form = h('form', {
    method: 'dialog',
    onsubmit: async (event) => {
      event.preventDefault();
      error.hidden = true;
      const data = new FormData(form);
      const invitees = String(data.get('invitees') || '')
        .split(/[\s,;]+/)
        .map((s) => s.trim())
        .filter(Boolean);
      const startsAt = String(data.get('starts_at') || '');
      if (!/^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}/.test(startsAt)) {
        error.textContent = 'Pick a start date and time.';
        error.hidden = false;
        return;
      }
      try {
        const meeting = normalizeMeeting(await createMeeting({
          title: String(data.get('title')).trim() || 'Meeting',
          // Local wall-clock time in the browser's zone (proto `CreateMeeting`).
          starts_at: startsAt,
          time_zone: localTimeZone(),
          duration_minutes: Number(data.get('duration_minutes')) || 30,
          invitees,
          settings: { guests_allowed: data.get('guests_allowed') === 'on', lobby: data.get('lobby') === 'on' },
        }));
        dialog.close();
        form.reset();
        announce(`Scheduled "${meeting.title}".`);
        onDone(meeting);
      } catch (e) {
        error.textContent = humanMessage(e);
        error.hidden = false;
      }
    },
  },
  h('h2', { id: 'schedule-title' }, 'Schedule a meeting'),
  h('div', { class: 'field' }, h('label', { for: 's-title' }, 'Title'), h('input', { id: 's-title', name: 'title', required: true })),
  h('div', { class: 'row' },
    h('div', { class: 'field' }, h('label', { for: 's-start' }, 'Starts'), h('input', { id: 's-start', name: 'starts_at', type: 'datetime-local', value: local, required: true })),
    h('div', { class: 'field' }, h('label', { for: 's-duration' }, 'Duration (minutes)'), h('input', { id: 's-duration', name: 'duration_minutes', type: 'number', min: 5, max: 1440, step: 5, value: 30 }))),
  h('div', { class: 'field' },
    h('label', { for: 's-invitees' }, 'Invitees'),
    h('textarea', { id: 's-invitees', name: 'invitees', rows: 3, 'aria-describedby': 's-invitees-hint' }),
    h('p', { id: 's-invitees-hint', class: 'hint' }, 'Email addresses, separated by commas or new lines.')),
  h('div', { class: 'check' },
    h('input', { id: 's-guests', name: 'guests_allowed', type: 'checkbox', checked: true }),
    h('label', { for: 's-guests' }, 'Let people without an account join')),
  h('div', { class: 'check' },
    h('input', { id: 's-lobby', name: 'lobby', type: 'checkbox' }),
    h('label', { for: 's-lobby' }, 'Hold newcomers in a lobby until I admit them')),
  error,
  h('div', { class: 'row end' },
    h('button', { type: 'button', class: 'btn btn-ghost', onclick: () => dialog.close() }, 'Cancel'),
    h('button', { type: 'submit', class: 'btn btn-primary' }, 'Schedule meeting')));
  const dialog = h('dialog', { class: 'dialog', 'aria-labelledby': 'schedule-title' }, form);
  return dialog;
}
