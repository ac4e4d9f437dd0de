// A stand-in SFU that runs in a headless Chromium page (mock platform only).
// It mirrors the SFU control API of proto/src/sfu.rs over a WebSocket: for each
// participant a publisher connection it answers and a subscriber connection it
// offers, forwarding every published track to everyone else.
/* global RTCPeerConnection, WebSocket */
const ws = new WebSocket(`ws://${location.host}/sfu-control`);
const sessions = new Map();

function reply(id, result, error) {
  ws.send(JSON.stringify({ id, result, error }));
}
function event(body) {
  ws.send(JSON.stringify({ event: body }));
}

async function gathered(pc) {
  if (pc.iceGatheringState === 'complete') return;
  await new Promise((resolve) => {
    const done = () => {
      if (pc.iceGatheringState === 'complete') resolve();
    };
    pc.addEventListener('icegatheringstatechange', done);
    setTimeout(resolve, 2000);
  });
}

function uuid() {
  return crypto.randomUUID();
}

async function subscriberOffer(s) {
  const offer = await s.sub.createOffer();
  await s.sub.setLocalDescription(offer);
  await gathered(s.sub);
  const tracks = [];
  for (const [trackId, tx] of s.forwarded) {
    const t = s.forwardInfo.get(trackId);
    if (tx.mid != null && !tx.stopped) tracks.push({ mid: tx.mid, track_id: trackId, participant_id: t.participant_id, kind: t.kind, source: t.source });
  }
  return { sdp: s.sub.localDescription.sdp, tracks };
}

function forward(s, info) {
  if (s.forwarded.has(info.track_id)) return;
  const tx = s.sub.addTransceiver(info.track, { direction: 'sendonly' });
  s.forwarded.set(info.track_id, tx);
  s.forwardInfo.set(info.track_id, info);
}

async function renegotiate(s) {
  if (s.negotiating) {
    s.again = true;
    return;
  }
  s.negotiating = true;
  const offer = await subscriberOffer(s);
  event({ type: 'subscriber_offer', participant_id: s.participant, offer });
}

const handlers = {
  async create_session({ participant, publisher_offer, tracks }) {
    const s = {
      participant,
      decls: new Map((tracks || []).map((t) => [String(t.mid), t.source])),
      published: new Map(),
      forwarded: new Map(),
      forwardInfo: new Map(),
      negotiating: true,
      again: false,
    };
    sessions.set(participant, s);
    s.pub = new RTCPeerConnection();
    s.sub = new RTCPeerConnection();
    s.pub.addEventListener('track', (e) => {
      const source = s.decls.get(String(e.transceiver.mid)) || (e.track.kind === 'audio' ? 'microphone' : 'camera');
      const info = { track_id: uuid(), participant_id: participant, kind: e.track.kind, source, track: e.track, layers: [], muted: false };
      s.published.set(info.track_id, info);
      event({ type: 'track_published', track: { ...info, track: undefined } });
      for (const other of sessions.values()) {
        if (other === s) continue;
        forward(other, info);
        renegotiate(other);
      }
    });
    await s.pub.setRemoteDescription({ type: 'offer', sdp: publisher_offer });
    const answer = await s.pub.createAnswer();
    await s.pub.setLocalDescription(answer);
    await gathered(s.pub);
    for (const other of sessions.values()) {
      if (other === s) continue;
      for (const info of other.published.values()) forward(s, info);
    }
    return { publisher_answer: s.pub.localDescription.sdp, subscriber_offer: await subscriberOffer(s) };
  },
  async publisher_offer({ participant, sdp, tracks }) {
    const s = sessions.get(participant);
    s.decls = new Map((tracks || []).map((t) => [String(t.mid), t.source]));
    await s.pub.setRemoteDescription({ type: 'offer', sdp });
    const answer = await s.pub.createAnswer();
    await s.pub.setLocalDescription(answer);
    await gathered(s.pub);
    return { sdp: s.pub.localDescription.sdp };
  },
  async subscriber_answer({ participant, sdp }) {
    const s = sessions.get(participant);
    await s.sub.setRemoteDescription({ type: 'answer', sdp });
    s.negotiating = false;
    if (s.again) {
      s.again = false;
      renegotiate(s);
    }
    return {};
  },
  async candidate({ participant, target, candidate }) {
    const s = sessions.get(participant);
    const pc = target === 'publisher' ? s.pub : s.sub;
    await pc.addIceCandidate({ candidate, sdpMLineIndex: 0 }).catch(() => {});
    return {};
  },
  async delete_session({ participant }) {
    const s = sessions.get(participant);
    if (!s) return {};
    sessions.delete(participant);
    s.pub.close();
    s.sub.close();
    for (const other of sessions.values()) {
      let changed = false;
      for (const trackId of s.published.keys()) {
        const tx = other.forwarded.get(trackId);
        if (tx) {
          tx.stop();
          other.forwarded.delete(trackId);
          changed = true;
        }
      }
      if (changed) renegotiate(other);
    }
    return {};
  },
};

ws.addEventListener('message', async (e) => {
  const { id, op, args } = JSON.parse(e.data);
  try {
    reply(id, await handlers[op](args));
  } catch (error) {
    reply(id, null, String(error && error.stack ? error.stack : error));
  }
});
ws.addEventListener('open', () => {
  document.title = 'sfu ready';
});
