// The REST API through the gateway: sessions (auth), meetings (signaling).
import { ApiError } from './errors.js';

const STORAGE_KEY = 'meetease.session';

/** The signed-in session, or null. {access_token, refresh_token, expires_at, user} */
export function currentSession() {
  try {
    const raw = localStorage.getItem(STORAGE_KEY);
    return raw ? JSON.parse(raw) : null;
  } catch {
    return null;
  }
}

function saveSession(tokens, previous = null) {
  const session = {
    access_token: tokens.access_token,
    refresh_token: tokens.refresh_token || (previous && previous.refresh_token),
    expires_at: Date.now() + (Number(tokens.expires_in) || 900) * 1000,
    user: tokens.user || (previous && previous.user) || userFromToken(tokens.access_token),
  };
  localStorage.setItem(STORAGE_KEY, JSON.stringify(session));
  window.dispatchEvent(new CustomEvent('meetease:session', { detail: session }));
  return session;
}

export function clearSession() {
  localStorage.removeItem(STORAGE_KEY);
  window.dispatchEvent(new CustomEvent('meetease:session', { detail: null }));
}

/** Decode a JWT's claims without verifying it (the server verifies; we only read). */
export function decodeJwt(token) {
  try {
    const part = String(token).split('.')[1];
    const b64 = part.replace(/-/g, '+').replace(/_/g, '/').padEnd(Math.ceil(part.length / 4) * 4, '=');
    const bytes = Uint8Array.from(atob(b64), (c) => c.charCodeAt(0));
    return JSON.parse(new TextDecoder().decode(bytes));
  } catch {
    return null;
  }
}

function userFromToken(token) {
  const claims = decodeJwt(token);
  if (!claims) return null;
  return { id: claims.sub, email: claims.email, display_name: claims.name };
}

/** Display name of the signed-in person. */
export function userName(session = currentSession()) {
  const user = session && session.user;
  return (user && (user.display_name || user.name || user.email)) || '';
}

let refreshing = null;

async function refreshSession() {
  const session = currentSession();
  if (!session || !session.refresh_token) throw new ApiError('unauthenticated', 'not signed in', 401);
  if (!refreshing) {
    refreshing = raw('POST', '/api/v1/auth/refresh', { refresh_token: session.refresh_token })
      .then((tokens) => saveSession(tokens, session))
      .catch((error) => {
        if (error.status === 401) clearSession();
        throw error;
      })
      .finally(() => {
        refreshing = null;
      });
  }
  return refreshing;
}

async function raw(method, path, body, token, { as = 'json' } = {}) {
  const headers = { Accept: as === 'json' ? 'application/json' : '*/*' };
  // A Blob (a file) goes as it is; anything else as JSON.
  const isBlob = typeof Blob !== 'undefined' && body instanceof Blob;
  if (body !== undefined) headers['Content-Type'] = isBlob ? (body.type || 'application/octet-stream') : 'application/json';
  if (token) headers.Authorization = `Bearer ${token}`;
  let response;
  try {
    response = await fetch(path, {
      method,
      headers,
      body: body === undefined ? undefined : isBlob ? body : JSON.stringify(body),
    });
  } catch (error) {
    throw new ApiError('network', error.message, 0);
  }
  if (as === 'blob' && response.ok) return response.blob();
  const text = await response.text();
  let data = null;
  if (text) {
    try {
      data = JSON.parse(text);
    } catch {
      data = null;
    }
  }
  if (!response.ok) {
    const detail = (data && data.error) || {};
    const fallback = response.status >= 500 ? 'service_unavailable' : 'internal';
    throw new ApiError(detail.code || fallback, detail.message || response.statusText, response.status);
  }
  return data;
}

/**
 * Call the API. With `auth: true` (default when signed in) the access token is
 * sent and refreshed once if it has expired.
 */
export async function api(method, path, body, { auth = true, as = 'json' } = {}) {
  let session = auth ? currentSession() : null;
  if (session && session.expires_at && session.expires_at - Date.now() < 15_000) {
    try {
      session = await refreshSession();
    } catch {
      session = currentSession();
    }
  }
  try {
    return await raw(method, path, body, session && session.access_token, { as });
  } catch (error) {
    if (session && error.status === 401 && ['token_expired', 'unauthenticated'].includes(error.code)) {
      const fresh = await refreshSession();
      return raw(method, path, body, fresh.access_token, { as });
    }
    throw error;
  }
}

// --- auth ------------------------------------------------------------------------

export async function signUp({ email, password, display_name }) {
  const tokens = await raw('POST', '/api/v1/auth/register', { email, password, display_name });
  return saveSession(tokens);
}

export async function signIn({ email, password }) {
  const tokens = await raw('POST', '/api/v1/auth/login', { email, password });
  return saveSession(tokens);
}

// Sign-in with an OpenID provider: the browser goes to the start URL, the
// provider sends it back to auth, auth to the app with a one-time code in the
// fragment (#oauth_code=…), which is exchanged here for the usual tokens.

/** The names of the providers auth offers ([] when none is configured). */
export async function oauthProviders() {
  const data = await raw('GET', '/api/v1/auth/oauth/providers');
  const list = Array.isArray(data && data.providers) ? data.providers : [];
  return list.map((p) => (typeof p === 'string' ? p : p && p.name)).filter((name) => typeof name === 'string' && name);
}

/** Where the browser goes to sign in with `provider` (a page load, not a fetch). */
export function oauthStartUrl(provider) {
  return `/api/v1/auth/oauth/${encodeURIComponent(provider)}/start`;
}

/** Trade a finished provider sign-in's one-time code for a session. */
export async function exchangeOauthCode(code) {
  const tokens = await raw('POST', '/api/v1/auth/oauth/exchange', { code });
  return saveSession(tokens);
}

export async function signOut() {
  const session = currentSession();
  if (session) {
    try {
      await raw('POST', '/api/v1/auth/logout', { refresh_token: session.refresh_token }, session.access_token);
    } catch {
      // Signing out locally is what matters to the person; the server session expires anyway.
    }
  }
  clearSession();
}

export function requestPasswordReset(email) {
  return raw('POST', '/api/v1/auth/password-reset', { email });
}

export function confirmPasswordReset(token, newPassword) {
  return raw('POST', '/api/v1/auth/password-reset/confirm', { token, new_password: newPassword });
}

// --- meetings --------------------------------------------------------------------

/** A meeting as the UI needs it, whatever the exact field names the service uses. */
export function normalizeMeeting(m) {
  const start = m.starts_at || m.scheduled_start || m.start_time || m.scheduled_for || m.created_at;
  const end = m.ended_at || m.ends_at || m.end_time;
  const code = m.code || m.join_code || m.slug || m.id;
  return {
    id: m.id || m.meeting_id,
    code,
    title: m.title || m.topic || 'Meeting',
    startsAt: start ? new Date(start) : null,
    endsAt: end ? new Date(end) : null,
    durationMinutes: m.duration_minutes || null,
    status: m.status || m.state || null,
    kind: m.kind || null,
    hostId: m.host_id || null,
    timeZone: m.time_zone || null,
    invitees: m.invitees || [],
    link: new URL(m.join_url || m.link || `/m/${encodeURIComponent(code)}`, location.origin).href,
  };
}

export function createMeeting(body) {
  return api('POST', '/api/v1/meetings', body);
}

/** `when` is `upcoming` or `past` (proto `MeetingList`). */
export async function listMeetings(when) {
  const data = await api('GET', `/api/v1/meetings${when ? `?when=${encodeURIComponent(when)}` : ''}`);
  const list = Array.isArray(data) ? data : (data && (data.meetings || data.items)) || [];
  return list.map(normalizeMeeting);
}

/** The browser's IANA time zone, for scheduling in local wall-clock time. */
export function localTimeZone() {
  try {
    return Intl.DateTimeFormat().resolvedOptions().timeZone || 'UTC';
  } catch {
    return 'UTC';
  }
}

export async function getMeeting(code) {
  return normalizeMeeting(await api('GET', `/api/v1/meetings/${encodeURIComponent(code)}`));
}

/** Ask to join: returns {room_token, signaling_url, ...}. Guests pass a display name. */
export function joinMeeting(code, displayName) {
  const body = displayName ? { display_name: displayName } : {};
  return api('POST', `/api/v1/meetings/${encodeURIComponent(code)}/join`, body);
}

// --- profile (users service) -----------------------------------------------------

/** The signed-in person's profile: {id, email, display_name, time_zone, locale, bio, avatar_url, has_avatar, preferences}. */
export function getMyProfile() {
  return api('GET', '/api/v1/users/me');
}

/** Change some fields; absent ones stay. `preferences` may be partial too. */
export function updateMyProfile(patch) {
  return api('PATCH', '/api/v1/users/me', patch);
}

/** Upload a PNG, JPEG or WebP file as the avatar (the body is the file itself). */
export function uploadAvatar(file) {
  return api('PUT', '/api/v1/users/me/avatar', file);
}

export function deleteAvatar() {
  return api('DELETE', '/api/v1/users/me/avatar');
}

/**
 * An object URL for someone's avatar (the API needs the bearer token, so an
 * <img src> cannot load it directly). Revoke it when the image goes away.
 */
export async function avatarObjectUrl(avatarUrl, size = 256) {
  const url = new URL(avatarUrl, location.origin);
  url.searchParams.set('size', String(size));
  const blob = await api('GET', url.pathname + url.search, undefined, { as: 'blob' });
  return URL.createObjectURL(blob);
}
