-- The current session of a meeting, for the summary its host gets when it ends.
ALTER TABLE meeting_calendar ADD COLUMN session_started_at BIGINT;
ALTER TABLE meeting_calendar ADD COLUMN session_participants BIGINT NOT NULL DEFAULT 0;
