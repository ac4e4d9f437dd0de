//! Parsing and checking what clients send about meetings. Every value that reaches
//! the store went through here.

use crate::clock;
use chrono::{DateTime, LocalResult, NaiveDateTime, TimeZone, Utc};
use chrono::{Datelike, Duration, Weekday};
use chrono_tz::Tz;
use proto::ErrorCode;
use proto::ids::{MeetingId, UserId};
use proto::meeting::{
    DEFAULT_DURATION_MINUTES, Frequency, MAX_DISPLAY_NAME_CHARS, MAX_DURATION_MINUTES,
    MAX_INVITEES, MAX_OCCURRENCES, MAX_PARTICIPANTS_LIMIT, MAX_TITLE_CHARS, Meeting, MeetingKind,
    MeetingSettings, MeetingStatus, Recurrence,
};
use servicekit::ApiError;

/// A meeting as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MeetingRecord {
    pub id: MeetingId,
    pub code: String,
    pub host_id: UserId,
    pub title: String,
    pub kind: MeetingKind,
    pub status: MeetingStatus,
    pub starts_at: i64,
    pub ends_at: i64,
    pub time_zone: String,
    pub settings: MeetingSettings,
    pub recurrence: Option<Recurrence>,
    pub invitees: Vec<String>,
    pub started_at: Option<i64>,
    pub ended_at: Option<i64>,
    pub created_at: i64,
    pub updated_at: i64,
}

impl MeetingRecord {
    pub fn duration_minutes(&self) -> u32 {
        u32::try_from((self.ends_at - self.starts_at) / 60_000).unwrap_or(0)
    }

    pub fn is_host(&self, user: UserId) -> bool {
        self.host_id == user
    }

    pub fn is_invited(&self, email: &str) -> bool {
        let email = email.trim().to_ascii_lowercase();
        self.invitees.contains(&email)
    }

    /// Start of every occurrence, Unix ms (just `starts_at` when it does not repeat).
    pub fn occurrences(&self) -> Vec<i64> {
        let tz: Tz = self.time_zone.parse().unwrap_or(Tz::UTC);
        occurrences(self.starts_at, tz, self.recurrence)
    }

    /// When the last occurrence ends.
    pub fn series_ends_at(&self) -> i64 {
        let last = self.occurrences().last().copied().unwrap_or(self.starts_at);
        last + (self.ends_at - self.starts_at)
    }

    /// Whether the meeting may still be joined.
    pub fn joinable(&self) -> bool {
        !matches!(self.status, MeetingStatus::Ended | MeetingStatus::Cancelled)
    }

    /// The API view; `full` (the host's) includes the invitees.
    pub fn view(&self, full: bool) -> Meeting {
        Meeting {
            id: self.id,
            code: self.code.clone(),
            join_url: format!("/m/{}", self.code),
            title: self.title.clone(),
            host_id: self.host_id,
            kind: self.kind,
            status: self.status,
            starts_at: clock::rfc3339(self.starts_at),
            ends_at: clock::rfc3339(self.ends_at),
            time_zone: self.time_zone.clone(),
            duration_minutes: self.duration_minutes(),
            invitees: if full {
                self.invitees.clone()
            } else {
                Vec::new()
            },
            settings: self.settings.clone(),
            recurrence: self.recurrence,
            occurrences: self.occurrences().into_iter().map(clock::rfc3339).collect(),
            started_at: self.started_at.map(clock::rfc3339),
            ended_at: self.ended_at.map(clock::rfc3339),
            created_at: clock::rfc3339(self.created_at),
            updated_at: clock::rfc3339(self.updated_at),
        }
    }
}

/// An IANA time zone name.
pub fn parse_time_zone(name: &str) -> Result<Tz, ApiError> {
    name.parse::<Tz>().map_err(|_| {
        ApiError::new(
            ErrorCode::UnknownTimeZone,
            "time_zone: not a known IANA time zone (such as Europe/Paris)",
        )
    })
}

fn schedule_error(message: &'static str) -> ApiError {
    ApiError::new(ErrorCode::InvalidSchedule, message)
}

/// Earliest and latest times a meeting may have (Unix ms): 2000-01-01 and 2100-01-01.
const MIN_TIME_MS: i64 = 946_684_800_000;
const MAX_TIME_MS: i64 = 4_102_444_800_000;

/// An RFC 3339 time with an offset, or a wall-clock time without one read in `tz`.
pub fn parse_time(field: &'static str, value: &str, tz: Tz) -> Result<i64, ApiError> {
    let bad = || {
        ApiError::new(
            ErrorCode::InvalidSchedule,
            format!(
                "{field}: expected an RFC 3339 time (2026-12-01T09:00:00+01:00) or a local time (2026-12-01T09:00) in time_zone"
            ),
        )
    };
    if value.len() > 64 {
        return Err(bad());
    }
    let ms = if let Ok(at) = DateTime::parse_from_rfc3339(value) {
        at.with_timezone(&Utc).timestamp_millis()
    } else {
        let naive = NaiveDateTime::parse_from_str(value, "%Y-%m-%dT%H:%M:%S")
            .or_else(|_| NaiveDateTime::parse_from_str(value, "%Y-%m-%dT%H:%M"))
            .map_err(|_| bad())?;
        match tz.from_local_datetime(&naive) {
            LocalResult::Single(at) => at.with_timezone(&Utc).timestamp_millis(),
            // A wall-clock time that happens twice (clocks going back): the first.
            LocalResult::Ambiguous(first, _) => first.with_timezone(&Utc).timestamp_millis(),
            LocalResult::None => {
                return Err(ApiError::new(
                    ErrorCode::InvalidSchedule,
                    format!(
                        "{field}: this local time does not exist in time_zone (clocks go forward)"
                    ),
                ));
            }
        }
    };
    if !(MIN_TIME_MS..MAX_TIME_MS).contains(&ms) {
        return Err(schedule_error(
            "times must be between the years 2000 and 2100",
        ));
    }
    Ok(ms)
}

/// The end of a meeting from `duration_minutes` or `ends_at` (not both).
pub fn parse_end(
    starts_at: i64,
    duration_minutes: Option<u32>,
    ends_at: Option<&str>,
    tz: Tz,
) -> Result<i64, ApiError> {
    let ends_at = match (duration_minutes, ends_at) {
        (Some(_), Some(_)) => {
            return Err(schedule_error("give duration_minutes or ends_at, not both"));
        }
        (Some(minutes), None) => {
            if minutes == 0 || minutes > MAX_DURATION_MINUTES {
                return Err(schedule_error(
                    "duration_minutes: must be between 1 and 1440",
                ));
            }
            starts_at + i64::from(minutes) * 60_000
        }
        (None, Some(end)) => parse_time("ends_at", end, tz)?,
        (None, None) => starts_at + i64::from(DEFAULT_DURATION_MINUTES) * 60_000,
    };
    if ends_at <= starts_at {
        return Err(schedule_error("the meeting must end after it starts"));
    }
    if ends_at - starts_at > i64::from(MAX_DURATION_MINUTES) * 60_000 {
        return Err(schedule_error("a meeting lasts at most 24 hours"));
    }
    Ok(ends_at)
}

/// A title: trimmed, 1–200 characters, no control characters. `None` gives `default`.
pub fn parse_title(title: Option<&str>, default: &str) -> Result<String, ApiError> {
    let Some(title) = title else {
        return Ok(default.to_owned());
    };
    let title = title.trim();
    if title.is_empty() {
        return Err(ApiError::invalid_field("title", "must not be empty"));
    }
    if title.chars().count() > MAX_TITLE_CHARS {
        return Err(ApiError::invalid_field("title", "at most 200 characters"));
    }
    if title.chars().any(char::is_control) {
        return Err(ApiError::invalid_field(
            "title",
            "must not contain control characters",
        ));
    }
    Ok(title.to_owned())
}

/// A display name: trimmed, 1–64 characters, no control characters.
pub fn parse_display_name(name: &str) -> Result<String, ApiError> {
    let name = name.trim();
    if name.is_empty() {
        return Err(ApiError::invalid_field("display_name", "must not be empty"));
    }
    if name.chars().count() > MAX_DISPLAY_NAME_CHARS {
        return Err(ApiError::invalid_field(
            "display_name",
            "at most 64 characters",
        ));
    }
    if name.chars().any(char::is_control) {
        return Err(ApiError::invalid_field(
            "display_name",
            "must not contain control characters",
        ));
    }
    Ok(name.to_owned())
}

/// Invitee emails: at most 200, each a plausible address; lower-cased and deduplicated.
pub fn parse_invitees(invitees: &[String]) -> Result<Vec<String>, ApiError> {
    if invitees.len() > MAX_INVITEES {
        return Err(ApiError::new(
            ErrorCode::TooManyInvitees,
            "a meeting may have at most 200 invitees",
        ));
    }
    let mut out: Vec<String> = Vec::with_capacity(invitees.len());
    for raw in invitees {
        let email = raw.trim().to_ascii_lowercase();
        let plausible = email.len() <= 254
            && !email.chars().any(|c| c.is_whitespace() || c.is_control())
            && email.split_once('@').is_some_and(|(local, domain)| {
                !local.is_empty()
                    && domain.contains('.')
                    && !domain.contains('@')
                    && !domain.starts_with('.')
                    && !domain.ends_with('.')
            });
        if !plausible {
            return Err(ApiError::invalid_field("invitees", "not an email address"));
        }
        if !out.contains(&email) {
            out.push(email);
        }
    }
    Ok(out)
}

/// The starts of a series: the same wall-clock time in `tz` each day, weekday or week.
/// A wall-clock time that does not exist on some day (clocks go forward) moves an
/// hour later; one that happens twice takes the first.
pub fn occurrences(starts_at: i64, tz: Tz, recurrence: Option<Recurrence>) -> Vec<i64> {
    let Some(recurrence) = recurrence else {
        return vec![starts_at];
    };
    let Some(first) = DateTime::<Utc>::from_timestamp_millis(starts_at) else {
        return vec![starts_at];
    };
    let local = first.with_timezone(&tz).naive_local();
    let mut out = vec![starts_at];
    let mut day = local;
    while out.len() < recurrence.count.min(MAX_OCCURRENCES) as usize {
        day += match recurrence.frequency {
            Frequency::Daily => Duration::days(1),
            Frequency::Weekly => Duration::weeks(1),
            Frequency::Weekdays => match day.weekday() {
                Weekday::Fri => Duration::days(3),
                Weekday::Sat => Duration::days(2),
                _ => Duration::days(1),
            },
        };
        let at = match tz.from_local_datetime(&day) {
            LocalResult::Single(at) | LocalResult::Ambiguous(at, _) => at,
            LocalResult::None => match tz
                .from_local_datetime(&(day + Duration::hours(1)))
                .earliest()
            {
                Some(at) => at,
                None => continue,
            },
        };
        out.push(at.with_timezone(&Utc).timestamp_millis());
    }
    out
}

/// A recurrence: 2 to 52 occurrences, for scheduled meetings.
pub fn check_recurrence(recurrence: &Recurrence, kind: MeetingKind) -> Result<(), ApiError> {
    if kind == MeetingKind::Instant {
        return Err(ApiError::new(
            ErrorCode::InvalidSchedule,
            "only a scheduled meeting (with starts_at) may repeat",
        ));
    }
    if !(2..=MAX_OCCURRENCES).contains(&recurrence.count) {
        return Err(ApiError::new(
            ErrorCode::InvalidSchedule,
            "recurrence.count: between 2 and 52",
        ));
    }
    Ok(())
}

pub fn check_settings(settings: &MeetingSettings) -> Result<(), ApiError> {
    if !(2..=MAX_PARTICIPANTS_LIMIT).contains(&settings.max_participants) {
        return Err(ApiError::invalid_field(
            "settings.max_participants",
            "must be between 2 and 500",
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn local_times_are_read_in_their_time_zone() {
        let paris = parse_time_zone("Europe/Paris").unwrap();
        let ms = parse_time("starts_at", "2026-12-01T09:00", paris).unwrap();
        assert_eq!(clock::rfc3339(ms), "2026-12-01T08:00:00Z");
        let ms = parse_time("starts_at", "2026-07-01T09:00:00", paris).unwrap();
        assert_eq!(clock::rfc3339(ms), "2026-07-01T07:00:00Z");
        let ms = parse_time("starts_at", "2026-12-01T09:00:00-05:00", paris).unwrap();
        assert_eq!(clock::rfc3339(ms), "2026-12-01T14:00:00Z");
    }

    #[test]
    fn times_that_do_not_exist_or_do_not_parse_are_refused() {
        let paris = parse_time_zone("Europe/Paris").unwrap();
        // Clocks jump from 02:00 to 03:00 on 2026-03-29 in Paris.
        assert!(parse_time("starts_at", "2026-03-29T02:30", paris).is_err());
        assert!(parse_time("starts_at", "tomorrow", paris).is_err());
        assert!(parse_time("starts_at", "1900-01-01T00:00:00Z", paris).is_err());
        assert_eq!(
            parse_time_zone("Mars/Olympus").unwrap_err().code,
            ErrorCode::UnknownTimeZone
        );
    }

    #[test]
    fn the_end_must_come_after_the_start_and_within_a_day() {
        let utc = parse_time_zone("UTC").unwrap();
        let start = parse_time("starts_at", "2026-12-01T09:00:00Z", utc).unwrap();
        assert_eq!(
            parse_end(start, Some(30), None, utc).unwrap(),
            start + 1_800_000
        );
        assert_eq!(
            parse_end(start, None, None, utc).unwrap(),
            start + 3_600_000
        );
        let early = parse_end(start, None, Some("2026-12-01T08:00:00Z"), utc).unwrap_err();
        assert_eq!(early.code, ErrorCode::InvalidSchedule);
        assert!(parse_end(start, Some(0), None, utc).is_err());
        assert!(parse_end(start, Some(1441), None, utc).is_err());
        assert!(parse_end(start, Some(10), Some("2026-12-01T10:00:00Z"), utc).is_err());
    }

    #[test]
    fn occurrences_keep_the_wall_clock_time_across_daylight_saving() {
        let paris = parse_time_zone("Europe/Paris").unwrap();
        // Friday 2026-03-27 09:00 in Paris; clocks go forward on Sunday the 29th.
        let start = parse_time("starts_at", "2026-03-27T09:00", paris).unwrap();
        let weekdays = Recurrence {
            frequency: Frequency::Weekdays,
            count: 3,
        };
        let got: Vec<String> = occurrences(start, paris, Some(weekdays))
            .into_iter()
            .map(clock::rfc3339)
            .collect();
        assert_eq!(
            got,
            [
                "2026-03-27T08:00:00Z",
                "2026-03-30T07:00:00Z",
                "2026-03-31T07:00:00Z"
            ]
        );
        let weekly = Recurrence {
            frequency: Frequency::Weekly,
            count: 2,
        };
        assert_eq!(occurrences(start, paris, Some(weekly)).len(), 2);
        assert_eq!(occurrences(start, paris, None), vec![start]);
    }

    #[test]
    fn invitees_are_normalized_deduplicated_and_bounded() {
        let list = vec!["Ada@Example.com ".to_owned(), "ada@example.com".to_owned()];
        assert_eq!(parse_invitees(&list).unwrap(), vec!["ada@example.com"]);
        assert!(parse_invitees(&["nope".to_owned()]).is_err());
        assert!(parse_invitees(&["a@b".to_owned()]).is_err());
        let many: Vec<String> = (0..201).map(|i| format!("p{i}@example.com")).collect();
        assert_eq!(
            parse_invitees(&many).unwrap_err().code,
            ErrorCode::TooManyInvitees
        );
    }

    #[test]
    fn titles_are_trimmed_and_bounded() {
        assert_eq!(parse_title(Some("  Standup "), "x").unwrap(), "Standup");
        assert_eq!(parse_title(None, "Meeting").unwrap(), "Meeting");
        assert!(parse_title(Some(""), "x").is_err());
        assert!(parse_title(Some(&"é".repeat(201)), "x").is_err());
        assert!(parse_title(Some(&"é".repeat(200)), "x").is_ok());
        assert!(parse_title(Some("a\u{0}b"), "x").is_err());
    }
}
