//! Sign-in with an OpenID provider: the real one (`oidc-provider`, run by node),
//! and a hostile one for ID tokens a real provider would never send.

use crate::helpers::{Backend, PASSWORD, unique_email};
use crate::oidc_harness::{
    Browser, OauthApp, RETURN_URL, login_code, query_param, spawn_oauth_app,
};
use reqwest::StatusCode;
use serde_json::json;
use sqlx::Row;

/// Run `async fn name(app: OauthApp)` on both backends.
macro_rules! with_provider {
    ($($name:ident),* $(,)?) => {$(
        mod $name {
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn on_sqlite() {
                super::$name(super::spawn_oauth_app(super::Backend::Sqlite).await).await
            }
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn on_postgres() {
                super::$name(super::spawn_oauth_app(super::Backend::Postgres).await).await
            }
        }
    )*};
}

with_provider!(
    a_first_sign_in_creates_a_verified_account_and_a_one_time_code_for_the_tokens,
    a_verified_provider_email_links_to_the_existing_account,
    linking_to_an_account_whose_email_was_never_proven_ends_its_password_sessions,
    an_unverified_provider_email_never_links_to_an_existing_account,
    a_state_works_once_only_in_its_browser_and_not_after_it_expires,
    provider_errors_unknown_providers_and_foreign_codes_are_refused,
    id_tokens_with_another_issuer_audience_or_nonce_are_refused,
    a_browser_is_sent_back_to_the_web_client_with_the_refusal_code,
);

fn account(email: &str) -> String {
    email.to_owned()
}

async fn a_first_sign_in_creates_a_verified_account_and_a_one_time_code_for_the_tokens(
    app: OauthApp,
) {
    let email = unique_email();
    let browser = Browser::new();
    let started = app.start(&browser, "local").await;
    assert_eq!(started.status, StatusCode::SEE_OTHER);
    let authorize = started.location.clone().unwrap();
    assert!(authorize.starts_with(&app.provider.issuer), "{authorize}");
    assert_eq!(
        query_param(&authorize, "code_challenge_method").unwrap(),
        "S256"
    );
    assert_eq!(query_param(&authorize, "code_challenge").unwrap().len(), 43);
    assert!(query_param(&authorize, "nonce").is_some());
    assert!(
        browser
            .cookies
            .lock()
            .unwrap()
            .contains_key("meetease_oauth")
    );

    let callback = app
        .at_provider(&browser, &authorize, &account(&email), false)
        .await;
    let back = browser.get(&callback).await;
    assert_eq!(back.status, StatusCode::SEE_OTHER, "{:?}", back.body);
    let location = back.location.clone().unwrap();
    // Tokens never travel in a URL: only a one-time code, in the fragment.
    assert!(!location.contains("access_token") && !location.contains("refresh_token"));
    let code = login_code(&back);

    let tokens = app.exchange(&code).await;
    assert_eq!(tokens.status, StatusCode::OK, "{:?}", tokens.body);
    assert_eq!(tokens.body["user"]["email"], email.as_str());
    assert_eq!(tokens.body["user"]["email_verified"], true);
    assert_eq!(
        tokens.body["user"]["display_name"],
        format!("Test {}", email.split('@').next().unwrap())
    );
    assert!(app.is_active(&tokens.str("access_token")).await);
    assert_eq!(
        app.refresh(&tokens.str("refresh_token")).await.status,
        StatusCode::OK
    );
    // The code works once.
    let again = app.exchange(&code).await;
    assert_eq!(again.status, StatusCode::BAD_REQUEST);
    assert_eq!(again.code(), "invalid_one_time_token");
    let registered = app.outbox("user.registered").await;
    assert_eq!(registered.len(), 1);
    assert_eq!(registered[0]["email"], email.as_str());
    assert_eq!(registered[0]["provider"], "local");

    // The next sign-in finds the same account by its identity; no new account.
    let second = app.tokens_for(&account(&email)).await;
    assert_eq!(second.body["user"]["id"], tokens.body["user"]["id"]);
    assert_eq!(app.outbox("user.registered").await.len(), 1);
    // An account made this way has no password to sign in with.
    let login = app.login(&email, PASSWORD).await;
    assert_eq!(login.code(), "invalid_credentials");
}

async fn a_verified_provider_email_links_to_the_existing_account(app: OauthApp) {
    let (email, registered) = app.new_account().await;
    // The owner proves the mailbox the usual way first.
    let token = app
        .last_token_for("auth.email_verification_requested", &email)
        .await;
    let verified = app
        .post("/api/v1/auth/verify-email", json!({"token": token}), None)
        .await;
    assert_eq!(verified.status, StatusCode::OK);

    let tokens = app.tokens_for(&account(&email)).await;
    assert_eq!(tokens.body["user"]["id"], registered.body["user"]["id"]);
    assert_eq!(app.outbox("auth.identity_linked").await.len(), 1);
    // The password and its session are untouched.
    assert!(app.is_active(&registered.str("access_token")).await);
    assert_eq!(app.login(&email, PASSWORD).await.status, StatusCode::OK);
}

async fn linking_to_an_account_whose_email_was_never_proven_ends_its_password_sessions(
    app: OauthApp,
) {
    // Someone registers with an address they do not own (pre-account takeover)...
    let (email, squatter) = app.new_account().await;
    // ...then the real owner signs in with the provider, which vouches for it.
    let tokens = app.tokens_for(&account(&email)).await;
    assert_eq!(tokens.body["user"]["id"], squatter.body["user"]["id"]);
    assert_eq!(tokens.body["user"]["email_verified"], true);
    // Whoever chose the password never proved the mailbox: out they go.
    assert!(!app.is_active(&squatter.str("access_token")).await);
    assert_eq!(
        app.refresh(&squatter.str("refresh_token")).await.code(),
        "invalid_refresh_token"
    );
    assert_eq!(
        app.login(&email, PASSWORD).await.code(),
        "invalid_credentials"
    );
    assert!(app.is_active(&tokens.str("access_token")).await);
}

async fn an_unverified_provider_email_never_links_to_an_existing_account(app: OauthApp) {
    let (email, registered) = app.new_account().await;
    let browser = Browser::new();
    let back = app
        .sign_in_as(&browser, &format!("unverified:{email}"))
        .await;
    assert_eq!(back.status, StatusCode::CONFLICT, "{:?}", back.body);
    assert_eq!(back.code(), "oauth_email_unverified");
    let linked: i64 = sqlx::query("SELECT COUNT(*) AS n FROM user_identities")
        .fetch_one(app.db.pool())
        .await
        .unwrap()
        .try_get("n")
        .unwrap();
    assert_eq!(linked, 0);
    assert!(app.is_active(&registered.str("access_token")).await);

    // With a new address, the account is made, unverified, and a link is sent.
    let fresh = unique_email();
    let tokens = app.tokens_for(&format!("unverified:{fresh}")).await;
    assert_eq!(tokens.body["user"]["email"], fresh.as_str());
    assert_eq!(tokens.body["user"]["email_verified"], false);
    app.last_token_for("auth.email_verification_requested", &fresh)
        .await;

    // A provider that shares no email cannot make an account.
    let browser = Browser::new();
    let back = app.sign_in_as(&browser, "noemail:carol").await;
    assert_eq!(
        back.status,
        StatusCode::UNPROCESSABLE_ENTITY,
        "{:?}",
        back.body
    );
    assert_eq!(back.code(), "oauth_email_required");
}

async fn a_state_works_once_only_in_its_browser_and_not_after_it_expires(app: OauthApp) {
    let email = unique_email();
    // Replayed: the same callback URL a second time, cookie and all.
    let browser = Browser::new();
    let started = app.start(&browser, "local").await;
    let callback = app
        .at_provider(&browser, &started.location.unwrap(), &email, false)
        .await;
    let jar = browser.cookies.lock().unwrap().clone();
    assert_eq!(browser.get(&callback).await.status, StatusCode::SEE_OTHER);
    *browser.cookies.lock().unwrap() = jar;
    let again = browser.get(&callback).await;
    assert_eq!(again.status, StatusCode::BAD_REQUEST);
    assert_eq!(again.code(), "invalid_oauth_state");

    // Another browser (login CSRF: the attacker's callback in the victim's browser).
    let attacker = Browser::new();
    let started = app.start(&attacker, "local").await;
    let callback = app
        .at_provider(&attacker, &started.location.unwrap(), &email, false)
        .await;
    let victim = Browser::new();
    let csrf = victim.get(&callback).await;
    assert_eq!(csrf.code(), "invalid_oauth_state");
    // ...and that attempt used the state up for the attacker too.
    assert_eq!(attacker.get(&callback).await.code(), "invalid_oauth_state");

    // Expired: ten minutes pass between start and callback.
    let browser = Browser::new();
    let started = app.start(&browser, "local").await;
    let callback = app
        .at_provider(&browser, &started.location.unwrap(), &email, false)
        .await;
    sqlx::query("UPDATE oauth_flows SET expires_at = 0")
        .execute(app.db.pool())
        .await
        .unwrap();
    let late = browser.get(&callback).await;
    assert_eq!(late.status, StatusCode::BAD_REQUEST);
    assert_eq!(late.code(), "invalid_oauth_state");

    // Missing, made up, or huge.
    let huge = format!(
        "/api/v1/auth/oauth/local/callback?code=a&state={}",
        "s".repeat(5000)
    );
    for path in [
        "/api/v1/auth/oauth/local/callback?code=abc",
        "/api/v1/auth/oauth/local/callback?code=abc&state=made-up",
        "/api/v1/auth/oauth/local/callback?state=",
        "/api/v1/auth/oauth/local/callback?state=%27%20OR%201%3D1--",
        &huge,
    ] {
        let step = browser.get(&app.url(path)).await;
        assert_eq!(step.status, StatusCode::BAD_REQUEST, "{path}");
        assert_eq!(step.code(), "invalid_oauth_state", "{path}");
    }
    // A query that is not even UTF-8 is a clean 400 with a code, not a bare text.
    let step = browser
        .get(&app.url("/api/v1/auth/oauth/local/callback?state=%FF%FE"))
        .await;
    assert_eq!(step.status, StatusCode::BAD_REQUEST);
    assert_ne!(step.code(), "<no error code>");
}

async fn provider_errors_unknown_providers_and_foreign_codes_are_refused(app: OauthApp) {
    let browser = Browser::new();
    // Unknown provider, at both ends.
    for path in [
        "/api/v1/auth/oauth/nosuch/start",
        "/api/v1/auth/oauth/nosuch/callback?code=a&state=b",
    ] {
        let step = browser.get(&app.url(path)).await;
        assert_eq!(step.status, StatusCode::NOT_FOUND, "{path}");
        assert_eq!(step.code(), "unknown_provider", "{path}");
    }
    // A provider that does not answer.
    let down = app.start(&browser, "down").await;
    assert_eq!(down.status, StatusCode::BAD_GATEWAY);
    assert_eq!(down.code(), "provider_unavailable");

    // The person says no at the provider: it sends error=access_denied.
    let started = app.start(&browser, "local").await;
    let callback = app
        .at_provider(&browser, &started.location.unwrap(), "", true)
        .await;
    assert_eq!(query_param(&callback, "error").unwrap(), "access_denied");
    let denied = browser.get(&callback).await;
    assert_eq!(denied.status, StatusCode::BAD_REQUEST);
    assert_eq!(denied.code(), "oauth_provider_error");

    // A code issued to another flow, presented with this flow's state: the PKCE
    // verifier does not match, the provider refuses the exchange.
    let email = unique_email();
    let mine = app.start(&browser, "local").await;
    let my_state = query_param(mine.location.as_ref().unwrap(), "state").unwrap();
    let other = Browser::new();
    let theirs = app.start(&other, "local").await;
    let their_callback = app
        .at_provider(&other, &theirs.location.unwrap(), &email, false)
        .await;
    let their_code = query_param(&their_callback, "code").unwrap();
    let injected = browser
        .get(&app.url(&format!(
            "/api/v1/auth/oauth/local/callback?code={their_code}&state={my_state}"
        )))
        .await;
    assert_eq!(
        injected.status,
        StatusCode::BAD_REQUEST,
        "{:?}",
        injected.body
    );
    assert_eq!(injected.code(), "oauth_provider_error");

    // The one-time code exchange refuses garbage.
    for code in ["", "x", &"y".repeat(10_000)] {
        let answer = app.exchange(code).await;
        assert_eq!(answer.code(), "invalid_one_time_token");
    }
}

async fn id_tokens_with_another_issuer_audience_or_nonce_are_refused(app: OauthApp) {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let email = unique_email();
    let issuer = app.hostile.issuer.clone();
    let cases = [
        ("a good token (the harness works)", json!({}), None),
        (
            "another issuer",
            json!({"iss": "http://127.0.0.1:1"}),
            Some("invalid_id_token"),
        ),
        (
            "another audience",
            json!({"aud": "someone-else"}),
            Some("invalid_id_token"),
        ),
        (
            "another nonce",
            json!({"nonce": "not this flow's"}),
            Some("invalid_id_token"),
        ),
        (
            "expired",
            json!({"exp": now - 60}),
            Some("invalid_id_token"),
        ),
    ];
    for (what, edit, refused) in cases {
        let browser = Browser::new();
        let started = app.start(&browser, "hostile").await;
        let authorize = started.location.expect("a redirect to the provider");
        let state = query_param(&authorize, "state").unwrap();
        let nonce = query_param(&authorize, "nonce").unwrap();
        let mut claims = json!({"iss": issuer, "aud": "meetease", "sub": "hostile-1",
            "exp": now + 300, "iat": now, "nonce": nonce,
            "email": email, "email_verified": true});
        for (key, value) in edit.as_object().unwrap() {
            claims[key] = value.clone();
        }
        *app.hostile.next_claims.lock().unwrap() = claims;
        let back = browser
            .get(&app.url(&format!(
                "/api/v1/auth/oauth/hostile/callback?code=c&state={state}"
            )))
            .await;
        match refused {
            None => assert_eq!(
                back.status,
                StatusCode::SEE_OTHER,
                "{what}: {:?}",
                back.body
            ),
            Some(code) => {
                assert_eq!(back.status, StatusCode::UNAUTHORIZED, "{what}");
                assert_eq!(back.code(), code, "{what}");
            }
        }
    }
}

async fn a_browser_is_sent_back_to_the_web_client_with_the_refusal_code(app: OauthApp) {
    let browser = Browser::new();
    let back_with = |code: &str| format!("{RETURN_URL}#oauth_error={code}");
    // Unknown provider, at both ends; a provider that does not answer.
    for (path, code) in [
        ("/api/v1/auth/oauth/nosuch/start", "unknown_provider"),
        (
            "/api/v1/auth/oauth/nosuch/callback?code=a&state=b",
            "unknown_provider",
        ),
        ("/api/v1/auth/oauth/down/start", "provider_unavailable"),
        (
            "/api/v1/auth/oauth/local/callback?code=a&state=b",
            "invalid_oauth_state",
        ),
    ] {
        let step = browser.navigate(&app.url(path)).await;
        assert_eq!(step.status, StatusCode::SEE_OTHER, "{path} {:?}", step.body);
        assert_eq!(step.location.as_deref(), Some(back_with(code).as_str()));
    }

    // The person says no at the provider: the callback sends the browser back to
    // the web client with the code, and ends the flow's cookie.
    let started = app.start(&browser, "local").await;
    let callback = app
        .at_provider(&browser, &started.location.unwrap(), "", true)
        .await;
    let denied = browser.navigate(&callback).await;
    assert_eq!(denied.status, StatusCode::SEE_OTHER);
    assert_eq!(
        denied.location.as_deref(),
        Some(back_with("oauth_provider_error").as_str())
    );
    assert!(
        !browser
            .cookies
            .lock()
            .unwrap()
            .contains_key("meetease_oauth")
    );

    // A successful sign-in navigated to by a browser still ends with its code.
    let email = unique_email();
    let started = browser
        .navigate(&app.url("/api/v1/auth/oauth/local/start"))
        .await;
    assert_eq!(started.status, StatusCode::SEE_OTHER);
    let callback = app
        .at_provider(
            &browser,
            &started.location.unwrap(),
            &account(&email),
            false,
        )
        .await;
    let back = browser.navigate(&callback).await;
    assert_eq!(back.status, StatusCode::SEE_OTHER, "{:?}", back.body);
    let tokens = app.exchange(&login_code(&back)).await;
    assert_eq!(tokens.status, StatusCode::OK, "{:?}", tokens.body);
}
