-- Profiles, preferences and avatars of the users service.
-- TEXT ids (UUID strings of auth's accounts), BIGINT Unix-millisecond timestamps,
-- preferences as one JSON text (read and written whole by the service).

CREATE TABLE profiles (
    user_id        TEXT PRIMARY KEY,
    display_name   TEXT NOT NULL,
    time_zone      TEXT NOT NULL,                    -- IANA name, checked by chrono-tz
    locale         TEXT NOT NULL,                    -- BCP 47 tag such as `en` or `pt-BR`
    bio            TEXT NOT NULL,
    preferences    TEXT NOT NULL,                    -- JSON, see domain::Preferences
    avatar_version TEXT,                             -- NULL: no avatar, the generated one is served
    created_at     BIGINT NOT NULL,
    updated_at     BIGINT NOT NULL
);

-- The re-encoded avatar images (PNG), one row per size.
CREATE TABLE avatars (
    user_id      TEXT NOT NULL REFERENCES profiles (user_id) ON DELETE CASCADE,
    size         BIGINT NOT NULL,                    -- square side in pixels (64, 256)
    content_type TEXT NOT NULL,
    data         BLOB  NOT NULL,
    PRIMARY KEY (user_id, size)
);
