-- Accounts, sessions and tokens of the auth service.
-- Portable on purpose (the SQLite folder holds the same tables): TEXT ids (UUID
-- strings), BIGINT Unix-millisecond timestamps, NULL for "not yet".

CREATE TABLE users (
    id                TEXT PRIMARY KEY,
    email             TEXT NOT NULL UNIQUE,          -- normalised (Email::parse)
    display_name      TEXT NOT NULL,
    password_hash     TEXT NOT NULL,                 -- Argon2id PHC string
    email_verified_at BIGINT,
    created_at        BIGINT NOT NULL,
    updated_at        BIGINT NOT NULL
);

-- One sign-in, and the family of refresh tokens it started (RFC 9700 rotation).
CREATE TABLE sessions (
    id             TEXT PRIMARY KEY,
    user_id        TEXT NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    created_at     BIGINT NOT NULL,
    expires_at     BIGINT NOT NULL,                  -- absolute lifetime of the family
    revoked_at     BIGINT,
    revoked_reason TEXT                              -- logout, logout_all, reuse, password_changed, password_reset
);
CREATE INDEX sessions_by_user ON sessions (user_id);
CREATE INDEX sessions_by_revocation ON sessions (revoked_at);

-- Refresh tokens, by SHA-256 of the opaque value. A used token stays (used_at set)
-- so presenting it again is recognised as reuse.
CREATE TABLE refresh_tokens (
    token_hash TEXT PRIMARY KEY,
    session_id TEXT NOT NULL REFERENCES sessions (id) ON DELETE CASCADE,
    created_at BIGINT NOT NULL,
    expires_at BIGINT NOT NULL,
    used_at    BIGINT
);
CREATE INDEX refresh_tokens_by_session ON refresh_tokens (session_id);

-- Access tokens signed out before they expire.
CREATE TABLE revoked_access_tokens (
    jti        TEXT PRIMARY KEY,
    expires_at BIGINT NOT NULL
);
CREATE INDEX revoked_access_tokens_by_expiry ON revoked_access_tokens (expires_at);

-- Ed25519 signing keys. The newest unretired key signs; every key whose retire_at is
-- NULL or in the future is published in the JWKS.
CREATE TABLE signing_keys (
    kid         TEXT PRIMARY KEY,
    algorithm   TEXT NOT NULL,
    private_key TEXT NOT NULL,                       -- base64 PKCS#8 v1 document
    public_key  TEXT NOT NULL,                       -- base64url raw 32-byte key (JWK "x")
    created_at  BIGINT NOT NULL,
    retire_at   BIGINT
);

-- Email-verification and password-reset tokens, by SHA-256 of the value.
CREATE TABLE one_time_tokens (
    token_hash TEXT PRIMARY KEY,
    purpose    TEXT NOT NULL,                        -- verify_email, reset_password
    user_id    TEXT NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    created_at BIGINT NOT NULL,
    expires_at BIGINT NOT NULL,
    used_at    BIGINT
);
CREATE INDEX one_time_tokens_by_user ON one_time_tokens (user_id, purpose);

-- Transactional outbox: events written with the change that caused them, relayed to
-- the event bus later (issue 10). payload is JSON text.
CREATE TABLE outbox (
    id           TEXT PRIMARY KEY,
    type         TEXT NOT NULL,
    payload      TEXT NOT NULL,
    created_at   BIGINT NOT NULL,
    published_at BIGINT
);
CREATE INDEX outbox_unpublished ON outbox (created_at) WHERE published_at IS NULL;
