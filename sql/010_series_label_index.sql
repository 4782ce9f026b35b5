-- 010 (storage, issue #4): find series by label equality through an index.
-- The reader turns equality matchers into `labels @> '{"instance": "…"}'`, which this GIN
-- index answers; jsonb_path_ops keeps it about a third of the size of the default opclass.
CREATE INDEX IF NOT EXISTS series_labels ON series USING gin (labels jsonb_path_ops);
