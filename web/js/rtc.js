// The meeting's media and signaling client.
//
// One `MeetingClient` per meeting visit. It speaks the `/rtc` WebSocket protocol
// (proto/src/signal.rs, docs/protocol.md) and keeps two RTCPeerConnections to the
// SFU (proto/src/sfu.rs):
//
// - the *publisher* connection, on which this browser offers its own tracks
//   (microphone, camera — optionally simulcast with RIDs q/h/f — and screen share);
// - the *subscriber* connection, on which the SFU offers the room's tracks and this
//   browser only answers. Each `subscriber_offer` lists which participant's track
//   each `mid` carries.
//
// Each side is always the offerer on its own connection, so there is no glare.
// The UI listens to events (`state`, `participants`, `track`, `track-ended`, `mute`,
// `speakers`, `quality`, `chat`, `lobby`, `locked`, `removed`, `error`, `layer`,
// `publisher-layers`) and
// calls the methods (`setMicEnabled`, `setCameraEnabled`, `startScreenShare`,
// `subscribe`, `sendChat`, host controls, `leave`).

import { ApiError } from './errors.js';

export const PROTOCOL_VERSION = 1;

/** Simulcast encodings for the camera: quarter, half and full resolution. */
export const SIMULCAST_ENCODINGS = [
  { rid: 'q', scaleResolutionDownBy: 4, maxBitrate: 150_000 },
  { rid: 'h', scaleResolutionDownBy: 2, maxBitrate: 500_000 },
  { rid: 'f', scaleResolutionDownBy: 1, maxBitrate: 1_500_000 },
];

/** The RID of each layer name the server uses (`publisher_layers`, `layer_changed`). */
export const LAYER_RIDS = { low: 'q', medium: 'h', high: 'f' };

const PING_EVERY_MS = 10_000;
const SILENCE_LIMIT_MS = 25_000;
const RECONNECT_DELAYS_MS = [500, 1000, 2000, 4000, 8000];
const RECONNECT_GIVE_UP_MS = 90_000;

/** Codes after which retrying with the same room token is pointless. */
const TOKEN_CODES = new Set(['invalid_room_token', 'token_expired', 'unauthenticated', 'token_revoked']);
/** Codes that end the visit: no reconnect. */
const FATAL_CODES = new Set(['meeting_not_found', 'meeting_locked', 'meeting_full', 'meeting_ended', 'forbidden', 'guests_not_allowed', 'wrong_room', 'unsupported_protocol_version']);

export class MeetingClient extends EventTarget {
  /**
   * @param {object} options
   * @param {string} options.roomToken the room token from `POST /meetings/{code}/join`
   * @param {string} options.signalingUrl `/rtc` or an absolute ws(s) URL
   * @param {MediaStream|null} options.localStream camera and microphone (either may be missing)
   * @param {boolean} options.micEnabled, options.cameraEnabled what the person chose in the lobby
   * @param {boolean} options.simulcast send the camera as three layers
   * @param {() => Promise<{room_token: string, signaling_url?: string}>} options.renewToken
   *        asks for a fresh room token (used when reconnecting after it expired)
   */
  constructor(options) {
    super();
    this.roomToken = options.roomToken;
    this.signalingUrl = options.signalingUrl || '/rtc';
    this.localStream = options.localStream || new MediaStream();
    this.micEnabled = options.micEnabled !== false && this.localStream.getAudioTracks().length > 0;
    this.cameraEnabled = options.cameraEnabled !== false && this.localStream.getVideoTracks().length > 0;
    this.simulcast = Boolean(options.simulcast);
    this.renewToken = options.renewToken || null;

    this.state = 'idle'; // idle | connecting | waiting | joined | reconnecting | left | removed | failed
    this.participantId = null;
    this.resumeToken = null;
    this.room = null;
    this.locked = false;
    this.seq = 0;
    this.isHost = Boolean(options.isHost);

    /** participant_id → {participant_id, display_name, user_id, is_host, tracks: Map<track_id, TrackInfo>} */
    this.participants = new Map();
    /** track_id → {track_id, participant_id, kind, source, mid, track} on the subscriber connection */
    this.remoteTracks = new Map();
    /** own published tracks: source → track_id, as the SFU announced them */
    this.ownTrackIds = new Map();
    /** own senders: source → RTCRtpTransceiver on the publisher connection */
    this.ownTransceivers = new Map();
    this.screenStream = null;
    /** last `subscribe` sent per track, so resizes do not repeat themselves */
    this.subscriptions = new Map();

    this.ws = null;
    this.pub = null;
    this.sub = null;
    this.pubChain = Promise.resolve();
    this.subChain = Promise.resolve();
    /** `publisher_layers` applied one at a time (a sender's parameters are read-modify-write). */
    this.layersChain = Promise.resolve();
    this.pendingPublisherAnswer = null;
    this.pendingCandidates = [];
    this.joinSent = false;
    this.lastHeard = 0;
    this.pingTimer = null;
    this.reconnectStarted = 0;
    this.reconnectAttempt = 0;
    this.reconnectTimer = null;
    this.onOnline = () => {
      if (this.state === 'reconnecting') this.scheduleReconnect(0);
    };
    // The browser knows the network went away before any socket notices.
    this.onOffline = () => {
      if (this.state === 'joined' || this.state === 'waiting') this.beginReconnect('offline');
    };
    window.addEventListener('online', this.onOnline);
    window.addEventListener('offline', this.onOffline);
  }

  // --- events -------------------------------------------------------------------

  emit(type, detail = {}) {
    this.dispatchEvent(new CustomEvent(type, { detail }));
  }

  setState(state, detail = {}) {
    if (this.state === state) return;
    this.state = state;
    this.emit('state', { state, ...detail });
  }

  // --- connecting ---------------------------------------------------------------

  /** Open the socket and join. Resolves when the join message is sent. */
  async start() {
    this.setState('connecting');
    await this.connect(null);
  }

  socketUrl() {
    const url = new URL(this.signalingUrl, location.href);
    if (url.protocol === 'http:') url.protocol = 'ws:';
    if (url.protocol === 'https:') url.protocol = 'wss:';
    return url.href;
  }

  async connect(resume) {
    this.closeSocket();
    this.closePeers();
    this.joinSent = false;
    this.pendingCandidates = [];
    const ws = new WebSocket(this.socketUrl());
    this.ws = ws;
    ws.addEventListener('message', (event) => this.onSocketMessage(ws, event));
    ws.addEventListener('close', (event) => this.onSocketClose(ws, event));
    await new Promise((resolve, reject) => {
      ws.addEventListener('open', resolve, { once: true });
      ws.addEventListener('close', () => reject(new ApiError('network', 'the signaling connection closed')), {
        once: true,
      });
    });
    this.lastHeard = Date.now();
    this.startPing();
    this.buildPublisher();
    this.buildSubscriber();
    const offer = await this.pub.createOffer();
    await this.pub.setLocalDescription(offer);
    this.send({
      type: 'join',
      token: this.roomToken,
      publisher_offer: this.pub.localDescription.sdp,
      tracks: this.declarations(),
      resume: resume || undefined,
      // Chat goes over this socket; a room data channel would only cost the
      // SFU an SCTP association it services on every pass.
      data_channel: false,
    });
    this.joinSent = true;
    for (const candidate of this.pendingCandidates.splice(0)) this.send(candidate);
  }

  buildPublisher() {
    const pc = new RTCPeerConnection({ iceServers: [], bundlePolicy: 'max-bundle', rtcpMuxPolicy: 'require' });
    this.pub = pc;
    this.ownTransceivers.clear();
    const stream = this.localStream;
    const mic = stream.getAudioTracks()[0] || null;
    const cam = stream.getVideoTracks()[0] || null;
    // Both transceivers exist even without a device, so turning one on later
    // needs no renegotiation (replaceTrack only).
    const micTx = pc.addTransceiver(mic && this.micEnabled ? mic : 'audio', { direction: 'sendonly', streams: [stream] });
    this.ownTransceivers.set('microphone', micTx);
    const videoInit = { direction: 'sendonly', streams: [stream] };
    if (this.simulcast) videoInit.sendEncodings = SIMULCAST_ENCODINGS.map((e) => ({ ...e }));
    const camTx = pc.addTransceiver(cam && this.cameraEnabled ? cam : 'video', videoInit);
    this.ownTransceivers.set('camera', camTx);
    preferCodec(camTx, 'video/VP8');
    if (this.screenStream) {
      const screenTx = pc.addTransceiver(this.screenStream.getVideoTracks()[0], {
        direction: 'sendonly',
        streams: [this.screenStream],
      });
      this.ownTransceivers.set('screen_share', screenTx);
    }
    pc.addEventListener('icecandidate', (event) => this.onLocalCandidate('publisher', event));
    pc.addEventListener('connectionstatechange', () => this.onPeerState(pc));
  }

  buildSubscriber() {
    // The SFU offers here; its first offer may have no media section (an empty
    // room) and so no BUNDLE group, which a max-bundle answerer would refuse.
    const pc = new RTCPeerConnection({ iceServers: [], rtcpMuxPolicy: 'require' });
    this.sub = pc;
    pc.addEventListener('icecandidate', (event) => this.onLocalCandidate('subscriber', event));
    pc.addEventListener('connectionstatechange', () => this.onPeerState(pc));
  }

  /** The publisher tracks by `mid`, as `join` / `publish_offer` declare them. */
  declarations() {
    const out = [];
    for (const [source, tx] of this.ownTransceivers) {
      if (tx.mid && !tx.stopped && tx.currentDirection !== 'stopped') out.push({ mid: tx.mid, source });
    }
    return out;
  }

  onLocalCandidate(target, event) {
    if (!event.candidate || !event.candidate.candidate) return;
    const message = { type: 'candidate', target, candidate: event.candidate.candidate };
    if (this.joinSent) this.send(message);
    else this.pendingCandidates.push(message);
  }

  onPeerState(pc) {
    if (pc !== this.pub && pc !== this.sub) return;
    this.emit('connection', { publisher: this.pub && this.pub.connectionState, subscriber: this.sub && this.sub.connectionState });
    if (pc.connectionState === 'failed' && this.state === 'joined') {
      this.beginReconnect('media connection failed');
    }
  }

  send(message) {
    if (!this.ws || this.ws.readyState !== WebSocket.OPEN) return false;
    this.ws.send(JSON.stringify({ v: PROTOCOL_VERSION, ...message }));
    return true;
  }

  startPing() {
    clearInterval(this.pingTimer);
    this.pingTimer = setInterval(() => {
      if (!this.ws || this.ws.readyState !== WebSocket.OPEN) return;
      if (Date.now() - this.lastHeard > SILENCE_LIMIT_MS) {
        // The server went quiet: treat the socket as dead now, without waiting
        // for a close handshake that a dead peer will never finish.
        this.beginReconnect('no answer to ping');
        return;
      }
      this.send({ type: 'ping' });
    }, PING_EVERY_MS);
  }

  closeSocket() {
    clearInterval(this.pingTimer);
    if (this.ws) {
      const ws = this.ws;
      this.ws = null;
      if (ws.readyState === WebSocket.OPEN || ws.readyState === WebSocket.CONNECTING) ws.close(1000);
    }
  }

  closePeers() {
    for (const pc of [this.pub, this.sub]) if (pc) pc.close();
    this.pub = null;
    this.sub = null;
    this.pubChain = Promise.resolve();
    this.subChain = Promise.resolve();
    this.layersChain = Promise.resolve();
    if (this.pendingPublisherAnswer) this.pendingPublisherAnswer.reject(new Error('connection reset'));
    this.pendingPublisherAnswer = null;
    for (const info of this.remoteTracks.values()) this.emit('track-ended', info);
    this.remoteTracks.clear();
    this.subscriptions.clear();
  }

  // --- reconnecting -------------------------------------------------------------

  onSocketClose(ws, event) {
    if (ws !== this.ws) return; // an old socket we replaced
    clearInterval(this.pingTimer);
    if (['left', 'removed', 'failed', 'idle'].includes(this.state)) return;
    if (this.state === 'connecting' && !this.resumeToken) {
      // Never got in: nothing to resume; say why.
      this.fail(new ApiError('network', event.reason || 'The meeting server closed the connection.'));
      return;
    }
    this.beginReconnect(event.reason || 'connection lost');
  }

  beginReconnect(reason) {
    if (this.state === 'reconnecting') return;
    this.reconnectStarted = Date.now();
    this.reconnectAttempt = 0;
    this.setState('reconnecting', { reason });
    this.closeSocket();
    this.closePeers();
    this.scheduleReconnect();
  }

  scheduleReconnect(delay) {
    clearTimeout(this.reconnectTimer);
    const wait = delay ?? RECONNECT_DELAYS_MS[Math.min(this.reconnectAttempt, RECONNECT_DELAYS_MS.length - 1)];
    this.reconnectTimer = setTimeout(() => this.tryReconnect(), wait);
  }

  async tryReconnect() {
    if (this.state !== 'reconnecting') return;
    if (navigator.onLine === false) {
      // Wait for the `online` event (or the next attempt) rather than fail fast.
      this.scheduleReconnect();
      return;
    }
    if (Date.now() - this.reconnectStarted > RECONNECT_GIVE_UP_MS) {
      this.fail(new ApiError('network', 'Could not reconnect to the meeting.'));
      return;
    }
    this.reconnectAttempt += 1;
    try {
      await this.connect(this.resumeToken);
      // The outcome arrives as `joined` (back in) or `error`/close (try again).
    } catch {
      if (this.state === 'reconnecting') this.scheduleReconnect();
    }
  }

  fail(error) {
    clearTimeout(this.reconnectTimer);
    this.closeSocket();
    this.closePeers();
    this.setState('failed', { code: error.code, message: error.message });
  }

  // --- server messages ----------------------------------------------------------

  onSocketMessage(ws, event) {
    if (ws !== this.ws) return;
    this.lastHeard = Date.now();
    let message;
    try {
      message = JSON.parse(event.data);
    } catch {
      return;
    }
    if (message.type !== 'pong') this.emit('debug', { text: `<- ${message.type}${message.seq != null ? ` seq ${message.seq}` : ''}` });
    if (typeof message.seq === 'number' && message.type !== 'joined') {
      if (this.seq && message.seq > this.seq + 1 && this.state === 'joined') {
        // We missed a room event: resume to get a fresh snapshot.
        this.beginReconnect('missed an update');
        return;
      }
      this.seq = Math.max(this.seq, message.seq);
    }
    const handler = this[`on_${message.type}`];
    if (handler) {
      Promise.resolve(handler.call(this, message)).catch((error) => {
        console.error(`handling ${message.type}`, error);
        this.emit('error', { code: 'internal', message: `${message.type}: ${error.message}` });
      });
    }
  }

  async on_joined(m) {
    clearTimeout(this.reconnectTimer);
    this.participantId = m.participant_id;
    this.resumeToken = m.resume_token;
    this.room = m.room;
    this.seq = Number(m.seq) || 0;
    this.locked = Boolean(m.locked);
    this.participants.clear();
    this.ownTrackIds.clear();
    for (const p of m.participants || []) this.upsertParticipant(p);
    const me = this.participants.get(this.participantId);
    if (me && me.is_host) this.isHost = true;
    await this.applyPublisherAnswer(m.publisher_answer);
    this.setState('joined');
    this.emit('participants');
    this.emit('locked', { locked: this.locked });
    this.syncOwnMute();
    await this.onSubscriberOffer(m.subscriber_offer);
  }

  on_waiting() {
    this.setState('waiting');
  }

  async on_publisher_answer(m) {
    if (this.pendingPublisherAnswer) {
      const pending = this.pendingPublisherAnswer;
      this.pendingPublisherAnswer = null;
      pending.resolve(m.sdp);
    }
  }

  on_subscriber_offer(m) {
    return this.onSubscriberOffer(m.offer);
  }

  on_participant_joined(m) {
    this.upsertParticipant(m.participant);
    this.emit('participants', { joined: m.participant.participant_id });
  }

  on_participant_updated(m) {
    this.upsertParticipant(m.participant);
    if (m.participant.participant_id === this.participantId && m.participant.is_host) this.isHost = true;
    this.emit('participants');
  }

  on_participant_left(m) {
    if (m.participant_id === this.participantId && this.participantId) {
      // We are the one who left: a host removed us, or the server timed us out.
      if (m.reason === 'timeout') this.beginReconnect('timed out');
      else this.end('removed', { reason: m.reason });
      return;
    }
    this.participants.delete(m.participant_id);
    for (const info of [...this.remoteTracks.values()]) {
      if (info.participant_id === m.participant_id) {
        this.remoteTracks.delete(info.track_id);
        this.emit('track-ended', info);
      }
    }
    this.emit('participants', { left: m.participant_id, reason: m.reason });
  }

  on_track_published(m) {
    const t = m.track;
    const p = this.participants.get(t.participant_id);
    if (p) p.tracks.set(t.track_id, t);
    if (t.participant_id === this.participantId) {
      this.ownTrackIds.set(t.source, t.track_id);
      this.syncOwnMute();
    }
    this.emit('participants');
  }

  on_track_unpublished(m) {
    const p = this.participants.get(m.participant_id);
    if (p) p.tracks.delete(m.track_id);
    const info = this.remoteTracks.get(m.track_id);
    if (info) {
      this.remoteTracks.delete(m.track_id);
      this.emit('track-ended', info);
    }
    this.emit('participants');
  }

  on_track_muted(m) {
    const p = this.participants.get(m.participant_id);
    let t = p && p.tracks.get(m.track_id);
    if (!t && p) {
      // Not announced to us (yet), but the subscriber offer told us what it is.
      const r = this.remoteTracks.get(m.track_id);
      if (r) {
        t = { track_id: r.track_id, participant_id: r.participant_id, kind: r.kind, source: r.source, layers: [], muted: false };
        p.tracks.set(t.track_id, t);
      } else {
        this.emit('debug', { text: `track_muted for unknown track ${m.track_id}` });
      }
    }
    if (t) t.muted = m.muted;
    if (m.participant_id === this.participantId) {
      // The host muted us (or the server confirms our own mute).
      const source = t ? t.source : [...this.ownTrackIds].find(([, id]) => id === m.track_id)?.[0];
      if (source === 'microphone' && m.muted && this.micEnabled) {
        this.setMicEnabled(false, { tell: false });
        this.emit('host-muted', {});
      }
    }
    this.emit('mute', m);
    this.emit('participants');
  }

  on_speakers(m) {
    this.emit('speakers', { speakers: m.speakers || [] });
  }

  on_quality(m) {
    this.emit('quality', { participant_id: m.participant_id, quality: m.quality });
  }

  on_layer_changed(m) {
    const info = this.remoteTracks.get(m.track_id);
    if (info) info.layer = m.layer;
    this.emit('layer', m);
  }

  /**
   * Dynacast: send only the layers of one of our tracks that someone receives.
   * Each message is the whole set; an encoding it does not name is paused, and
   * a single-layer track is on when the set is not empty.
   */
  on_publisher_layers(m) {
    const pc = this.pub;
    const active = Array.isArray(m.active) ? m.active : [];
    const rids = new Set(active.map((layer) => LAYER_RIDS[layer] || layer));
    const apply = async () => {
      if (pc !== this.pub) return; // a reconnect made a new connection, which starts with every layer on
      const tx = pc.getTransceivers().find((t) => t.mid != null && String(t.mid) === String(m.mid));
      if (!tx || tx.stopped) {
        this.emit('debug', { text: `publisher_layers for unknown mid ${m.mid}` });
        return;
      }
      const params = tx.sender.getParameters();
      const encodings = params.encodings || [];
      let changed = false;
      for (const encoding of encodings) {
        const on = encoding.rid ? rids.has(encoding.rid) : rids.size > 0;
        if (encoding.active !== on) {
          encoding.active = on;
          changed = true;
        }
      }
      if (changed) await tx.sender.setParameters(params);
      this.emit('publisher-layers', { track_id: m.track_id, mid: m.mid, active });
    };
    this.layersChain = this.layersChain.then(apply).catch((error) => {
      console.error('publisher_layers', error);
      this.emit('debug', { text: `publisher_layers ${m.mid}: ${error.message}` });
    });
    return this.layersChain;
  }

  on_chat(m) {
    this.emit('chat', { ...m, own: m.participant_id === this.participantId });
  }

  on_lobby_request(m) {
    this.emit('lobby', m);
  }

  on_room_locked(m) {
    this.locked = Boolean(m.locked);
    this.emit('locked', { locked: this.locked });
  }

  on_removed(m) {
    this.end('removed', { reason: m.reason });
  }

  on_meeting_ended() {
    this.end('removed', { reason: 'ended' });
  }

  on_pong() {}

  on_error(m) {
    const error = new ApiError(m.code, m.message);
    if (!['joined', 'waiting'].includes(this.state)) {
      // The join (or resume) itself failed.
      if (TOKEN_CODES.has(m.code) && this.renewToken && !this.renewing) {
        this.renewing = true;
        this.renewToken()
          .then((fresh) => {
            this.roomToken = fresh.room_token;
            if (fresh.signaling_url) this.signalingUrl = fresh.signaling_url;
            if (this.state === 'connecting' || this.state === 'reconnecting') {
              return this.connect(this.state === 'reconnecting' ? this.resumeToken : null);
            }
            return undefined;
          })
          .catch((e) => this.fail(e))
          .finally(() => {
            this.renewing = false;
          });
        return;
      }
      if (this.state === 'reconnecting' && !FATAL_CODES.has(m.code)) {
        // The old session may be gone: join afresh.
        this.resumeToken = null;
        this.scheduleReconnect();
        return;
      }
      this.fail(error);
      return;
    }
    this.emit('error', { code: m.code, message: m.message });
  }

  upsertParticipant(p) {
    const previous = this.participants.get(p.participant_id);
    const tracks = new Map((p.tracks || []).map((t) => [t.track_id, { ...t }]));
    const entry = { ...p, tracks };
    this.participants.set(p.participant_id, entry);
    if (p.participant_id === this.participantId) {
      for (const t of tracks.values()) this.ownTrackIds.set(t.source, t.track_id);
    }
    return previous;
  }

  // --- SDP ----------------------------------------------------------------------

  applyPublisherAnswer(sdp) {
    const pc = this.pub;
    this.pubChain = this.pubChain.then(() => pc.setRemoteDescription({ type: 'answer', sdp }));
    return this.pubChain;
  }

  /** Answer an SFU offer on the subscriber connection and map its mids to tracks. */
  onSubscriberOffer(offer) {
    const pc = this.sub;
    if (!pc || !offer) return Promise.resolve();
    this.subChain = this.subChain
      .then(async () => {
        if (pc !== this.sub) return;
        await pc.setRemoteDescription({ type: 'offer', sdp: offer.sdp });
        const answer = await pc.createAnswer();
        await pc.setLocalDescription(answer);
        this.send({ type: 'subscriber_answer', sdp: pc.localDescription.sdp });
        this.mapSubscriberTracks(pc, offer.tracks || []);
      })
      .catch((error) => {
        console.error('subscriber offer', error);
        this.emit('error', { code: 'internal', message: `Could not receive media: ${error.message}` });
      });
    return this.subChain;
  }

  mapSubscriberTracks(pc, tracks) {
    const byMid = new Map(tracks.map((t) => [String(t.mid), t]));
    const seen = new Set();
    for (const tx of pc.getTransceivers()) {
      const t = tx.mid != null && byMid.get(String(tx.mid));
      if (!t) continue;
      seen.add(t.track_id);
      const existing = this.remoteTracks.get(t.track_id);
      if (existing && existing.mid === tx.mid && existing.track === tx.receiver.track) continue;
      if (existing) this.emit('track-ended', existing);
      // A recycled mid may still be bound to another (now gone) track.
      for (const other of [...this.remoteTracks.values()]) {
        if (other.mid === tx.mid && other.track_id !== t.track_id) {
          this.remoteTracks.delete(other.track_id);
          this.emit('track-ended', other);
        }
      }
      const info = { ...t, mid: tx.mid, track: tx.receiver.track, receiver: tx.receiver, layer: null };
      this.remoteTracks.set(t.track_id, info);
      this.emit('track', info);
    }
    for (const info of [...this.remoteTracks.values()]) {
      if (!seen.has(info.track_id)) {
        this.remoteTracks.delete(info.track_id);
        this.emit('track-ended', info);
      }
    }
  }

  /** Offer the publisher connection again after adding or removing a track. */
  renegotiatePublisher() {
    const pc = this.pub;
    this.pubChain = this.pubChain.then(async () => {
      if (pc !== this.pub || this.state !== 'joined') return;
      const answered = new Promise((resolve, reject) => {
        this.pendingPublisherAnswer = { resolve, reject };
      });
      const offer = await pc.createOffer();
      await pc.setLocalDescription(offer);
      this.send({ type: 'publish_offer', sdp: pc.localDescription.sdp, tracks: this.declarations() });
      const sdp = await withTimeout(answered, 15_000, 'the server did not answer the new offer');
      await pc.setRemoteDescription({ type: 'answer', sdp });
    });
    return this.pubChain;
  }

  // --- own media ----------------------------------------------------------------

  syncOwnMute() {
    if (this.state !== 'joined') return;
    for (const [source, enabled] of [['microphone', this.micEnabled], ['camera', this.cameraEnabled]]) {
      const id = this.ownTrackIds.get(source);
      if (!id) {
        this.emit('debug', { text: `no track id yet for own ${source}; mute state sent once it is published` });
        continue;
      }
      const me = this.participants.get(this.participantId);
      const known = me && me.tracks.get(id);
      const serverMuted = known ? Boolean(known.muted) : false;
      if (serverMuted !== !enabled) {
        this.emit('debug', { text: `mute ${source} ${id} ${!enabled}` });
        this.send({ type: 'mute', track_id: id, muted: !enabled });
        if (known) known.muted = !enabled;
      }
    }
  }

  /** Mute or unmute the microphone (stops sending audio, tells the room). */
  async setMicEnabled(enabled, { tell = true } = {}) {
    const track = this.localStream.getAudioTracks()[0];
    if (enabled && !track) throw Object.assign(new Error('no microphone'), { name: 'NotFoundError' });
    this.micEnabled = Boolean(enabled);
    if (track) track.enabled = this.micEnabled;
    const tx = this.ownTransceivers.get('microphone');
    if (tx && track && this.micEnabled && tx.sender.track !== track) await tx.sender.replaceTrack(track);
    if (tell) this.syncOwnMute();
    this.emit('local', {});
  }

  /**
   * Turn the camera on or off. Off releases the device (its light goes out);
   * on asks for it again with `constraints`.
   */
  async setCameraEnabled(enabled, constraints = true) {
    const tx = this.ownTransceivers.get('camera');
    if (enabled) {
      let track = this.localStream.getVideoTracks()[0];
      if (!track || track.readyState === 'ended') {
        const stream = await navigator.mediaDevices.getUserMedia({ video: constraints });
        if (track) this.localStream.removeTrack(track);
        track = stream.getVideoTracks()[0];
        this.localStream.addTrack(track);
      }
      track.enabled = true;
      if (tx) await tx.sender.replaceTrack(track);
      this.cameraEnabled = true;
    } else {
      this.cameraEnabled = false;
      if (tx) await tx.sender.replaceTrack(null);
      for (const track of this.localStream.getVideoTracks()) {
        track.stop();
        this.localStream.removeTrack(track);
      }
    }
    this.syncOwnMute();
    this.emit('local', {});
  }

  /** Use another microphone or camera (a device picked in the meeting). */
  async replaceLocalTrack(kind, track) {
    const old = kind === 'audio' ? this.localStream.getAudioTracks()[0] : this.localStream.getVideoTracks()[0];
    if (old) {
      this.localStream.removeTrack(old);
      old.stop();
    }
    this.localStream.addTrack(track);
    const source = kind === 'audio' ? 'microphone' : 'camera';
    const enabled = kind === 'audio' ? this.micEnabled : this.cameraEnabled;
    track.enabled = enabled;
    const tx = this.ownTransceivers.get(source);
    if (tx && enabled) await tx.sender.replaceTrack(track);
    this.emit('local', {});
  }

  async startScreenShare() {
    if (this.screenStream) return;
    const stream = await navigator.mediaDevices.getDisplayMedia({ video: { frameRate: 15 }, audio: false });
    const track = stream.getVideoTracks()[0];
    track.contentHint = 'detail';
    this.screenStream = stream;
    track.addEventListener('ended', () => this.stopScreenShare());
    if (this.pub && this.state === 'joined') {
      const tx = this.pub.addTransceiver(track, { direction: 'sendonly', streams: [stream] });
      this.ownTransceivers.set('screen_share', tx);
      await this.renegotiatePublisher();
    }
    this.emit('local', { screen: true });
  }

  async stopScreenShare() {
    if (!this.screenStream) return;
    const stream = this.screenStream;
    this.screenStream = null;
    for (const track of stream.getTracks()) track.stop();
    const tx = this.ownTransceivers.get('screen_share');
    this.ownTransceivers.delete('screen_share');
    this.ownTrackIds.delete('screen_share');
    if (tx && this.pub && this.state === 'joined') {
      tx.stop();
      await this.renegotiatePublisher();
    }
    this.emit('local', { screen: false });
  }

  // --- asking for media ---------------------------------------------------------

  /**
   * Ask for a remote track at the size it is drawn. Sent only when something changed.
   * `maxHeight` 0 (not visible) unsubscribes the video.
   */
  subscribe(trackId, { maxHeight = null, subscribed = true } = {}) {
    const want = { subscribed: subscribed && maxHeight !== 0, max_height: maxHeight || undefined };
    const key = JSON.stringify(want);
    if (this.subscriptions.get(trackId) === key) return;
    if (this.send({ type: 'subscribe', track_id: trackId, ...want })) this.subscriptions.set(trackId, key);
  }

  sendChat(text) {
    const trimmed = String(text).trim();
    if (!trimmed) return false;
    return this.send({ type: 'chat', text: trimmed });
  }

  // --- host controls ------------------------------------------------------------

  hostMute(participantId) {
    const p = this.participants.get(participantId);
    if (!p) return;
    for (const t of p.tracks.values()) {
      if (t.source === 'microphone') this.send({ type: 'host_mute', participant_id: participantId, track_id: t.track_id });
    }
  }

  hostRemove(participantId) {
    this.send({ type: 'host_remove', participant_id: participantId });
  }

  hostLock(locked) {
    this.send({ type: 'host_lock', locked: Boolean(locked) });
  }

  hostAdmit(participantId, admit) {
    this.send({ type: 'host_admit', participant_id: participantId, admit: Boolean(admit) });
  }

  hostEndMeeting() {
    this.send({ type: 'host_end_meeting' });
  }

  // --- leaving ------------------------------------------------------------------

  leave() {
    if (['left', 'removed'].includes(this.state)) return;
    this.send({ type: 'leave' });
    this.end('left', {});
  }

  end(state, detail) {
    clearTimeout(this.reconnectTimer);
    window.removeEventListener('online', this.onOnline);
    window.removeEventListener('offline', this.onOffline);
    // Give the leave message a moment to go out before the socket closes.
    const ws = this.ws;
    this.ws = null;
    clearInterval(this.pingTimer);
    if (ws) setTimeout(() => ws.close(1000), 100);
    this.closePeers();
    this.stopLocalMedia();
    this.setState(state, detail);
  }

  stopLocalMedia() {
    for (const track of this.localStream.getTracks()) track.stop();
    if (this.screenStream) for (const track of this.screenStream.getTracks()) track.stop();
    this.screenStream = null;
  }

  // --- statistics ---------------------------------------------------------------

  /** Per remote video track: {track_id, participant_id, frameWidth, frameHeight, framesDecoded, rid?}. */
  async inboundVideoStats() {
    if (!this.sub) return [];
    const out = [];
    for (const info of this.remoteTracks.values()) {
      if (info.kind !== 'video' || !info.receiver) continue;
      const report = await info.receiver.getStats();
      for (const s of report.values()) {
        if (s.type === 'inbound-rtp' && s.kind === 'video') {
          out.push({
            track_id: info.track_id,
            participant_id: info.participant_id,
            source: info.source,
            frameWidth: s.frameWidth || 0,
            frameHeight: s.frameHeight || 0,
            framesDecoded: s.framesDecoded || 0,
            bytesReceived: s.bytesReceived || 0,
            layer: info.layer,
          });
        }
      }
    }
    return out;
  }

  /**
   * A rough local view of the connection: round-trip time and loss on the
   * publisher connection. Used when the server sends no `quality` events.
   */
  async localQuality() {
    if (!this.pub) return null;
    let rtt = null;
    let lost = 0;
    let received = 0;
    const report = await this.pub.getStats();
    for (const s of report.values()) {
      if (s.type === 'candidate-pair' && s.nominated && s.currentRoundTripTime != null) rtt = s.currentRoundTripTime;
      if (s.type === 'remote-inbound-rtp') {
        lost += Math.max(0, s.packetsLost || 0);
        received += s.packetsReceived || 0;
        if (rtt == null && s.roundTripTime != null) rtt = s.roundTripTime;
      }
    }
    const connected = this.pub.connectionState === 'connected';
    if (!connected) return this.pub.connectionState === 'failed' ? 'lost' : null;
    const loss = received + lost > 0 ? lost / (received + lost) : 0;
    if ((rtt != null && rtt > 0.4) || loss > 0.1) return 'poor';
    if ((rtt != null && rtt > 0.15) || loss > 0.02) return 'good';
    return 'excellent';
  }
}

function withTimeout(promise, ms, message) {
  let timer;
  return Promise.race([
    promise.finally(() => clearTimeout(timer)),
    new Promise((_, reject) => {
      timer = setTimeout(() => reject(new Error(message)), ms);
    }),
  ]);
}

/** Put `mime` first in a transceiver's codec list (VP8 simulcast is the best supported). */
function preferCodec(transceiver, mime) {
  try {
    const caps = RTCRtpSender.getCapabilities && RTCRtpSender.getCapabilities('video');
    if (!caps || !transceiver.setCodecPreferences) return;
    const first = caps.codecs.filter((c) => c.mimeType.toLowerCase() === mime.toLowerCase());
    const rest = caps.codecs.filter((c) => c.mimeType.toLowerCase() !== mime.toLowerCase());
    if (first.length) transceiver.setCodecPreferences([...first, ...rest]);
  } catch {
    // Keep the browser's order.
  }
}
