//! The users service's relational store: profiles and avatar images.
//!
//! One portable query set for PostgreSQL and SQLite through sqlx's `Any` driver
//! (TEXT ids, BIGINT Unix milliseconds, `$n` placeholders, BYTEA/BLOB images).

use crate::domain::{Bio, DisplayName, Locale, Preferences, TimeZone};
use proto::ids::{EventId, UserId};
use servicekit::ApiError;
use servicekit::backends::Db;
use sqlx::any::AnyRow;
use sqlx::{AnyPool, Row};

/// The migrations, one folder per SQL dialect.
pub static PG_MIGRATIONS: sqlx::migrate::Migrator = sqlx::migrate!("./migrations/postgres");
pub static SQLITE_MIGRATIONS: sqlx::migrate::Migrator = sqlx::migrate!("./migrations/sqlite");

/// The event announcing new preferences (notify honours the channel switches):
/// `{"user_id", "join_muted", "camera_off", "notifications": {"email", "push", "in_app"}}`.
pub const PREFERENCES_CHANGED: &str = "user.preferences_changed";

/// A profile as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Profile {
    pub user_id: UserId,
    pub display_name: String,
    pub time_zone: String,
    pub locale: String,
    pub bio: String,
    pub preferences: Preferences,
    /// Changes with every upload; `None` when no avatar is set.
    pub avatar_version: Option<String>,
    pub created_at: i64,
    pub updated_at: i64,
}

/// A validated change to a profile: `None` leaves a field as it is. Set
/// `preferences` only when they differ from the stored ones (it also announces them).
#[derive(Debug, Clone, Default)]
pub struct ProfileChange {
    pub display_name: Option<DisplayName>,
    pub time_zone: Option<TimeZone>,
    pub locale: Option<Locale>,
    pub bio: Option<Bio>,
    pub preferences: Option<Preferences>,
}

/// One stored avatar image.
#[derive(Debug, Clone)]
pub struct AvatarImage {
    pub content_type: String,
    pub data: Vec<u8>,
}

/// Why a store call failed.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The account was deleted (`user.deleted`): no profile comes back for it.
    #[error("the account was deleted")]
    Deleted,
    #[error("stored data is corrupt: {0}")]
    Corrupt(String),
    #[error(transparent)]
    Db(#[from] sqlx::Error),
}

impl From<StoreError> for ApiError {
    fn from(err: StoreError) -> Self {
        match err {
            StoreError::Deleted => ApiError::new(
                proto::ErrorCode::Unauthenticated,
                "the account no longer exists",
            ),
            StoreError::Corrupt(why) => ApiError::internal(why),
            StoreError::Db(err) => err.into(),
        }
    }
}

pub type StoreResult<T> = Result<T, StoreError>;

const PROFILE_COLUMNS: &str = "user_id, display_name, time_zone, locale, bio, preferences, avatar_version, created_at, updated_at";

fn profile_from_row(row: &AnyRow) -> StoreResult<Profile> {
    let id: String = row.try_get("user_id")?;
    let preferences: String = row.try_get("preferences")?;
    Ok(Profile {
        user_id: id
            .parse()
            .map_err(|_| StoreError::Corrupt(format!("user id `{id}` is not a UUID")))?,
        display_name: row.try_get("display_name")?,
        time_zone: row.try_get("time_zone")?,
        locale: row.try_get("locale")?,
        bio: row.try_get("bio")?,
        preferences: serde_json::from_str(&preferences)
            .map_err(|err| StoreError::Corrupt(format!("preferences of {id}: {err}")))?,
        avatar_version: row.try_get("avatar_version")?,
        created_at: row.try_get("created_at")?,
        updated_at: row.try_get("updated_at")?,
    })
}

fn preferences_json(preferences: &Preferences) -> StoreResult<String> {
    serde_json::to_string(preferences).map_err(|err| StoreError::Corrupt(err.to_string()))
}

/// Cheap to clone: a pool handle.
#[derive(Clone, Debug)]
pub struct Store {
    db: Db,
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

    pub async fn profile(&self, user: UserId) -> StoreResult<Option<Profile>> {
        let row = sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT {PROFILE_COLUMNS} FROM profiles WHERE user_id = $1"
        )))
        .bind(user.to_string())
        .fetch_optional(self.pool())
        .await?;
        row.as_ref().map(profile_from_row).transpose()
    }

    /// Create the profile with defaults unless it exists (first access, or the
    /// `user.registered` event), then return it. Safe to race: the insert does
    /// nothing when another request created it first.
    pub async fn ensure_profile(
        &self,
        user: UserId,
        display_name: &DisplayName,
        now: i64,
    ) -> StoreResult<Profile> {
        if let Some(profile) = self.profile(user).await? {
            return Ok(profile);
        }
        sqlx::query(
            "INSERT INTO profiles (user_id, display_name, time_zone, locale, bio, preferences, avatar_version, created_at, updated_at) \
             SELECT $1, $2, $3, $4, '', $5, NULL, $6, $6 \
             WHERE NOT EXISTS (SELECT 1 FROM deleted_users WHERE user_id = $1) \
             ON CONFLICT (user_id) DO NOTHING",
        )
        .bind(user.to_string())
        .bind(display_name.as_str())
        .bind(TimeZone::DEFAULT)
        .bind(Locale::DEFAULT)
        .bind(preferences_json(&Preferences::default())?)
        .bind(now)
        .execute(self.pool())
        .await?;
        // Nothing inserted and nothing there: the account was deleted (or its
        // profile went in the instant between; either way, it is gone).
        self.profile(user).await?.ok_or(StoreError::Deleted)
    }

    /// Apply a change to an existing profile; returns the profile after it. When
    /// `change.preferences` is set, a `user.preferences_changed` event carrying the
    /// whole new preferences goes into the outbox in the same transaction.
    pub async fn update_profile(
        &self,
        user: UserId,
        change: &ProfileChange,
        now: i64,
    ) -> StoreResult<Option<Profile>> {
        let preferences = change
            .preferences
            .as_ref()
            .map(preferences_json)
            .transpose()?;
        // The update writes first (SQLite takes its write lock up front); the event
        // goes out with it or not at all.
        let mut tx = self.db.begin().await?;
        sqlx::query(
            "UPDATE profiles SET \
               display_name = COALESCE($2, display_name), \
               time_zone = COALESCE($3, time_zone), \
               locale = COALESCE($4, locale), \
               bio = COALESCE($5, bio), \
               preferences = COALESCE($6, preferences), \
               updated_at = $7 \
             WHERE user_id = $1",
        )
        .bind(user.to_string())
        .bind(change.display_name.as_ref().map(|v| v.as_str().to_owned()))
        .bind(change.time_zone.as_ref().map(|v| v.as_str().to_owned()))
        .bind(change.locale.as_ref().map(|v| v.as_str().to_owned()))
        .bind(change.bio.as_ref().map(|v| v.as_str().to_owned()))
        .bind(preferences)
        .bind(now)
        .execute(&mut *tx)
        .await?;
        if let Some(preferences) = &change.preferences {
            let payload = serde_json::json!({
                "user_id": user,
                "join_muted": preferences.join_muted,
                "camera_off": preferences.camera_off,
                "notifications": preferences.notifications,
            });
            sqlx::query(
                "INSERT INTO outbox (id, type, payload, created_at, published_at) VALUES ($1, $2, $3, $4, NULL)",
            )
            .bind(EventId::new().to_string())
            .bind(PREFERENCES_CHANGED)
            .bind(payload.to_string())
            .bind(now)
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
        self.profile(user).await
    }

    /// Replace the avatar images (one per size) and set a new version, atomically.
    pub async fn set_avatar(
        &self,
        user: UserId,
        version: &str,
        images: &[(u32, AvatarImage)],
        now: i64,
    ) -> StoreResult<()> {
        let mut tx = self.db.begin().await?;
        // Write first, so SQLite takes its write lock up front.
        sqlx::query("UPDATE profiles SET avatar_version = $2, updated_at = $3 WHERE user_id = $1")
            .bind(user.to_string())
            .bind(version)
            .bind(now)
            .execute(&mut *tx)
            .await?;
        sqlx::query("DELETE FROM avatars WHERE user_id = $1")
            .bind(user.to_string())
            .execute(&mut *tx)
            .await?;
        for (size, image) in images {
            sqlx::query(
                "INSERT INTO avatars (user_id, size, content_type, data) VALUES ($1, $2, $3, $4)",
            )
            .bind(user.to_string())
            .bind(i64::from(*size))
            .bind(image.content_type.as_str())
            .bind(image.data.as_slice())
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
        Ok(())
    }

    /// Remove the avatar; the generated one is served again.
    pub async fn delete_avatar(&self, user: UserId, now: i64) -> StoreResult<()> {
        let mut tx = self.db.begin().await?;
        sqlx::query(
            "UPDATE profiles SET avatar_version = NULL, updated_at = $2 WHERE user_id = $1",
        )
        .bind(user.to_string())
        .bind(now)
        .execute(&mut *tx)
        .await?;
        sqlx::query("DELETE FROM avatars WHERE user_id = $1")
            .bind(user.to_string())
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(())
    }

    /// `user.registered`: create the profile unless it exists, once per event.
    /// Returns whether the event was new.
    pub async fn apply_registered(
        &self,
        event: EventId,
        user: UserId,
        display_name: &DisplayName,
        now: i64,
    ) -> StoreResult<bool> {
        let mut tx = self.db.begin().await?;
        // The claim writes first, so SQLite takes its write lock up front.
        if !servicekit::bus::claim_event(&mut tx, event, now).await? {
            return Ok(false);
        }
        sqlx::query(
            "INSERT INTO profiles (user_id, display_name, time_zone, locale, bio, preferences, avatar_version, created_at, updated_at) \
             SELECT $1, $2, $3, $4, '', $5, NULL, $6, $6 \
             WHERE NOT EXISTS (SELECT 1 FROM deleted_users WHERE user_id = $1) \
             ON CONFLICT (user_id) DO NOTHING",
        )
        .bind(user.to_string())
        .bind(display_name.as_str())
        .bind(TimeZone::DEFAULT)
        .bind(Locale::DEFAULT)
        .bind(preferences_json(&Preferences::default())?)
        .bind(now)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(true)
    }

    /// `user.deleted`: remove the profile and its avatar images and remember the
    /// account as deleted (so nothing re-creates the profile), once per event.
    pub async fn apply_deleted(&self, event: EventId, user: UserId, now: i64) -> StoreResult<bool> {
        let mut tx = self.db.begin().await?;
        if !servicekit::bus::claim_event(&mut tx, event, now).await? {
            return Ok(false);
        }
        sqlx::query(
            "INSERT INTO deleted_users (user_id, deleted_at) VALUES ($1, $2) ON CONFLICT (user_id) DO NOTHING",
        )
        .bind(user.to_string())
        .bind(now)
        .execute(&mut *tx)
        .await?;
        sqlx::query("DELETE FROM avatars WHERE user_id = $1")
            .bind(user.to_string())
            .execute(&mut *tx)
            .await?;
        sqlx::query("DELETE FROM profiles WHERE user_id = $1")
            .bind(user.to_string())
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(true)
    }

    pub async fn avatar(&self, user: UserId, size: u32) -> StoreResult<Option<AvatarImage>> {
        let row =
            sqlx::query("SELECT content_type, data FROM avatars WHERE user_id = $1 AND size = $2")
                .bind(user.to_string())
                .bind(i64::from(size))
                .fetch_optional(self.pool())
                .await?;
        row.map(|row| {
            Ok(AvatarImage {
                content_type: row.try_get("content_type")?,
                data: row.try_get("data")?,
            })
        })
        .transpose()
    }
}
