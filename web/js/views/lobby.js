// The lobby of /m/{code}: preview camera and microphone, pick devices and a name, join.
import { currentSession, getMeeting, getMyProfile, joinMeeting, userName } from '../api.js';
import { h, hueFor, initials, mount } from '../dom.js';
import { humanMessage } from '../errors.js';
import { listDevices, openLocalMedia, watchLevel } from '../media.js';

const PREFS_KEY = 'meetease.lobby';

function loadPrefs() {
  try {
    return JSON.parse(localStorage.getItem(PREFS_KEY)) || {};
  } catch {
    return {};
  }
}

function savePrefs(prefs) {
  localStorage.setItem(PREFS_KEY, JSON.stringify(prefs));
}

/**
 * Render the lobby. `onJoin({joinInfo, stream, micEnabled, cameraEnabled, displayName, title})`
 * is called once the server let us in. Returns a cleanup function.
 */
export function renderLobby(root, code, { onJoin, notice = null }) {
  const session = currentSession();
  const prefs = loadPrefs();
  let stream = new MediaStream();
  let micEnabled = prefs.micEnabled !== false;
  let cameraEnabled = prefs.cameraEnabled !== false;
  let stopLevel = () => {};
  let closed = false;
  /** The pending device request: Join waits for it, so nobody joins without the media they see. */
  let opening = Promise.resolve();
  let title = 'Join meeting';

  const video = h('video', { class: 'preview-video mirror', autoplay: true, muted: true, playsinline: true, 'aria-label': 'Your camera preview' });
  const avatar = h('div', { class: 'avatar big', 'aria-hidden': 'true' });
  const preview = h('div', { class: 'preview' }, video, avatar);
  const meter = h('meter', { id: 'mic-level', min: 0, max: 1, value: 0, 'aria-label': 'Microphone level' });
  const problems = h('div', { class: 'problems', role: 'alert' });
  const status = h('p', { class: 'form-error', role: 'alert', hidden: true });
  const heading = h('h1', { id: 'lobby-title' }, title);

  const micButton = h('button', { type: 'button', class: 'btn toggle', onclick: () => toggleMic() });
  const camButton = h('button', { type: 'button', class: 'btn toggle', onclick: () => toggleCamera() }, 'Camera');
  const cameraSelect = h('select', { id: 'camera-device', onchange: () => reopen() });
  const micSelect = h('select', { id: 'mic-device', onchange: () => reopen() });
  const nameInput = h('input', {
    id: 'display-name',
    name: 'display_name',
    autocomplete: 'name',
    required: true,
    maxlength: 64,
    value: (session && userName(session)) || prefs.displayName || '',
  });
  const joinButton = h('button', { type: 'submit', class: 'btn btn-primary btn-big' }, 'Join');
  const simulcast = new URLSearchParams(location.search).get('simulcast') !== '0';

  const form = h('form', { class: 'lobby-form', onsubmit: (event) => join(event) },
    h('div', { class: 'field' },
      h('label', { for: 'display-name' }, 'Your name'),
      nameInput),
    h('div', { class: 'field' }, h('label', { for: 'camera-device' }, 'Choose camera'), cameraSelect),
    h('div', { class: 'field' }, h('label', { for: 'mic-device' }, 'Choose microphone'), micSelect, meter),
    status,
    joinButton,
    session ? null : h('p', { class: 'muted' }, 'Have an account? ', h('a', { href: `/signin?next=${encodeURIComponent(location.pathname)}`, 'data-link': '' }, 'Sign in'), ' to join as yourself.'));

  mount(root,
    h('section', { class: 'lobby', 'aria-labelledby': 'lobby-title' },
      h('div', { class: 'lobby-preview' },
        preview,
        h('div', { class: 'row center', role: 'group', 'aria-label': 'Devices' }, micButton, camButton),
        problems),
      h('div', { class: 'lobby-side card' },
        heading,
        notice ? h('p', { class: 'notice', role: 'status' }, notice) : null,
        h('p', { class: 'muted' }, 'Check how you look and sound, then join.'),
        form)));

  getMeeting(code)
    .then((m) => {
      if (!closed && m.title) {
        title = m.title;
        heading.textContent = m.title;
      }
    })
    .catch(() => {});

  function renderToggles() {
    const hasMic = stream.getAudioTracks().length > 0;
    const hasCam = stream.getVideoTracks().length > 0;
    micButton.textContent = micEnabled ? 'Mute' : 'Unmute';
    micButton.setAttribute('aria-pressed', String(!micEnabled));
    micButton.classList.toggle('off', !micEnabled);
    micButton.disabled = !hasMic && !micEnabled;
    camButton.setAttribute('aria-pressed', String(cameraEnabled));
    camButton.classList.toggle('off', !cameraEnabled);
    camButton.title = cameraEnabled ? 'Turn camera off' : 'Turn camera on';
    const showVideo = cameraEnabled && hasCam;
    video.hidden = !showVideo;
    avatar.hidden = showVideo;
    const name = nameInput.value || userName(session) || '?';
    avatar.textContent = initials(name);
    avatar.style.setProperty('--hue', hueFor(name));
  }

  async function fillDevices() {
    const { cameras, microphones } = await listDevices();
    const current = (kind) => stream.getTracks().find((t) => t.kind === kind)?.getSettings().deviceId;
    const fill = (select, list, active, none) => mount(select,
      list.length ? list.map((d) => h('option', { value: d.id, selected: d.id === active }, d.label)) : h('option', { value: '' }, none));
    fill(cameraSelect, cameras, current('video'), 'No camera found');
    fill(micSelect, microphones, current('audio'), 'No microphone found');
  }

  async function open() {
    const result = await openLocalMedia({
      videoDeviceId: cameraSelect.value || prefs.cameraId,
      audioDeviceId: micSelect.value || prefs.micId,
      video: cameraEnabled,
    });
    if (closed) {
      result.stream.getTracks().forEach((t) => t.stop());
      return;
    }
    stream = result.stream;
    mount(problems, result.problems.map((p) => h('p', { class: 'problem' }, p)));
    video.srcObject = stream;
    const mic = stream.getAudioTracks()[0];
    if (mic) mic.enabled = micEnabled;
    stopLevel();
    stopLevel = watchLevel(mic, (level) => {
      meter.value = micEnabled ? level : 0;
    });
    renderToggles();
    await fillDevices();
  }

  /**
   * A signed-in person who has not toggled anything on this device joins the
   * way their profile says ("join muted", "camera off"). A slow or failing
   * profile service never holds the lobby up for more than a second.
   */
  async function accountDefaults() {
    if (!session || prefs.micEnabled !== undefined || prefs.cameraEnabled !== undefined) return;
    const timeout = new Promise((resolve) => setTimeout(() => resolve(null), 1000));
    const profile = await Promise.race([getMyProfile().catch(() => null), timeout]);
    const choices = profile && profile.preferences;
    if (!choices || closed) return;
    micEnabled = !choices.join_muted;
    cameraEnabled = !choices.camera_off;
    renderToggles();
  }

  function reopen() {
    savePrefs({ ...loadPrefs(), cameraId: cameraSelect.value, micId: micSelect.value });
    stopLevel();
    stream.getTracks().forEach((t) => t.stop());
    opening = opening.then(open, open);
    return opening;
  }

  function toggleMic() {
    micEnabled = !micEnabled;
    const mic = stream.getAudioTracks()[0];
    if (mic) mic.enabled = micEnabled;
    savePrefs({ ...loadPrefs(), micEnabled });
    renderToggles();
  }

  function toggleCamera() {
    opening = opening.then(flipCamera, flipCamera);
    return opening;
  }

  async function flipCamera() {
    cameraEnabled = !cameraEnabled;
    savePrefs({ ...loadPrefs(), cameraEnabled });
    if (!cameraEnabled) {
      for (const t of stream.getVideoTracks()) {
        t.stop();
        stream.removeTrack(t);
      }
      renderToggles();
    } else {
      const result = await openLocalMedia({ audio: false, videoDeviceId: cameraSelect.value });
      result.stream.getVideoTracks().forEach((t) => stream.addTrack(t));
      mount(problems, result.problems.map((p) => h('p', { class: 'problem' }, p)));
      if (!result.stream.getVideoTracks().length) cameraEnabled = false;
      video.srcObject = stream;
      renderToggles();
    }
  }

  async function join(event) {
    event.preventDefault();
    const displayName = nameInput.value.trim();
    if (!displayName) {
      status.textContent = 'Enter your name so others know who you are.';
      status.hidden = false;
      nameInput.setAttribute('aria-invalid', 'true');
      nameInput.focus();
      return;
    }
    status.hidden = true;
    joinButton.disabled = true;
    joinButton.setAttribute('aria-busy', 'true');
    joinButton.textContent = 'Joining…';
    savePrefs({ ...loadPrefs(), displayName: session ? loadPrefs().displayName : displayName });
    try {
      await opening;
      const joinInfo = await joinMeeting(code, displayName);
      closed = true;
      stopLevel();
      onJoin({ joinInfo, stream, micEnabled, cameraEnabled: cameraEnabled && stream.getVideoTracks().length > 0, displayName, title, simulcast });
    } catch (error) {
      status.textContent = humanMessage(error);
      status.hidden = false;
      joinButton.disabled = false;
      joinButton.removeAttribute('aria-busy');
      joinButton.textContent = 'Join';
    }
  }

  nameInput.addEventListener('input', renderToggles);
  renderToggles();
  opening = accountDefaults().then(open).catch((error) => console.error('opening devices', error));
  if (!nameInput.value) nameInput.focus();
  else joinButton.focus();

  return () => {
    if (closed) return;
    closed = true;
    stopLevel();
    stream.getTracks().forEach((t) => t.stop());
  };
}
