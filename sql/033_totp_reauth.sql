-- 033: TOTP second factor (RFC 6238) and step-up re-authentication (issue #5, #7).

ALTER TABLE users
    -- Base32 secret; set while enrolling, active only once totp_enabled is true.
    ADD COLUMN totp_secret text,
    ADD COLUMN totp_enabled boolean NOT NULL DEFAULT false,
    -- The last time step accepted: a code is never accepted twice (RFC 6238 section 5.2).
    ADD COLUMN totp_last_step bigint NOT NULL DEFAULT 0,
    ADD COLUMN password_changed_at timestamptz NOT NULL DEFAULT now();

ALTER TABLE sessions
    -- When the user last proved who they are in this session (login or step-up).
    ADD COLUMN authenticated_at timestamptz NOT NULL DEFAULT now(),
    -- A session waiting for the TOTP code after the right password: it logs nobody in yet.
    ADD COLUMN mfa_pending boolean NOT NULL DEFAULT false,
    ADD COLUMN address text;

-- Browsers that completed a login as a user (a random cookie; only its SHA-256 is here).
-- They are exempt from the per-username failure ceiling, so an attack on a username from many
-- addresses does not lock its owner out (web/auth.py LoginLimiter).
CREATE TABLE trusted_devices (
    token_hash bytea PRIMARY KEY,
    user_id    integer NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    created_at timestamptz NOT NULL DEFAULT now(),
    expires_at timestamptz NOT NULL
);
CREATE INDEX trusted_devices_user ON trusted_devices (user_id);
