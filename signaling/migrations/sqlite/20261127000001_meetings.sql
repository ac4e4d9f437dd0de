-- Meetings, their invitees, who attended, and the outbox of meeting events.
-- Ids are UUID text; times are Unix milliseconds (BIGINT), so the same queries
-- run on PostgreSQL and SQLite.

CREATE TABLE meetings (
    id               TEXT PRIMARY KEY,
    code             TEXT NOT NULL UNIQUE,
    host_id          TEXT NOT NULL,
    title            TEXT NOT NULL,
    kind             TEXT NOT NULL,
    status           TEXT NOT NULL,
    starts_at        BIGINT NOT NULL,
    ends_at          BIGINT NOT NULL,
    duration_minutes BIGINT NOT NULL,
    time_zone        TEXT NOT NULL,
    settings         TEXT NOT NULL,
    started_at       BIGINT,
    ended_at         BIGINT,
    created_at       BIGINT NOT NULL,
    updated_at       BIGINT NOT NULL
);
CREATE INDEX meetings_host ON meetings (host_id, starts_at);

CREATE TABLE meeting_invitees (
    meeting_id TEXT NOT NULL REFERENCES meetings (id) ON DELETE CASCADE,
    email      TEXT NOT NULL,
    PRIMARY KEY (meeting_id, email)
);
CREATE INDEX meeting_invitees_email ON meeting_invitees (email);

CREATE TABLE meeting_attendance (
    participant_id TEXT PRIMARY KEY,
    meeting_id     TEXT NOT NULL REFERENCES meetings (id) ON DELETE CASCADE,
    user_id        TEXT,
    display_name   TEXT NOT NULL,
    joined_at      BIGINT NOT NULL,
    left_at        BIGINT
);
CREATE INDEX meeting_attendance_meeting ON meeting_attendance (meeting_id, joined_at);

CREATE TABLE outbox (
    id           TEXT PRIMARY KEY,
    type         TEXT NOT NULL,
    payload      TEXT NOT NULL,
    created_at   BIGINT NOT NULL,
    published_at BIGINT
);
CREATE INDEX outbox_unpublished ON outbox (created_at) WHERE published_at IS NULL;
