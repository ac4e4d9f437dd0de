-- Sign-in with OpenID providers, and account deletion.

-- Who a provider says a person is (provider name, its `sub`) → our account.
CREATE TABLE user_identities (
    provider      TEXT NOT NULL,
    subject       TEXT NOT NULL,
    user_id       TEXT NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    email         TEXT,                               -- as the provider said at linking
    created_at    INTEGER NOT NULL,
    last_login_at INTEGER NOT NULL,
    PRIMARY KEY (provider, subject)
);
CREATE INDEX user_identities_by_user ON user_identities (user_id);

-- Sign-ins in progress: the state (by SHA-256), the nonce and PKCE verifier sent
-- with it, and the browser it belongs to (SHA-256 of its cookie). Single use.
CREATE TABLE oauth_flows (
    state_hash    TEXT PRIMARY KEY,
    provider      TEXT NOT NULL,
    nonce         TEXT NOT NULL,
    code_verifier TEXT NOT NULL,
    browser_hash  TEXT NOT NULL,
    created_at    INTEGER NOT NULL,
    expires_at    INTEGER NOT NULL,
    used_at       INTEGER
);
CREATE INDEX oauth_flows_by_expiry ON oauth_flows (expires_at);

-- A deleted account keeps its row (emptied: no email, name or password) until its
-- revoked sessions no longer matter, then the purge removes it.
ALTER TABLE users ADD COLUMN deleted_at INTEGER;
