-- 070 (rules, issue #8): alert states, so a restarted collector neither re-fires an alert nor
-- forgets how long one has been pending. One row per alert of an alerting rule; the group's
-- last evaluation tells how long the collector was away (Prometheus' for-state restore).

CREATE TABLE rule_alerts (
    group_key         text NOT NULL,          -- "file;group name"
    rule_name         text NOT NULL,
    labels_hash       bytea NOT NULL,         -- sha256 of the sorted label set
    labels            jsonb NOT NULL,
    annotations       jsonb NOT NULL,
    state             text NOT NULL CHECK (state IN ('inactive', 'pending', 'firing')),
    active_at         timestamptz NOT NULL,
    fired_at          timestamptz,
    resolved_at       timestamptz,
    last_sent_at      timestamptz,
    keep_firing_since timestamptz,
    value             double precision NOT NULL,
    PRIMARY KEY (group_key, rule_name, labels_hash)
);

CREATE TABLE rule_group_state (
    group_key       text PRIMARY KEY,
    last_evaluation timestamptz NOT NULL
);
