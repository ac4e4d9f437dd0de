-- Events already counted (consumers deduplicate by event id).
CREATE TABLE processed_events (
    event_id     TEXT PRIMARY KEY,
    processed_at BIGINT NOT NULL
);

-- One row per meeting: its span and participant counts. Times are Unix ms.
CREATE TABLE meetings (
    meeting_id           TEXT PRIMARY KEY,
    host_id              TEXT,
    started_at           BIGINT,
    ended_at             BIGINT,
    current_participants BIGINT NOT NULL DEFAULT 0,
    peak_participants    BIGINT NOT NULL DEFAULT 0,
    total_participants   BIGINT NOT NULL DEFAULT 0
);
CREATE INDEX meetings_started ON meetings (started_at);

-- One row per stay in a meeting (a participant id joins once).
CREATE TABLE participations (
    participant_id TEXT PRIMARY KEY,
    meeting_id     TEXT NOT NULL,
    user_id        TEXT,
    joined_at      BIGINT NOT NULL,
    left_at        BIGINT
);
CREATE INDEX participations_meeting ON participations (meeting_id);
CREATE INDEX participations_user ON participations (user_id);

-- Platform usage per hour (hour_start in Unix ms).
CREATE TABLE usage_hours (
    hour_start       BIGINT PRIMARY KEY,
    meetings_started BIGINT NOT NULL DEFAULT 0,
    joins            BIGINT NOT NULL DEFAULT 0,
    peak_concurrent  BIGINT NOT NULL DEFAULT 0
);

-- People in meetings right now, platform-wide (one row, id = 1).
CREATE TABLE platform_state (
    id         BIGINT PRIMARY KEY,
    concurrent BIGINT NOT NULL
);
INSERT INTO platform_state (id, concurrent) VALUES (1, 0);

-- Call quality per participant in 10-second buckets (the last sample of a bucket wins).
CREATE TABLE quality_buckets (
    participant_id TEXT NOT NULL,
    bucket_start   BIGINT NOT NULL,
    meeting_id     TEXT NOT NULL,
    quality        TEXT NOT NULL,
    ingress_loss   DOUBLE PRECISION NOT NULL,
    rtt_ms         DOUBLE PRECISION,
    egress_bps     BIGINT,
    PRIMARY KEY (participant_id, bucket_start)
);
CREATE INDEX quality_buckets_meeting ON quality_buckets (meeting_id, bucket_start);
