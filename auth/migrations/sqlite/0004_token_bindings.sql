-- What each API token was issued for, as columns (SQLite).
-- Keep in step with ../postgres/0004_token_bindings.sql. The hub finds a server's own token
-- and the OAuth access tokens by these columns, never by the note (a prefix match on notes
-- let `alice/` match `alice/x`):
-- - `server_name`: set on a server's own API token (`JUPYTERHUB_API_TOKEN`), the owner's
--   server it belongs to ('' is the default server); at most one per (user, server).
-- - `oauth_client`: set on an access token the hub's OAuth provider issued, the client
--   (a server) it was issued to.
ALTER TABLE api_tokens ADD COLUMN server_name TEXT;
ALTER TABLE api_tokens ADD COLUMN oauth_client TEXT;
-- Tokens issued before this migration say what they are in their note only.
UPDATE api_tokens
SET server_name = substr(note, instr(note, '/') + 1)
WHERE substr(note, 1, 14) = 'server token: ' AND instr(note, '/') > 0;
UPDATE api_tokens
SET oauth_client = substr(note, 8)
WHERE substr(note, 1, 7) = 'oauth: ';
-- Racing starts could leave two tokens for one server: the newest is the one handed out last.
DELETE FROM api_tokens
WHERE server_name IS NOT NULL AND id NOT IN (
    SELECT max(id) FROM api_tokens WHERE server_name IS NOT NULL GROUP BY user_id, server_name
);
CREATE UNIQUE INDEX api_tokens_server ON api_tokens (user_id, server_name)
WHERE server_name IS NOT NULL;
CREATE INDEX api_tokens_oauth_client ON api_tokens (oauth_client)
WHERE oauth_client IS NOT NULL;
