//! What the OpenID sign-in tests need around the app: the real provider
//! (`auth/tests/oidc/provider.mjs`, the npm package `oidc-provider`, started on an
//! ephemeral port and killed by pid when dropped), a hostile provider for ID tokens
//! a real one would never send, and a browser (cookie jar, redirects one by one).

#![allow(dead_code)]

use crate::helpers::{Backend, Storage, TestApp, spawn_app_on_listener};
use auth::oidc::ProviderConfig;
use axum::Json;
use axum::extract::State;
use axum::routing::{get, post};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use reqwest::StatusCode;
use serde_json::{Value, json};
use servicekit::Secret;
use std::collections::HashMap;
use std::io::BufRead;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use tokio_util::sync::CancellationToken;

pub const CLIENT_ID: &str = "meetease";
pub const CLIENT_SECRET: &str = "meetease-test-secret";
/// Where a finished sign-in sends the browser (never fetched by the tests).
pub const RETURN_URL: &str = "http://127.0.0.1:9/signed-in";

/// The real OpenID provider, as a child process.
pub struct RealProvider {
    pub issuer: String,
    child: std::process::Child,
}

impl Drop for RealProvider {
    fn drop(&mut self) {
        // Our own child, by pid.
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn oidc_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/oidc")
}

impl RealProvider {
    /// Start `provider.mjs` allowing `redirect_uris`. Fails the test (never skips)
    /// when node or the npm packages are missing.
    pub fn start(redirect_uris: &[String]) -> RealProvider {
        let dir = oidc_dir();
        assert!(
            dir.join("node_modules/oidc-provider/package.json").exists(),
            "the OpenID provider's npm packages are missing: run `npm ci` in {} \
             (scripts/test does it)",
            dir.display()
        );
        let mut child = std::process::Command::new("node")
            .arg("provider.mjs")
            .current_dir(&dir)
            .env("REDIRECT_URIS", serde_json::to_string(redirect_uris).unwrap())
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap_or_else(|err| {
                panic!("cannot run `node` for the OpenID provider ({err}): install Node.js (apt-get install -y nodejs npm)")
            });
        let stdout = child.stdout.take().expect("a piped stdout");
        let mut line = String::new();
        std::io::BufReader::new(stdout)
            .read_line(&mut line)
            .expect("the provider prints its issuer");
        let issuer = serde_json::from_str::<Value>(&line)
            .ok()
            .and_then(|v| v["issuer"].as_str().map(str::to_owned))
            .unwrap_or_else(|| {
                let _ = child.kill();
                panic!("the OpenID provider did not start (printed {line:?})")
            });
        RealProvider { issuer, child }
    }
}

/// A provider that signs whatever claims the test sets: for ID tokens a real
/// provider would never issue (another issuer, audience or nonce; expired).
pub struct HostileProvider {
    pub issuer: String,
    /// The claims of the next ID token.
    pub next_claims: Arc<Mutex<Value>>,
    shutdown: CancellationToken,
}

impl Drop for HostileProvider {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

#[derive(Clone)]
struct HostileState {
    issuer: String,
    der: Arc<Vec<u8>>,
    jwks: Value,
    next: Arc<Mutex<Value>>,
}

impl HostileProvider {
    pub async fn start() -> HostileProvider {
        use aws_lc_rs::signature::{Ed25519KeyPair, KeyPair};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let issuer = format!("http://{}", listener.local_addr().unwrap());
        let rng = aws_lc_rs::rand::SystemRandom::new();
        let pkcs8 = Ed25519KeyPair::generate_pkcs8(&rng).unwrap();
        let pair = Ed25519KeyPair::from_pkcs8(pkcs8.as_ref()).unwrap();
        let jwks = json!({"keys": [{"kty": "OKP", "crv": "Ed25519", "kid": "hostile",
            "use": "sig", "alg": "EdDSA", "x": URL_SAFE_NO_PAD.encode(pair.public_key().as_ref())}]});
        let next = Arc::new(Mutex::new(Value::Null));
        let state = HostileState {
            issuer: issuer.clone(),
            der: Arc::new(pkcs8.as_ref().to_vec()),
            jwks,
            next: next.clone(),
        };
        let router = axum::Router::new()
            .route(
                "/.well-known/openid-configuration",
                get(|State(s): State<HostileState>| async move {
                    Json(json!({
                        "issuer": s.issuer,
                        "authorization_endpoint": format!("{}/authorize", s.issuer),
                        "token_endpoint": format!("{}/token", s.issuer),
                        "jwks_uri": format!("{}/jwks", s.issuer),
                        "code_challenge_methods_supported": ["S256"],
                    }))
                }),
            )
            .route(
                "/jwks",
                get(|State(s): State<HostileState>| async move { Json(s.jwks.clone()) }),
            )
            .route(
                "/token",
                post(|State(s): State<HostileState>| async move {
                    let claims = s.next.lock().unwrap().clone();
                    let mut header = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::EdDSA);
                    header.kid = Some("hostile".into());
                    let id_token = jsonwebtoken::encode(
                        &header,
                        &claims,
                        &jsonwebtoken::EncodingKey::from_ed_der(&s.der),
                    )
                    .unwrap();
                    Json(json!({"access_token": "x", "token_type": "Bearer", "id_token": id_token}))
                }),
            )
            .with_state(state);
        let shutdown = CancellationToken::new();
        let stop = shutdown.clone();
        tokio::spawn(async move {
            axum::serve(listener, router)
                .with_graceful_shutdown(async move { stop.cancelled().await })
                .await
        });
        HostileProvider {
            issuer,
            next_claims: next,
            shutdown,
        }
    }
}

/// An app configured with the real provider (`local`), the hostile one
/// (`hostile`) and one nobody answers for (`down`).
pub struct OauthApp {
    pub app: TestApp,
    pub provider: RealProvider,
    pub hostile: HostileProvider,
}

impl std::ops::Deref for OauthApp {
    type Target = TestApp;
    fn deref(&self) -> &TestApp {
        &self.app
    }
}

fn provider(name: &str, issuer: &str) -> ProviderConfig {
    ProviderConfig {
        name: name.into(),
        issuer: issuer.into(),
        client_id: CLIENT_ID.into(),
        client_secret: Secret::new(CLIENT_SECRET.into()),
        scopes: None,
    }
}

pub async fn spawn_oauth_app(backend: Backend) -> OauthApp {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let provider_ = RealProvider::start(&[format!("{base}/api/v1/auth/oauth/local/callback")]);
    let hostile = HostileProvider::start().await;
    let issuers = (provider_.issuer.clone(), hostile.issuer.clone());
    let app = spawn_app_on_listener(Arc::new(Storage::new(backend)), listener, |config| {
        config.oauth.public_url = base.clone();
        config.oauth.return_url = RETURN_URL.into();
        config.oauth.providers = vec![
            provider("local", &issuers.0),
            provider("hostile", &issuers.1),
            // Port 9 (discard) has no listener here: the provider is down.
            provider("down", "http://127.0.0.1:9"),
        ];
    })
    .await;
    OauthApp {
        app,
        provider: provider_,
        hostile,
    }
}

/// One step of a browser: the status, where it is sent next, the body.
#[derive(Debug)]
pub struct Step {
    pub status: StatusCode,
    pub location: Option<String>,
    pub body: Value,
}

impl Step {
    pub fn code(&self) -> &str {
        self.body["error"]["code"]
            .as_str()
            .unwrap_or("<no error code>")
    }
}

/// A browser: cookies by name (every server here is 127.0.0.1, and cookies ignore
/// ports), redirects followed one at a time by the test.
#[derive(Default)]
pub struct Browser {
    client: reqwest::Client,
    pub cookies: Mutex<HashMap<String, String>>,
}

impl Browser {
    pub fn new() -> Browser {
        Browser {
            client: reqwest::Client::builder()
                .redirect(reqwest::redirect::Policy::none())
                .build()
                .unwrap(),
            cookies: Mutex::default(),
        }
    }

    pub async fn get(&self, url: &str) -> Step {
        self.request(url, None).await
    }

    /// A page navigation: what a real browser sends when it follows a link or a
    /// redirect (`Accept: text/html…`).
    pub async fn navigate(&self, url: &str) -> Step {
        self.request(url, Some("text/html,application/xhtml+xml,*/*;q=0.8"))
            .await
    }

    async fn request(&self, url: &str, accept: Option<&str>) -> Step {
        let cookie = {
            let jar = self.cookies.lock().unwrap();
            jar.iter()
                .map(|(k, v)| format!("{k}={v}"))
                .collect::<Vec<_>>()
                .join("; ")
        };
        let mut request = self.client.get(url);
        if !cookie.is_empty() {
            request = request.header("cookie", cookie);
        }
        if let Some(accept) = accept {
            request = request.header("accept", accept);
        }
        let response = request.send().await.expect("the server answers");
        let status = response.status();
        for set in response.headers().get_all("set-cookie") {
            let set = set.to_str().unwrap();
            let (pair, attributes) = set.split_once(';').unwrap_or((set, ""));
            let (name, value) = pair.split_once('=').unwrap();
            let gone = value.is_empty()
                || attributes.to_ascii_lowercase().contains("max-age=0")
                || attributes.contains("1970");
            let mut jar = self.cookies.lock().unwrap();
            if gone {
                jar.remove(name.trim());
            } else {
                jar.insert(name.trim().to_owned(), value.to_owned());
            }
        }
        let location = response
            .headers()
            .get("location")
            .map(|v| v.to_str().unwrap().to_owned());
        let bytes = response.bytes().await.unwrap();
        Step {
            status,
            location,
            body: serde_json::from_slice(&bytes).unwrap_or(Value::Null),
        }
    }
}

/// A URL's query parameter.
pub fn query_param(url: &str, name: &str) -> Option<String> {
    reqwest::Url::parse(url)
        .ok()?
        .query_pairs()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.into_owned())
}

impl OauthApp {
    /// Start a sign-in with `provider`; the step that sends the browser away.
    pub async fn start(&self, browser: &Browser, provider: &str) -> Step {
        browser
            .get(&self.url(&format!("/api/v1/auth/oauth/{provider}/start")))
            .await
    }

    /// At the real provider, from its authorization URL, as `account` (or refusing,
    /// with `deny`): follow redirects until the provider sends the browser back to
    /// us. Returns that callback URL (not yet visited).
    pub async fn at_provider(
        &self,
        browser: &Browser,
        authorize: &str,
        account: &str,
        deny: bool,
    ) -> String {
        let mut url = authorize.to_owned();
        for _ in 0..10 {
            if url.starts_with(&format!("http://{}", self.addr)) {
                return url;
            }
            if url.contains("/interaction/") {
                url = if deny {
                    format!("{url}?deny=1")
                } else {
                    format!("{url}?account={}", urlencode(account))
                };
            }
            let step = browser.get(&url).await;
            assert!(
                step.status.is_redirection(),
                "the provider answered {} at {url}: {:?}",
                step.status,
                step.body
            );
            let next = step.location.expect("a redirect has a location");
            url = if next.starts_with('/') {
                format!("{}{next}", self.provider.issuer)
            } else {
                next
            };
        }
        panic!("the provider never sent the browser back");
    }

    /// A whole sign-in at the real provider as `account`: the callback's step.
    pub async fn sign_in_as(&self, browser: &Browser, account: &str) -> Step {
        let started = self.start(browser, "local").await;
        assert_eq!(started.status, StatusCode::SEE_OTHER, "{:?}", started.body);
        let callback = self
            .at_provider(browser, &started.location.unwrap(), account, false)
            .await;
        browser.get(&callback).await
    }

    /// Exchange the one-time code a finished sign-in put in the redirect.
    pub async fn exchange(&self, code: &str) -> crate::helpers::Answer {
        self.post("/api/v1/auth/oauth/exchange", json!({"code": code}), None)
            .await
    }

    /// A whole sign-in and exchange: the tokens' answer.
    pub async fn tokens_for(&self, account: &str) -> crate::helpers::Answer {
        let browser = Browser::new();
        let back = self.sign_in_as(&browser, account).await;
        assert_eq!(back.status, StatusCode::SEE_OTHER, "{:?}", back.body);
        let answer = self.exchange(&login_code(&back)).await;
        assert_eq!(answer.status, StatusCode::OK, "{:?}", answer.body);
        answer
    }
}

/// The one-time code in a finished sign-in's redirect to the web client.
pub fn login_code(step: &Step) -> String {
    let location = step.location.as_deref().expect("a redirect");
    let (page, fragment) = location.split_once('#').expect("a fragment");
    assert_eq!(page, RETURN_URL);
    fragment
        .strip_prefix("oauth_code=")
        .unwrap_or_else(|| panic!("no oauth_code in {location}"))
        .to_owned()
}

fn urlencode(value: &str) -> String {
    value
        .bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => {
                char::from(b).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// The address a socket is bound to, for building URLs.
pub fn base(addr: SocketAddr) -> String {
    format!("http://{addr}")
}
