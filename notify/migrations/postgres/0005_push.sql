-- Web push. The VAPID key pair (P-256 private scalar, base64url), made at first
-- start unless NOTIFY_VAPID_PRIVATE_KEY is set; one row, id 'current'.
CREATE TABLE vapid_keys (
    id          TEXT PRIMARY KEY,
    private_key TEXT NOT NULL,
    created_at  BIGINT NOT NULL
);

-- Browsers' push subscriptions (PushSubscription.toJSON()); one row per endpoint.
CREATE TABLE push_subscriptions (
    id         TEXT PRIMARY KEY,
    user_id    TEXT NOT NULL,
    endpoint   TEXT NOT NULL UNIQUE,
    p256dh     TEXT NOT NULL,
    auth       TEXT NOT NULL,
    created_at BIGINT NOT NULL
);
CREATE INDEX push_subscriptions_user ON push_subscriptions (user_id);

-- Push messages to deliver, written in the same transaction as the event that
-- caused them; leased, retried and dead-lettered like mail_queue rows.
CREATE TABLE push_queue (
    id              TEXT PRIMARY KEY,
    subscription_id TEXT NOT NULL,
    payload         TEXT NOT NULL,
    urgency         TEXT NOT NULL,
    ttl_seconds     BIGINT NOT NULL,
    due_at          BIGINT NOT NULL,
    attempts        BIGINT NOT NULL DEFAULT 0,
    sent_at         BIGINT,
    failed_at       BIGINT,
    last_error      TEXT,
    created_at      BIGINT NOT NULL
);
CREATE INDEX push_queue_due ON push_queue (due_at) WHERE sent_at IS NULL AND failed_at IS NULL;
CREATE INDEX push_queue_subscription ON push_queue (subscription_id);

-- Push messages given up on after repeated failures.
CREATE TABLE push_dead_letters (
    push_id         TEXT PRIMARY KEY,
    subscription_id TEXT NOT NULL,
    attempts        BIGINT NOT NULL,
    last_error      TEXT NOT NULL,
    failed_at       BIGINT NOT NULL
);

-- The push switch from user.preferences_changed (1 = allowed).
ALTER TABLE people ADD COLUMN push_enabled BIGINT NOT NULL DEFAULT 1;
