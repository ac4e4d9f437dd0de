//! Sign-in with OpenID Connect providers: authorization code flow with PKCE (S256),
//! `state` (single use, server-side, bound to the browser by a cookie) and `nonce`.
//!
//! - [`ProviderConfig`]: one configured provider (name, issuer, client id and
//!   secret); [`parse_providers`] reads the `AUTH_OIDC_PROVIDERS` JSON list.
//! - [`Providers`]: the configured providers, each with its discovery document
//!   (`{issuer}/.well-known/openid-configuration`, cached for an hour) and JWKS
//!   (cached; fetched again when a token names an unknown key, at most every 10 s).
//! - [`id_token`]: the pure ID-token check.
//!
//! The routes are in `routes/oauth.rs`; the flows and identity links in the store.

pub mod id_token;

use jsonwebtoken::jwk::JwkSet;
use serde::Deserialize;
use servicekit::Secret;
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Discovery documents are fetched again after this long.
const DISCOVERY_TTL: Duration = Duration::from_secs(3600);
/// A JWKS is fetched again on an unknown `kid`, but not more often than this.
const JWKS_REFETCH_GAP: Duration = Duration::from_secs(10);
/// Largest provider response read (discovery, JWKS, token, userinfo).
const MAX_RESPONSE_BYTES: usize = 256 * 1024;

/// One OpenID provider, as configured.
#[derive(Debug, Clone, Deserialize)]
pub struct ProviderConfig {
    /// The path segment in `/api/v1/auth/oauth/{name}/…`: `[a-z0-9-]`, 1–32 characters.
    pub name: String,
    /// The issuer exactly as the provider states it (`https://accounts.google.com`).
    pub issuer: String,
    pub client_id: String,
    #[serde(deserialize_with = "secret")]
    pub client_secret: Secret<String>,
    /// Scopes asked for; default `openid email profile`.
    #[serde(default)]
    pub scopes: Option<Vec<String>>,
}

fn secret<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Secret<String>, D::Error> {
    String::deserialize(d).map(Secret::new)
}

impl ProviderConfig {
    pub fn scope(&self) -> String {
        self.scopes
            .as_ref()
            .map(|s| s.join(" "))
            .unwrap_or_else(|| "openid email profile".to_owned())
    }
}

/// Why a provider list does not parse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct ProviderConfigError(pub String);

/// Read `AUTH_OIDC_PROVIDERS`: a JSON array of
/// `{"name", "issuer", "client_id", "client_secret", "scopes"?}`.
pub fn parse_providers(json: &str) -> Result<Vec<ProviderConfig>, ProviderConfigError> {
    let list: Vec<ProviderConfig> = serde_json::from_str(json).map_err(|err| {
        ProviderConfigError(format!(
            "not a JSON array of {{name, issuer, client_id, client_secret}}: {err}"
        ))
    })?;
    let mut seen = std::collections::HashSet::new();
    for provider in &list {
        let name = &provider.name;
        let good_name = (1..=32).contains(&name.len())
            && name
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
        if !good_name {
            return Err(ProviderConfigError(format!(
                "provider name `{name}`: use 1-32 of a-z, 0-9 and -"
            )));
        }
        if !seen.insert(name.clone()) {
            return Err(ProviderConfigError(format!(
                "provider `{name}` is listed twice"
            )));
        }
        check_url(&provider.issuer)
            .map_err(|why| ProviderConfigError(format!("provider `{name}` issuer: {why}")))?;
        if provider.client_id.is_empty() {
            return Err(ProviderConfigError(format!(
                "provider `{name}`: client_id is empty"
            )));
        }
    }
    Ok(list)
}

/// Provider URLs must be https, except on loopback (tests, a local provider).
fn check_url(raw: &str) -> Result<reqwest::Url, String> {
    let url = reqwest::Url::parse(raw).map_err(|err| format!("`{raw}` is not a URL: {err}"))?;
    let host = url.host_str().unwrap_or_default();
    let loopback = host == "localhost"
        || host
            .trim_start_matches('[')
            .trim_end_matches(']')
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback());
    match url.scheme() {
        "https" => Ok(url),
        "http" if loopback => Ok(url),
        _ => Err(format!("`{raw}` must be an https URL")),
    }
}

/// The parts of a discovery document we use.
#[derive(Debug, Clone, Deserialize)]
pub struct Discovery {
    pub issuer: String,
    pub authorization_endpoint: String,
    pub token_endpoint: String,
    pub jwks_uri: String,
    #[serde(default)]
    pub userinfo_endpoint: Option<String>,
    #[serde(default)]
    pub token_endpoint_auth_methods_supported: Option<Vec<String>>,
    #[serde(default)]
    pub code_challenge_methods_supported: Option<Vec<String>>,
}

/// What went wrong talking to a provider.
#[derive(Debug, thiserror::Error)]
pub enum ProviderError {
    /// Unreachable, a 5xx, an unreadable or inconsistent answer: retry later.
    #[error("{0}")]
    Unavailable(String),
    /// The provider refused (a 4xx from the token endpoint): `error` as it said.
    #[error("the provider refused: {0}")]
    Refused(String),
}

/// The token endpoint's answer.
#[derive(Debug, Clone, Deserialize)]
pub struct TokenResponse {
    pub id_token: Option<String>,
    pub access_token: Option<String>,
}

#[derive(Default)]
struct Cache {
    discovery: Option<(Instant, Arc<Discovery>)>,
    jwks: Option<(Instant, Arc<JwkSet>)>,
}

/// A configured provider with its cached metadata.
pub struct Provider {
    pub config: ProviderConfig,
    /// A std mutex: held only to read or replace the cached values, never across
    /// an `.await`.
    cache: Mutex<Cache>,
}

/// Every configured provider, by name. Cheap to clone.
#[derive(Clone)]
pub struct Providers {
    http: reqwest::Client,
    by_name: Arc<BTreeMap<String, Arc<Provider>>>,
}

impl Providers {
    pub fn new(configs: Vec<ProviderConfig>) -> Self {
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(10))
            .connect_timeout(Duration::from_secs(5))
            .redirect(reqwest::redirect::Policy::none())
            .build()
            // Building fails only when the TLS backend cannot initialise.
            .unwrap_or_else(|_| reqwest::Client::new());
        let by_name = configs
            .into_iter()
            .map(|config| {
                (
                    config.name.clone(),
                    Arc::new(Provider {
                        config,
                        cache: Mutex::default(),
                    }),
                )
            })
            .collect();
        Self {
            http,
            by_name: Arc::new(by_name),
        }
    }

    pub fn get(&self, name: &str) -> Option<Arc<Provider>> {
        self.by_name.get(name).cloned()
    }

    pub fn names(&self) -> Vec<String> {
        self.by_name.keys().cloned().collect()
    }

    async fn get_json<T: serde::de::DeserializeOwned>(
        &self,
        request: reqwest::RequestBuilder,
        what: &str,
    ) -> Result<T, ProviderError> {
        let response = request
            .header(reqwest::header::ACCEPT, "application/json")
            .send()
            .await
            .map_err(|err| ProviderError::Unavailable(format!("{what}: {err}")))?;
        let status = response.status();
        let body = read_capped(response)
            .await
            .map_err(|err| ProviderError::Unavailable(format!("{what}: {err}")))?;
        if status.is_client_error() {
            #[derive(Deserialize)]
            struct OAuthError {
                error: String,
            }
            let error = serde_json::from_slice::<OAuthError>(&body)
                .map(|e| e.error)
                .unwrap_or_else(|_| format!("http {status}"));
            return Err(ProviderError::Refused(sanitize(&error)));
        }
        if !status.is_success() {
            return Err(ProviderError::Unavailable(format!("{what}: http {status}")));
        }
        serde_json::from_slice(&body)
            .map_err(|err| ProviderError::Unavailable(format!("{what}: unreadable answer: {err}")))
    }

    /// The provider's discovery document (cached for an hour).
    pub async fn discovery(&self, provider: &Provider) -> Result<Arc<Discovery>, ProviderError> {
        if let Some((at, doc)) = &provider.lock().discovery
            && at.elapsed() < DISCOVERY_TTL
        {
            return Ok(doc.clone());
        }
        let issuer = &provider.config.issuer;
        let url = format!(
            "{}/.well-known/openid-configuration",
            issuer.trim_end_matches('/')
        );
        let doc: Discovery = self.get_json(self.http.get(&url), "discovery").await?;
        // OpenID Connect Discovery §4.3: the document must name the issuer we asked.
        if doc.issuer != *issuer {
            return Err(ProviderError::Unavailable(format!(
                "discovery names issuer `{}`, configured `{issuer}`",
                doc.issuer
            )));
        }
        for endpoint in [
            &doc.authorization_endpoint,
            &doc.token_endpoint,
            &doc.jwks_uri,
        ]
        .into_iter()
        .chain(doc.userinfo_endpoint.as_ref())
        {
            check_url(endpoint).map_err(ProviderError::Unavailable)?;
        }
        if let Some(methods) = &doc.code_challenge_methods_supported
            && !methods.iter().any(|m| m == "S256")
        {
            return Err(ProviderError::Unavailable(
                "the provider does not support PKCE with S256".into(),
            ));
        }
        let doc = Arc::new(doc);
        provider.lock().discovery = Some((Instant::now(), doc.clone()));
        Ok(doc)
    }

    /// The provider's signing keys: cached, or fetched (again when `refresh` and
    /// the last fetch is older than 10 s).
    pub async fn jwks(
        &self,
        provider: &Provider,
        discovery: &Discovery,
        refresh: bool,
    ) -> Result<Arc<JwkSet>, ProviderError> {
        if let Some((at, keys)) = &provider.lock().jwks
            && (!refresh || at.elapsed() < JWKS_REFETCH_GAP)
        {
            return Ok(keys.clone());
        }
        let keys: JwkSet = self
            .get_json(self.http.get(&discovery.jwks_uri), "jwks")
            .await?;
        let keys = Arc::new(keys);
        provider.lock().jwks = Some((Instant::now(), keys.clone()));
        Ok(keys)
    }

    /// Exchange an authorization code (RFC 6749 §4.1.3 with the PKCE verifier).
    pub async fn exchange(
        &self,
        provider: &Provider,
        discovery: &Discovery,
        code: &str,
        code_verifier: &str,
        redirect_uri: &str,
    ) -> Result<TokenResponse, ProviderError> {
        let config = &provider.config;
        let mut form = vec![
            ("grant_type", "authorization_code"),
            ("code", code),
            ("redirect_uri", redirect_uri),
            ("code_verifier", code_verifier),
        ];
        // client_secret_basic is the default (and what Google and most providers
        // take); client_secret_post only when the provider lists it and not basic.
        let post_only = discovery
            .token_endpoint_auth_methods_supported
            .as_ref()
            .is_some_and(|m| {
                !m.iter().any(|x| x == "client_secret_basic")
                    && m.iter().any(|x| x == "client_secret_post")
            });
        let mut request = self.http.post(&discovery.token_endpoint);
        if post_only {
            form.push(("client_id", &config.client_id));
            form.push(("client_secret", config.client_secret.expose()));
        } else {
            // RFC 6749 §2.3.1: both parts form-urlencoded before Basic encoding.
            request = request.basic_auth(
                form_encode(&config.client_id),
                Some(form_encode(config.client_secret.expose())),
            );
        }
        self.get_json(request.form(&form), "token").await
    }

    /// The userinfo claims for an access token.
    pub async fn userinfo(
        &self,
        discovery: &Discovery,
        access_token: &str,
    ) -> Result<serde_json::Value, ProviderError> {
        let Some(url) = &discovery.userinfo_endpoint else {
            return Ok(serde_json::Value::Null);
        };
        self.get_json(self.http.get(url).bearer_auth(access_token), "userinfo")
            .await
    }
}

impl Provider {
    fn lock(&self) -> std::sync::MutexGuard<'_, Cache> {
        // A poisoned cache is still a valid cache (plain values).
        self.cache.lock().unwrap_or_else(|e| e.into_inner())
    }
}

async fn read_capped(mut response: reqwest::Response) -> Result<Vec<u8>, String> {
    let mut body = Vec::new();
    while let Some(chunk) = response.chunk().await.map_err(|err| err.to_string())? {
        if body.len() + chunk.len() > MAX_RESPONSE_BYTES {
            return Err("answer too large".into());
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body)
}

/// An OAuth `error` value fit to show: `[a-z0-9_]`, at most 64 characters.
pub fn sanitize(error: &str) -> String {
    error
        .chars()
        .filter(|c| c.is_ascii_alphanumeric() || *c == '_')
        .take(64)
        .collect::<String>()
        .to_ascii_lowercase()
}

/// `application/x-www-form-urlencoded` encoding of one value.
fn form_encode(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for byte in value.bytes() {
        match byte {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'*' => {
                out.push(char::from(byte));
            }
            b' ' => out.push('+'),
            _ => out.push_str(&format!("%{byte:02X}")),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn one(json: &str) -> Result<Vec<ProviderConfig>, ProviderConfigError> {
        parse_providers(json)
    }

    #[test]
    fn a_provider_list_parses_and_keeps_the_secret_hidden() {
        let list = one(
            r#"[{"name":"google","issuer":"https://accounts.google.com","client_id":"123.apps","client_secret":"s3cret"}]"#,
        )
        .unwrap();
        assert_eq!(list[0].name, "google");
        assert_eq!(list[0].scope(), "openid email profile");
        assert!(!format!("{list:?}").contains("s3cret"));
        assert_eq!(one("[]").unwrap().len(), 0);
    }

    #[test]
    fn bad_provider_lists_are_refused_with_a_reason() {
        for (json, why) in [
            ("{}", "JSON array"),
            (
                r#"[{"name":"Google","issuer":"https://a.example","client_id":"x","client_secret":"y"}]"#,
                "a-z",
            ),
            (
                r#"[{"name":"g","issuer":"http://id.example.com","client_id":"x","client_secret":"y"}]"#,
                "https",
            ),
            (
                r#"[{"name":"g","issuer":"https://a.example","client_id":"","client_secret":"y"}]"#,
                "client_id",
            ),
            (
                r#"[{"name":"g","issuer":"https://a.example","client_id":"x","client_secret":"y"},
                    {"name":"g","issuer":"https://b.example","client_id":"x","client_secret":"y"}]"#,
                "twice",
            ),
        ] {
            let err = one(json).unwrap_err();
            assert!(err.0.contains(why), "{json}: {err}");
        }
        // Loopback may use plain http (a local provider, the tests).
        assert!(
            one(r#"[{"name":"local","issuer":"http://127.0.0.1:9000","client_id":"x","client_secret":"y"}]"#)
                .is_ok()
        );
    }

    #[test]
    fn client_credentials_are_form_encoded() {
        assert_eq!(form_encode("a b+c/d:é"), "a+b%2Bc%2Fd%3A%C3%A9");
        assert_eq!(form_encode("plain-1.2_3*"), "plain-1.2_3*");
    }

    #[test]
    fn provider_errors_are_sanitized() {
        assert_eq!(sanitize("access_denied"), "access_denied");
        assert_eq!(sanitize("<script>x</script>"), "scriptxscript");
        assert_eq!(sanitize(&"a".repeat(100)).len(), 64);
    }
}
