-- The OpenID Connect identities that may log into each account (PostgreSQL).
-- Keep in step with ../sqlite/0005_identities.sql. An identity is the provider's (issuer,
-- subject) pair: `sub` is stable for one user at one issuer, whatever name the provider shows
-- now, so a login is matched by it, never by the name. One identity belongs to one account
-- at most; an account may have several (one per provider, say). `provider` is the id of the
-- `[auth.oidc.<id>]` table it came through, for people to read; logins match on the issuer.
-- Accounts from before this table have none: an OpenID login binds one to an account
-- without a password and without identities of the same name (see proxy/src/hub/oidc.rs).
CREATE TABLE user_identities (
    user_id BIGINT NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    provider TEXT NOT NULL,
    issuer TEXT NOT NULL,
    subject TEXT NOT NULL,
    created BIGINT NOT NULL,
    PRIMARY KEY (issuer, subject)
);
CREATE INDEX user_identities_user_id ON user_identities (user_id);
