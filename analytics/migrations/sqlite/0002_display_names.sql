-- The name a participant joined with (from meeting.participant_joined), so the
-- dashboard can label each person's quality timeline.
ALTER TABLE participations ADD COLUMN display_name TEXT;
