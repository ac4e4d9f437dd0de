// /m/{code}: the lobby, then the meeting room.
import { currentSession, decodeJwt, joinMeeting, userName } from '../api.js';
import { announce, h, hueFor, initials, mount } from '../dom.js';
import { humanMessage, mediaErrorMessage, removedMessage } from '../errors.js';
import { bestGrid, wantedHeight } from '../layout.js';
import { MeetingClient } from '../rtc.js';
import { copyLink } from './home.js';
import { renderLobby } from './lobby.js';
import { go } from '../nav.js';
import { icon } from '../icons.js';

export function renderMeetingPage(root, code) {
  let cleanup = renderLobby(root, code, { onJoin: (joined) => enter(joined) });

  function enter(joined) {
    cleanup = renderRoom(root, code, joined, {
      onExit: (message) => {
        cleanup = renderAfter(root, code, message);
      },
    });
  }

  return () => {
    if (typeof cleanup === 'function') cleanup();
  };
}

/** After leaving / being removed: say what happened, offer to rejoin. */
function renderAfter(root, code, { title, text, canRejoin = true }) {
  document.body.classList.remove('in-meeting');
  window.dispatchEvent(new Event('meetease:topbar'));
  const heading = h('h1', { id: 'after-title' }, title);
  mount(root,
    h('section', { class: 'card narrow', 'aria-labelledby': 'after-title' },
      heading,
      text ? h('p', {}, text) : null,
      h('div', { class: 'row' },
        canRejoin
          ? h('button', {
            type: 'button',
            class: 'btn btn-primary',
            onclick: () => go(`/m/${encodeURIComponent(code)}`, { replace: true }),
          }, 'Rejoin')
          : null,
        h('a', { class: 'btn', href: '/', 'data-link': '' }, currentSession() ? 'Back to meetings' : 'Home'))));
  heading.setAttribute('tabindex', '-1');
  heading.focus();
  return null;
}

/** Is the room token's holder the host? Read from the (unverified) claims. */
export function tokenSaysHost(token) {
  const claims = decodeJwt(token) || {};
  const grants = claims.grants || claims.video || claims.grant || {};
  return Boolean(claims.is_host || claims.host || grants.is_host || grants.host || grants.roomAdmin);
}

function renderRoom(root, code, joined, { onExit }) {
  const { joinInfo, stream, displayName } = joined;
  const client = new MeetingClient({
    roomToken: joinInfo.room_token,
    signalingUrl: joinInfo.signaling_url || '/rtc',
    localStream: stream,
    micEnabled: joined.micEnabled,
    cameraEnabled: joined.cameraEnabled,
    simulcast: joined.simulcast,
    isHost: Boolean(joinInfo.participant && joinInfo.participant.grants && joinInfo.participant.grants.is_host)
      || tokenSaysHost(joinInfo.room_token),
    renewToken: () => joinMeeting(code, displayName),
  });
  // A handle for debugging and the end-to-end tests, with a short log of what happened.
  const log = [];
  window.meetease = { client, log };
  const note = (text) => {
    log.push(`${new Date().toISOString().slice(11, 23)} ${text}`);
    if (log.length > 200) log.shift();
  };
  for (const type of ['state', 'error', 'track', 'track-ended', 'mute', 'layer', 'publisher-layers', 'debug']) {
    client.addEventListener(type, (event) => {
      const d = event.detail || {};
      note(`${type} ${JSON.stringify({ ...d, track: undefined, receiver: undefined })}`);
    });
  }

  document.body.classList.add('in-meeting');
  window.dispatchEvent(new Event('meetease:topbar'));

  /** tile key → {el, video, avatar, name, micIcon, quality, participantId, source, trackId, stream} */
  const tiles = new Map();
  const audioEls = new Map();
  let pinned = null;
  let activeSpeaker = null;
  const qualities = new Map();
  let unread = 0;
  let panel = null; // 'chat' | 'people' | null
  const lobbyRequests = new Map();
  let ended = false;

  // --- skeleton ---------------------------------------------------------------
  const banner = h('div', { class: 'banner', role: 'alert', hidden: true });
  const stage = h('div', { class: 'stage', 'aria-label': 'Participants\u2019 video', role: 'region' });
  const spotlight = h('div', { class: 'spotlight', hidden: true });
  const grid = h('div', { class: 'grid' });
  stage.append(spotlight, grid);
  const audioBox = h('div', { hidden: true });

  const chatList = h('ol', { class: 'chat-list', 'aria-live': 'polite', 'aria-relevant': 'additions' });
  const chatInput = h('input', { id: 'chat-input', name: 'text', autocomplete: 'off', maxlength: 2000 });
  const chatPanel = h('aside', { id: 'chat-panel', class: 'panel', 'aria-label': 'Chat messages', hidden: true },
    h('h2', {}, 'Chat'),
    chatList,
    h('form', {
      class: 'chat-form',
      onsubmit: (event) => {
        event.preventDefault();
        if (client.sendChat(chatInput.value)) chatInput.value = '';
      },
    },
    h('label', { for: 'chat-input', class: 'visually-hidden' }, 'Message'),
    chatInput,
    h('button', { type: 'submit', class: 'btn btn-primary' }, 'Send')));

  const peopleList = h('ul', { class: 'people' });
  const lobbyList = h('ul', { class: 'people lobby-requests' });
  const hostBox = h('div', { class: 'host-controls', hidden: true });
  const peoplePanel = h('aside', { id: 'people-panel', class: 'panel', 'aria-label': 'Participants', hidden: true },
    h('h2', {}, 'People'),
    lobbyList,
    peopleList,
    hostBox);

  const micButton = h('button', { type: 'button', class: 'tool', onclick: () => toggleMic() });
  const camButton = h('button', { type: 'button', class: 'tool', onclick: () => toggleCamera() }, 'Camera');
  const shareButton = h('button', { type: 'button', class: 'tool', 'aria-pressed': 'false', onclick: () => toggleShare() }, 'Share screen');
  const chatButton = h('button', {
    type: 'button', class: 'tool', 'aria-label': 'Chat', 'aria-controls': 'chat-panel', 'aria-expanded': 'false',
    onclick: () => togglePanel('chat'),
  }, 'Chat', h('span', { class: 'badge', 'aria-hidden': 'true', hidden: true }));
  const peopleButton = h('button', {
    type: 'button', class: 'tool', 'aria-label': 'Participants', 'aria-controls': 'people-panel', 'aria-expanded': 'false',
    onclick: () => togglePanel('people'),
  }, 'People', h('span', { class: 'badge', 'aria-hidden': 'true', hidden: true }));
  const leaveButton = h('button', { type: 'button', class: 'tool leave', onclick: () => leave() }, 'Leave');
  const qualityEl = h('span', { class: 'quality', role: 'img', 'aria-label': 'Connection quality: unknown', dataset: { quality: 'unknown' } },
    h('i'), h('i'), h('i'), h('i'));
  const statusText = h('span', { class: 'room-status', role: 'status' }, 'Connecting…');

  const header = h('div', { class: 'room-header' },
    h('h1', { class: 'room-title' }, (joinInfo.meeting && joinInfo.meeting.title) || joined.title || 'Meeting'),
    statusText,
    h('div', { class: 'row' },
      qualityEl,
      h('button', { type: 'button', class: 'btn btn-ghost', onclick: () => copyLink(new URL(`/m/${encodeURIComponent(code)}`, location.origin).href) }, 'Copy link')));

  const toolbar = h('div', { class: 'toolbar', role: 'toolbar', 'aria-label': 'Meeting controls' },
    micButton, camButton, shareButton, chatButton, peopleButton, leaveButton);

  mount(root,
    h('section', { class: 'room', 'aria-label': 'Meeting' },
      header,
      banner,
      h('div', { class: 'room-body' }, stage, chatPanel, peoplePanel),
      toolbar,
      audioBox));

  // Roving arrow keys across the toolbar (Tab still works).
  toolbar.addEventListener('keydown', (event) => {
    if (!['ArrowLeft', 'ArrowRight'].includes(event.key)) return;
    const buttons = [...toolbar.querySelectorAll('button:not([disabled])')];
    const i = buttons.indexOf(document.activeElement);
    if (i < 0) return;
    const next = buttons[(i + (event.key === 'ArrowRight' ? 1 : buttons.length - 1)) % buttons.length];
    next.focus();
    event.preventDefault();
  });
  const onKey = (event) => {
    if (event.key === 'Escape' && panel) {
      togglePanel(panel);
    }
  };
  document.addEventListener('keydown', onKey);

  // --- tiles ------------------------------------------------------------------
  function tileKey(participantId, source) {
    return `${participantId}:${source === 'screen_share' ? 'screen' : 'camera'}`;
  }

  function ensureTile(participantId, source) {
    const key = tileKey(participantId, source);
    let tile = tiles.get(key);
    if (tile) return tile;
    const video = h('video', { autoplay: true, muted: true, playsinline: true });
    const avatar = h('div', { class: 'avatar', 'aria-hidden': 'true' });
    const name = h('span', { class: 'name' });
    const micIcon = h('span', { class: 'mic-off', hidden: true }, icon('micOff', { label: 'Microphone muted' }));
    const quality = h('span', { class: 'tile-quality', role: 'img', hidden: true });
    const pin = h('button', {
      type: 'button',
      class: 'pin',
      'aria-pressed': 'false',
      onclick: () => {
        pinned = pinned === key ? null : key;
        layout();
      },
    }, icon('pin'));
    const el = h('figure', { class: 'tile', dataset: { participantId, source: source === 'screen_share' ? 'screen_share' : 'camera' } },
      video, avatar, h('figcaption', {}, name, micIcon, quality), pin);
    tile = { key, el, video, avatar, name, micIcon, quality, pin, participantId, source, trackId: null, track: null };
    tiles.set(key, tile);
    grid.append(el);
    video.addEventListener('resize', () => layout());
    return tile;
  }

  function removeTile(key) {
    const tile = tiles.get(key);
    if (!tile) return;
    tile.video.srcObject = null;
    tile.el.remove();
    tiles.delete(key);
    if (pinned === key) pinned = null;
  }

  function participantName(id) {
    if (id === client.participantId) return displayName;
    const p = client.participants.get(id);
    return p ? p.display_name : 'Someone';
  }

  /** A participant's announced track of one source (TrackInfo), if any. */
  function trackOf(participantId, source) {
    const p = client.participants.get(participantId);
    if (!p) return null;
    for (const t of p.tracks.values()) if (t.source === source) return t;
    return null;
  }

  /** The received track of a participant's source on the subscriber connection, if any. */
  function remoteOf(participantId, source) {
    const info = trackOf(participantId, source);
    if (info && client.remoteTracks.has(info.track_id)) return client.remoteTracks.get(info.track_id);
    for (const r of client.remoteTracks.values()) {
      if (r.participant_id === participantId && r.source === source) return r;
    }
    return null;
  }

  /** Bring every tile's name, avatar, video and mute state up to date. */
  function refreshTiles() {
    const wanted = new Set();
    const me = client.participantId;
    // Own camera tile first, then everyone else by name.
    const others = [...client.participants.values()].filter((p) => p.participant_id !== me);
    others.sort((a, b) => a.display_name.localeCompare(b.display_name));
    const ownKey = tileKey(me || 'me', 'camera');
    wanted.add(ownKey);
    const own = ensureTile(me || 'me', 'camera');
    own.own = true;
    updateTile(own, { name: `${displayName} (you)`, nameForAvatar: displayName, stream: client.cameraEnabled ? client.localStream : null, micMuted: !client.micEnabled, mirror: true });
    if (client.screenStream) {
      const key = tileKey(me || 'me', 'screen_share');
      wanted.add(key);
      const t = ensureTile(me || 'me', 'screen_share');
      t.own = true;
      updateTile(t, { name: `${displayName} (you, screen)`, nameForAvatar: displayName, stream: client.screenStream, micMuted: false, screen: true });
    }
    for (const p of others) {
      const key = tileKey(p.participant_id, 'camera');
      wanted.add(key);
      const tile = ensureTile(p.participant_id, 'camera');
      const camInfo = trackOf(p.participant_id, 'camera');
      const micInfo = trackOf(p.participant_id, 'microphone');
      const remote = remoteOf(p.participant_id, 'camera');
      const micRemote = remoteOf(p.participant_id, 'microphone');
      updateTile(tile, {
        name: p.display_name,
        nameForAvatar: p.display_name,
        remote: camInfo && camInfo.muted ? null : remote,
        micMuted: micInfo ? Boolean(micInfo.muted) : !micRemote,
        quality: qualities.get(p.participant_id),
        isHost: p.is_host,
      });
      const screenInfo = trackOf(p.participant_id, 'screen_share') || remoteOf(p.participant_id, 'screen_share');
      if (screenInfo) {
        const skey = tileKey(p.participant_id, 'screen_share');
        wanted.add(skey);
        const stile = ensureTile(p.participant_id, 'screen_share');
        updateTile(stile, {
          name: `${p.display_name} (screen)`,
          nameForAvatar: p.display_name,
          remote: remoteOf(p.participant_id, 'screen_share'),
          micMuted: false,
          screen: true,
        });
      }
    }
    for (const key of [...tiles.keys()]) if (!wanted.has(key)) removeTile(key);
    // Keep DOM order: own tile first.
    const order = [ownKey, ...[...wanted].filter((k) => k !== ownKey)];
    for (const key of order) {
      const tile = tiles.get(key);
      if (tile && tile.el.parentNode === grid) grid.append(tile.el);
    }
    markSpeaker();
    layout();
  }

  function updateTile(tile, { name, nameForAvatar, stream: localStream = null, remote = null, micMuted, mirror = false, quality, screen = false, isHost = false }) {
    tile.el.setAttribute('aria-label', name);
    tile.name.textContent = isHost ? `${name} · host` : name;
    tile.avatar.textContent = initials(nameForAvatar);
    tile.avatar.style.setProperty('--hue', hueFor(nameForAvatar));
    tile.micIcon.hidden = !micMuted;
    tile.el.classList.toggle('screen', screen);
    tile.video.classList.toggle('mirror', mirror);
    tile.pin.setAttribute('aria-label', `Pin ${name}`);
    tile.pin.setAttribute('aria-pressed', String(pinned === tile.key));
    if (quality) {
      tile.quality.hidden = false;
      tile.quality.dataset.quality = quality;
      tile.quality.setAttribute('aria-label', `Connection: ${quality}`);
    } else {
      tile.quality.hidden = true;
    }
    // Which media to show.
    let source = null;
    if (localStream && localStream.getVideoTracks().length) source = localStream;
    if (remote && remote.track) {
      if (tile.trackId !== remote.track_id || !tile.stream) {
        tile.stream = new MediaStream([remote.track]);
        tile.trackId = remote.track_id;
        tile.track = remote.track;
        remote.track.onmute = () => refreshVideoVisibility(tile);
        remote.track.onunmute = () => refreshVideoVisibility(tile);
      }
      source = tile.stream;
    } else if (!localStream) {
      tile.trackId = remote ? remote.track_id : null;
      tile.stream = null;
      tile.track = null;
    }
    if (tile.video.srcObject !== source) {
      tile.video.srcObject = source;
      if (source) tile.video.play().catch(() => {});
    }
    tile.hasVideo = Boolean(source);
    refreshVideoVisibility(tile);
  }

  function refreshVideoVisibility(tile) {
    // A remote track is "muted" until its first frames arrive: show initials meanwhile.
    const live = tile.hasVideo && !(tile.track && tile.track.muted);
    tile.el.classList.toggle('video-off', !live);
    tile.el.dataset.video = live ? 'on' : 'off';
  }

  function markSpeaker() {
    for (const tile of tiles.values()) {
      const speaking = activeSpeaker && tile.participantId === activeSpeaker && tile.source !== 'screen_share';
      tile.el.classList.toggle('speaking', Boolean(speaking));
      if (speaking) tile.el.dataset.speaking = 'true';
      else delete tile.el.dataset.speaking;
    }
  }

  // --- layout and subscriptions ----------------------------------------------
  let layoutTimer = null;
  function layout() {
    const all = [...tiles.values()];
    const screenTile = all.find((t) => t.source === 'screen_share');
    const focus = (pinned && tiles.get(pinned)) || screenTile || null;
    const rect = stage.getBoundingClientRect();
    if (focus && all.length > 1) {
      stage.classList.add('has-spotlight');
      spotlight.hidden = false;
      if (focus.el.parentNode !== spotlight) spotlight.replaceChildren(focus.el);
      for (const t of all) if (t !== focus && t.el.parentNode !== grid) grid.append(t.el);
      const stripH = Math.max(90, Math.min(160, rect.height * 0.2));
      for (const t of all) {
        if (t === focus) {
          t.el.style.width = '';
          t.el.style.height = '';
        } else {
          t.el.style.height = `${Math.floor(stripH)}px`;
          t.el.style.width = `${Math.floor((stripH * 16) / 9)}px`;
        }
      }
    } else {
      stage.classList.remove('has-spotlight');
      spotlight.hidden = true;
      for (const t of all) if (t.el.parentNode !== grid) grid.append(t.el);
      const g = bestGrid(all.length, rect.width - 16, rect.height - 16, { gap: 8 });
      for (const t of all) {
        t.el.style.width = `${g.tileWidth}px`;
        t.el.style.height = `${g.tileHeight}px`;
      }
    }
    for (const t of all) t.pin.setAttribute('aria-pressed', String(pinned === t.key));
    clearTimeout(layoutTimer);
    layoutTimer = setTimeout(sendSubscriptions, 150);
  }

  /** Ask the SFU for each remote video at the height its tile is drawn. */
  function sendSubscriptions() {
    const dpr = window.devicePixelRatio || 1;
    for (const tile of tiles.values()) {
      if (tile.own || !tile.trackId) continue;
      const height = tile.el.getBoundingClientRect().height;
      tile.el.dataset.requestedHeight = String(wantedHeight(height, dpr));
      client.subscribe(tile.trackId, { maxHeight: wantedHeight(height, dpr) });
    }
  }

  const resizeObserver = new ResizeObserver(() => layout());
  resizeObserver.observe(stage);

  // --- audio --------------------------------------------------------------------
  function onRemoteTrack(info) {
    if (info.kind === 'audio') {
      let el = audioEls.get(info.track_id);
      if (!el) {
        el = h('audio', { autoplay: true });
        audioEls.set(info.track_id, el);
        audioBox.append(el);
      }
      el.srcObject = new MediaStream([info.track]);
      el.play().catch(() => {});
    }
    refreshTiles();
  }

  function onTrackEnded(info) {
    const el = audioEls.get(info.track_id);
    if (el) {
      el.srcObject = null;
      el.remove();
      audioEls.delete(info.track_id);
    }
    for (const tile of tiles.values()) {
      if (tile.trackId === info.track_id) {
        tile.trackId = null;
        tile.stream = null;
        tile.track = null;
      }
    }
    refreshTiles();
  }

  // --- controls -----------------------------------------------------------------
  function renderControls() {
    micButton.textContent = client.micEnabled ? 'Mute' : 'Unmute';
    micButton.setAttribute('aria-pressed', String(!client.micEnabled));
    micButton.classList.toggle('off', !client.micEnabled);
    camButton.setAttribute('aria-pressed', String(client.cameraEnabled));
    camButton.classList.toggle('off', !client.cameraEnabled);
    camButton.title = client.cameraEnabled ? 'Turn camera off' : 'Turn camera on';
    shareButton.setAttribute('aria-pressed', String(Boolean(client.screenStream)));
    shareButton.classList.toggle('on', Boolean(client.screenStream));
    shareButton.title = client.screenStream ? 'Stop sharing your screen' : 'Share your screen';
    if (!navigator.mediaDevices || !navigator.mediaDevices.getDisplayMedia) {
      shareButton.disabled = true;
      shareButton.title = 'This browser cannot share its screen';
    }
  }

  async function toggleMic() {
    try {
      await client.setMicEnabled(!client.micEnabled);
    } catch (error) {
      announce(mediaErrorMessage(error, 'microphone'), { kind: 'error' });
    }
    renderControls();
    refreshTiles();
  }

  async function toggleCamera() {
    camButton.disabled = true;
    try {
      await client.setCameraEnabled(!client.cameraEnabled, { width: { ideal: 1280 }, height: { ideal: 720 } });
    } catch (error) {
      announce(mediaErrorMessage(error, 'camera'), { kind: 'error' });
    }
    camButton.disabled = false;
    renderControls();
    refreshTiles();
  }

  async function toggleShare() {
    try {
      if (client.screenStream) await client.stopScreenShare();
      else await client.startScreenShare();
    } catch (error) {
      if (error && error.name === 'NotAllowedError') announce('Screen sharing was cancelled.');
      else announce(mediaErrorMessage(error, 'screen'), { kind: 'error' });
    }
    renderControls();
    refreshTiles();
  }

  function togglePanel(which) {
    panel = panel === which ? null : which;
    chatPanel.hidden = panel !== 'chat';
    peoplePanel.hidden = panel !== 'people';
    chatButton.setAttribute('aria-expanded', String(panel === 'chat'));
    peopleButton.setAttribute('aria-expanded', String(panel === 'people'));
    chatButton.classList.toggle('on', panel === 'chat');
    peopleButton.classList.toggle('on', panel === 'people');
    if (panel === 'chat') {
      unread = 0;
      renderBadges();
      chatInput.focus();
    }
    if (panel === 'people') renderPeople();
    layout();
  }

  function renderBadges() {
    const chatBadge = chatButton.querySelector('.badge');
    chatBadge.hidden = unread === 0;
    chatBadge.textContent = String(unread);
    const peopleBadge = peopleButton.querySelector('.badge');
    peopleBadge.hidden = lobbyRequests.size === 0;
    peopleBadge.textContent = String(lobbyRequests.size);
  }

  function leave() {
    client.leave();
  }

  // --- participants panel --------------------------------------------------------
  function renderPeople() {
    const me = client.participantId;
    const everyone = [...client.participants.values()];
    if (!everyone.some((p) => p.participant_id === me)) {
      everyone.unshift({ participant_id: me, display_name: displayName, is_host: client.isHost, tracks: new Map() });
    }
    mount(peopleList, everyone.map((p) => {
      const mic = trackOf(p.participant_id, 'microphone');
      const isMe = p.participant_id === me;
      const muted = isMe ? !client.micEnabled : !mic || mic.muted;
      return h('li', { class: 'person' },
        h('span', { class: 'avatar small', style: { '--hue': hueFor(p.display_name) }, 'aria-hidden': 'true' }, initials(p.display_name)),
        h('span', { class: 'person-name' }, isMe ? `${p.display_name} (you)` : p.display_name, p.is_host ? h('span', { class: 'tag' }, 'host') : null),
        muted ? icon('micOff', { label: 'Microphone muted' }) : null,
        client.isHost && !isMe
          ? h('span', { class: 'row' },
            h('button', { type: 'button', class: 'btn btn-small', disabled: muted, onclick: () => client.hostMute(p.participant_id) }, `Mute ${p.display_name}`),
            h('button', {
              type: 'button',
              class: 'btn btn-small btn-danger',
              onclick: () => {
                if (window.confirm(`Remove ${p.display_name} from the meeting?`)) client.hostRemove(p.participant_id);
              },
            }, `Remove ${p.display_name}`))
          : null);
    }));
    mount(lobbyList, [...lobbyRequests.values()].map((r) => h('li', { class: 'person waiting' },
      h('span', { class: 'person-name' }, `${r.display_name} wants to join`),
      h('span', { class: 'row' },
        h('button', { type: 'button', class: 'btn btn-small btn-primary', onclick: () => admit(r.participant_id, true) }, `Admit ${r.display_name}`),
        h('button', { type: 'button', class: 'btn btn-small', onclick: () => admit(r.participant_id, false) }, `Deny ${r.display_name}`)))));
    hostBox.hidden = !client.isHost;
    if (client.isHost) {
      mount(hostBox,
        h('h3', {}, 'Host controls'),
        h('button', { type: 'button', class: 'btn', 'aria-pressed': String(client.locked), onclick: () => client.hostLock(!client.locked) },
          client.locked ? 'Unlock meeting' : 'Lock meeting'),
        h('button', {
          type: 'button',
          class: 'btn btn-danger',
          onclick: () => {
            if (window.confirm('End the meeting for everyone?')) client.hostEndMeeting();
          },
        }, 'End meeting for all'));
    }
  }

  function admit(participantId, yes) {
    client.hostAdmit(participantId, yes);
    lobbyRequests.delete(participantId);
    renderBadges();
    renderPeople();
  }

  // --- chat ---------------------------------------------------------------------
  function addChat({ display_name, text, sent_at_ms, own }) {
    const when = sent_at_ms ? new Date(sent_at_ms) : new Date();
    chatList.append(h('li', { class: own ? 'chat own' : 'chat' },
      h('div', { class: 'chat-meta' }, h('strong', {}, own ? 'You' : display_name), ' ',
        h('time', { datetime: when.toISOString() }, when.toLocaleTimeString(undefined, { hour: '2-digit', minute: '2-digit' }))),
      h('p', { class: 'chat-text' }, text)));
    chatList.scrollTop = chatList.scrollHeight;
    if (panel !== 'chat' && !own) {
      unread += 1;
      renderBadges();
      announce(`${display_name}: ${text}`, { timeout: 4000 });
    }
  }

  // --- client events -------------------------------------------------------------
  client.addEventListener('state', (event) => {
    const { state } = event.detail;
    if (state === 'connecting') statusText.textContent = 'Connecting…';
    if (state === 'waiting') {
      statusText.textContent = 'Waiting for the host to let you in…';
      banner.hidden = false;
      banner.className = 'banner info';
      banner.textContent = 'Waiting for the host to let you in…';
    }
    if (state === 'joined') {
      statusText.textContent = '';
      banner.hidden = true;
    }
    if (state === 'reconnecting') {
      statusText.textContent = 'Reconnecting…';
      banner.hidden = false;
      banner.className = 'banner warn';
      banner.textContent = 'Reconnecting… Your connection dropped; MeetEase is getting you back in.';
    }
    if (state === 'left') return finish({ title: 'You left the meeting', text: null });
    if (state === 'removed') {
      const reason = event.detail.reason;
      return finish({
        title: 'You are no longer in the meeting',
        text: removedMessage(reason),
        canRejoin: !['removed', 'kicked', 'host_removed', 'ended', 'meeting_ended'].includes(reason),
      });
    }
    if (state === 'failed') return finish({ title: 'Could not join the meeting', text: humanMessage(event.detail), canRejoin: true });
    renderControls();
    refreshTiles();
  });
  client.addEventListener('participants', (event) => {
    const { joined: who, left } = event.detail || {};
    if (who && who !== client.participantId && client.state === 'joined') announce(`${participantName(who)} joined.`, { timeout: 3000 });
    if (left) {
      lobbyRequests.delete(left);
      renderBadges();
    }
    refreshTiles();
    if (panel === 'people') renderPeople();
  });
  client.addEventListener('track', (event) => onRemoteTrack(event.detail));
  client.addEventListener('track-ended', (event) => onTrackEnded(event.detail));
  client.addEventListener('mute', () => refreshTiles());
  client.addEventListener('local', () => {
    renderControls();
    refreshTiles();
  });
  client.addEventListener('host-muted', () => announce('The host muted your microphone.', { kind: 'warn' }));
  client.addEventListener('speakers', (event) => {
    const loudest = (event.detail.speakers || []).find((s) => s.level > 8);
    const next = loudest ? loudest.participant_id : null;
    if (next !== activeSpeaker) {
      activeSpeaker = next;
      markSpeaker();
    }
  });
  client.addEventListener('quality', (event) => {
    const { participant_id: id, quality } = event.detail;
    qualities.set(id, quality);
    if (id === client.participantId) {
      serverQualityAt = Date.now();
      showOwnQuality(quality);
    } else refreshTiles();
  });
  client.addEventListener('chat', (event) => addChat(event.detail));
  client.addEventListener('lobby', (event) => {
    lobbyRequests.set(event.detail.participant_id, event.detail);
    renderBadges();
    announce(`${event.detail.display_name} is waiting to join. Open People to admit them.`, { timeout: 8000 });
    if (panel === 'people') renderPeople();
  });
  client.addEventListener('locked', (event) => {
    if (client.state === 'joined' && event.detail.locked !== lastLocked && lastLocked !== null) {
      announce(event.detail.locked ? 'The meeting is now locked.' : 'The meeting is unlocked.');
    }
    lastLocked = event.detail.locked;
    if (panel === 'people') renderPeople();
  });
  let lastLocked = null;
  client.addEventListener('error', (event) => announce(humanMessage(event.detail), { kind: 'error' }));

  // Connection quality: the SFU's view when it sends one, else our own measurement.
  let serverQualityAt = 0;
  function showOwnQuality(quality) {
    qualityEl.dataset.quality = quality || 'unknown';
    qualityEl.setAttribute('aria-label', `Connection quality: ${quality || 'unknown'}`);
    qualityEl.title = `Connection quality: ${quality || 'unknown'}`;
  }
  const qualityTimer = setInterval(async () => {
    if (Date.now() - serverQualityAt < 10_000) return;
    try {
      const q = await client.localQuality();
      if (client.state === 'reconnecting') showOwnQuality('lost');
      else if (q) showOwnQuality(q);
    } catch {
      // Stats are best effort.
    }
  }, 2000);

  function finish(message) {
    if (ended) return;
    ended = true;
    teardown();
    onExit(message);
  }

  function teardown() {
    clearInterval(qualityTimer);
    clearTimeout(layoutTimer);
    resizeObserver.disconnect();
    document.removeEventListener('keydown', onKey);
    for (const el of audioEls.values()) el.srcObject = null;
    document.body.classList.remove('in-meeting');
  }

  renderControls();
  refreshTiles();
  client.start().catch((error) => {
    if (client.state !== 'failed') {
      finish({ title: 'Could not join the meeting', text: humanMessage(error), canRejoin: true });
    }
  });

  // Leaving the page (navigation, closing the tab) leaves the meeting.
  const onUnload = () => client.leave();
  window.addEventListener('pagehide', onUnload);
  return () => {
    window.removeEventListener('pagehide', onUnload);
    if (!ended) {
      ended = true;
      client.leave();
      teardown();
    }
  };
}
