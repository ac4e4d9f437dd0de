//! Typed configuration pieces shared by the services.
//!
//! Binaries parse flags and environment variables with clap into these types;
//! libraries only ever see the typed values.

use std::fmt;
use std::path::PathBuf;
use std::str::FromStr;

/// A value that must never appear in logs or error messages.
///
/// `Debug` and `Display` print `[redacted]`; call [`Secret::expose`] at the one
/// place the value is really needed.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret<T>(T);

impl<T> Secret<T> {
    pub fn new(value: T) -> Self {
        Self(value)
    }

    /// The secret value itself. Keep the call site next to where it is used.
    pub fn expose(&self) -> &T {
        &self.0
    }
}

impl<T> fmt::Debug for Secret<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[redacted]")
    }
}

impl<T> fmt::Display for Secret<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[redacted]")
    }
}

impl FromStr for Secret<String> {
    type Err = std::convert::Infallible;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Ok(Secret(s.to_owned()))
    }
}

/// Why a service could not start: the setting at fault (when there is one) and a
/// one-line explanation. Printed as `SETTING: message` and the process exits non-zero.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StartError {
    pub setting: Option<String>,
    pub message: String,
}

impl StartError {
    pub fn setting(setting: impl Into<String>, message: impl fmt::Display) -> Self {
        Self {
            setting: Some(setting.into()),
            message: message.to_string(),
        }
    }

    pub fn other(message: impl fmt::Display) -> Self {
        Self {
            setting: None,
            message: message.to_string(),
        }
    }
}

impl fmt::Display for StartError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.setting {
            Some(setting) => write!(f, "{setting}: {}", self.message),
            None => f.write_str(&self.message),
        }
    }
}

impl std::error::Error for StartError {}

/// Flags shared by every service binary and the launcher: where the backing
/// services are. Unset means "use the embedded default".
#[derive(Debug, Clone, clap::Args)]
pub struct BackendArgs {
    /// PostgreSQL URL (`postgres://user@host:5432/db`) or SQLite URL (`sqlite://path`).
    /// Unset: an SQLite file per service under the data folder.
    #[arg(long, env = "DATABASE_URL")]
    pub database_url: Option<Secret<String>>,
    /// Redis URL (`redis://host:6379/0`). Unset: in-process state.
    #[arg(long, env = "REDIS_URL")]
    pub redis_url: Option<Secret<String>>,
    /// RabbitMQ URL (`amqp://user:pass@host:5672/%2f`). Unset: in-process event bus.
    #[arg(long, env = "AMQP_URL")]
    pub amqp_url: Option<Secret<String>>,
    /// Folder for embedded data (SQLite files, email outbox).
    #[arg(long, env = "MEETEASE_DATA_DIR", default_value = "data")]
    pub data_dir: PathBuf,
}

/// Where the relational store is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DatabaseConfig {
    /// PostgreSQL; each service keeps its tables in its own schema.
    Postgres { url: Secret<String> },
    /// One SQLite file per service (`path` is the folder, or an explicit file URL).
    Sqlite { location: SqliteLocation },
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SqliteLocation {
    /// `<folder>/<service>.db`
    Folder(PathBuf),
    /// A URL given by the operator, used as is.
    Url(String),
}

/// Typed, validated backend configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BackendConfig {
    pub database: DatabaseConfig,
    pub redis_url: Option<Secret<String>>,
    pub amqp_url: Option<Secret<String>>,
    pub data_dir: PathBuf,
}

impl BackendConfig {
    /// Embedded defaults everywhere, data under `data_dir`.
    pub fn embedded(data_dir: impl Into<PathBuf>) -> Self {
        let data_dir = data_dir.into();
        Self {
            database: DatabaseConfig::Sqlite {
                location: SqliteLocation::Folder(data_dir.clone()),
            },
            redis_url: None,
            amqp_url: None,
            data_dir,
        }
    }
}

impl TryFrom<BackendArgs> for BackendConfig {
    type Error = StartError;

    fn try_from(args: BackendArgs) -> Result<Self, StartError> {
        let database = match &args.database_url {
            None => DatabaseConfig::Sqlite {
                location: SqliteLocation::Folder(args.data_dir.clone()),
            },
            Some(url) => {
                let scheme = url_scheme(url.expose(), "DATABASE_URL")?;
                match scheme {
                    "postgres" | "postgresql" => DatabaseConfig::Postgres { url: url.clone() },
                    "sqlite" => DatabaseConfig::Sqlite {
                        location: SqliteLocation::Url(url.expose().clone()),
                    },
                    other => {
                        return Err(StartError::setting(
                            "DATABASE_URL",
                            format!(
                                "unsupported scheme `{other}` (expected postgres:// or sqlite://)"
                            ),
                        ));
                    }
                }
            }
        };
        if let Some(url) = &args.redis_url {
            match url_scheme(url.expose(), "REDIS_URL")? {
                "redis" | "rediss" => {}
                other => {
                    return Err(StartError::setting(
                        "REDIS_URL",
                        format!("unsupported scheme `{other}` (expected redis://)"),
                    ));
                }
            }
        }
        if let Some(url) = &args.amqp_url {
            match url_scheme(url.expose(), "AMQP_URL")? {
                "amqp" | "amqps" => {}
                other => {
                    return Err(StartError::setting(
                        "AMQP_URL",
                        format!("unsupported scheme `{other}` (expected amqp://)"),
                    ));
                }
            }
        }
        Ok(Self {
            database,
            redis_url: args.redis_url,
            amqp_url: args.amqp_url,
            data_dir: args.data_dir,
        })
    }
}

fn url_scheme<'a>(url: &'a str, setting: &str) -> Result<&'a str, StartError> {
    match url.split_once(':') {
        Some((scheme, _))
            if !scheme.is_empty()
                && scheme
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '+' || c == '-') =>
        {
            Ok(scheme)
        }
        _ => Err(StartError::setting(
            setting,
            "not a URL (expected scheme://host...)",
        )),
    }
}

/// `scheme://user:password@host/...` with the password replaced, for messages.
pub fn redact_url(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return "[unparseable url]".to_owned();
    };
    let (authority, path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, ""),
    };
    let authority = match authority.rsplit_once('@') {
        Some((userinfo, host)) => match userinfo.split_once(':') {
            Some((user, _)) => format!("{user}:***@{host}"),
            None => format!("{userinfo}@{host}"),
        },
        None => authority.to_owned(),
    };
    // Query strings may carry passwords too; drop them.
    let path = path.split('?').next().unwrap_or_default();
    format!("{scheme}://{authority}{path}")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(db: Option<&str>, redis: Option<&str>, amqp: Option<&str>) -> BackendArgs {
        BackendArgs {
            database_url: db.map(|s| Secret::new(s.to_owned())),
            redis_url: redis.map(|s| Secret::new(s.to_owned())),
            amqp_url: amqp.map(|s| Secret::new(s.to_owned())),
            data_dir: "data".into(),
        }
    }

    #[test]
    fn no_urls_means_embedded_defaults() {
        let config = BackendConfig::try_from(args(None, None, None)).unwrap();
        assert_eq!(config, BackendConfig::embedded("data"));
    }

    #[test]
    fn a_bad_database_url_names_the_setting() {
        let err = BackendConfig::try_from(args(Some("mysql://x"), None, None)).unwrap_err();
        assert_eq!(err.setting.as_deref(), Some("DATABASE_URL"));
        let err = BackendConfig::try_from(args(Some("nonsense"), None, None)).unwrap_err();
        assert!(err.to_string().starts_with("DATABASE_URL: "), "{err}");
    }

    #[test]
    fn bad_redis_and_amqp_urls_name_their_setting() {
        let err = BackendConfig::try_from(args(None, Some("http://x"), None)).unwrap_err();
        assert_eq!(err.setting.as_deref(), Some("REDIS_URL"));
        let err = BackendConfig::try_from(args(None, None, Some("redis://x"))).unwrap_err();
        assert_eq!(err.setting.as_deref(), Some("AMQP_URL"));
    }

    #[test]
    fn secrets_never_print() {
        let secret = Secret::new("hunter2".to_owned());
        assert_eq!(format!("{secret:?} {secret}"), "[redacted] [redacted]");
        let config =
            BackendConfig::try_from(args(Some("postgres://u:hunter2@h/db"), None, None)).unwrap();
        assert!(!format!("{config:?}").contains("hunter2"));
    }

    #[test]
    fn redacted_urls_hide_the_password() {
        assert_eq!(
            redact_url("amqp://guest:guest@127.0.0.1:5672/%2f"),
            "amqp://guest:***@127.0.0.1:5672/%2f"
        );
        assert_eq!(
            redact_url("redis://127.0.0.1:6379"),
            "redis://127.0.0.1:6379"
        );
        assert_eq!(
            redact_url("postgres://u@h/db?password=x"),
            "postgres://u@h/db"
        );
    }
}
