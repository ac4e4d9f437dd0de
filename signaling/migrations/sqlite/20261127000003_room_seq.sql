-- Per-meeting order of meeting events on the bus: each meeting change takes the
-- next number of its meeting (last_seq + 1) in the transaction that writes its
-- outbox row; the relay sends it as the envelope's `seq`. Quality samples have none.
CREATE TABLE room_sequences (
    meeting_id TEXT PRIMARY KEY,
    last_seq   BIGINT NOT NULL
);
ALTER TABLE outbox ADD COLUMN room_seq BIGINT;
