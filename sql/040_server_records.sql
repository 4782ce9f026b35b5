-- 040: what VPS owners track about each server (issue #5 item 4), and whether the public
-- status page shows it. The scrape URL stays in servers.url (the scrape loop's contract);
-- address/port/scheme/metrics_path are what the edit form shows and builds that URL from.

ALTER TABLE servers
    ADD COLUMN address          text NOT NULL DEFAULT '',
    ADD COLUMN metrics_port     integer CHECK (metrics_port BETWEEN 1 AND 65535),
    ADD COLUMN command_port     integer CHECK (command_port BETWEEN 1 AND 65535),
    ADD COLUMN scheme           text NOT NULL DEFAULT 'http' CHECK (scheme IN ('http', 'https')),
    ADD COLUMN metrics_path     text NOT NULL DEFAULT '/metrics',
    ADD COLUMN provider         text NOT NULL DEFAULT '',
    -- ISO 3166-1 alpha-2, upper case, for the flag; region is a free label ("Tokyo", "US-West").
    ADD COLUMN country_code     text NOT NULL DEFAULT '' CHECK (country_code ~ '^([A-Z]{2})?$'),
    ADD COLUMN region           text NOT NULL DEFAULT '',
    ADD COLUMN purchase_url     text NOT NULL DEFAULT '' CHECK (purchase_url ~ '^(https?://.*)?$'),
    ADD COLUMN price            numeric(12, 2) CHECK (price >= 0),
    ADD COLUMN currency         text NOT NULL DEFAULT '' CHECK (currency ~ '^([A-Z]{3})?$'),
    ADD COLUMN billing_cycle    text NOT NULL DEFAULT ''
        CHECK (billing_cycle IN ('', 'monthly', 'quarterly', 'semiannual', 'yearly',
                                 'biennial', 'triennial', 'once')),
    ADD COLUMN expires_on       date,
    ADD COLUMN notes            text NOT NULL DEFAULT '',
    ADD COLUMN route            text NOT NULL DEFAULT '',
    ADD COLUMN public           boolean NOT NULL DEFAULT false,
    -- Monthly traffic accounting (collector/traffic.py). NULL quota means no limit.
    ADD COLUMN traffic_quota_bytes bigint CHECK (traffic_quota_bytes > 0),
    ADD COLUMN traffic_reset_day integer NOT NULL DEFAULT 1
        CHECK (traffic_reset_day BETWEEN 1 AND 31),
    ADD COLUMN traffic_mode     text NOT NULL DEFAULT 'sum'
        CHECK (traffic_mode IN ('in', 'out', 'sum', 'max')),
    ADD COLUMN updated_at       timestamptz NOT NULL DEFAULT now();

-- A server's traffic in one accounting period. The last counter readings per interface are
-- kept beside the totals, so a restarted collector continues the month where it stopped:
-- growth since the stored reading is counted, a smaller reading means the counter restarted.
CREATE TABLE server_traffic (
    server_id    integer NOT NULL REFERENCES servers (id) ON DELETE CASCADE,
    period_start date NOT NULL,
    rx_bytes     double precision NOT NULL DEFAULT 0,
    tx_bytes     double precision NOT NULL DEFAULT 0,
    -- {"eth0": [rx_counter, tx_counter], ...} at last_ts, and the boot time seen then.
    counters     jsonb NOT NULL DEFAULT '{}'::jsonb,
    boot_time    double precision,
    last_ts      timestamptz,
    PRIMARY KEY (server_id, period_start)
);
