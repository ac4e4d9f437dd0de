// A mock MeetEase platform for developing the web client without the Rust
// services: auth and meetings REST, the `/rtc` signaling WebSocket (proto
// signal.rs) and a stand-in SFU running in a headless Chromium page.
// Not used by the committed test stages; see web/tests/README.md.
//
//   node web/tests/mock/server.mjs [port]
import { createServer } from 'node:http';
import { readFile, stat } from 'node:fs/promises';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { randomUUID } from 'node:crypto';
import { WebSocketServer } from 'ws';

const here = path.dirname(fileURLToPath(import.meta.url));
const WEB_DIR = path.resolve(here, '..', '..');
const TYPES = { '.html': 'text/html', '.js': 'text/javascript', '.mjs': 'text/javascript', '.css': 'text/css', '.png': 'image/png', '.svg': 'image/svg+xml' };

const b64 = (o) => Buffer.from(JSON.stringify(o)).toString('base64url');
const jwt = (claims) => `${b64({ alg: 'none', typ: 'JWT' })}.${b64(claims)}.x`;
const unjwt = (t) => JSON.parse(Buffer.from(String(t).split('.')[1], 'base64url').toString());

export async function startMock({ port = 0, launchSfuPage } = {}) {
  const users = new Map(); // email → user
  const meetings = new Map(); // code → meeting
  const rooms = new Map(); // meeting id → {seq, participants: Map, locked}
  let sfu = null; // the SFU page's socket
  let nextCall = 1;
  const calls = new Map();

  function sfuCall(op, args) {
    const id = nextCall++;
    sfu.send(JSON.stringify({ id, op, args }));
    return new Promise((resolve, reject) => calls.set(id, { resolve, reject }));
  }

  function tokens(user) {
    return {
      access_token: jwt({ sub: user.id, email: user.email, name: user.display_name, exp: Date.now() / 1000 + 900 }),
      refresh_token: randomUUID(),
      token_type: 'Bearer',
      expires_in: 900,
      user,
    };
  }

  function authUser(req) {
    const h = req.headers.authorization || '';
    if (!h.startsWith('Bearer ')) return null;
    try {
      const c = unjwt(h.slice(7));
      return [...users.values()].find((u) => u.id === c.sub) || null;
    } catch {
      return null;
    }
  }

  const error = (res, status, code, message) => json(res, status, { error: { code, message } });
  function json(res, status, body) {
    res.writeHead(status, { 'content-type': 'application/json' });
    res.end(body === undefined ? '' : JSON.stringify(body));
  }
  async function body(req) {
    let data = '';
    for await (const chunk of req) data += chunk;
    return data ? JSON.parse(data) : {};
  }

  function meetingView(m) {
    return { ...m };
  }

  async function api(req, res, url) {
    const p = url.pathname;
    if (p === '/api/v1/auth/register' && req.method === 'POST') {
      const b = await body(req);
      if (users.has(b.email)) return error(res, 409, 'email_taken', 'taken');
      const user = { id: randomUUID(), email: b.email, display_name: b.display_name, password: b.password };
      users.set(b.email, user);
      return json(res, 201, tokens(user));
    }
    if (p === '/api/v1/auth/login' && req.method === 'POST') {
      const b = await body(req);
      const user = users.get(b.email);
      if (!user || user.password !== b.password) return error(res, 401, 'invalid_credentials', 'wrong');
      return json(res, 200, tokens(user));
    }
    if (p === '/api/v1/auth/logout') return json(res, 204);
    // No OpenID providers in the mock.
    if (p === '/api/v1/auth/oauth/providers' && req.method === 'GET') return json(res, 200, { providers: [] });
    const user = authUser(req);
    if (p === '/api/v1/meetings' && req.method === 'POST') {
      if (!user) return error(res, 401, 'unauthenticated', 'sign in');
      const b = await body(req);
      const code = `${Math.random().toString(36).slice(2, 5)}-${Math.random().toString(36).slice(2, 6)}-${Math.random().toString(36).slice(2, 5)}`;
      const now = new Date().toISOString();
      const m = {
        id: randomUUID(), code, join_url: `/m/${code}`, title: b.title || 'Meeting', host_id: user.id,
        kind: b.starts_at ? 'scheduled' : 'instant', status: 'scheduled', starts_at: b.starts_at || now,
        ends_at: now, time_zone: b.time_zone || 'UTC', duration_minutes: b.duration_minutes || 60,
        invitees: b.invitees || [], settings: { guests_allowed: true, lobby: false, mute_on_entry: false, max_participants: 100, ...(b.settings || {}) },
        started_at: null, ended_at: null, created_at: now, updated_at: now,
      };
      meetings.set(code, m);
      return json(res, 201, meetingView(m));
    }
    if (p === '/api/v1/meetings' && req.method === 'GET') {
      const when = url.searchParams.get('when');
      const mine = [...meetings.values()].filter((m) => user && m.host_id === user.id);
      return json(res, 200, { meetings: when === 'past' ? mine.filter((m) => m.status === 'ended') : mine.filter((m) => m.status !== 'ended') });
    }
    const m1 = p.match(/^\/api\/v1\/meetings\/([^/]+)(\/join)?$/);
    if (m1) {
      const m = meetings.get(m1[1]) || [...meetings.values()].find((x) => x.id === m1[1]);
      if (!m) return error(res, 404, 'meeting_not_found', 'no such meeting');
      if (!m1[2]) return json(res, 200, meetingView(m));
      const b = await body(req);
      if (!user && !b.display_name) return error(res, 422, 'invalid_field', 'display_name: required for guests');
      const participantId = randomUUID();
      const isHost = Boolean(user && user.id === m.host_id);
      const grants = { can_publish: ['camera', 'microphone', 'screen_share'], can_subscribe: true, can_publish_data: true, is_host: isHost };
      const displayName = b.display_name || user.display_name;
      const token = jwt({ room: m.id, meeting_id: m.id, participant_id: participantId, display_name: displayName, user_id: user && user.id, grants });
      return json(res, 200, {
        room_token: token, signaling_url: '/rtc', expires_at: new Date(Date.now() + 600_000).toISOString(), meeting: meetingView(m),
        participant: { participant_id: participantId, display_name: displayName, user_id: user ? user.id : null, grants, lobby: false },
      });
    }
    return error(res, 404, 'not_found', 'no such API');
  }

  async function serveStatic(req, res, url) {
    let file = path.join(WEB_DIR, path.normalize(decodeURIComponent(url.pathname)).replace(/^(\.\.[/\\])+/, ''));
    if (url.pathname === '/__sfu') file = path.join(here, 'sfu.html');
    if (url.pathname === '/__sfu.js') file = path.join(here, 'sfu-page.js');
    try {
      if (!(await stat(file)).isFile()) throw new Error('dir');
    } catch {
      file = path.join(WEB_DIR, 'index.html');
    }
    res.writeHead(200, { 'content-type': TYPES[path.extname(file)] || 'application/octet-stream' });
    res.end(await readFile(file));
  }

  const server = createServer(async (req, res) => {
    const url = new URL(req.url, 'http://x');
    try {
      if (url.pathname.startsWith('/api/')) await api(req, res, url);
      else await serveStatic(req, res, url);
    } catch (e) {
      error(res, 500, 'internal', String(e));
    }
  });

  // --- signaling -----------------------------------------------------------------
  const wss = new WebSocketServer({ noServer: true });
  server.on('upgrade', (req, socket, head) => {
    const url = new URL(req.url, 'http://x');
    wss.handleUpgrade(req, socket, head, (ws) => {
      if (url.pathname === '/sfu-control') onSfu(ws);
      else onClient(ws);
    });
  });

  function onSfu(ws) {
    sfu = ws;
    ws.on('message', (data) => {
      const msg = JSON.parse(data);
      if (msg.event) return onSfuEvent(msg.event);
      const call = calls.get(msg.id);
      calls.delete(msg.id);
      if (msg.error) call.reject(new Error(msg.error));
      else call.resolve(msg.result);
    });
  }

  const byParticipant = new Map(); // participant id → {ws, room, info}

  function broadcast(room, message, except = null) {
    room.seq += 1;
    for (const [id, p] of room.participants) {
      if (id !== except) p.ws.send(JSON.stringify({ v: 1, seq: room.seq, ...message }));
    }
  }

  function onSfuEvent(e) {
    if (e.type === 'subscriber_offer') {
      const p = byParticipant.get(e.participant_id);
      if (p) p.ws.send(JSON.stringify({ v: 1, type: 'subscriber_offer', offer: e.offer }));
    }
    if (e.type === 'track_published') {
      const p = byParticipant.get(e.track.participant_id);
      if (!p) return;
      p.info.tracks.push(e.track);
      if (p.room.participants.has(e.track.participant_id)) broadcast(p.room, { type: 'track_published', track: e.track });
    }
  }

  function onClient(ws) {
    let me = null;
    const send = (m) => ws.send(JSON.stringify({ v: 1, ...m }));
    ws.on('message', async (data) => {
      const m = JSON.parse(data);
      try {
        if (m.type === 'ping') return send({ type: 'pong' });
        if (m.type === 'join') {
          const c = unjwt(m.token);
          let room = rooms.get(c.room);
          if (!room) rooms.set(c.room, (room = { seq: 0, participants: new Map(), locked: false }));
          const info = { participant_id: c.participant_id, display_name: c.display_name, user_id: c.user_id || null, is_host: c.grants.is_host, tracks: [] };
          me = { ws, room, info };
          byParticipant.set(c.participant_id, me);
          const created = await sfuCall('create_session', { participant: c.participant_id, publisher_offer: m.publisher_offer, tracks: m.tracks });
          broadcast(room, { type: 'participant_joined', participant: info });
          room.participants.set(c.participant_id, me);
          byParticipant.set(c.participant_id, me);
          return send({
            type: 'joined', participant_id: c.participant_id, resume_token: randomUUID(), room: c.room,
            participants: [...room.participants.values()].map((p) => p.info), publisher_answer: created.publisher_answer,
            subscriber_offer: created.subscriber_offer, seq: room.seq, locked: room.locked,
          });
        }
        if (!me) return send({ type: 'error', code: 'unexpected_message', message: 'join first' });
        const pid = me.info.participant_id;
        if (m.type === 'subscriber_answer') await sfuCall('subscriber_answer', { participant: pid, sdp: m.sdp });
        if (m.type === 'candidate') await sfuCall('candidate', { participant: pid, target: m.target, candidate: m.candidate });
        if (m.type === 'publish_offer') {
          const r = await sfuCall('publisher_offer', { participant: pid, sdp: m.sdp, tracks: m.tracks });
          send({ type: 'publisher_answer', sdp: r.sdp });
        }
        if (m.type === 'mute') {
          const t = me.info.tracks.find((x) => x.track_id === m.track_id);
          if (t) t.muted = m.muted;
          broadcast(me.room, { type: 'track_muted', participant_id: pid, track_id: m.track_id, muted: m.muted });
        }
        if (m.type === 'chat') {
          broadcast(me.room, { type: 'chat', participant_id: pid, display_name: me.info.display_name, text: m.text, sent_at_ms: Date.now() });
        }
        if (m.type === 'leave') ws.close();
      } catch (e) {
        send({ type: 'error', code: 'internal', message: String(e) });
      }
    });
    ws.on('close', async () => {
      if (!me) return;
      const pid = me.info.participant_id;
      me.room.participants.delete(pid);
      byParticipant.delete(pid);
      broadcast(me.room, { type: 'participant_left', participant_id: pid, reason: 'left' });
      await sfuCall('delete_session', { participant: pid }).catch(() => {});
    });
  }

  await new Promise((resolve) => server.listen(port, '127.0.0.1', resolve));
  const url = `http://127.0.0.1:${server.address().port}`;
  const sfuPage = await launchSfuPage(`${url}/__sfu`);
  while (!sfu) await new Promise((r) => setTimeout(r, 50));
  return {
    url,
    async stop() {
      await sfuPage.close();
      wss.close();
      server.close();
      server.closeAllConnections();
    },
  };
}
