-- Signaling numbers each meeting's changes 1, 2, 3… (the envelope's seq). Per
-- meeting: the highest number seen, how many numbered events were counted, and how
-- many arrived after a later one. max_seq - seq_count events are missing so far.
ALTER TABLE meetings ADD COLUMN max_seq BIGINT NOT NULL DEFAULT 0;
ALTER TABLE meetings ADD COLUMN seq_count BIGINT NOT NULL DEFAULT 0;
ALTER TABLE meetings ADD COLUMN late_events BIGINT NOT NULL DEFAULT 0;
