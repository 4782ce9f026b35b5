-- 032: the audit log (issue #5, #7): who did what, where, when and from which address.
-- Rows outlive the users and servers they name (no foreign keys; the names are copied), and
-- an UPDATE is refused so an entry cannot be rewritten after the fact.

CREATE TABLE audit_log (
    id         bigserial PRIMARY KEY,
    at         timestamptz NOT NULL DEFAULT now(),
    user_id    integer,
    username   text,
    action     text NOT NULL CHECK (action ~ '^[a-z0-9_.-]{1,64}$'),
    server_id  integer,
    server_name text,
    address    text,
    success    boolean NOT NULL DEFAULT true,
    detail     jsonb NOT NULL DEFAULT '{}'::jsonb
);
CREATE INDEX audit_log_at ON audit_log (at DESC);
CREATE INDEX audit_log_user ON audit_log (user_id, at DESC);
CREATE INDEX audit_log_server ON audit_log (server_id, at DESC);
CREATE INDEX audit_log_action ON audit_log (action, at DESC);

CREATE FUNCTION audit_log_no_update() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'audit_log entries cannot be changed';
END;
$$;
CREATE TRIGGER audit_log_no_update BEFORE UPDATE ON audit_log
    FOR EACH ROW EXECUTE FUNCTION audit_log_no_update();
