-- 050: notifications (issue #6): channels, routing, silences, the alert store, the
-- notification log (what each group last told each channel), the outbox and its attempts.
-- See docs/notifications.md.

CREATE TABLE notify_channels (
    id            serial PRIMARY KEY,
    name          text NOT NULL UNIQUE CHECK (name ~ '^[A-Za-z0-9_.-]{1,64}$'),
    kind          text NOT NULL,
    -- Per-kind settings, secrets included (bot tokens, SMTP password): readable by admins only.
    settings      jsonb NOT NULL DEFAULT '{}'::jsonb,
    send_resolved boolean NOT NULL DEFAULT true,
    language      text NOT NULL DEFAULT 'en' CHECK (language IN ('en', 'zh-CN')),
    -- NULL: the built-in template for this kind and language.
    title_template text,
    body_template  text,
    enabled       boolean NOT NULL DEFAULT true,
    -- Whether the channel receives alerts routed to "*" (a personal channel used only by
    -- subscriptions does not).
    catch_all     boolean NOT NULL DEFAULT true,
    created_by    text NOT NULL DEFAULT '',
    created_at    timestamptz NOT NULL DEFAULT now(),
    updated_at    timestamptz NOT NULL DEFAULT now()
);

-- One row: the route tree and inhibition rules as Alertmanager-format YAML.
CREATE TABLE notify_routing (
    id         integer PRIMARY KEY DEFAULT 1 CHECK (id = 1),
    document   text NOT NULL,
    updated_by text NOT NULL DEFAULT '',
    updated_at timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE notify_silences (
    id         uuid PRIMARY KEY,
    matchers   jsonb NOT NULL,
    starts_at  timestamptz NOT NULL,
    ends_at    timestamptz NOT NULL,
    created_by text NOT NULL,
    comment    text NOT NULL DEFAULT '',
    updated_at timestamptz NOT NULL DEFAULT now(),
    CHECK (ends_at > starts_at)
);
CREATE INDEX notify_silences_ends_at ON notify_silences (ends_at);

-- Per-user subscriptions: alerts matching `matchers` also go to `channel_id`.
CREATE TABLE notify_subscriptions (
    id         serial PRIMARY KEY,
    user_id    integer NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    channel_id integer NOT NULL REFERENCES notify_channels (id) ON DELETE CASCADE,
    matchers   jsonb NOT NULL DEFAULT '[]'::jsonb,
    created_at timestamptz NOT NULL DEFAULT now()
);

-- The alert store: every alert received and not yet resolved-and-notified, so a restarted
-- collector resumes its groups without waiting for the rules to re-send.
CREATE TABLE notify_alerts (
    fingerprint   text PRIMARY KEY,
    labels        jsonb NOT NULL,
    annotations   jsonb NOT NULL,
    starts_at     timestamptz NOT NULL,
    ends_at       timestamptz NOT NULL,
    ends_given    boolean NOT NULL,
    generator_url text NOT NULL DEFAULT '',
    updated_at    timestamptz NOT NULL
);

-- Alert history for the UI: one row per firing episode.
CREATE TABLE notify_alert_history (
    fingerprint  text NOT NULL,
    starts_at    timestamptz NOT NULL,
    ends_at      timestamptz,
    alertname    text NOT NULL,
    labels       jsonb NOT NULL,
    annotations  jsonb NOT NULL,
    PRIMARY KEY (fingerprint, starts_at)
);
CREATE INDEX notify_alert_history_starts_at ON notify_alert_history (starts_at DESC);

-- The notification log (Alertmanager's nflog): per group and channel, what was last sent.
-- Written in the same transaction as the outbox row, so a restart neither loses nor repeats.
CREATE TABLE notify_log (
    group_key   text NOT NULL,
    channel_id  integer NOT NULL REFERENCES notify_channels (id) ON DELETE CASCADE,
    firing      text[] NOT NULL,
    resolved    text[] NOT NULL,
    notified_at timestamptz NOT NULL,
    PRIMARY KEY (group_key, channel_id)
);

CREATE TABLE notify_outbox (
    id              bigserial PRIMARY KEY,
    channel_id      integer NOT NULL REFERENCES notify_channels (id) ON DELETE CASCADE,
    group_key       text NOT NULL,
    -- The notification in Alertmanager's webhook payload shape (version 4).
    payload         jsonb NOT NULL,
    state           text NOT NULL DEFAULT 'pending'
                    CHECK (state IN ('pending', 'sending', 'sent', 'failed')),
    attempts        integer NOT NULL DEFAULT 0,
    created_at      timestamptz NOT NULL,
    next_attempt_at timestamptz NOT NULL,
    -- A claim expires, so a row whose sender crashed mid-send is taken up again.
    claimed_until   timestamptz,
    sent_at         timestamptz,
    last_error      text
);
CREATE INDEX notify_outbox_due ON notify_outbox (channel_id, next_attempt_at)
    WHERE state IN ('pending', 'sending');
CREATE INDEX notify_outbox_created_at ON notify_outbox (created_at DESC);

CREATE TABLE notify_attempts (
    id          bigserial PRIMARY KEY,
    outbox_id   bigint REFERENCES notify_outbox (id) ON DELETE CASCADE,
    channel_id  integer REFERENCES notify_channels (id) ON DELETE CASCADE,
    started_at  timestamptz NOT NULL,
    duration_ms integer NOT NULL,
    ok          boolean NOT NULL,
    -- e.g. "HTTP 200", "timeout", "250 OK"
    status      text NOT NULL DEFAULT '',
    error       text
);
CREATE INDEX notify_attempts_started_at ON notify_attempts (started_at DESC);
