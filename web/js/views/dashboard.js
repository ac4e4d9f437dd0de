// The analytics dashboard: meetings per day on the platform, and one meeting's call
// quality per participant over time (bitrate, packet loss, round-trip time).
// Data: analytics' /platform, /users/me/meetings and /meetings/{id}.
import { api, currentSession, listMeetings } from '../api.js';
import { PALETTE, barChart, lineChart } from '../charts.js';
import { h, mount } from '../dom.js';
import { humanMessage } from '../errors.js';
import { go } from '../nav.js';

const DAYS = 14;
const DAY_MS = 24 * 3600 * 1000;

/** The last `days` UTC days, oldest first, with the platform's counts (0 where none). */
export function dailySeries(perDay, days, now = Date.now()) {
  const counts = new Map(perDay.map((d) => [d.day, d.meetings]));
  const today = Math.floor(now / DAY_MS) * DAY_MS;
  const out = [];
  for (let i = days - 1; i >= 0; i -= 1) {
    const day = new Date(today - i * DAY_MS).toISOString().slice(0, 10);
    out.push({ label: day, short: day.slice(5), value: counts.get(day) || 0, title: `${day}: ${counts.get(day) || 0} meetings` });
  }
  return out;
}

/** Per participant, the points of one metric that has a value. */
export function metricSeries(summary, pick) {
  const names = new Map((summary.participants || []).map((p) => [p.participant_id, p.display_name]));
  return Object.entries(summary.quality || {}).map(([id, points], i) => ({
    name: names.get(id) || `Participant ${i + 1}`,
    points: points
      .map((p) => ({ t: new Date(p.at), v: pick(p) }))
      .filter((p) => typeof p.v === 'number' && Number.isFinite(p.v)),
  }));
}

export const METRICS = [
  { id: 'bitrate', title: 'Bitrate to the participant (kbit/s)', pick: (p) => (p.egress_bps == null ? null : p.egress_bps / 1000) },
  { id: 'loss', title: 'Packet loss from the participant (%)', pick: (p) => p.ingress_loss * 100, format: (v) => v.toFixed(1) },
  { id: 'rtt', title: 'Round-trip time (ms)', pick: (p) => p.rtt_ms },
];

export function renderDashboard(root) {
  if (!currentSession()) {
    go(`/signin?next=${encodeURIComponent('/dashboard')}`, { replace: true });
    return null;
  }
  let alive = true;
  const status = h('p', { class: 'muted', role: 'status' }, 'Loading figures…');
  const daily = h('div', { class: 'chart-box' });
  const stats = h('p', { class: 'muted' });
  const picker = h('select', { id: 'quality-meeting', name: 'meeting' });
  const quality = h('div', { class: 'quality-charts' });
  const legend = h('ul', { class: 'legend', 'aria-label': 'Participants' });
  mount(root,
    h('section', { class: 'dashboard' },
      h('h1', {}, 'Dashboard'),
      status,
      h('section', { class: 'card', 'aria-labelledby': 'daily-title' },
        h('h2', { id: 'daily-title' }, `Meetings per day (last ${DAYS} days, UTC)`),
        daily,
        stats),
      h('section', { class: 'card', 'aria-labelledby': 'quality-title' },
        h('h2', { id: 'quality-title' }, 'Call quality'),
        h('div', { class: 'field' },
          h('label', { for: 'quality-meeting' }, 'Meeting'),
          picker),
        legend,
        quality)));

  async function showMeeting(id) {
    mount(quality, h('p', { class: 'muted' }, 'Loading…'));
    mount(legend);
    try {
      const summary = await api('GET', `/api/v1/analytics/meetings/${encodeURIComponent(id)}`);
      if (!alive || picker.value !== id) return;
      const first = metricSeries(summary, () => 0);
      if (!first.length) {
        mount(quality, h('p', { class: 'empty' }, 'No quality samples were recorded for this meeting.'));
        return;
      }
      mount(legend, first.map((s, i) => h('li', {},
        h('span', { class: 'swatch', style: { background: PALETTE[i % PALETTE.length] }, 'aria-hidden': 'true' }), s.name)));
      mount(quality, METRICS.map((m) => h('figure', { class: 'chart-box', dataset: { metric: m.id } },
        h('figcaption', {}, m.title),
        lineChart({ label: m.title, series: metricSeries(summary, m.pick), format: m.format }))));
    } catch (error) {
      if (alive) mount(quality, h('p', { class: 'form-error', role: 'alert' }, humanMessage(error)));
    }
  }
  picker.addEventListener('change', () => showMeeting(picker.value));

  async function load() {
    try {
      const [platform, mine, titles] = await Promise.all([
        api('GET', `/api/v1/analytics/platform?days=${DAYS}`),
        api('GET', '/api/v1/analytics/users/me/meetings?limit=50'),
        // Titles live with signaling; the dashboard does without them if it is down.
        Promise.all([listMeetings('past'), listMeetings('upcoming')])
          .then((lists) => new Map(lists.flat().map((m) => [m.id, m.title])))
          .catch(() => new Map()),
      ]);
      if (!alive) return;
      status.textContent = '';
      const points = dailySeries(platform.meetings_per_day || [], DAYS);
      mount(daily, barChart({ label: `Meetings started per day, last ${DAYS} days: ${points.map((p) => `${p.short} ${p.value}`).join(', ')}`, points }));
      const count = (n, one, many) => `${n} ${n === 1 ? one : many}`;
      stats.textContent = `${count(points.reduce((n, p) => n + p.value, 0), 'meeting', 'meetings')}, ${count(platform.participant_joins, 'join', 'joins')}, `
        + `at most ${count(platform.concurrent_peak, 'person', 'people')} at once; ${count(platform.concurrent_now, 'person', 'people')} in meetings now.`;
      const meetings = mine.meetings || [];
      if (!meetings.length) {
        picker.disabled = true;
        mount(picker, h('option', { value: '' }, 'No meetings yet'));
        mount(quality, h('p', { class: 'empty' }, 'Host or join a meeting, and its call quality shows here.'));
        return;
      }
      mount(picker, meetings.map((m) => h('option', { value: m.meeting_id },
        `${titles.get(m.meeting_id) || 'Meeting'} — ${new Date(m.started_at).toLocaleString()} · ${m.total_participants} people${m.live ? ' · live' : ''}`)));
      showMeeting(meetings[0].meeting_id);
    } catch (error) {
      if (alive) status.textContent = humanMessage(error);
    }
  }
  load();
  return () => {
    alive = false;
  };
}
