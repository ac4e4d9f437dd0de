//! The registry of machine-readable error codes.
//!
//! A code, once published, never changes meaning: clients branch on it. Each code
//! carries the HTTP status it is answered with, so every service maps it the same way.

use serde::{Deserialize, Serialize};

macro_rules! error_codes {
    ($($(#[$doc:meta])* $variant:ident = ($code:literal, $status:literal),)*) => {
        /// A stable, machine-readable error code, with the HTTP status it maps to.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
        #[serde(rename_all = "snake_case")]
        pub enum ErrorCode {
            $($(#[$doc])* $variant,)*
        }

        impl ErrorCode {
            /// Every registered code, for documentation and tests.
            pub const ALL: &'static [ErrorCode] = &[$(ErrorCode::$variant,)*];

            /// The code as it appears on the wire.
            pub const fn as_str(self) -> &'static str {
                match self { $(ErrorCode::$variant => $code,)* }
            }

            /// The HTTP status a response carrying this code uses.
            pub const fn http_status(self) -> u16 {
                match self { $(ErrorCode::$variant => $status,)* }
            }
        }
    };
}

error_codes! {
    // --- generic request problems ---
    /// The body is not valid JSON or does not match the expected shape.
    MalformedBody = ("malformed_body", 400),
    /// A field has a value outside what is allowed (the message names the field).
    InvalidField = ("invalid_field", 422),
    /// The request body is larger than the endpoint accepts.
    PayloadTooLarge = ("payload_too_large", 413),
    /// The content type is not one the endpoint accepts.
    UnsupportedMediaType = ("unsupported_media_type", 415),
    /// No route matches the path.
    NotFound = ("not_found", 404),
    /// The route exists but not with this method.
    MethodNotAllowed = ("method_not_allowed", 405),
    /// The caller is sending too fast; see `Retry-After`.
    RateLimited = ("rate_limited", 429),
    /// The request conflicts with the current state (for example a duplicate).
    Conflict = ("conflict", 409),
    // --- identity ---
    /// No credentials, or credentials that could not be verified.
    Unauthenticated = ("unauthenticated", 401),
    /// The token has expired.
    TokenExpired = ("token_expired", 401),
    /// The token has been revoked.
    TokenRevoked = ("token_revoked", 401),
    /// Authenticated, but not allowed to do this.
    Forbidden = ("forbidden", 403),
    /// Wrong email or password (deliberately the same for both).
    InvalidCredentials = ("invalid_credentials", 401),
    /// The password is too short, too long or too common (the message says which).
    WeakPassword = ("weak_password", 422),
    /// An account with this email already exists.
    EmailTaken = ("email_taken", 409),
    /// The refresh token is unknown, expired, already used or its session was revoked.
    InvalidRefreshToken = ("invalid_refresh_token", 401),
    /// An email-verification or password-reset token is unknown, expired or already used.
    InvalidOneTimeToken = ("invalid_one_time_token", 400),
    /// No OpenID provider of this name is configured.
    UnknownProvider = ("unknown_provider", 404),
    /// The OAuth `state` is missing, unknown, expired, already used, or not this browser's.
    InvalidOauthState = ("invalid_oauth_state", 400),
    /// The OpenID provider answered with an error, or refused to exchange the code.
    OauthProviderError = ("oauth_provider_error", 400),
    /// The provider's ID token failed verification (signature, issuer, audience, expiry, nonce).
    InvalidIdToken = ("invalid_id_token", 401),
    /// The provider does not vouch for the email, and an account with that email exists.
    OauthEmailUnverified = ("oauth_email_unverified", 409),
    /// The provider shared no email address, and one is needed to create the account.
    OauthEmailRequired = ("oauth_email_required", 422),
    /// The OpenID provider cannot be reached or answered something unusable; retry later.
    ProviderUnavailable = ("provider_unavailable", 502),
    /// The action needs a fresh proof of identity (the password, or a sign-in minutes ago).
    ReauthenticationRequired = ("reauthentication_required", 403),
    // --- meetings ---
    /// The meeting does not exist (or the caller may not know it exists).
    MeetingNotFound = ("meeting_not_found", 404),
    /// The meeting is locked by its host.
    MeetingLocked = ("meeting_locked", 403),
    /// The meeting has reached its participant limit.
    MeetingFull = ("meeting_full", 403),
    /// The meeting has ended or was cancelled.
    MeetingEnded = ("meeting_ended", 410),
    /// The time zone is not a known IANA name (such as `Europe/Paris`).
    UnknownTimeZone = ("unknown_time_zone", 422),
    /// The schedule is impossible: end before start, a zero or too long duration, a bad time.
    InvalidSchedule = ("invalid_schedule", 422),
    /// More invitees than a meeting may have.
    TooManyInvitees = ("too_many_invitees", 422),
    /// The meeting does not let guests (people not signed in) join.
    GuestsNotAllowed = ("guests_not_allowed", 403),
    // --- the signaling WebSocket ---
    /// A WebSocket message is not valid JSON or does not match its type's shape.
    MalformedMessage = ("malformed_message", 400),
    /// A WebSocket message has a `type` the server does not know.
    UnknownMessageType = ("unknown_message_type", 400),
    /// A WebSocket message's `v` is not a protocol version the server speaks.
    UnsupportedProtocolVersion = ("unsupported_protocol_version", 400),
    /// The room token is malformed, forged or expired.
    InvalidRoomToken = ("invalid_room_token", 401),
    /// The room token is for another room.
    WrongRoom = ("wrong_room", 403),
    /// The message is not allowed in the session's current state (for example before `join`).
    UnexpectedMessage = ("unexpected_message", 409),
    /// The room token does not grant publishing this source (or anything).
    PublishNotAllowed = ("publish_not_allowed", 403),
    /// The resume token is unknown or the grace period is over: join anew.
    ResumeFailed = ("resume_failed", 409),
    /// No such participant in the room.
    ParticipantNotFound = ("participant_not_found", 404),
    // --- users ---
    /// No profile for this user id (the account does not exist or has never signed in).
    UserNotFound = ("user_not_found", 404),
    /// The upload is not a PNG, JPEG or WebP image (checked by content, not by name).
    UnsupportedImage = ("unsupported_image", 415),
    /// The image's dimensions exceed the limit (checked from its header, before decoding).
    ImageTooLarge = ("image_too_large", 422),
    /// The image is of an accepted format but damaged or truncated.
    InvalidImage = ("invalid_image", 422),
    // --- notifications ---
    /// The browser push subscription is unusable: the endpoint is not an allowed
    /// `https://` URL, or `keys.p256dh` / `keys.auth` are malformed (the message names which).
    InvalidPushSubscription = ("invalid_push_subscription", 422),
    /// The account already has as many push subscriptions as it may; remove one first.
    TooManyPushSubscriptions = ("too_many_push_subscriptions", 422),
    // --- platform ---
    /// A dependency (database, cache, broker, upstream) is unavailable; retry later.
    ServiceUnavailable = ("service_unavailable", 503),
    /// The server is at capacity and sheds this request at once; retry after `Retry-After`.
    Overloaded = ("overloaded", 503),
    /// The upstream's circuit breaker is open; retry later.
    UpstreamUnavailable = ("upstream_unavailable", 503),
    /// The upstream did not answer in time.
    UpstreamTimeout = ("upstream_timeout", 504),
    /// The request line or a header is malformed (a bad path, a bad `Content-Length`).
    MalformedRequest = ("malformed_request", 400),
    /// The request body arrived too slowly.
    RequestTimeout = ("request_timeout", 408),
    /// Something went wrong on our side; the detail is in the server log, never here.
    Internal = ("internal", 500),
}

impl std::fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The JSON body of every error response: `{"error": {"code": "...", "message": "..."}}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorBody {
    pub error: ErrorDetail,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorDetail {
    pub code: String,
    pub message: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_are_unique_and_serialize_as_their_wire_name() {
        let mut seen = std::collections::HashSet::new();
        for code in ErrorCode::ALL {
            assert!(seen.insert(code.as_str()), "duplicate code {code}");
            let json = serde_json::to_string(code).unwrap();
            assert_eq!(json, format!("\"{}\"", code.as_str()));
            assert!((400..600).contains(&code.http_status()));
        }
    }
}
