-- Events already handled (consumers deduplicate by event id).
CREATE TABLE processed_events (
    event_id     TEXT PRIMARY KEY,
    processed_at BIGINT NOT NULL
);

-- Every email to send, written in the same transaction as the event that caused it.
-- Reminders are rows whose due_at lies ahead. sent_at / failed_at end a row's life.
CREATE TABLE mail_queue (
    id         TEXT PRIMARY KEY,
    kind       TEXT NOT NULL,
    recipient  TEXT NOT NULL,
    subject    TEXT NOT NULL,
    body_text  TEXT NOT NULL,
    body_html  TEXT NOT NULL,
    ics        TEXT,
    ics_method TEXT,
    meeting_id TEXT,
    due_at     BIGINT NOT NULL,
    attempts   BIGINT NOT NULL DEFAULT 0,
    sent_at    BIGINT,
    failed_at  BIGINT,
    last_error TEXT,
    created_at BIGINT NOT NULL
);
CREATE INDEX mail_queue_due ON mail_queue (due_at) WHERE sent_at IS NULL AND failed_at IS NULL;
CREATE INDEX mail_queue_meeting ON mail_queue (meeting_id, kind);

-- Emails given up on after repeated failures.
CREATE TABLE mail_dead_letters (
    mail_id    TEXT PRIMARY KEY,
    kind       TEXT NOT NULL,
    recipient  TEXT NOT NULL,
    attempts   BIGINT NOT NULL,
    last_error TEXT NOT NULL,
    failed_at  BIGINT NOT NULL
);

-- What invitees were last told about a meeting: its calendar SEQUENCE and details.
CREATE TABLE meeting_calendar (
    meeting_id TEXT PRIMARY KEY,
    sequence   BIGINT NOT NULL,
    title      TEXT NOT NULL,
    starts_at  TEXT NOT NULL,
    time_zone  TEXT NOT NULL,
    invitees   TEXT NOT NULL
);
