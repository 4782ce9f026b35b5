-- 020: where a server's target comes from and how to scrape it (issue #4, scrape half).
-- See docs/configuration.md "Targets" and docs/storage.md.

-- 'api': added in the UI or API, scraped while the row exists. 'static' (collector.yml) and
-- 'file' (a target file): scraped while the config names them; the row and its data stay
-- when the config drops them, until someone deletes the server.
ALTER TABLE servers ADD COLUMN source text NOT NULL DEFAULT 'api'
    CHECK (source IN ('api', 'static', 'file'));

-- Per-server scrape settings; NULL means the collector's default (scrape.interval/timeout).
ALTER TABLE servers ADD COLUMN scrape_interval double precision
    CHECK (scrape_interval > 0);
ALTER TABLE servers ADD COLUMN scrape_timeout double precision
    CHECK (scrape_timeout > 0 AND scrape_timeout <= coalesce(scrape_interval, scrape_timeout));

-- The exporter's certificate pinned at enrolment, as `vpsmon exporter fingerprint` prints it.
ALTER TABLE servers ADD COLUMN tls_fingerprint text
    CHECK (tls_fingerprint ~ '^sha256:[0-9a-f]{64}$');
ALTER TABLE servers ADD CONSTRAINT servers_fingerprint_needs_https
    CHECK (tls_fingerprint IS NULL OR url ~ '^https://');

-- Sent as `Authorization: Bearer …` to the exporter. The collector must be able to send it,
-- so it is stored as given; never returned by the JSON API.
ALTER TABLE servers ADD COLUMN bearer_token text
    CHECK (bearer_token IS NULL OR (length(bearer_token) BETWEEN 1 AND 4096
                                    AND bearer_token !~ '[\r\n]'));
