//! Profile fields: each has a `parse` that is the only way in (parse, don't validate).

use proto::ErrorCode;
use serde::{Deserialize, Serialize};
use servicekit::ApiError;
use std::fmt;

/// What other participants see: trimmed, 1–100 characters, no control characters
/// (the same rule as auth's account name).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DisplayName(String);

impl DisplayName {
    pub const MAX_CHARS: usize = 100;

    pub fn parse(raw: &str) -> Result<DisplayName, ApiError> {
        let text = raw.trim();
        let problem = if text.is_empty() {
            Some("is empty")
        } else if text.chars().count() > Self::MAX_CHARS {
            Some("is longer than 100 characters")
        } else if text.chars().any(char::is_control) {
            Some("contains control characters")
        } else {
            None
        };
        match problem {
            Some(why) => Err(ApiError::invalid_field("display_name", why)),
            None => Ok(DisplayName(text.to_owned())),
        }
    }

    /// A name from a token's claims, which auth already checked; falls back to
    /// "Someone" should a claim ever be unusable.
    pub fn from_claim(raw: &str) -> DisplayName {
        Self::parse(raw).unwrap_or_else(|_| DisplayName("Someone".to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for DisplayName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// An IANA time zone name (`Europe/Paris`, `UTC`), kept in its canonical spelling.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TimeZone(String);

impl TimeZone {
    pub const DEFAULT: &str = "UTC";

    pub fn parse(raw: &str) -> Result<TimeZone, ApiError> {
        let tz: chrono_tz::Tz = raw.trim().parse().map_err(|_| {
            ApiError::new(
                ErrorCode::UnknownTimeZone,
                "time_zone: not a known IANA time zone (such as `Europe/Paris`)",
            )
        })?;
        Ok(TimeZone(tz.name().to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// A BCP 47 language tag of the simple shape `ll`, `lll`, `ll-RR`, `zh-Hant-TW`:
/// a 2–3 letter language then up to three 2–8 character alphanumeric subtags, at
/// most 35 characters. The language is lower-cased; subtags keep their case.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Locale(String);

impl Locale {
    pub const DEFAULT: &str = "en";

    pub fn parse(raw: &str) -> Result<Locale, ApiError> {
        let bad =
            || ApiError::invalid_field("locale", "not a language tag such as `en` or `pt-BR`");
        let text = raw.trim();
        if text.len() > 35 {
            return Err(bad());
        }
        let mut parts = text.split('-');
        let language = parts.next().unwrap_or_default();
        if !(2..=3).contains(&language.len()) || !language.chars().all(|c| c.is_ascii_alphabetic())
        {
            return Err(bad());
        }
        let mut tag = language.to_ascii_lowercase();
        for (i, part) in parts.enumerate() {
            if i >= 3
                || !(2..=8).contains(&part.len())
                || !part.chars().all(|c| c.is_ascii_alphanumeric())
            {
                return Err(bad());
            }
            tag.push('-');
            tag.push_str(part);
        }
        Ok(Locale(tag))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// A short free text about the person: at most 1000 characters, no control
/// characters except line breaks and tabs. Stored verbatim (surrounding whitespace
/// trimmed); it is data, never markup or SQL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Bio(String);

impl Bio {
    pub const MAX_CHARS: usize = 1000;

    pub fn parse(raw: &str) -> Result<Bio, ApiError> {
        let text = raw.trim();
        if text.chars().count() > Self::MAX_CHARS {
            return Err(ApiError::invalid_field(
                "bio",
                "is longer than 1000 characters",
            ));
        }
        if text
            .chars()
            .any(|c| c.is_control() && c != '\n' && c != '\t' && c != '\r')
        {
            return Err(ApiError::invalid_field(
                "bio",
                "contains control characters",
            ));
        }
        Ok(Bio(text.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// What the person wants by default. Stored as JSON; unknown stored fields are
/// ignored and missing ones take their defaults, so the shape can grow.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct Preferences {
    /// Join meetings with the microphone off.
    pub join_muted: bool,
    /// Join meetings with the camera off.
    pub camera_off: bool,
    /// Which channels notify may use for this person.
    pub notifications: NotificationChannels,
}

/// One switch per notification channel.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct NotificationChannels {
    pub email: bool,
    pub push: bool,
    pub in_app: bool,
}

impl Default for NotificationChannels {
    fn default() -> Self {
        Self {
            email: true,
            push: true,
            in_app: true,
        }
    }
}

/// A partial change of [`Preferences`]: absent fields stay as they are.
#[derive(Debug, Clone, Copy, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PreferencesPatch {
    pub join_muted: Option<bool>,
    pub camera_off: Option<bool>,
    pub notifications: Option<NotificationPatch>,
}

#[derive(Debug, Clone, Copy, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NotificationPatch {
    pub email: Option<bool>,
    pub push: Option<bool>,
    pub in_app: Option<bool>,
}

impl Preferences {
    pub fn apply(&mut self, patch: PreferencesPatch) {
        if let Some(value) = patch.join_muted {
            self.join_muted = value;
        }
        if let Some(value) = patch.camera_off {
            self.camera_off = value;
        }
        if let Some(n) = patch.notifications {
            let channels = &mut self.notifications;
            if let Some(value) = n.email {
                channels.email = value;
            }
            if let Some(value) = n.push {
                channels.push = value;
            }
            if let Some(value) = n.in_app {
                channels.in_app = value;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn time_zones_must_be_iana_names() {
        assert_eq!(
            TimeZone::parse("Europe/Paris").unwrap().as_str(),
            "Europe/Paris"
        );
        assert_eq!(TimeZone::parse(" UTC ").unwrap().as_str(), "UTC");
        for bad in [
            "",
            "Mars/Olympus",
            "Europe/Paris; DROP TABLE profiles",
            "+02:00",
        ] {
            let err = TimeZone::parse(bad).unwrap_err();
            assert_eq!(err.code, ErrorCode::UnknownTimeZone, "{bad}");
        }
    }

    #[test]
    fn locales_are_simple_language_tags() {
        assert_eq!(Locale::parse("EN").unwrap().as_str(), "en");
        assert_eq!(Locale::parse("pt-BR").unwrap().as_str(), "pt-BR");
        assert_eq!(Locale::parse("zh-Hant-TW").unwrap().as_str(), "zh-Hant-TW");
        for bad in [
            "",
            "e",
            "english",
            "en_US",
            "en-",
            "en-a",
            "en-US-x-y-z",
            "fr'--",
        ] {
            assert!(Locale::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn bios_are_bounded_and_keep_line_breaks() {
        assert_eq!(Bio::parse(" a\nb ").unwrap().as_str(), "a\nb");
        assert!(Bio::parse(&"é".repeat(1000)).is_ok());
        assert!(Bio::parse(&"é".repeat(1001)).is_err());
        assert!(Bio::parse("a\u{0}b").is_err());
    }

    #[test]
    fn a_preferences_patch_changes_only_what_it_names() {
        let mut prefs = Preferences::default();
        let patch: PreferencesPatch =
            serde_json::from_str(r#"{"camera_off": true, "notifications": {"push": false}}"#)
                .unwrap();
        prefs.apply(patch);
        assert!(prefs.camera_off);
        assert!(!prefs.join_muted);
        assert!(!prefs.notifications.push);
        assert!(prefs.notifications.email && prefs.notifications.in_app);
    }

    #[test]
    fn stored_preferences_missing_fields_take_defaults() {
        let prefs: Preferences = serde_json::from_str(r#"{"join_muted": true}"#).unwrap();
        assert!(prefs.join_muted);
        assert_eq!(prefs.notifications, NotificationChannels::default());
    }
}
