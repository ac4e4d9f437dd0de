-- Events for other services (`user.preferences_changed`), written in the same
-- transaction as the change and published by servicekit's outbox relay.
CREATE TABLE outbox (
    id           TEXT PRIMARY KEY,
    type         TEXT NOT NULL,
    payload      TEXT NOT NULL,
    created_at   BIGINT NOT NULL,
    published_at BIGINT
);
CREATE INDEX outbox_unpublished ON outbox (created_at) WHERE published_at IS NULL;
