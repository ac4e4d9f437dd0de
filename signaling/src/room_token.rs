//! Signing and checking room tokens (claims in [`proto::room_token`]).
//!
//! HS256 with a secret only signaling knows: the tokens are issued and read by the
//! same service, so there is no public key to publish. Replicas share the secret
//! (`ROOM_TOKEN_SECRET`); the embedded mode generates one at start.

use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use proto::ids::{MeetingId, ParticipantId};
use proto::media::RoomId;
use proto::room_token::{
    ROOM_TOKEN_AUDIENCE, ROOM_TOKEN_ISSUER, ROOM_TOKEN_TTL_SECS, RoomClaims, RoomGrants,
    RoomIdentity,
};
use rand::RngCore;
use servicekit::{Secret, StartError};
use std::sync::Arc;

/// Shortest secret accepted, in bytes.
pub const MIN_SECRET_LEN: usize = 32;

#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum RoomTokenError {
    #[error("invalid room token")]
    Invalid,
    #[error("the room token has expired")]
    Expired,
}

/// Issues and verifies room tokens. Cheap to clone.
#[derive(Clone)]
pub struct RoomTokens {
    inner: Arc<Keys>,
}

struct Keys {
    encoding: EncodingKey,
    decoding: DecodingKey,
    validation: Validation,
    lenient: Validation,
}

/// What a room token is issued for.
pub struct TokenRequest {
    pub room: RoomId,
    pub meeting_id: MeetingId,
    pub participant_id: ParticipantId,
    pub identity: RoomIdentity,
    pub display_name: String,
    pub grants: RoomGrants,
    pub lobby: bool,
}

impl RoomTokens {
    /// From a configured secret (at least 32 bytes).
    pub fn new(secret: &Secret<String>) -> Result<Self, StartError> {
        let bytes = secret.expose().as_bytes();
        if bytes.len() < MIN_SECRET_LEN {
            return Err(StartError::setting(
                "ROOM_TOKEN_SECRET",
                "must be at least 32 characters",
            ));
        }
        Ok(Self::from_bytes(bytes))
    }

    /// A fresh random secret: tokens only this process can read (embedded mode).
    pub fn generate() -> Self {
        let mut bytes = [0u8; 32];
        rand::rng().fill_bytes(&mut bytes);
        Self::from_bytes(&bytes)
    }

    fn from_bytes(secret: &[u8]) -> Self {
        let mut validation = Validation::new(Algorithm::HS256);
        validation.algorithms = vec![Algorithm::HS256];
        validation.leeway = 2;
        validation.set_issuer(&[ROOM_TOKEN_ISSUER]);
        validation.set_audience(&[ROOM_TOKEN_AUDIENCE]);
        validation.set_required_spec_claims(&["exp", "nbf", "iss", "aud", "sub"]);
        validation.validate_nbf = true;
        let mut lenient = validation.clone();
        lenient.validate_exp = false;
        Self {
            inner: Arc::new(Keys {
                encoding: EncodingKey::from_secret(secret),
                decoding: DecodingKey::from_secret(secret),
                validation,
                lenient,
            }),
        }
    }

    /// Sign a token for `request`, valid from now for [`ROOM_TOKEN_TTL_SECS`].
    pub fn issue(&self, request: TokenRequest) -> (String, RoomClaims) {
        let now = u64::try_from(chrono::Utc::now().timestamp()).unwrap_or(0);
        let sub = match &request.identity {
            RoomIdentity::User { user_id } => format!("user:{user_id}"),
            RoomIdentity::Guest => format!("guest:{}", request.participant_id),
        };
        let claims = RoomClaims {
            iss: ROOM_TOKEN_ISSUER.to_owned(),
            aud: ROOM_TOKEN_AUDIENCE.to_owned(),
            sub,
            room: request.room,
            meeting_id: request.meeting_id,
            participant_id: request.participant_id,
            identity: request.identity,
            display_name: request.display_name,
            grants: request.grants,
            lobby: request.lobby,
            iat: now,
            nbf: now,
            exp: now + ROOM_TOKEN_TTL_SECS,
            jti: uuid::Uuid::now_v7(),
        };
        // HS256 signing of plain serde data cannot fail.
        let token = jsonwebtoken::encode(
            &Header::new(Algorithm::HS256),
            &claims,
            &self.inner.encoding,
        )
        .unwrap_or_default();
        (token, claims)
    }

    /// Check signature, issuer, audience and times. With `allow_expired` (a resume,
    /// which also proves itself with its resume token) an expired token still passes.
    pub fn verify(&self, token: &str, allow_expired: bool) -> Result<RoomClaims, RoomTokenError> {
        if token.len() > 8 * 1024 {
            return Err(RoomTokenError::Invalid);
        }
        let validation = if allow_expired {
            &self.inner.lenient
        } else {
            &self.inner.validation
        };
        jsonwebtoken::decode::<RoomClaims>(token, &self.inner.decoding, validation)
            .map(|data| data.claims)
            .map_err(|err| match err.kind() {
                jsonwebtoken::errors::ErrorKind::ExpiredSignature => RoomTokenError::Expired,
                _ => RoomTokenError::Invalid,
            })
    }

    /// Sign arbitrary claims (tests forge expired or foreign tokens with it).
    pub fn sign_claims(&self, claims: &RoomClaims) -> String {
        jsonwebtoken::encode(&Header::new(Algorithm::HS256), claims, &self.inner.encoding)
            .unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request() -> TokenRequest {
        TokenRequest {
            room: RoomId::parse("room-1").unwrap(),
            meeting_id: MeetingId::new(),
            participant_id: ParticipantId::new(),
            identity: RoomIdentity::Guest,
            display_name: "Ada".into(),
            grants: RoomGrants::full(false),
            lobby: false,
        }
    }

    #[test]
    fn issued_tokens_verify_and_carry_their_claims() {
        let tokens = RoomTokens::generate();
        let (token, claims) = tokens.issue(request());
        assert_eq!(tokens.verify(&token, false), Ok(claims.clone()));
        assert_eq!(claims.exp - claims.iat, ROOM_TOKEN_TTL_SECS);
        assert!(claims.sub.starts_with("guest:"));
    }

    #[test]
    fn forged_expired_and_foreign_tokens_are_refused() {
        let tokens = RoomTokens::generate();
        let other = RoomTokens::generate();
        let (token, mut claims) = other.issue(request());
        assert_eq!(tokens.verify(&token, false), Err(RoomTokenError::Invalid));
        claims.exp = claims.iat.saturating_sub(60);
        claims.nbf = claims.exp - 10;
        let expired = tokens.sign_claims(&claims);
        assert_eq!(tokens.verify(&expired, false), Err(RoomTokenError::Expired));
        assert!(tokens.verify(&expired, true).is_ok());
        assert_eq!(
            tokens.verify("garbage", false),
            Err(RoomTokenError::Invalid)
        );
        // {"alg":"none"} tokens are refused.
        assert_eq!(
            tokens.verify("eyJhbGciOiJub25lIiwidHlwIjoiSldUIn0.e30.", false),
            Err(RoomTokenError::Invalid)
        );
        let short = Secret::new("short".to_owned());
        assert!(RoomTokens::new(&short).is_err());
    }
}
