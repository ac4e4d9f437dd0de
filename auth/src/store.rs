//! The auth service's relational store: accounts, sessions, refresh and one-time
//! tokens, revoked access tokens, signing keys, OpenID sign-in flows and identity
//! links, and the outbox.
//!
//! One set of portable queries serves PostgreSQL and SQLite through sqlx's `Any`
//! driver: TEXT ids, BIGINT Unix milliseconds, `$n` placeholders (SQLite accepts
//! them too). Every multi-step change runs in one transaction whose first statement
//! writes, so SQLite takes its write lock up front instead of failing to upgrade.

use proto::ids::UserId;
use serde_json::Value;
use servicekit::backends::Db;
use sqlx::any::AnyRow;
use sqlx::{Any, AnyPool, Row, Transaction};
use uuid::Uuid;

/// The migrations, one folder per SQL dialect.
pub static PG_MIGRATIONS: sqlx::migrate::Migrator = sqlx::migrate!("./migrations/postgres");
pub static SQLITE_MIGRATIONS: sqlx::migrate::Migrator = sqlx::migrate!("./migrations/sqlite");

/// Unix milliseconds.
pub type Millis = i64;

/// Why a store call failed.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("an account with this email exists")]
    EmailTaken,
    #[error("the provider does not vouch for this email, and an account has it")]
    EmailUnverified,
    #[error("the provider gave no email")]
    EmailRequired,
    #[error("stored data is corrupt: {0}")]
    Corrupt(String),
    #[error(transparent)]
    Db(#[from] sqlx::Error),
}

impl From<StoreError> for servicekit::ApiError {
    fn from(err: StoreError) -> Self {
        match err {
            StoreError::EmailTaken => servicekit::ApiError::new(
                proto::ErrorCode::EmailTaken,
                "an account with this email already exists",
            ),
            StoreError::EmailUnverified => servicekit::ApiError::new(
                proto::ErrorCode::OauthEmailUnverified,
                "an account with this email exists, and the provider does not say the email is verified; sign in with the password, then link",
            ),
            StoreError::EmailRequired => servicekit::ApiError::new(
                proto::ErrorCode::OauthEmailRequired,
                "the provider did not share a usable email address",
            ),
            StoreError::Corrupt(why) => servicekit::ApiError::internal(why),
            StoreError::Db(err) => err.into(),
        }
    }
}

pub type StoreResult<T> = Result<T, StoreError>;

/// An account as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UserRecord {
    pub id: UserId,
    pub email: String,
    pub display_name: String,
    pub password_hash: String,
    pub email_verified_at: Option<Millis>,
    pub created_at: Millis,
}

impl UserRecord {
    /// Accounts made by an OpenID sign-in (and deleted ones) have no password: their
    /// `password_hash` is empty, and no password matches it.
    pub fn has_password(&self) -> bool {
        !self.password_hash.is_empty()
    }
}

/// A new session and the first refresh token of its family.
#[derive(Debug, Clone)]
pub struct NewSession {
    pub id: Uuid,
    pub user_id: UserId,
    pub now: Millis,
    pub expires_at: Millis,
    pub refresh_hash: String,
    pub refresh_expires_at: Millis,
}

/// What presenting a refresh token did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Rotation {
    /// The token was current: it is now used and `new_hash` replaces it.
    Rotated { session_id: Uuid, user: UserRecord },
    /// The token had been used before: the whole family (session) is now revoked.
    Reused { session_id: Uuid },
    /// Unknown, expired, or its session is revoked or over.
    Invalid,
}

/// Why a session was revoked (stored as text).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RevokeReason {
    Logout,
    LogoutAll,
    Reuse,
    PasswordChanged,
    PasswordReset,
    /// An OpenID sign-in proved the email of an account whose owner never had:
    /// whoever set its password did not prove the mailbox, so their sessions end.
    AccountLinked,
    AccountDeleted,
}

impl RevokeReason {
    fn as_str(self) -> &'static str {
        match self {
            RevokeReason::Logout => "logout",
            RevokeReason::LogoutAll => "logout_all",
            RevokeReason::Reuse => "reuse",
            RevokeReason::PasswordChanged => "password_changed",
            RevokeReason::PasswordReset => "password_reset",
            RevokeReason::AccountLinked => "account_linked",
            RevokeReason::AccountDeleted => "account_deleted",
        }
    }
}

/// What a one-time token is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Purpose {
    VerifyEmail,
    ResetPassword,
    /// The one-time code an OpenID sign-in hands the web client to exchange for tokens.
    OAuthLogin,
}

impl Purpose {
    fn as_str(self) -> &'static str {
        match self {
            Purpose::VerifyEmail => "verify_email",
            Purpose::ResetPassword => "reset_password",
            Purpose::OAuthLogin => "oauth_login",
        }
    }
}

/// A one-time token to store, and the event announcing it (which carries the token
/// itself to the notify service).
#[derive(Debug, Clone)]
pub struct NewOneTimeToken {
    pub hash: String,
    pub purpose: Purpose,
    pub user_id: UserId,
    pub now: Millis,
    pub expires_at: Millis,
}

/// An event for the outbox.
#[derive(Debug, Clone)]
pub struct OutboxEvent {
    pub kind: &'static str,
    pub payload: Value,
}

/// A signing key as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyRecord {
    pub kid: String,
    pub algorithm: String,
    pub private_key: String,
    pub public_key: String,
    pub created_at: Millis,
    pub retire_at: Option<Millis>,
}

/// An OpenID sign-in being started.
#[derive(Debug, Clone)]
pub struct NewOAuthFlow {
    pub state_hash: String,
    pub provider: String,
    pub nonce: String,
    pub code_verifier: String,
    pub browser_hash: String,
    pub now: Millis,
    pub expires_at: Millis,
}

/// A sign-in flow taken back at the callback (now used up).
#[derive(Debug, Clone)]
pub struct OAuthFlow {
    pub provider: String,
    pub nonce: String,
    pub code_verifier: String,
    pub browser_hash: String,
}

/// What an OpenID provider said about a person, and what to store if this makes
/// a new account.
#[derive(Debug, Clone)]
pub struct OidcLogin<'a> {
    pub provider: &'a str,
    pub subject: &'a str,
    /// Normalised; `None` when the provider gave none (or an unusable one).
    pub email: Option<&'a str>,
    pub email_verified: bool,
    /// The account to create when neither the identity nor the email is known.
    pub new_user: UserRecord,
    /// For a new account whose email the provider does not vouch for.
    pub verification: Option<NewOneTimeToken>,
    /// The one-time code the browser exchanges for tokens (hash, expiry).
    pub login_code_hash: String,
    pub login_code_expires_at: Millis,
    pub now: Millis,
}

/// How an OpenID sign-in found its account.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OidcOutcome {
    /// The identity was linked before.
    Returning,
    /// Linked now to the account with the same (provider-verified) email; sessions
    /// revoked if that account's email had never been proven.
    Linked { revoked: Vec<Uuid> },
    /// A new account.
    Created,
}

/// Revocations still in force, for re-seeding the Redis cache.
#[derive(Debug, Clone, Default)]
pub struct ActiveRevocations {
    /// (jti, expires_at)
    pub tokens: Vec<(Uuid, Millis)>,
    /// (session id, revoked_at)
    pub sessions: Vec<(Uuid, Millis)>,
}

/// Cheap to clone: a pool handle.
#[derive(Clone, Debug)]
pub struct Store {
    db: Db,
}

const USER_COLUMNS: &str = "id, email, display_name, password_hash, email_verified_at, created_at";

fn user_from_row(row: &AnyRow) -> StoreResult<UserRecord> {
    let id: String = row.try_get("id")?;
    Ok(UserRecord {
        id: id
            .parse()
            .map_err(|_| StoreError::Corrupt(format!("user id `{id}` is not a UUID")))?,
        email: row.try_get("email")?,
        display_name: row.try_get("display_name")?,
        password_hash: row.try_get("password_hash")?,
        email_verified_at: row.try_get("email_verified_at")?,
        created_at: row.try_get("created_at")?,
    })
}

fn uuid(text: &str) -> StoreResult<Uuid> {
    text.parse()
        .map_err(|_| StoreError::Corrupt(format!("`{text}` is not a UUID")))
}

fn is_unique_violation(err: &sqlx::Error) -> bool {
    err.as_database_error()
        .is_some_and(|db| db.is_unique_violation())
}

impl Store {
    /// Wrap a connected database and bring its schema up to date.
    pub async fn open(db: Db) -> Result<Store, servicekit::StartError> {
        db.migrate(&PG_MIGRATIONS, &SQLITE_MIGRATIONS).await?;
        Ok(Store { db })
    }

    fn pool(&self) -> &AnyPool {
        self.db.pool()
    }

    pub fn db(&self) -> &Db {
        &self.db
    }

    // --- accounts -------------------------------------------------------------------

    /// Create an account, with the events that announce it, in one transaction.
    pub async fn create_user(
        &self,
        user: &UserRecord,
        verification: &NewOneTimeToken,
        events: &[OutboxEvent],
    ) -> StoreResult<()> {
        let mut tx = self.db.begin().await?;
        let inserted = sqlx::query(
            "INSERT INTO users (id, email, display_name, password_hash, email_verified_at, created_at, updated_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $6)",
        )
        .bind(user.id.to_string())
        .bind(&user.email)
        .bind(&user.display_name)
        .bind(&user.password_hash)
        .bind(user.email_verified_at)
        .bind(user.created_at)
        .execute(&mut *tx)
        .await;
        match inserted {
            Ok(_) => {}
            Err(err) if is_unique_violation(&err) => return Err(StoreError::EmailTaken),
            Err(err) => return Err(err.into()),
        }
        insert_one_time(&mut tx, verification).await?;
        for event in events {
            insert_outbox(&mut tx, event, user.created_at).await?;
        }
        tx.commit().await?;
        Ok(())
    }

    pub async fn user_by_email(&self, email: &str) -> StoreResult<Option<UserRecord>> {
        let row = sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT {USER_COLUMNS} FROM users WHERE email = $1 AND deleted_at IS NULL"
        )))
        .bind(email)
        .fetch_optional(self.pool())
        .await?;
        row.as_ref().map(user_from_row).transpose()
    }

    pub async fn user_by_id(&self, id: UserId) -> StoreResult<Option<UserRecord>> {
        let row = sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT {USER_COLUMNS} FROM users WHERE id = $1 AND deleted_at IS NULL"
        )))
        .bind(id.to_string())
        .fetch_optional(self.pool())
        .await?;
        row.as_ref().map(user_from_row).transpose()
    }

    /// Replace the password hash and revoke every session but `keep`, in one
    /// transaction. Returns the revoked session ids.
    pub async fn change_password(
        &self,
        user_id: UserId,
        password_hash: &str,
        keep: Option<Uuid>,
        now: Millis,
        events: &[OutboxEvent],
    ) -> StoreResult<Vec<Uuid>> {
        let mut tx = self.db.begin().await?;
        sqlx::query("UPDATE users SET password_hash = $1, updated_at = $2 WHERE id = $3")
            .bind(password_hash)
            .bind(now)
            .bind(user_id.to_string())
            .execute(&mut *tx)
            .await?;
        let revoked =
            revoke_user_sessions(&mut tx, user_id, keep, RevokeReason::PasswordChanged, now)
                .await?;
        for event in events {
            insert_outbox(&mut tx, event, now).await?;
        }
        tx.commit().await?;
        Ok(revoked)
    }

    /// Delete an account: empty its row (email, name, password; the row itself goes
    /// with the purge once its revoked sessions no longer matter), revoke every
    /// session, drop its identity links and one-time tokens, and write `events`, in
    /// one transaction. `None` when there is no such (live) account; else the
    /// revoked session ids.
    pub async fn delete_account(
        &self,
        user_id: UserId,
        now: Millis,
        events: &[OutboxEvent],
    ) -> StoreResult<Option<Vec<Uuid>>> {
        let mut tx = self.db.begin().await?;
        let emptied = sqlx::query(
            "UPDATE users SET deleted_at = $1, email = 'deleted:' || id, display_name = '', \
             password_hash = '', email_verified_at = NULL, updated_at = $1 \
             WHERE id = $2 AND deleted_at IS NULL",
        )
        .bind(now)
        .bind(user_id.to_string())
        .execute(&mut *tx)
        .await?
        .rows_affected();
        if emptied == 0 {
            return Ok(None);
        }
        let revoked =
            revoke_user_sessions(&mut tx, user_id, None, RevokeReason::AccountDeleted, now).await?;
        for table in ["user_identities", "one_time_tokens"] {
            sqlx::query(sqlx::AssertSqlSafe(format!(
                "DELETE FROM {table} WHERE user_id = $1"
            )))
            .bind(user_id.to_string())
            .execute(&mut *tx)
            .await?;
        }
        for event in events {
            insert_outbox(&mut tx, event, now).await?;
        }
        tx.commit().await?;
        Ok(Some(revoked))
    }

    // --- OpenID sign-in -------------------------------------------------------------

    pub async fn insert_oauth_flow(&self, flow: &NewOAuthFlow) -> StoreResult<()> {
        sqlx::query(
            "INSERT INTO oauth_flows (state_hash, provider, nonce, code_verifier, browser_hash, created_at, expires_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7)",
        )
        .bind(&flow.state_hash)
        .bind(&flow.provider)
        .bind(&flow.nonce)
        .bind(&flow.code_verifier)
        .bind(&flow.browser_hash)
        .bind(flow.now)
        .bind(flow.expires_at)
        .execute(self.pool())
        .await?;
        Ok(())
    }

    /// Use up a live flow by its state's hash: of two callbacks with the same state
    /// at most one gets it.
    pub async fn take_oauth_flow(
        &self,
        state_hash: &str,
        now: Millis,
    ) -> StoreResult<Option<OAuthFlow>> {
        let row = sqlx::query(
            "UPDATE oauth_flows SET used_at = $1 \
             WHERE state_hash = $2 AND used_at IS NULL AND expires_at > $1 \
             RETURNING provider, nonce, code_verifier, browser_hash",
        )
        .bind(now)
        .bind(state_hash)
        .fetch_optional(self.pool())
        .await?;
        row.map(|row| {
            Ok(OAuthFlow {
                provider: row.try_get("provider")?,
                nonce: row.try_get("nonce")?,
                code_verifier: row.try_get("code_verifier")?,
                browser_hash: row.try_get("browser_hash")?,
            })
        })
        .transpose()
    }

    /// Find or make the account for a provider's identity (see [`OidcOutcome`]),
    /// store the one-time login code, and write `events`, in one transaction.
    ///
    /// Linking goes by email only when the provider says the email is verified; an
    /// unverified email that an account already has is refused
    /// ([`StoreError::EmailUnverified`]).
    pub async fn oidc_sign_in(
        &self,
        login: &OidcLogin<'_>,
        events: impl FnOnce(&UserRecord, &OidcOutcome) -> Vec<OutboxEvent>,
    ) -> StoreResult<(UserRecord, OidcOutcome)> {
        let now = login.now;
        let mut tx = self.db.begin().await?;
        let known = sqlx::query(
            "UPDATE user_identities SET last_login_at = $1 \
             WHERE provider = $2 AND subject = $3 RETURNING user_id",
        )
        .bind(now)
        .bind(login.provider)
        .bind(login.subject)
        .fetch_optional(&mut *tx)
        .await?;
        let (user, outcome) = if let Some(row) = known {
            let id = UserId(uuid(&row.try_get::<String, _>("user_id")?)?);
            (user_in_tx(&mut tx, id).await?, OidcOutcome::Returning)
        } else {
            let email = login.email.ok_or(StoreError::EmailRequired)?;
            let existing = sqlx::query(sqlx::AssertSqlSafe(format!(
                "SELECT {USER_COLUMNS} FROM users WHERE email = $1 AND deleted_at IS NULL"
            )))
            .bind(email)
            .fetch_optional(&mut *tx)
            .await?;
            let (user, outcome) = match existing {
                Some(row) => {
                    if !login.email_verified {
                        return Err(StoreError::EmailUnverified);
                    }
                    let user = user_from_row(&row)?;
                    let mut revoked = Vec::new();
                    if user.email_verified_at.is_none() {
                        sqlx::query(
                            "UPDATE users SET email_verified_at = $1, password_hash = '', updated_at = $1 WHERE id = $2",
                        )
                        .bind(now)
                        .bind(user.id.to_string())
                        .execute(&mut *tx)
                        .await?;
                        revoked = revoke_user_sessions(
                            &mut tx,
                            user.id,
                            None,
                            RevokeReason::AccountLinked,
                            now,
                        )
                        .await?;
                    }
                    let user = user_in_tx(&mut tx, user.id).await?;
                    (user, OidcOutcome::Linked { revoked })
                }
                None => {
                    let user = &login.new_user;
                    let inserted = sqlx::query(
                        "INSERT INTO users (id, email, display_name, password_hash, email_verified_at, created_at, updated_at) \
                         VALUES ($1, $2, $3, $4, $5, $6, $6)",
                    )
                    .bind(user.id.to_string())
                    .bind(&user.email)
                    .bind(&user.display_name)
                    .bind(&user.password_hash)
                    .bind(user.email_verified_at)
                    .bind(user.created_at)
                    .execute(&mut *tx)
                    .await;
                    match inserted {
                        Ok(_) => {}
                        Err(err) if is_unique_violation(&err) => {
                            return Err(StoreError::EmailTaken);
                        }
                        Err(err) => return Err(err.into()),
                    }
                    if let Some(token) = &login.verification {
                        insert_one_time(&mut tx, token).await?;
                    }
                    (user.clone(), OidcOutcome::Created)
                }
            };
            sqlx::query(
                "INSERT INTO user_identities (provider, subject, user_id, email, created_at, last_login_at) \
                 VALUES ($1, $2, $3, $4, $5, $5)",
            )
            .bind(login.provider)
            .bind(login.subject)
            .bind(user.id.to_string())
            .bind(email)
            .bind(now)
            .execute(&mut *tx)
            .await?;
            (user, outcome)
        };
        insert_one_time(
            &mut tx,
            &NewOneTimeToken {
                hash: login.login_code_hash.clone(),
                purpose: Purpose::OAuthLogin,
                user_id: user.id,
                now,
                expires_at: login.login_code_expires_at,
            },
        )
        .await?;
        for event in events(&user, &outcome) {
            insert_outbox(&mut tx, &event, now).await?;
        }
        tx.commit().await?;
        Ok((user, outcome))
    }

    /// Use an OpenID sign-in's one-time login code: the account it is for.
    pub async fn take_login_code(
        &self,
        presented_hash: &str,
        now: Millis,
    ) -> StoreResult<Option<UserRecord>> {
        let mut tx = self.db.begin().await?;
        let Some(user_id) =
            consume_one_time(&mut tx, presented_hash, Purpose::OAuthLogin, now).await?
        else {
            return Ok(None);
        };
        let user = user_in_tx(&mut tx, user_id).await?;
        tx.commit().await?;
        Ok(Some(user))
    }

    /// The providers an account is linked to.
    pub async fn identities_of(&self, user_id: UserId) -> StoreResult<Vec<String>> {
        let rows = sqlx::query(
            "SELECT provider FROM user_identities WHERE user_id = $1 ORDER BY provider",
        )
        .bind(user_id.to_string())
        .fetch_all(self.pool())
        .await?;
        rows.iter()
            .map(|row| Ok(row.try_get("provider")?))
            .collect()
    }

    // --- sessions and refresh tokens --------------------------------------------------

    /// When a live session began (its sign-in), if it is live.
    pub async fn session_started(&self, session_id: Uuid) -> StoreResult<Option<Millis>> {
        let row =
            sqlx::query("SELECT created_at FROM sessions WHERE id = $1 AND revoked_at IS NULL")
                .bind(session_id.to_string())
                .fetch_optional(self.pool())
                .await?;
        Ok(row.map(|row| row.try_get("created_at")).transpose()?)
    }

    pub async fn create_session(&self, session: &NewSession) -> StoreResult<()> {
        let mut tx = self.db.begin().await?;
        sqlx::query(
            "INSERT INTO sessions (id, user_id, created_at, expires_at) VALUES ($1, $2, $3, $4)",
        )
        .bind(session.id.to_string())
        .bind(session.user_id.to_string())
        .bind(session.now)
        .bind(session.expires_at)
        .execute(&mut *tx)
        .await?;
        sqlx::query(
            "INSERT INTO refresh_tokens (token_hash, session_id, created_at, expires_at) VALUES ($1, $2, $3, $4)",
        )
        .bind(&session.refresh_hash)
        .bind(session.id.to_string())
        .bind(session.now)
        .bind(session.refresh_expires_at)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(())
    }

    /// Present a refresh token (by hash): rotate it, or detect its reuse and revoke
    /// the family (RFC 9700 §4.14.2).
    pub async fn rotate_refresh_token(
        &self,
        presented_hash: &str,
        new_hash: &str,
        new_expires_at: Millis,
        now: Millis,
    ) -> StoreResult<Rotation> {
        let mut tx = self.db.begin().await?;
        // Claim the token first: of two concurrent uses exactly one wins, and the
        // write takes SQLite's lock before any read.
        let claimed = sqlx::query(
            "UPDATE refresh_tokens SET used_at = $1 \
             WHERE token_hash = $2 AND used_at IS NULL AND expires_at > $1",
        )
        .bind(now)
        .bind(presented_hash)
        .execute(&mut *tx)
        .await?
        .rows_affected()
            == 1;
        let row = sqlx::query(
            "SELECT t.session_id, t.used_at, s.revoked_at, s.expires_at AS session_expires_at \
             FROM refresh_tokens t JOIN sessions s ON s.id = t.session_id \
             WHERE t.token_hash = $1",
        )
        .bind(presented_hash)
        .fetch_optional(&mut *tx)
        .await?;
        let Some(row) = row else {
            return Ok(Rotation::Invalid);
        };
        let session_id = uuid(&row.try_get::<String, _>("session_id")?)?;
        let revoked_at: Option<Millis> = row.try_get("revoked_at")?;
        let session_expires_at: Millis = row.try_get("session_expires_at")?;
        let used_at: Option<Millis> = row.try_get("used_at")?;

        if !claimed {
            if used_at.is_some() && revoked_at.is_none() {
                // Someone presents a token that was already exchanged: either the
                // client or a thief holds a stale copy. Revoke the family.
                revoke_session(&mut tx, session_id, RevokeReason::Reuse, now).await?;
                tx.commit().await?;
                return Ok(Rotation::Reused { session_id });
            }
            if used_at.is_some() {
                tx.commit().await?;
                return Ok(Rotation::Reused { session_id });
            }
            return Ok(Rotation::Invalid);
        }
        if revoked_at.is_some() || session_expires_at <= now {
            tx.commit().await?;
            return Ok(Rotation::Invalid);
        }
        let user_row = sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT {} FROM users u JOIN sessions s ON s.user_id = u.id WHERE s.id = $1",
            USER_COLUMNS
                .split(", ")
                .map(|c| format!("u.{c}"))
                .collect::<Vec<_>>()
                .join(", ")
        )))
        .bind(session_id.to_string())
        .fetch_one(&mut *tx)
        .await?;
        let user = user_from_row(&user_row)?;
        sqlx::query(
            "INSERT INTO refresh_tokens (token_hash, session_id, created_at, expires_at) VALUES ($1, $2, $3, $4)",
        )
        .bind(new_hash)
        .bind(session_id.to_string())
        .bind(now)
        .bind(new_expires_at.min(session_expires_at))
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(Rotation::Rotated { session_id, user })
    }

    /// Revoke one session (its refresh tokens stop working). True if it was live.
    pub async fn revoke_session(
        &self,
        session_id: Uuid,
        reason: RevokeReason,
        now: Millis,
    ) -> StoreResult<bool> {
        let mut tx = self.db.begin().await?;
        let revoked = revoke_session(&mut tx, session_id, reason, now).await?;
        tx.commit().await?;
        Ok(revoked)
    }

    /// Revoke every live session of a user; returns their ids.
    pub async fn revoke_user_sessions(
        &self,
        user_id: UserId,
        reason: RevokeReason,
        now: Millis,
    ) -> StoreResult<Vec<Uuid>> {
        let mut tx = self.db.begin().await?;
        let ids = revoke_user_sessions(&mut tx, user_id, None, reason, now).await?;
        tx.commit().await?;
        Ok(ids)
    }

    // --- access-token revocation ------------------------------------------------------

    pub async fn revoke_access_token(&self, jti: Uuid, expires_at: Millis) -> StoreResult<()> {
        sqlx::query(
            "INSERT INTO revoked_access_tokens (jti, expires_at) VALUES ($1, $2) ON CONFLICT (jti) DO NOTHING",
        )
        .bind(jti.to_string())
        .bind(expires_at)
        .execute(self.pool())
        .await?;
        Ok(())
    }

    /// Whether this access token, or the session it belongs to, has been revoked.
    pub async fn is_revoked(&self, jti: Uuid, session_id: Uuid) -> StoreResult<bool> {
        let count: i64 = sqlx::query(
            "SELECT (SELECT COUNT(*) FROM revoked_access_tokens WHERE jti = $1) \
                  + (SELECT COUNT(*) FROM sessions WHERE id = $2 AND revoked_at IS NOT NULL) AS n",
        )
        .bind(jti.to_string())
        .bind(session_id.to_string())
        .fetch_one(self.pool())
        .await?
        .try_get("n")?;
        Ok(count > 0)
    }

    /// Revocations that can still matter: tokens not yet expired, sessions revoked
    /// within the last `window` (one access-token lifetime).
    pub async fn active_revocations(
        &self,
        now: Millis,
        window: Millis,
    ) -> StoreResult<ActiveRevocations> {
        let mut out = ActiveRevocations::default();
        for row in
            sqlx::query("SELECT jti, expires_at FROM revoked_access_tokens WHERE expires_at > $1")
                .bind(now)
                .fetch_all(self.pool())
                .await?
        {
            out.tokens.push((
                uuid(&row.try_get::<String, _>("jti")?)?,
                row.try_get("expires_at")?,
            ));
        }
        for row in sqlx::query("SELECT id, revoked_at FROM sessions WHERE revoked_at > $1")
            .bind(now - window)
            .fetch_all(self.pool())
            .await?
        {
            out.sessions.push((
                uuid(&row.try_get::<String, _>("id")?)?,
                row.try_get("revoked_at")?,
            ));
        }
        Ok(out)
    }

    /// Delete what can no longer matter: expired revocations, refresh tokens and
    /// one-time tokens expired more than `keep` ago.
    pub async fn purge_expired(&self, now: Millis, keep: Millis) -> StoreResult<()> {
        sqlx::query("DELETE FROM revoked_access_tokens WHERE expires_at < $1")
            .bind(now - keep)
            .execute(self.pool())
            .await?;
        sqlx::query("DELETE FROM refresh_tokens WHERE expires_at < $1")
            .bind(now - keep)
            .execute(self.pool())
            .await?;
        sqlx::query("DELETE FROM one_time_tokens WHERE expires_at < $1")
            .bind(now - keep)
            .execute(self.pool())
            .await?;
        sqlx::query("DELETE FROM oauth_flows WHERE expires_at < $1")
            .bind(now - keep)
            .execute(self.pool())
            .await?;
        // Deleted accounts, once their revoked sessions can no longer matter (`keep`
        // is far longer than an access token lives); sessions and tokens cascade.
        sqlx::query("DELETE FROM users WHERE deleted_at < $1")
            .bind(now - keep)
            .execute(self.pool())
            .await?;
        Ok(())
    }

    // --- one-time tokens --------------------------------------------------------------

    /// Store a one-time token and the events that deliver it, in one transaction.
    pub async fn issue_one_time_token(
        &self,
        token: &NewOneTimeToken,
        events: &[OutboxEvent],
    ) -> StoreResult<()> {
        let mut tx = self.db.begin().await?;
        insert_one_time(&mut tx, token).await?;
        for event in events {
            insert_outbox(&mut tx, event, token.now).await?;
        }
        tx.commit().await?;
        Ok(())
    }

    /// Use an email-verification token: marks the account verified. Returns the user.
    pub async fn verify_email(
        &self,
        presented_hash: &str,
        now: Millis,
        events: impl FnOnce(&UserRecord) -> Vec<OutboxEvent>,
    ) -> StoreResult<Option<UserRecord>> {
        let mut tx = self.db.begin().await?;
        let Some(user_id) =
            consume_one_time(&mut tx, presented_hash, Purpose::VerifyEmail, now).await?
        else {
            return Ok(None);
        };
        sqlx::query(
            "UPDATE users SET email_verified_at = COALESCE(email_verified_at, $1), updated_at = $1 WHERE id = $2",
        )
        .bind(now)
        .bind(user_id.to_string())
        .execute(&mut *tx)
        .await?;
        let user = user_in_tx(&mut tx, user_id).await?;
        for event in events(&user) {
            insert_outbox(&mut tx, &event, now).await?;
        }
        tx.commit().await?;
        Ok(Some(user))
    }

    /// Use a password-reset token: sets the new hash, marks the email verified (the
    /// reset link proved the mailbox), revokes every session. Returns the user and the
    /// revoked session ids.
    pub async fn reset_password(
        &self,
        presented_hash: &str,
        password_hash: &str,
        now: Millis,
        events: impl FnOnce(&UserRecord) -> Vec<OutboxEvent>,
    ) -> StoreResult<Option<(UserRecord, Vec<Uuid>)>> {
        let mut tx = self.db.begin().await?;
        let Some(user_id) =
            consume_one_time(&mut tx, presented_hash, Purpose::ResetPassword, now).await?
        else {
            return Ok(None);
        };
        sqlx::query(
            "UPDATE users SET password_hash = $1, email_verified_at = COALESCE(email_verified_at, $2), updated_at = $2 WHERE id = $3",
        )
        .bind(password_hash)
        .bind(now)
        .bind(user_id.to_string())
        .execute(&mut *tx)
        .await?;
        // Other outstanding reset links die with this one.
        sqlx::query(
            "UPDATE one_time_tokens SET used_at = $1 WHERE user_id = $2 AND purpose = $3 AND used_at IS NULL",
        )
        .bind(now)
        .bind(user_id.to_string())
        .bind(Purpose::ResetPassword.as_str())
        .execute(&mut *tx)
        .await?;
        let revoked =
            revoke_user_sessions(&mut tx, user_id, None, RevokeReason::PasswordReset, now).await?;
        let user = user_in_tx(&mut tx, user_id).await?;
        for event in events(&user) {
            insert_outbox(&mut tx, &event, now).await?;
        }
        tx.commit().await?;
        Ok(Some((user, revoked)))
    }

    // --- outbox -------------------------------------------------------------------------

    pub async fn append_outbox(&self, event: &OutboxEvent, now: Millis) -> StoreResult<()> {
        let mut tx = self.db.begin().await?;
        insert_outbox(&mut tx, event, now).await?;
        tx.commit().await?;
        Ok(())
    }

    // --- signing keys -------------------------------------------------------------------

    pub async fn signing_keys(&self) -> StoreResult<Vec<KeyRecord>> {
        let rows = sqlx::query(
            "SELECT kid, algorithm, private_key, public_key, created_at, retire_at \
             FROM signing_keys ORDER BY created_at, kid",
        )
        .fetch_all(self.pool())
        .await?;
        rows.iter()
            .map(|row| {
                Ok(KeyRecord {
                    kid: row.try_get("kid")?,
                    algorithm: row.try_get("algorithm")?,
                    private_key: row.try_get("private_key")?,
                    public_key: row.try_get("public_key")?,
                    created_at: row.try_get("created_at")?,
                    retire_at: row.try_get("retire_at")?,
                })
            })
            .collect()
    }

    /// Add a new signing key and schedule every older live key to retire at
    /// `retire_others_at` (after the overlap during which their tokens still verify).
    pub async fn add_signing_key(
        &self,
        key: &KeyRecord,
        retire_others_at: Millis,
    ) -> StoreResult<()> {
        let mut tx = self.db.begin().await?;
        sqlx::query(
            "UPDATE signing_keys SET retire_at = $1 WHERE retire_at IS NULL OR retire_at > $1",
        )
        .bind(retire_others_at)
        .execute(&mut *tx)
        .await?;
        sqlx::query(
            "INSERT INTO signing_keys (kid, algorithm, private_key, public_key, created_at, retire_at) \
             VALUES ($1, $2, $3, $4, $5, $6)",
        )
        .bind(&key.kid)
        .bind(&key.algorithm)
        .bind(&key.private_key)
        .bind(&key.public_key)
        .bind(key.created_at)
        .bind(key.retire_at)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(())
    }
}

async fn user_in_tx(tx: &mut Transaction<'_, Any>, user_id: UserId) -> StoreResult<UserRecord> {
    let row = sqlx::query(sqlx::AssertSqlSafe(format!(
        "SELECT {USER_COLUMNS} FROM users WHERE id = $1"
    )))
    .bind(user_id.to_string())
    .fetch_one(&mut **tx)
    .await?;
    user_from_row(&row)
}

async fn insert_outbox(
    tx: &mut Transaction<'_, Any>,
    event: &OutboxEvent,
    now: Millis,
) -> StoreResult<()> {
    sqlx::query("INSERT INTO outbox (id, type, payload, created_at) VALUES ($1, $2, $3, $4)")
        .bind(Uuid::now_v7().to_string())
        .bind(event.kind)
        .bind(event.payload.to_string())
        .bind(now)
        .execute(&mut **tx)
        .await?;
    Ok(())
}

async fn insert_one_time(
    tx: &mut Transaction<'_, Any>,
    token: &NewOneTimeToken,
) -> StoreResult<()> {
    sqlx::query(
        "INSERT INTO one_time_tokens (token_hash, purpose, user_id, created_at, expires_at) VALUES ($1, $2, $3, $4, $5)",
    )
    .bind(&token.hash)
    .bind(token.purpose.as_str())
    .bind(token.user_id.to_string())
    .bind(token.now)
    .bind(token.expires_at)
    .execute(&mut **tx)
    .await?;
    Ok(())
}

/// Mark a live one-time token used; the user it belongs to, if it was live.
async fn consume_one_time(
    tx: &mut Transaction<'_, Any>,
    presented_hash: &str,
    purpose: Purpose,
    now: Millis,
) -> StoreResult<Option<UserId>> {
    let row = sqlx::query(
        "UPDATE one_time_tokens SET used_at = $1 \
         WHERE token_hash = $2 AND purpose = $3 AND used_at IS NULL AND expires_at > $1 \
         RETURNING user_id",
    )
    .bind(now)
    .bind(presented_hash)
    .bind(purpose.as_str())
    .fetch_optional(&mut **tx)
    .await?;
    let Some(row) = row else {
        return Ok(None);
    };
    let id: String = row.try_get("user_id")?;
    Ok(Some(UserId(uuid(&id)?)))
}

async fn revoke_session(
    tx: &mut Transaction<'_, Any>,
    session_id: Uuid,
    reason: RevokeReason,
    now: Millis,
) -> StoreResult<bool> {
    let affected = sqlx::query(
        "UPDATE sessions SET revoked_at = $1, revoked_reason = $2 WHERE id = $3 AND revoked_at IS NULL",
    )
    .bind(now)
    .bind(reason.as_str())
    .bind(session_id.to_string())
    .execute(&mut **tx)
    .await?
    .rows_affected();
    Ok(affected > 0)
}

async fn revoke_user_sessions(
    tx: &mut Transaction<'_, Any>,
    user_id: UserId,
    keep: Option<Uuid>,
    reason: RevokeReason,
    now: Millis,
) -> StoreResult<Vec<Uuid>> {
    let keep = keep.map(|id| id.to_string()).unwrap_or_default();
    let rows = sqlx::query(
        "UPDATE sessions SET revoked_at = $1, revoked_reason = $2 \
         WHERE user_id = $3 AND revoked_at IS NULL AND id <> $4 RETURNING id",
    )
    .bind(now)
    .bind(reason.as_str())
    .bind(user_id.to_string())
    .bind(keep)
    .fetch_all(&mut **tx)
    .await?;
    rows.iter()
        .map(|row| uuid(&row.try_get::<String, _>("id")?))
        .collect()
}
