//! Verifying an OpenID provider's ID token: signature against the provider's JWKS
//! (asymmetric algorithms only), `iss`, `aud` (and `azp`), `exp`/`nbf` with at most
//! [`LEEWAY_SECS`] of leeway, and the `nonce` this flow sent. Pure: no I/O; the
//! caller fetches the JWKS (again, once, on [`IdTokenError::UnknownKey`]).

use jsonwebtoken::jwk::{JwkSet, PublicKeyUse};
use jsonwebtoken::{Algorithm, DecodingKey, Validation, errors::ErrorKind};
use serde::Deserialize;
use serde_json::Value;

/// Clock skew tolerated on `exp`/`nbf`.
pub const LEEWAY_SECS: u64 = 5;

/// Signature algorithms accepted: asymmetric only, so neither `none` nor an HMAC
/// "signed" with a public key can pass.
const ALLOWED: &[Algorithm] = &[
    Algorithm::RS256,
    Algorithm::RS384,
    Algorithm::RS512,
    Algorithm::PS256,
    Algorithm::PS384,
    Algorithm::PS512,
    Algorithm::ES256,
    Algorithm::ES384,
    Algorithm::EdDSA,
];

/// What the token must say.
#[derive(Debug, Clone, Copy)]
pub struct Expected<'a> {
    pub issuer: &'a str,
    pub client_id: &'a str,
    pub nonce: &'a str,
}

/// The claims we use from an ID token.
#[derive(Debug, Clone, Deserialize)]
pub struct IdClaims {
    pub sub: String,
    pub iss: String,
    pub aud: Value,
    pub exp: u64,
    #[serde(default)]
    pub nonce: Option<String>,
    #[serde(default)]
    pub azp: Option<String>,
    #[serde(default)]
    pub email: Option<String>,
    /// A bool, or (from some providers) the string "true"/"false".
    #[serde(default)]
    pub email_verified: Option<Value>,
    #[serde(default)]
    pub name: Option<String>,
}

/// `true` only for JSON `true` or the string `"true"`.
pub fn truthy(value: Option<&Value>) -> bool {
    match value {
        Some(Value::Bool(b)) => *b,
        Some(Value::String(s)) => s.eq_ignore_ascii_case("true"),
        _ => false,
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IdTokenError {
    #[error("the ID token is malformed")]
    Malformed,
    #[error("the ID token's algorithm is not accepted")]
    UnsupportedAlgorithm,
    #[error("the ID token names a key the provider does not publish")]
    UnknownKey,
    #[error("the ID token's signature does not verify")]
    BadSignature,
    #[error("the ID token is from another issuer")]
    WrongIssuer,
    #[error("the ID token is for another client")]
    WrongAudience,
    #[error("the ID token has expired or is not valid yet")]
    Expired,
    #[error("the ID token's nonce is not this sign-in's")]
    WrongNonce,
}

/// Verify `token` against `keys` and `expect`; the claims when everything holds.
pub fn verify(token: &str, keys: &JwkSet, expect: Expected<'_>) -> Result<IdClaims, IdTokenError> {
    let header = jsonwebtoken::decode_header(token).map_err(|err| match err.kind() {
        ErrorKind::InvalidAlgorithmName => IdTokenError::UnsupportedAlgorithm,
        _ => IdTokenError::Malformed,
    })?;
    if !ALLOWED.contains(&header.alg) {
        return Err(IdTokenError::UnsupportedAlgorithm);
    }
    let jwk = match &header.kid {
        Some(kid) => keys.find(kid),
        // Without a kid, a provider with a single key is unambiguous.
        None if keys.keys.len() == 1 => keys.keys.first(),
        None => None,
    }
    .ok_or(IdTokenError::UnknownKey)?;
    if jwk
        .common
        .public_key_use
        .as_ref()
        .is_some_and(|u| *u != PublicKeyUse::Signature)
    {
        return Err(IdTokenError::UnknownKey);
    }
    if let Some(key_alg) = jwk.common.key_algorithm
        && key_alg.to_string().parse::<Algorithm>().ok() != Some(header.alg)
    {
        return Err(IdTokenError::UnsupportedAlgorithm);
    }
    let key = DecodingKey::from_jwk(jwk).map_err(|_| IdTokenError::UnsupportedAlgorithm)?;
    let mut validation = Validation::new(header.alg);
    validation.leeway = LEEWAY_SECS;
    validation.validate_nbf = true;
    validation.set_issuer(&[expect.issuer]);
    validation.set_audience(&[expect.client_id]);
    validation.set_required_spec_claims(&["exp", "iss", "aud", "sub"]);
    let claims = jsonwebtoken::decode::<IdClaims>(token, &key, &validation)
        .map_err(|err| match err.kind() {
            ErrorKind::InvalidSignature => IdTokenError::BadSignature,
            ErrorKind::InvalidIssuer => IdTokenError::WrongIssuer,
            ErrorKind::InvalidAudience => IdTokenError::WrongAudience,
            ErrorKind::ExpiredSignature | ErrorKind::ImmatureSignature => IdTokenError::Expired,
            ErrorKind::InvalidAlgorithm | ErrorKind::InvalidKeyFormat => {
                IdTokenError::UnsupportedAlgorithm
            }
            _ => IdTokenError::Malformed,
        })?
        .claims;
    // OpenID Connect Core §3.1.3.7: with several audiences, `azp` must name us.
    let several = claims.aud.as_array().is_some_and(|a| a.len() > 1);
    match &claims.azp {
        Some(azp) if azp != expect.client_id => return Err(IdTokenError::WrongAudience),
        None if several => return Err(IdTokenError::WrongAudience),
        _ => {}
    }
    if claims.nonce.as_deref() != Some(expect.nonce) {
        return Err(IdTokenError::WrongNonce);
    }
    Ok(claims)
}

#[cfg(test)]
mod tests {
    use super::*;
    use aws_lc_rs::signature::{Ed25519KeyPair, KeyPair};
    use base64::Engine;
    use base64::engine::general_purpose::URL_SAFE_NO_PAD;
    use serde_json::json;

    const ISS: &str = "https://id.example.com";
    const CLIENT: &str = "meetease";
    const NONCE: &str = "n-0S6_WzA2Mj";

    struct Key {
        der: Vec<u8>,
        jwks: JwkSet,
    }

    fn key(kid: &str) -> Key {
        let rng = aws_lc_rs::rand::SystemRandom::new();
        let pkcs8 = Ed25519KeyPair::generate_pkcs8(&rng).unwrap();
        let pair = Ed25519KeyPair::from_pkcs8(pkcs8.as_ref()).unwrap();
        let x = URL_SAFE_NO_PAD.encode(pair.public_key().as_ref());
        let jwks = serde_json::from_value(json!({"keys": [
            {"kty": "OKP", "crv": "Ed25519", "x": x, "kid": kid, "use": "sig", "alg": "EdDSA"}
        ]}))
        .unwrap();
        Key {
            der: pkcs8.as_ref().to_vec(),
            jwks,
        }
    }

    fn now() -> u64 {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs()
    }

    fn good_claims() -> Value {
        json!({"iss": ISS, "aud": CLIENT, "sub": "248289761001", "exp": now() + 300,
               "iat": now(), "nonce": NONCE, "email": "ada@example.com", "email_verified": true})
    }

    fn sign(key: &Key, kid: &str, claims: &Value) -> String {
        let mut header = jsonwebtoken::Header::new(Algorithm::EdDSA);
        header.kid = Some(kid.into());
        jsonwebtoken::encode(
            &header,
            claims,
            &jsonwebtoken::EncodingKey::from_ed_der(&key.der),
        )
        .unwrap()
    }

    fn expect() -> Expected<'static> {
        Expected {
            issuer: ISS,
            client_id: CLIENT,
            nonce: NONCE,
        }
    }

    fn edited(edit: impl FnOnce(&mut serde_json::Map<String, Value>)) -> Value {
        let mut claims = good_claims();
        edit(claims.as_object_mut().unwrap());
        claims
    }

    #[test]
    fn a_good_token_verifies() {
        let k = key("k1");
        let claims = verify(&sign(&k, "k1", &good_claims()), &k.jwks, expect()).unwrap();
        assert_eq!(claims.sub, "248289761001");
        assert_eq!(claims.email.as_deref(), Some("ada@example.com"));
        assert!(truthy(claims.email_verified.as_ref()));
    }

    #[test]
    fn issuer_audience_expiry_and_nonce_are_checked() {
        let k = key("k1");
        let cases = [
            (
                edited(|c| drop(c.insert("iss".into(), json!("https://evil.example")))),
                IdTokenError::WrongIssuer,
            ),
            (
                edited(|c| drop(c.insert("aud".into(), json!("someone-else")))),
                IdTokenError::WrongAudience,
            ),
            (
                edited(|c| drop(c.insert("aud".into(), json!([CLIENT, "other"])))),
                IdTokenError::WrongAudience,
            ),
            (
                edited(|c| drop(c.insert("azp".into(), json!("other")))),
                IdTokenError::WrongAudience,
            ),
            (
                edited(|c| drop(c.insert("exp".into(), json!(now() - 30)))),
                IdTokenError::Expired,
            ),
            (
                edited(|c| drop(c.insert("nbf".into(), json!(now() + 60)))),
                IdTokenError::Expired,
            ),
            (
                edited(|c| drop(c.insert("nonce".into(), json!("another flow")))),
                IdTokenError::WrongNonce,
            ),
            (
                edited(|c| drop(c.remove("nonce"))),
                IdTokenError::WrongNonce,
            ),
            (edited(|c| drop(c.remove("exp"))), IdTokenError::Malformed),
        ];
        for (claims, want) in cases {
            assert_eq!(
                verify(&sign(&k, "k1", &claims), &k.jwks, expect()).unwrap_err(),
                want,
                "{claims}"
            );
        }
    }

    #[test]
    fn forged_and_unknown_keys_are_refused() {
        let k = key("k1");
        let other = key("k1");
        // Signed by another key under the same kid.
        assert_eq!(
            verify(&sign(&other, "k1", &good_claims()), &k.jwks, expect()).unwrap_err(),
            IdTokenError::BadSignature
        );
        assert_eq!(
            verify(&sign(&k, "k2", &good_claims()), &k.jwks, expect()).unwrap_err(),
            IdTokenError::UnknownKey
        );
        // A flipped bit in the signature.
        let token = sign(&k, "k1", &good_claims());
        let (rest, sig) = token.rsplit_once('.').unwrap();
        let mut bytes = URL_SAFE_NO_PAD.decode(sig).unwrap();
        bytes[0] ^= 1;
        let flipped = format!("{rest}.{}", URL_SAFE_NO_PAD.encode(bytes));
        assert_eq!(
            verify(&flipped, &k.jwks, expect()).unwrap_err(),
            IdTokenError::BadSignature
        );
    }

    #[test]
    fn none_and_hmac_tokens_are_refused() {
        let k = key("k1");
        let b64 = |v: &Value| URL_SAFE_NO_PAD.encode(v.to_string());
        let none = format!(
            "{}.{}.",
            b64(&json!({"alg": "none", "kid": "k1"})),
            b64(&good_claims())
        );
        // jsonwebtoken knows no `none`: such a header does not even parse.
        assert_eq!(
            verify(&none, &k.jwks, expect()).unwrap_err(),
            IdTokenError::Malformed
        );
        let mut header = jsonwebtoken::Header::new(Algorithm::HS256);
        header.kid = Some("k1".into());
        let x = k.jwks.keys[0].clone();
        let public = serde_json::to_value(&x).unwrap()["x"]
            .as_str()
            .unwrap()
            .to_owned();
        let hmac = jsonwebtoken::encode(
            &header,
            &good_claims(),
            &jsonwebtoken::EncodingKey::from_secret(public.as_bytes()),
        )
        .unwrap();
        assert_eq!(
            verify(&hmac, &k.jwks, expect()).unwrap_err(),
            IdTokenError::UnsupportedAlgorithm
        );
        assert_eq!(
            verify("not.a.token", &k.jwks, expect()).unwrap_err(),
            IdTokenError::Malformed
        );
    }

    #[test]
    fn email_verified_may_be_a_string() {
        assert!(truthy(Some(&json!(true))));
        assert!(truthy(Some(&json!("true"))));
        assert!(!truthy(Some(&json!("false"))));
        assert!(!truthy(Some(&json!(1))));
        assert!(!truthy(None));
    }
}
