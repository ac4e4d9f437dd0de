//! Access-token claims and the revocation contract shared by auth and every service
//! that accepts its tokens.
//!
//! The auth service signs access tokens (EdDSA/Ed25519 JWTs, a `kid` in the header,
//! public keys published as a JWKS at `GET /api/v1/auth/jwks`). Other services verify
//! them with `servicekit::tokens::TokenVerifier` and may check revocation either in
//! Redis (the key shapes below) or by asking auth (`POST /api/v1/auth/introspect`).

use crate::ids::UserId;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// The only signing algorithm access tokens use (the `alg` header value).
pub const ACCESS_TOKEN_ALGORITHM: &str = "EdDSA";
/// The default `iss` of access tokens.
pub const DEFAULT_ISSUER: &str = "meetease-auth";
/// The default `aud` of access tokens: the MeetEase API as a whole.
pub const DEFAULT_AUDIENCE: &str = "meetease";
/// The largest clock leeway a verifier may allow, in seconds.
pub const MAX_LEEWAY_SECS: u64 = 5;

/// The claims of an access token.
///
/// `sub` is the account, `sid` the session (one sign-in and the refresh-token family
/// it started), `jti` this one token. Times are Unix seconds.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AccessClaims {
    pub sub: UserId,
    pub sid: Uuid,
    pub jti: Uuid,
    pub iss: String,
    pub aud: String,
    pub iat: u64,
    pub nbf: u64,
    pub exp: u64,
    /// The account's email at the time the token was issued (normalised).
    pub email: String,
    /// Whether that email had been verified when the token was issued.
    pub email_verified: bool,
    /// The display name at the time the token was issued.
    pub name: String,
}

/// The answer of `POST /api/v1/auth/introspect` (after RFC 7662): `active` is false
/// for a token that is malformed, expired, signed with an unknown key or revoked, and
/// nothing else is said about it then.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Introspection {
    pub active: bool,
    #[serde(flatten, default, skip_serializing_if = "Option::is_none")]
    pub claims: Option<AccessClaims>,
}

/// Redis keys the auth service keeps for revoked access tokens.
///
/// PostgreSQL/SQLite is the source of truth; Redis is a cache that auth fills and
/// re-fills after a Redis restart. A reader must treat a missing
/// [`revocation_keys::COMPLETE`] marker as "unknown" (fail closed or ask auth), never
/// as "nothing is revoked".
pub mod revocation_keys {
    use uuid::Uuid;

    /// `auth:revocations:complete` → `"1"`, no expiry: present while Redis holds every
    /// revocation still in force. Auth sets it after (re)seeding from the database.
    pub const COMPLETE: &str = "auth:revocations:complete";

    /// `auth:revoked:jti:{jti}` → `"1"`, expiring when the token would have: one
    /// access token signed out.
    pub fn jti(jti: &Uuid) -> String {
        format!("auth:revoked:jti:{jti}")
    }

    /// `auth:revoked:sid:{sid}` → `"1"`, expiring one access-token lifetime after the
    /// revocation: every access token of a session that was signed out, signed out
    /// everywhere, or whose refresh token was reused.
    pub fn sid(sid: &Uuid) -> String {
        format!("auth:revoked:sid:{sid}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_inactive_introspection_says_nothing_else() {
        let json = serde_json::to_string(&Introspection {
            active: false,
            claims: None,
        })
        .unwrap();
        assert_eq!(json, r#"{"active":false}"#);
        let back: Introspection = serde_json::from_str(&json).unwrap();
        assert_eq!(back.claims, None);
    }

    #[test]
    fn an_active_introspection_carries_the_claims_flat() {
        let claims = AccessClaims {
            sub: UserId::new(),
            sid: Uuid::now_v7(),
            jti: Uuid::now_v7(),
            iss: DEFAULT_ISSUER.into(),
            aud: DEFAULT_AUDIENCE.into(),
            iat: 1,
            nbf: 1,
            exp: 901,
            email: "a@example.com".into(),
            email_verified: false,
            name: "A".into(),
        };
        let value = serde_json::to_value(Introspection {
            active: true,
            claims: Some(claims.clone()),
        })
        .unwrap();
        assert_eq!(value["active"], true);
        assert_eq!(value["sub"], claims.sub.to_string());
        let back: Introspection = serde_json::from_value(value).unwrap();
        assert_eq!(back.claims, Some(claims));
    }
}
