-- 031: API tokens for scripts (issue #5, #8). A token acts as its user (same role, same
-- servers). Only the SHA-256 of the 256-bit random token is stored; it is shown once.

CREATE TABLE api_tokens (
    id           serial PRIMARY KEY,
    user_id      integer NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    name         text NOT NULL CHECK (length(name) BETWEEN 1 AND 100),
    token_hash   bytea NOT NULL UNIQUE,
    -- The first characters of the token, so a person can tell their tokens apart.
    prefix       text NOT NULL,
    created_at   timestamptz NOT NULL DEFAULT now(),
    expires_at   timestamptz,
    last_used_at timestamptz,
    revoked_at   timestamptz,
    UNIQUE (user_id, name)
);
CREATE INDEX api_tokens_user ON api_tokens (user_id);
