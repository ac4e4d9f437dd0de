// Local camera and microphone: acquiring, device lists, a level meter.
import { mediaErrorMessage } from './errors.js';

export const CAMERA_CONSTRAINTS = {
  width: { ideal: 1280 },
  height: { ideal: 720 },
  frameRate: { ideal: 30, max: 30 },
};

/**
 * Get camera and microphone, falling back to whichever one works. Returns
 * {stream, problems: [sentences]}; `stream` may have no tracks.
 */
export async function openLocalMedia({ audioDeviceId, videoDeviceId, audio = true, video = true } = {}) {
  const problems = [];
  const audioC = audio ? (audioDeviceId ? { deviceId: { exact: audioDeviceId } } : true) : false;
  const videoC = video ? { ...CAMERA_CONSTRAINTS, ...(videoDeviceId ? { deviceId: { exact: videoDeviceId } } : {}) } : false;
  if (!audioC && !videoC) return { stream: new MediaStream(), problems };
  if (!navigator.mediaDevices || !navigator.mediaDevices.getUserMedia) {
    return { stream: new MediaStream(), problems: ['This browser cannot use a camera or microphone here (the page must be opened over https or on localhost).'] };
  }
  try {
    return { stream: await navigator.mediaDevices.getUserMedia({ audio: audioC, video: videoC }), problems };
  } catch (both) {
    // One device may be the problem: try each alone so the other still works.
    const stream = new MediaStream();
    if (audioC) {
      try {
        (await navigator.mediaDevices.getUserMedia({ audio: audioC })).getTracks().forEach((t) => stream.addTrack(t));
      } catch (error) {
        problems.push(mediaErrorMessage(error, 'microphone'));
      }
    }
    if (videoC) {
      try {
        (await navigator.mediaDevices.getUserMedia({ video: videoC })).getTracks().forEach((t) => stream.addTrack(t));
      } catch (error) {
        problems.push(mediaErrorMessage(error, 'camera'));
      }
    }
    if (!problems.length) problems.push(mediaErrorMessage(both));
    return { stream, problems };
  }
}

export async function listDevices() {
  if (!navigator.mediaDevices || !navigator.mediaDevices.enumerateDevices) return { cameras: [], microphones: [], speakers: [] };
  const devices = await navigator.mediaDevices.enumerateDevices();
  const named = (kind, word) => devices
    .filter((d) => d.kind === kind)
    .map((d, i) => ({ id: d.deviceId, label: d.label || `${word} ${i + 1}` }));
  return {
    cameras: named('videoinput', 'Camera'),
    microphones: named('audioinput', 'Microphone'),
    speakers: named('audiooutput', 'Speaker'),
  };
}

/** Calls `onLevel(0..1)` about 10 times a second while the track plays. Returns a stop function. */
export function watchLevel(track, onLevel) {
  if (!track || typeof AudioContext === 'undefined') return () => {};
  const ctx = new AudioContext();
  const source = ctx.createMediaStreamSource(new MediaStream([track]));
  const analyser = ctx.createAnalyser();
  analyser.fftSize = 512;
  source.connect(analyser);
  const data = new Uint8Array(analyser.fftSize);
  const timer = setInterval(() => {
    analyser.getByteTimeDomainData(data);
    let sum = 0;
    for (const v of data) sum += ((v - 128) / 128) ** 2;
    onLevel(Math.min(1, Math.sqrt(sum / data.length) * 4));
  }, 100);
  return () => {
    clearInterval(timer);
    source.disconnect();
    ctx.close();
  };
}
