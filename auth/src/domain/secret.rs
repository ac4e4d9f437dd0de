//! Opaque random tokens (refresh, email verification, password reset), stored hashed.

use aws_lc_rs::digest;
use aws_lc_rs::rand::{SecureRandom, SystemRandom};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;

/// 32 random bytes, base64url: what the client holds. Only [`OpaqueToken::hash`] of
/// it is stored, so a copy of the database does not let anyone use a live token.
#[derive(Clone, PartialEq, Eq)]
pub struct OpaqueToken(String);

impl std::fmt::Debug for OpaqueToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("OpaqueToken([redacted])")
    }
}

impl OpaqueToken {
    /// A fresh token from the operating system's CSPRNG.
    pub fn generate() -> Result<OpaqueToken, aws_lc_rs::error::Unspecified> {
        let mut bytes = [0u8; 32];
        SystemRandom::new().fill(&mut bytes)?;
        Ok(OpaqueToken(URL_SAFE_NO_PAD.encode(bytes)))
    }

    pub fn expose(&self) -> &str {
        &self.0
    }

    /// The stored form: SHA-256, base64url. A 256-bit random value needs no salt or
    /// slow hash: there is nothing to guess.
    pub fn hash(&self) -> String {
        Self::hash_presented(&self.0)
    }

    /// The stored form of whatever a client presented (which may be garbage).
    pub fn hash_presented(presented: &str) -> String {
        URL_SAFE_NO_PAD.encode(digest::digest(&digest::SHA256, presented.as_bytes()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_are_random_and_hash_stably() {
        let a = OpaqueToken::generate().unwrap();
        let b = OpaqueToken::generate().unwrap();
        assert_ne!(a, b);
        assert_eq!(a.expose().len(), 43);
        assert_eq!(a.hash(), OpaqueToken::hash_presented(a.expose()));
        assert_ne!(a.hash(), a.expose());
        assert!(!format!("{a:?}").contains(a.expose()));
    }
}
