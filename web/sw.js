// The service worker (served at /sw.js, scope /): shows each web push message from
// notify as a notification, and opens its link when the notification is clicked.
// A message is the alert as JSON: {id, kind, title, meeting_id?, at, url}.

self.addEventListener('install', () => self.skipWaiting());
self.addEventListener('activate', (event) => event.waitUntil(self.clients.claim()));

self.addEventListener('push', (event) => {
  let alert = {};
  try {
    alert = event.data ? event.data.json() : {};
  } catch {
    alert = { title: event.data ? event.data.text() : '' };
  }
  const body = typeof alert.title === 'string' && alert.title ? alert.title : 'You have a new alert.';
  event.waitUntil(self.registration.showNotification('MeetEase', {
    body,
    // One notification per alert, even if the push service delivers it twice.
    tag: typeof alert.id === 'string' ? alert.id : undefined,
    data: { url: typeof alert.url === 'string' ? alert.url : '/' },
  }));
});

self.addEventListener('notificationclick', (event) => {
  event.notification.close();
  let target;
  try {
    target = new URL(event.notification.data && event.notification.data.url, self.location.origin);
  } catch {
    target = new URL('/', self.location.origin);
  }
  if (target.protocol !== 'https:' && target.protocol !== 'http:') target = new URL('/', self.location.origin);
  event.waitUntil((async () => {
    const windows = await self.clients.matchAll({ type: 'window', includeUncontrolled: true });
    const open = windows.find((w) => w.url === target.href);
    if (open) return open.focus();
    return self.clients.openWindow(target.href);
  })());
});
