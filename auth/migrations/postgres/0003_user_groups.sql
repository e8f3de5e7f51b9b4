-- The groups each user belongs to (PostgreSQL).
-- Keep in step with ../sqlite/0003_user_groups.sql. A group exists while it has members; it
-- decides which profiles (`allowed_groups`) a user may start. `source` says who asserted the
-- membership: `provider` (the OpenID groups claim, replaced at every login) or `admin` (the
-- REST API; kept across logins).
CREATE TABLE user_groups (
    user_id BIGINT NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    name TEXT NOT NULL,
    source TEXT NOT NULL CHECK (source IN ('provider', 'admin')),
    PRIMARY KEY (user_id, name)
);
CREATE INDEX user_groups_name ON user_groups (name);
