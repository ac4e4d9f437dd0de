// Web push on this device: the service worker (/sw.js) and the subscription that
// notify keeps (POST/DELETE /api/v1/notifications/push/subscriptions).
import { api } from './api.js';
import { ApiError } from './errors.js';

const STORAGE_KEY = 'meetease.push-subscription';

export function pushSupported() {
  return 'serviceWorker' in navigator && 'PushManager' in window && 'Notification' in window;
}

function fromBase64Url(text) {
  const b64 = text.replace(/-/g, '+').replace(/_/g, '/').padEnd(Math.ceil(text.length / 4) * 4, '=');
  return Uint8Array.from(atob(b64), (c) => c.charCodeAt(0));
}

function sameBytes(a, b) {
  if (!a || !b) return false;
  const x = new Uint8Array(a);
  const y = new Uint8Array(b);
  return x.length === y.length && x.every((v, i) => v === y[i]);
}

/** Register the service worker (it shows notifications); resolves to its registration. */
export async function registerServiceWorker() {
  if (!('serviceWorker' in navigator)) return null;
  return navigator.serviceWorker.register('/sw.js', { scope: '/' });
}

/** Whether this device has a subscription notify knows about. */
export async function pushEnabled() {
  if (!pushSupported() || Notification.permission !== 'granted') return false;
  const registration = await navigator.serviceWorker.getRegistration('/');
  const subscription = registration && (await registration.pushManager.getSubscription());
  return Boolean(subscription && localStorage.getItem(STORAGE_KEY));
}

/** Ask for permission, subscribe with notify's VAPID key and hand notify the subscription. */
export async function enablePush() {
  if (!pushSupported()) throw new ApiError('push_unsupported', 'This browser cannot receive notifications.');
  const registration = await registerServiceWorker();
  const permission = await Notification.requestPermission();
  if (permission !== 'granted') {
    throw new ApiError('push_denied', 'Notifications are blocked for MeetEase in this browser. Allow them in the site settings, then try again.');
  }
  const { public_key: publicKey } = await api('GET', '/api/v1/notifications/push/key');
  const key = fromBase64Url(publicKey);
  await navigator.serviceWorker.ready;
  let subscription = await registration.pushManager.getSubscription();
  // A subscription made with another server key cannot be used (the key was rotated).
  if (subscription && !sameBytes(subscription.options.applicationServerKey, key)) {
    await subscription.unsubscribe();
    subscription = null;
  }
  if (!subscription) {
    try {
      subscription = await registration.pushManager.subscribe({ userVisibleOnly: true, applicationServerKey: key });
    } catch (error) {
      throw new ApiError('push_unavailable', `This browser could not subscribe to notifications (${error.message}).`);
    }
  }
  const saved = await api('POST', '/api/v1/notifications/push/subscriptions', subscription.toJSON());
  localStorage.setItem(STORAGE_KEY, saved.id);
  return saved;
}

/** Forget this device's subscription, at notify and in the browser. */
export async function disablePush() {
  const id = localStorage.getItem(STORAGE_KEY);
  if (id) {
    try {
      await api('DELETE', `/api/v1/notifications/push/subscriptions/${encodeURIComponent(id)}`);
    } catch (error) {
      if (error.status !== 404) throw error;
    }
    localStorage.removeItem(STORAGE_KEY);
  }
  const registration = pushSupported() ? await navigator.serviceWorker.getRegistration('/') : null;
  const subscription = registration && (await registration.pushManager.getSubscription());
  if (subscription) await subscription.unsubscribe();
}
