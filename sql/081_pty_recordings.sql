-- 081: recordings of web terminal sessions (issue #7): every PTY session opened through the
-- browser bridge is recorded as an asciicast v2 stream (collector/fleet/recordings.py) and
-- linked from its audit log entries ("pty.open", "pty.close" carry detail.recording).
-- Like the audit log, a recording outlives the user and server it names (names are copied).

CREATE TABLE pty_recordings (
    id          bigserial PRIMARY KEY,
    user_id     integer,
    username    text NOT NULL,
    server_id   integer,
    server_name text,
    started_at  timestamptz NOT NULL DEFAULT now(),
    ended_at    timestamptz,
    cols        integer NOT NULL CHECK (cols BETWEEN 1 AND 1000),
    rows        integer NOT NULL CHECK (rows BETWEEN 1 AND 1000),
    -- NULL until the session ends; -1 with a signal, like the exporter's ExitStatus.
    exit_code   integer,
    exit_signal integer,
    bytes_out   bigint NOT NULL DEFAULT 0,
    bytes_in    bigint NOT NULL DEFAULT 0,
    -- Set when the output passed the size cap: the session went on, the recording stopped.
    truncated   boolean NOT NULL DEFAULT false
);
CREATE INDEX pty_recordings_started ON pty_recordings (started_at DESC);
CREATE INDEX pty_recordings_user ON pty_recordings (user_id, started_at DESC);

-- The events, appended in order while the session runs (about once a second), so a collector
-- that dies mid-session keeps what was recorded until then. `events` is asciicast v2 event
-- lines ([seconds, "o"|"r", text] + newline).
CREATE TABLE pty_recording_chunks (
    recording_id bigint NOT NULL REFERENCES pty_recordings (id) ON DELETE CASCADE,
    seq          integer NOT NULL,
    events       text NOT NULL,
    PRIMARY KEY (recording_id, seq)
);
