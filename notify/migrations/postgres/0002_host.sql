-- Who hosts a meeting, for in-app alerts to the host.
ALTER TABLE meeting_calendar ADD COLUMN host_id TEXT;
