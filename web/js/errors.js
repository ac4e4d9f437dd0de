// Error codes (proto/src/error_code.rs) → what a person can do about them.

const MESSAGES = {
  malformed_body: 'Something in the request was not understood. Reload the page and try again.',
  invalid_field: null, // the server's message names the field: use it
  payload_too_large: 'That is too large. Shorten it (or pick a picture under 5 MB) and try again.',
  not_found: 'That page or resource does not exist.',
  rate_limited: 'Too many attempts. Wait a minute, then try again.',
  conflict: null,
  unauthenticated: 'Your session has ended. Sign in again.',
  token_expired: 'Your session has expired. Sign in again.',
  token_revoked: 'You were signed out. Sign in again.',
  forbidden: 'You are not allowed to do that.',
  invalid_credentials: 'Wrong email or password. Check them and try again.',
  weak_password: null,
  email_taken: 'An account with this email already exists. Sign in instead.',
  invalid_refresh_token: 'Your session has ended. Sign in again.',
  invalid_one_time_token: 'This link has expired or was already used. Ask for a new one.',
  unknown_provider: 'That sign-in provider is not offered here. Sign in another way.',
  invalid_oauth_state: 'That sign-in took too long, or was started in another browser. Try again.',
  oauth_provider_error: 'The sign-in provider did not sign you in. Try again, or sign in another way.',
  invalid_id_token: 'The sign-in provider\'s answer could not be trusted. Try again.',
  oauth_email_unverified: 'An account already uses this email, and the provider has not confirmed it is yours. Sign in with your password, or confirm the email with the provider first.',
  oauth_email_required: 'The sign-in provider did not share your email address. Allow it to, or sign up with your email.',
  provider_unavailable: 'The sign-in provider cannot be reached right now. Try again in a moment.',
  oauth_code_expired: 'That sign-in expired before it finished. Try again.',
  meeting_not_found: 'This meeting does not exist. Check the link, or ask the host for a new one.',
  meeting_locked: 'This meeting is locked by its host. Ask the host to unlock it.',
  meeting_full: 'This meeting is full. Try again when someone leaves.',
  meeting_ended: 'This meeting has ended.',
  unknown_time_zone: 'That time zone is not known. Pick another one.',
  invalid_schedule: null,
  too_many_invitees: 'That is too many invitees for one meeting.',
  guests_not_allowed: 'This meeting is for signed-in people only. Sign in (or create an account) to join.',
  malformed_message: 'The meeting server did not understand this browser. Reload the page.',
  unknown_message_type: 'The meeting server did not understand this browser. Reload the page.',
  unsupported_protocol_version: 'This page is out of date. Reload it to get the new version.',
  invalid_room_token: 'Your invitation to the room expired. Join again.',
  wrong_room: 'That invitation is for another meeting. Open the meeting link again.',
  unexpected_message: null,
  publish_not_allowed: 'You may not share your camera, microphone or screen in this meeting.',
  resume_failed: 'Your earlier session had ended. Join again.',
  participant_not_found: 'That person is no longer in the meeting.',
  user_not_found: 'That person has no MeetEase profile.',
  unsupported_image: 'That file is not a PNG, JPEG or WebP picture. Choose another one.',
  image_too_large: 'That picture has too many pixels. Choose one under 16 megapixels.',
  invalid_image: 'That picture is damaged or incomplete. Choose another one.',
  invalid_push_subscription: 'This browser offered a push subscription MeetEase cannot use.',
  too_many_push_subscriptions: 'Notifications are on for too many browsers. Turn them off on one you no longer use.',
  push_unsupported: null,
  push_denied: null,
  push_unavailable: null,
  service_unavailable: 'MeetEase is having trouble right now. Try again in a moment.',
  upstream_unavailable: 'MeetEase is having trouble right now. Try again in a moment.',
  upstream_timeout: 'MeetEase took too long to answer. Try again.',
  internal: 'Something went wrong on our side. Try again; if it keeps happening, tell the meeting host.',
  network: 'Cannot reach MeetEase. Check your connection and try again.',
};

/** An error from an API call or the signaling socket, with its stable code. */
export class ApiError extends Error {
  constructor(code, message, status = 0) {
    super(message || code);
    this.code = code;
    this.status = status;
  }
}

/** A sentence a person can act on, for an ApiError (or anything thrown). */
export function humanMessage(error) {
  if (!error) return '';
  const code = error.code;
  if (code && code in MESSAGES) return MESSAGES[code] || error.message || code;
  if (code) return error.message || code;
  return error.message || String(error);
}

/** getUserMedia / getDisplayMedia failures → what to do. */
export function mediaErrorMessage(error, what = 'camera or microphone') {
  switch (error && error.name) {
    case 'NotAllowedError':
    case 'SecurityError':
      return `Access to your ${what} is blocked. Allow it in the browser's site settings, then try again — or join without it.`;
    case 'NotReadableError':
    case 'AbortError':
      return `Your ${what} is in use by another app. Close that app, then try again.`;
    case 'NotFoundError':
    case 'OverconstrainedError':
      return `No ${what} was found. Plug one in, or join without it.`;
    default:
      return `Could not start your ${what}: ${error && error.message ? error.message : error}`;
  }
}

/** Why the server removed us (`removed.reason`) → a sentence. */
export function removedMessage(reason) {
  switch (reason) {
    case 'removed':
    case 'kicked':
    case 'host_removed':
      return 'You were removed from the meeting by the host.';
    case 'ended':
    case 'meeting_ended':
      return 'The host ended the meeting.';
    case 'denied':
    case 'not_admitted':
      return 'The host did not let you in.';
    case 'duplicate':
    case 'replaced':
      return 'You joined this meeting from another tab or device.';
    case 'locked':
    case 'meeting_locked':
      return MESSAGES.meeting_locked;
    default:
      return reason ? `You left the meeting (${reason}).` : 'You left the meeting.';
  }
}
