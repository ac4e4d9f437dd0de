//! The route table: which path goes where, which class of limits it gets, and
//! whether it needs an access token.

use axum::http::Method;

/// The services behind the gateway.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum UpstreamId {
    Auth,
    Users,
    Signaling,
    Notify,
    Analytics,
}

impl UpstreamId {
    pub const ALL: [UpstreamId; 5] = [
        UpstreamId::Auth,
        UpstreamId::Users,
        UpstreamId::Signaling,
        UpstreamId::Notify,
        UpstreamId::Analytics,
    ];

    pub fn name(self) -> &'static str {
        match self {
            UpstreamId::Auth => "auth",
            UpstreamId::Users => "users",
            UpstreamId::Signaling => "signaling",
            UpstreamId::Notify => "notify",
            UpstreamId::Analytics => "analytics",
        }
    }

    pub fn index(self) -> usize {
        self as usize
    }
}

/// Route classes share timeouts, body limits and rate limits.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RouteClass {
    /// Sign-in, sign-up, password reset and change: strict per-address limits.
    Credentials,
    /// Every other `/api/v1/*` call.
    Api,
    /// `PUT /api/v1/users/me/avatar`: a larger body, a longer timeout.
    Upload,
    /// The `/rtc` WebSocket (the handshake; the tunnel then lives on its own).
    Rtc,
}

impl RouteClass {
    pub fn as_str(self) -> &'static str {
        match self {
            RouteClass::Credentials => "credentials",
            RouteClass::Api => "api",
            RouteClass::Upload => "upload",
            RouteClass::Rtc => "rtc",
        }
    }
}

/// Whether a route needs a valid access token at the gateway.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// Anyone. A bearer token, when sent, is verified and its user forwarded if
    /// valid, and passed on untouched either way (the service decides).
    Public,
    /// A valid, unrevoked access token, or 401.
    Token,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Route {
    pub upstream: UpstreamId,
    pub class: RouteClass,
    pub access: Access,
}

/// The prefixes the gateway routes, in match order.
const PREFIXES: &[(&str, UpstreamId)] = &[
    ("/api/v1/auth", UpstreamId::Auth),
    ("/api/v1/users", UpstreamId::Users),
    ("/api/v1/meetings", UpstreamId::Signaling),
    ("/api/v1/notifications", UpstreamId::Notify),
    ("/api/v1/analytics", UpstreamId::Analytics),
    ("/rtc", UpstreamId::Signaling),
];

/// Routes anyone may call, matched exactly (no prefix, no trailing slash): a path
/// that merely starts like one of these needs a token.
pub const PUBLIC: &[(Method, &str)] = &[
    (Method::POST, "/api/v1/auth/register"),
    (Method::POST, "/api/v1/auth/login"),
    (Method::POST, "/api/v1/auth/refresh"),
    (Method::POST, "/api/v1/auth/verify-email"),
    (Method::POST, "/api/v1/auth/password-reset"),
    (Method::POST, "/api/v1/auth/password-reset/confirm"),
    (Method::GET, "/api/v1/auth/jwks"),
    (Method::HEAD, "/api/v1/auth/jwks"),
    // Sign-in with an OpenID provider: the list of providers, and the one-time
    // code's exchange for tokens (start and callback: `is_oauth_redirect`).
    (Method::GET, "/api/v1/auth/oauth/providers"),
    (Method::POST, "/api/v1/auth/oauth/exchange"),
    // The room token inside the WebSocket is checked by signaling.
    (Method::GET, "/rtc"),
];

/// Routes with the strict credential limits.
const CREDENTIALS: &[&str] = &[
    "/api/v1/auth/register",
    "/api/v1/auth/login",
    "/api/v1/auth/password-reset",
    "/api/v1/auth/password-reset/confirm",
    "/api/v1/auth/password",
    "/api/v1/auth/oauth/exchange",
];

/// Where `method path` goes, or `None` when no service owns it.
pub fn classify(method: &Method, path: &str) -> Option<Route> {
    let upstream = PREFIXES.iter().find_map(|(prefix, upstream)| {
        let rest = path.strip_prefix(prefix)?;
        (rest.is_empty() || rest.starts_with('/')).then_some(*upstream)
    })?;
    let public = PUBLIC.iter().any(|(m, p)| m == method && *p == path)
        || is_guest_join(method, path)
        || is_meeting_lookup(method, path)
        || is_oauth_redirect(method, path);
    let class = if path == "/rtc" {
        RouteClass::Rtc
    } else if CREDENTIALS.contains(&path) {
        RouteClass::Credentials
    } else if method == Method::PUT && path == "/api/v1/users/me/avatar" {
        RouteClass::Upload
    } else {
        RouteClass::Api
    };
    Some(Route {
        upstream,
        class,
        access: if public {
            Access::Public
        } else {
            Access::Token
        },
    })
}

/// `POST /api/v1/meetings/{id}/join`: guests join without an account.
fn is_guest_join(method: &Method, path: &str) -> bool {
    method == Method::POST
        && path
            .strip_prefix("/api/v1/meetings/")
            .and_then(|rest| rest.strip_suffix("/join"))
            .is_some_and(|id| !id.is_empty() && !id.contains('/'))
}

/// `GET /api/v1/auth/oauth/{provider}/start` and `…/callback`: the browser is
/// sent there (by the web client, then by the provider) before it has a token.
fn is_oauth_redirect(method: &Method, path: &str) -> bool {
    method == Method::GET
        && path
            .strip_prefix("/api/v1/auth/oauth/")
            .and_then(|rest| {
                rest.strip_suffix("/start")
                    .or_else(|| rest.strip_suffix("/callback"))
            })
            .is_some_and(|provider| !provider.is_empty() && !provider.contains('/'))
}

/// `GET /api/v1/meetings/{id}`: the lobby shows a guest the meeting's public
/// details (its title, whether guests may join) before joining.
fn is_meeting_lookup(method: &Method, path: &str) -> bool {
    (method == Method::GET || method == Method::HEAD)
        && path
            .strip_prefix("/api/v1/meetings/")
            .is_some_and(|id| !id.is_empty() && !id.contains('/'))
}

/// Paths the gateway refuses outright: dot segments, empty segments and encoded
/// separators could make the gateway and a service disagree about which route a
/// request names.
pub fn is_suspicious(path: &str) -> bool {
    if !path.starts_with('/') || path.contains("//") {
        return true;
    }
    let lower = path.to_ascii_lowercase();
    if lower.contains("%2f")
        || lower.contains("%5c")
        || lower.contains("%2e")
        || path.contains('\\')
    {
        return true;
    }
    path.split('/')
        .any(|segment| segment == "." || segment == "..")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn route(method: Method, path: &str) -> Option<Route> {
        classify(&method, path)
    }

    #[test]
    fn each_prefix_reaches_its_service() {
        assert_eq!(
            route(Method::GET, "/api/v1/users/me").unwrap().upstream,
            UpstreamId::Users
        );
        assert_eq!(
            route(Method::GET, "/api/v1/meetings").unwrap().upstream,
            UpstreamId::Signaling
        );
        assert_eq!(
            route(Method::GET, "/rtc").unwrap().upstream,
            UpstreamId::Signaling
        );
        assert_eq!(
            route(Method::GET, "/api/v1/notifications/x")
                .unwrap()
                .upstream,
            UpstreamId::Notify
        );
        assert_eq!(
            route(Method::GET, "/api/v1/analytics").unwrap().upstream,
            UpstreamId::Analytics
        );
        assert!(route(Method::GET, "/api/v1/authx").is_none());
        assert!(route(Method::GET, "/api/v2/auth").is_none());
        assert!(route(Method::GET, "/index.html").is_none());
    }

    #[test]
    fn public_routes_match_exactly_and_by_method() {
        assert_eq!(
            route(Method::POST, "/api/v1/auth/login").unwrap().access,
            Access::Public
        );
        assert_eq!(
            route(Method::GET, "/api/v1/auth/login").unwrap().access,
            Access::Token
        );
        assert_eq!(
            route(Method::POST, "/api/v1/auth/login/").unwrap().access,
            Access::Token
        );
        assert_eq!(
            route(Method::POST, "/api/v1/auth/logout").unwrap().access,
            Access::Token
        );
        assert_eq!(
            route(Method::POST, "/api/v1/auth/introspect")
                .unwrap()
                .access,
            Access::Token
        );
        assert_eq!(
            route(Method::POST, "/api/v1/meetings/abc/join")
                .unwrap()
                .access,
            Access::Public
        );
        assert_eq!(
            route(Method::POST, "/api/v1/meetings/a/b/join")
                .unwrap()
                .access,
            Access::Token
        );
        assert_eq!(
            route(Method::POST, "/api/v1/meetings//join")
                .unwrap()
                .access,
            Access::Token
        );
        assert_eq!(
            route(Method::GET, "/api/v1/meetings/abc").unwrap().access,
            Access::Public
        );
        assert_eq!(
            route(Method::PATCH, "/api/v1/meetings/abc").unwrap().access,
            Access::Token
        );
        assert_eq!(
            route(Method::GET, "/api/v1/meetings").unwrap().access,
            Access::Token
        );
        assert_eq!(
            route(Method::GET, "/api/v1/meetings/abc/join")
                .unwrap()
                .access,
            Access::Token
        );
        assert_eq!(route(Method::GET, "/rtc").unwrap().access, Access::Public);
        for path in [
            "/api/v1/auth/oauth/providers",
            "/api/v1/auth/oauth/google/start",
            "/api/v1/auth/oauth/google/callback",
        ] {
            assert_eq!(route(Method::GET, path).unwrap().access, Access::Public);
        }
        assert_eq!(
            route(Method::POST, "/api/v1/auth/oauth/exchange")
                .unwrap()
                .access,
            Access::Public
        );
        for path in [
            "/api/v1/auth/oauth//start",
            "/api/v1/auth/oauth/a/b/callback",
            "/api/v1/auth/oauth/google/other",
        ] {
            assert_eq!(route(Method::GET, path).unwrap().access, Access::Token);
        }
        assert_eq!(
            route(Method::POST, "/api/v1/auth/oauth/google/start")
                .unwrap()
                .access,
            Access::Token
        );
        assert_eq!(
            route(Method::DELETE, "/api/v1/auth/account")
                .unwrap()
                .access,
            Access::Token
        );
    }

    #[test]
    fn classes_pick_credentials_and_uploads() {
        assert_eq!(
            route(Method::POST, "/api/v1/auth/login").unwrap().class,
            RouteClass::Credentials
        );
        assert_eq!(
            route(Method::POST, "/api/v1/auth/register").unwrap().class,
            RouteClass::Credentials
        );
        assert_eq!(
            route(Method::PUT, "/api/v1/users/me/avatar").unwrap().class,
            RouteClass::Upload
        );
        assert_eq!(
            route(Method::GET, "/api/v1/users/me/avatar").unwrap().class,
            RouteClass::Api
        );
        assert_eq!(route(Method::GET, "/rtc").unwrap().class, RouteClass::Rtc);
    }

    #[test]
    fn dot_segments_and_encoded_separators_are_suspicious() {
        for path in [
            "/api/v1/auth/../users/me",
            "/api/v1/auth/./login",
            "/api//v1/users",
            "/api/v1/auth%2f..%2fusers",
            "/api/v1/auth/%2E%2E/users",
            "/api/v1/a\\b",
        ] {
            assert!(is_suspicious(path), "{path}");
        }
        assert!(!is_suspicious("/api/v1/users/me"));
        assert!(!is_suspicious("/api/v1/meetings/abc-def/join"));
    }
}
