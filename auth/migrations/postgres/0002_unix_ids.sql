-- The numeric UID/GID a user's notebook containers run with (PostgreSQL).
-- Keep in step with ../sqlite/0002_unix_ids.sql. A row exists only for users who have one
-- (from OpenID Connect claims or set by an admin); NULL means "not known".
CREATE TABLE user_unix_ids (
    user_id BIGINT PRIMARY KEY REFERENCES users (id) ON DELETE CASCADE,
    uid BIGINT,
    gid BIGINT
);
