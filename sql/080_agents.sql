-- 080: the command channel's enrolment (issue #7, docs/security.md "Enrolment").
--
-- agents: one row per enrolled server: where its command channel listens, the exporter
-- certificate recorded at enrolment and its pinned SHA-256 fingerprint, the command token
-- every call carries, and the management features the user ticked.
--
-- command_token is stored as is because the collector must present it on every call (a hash
-- could not be presented). It alone opens nothing: the exporter also requires, in the TLS
-- handshake, the collector's private key, which lives only in the collector's data dir
-- (identity/collector.key, mode 0600), never in the database. It is never shown in the UI,
-- the API, logs or the audit log.
CREATE TABLE agents (
    server_id            integer PRIMARY KEY REFERENCES servers (id) ON DELETE CASCADE,
    -- HOST:PORT or [IPv6]:PORT the collector dials.
    address              text NOT NULL CHECK (length(address) BETWEEN 3 AND 300),
    exporter_cert        text NOT NULL CHECK (exporter_cert LIKE '-----BEGIN CERTIFICATE-----%'),
    exporter_fingerprint text NOT NULL CHECK (exporter_fingerprint ~ '^sha256:[0-9a-f]{64}$'),
    command_token        text NOT NULL CHECK (length(command_token) >= 32),
    features             text[] NOT NULL DEFAULT '{}'
        CHECK (features <@ ARRAY['exec', 'pty', 'files', 'docker']::text[]),
    enrolled_at          timestamptz NOT NULL DEFAULT now(),
    -- Who created the enrolment token that was used (NULL: enrolled by a script or a test).
    enrolled_by          integer REFERENCES users (id) ON DELETE SET NULL
);

-- One-time enrolment tokens shown in the "add server" dialog. Only the SHA-256 of the 256-bit
-- random token is stored; it works once (used_at), until expires_at, for one server.
CREATE TABLE enrolment_tokens (
    id          serial PRIMARY KEY,
    token_hash  bytea NOT NULL UNIQUE,
    server_id   integer NOT NULL REFERENCES servers (id) ON DELETE CASCADE,
    features    text[] NOT NULL DEFAULT '{}'
        CHECK (features <@ ARRAY['exec', 'pty', 'files', 'docker']::text[]),
    created_by  integer REFERENCES users (id) ON DELETE SET NULL,
    created_at  timestamptz NOT NULL DEFAULT now(),
    expires_at  timestamptz NOT NULL,
    used_at     timestamptz,
    -- The exporter that used it (sha256:HEX), for the audit trail.
    used_by_fingerprint text
);
CREATE INDEX enrolment_tokens_server ON enrolment_tokens (server_id);
