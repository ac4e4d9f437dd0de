-- People notify knows from user.registered, and their channel switches from
-- user.preferences_changed (1 = allowed). Looked up by email for invitations.
CREATE TABLE people (
    user_id        TEXT PRIMARY KEY,
    email          TEXT NOT NULL DEFAULT '',
    email_enabled  BIGINT NOT NULL DEFAULT 1,
    in_app_enabled BIGINT NOT NULL DEFAULT 1
);
CREATE INDEX people_email ON people (email);
