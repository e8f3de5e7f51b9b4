-- When each user was last active (PostgreSQL). Keep in step with ../sqlite/0006_user_activity.sql.
-- Unix seconds (UTC), like every time in this schema; NULL until the user's first activity
-- (a login, a request with their session or one of their tokens, their server's activity
-- report). It only ever moves forward (see `Store::record_user_activity`). Accounts from
-- before this column start with NULL: JupyterHub's idle culler then judges them by `created`.
ALTER TABLE users ADD COLUMN last_activity BIGINT;
