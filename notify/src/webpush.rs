//! Web push on the wire, without I/O: the VAPID key and its JWT (RFC 8292), and
//! message encryption (RFC 8291 on the `aes128gcm` content coding of RFC 8188).
//!
//! A push message to one subscription is
//!
//! ```text
//! POST <endpoint>
//! Authorization: vapid t=<ES256 JWT {aud: endpoint origin, exp, sub}>, k=<our public key>
//! Content-Encoding: aes128gcm
//! TTL: <seconds>    Urgency: normal | high
//!
//! salt(16) ‖ rs(4) ‖ idlen(1) ‖ keyid = sender's ephemeral public key(65) ‖ one record
//! ```
//!
//! The record is the plaintext, the last-record delimiter `0x02`, sealed with
//! AES-128-GCM under a key and nonce derived (HKDF-SHA-256) from an ECDH between a
//! fresh sender key and the subscriber's `p256dh` key, mixed with its `auth` secret.
//! Everything here is deterministic given its inputs (the random salt and
//! ephemeral key are parameters), so the RFC's worked example is a unit test.

use aes_gcm::aead::{Aead, KeyInit};
use aes_gcm::{Aes128Gcm, Nonce};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use hkdf::Hkdf;
use p256::ecdsa::signature::Signer;
use p256::ecdsa::{Signature, SigningKey};
use p256::{PublicKey, SecretKey};
use sha2::Sha256;

/// Length of an uncompressed P-256 point (`0x04 ‖ x ‖ y`).
pub const PUBLIC_KEY_LEN: usize = 65;
/// Length of a subscription's `auth` secret.
pub const AUTH_SECRET_LEN: usize = 16;
/// The record size we announce: one record carries the whole message.
pub const RECORD_SIZE: u32 = 4096;
/// Header: salt, record size, key id length, key id.
pub const HEADER_LEN: usize = 16 + 4 + 1 + PUBLIC_KEY_LEN;
/// The largest plaintext one record holds (record size less tag and delimiter).
/// Push services accept bodies of at least 4096 bytes, so this is also the limit.
pub const MAX_PLAINTEXT: usize = RECORD_SIZE as usize - 16 - 1 - HEADER_LEN;

/// Base64url without padding, as the Push API and JWTs use it.
pub fn b64(bytes: &[u8]) -> String {
    URL_SAFE_NO_PAD.encode(bytes)
}

/// Decode base64url, with or without padding (browsers differ in what they hand out).
pub fn unb64(text: &str) -> Option<Vec<u8>> {
    URL_SAFE_NO_PAD.decode(text.trim_end_matches('=')).ok()
}

/// The application server's key pair (P-256). Its public half is what browsers
/// subscribe with (`applicationServerKey`); its private half signs VAPID JWTs.
#[derive(Clone)]
pub struct VapidKey {
    secret: SecretKey,
}

impl std::fmt::Debug for VapidKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("VapidKey")
            .field("public", &self.public_key_b64())
            .finish_non_exhaustive()
    }
}

impl VapidKey {
    /// A new random key.
    pub fn generate() -> VapidKey {
        VapidKey {
            secret: random_secret(),
        }
    }

    /// From the 32-byte private scalar (base64url), as stored or configured.
    pub fn from_b64(text: &str) -> Option<VapidKey> {
        let bytes = unb64(text.trim())?;
        Some(VapidKey {
            secret: SecretKey::from_slice(&bytes).ok()?,
        })
    }

    /// The private scalar, base64url: how the key is stored.
    pub fn private_b64(&self) -> String {
        b64(&self.secret.to_bytes())
    }

    /// The uncompressed public key (65 bytes).
    pub fn public_key(&self) -> Vec<u8> {
        uncompressed(&self.secret.public_key())
    }

    /// The public key as browsers take it: base64url of the uncompressed point.
    pub fn public_key_b64(&self) -> String {
        b64(&self.public_key())
    }

    /// The VAPID JWT for one push service (`aud` is the endpoint's origin).
    pub fn jwt(&self, audience: &str, expires_at: i64, subject: &str) -> String {
        let header = b64(br#"{"typ":"JWT","alg":"ES256"}"#);
        let claims = serde_json::json!({"aud": audience, "exp": expires_at, "sub": subject});
        let signing_input = format!("{header}.{}", b64(claims.to_string().as_bytes()));
        let key = SigningKey::from(&self.secret);
        // ES256 is the raw `r ‖ s` form (RFC 7518 §3.4), not DER.
        let signature: Signature = key.sign(signing_input.as_bytes());
        format!("{signing_input}.{}", b64(&signature.to_bytes()))
    }

    /// The `Authorization` header value (RFC 8292 §3).
    pub fn authorization(&self, audience: &str, expires_at: i64, subject: &str) -> String {
        format!(
            "vapid t={}, k={}",
            self.jwt(audience, expires_at, subject),
            self.public_key_b64()
        )
    }
}

fn uncompressed(key: &PublicKey) -> Vec<u8> {
    // P-256 does not compress points by default: this is 0x04 ‖ x ‖ y.
    key.to_sec1_bytes().into_vec()
}

/// A random valid P-256 scalar.
fn random_secret() -> SecretKey {
    loop {
        let bytes: [u8; 32] = rand::random();
        // Zero or ≥ n is rejected; that happens with probability ~2^-32, so retry.
        if let Ok(secret) = SecretKey::from_slice(&bytes) {
            return secret;
        }
    }
}

/// A subscriber's keys, parsed: `p256dh` is a point on the curve, `auth` 16 bytes.
#[derive(Debug, Clone)]
pub struct SubscriberKeys {
    pub p256dh: PublicKey,
    pub auth: [u8; AUTH_SECRET_LEN],
}

/// Why a subscription's keys are refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum KeyError {
    #[error("keys.p256dh is not base64url")]
    P256dhEncoding,
    #[error("keys.p256dh must be an uncompressed P-256 point (65 bytes, starting 0x04)")]
    P256dhLength,
    #[error("keys.p256dh is not a point on P-256")]
    P256dhPoint,
    #[error("keys.auth is not base64url")]
    AuthEncoding,
    #[error("keys.auth must be 16 bytes")]
    AuthLength,
}

impl SubscriberKeys {
    pub fn parse(p256dh: &str, auth: &str) -> Result<SubscriberKeys, KeyError> {
        let point = unb64(p256dh).ok_or(KeyError::P256dhEncoding)?;
        if point.len() != PUBLIC_KEY_LEN || point[0] != 0x04 {
            return Err(KeyError::P256dhLength);
        }
        let p256dh = PublicKey::from_sec1_bytes(&point).map_err(|_| KeyError::P256dhPoint)?;
        let auth = unb64(auth).ok_or(KeyError::AuthEncoding)?;
        let auth: [u8; AUTH_SECRET_LEN] = auth.try_into().map_err(|_| KeyError::AuthLength)?;
        Ok(SubscriberKeys { p256dh, auth })
    }
}

/// The message is larger than one record can carry.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("push payload of {0} bytes exceeds {MAX_PLAINTEXT}")]
pub struct TooLarge(pub usize);

/// Encrypt `plaintext` for `to` with a fresh salt and sender key.
pub fn encrypt(plaintext: &[u8], to: &SubscriberKeys) -> Result<Vec<u8>, TooLarge> {
    let salt: [u8; 16] = rand::random();
    encrypt_with(plaintext, to, &salt, &random_secret())
}

/// Encrypt with the given salt and sender (ephemeral) key: RFC 8291 §3–4.
pub fn encrypt_with(
    plaintext: &[u8],
    to: &SubscriberKeys,
    salt: &[u8; 16],
    sender: &SecretKey,
) -> Result<Vec<u8>, TooLarge> {
    if plaintext.len() > MAX_PLAINTEXT {
        return Err(TooLarge(plaintext.len()));
    }
    let as_public = uncompressed(&sender.public_key());
    let ua_public = uncompressed(&to.p256dh);
    let shared = sender.diffie_hellman(&to.p256dh);

    // IKM = HKDF(auth, ecdh, "WebPush: info" ‖ 0 ‖ ua_public ‖ as_public, 32)
    let mut key_info = Vec::with_capacity(14 + 2 * PUBLIC_KEY_LEN);
    key_info.extend_from_slice(b"WebPush: info\0");
    key_info.extend_from_slice(&ua_public);
    key_info.extend_from_slice(&as_public);
    let mut ikm = [0u8; 32];
    Hkdf::<Sha256>::new(Some(&to.auth), shared.raw_secret_bytes())
        .expand(&key_info, &mut ikm)
        .expect("32 bytes is a valid HKDF-SHA-256 output length");
    // CEK and NONCE from HKDF(salt, IKM, …) (RFC 8188 §2.2, §2.3).
    let prk = Hkdf::<Sha256>::new(Some(salt), &ikm);
    let mut cek = [0u8; 16];
    prk.expand(b"Content-Encoding: aes128gcm\0", &mut cek)
        .expect("16 bytes is a valid HKDF-SHA-256 output length");
    let mut nonce = [0u8; 12];
    prk.expand(b"Content-Encoding: nonce\0", &mut nonce)
        .expect("12 bytes is a valid HKDF-SHA-256 output length");

    // One record, so its sequence number is 0 and the nonce is NONCE itself.
    let mut record = Vec::with_capacity(plaintext.len() + 1);
    record.extend_from_slice(plaintext);
    record.push(0x02);
    let cipher = Aes128Gcm::new_from_slice(&cek).expect("the key is 16 bytes");
    let sealed = cipher
        .encrypt(&Nonce::from(nonce), record.as_slice())
        .expect("AES-GCM seals any message under 64 GiB");

    let mut body = Vec::with_capacity(HEADER_LEN + sealed.len());
    body.extend_from_slice(salt);
    body.extend_from_slice(&RECORD_SIZE.to_be_bytes());
    body.push(PUBLIC_KEY_LEN as u8);
    body.extend_from_slice(&as_public);
    body.extend_from_slice(&sealed);
    Ok(body)
}

#[cfg(test)]
mod tests {
    use super::*;

    // RFC 8291 Appendix A, every value as printed there (base64url).
    const PLAINTEXT: &str = "When I grow up, I want to be a watermelon";
    const AS_PRIVATE: &str = "yfWPiYE-n46HLnH0KqZOF1fJJU3MYrct3AELtAQ-oRw";
    const AS_PUBLIC: &str =
        "BP4z9KsN6nGRTbVYI_c7VJSPQTBtkgcy27mlmlMoZIIgDll6e3vCYLocInmYWAmS6TlzAC8wEqKK6PBru3jl7A8";
    const UA_PUBLIC: &str =
        "BCVxsr7N_eNgVRqvHtD0zTZsEc6-VV-JvLexhqUzORcxaOzi6-AYWXvTBHm4bjyPjs7Vd8pZGH6SRpkNtoIAiw4";
    const AUTH: &str = "BTBZMqHH6r4Tts7J_aSIgg";
    const SALT: &str = "DGv6ra1nlYgDCS1FRnbzlw";
    const BODY: &str = "DGv6ra1nlYgDCS1FRnbzlwAAEABBBP4z9KsN6nGRTbVYI_c7VJSPQTBtkgcy27mlmlMoZIIgDll6e3vCYLocInmYWAmS6TlzAC8wEqKK6PBru3jl7A_yl95bQpu6cVPTpK4Mqgkf1CXztLVBSt2Ks3oZwbuwXPXLWyouBWLVWGNWQexSgSxsj_Qulcy4a-fN";

    #[test]
    fn the_rfc_8291_example_encrypts_to_the_published_message() {
        let sender = SecretKey::from_slice(&unb64(AS_PRIVATE).unwrap()).unwrap();
        assert_eq!(b64(&uncompressed(&sender.public_key())), AS_PUBLIC);
        let to = SubscriberKeys::parse(UA_PUBLIC, AUTH).unwrap();
        let salt: [u8; 16] = unb64(SALT).unwrap().try_into().unwrap();
        let body = encrypt_with(PLAINTEXT.as_bytes(), &to, &salt, &sender).unwrap();
        assert_eq!(b64(&body), BODY);
    }

    #[test]
    fn a_vapid_key_survives_its_stored_form_and_publishes_an_uncompressed_point() {
        let key = VapidKey::generate();
        let again = VapidKey::from_b64(&key.private_b64()).unwrap();
        assert_eq!(again.public_key(), key.public_key());
        assert_eq!(key.public_key().len(), PUBLIC_KEY_LEN);
        assert_eq!(key.public_key()[0], 0x04);
        assert!(VapidKey::from_b64("not a key").is_none());
        // Zero is not a valid scalar.
        assert!(VapidKey::from_b64(&b64(&[0u8; 32])).is_none());
        assert!(!format!("{key:?}").contains(&key.private_b64()));
    }

    #[test]
    fn subscriber_keys_are_checked_for_encoding_length_and_curve() {
        let good = SubscriberKeys::parse(UA_PUBLIC, AUTH);
        assert!(good.is_ok());
        assert_eq!(
            SubscriberKeys::parse("###", AUTH).unwrap_err(),
            KeyError::P256dhEncoding
        );
        // Compressed and truncated points are refused.
        let point = unb64(UA_PUBLIC).unwrap();
        assert_eq!(
            SubscriberKeys::parse(&b64(&point[..33]), AUTH).unwrap_err(),
            KeyError::P256dhLength
        );
        let mut off_curve = point.clone();
        off_curve[64] ^= 1;
        assert_eq!(
            SubscriberKeys::parse(&b64(&off_curve), AUTH).unwrap_err(),
            KeyError::P256dhPoint
        );
        assert_eq!(
            SubscriberKeys::parse(UA_PUBLIC, &b64(&[1u8; 15])).unwrap_err(),
            KeyError::AuthLength
        );
        assert_eq!(
            SubscriberKeys::parse(UA_PUBLIC, "a b").unwrap_err(),
            KeyError::AuthEncoding
        );
        // Padded base64url, as some browsers hand out, is fine.
        assert!(SubscriberKeys::parse(&format!("{UA_PUBLIC}="), &format!("{AUTH}==")).is_ok());
    }

    #[test]
    fn a_payload_larger_than_one_record_is_refused() {
        let to = SubscriberKeys::parse(UA_PUBLIC, AUTH).unwrap();
        assert!(encrypt(&vec![b'x'; MAX_PLAINTEXT], &to).is_ok());
        assert_eq!(
            encrypt(&vec![b'x'; MAX_PLAINTEXT + 1], &to).unwrap_err(),
            TooLarge(MAX_PLAINTEXT + 1)
        );
    }
}
