-- 011 (storage, issue #4): the compact sample store. docs/storage.md explains the shape.
--
-- samples        raw rows, range-partitioned by the hour. Partitions are created ahead and,
--                once their hour is closed, compacted into sample_chunks and dropped.
-- samples_default  the DEFAULT partition: rows whose hour has no partition (late rows from
--                a spool replay or a backfill, and every row of the 001 table, which becomes
--                this partition without being copied); maintenance merges them into chunks.
-- sample_chunks  one row per series and hour: timestamps as millisecond deltas, values as
--                float8, both arrays compressed in line (pglz) by PostgreSQL itself.
-- rollup_1m      per series and hour: per-minute min, max, sum, count, last and counter
--                increase (resets handled), for charts over long ranges.
-- rollup_1h      per series and UTC day: the same per hour, built when a day is closed.

ALTER TABLE samples RENAME TO samples_default;
ALTER TABLE samples_default RENAME CONSTRAINT samples_pkey TO samples_default_pkey;

CREATE TABLE samples (
    series_id bigint NOT NULL,
    ts        timestamptz NOT NULL,
    value     double precision NOT NULL,
    PRIMARY KEY (series_id, ts)
) PARTITION BY RANGE (ts);
ALTER TABLE samples ATTACH PARTITION samples_default DEFAULT;
-- Maintenance looks late rows up by hour.
CREATE INDEX samples_default_ts ON samples_default (ts);

-- STORAGE MAIN + a low toast_tuple_target: PostgreSQL compresses the arrays as soon as a row
-- passes 128 bytes and keeps them in the row (no TOAST pointer and TOAST index per chunk).
CREATE TABLE sample_chunks (
    series_id   bigint NOT NULL,
    block_start timestamptz NOT NULL,
    first_ms    bigint NOT NULL,      -- Unix milliseconds of the first sample
    last_ms     bigint NOT NULL,      -- and of the last
    last_value  double precision,     -- last value that is not NaN: increase across hours
    deltas      integer[] NOT NULL,   -- milliseconds since the previous sample (first: 0)
    vals        double precision[] NOT NULL,
    PRIMARY KEY (series_id, block_start)
) WITH (toast_tuple_target = 128);
ALTER TABLE sample_chunks ALTER deltas SET STORAGE MAIN, ALTER vals SET STORAGE MAIN;

CREATE TABLE rollup_1m (
    series_id   bigint NOT NULL,
    block_start timestamptz NOT NULL,
    slots       smallint[] NOT NULL,  -- minute within the hour of each entry below
    mins        double precision[] NOT NULL,
    maxs        double precision[] NOT NULL,
    sums        double precision[] NOT NULL,
    counts      integer[] NOT NULL,
    lasts       double precision[] NOT NULL,
    incs        double precision[] NOT NULL,  -- counter increase, resets handled
    PRIMARY KEY (series_id, block_start)
) WITH (toast_tuple_target = 128);
ALTER TABLE rollup_1m
    ALTER slots SET STORAGE MAIN, ALTER mins SET STORAGE MAIN, ALTER maxs SET STORAGE MAIN,
    ALTER sums SET STORAGE MAIN, ALTER counts SET STORAGE MAIN, ALTER lasts SET STORAGE MAIN,
    ALTER incs SET STORAGE MAIN;

CREATE TABLE rollup_1h (
    series_id   bigint NOT NULL,
    day         timestamptz NOT NULL,
    slots       smallint[] NOT NULL,  -- hour within the UTC day
    mins        double precision[] NOT NULL,
    maxs        double precision[] NOT NULL,
    sums        double precision[] NOT NULL,
    counts      integer[] NOT NULL,
    lasts       double precision[] NOT NULL,
    incs        double precision[] NOT NULL,
    PRIMARY KEY (series_id, day)
) WITH (toast_tuple_target = 128);
ALTER TABLE rollup_1h
    ALTER slots SET STORAGE MAIN, ALTER mins SET STORAGE MAIN, ALTER maxs SET STORAGE MAIN,
    ALTER sums SET STORAGE MAIN, ALTER counts SET STORAGE MAIN, ALTER lasts SET STORAGE MAIN,
    ALTER incs SET STORAGE MAIN;

-- Watermarks of the maintenance: hours before `compacted_until` are in chunks and rollup_1m;
-- days before `daily_until` are in rollup_1h.
CREATE TABLE storage_state (
    name  text PRIMARY KEY,
    value timestamptz NOT NULL
);
