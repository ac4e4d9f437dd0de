//! iCalendar (RFC 5545) invitations: `METHOD:REQUEST` for new and updated meetings,
//! `METHOD:CANCEL` for cancelled ones. `UID` is the meeting id and `SEQUENCE` grows
//! with each change, so calendars replace the entry instead of adding another.
//!
//! `DTSTART` is written in the meeting's time zone (`TZID=America/New_York`) with a
//! `VTIMEZONE` giving that zone's offset at the start; clients that know the IANA
//! name use their own rules, others the offset.

use chrono::{DateTime, Offset, TimeZone, Utc};
use chrono_tz::{OffsetName, Tz};

/// What an invitation says.
#[derive(Debug, Clone)]
pub struct Invite<'a> {
    pub meeting_id: &'a str,
    pub title: &'a str,
    pub starts_at: DateTime<Utc>,
    pub time_zone: Tz,
    pub sequence: i64,
    pub organizer: &'a str,
    pub attendee: &'a str,
    pub join_url: &'a str,
    pub cancelled: bool,
    pub now: DateTime<Utc>,
}

impl Invite<'_> {
    pub fn method(&self) -> &'static str {
        if self.cancelled { "CANCEL" } else { "REQUEST" }
    }

    /// The calendar as text, CRLF line ends, lines folded at 75 octets.
    pub fn render(&self) -> String {
        let local = self
            .time_zone
            .from_utc_datetime(&self.starts_at.naive_utc());
        let offset = local.offset().fix().local_minus_utc();
        let abbreviation = local.offset().abbreviation().unwrap_or("");
        let lines = [
            "BEGIN:VCALENDAR".to_owned(),
            "PRODID:-//MeetEase//notify//EN".to_owned(),
            "VERSION:2.0".to_owned(),
            "CALSCALE:GREGORIAN".to_owned(),
            format!("METHOD:{}", self.method()),
            "BEGIN:VTIMEZONE".to_owned(),
            format!("TZID:{}", self.time_zone.name()),
            "BEGIN:STANDARD".to_owned(),
            "DTSTART:19700101T000000".to_owned(),
            format!("TZOFFSETFROM:{}", utc_offset(offset)),
            format!("TZOFFSETTO:{}", utc_offset(offset)),
            format!("TZNAME:{}", escape(abbreviation)),
            "END:STANDARD".to_owned(),
            "END:VTIMEZONE".to_owned(),
            "BEGIN:VEVENT".to_owned(),
            format!("UID:{}", self.meeting_id),
            format!("DTSTAMP:{}", self.now.format("%Y%m%dT%H%M%SZ")),
            format!("SEQUENCE:{}", self.sequence),
            format!(
                "DTSTART;TZID={}:{}",
                self.time_zone.name(),
                local.format("%Y%m%dT%H%M%S")
            ),
            format!("SUMMARY:{}", escape(self.title)),
            format!("ORGANIZER;CN=MeetEase:mailto:{}", self.organizer),
            format!(
                "ATTENDEE;ROLE=REQ-PARTICIPANT;PARTSTAT=NEEDS-ACTION;RSVP=TRUE:mailto:{}",
                self.attendee
            ),
            format!("URL:{}", self.join_url),
            format!(
                "DESCRIPTION:{}",
                escape(&format!("Join: {}", self.join_url))
            ),
            format!(
                "STATUS:{}",
                if self.cancelled {
                    "CANCELLED"
                } else {
                    "CONFIRMED"
                }
            ),
            "END:VEVENT".to_owned(),
            "END:VCALENDAR".to_owned(),
        ];
        let mut out = String::new();
        for line in lines {
            fold(&line, &mut out);
        }
        out
    }
}

fn utc_offset(seconds: i32) -> String {
    let sign = if seconds < 0 { '-' } else { '+' };
    let minutes = seconds.unsigned_abs() / 60;
    format!("{sign}{:02}{:02}", minutes / 60, minutes % 60)
}

/// TEXT escaping (RFC 5545 §3.3.11).
fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            ';' => out.push_str("\\;"),
            ',' => out.push_str("\\,"),
            '\n' => out.push_str("\\n"),
            '\r' => {}
            c => out.push(c),
        }
    }
    out
}

/// Fold a content line at 75 octets, never inside a UTF-8 character.
fn fold(line: &str, out: &mut String) {
    let mut width = 0;
    for c in line.chars() {
        if width + c.len_utf8() > 75 {
            out.push_str("\r\n ");
            width = 1;
        }
        out.push(c);
        width += c.len_utf8();
    }
    out.push_str("\r\n");
}

#[cfg(test)]
mod tests {
    use super::*;

    fn invite(cancelled: bool) -> String {
        Invite {
            meeting_id: "0190-abc",
            title: "Plan; review, \"Q4\"",
            starts_at: "2026-12-01T14:00:00Z".parse().unwrap(),
            time_zone: "America/New_York".parse().unwrap(),
            sequence: 2,
            organizer: "noreply@meetease.test",
            attendee: "bob@example.com",
            join_url: "http://localhost:8000/m/0190-abc",
            cancelled,
            now: "2026-11-27T10:00:00Z".parse().unwrap(),
        }
        .render()
    }

    #[test]
    fn an_invitation_names_the_start_in_the_meetings_time_zone() {
        let ics = invite(false);
        assert!(ics.contains("METHOD:REQUEST\r\n"));
        assert!(ics.contains("DTSTART;TZID=America/New_York:20261201T090000\r\n"));
        assert!(ics.contains("TZOFFSETTO:-0500\r\n"));
        assert!(ics.contains("UID:0190-abc\r\n"));
        assert!(ics.contains("SEQUENCE:2\r\n"));
        assert!(ics.contains("SUMMARY:Plan\\; review\\, \"Q4\"\r\n"));
        assert!(ics.lines().all(|l| l.len() <= 76));
    }

    #[test]
    fn a_cancellation_uses_method_cancel() {
        let ics = invite(true);
        assert!(ics.contains("METHOD:CANCEL\r\n"));
        assert!(ics.contains("STATUS:CANCELLED\r\n"));
    }

    #[test]
    fn long_lines_are_folded() {
        let mut out = String::new();
        fold(&"x".repeat(200), &mut out);
        assert!(out.split("\r\n").all(|l| l.len() <= 75));
        assert_eq!(out.replace("\r\n ", "").trim_end(), "x".repeat(200));
    }
}
