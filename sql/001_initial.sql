-- 001: servers, accounts, sessions, series and samples (the first slice, issue #2).
-- See docs/storage.md for why the tables are shaped so.

CREATE TABLE servers (
    id           serial PRIMARY KEY,
    name         text NOT NULL CHECK (length(name) BETWEEN 1 AND 200),
    -- The exporter's metrics URL, e.g. http://10.0.0.5:9190/metrics.
    url          text NOT NULL UNIQUE CHECK (url ~ '^https?://'),
    group_name   text NOT NULL DEFAULT '',
    tags         text[] NOT NULL DEFAULT '{}',
    labels       jsonb NOT NULL DEFAULT '{}'::jsonb,
    created_at   timestamptz NOT NULL DEFAULT now(),
    -- Last scrape outcome, kept here so a restarted collector and other readers see it.
    last_seen_at timestamptz,
    last_error   text
);

CREATE TABLE users (
    id            serial PRIMARY KEY,
    username      text NOT NULL UNIQUE CHECK (username ~ '^[A-Za-z0-9_.@-]{1,64}$'),
    password_hash text NOT NULL,
    role          text NOT NULL CHECK (role IN ('admin', 'operator', 'viewer')),
    disabled      boolean NOT NULL DEFAULT false,
    created_at    timestamptz NOT NULL DEFAULT now()
);

-- Only a hash of the session token is stored: a leaked table does not log anyone in.
CREATE TABLE sessions (
    token_hash  bytea PRIMARY KEY,
    user_id     integer NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    csrf_token  text NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now(),
    expires_at  timestamptz NOT NULL
);
CREATE INDEX sessions_expires_at ON sessions (expires_at);

-- One row per distinct (metric name, label set). Samples point here by a small integer.
CREATE TABLE series (
    id          bigserial PRIMARY KEY,
    server_id   integer REFERENCES servers (id) ON DELETE CASCADE,
    metric      text NOT NULL,
    labels      jsonb NOT NULL,
    -- sha256 of the canonical "name{k="v",...}" form, sorted by label name.
    labels_hash bytea NOT NULL UNIQUE
);
CREATE INDEX series_server_metric ON series (server_id, metric);
CREATE INDEX series_metric ON series (metric);

-- Raw samples. The primary key makes a replayed batch idempotent (stored exactly once) and
-- clusters one series' range together for reads.
CREATE TABLE samples (
    series_id bigint NOT NULL,
    ts        timestamptz NOT NULL,
    value     double precision NOT NULL,
    PRIMARY KEY (series_id, ts)
);
