-- Bus events already handled (servicekit::bus::claim_event), so a redelivery is a no-op.
CREATE TABLE processed_events (
    event_id     TEXT PRIMARY KEY,
    processed_at BIGINT NOT NULL
);
