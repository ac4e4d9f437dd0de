-- Accounts deleted in auth (`user.deleted`): a token of theirs still within its
-- lifetime must not re-create a profile, nor a late `user.registered` either.
CREATE TABLE deleted_users (
    user_id    TEXT PRIMARY KEY,
    deleted_at BIGINT NOT NULL
);
