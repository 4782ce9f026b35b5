-- 030: per-server access (issue #5). Admins see every server; operators and viewers see the
-- servers granted to them one by one, the servers of the groups granted to them, or every
-- server when all_servers is set. A grant never widens what a role may do, only where.

ALTER TABLE users ADD COLUMN all_servers boolean NOT NULL DEFAULT false;

CREATE TABLE user_server_grants (
    user_id    integer NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    server_id  integer NOT NULL REFERENCES servers (id) ON DELETE CASCADE,
    created_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (user_id, server_id)
);
CREATE INDEX user_server_grants_server ON user_server_grants (server_id);

-- Groups are servers.group_name values; a grant of a group covers servers added to it later.
CREATE TABLE user_group_grants (
    user_id    integer NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    group_name text NOT NULL CHECK (length(group_name) BETWEEN 1 AND 200),
    created_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (user_id, group_name)
);
