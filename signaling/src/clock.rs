//! Time as the service uses it: Unix milliseconds in storage and state, RFC 3339 on the wire.

use chrono::{DateTime, SecondsFormat, Utc};

/// Now, in Unix milliseconds.
pub fn now_ms() -> i64 {
    Utc::now().timestamp_millis()
}

/// Unix milliseconds as RFC 3339 UTC (`2026-12-01T08:00:00Z`).
pub fn rfc3339(ms: i64) -> String {
    DateTime::<Utc>::from_timestamp_millis(ms)
        .unwrap_or_default()
        .to_rfc3339_opts(SecondsFormat::Secs, true)
}
