"""Migrations and the sample writer against a real PostgreSQL database."""

from __future__ import annotations

import json
import secrets
import urllib.parse
from collections.abc import AsyncIterator
from datetime import UTC, datetime

import asyncpg
import pytest

from vpsmon.collector.scrape.loop import ScrapeResult
from vpsmon.collector.scrape.parse import Sample
from vpsmon.collector.scrape.target import Target
from vpsmon.collector.storage.db import DatabaseUnavailable, connect_pool, redact
from vpsmon.collector.storage.migrate import available, migrate
from vpsmon.collector.storage.writer import SampleWriter

T0 = 1_700_000_000.0


async def add_server(
    pool: asyncpg.Pool, name: str = "web-1", url: str = "http://10.0.0.5:9190/metrics"
) -> Target:
    server_id = await pool.fetchval(
        "INSERT INTO servers (name, url, labels) VALUES ($1, $2, $3::jsonb) RETURNING id",
        name,
        url,
        json.dumps({"env": "prod"}),
    )
    return Target(server_id, name, url, 15.0, 10.0, {"env": "prod"})


def good_result(target: Target, ts: float = T0) -> ScrapeResult:
    return ScrapeResult(
        target,
        ts,
        0.125,
        [
            Sample("node_load1", (), 0.5),
            Sample("node_cpu_seconds_total", (("cpu", "0"), ("mode", "idle")), 100.0),
        ],
    )


async def stored(pool: asyncpg.Pool) -> dict[tuple[str, str], list[tuple[datetime, float]]]:
    """{(metric, labels as canonical JSON): [(ts, value), …]} of everything in samples."""
    rows = await pool.fetch(
        "SELECT s.metric, s.labels::text AS labels, x.ts, x.value"
        " FROM samples x JOIN series s ON s.id = x.series_id ORDER BY s.metric, x.ts"
    )
    out: dict[tuple[str, str], list[tuple[datetime, float]]] = {}
    for r in rows:
        key = (r["metric"], json.dumps(json.loads(r["labels"]), sort_keys=True))
        out.setdefault(key, []).append((r["ts"], r["value"]))
    return out


def key(metric: str, **labels: str) -> tuple[str, str]:
    return (metric, json.dumps(labels, sort_keys=True))


async def test_migrate_applies_001_then_nothing(database_url: str) -> None:
    pool = await connect_pool(database_url)
    try:
        applied = await migrate(pool)
        assert [m.version for m in applied][:1] == [1]
        assert [m.version for m in applied] == [m.version for m in available()]
        assert applied[0].name == "initial"
        assert await migrate(pool) == []
        versions = [r["version"] for r in await pool.fetch("SELECT version FROM schema_migrations")]
        assert versions == [m.version for m in available()]
        tables = {
            r["tablename"]
            for r in await pool.fetch("SELECT tablename FROM pg_tables WHERE schemaname='public'")
        }
        assert {"servers", "users", "sessions", "series", "samples"} <= tables
    finally:
        await pool.close()


async def test_connecting_to_a_missing_database_names_the_redacted_url(database_url: str) -> None:
    parts = urllib.parse.urlsplit(database_url)
    user, _, hostport = parts.netloc.rpartition("@")
    netloc = f"{user.split(':')[0] or 'postgres'}:hunter2@{hostport}"
    url = urllib.parse.urlunsplit(parts._replace(netloc=netloc, path="/vpsmon_no_such_database"))
    with pytest.raises(DatabaseUnavailable) as caught:
        await connect_pool(url, connect_timeout=5)
    assert "vpsmon_no_such_database" in str(caught.value)
    assert "hunter2" not in str(caught.value)


def test_redact_hides_the_password() -> None:
    assert redact("postgresql://vpsmon:s3cret@db:5432/vpsmon") == (
        "postgresql://vpsmon:***@db:5432/vpsmon"
    )
    assert redact("postgresql://db/vpsmon") == "postgresql://db/vpsmon"


async def test_the_writer_stores_samples_and_synthetic_series_with_target_labels(
    pool: asyncpg.Pool,
) -> None:
    target = await add_server(pool)
    writer = SampleWriter(pool, "node")
    await writer.append(good_result(target))
    assert writer.pending == 1
    assert await writer.flush() is True
    assert writer.pending == 0

    base = {"job": "node", "instance": "10.0.0.5:9190", "env": "prod"}
    ts = datetime.fromtimestamp(T0, UTC)
    assert await stored(pool) == {
        key("node_load1", **base): [(ts, 0.5)],
        key("node_cpu_seconds_total", cpu="0", mode="idle", **base): [(ts, 100.0)],
        key("up", **base): [(ts, 1.0)],
        key("scrape_duration_seconds", **base): [(ts, 0.125)],
        key("scrape_samples_scraped", **base): [(ts, 2.0)],
    }
    assert writer.written_samples == 5
    owners = {r["server_id"] for r in await pool.fetch("SELECT server_id FROM series")}
    assert owners == {target.server_id}


async def test_a_failed_scrape_stores_up_0_and_no_scraped_samples(pool: asyncpg.Pool) -> None:
    target = await add_server(pool)
    writer = SampleWriter(pool, "node")
    await writer.append(ScrapeResult(target, T0, 0.5, [], "timed out after 10s"))
    assert await writer.flush()
    base = {"job": "node", "instance": "10.0.0.5:9190", "env": "prod"}
    ts = datetime.fromtimestamp(T0, UTC)
    assert await stored(pool) == {
        key("up", **base): [(ts, 0.0)],
        key("scrape_duration_seconds", **base): [(ts, 0.5)],
        key("scrape_samples_scraped", **base): [(ts, 0.0)],
    }


async def test_a_replayed_batch_is_stored_exactly_once(pool: asyncpg.Pool) -> None:
    target = await add_server(pool)
    writer = SampleWriter(pool, "node")
    result = good_result(target)
    await writer.append(result)
    assert await writer.flush()
    # the same scrape again (a batch retried after a lost commit acknowledgement), in one
    # batch twice and in a later flush, and through a second writer with a cold series cache
    await writer.append(result)
    await writer.append(result)
    assert await writer.flush()
    other = SampleWriter(pool, "node")
    await other.append(result)
    assert await other.flush()
    assert await pool.fetchval("SELECT count(*) FROM samples") == 5
    assert await pool.fetchval("SELECT count(*) FROM series") == 5
    await writer.append(good_result(target, T0 + 15))
    assert await writer.flush()
    assert await pool.fetchval("SELECT count(*) FROM samples") == 10
    assert await pool.fetchval("SELECT count(*) FROM series") == 5


async def test_a_restarted_writer_looks_known_series_up_and_creates_only_new_ones(
    pool: asyncpg.Pool,
) -> None:
    target = await add_server(pool)
    writer = SampleWriter(pool, "node")
    await writer.append(good_result(target))
    assert await writer.flush()
    ids = dict(await pool.fetch("SELECT metric, id FROM series"))
    last_id = await pool.fetchval("SELECT last_value FROM series_id_seq")
    # A cold cache (a restarted collector): the known series are read, not inserted again
    # (an INSERT ... ON CONFLICT would spend a sequence value per known series), and only the
    # new series is created.
    restarted = SampleWriter(pool, "node")
    result = good_result(target, T0 + 15)
    result.samples.append(Sample("node_load5", (), 0.25))
    await restarted.append(result)
    assert await restarted.flush()
    assert await pool.fetchval("SELECT last_value FROM series_id_seq") == last_id + 1
    after = dict(await pool.fetch("SELECT metric, id FROM series"))
    assert {m: after[m] for m in ids} == ids
    assert set(after) - set(ids) == {"node_load5"}
    assert await pool.fetchval("SELECT count(*) FROM samples") == 11
    rows = await pool.fetch(
        "SELECT series_id, count(*) AS n FROM samples GROUP BY series_id ORDER BY series_id"
    )
    assert [r["n"] for r in rows] == [2] * 5 + [1]


async def test_last_seen_and_last_error_follow_the_latest_scrape(pool: asyncpg.Pool) -> None:
    target = await add_server(pool)
    writer = SampleWriter(pool, "node")
    await writer.append(good_result(target, T0))
    assert await writer.flush()
    row = await pool.fetchrow("SELECT last_seen_at, last_error FROM servers")
    assert row["last_seen_at"] == datetime.fromtimestamp(T0, UTC)
    assert row["last_error"] is None

    await writer.append(ScrapeResult(target, T0 + 15, 0.1, [], "connection failed: refused"))
    assert await writer.flush()
    row = await pool.fetchrow("SELECT last_seen_at, last_error FROM servers")
    assert row["last_seen_at"] == datetime.fromtimestamp(T0, UTC)  # last success kept
    assert row["last_error"] == "connection failed: refused"

    # two scrapes in one batch: the latest decides
    await writer.append(ScrapeResult(target, T0 + 30, 0.1, [], "timed out after 10s"))
    await writer.append(good_result(target, T0 + 45))
    assert await writer.flush()
    row = await pool.fetchrow("SELECT last_seen_at, last_error FROM servers")
    assert row["last_seen_at"] == datetime.fromtimestamp(T0 + 45, UTC)
    assert row["last_error"] is None


async def test_scraped_labels_clashing_with_target_labels_become_exported(
    pool: asyncpg.Pool,
) -> None:
    target = await add_server(pool)
    writer = SampleWriter(pool, "node")
    clash = Sample(
        "pushed_metric", (("env", "dev"), ("instance", "10.9.9.9:1"), ("job", "batch")), 1.0
    )
    await writer.append(ScrapeResult(target, T0, 0.1, [clash]))
    assert await writer.flush()
    labels = json.loads(
        await pool.fetchval("SELECT labels FROM series WHERE metric = 'pushed_metric'")
    )
    assert labels == {
        "job": "node",
        "instance": "10.0.0.5:9190",
        "env": "prod",
        "exported_job": "batch",
        "exported_instance": "10.9.9.9:1",
        "exported_env": "dev",
    }


async def test_samples_of_a_deleted_server_are_dropped_not_failed(pool: asyncpg.Pool) -> None:
    target = await add_server(pool)
    writer = SampleWriter(pool, "node")
    await writer.append(good_result(target))
    await pool.execute("DELETE FROM servers WHERE id = $1", target.server_id)
    assert await writer.flush() is True
    assert writer.pending == 0
    assert await pool.fetchval("SELECT count(*) FROM samples") == 0


async def test_the_write_queue_is_bounded_and_counts_what_it_drops(pool: asyncpg.Pool) -> None:
    target = await add_server(pool)
    writer = SampleWriter(pool, "node", max_pending=3)
    for i in range(5):
        await writer.append(good_result(target, T0 + 15 * i))
    assert writer.pending == 3
    assert writer.dropped == 2
    assert await writer.flush()
    times = {r["ts"] for r in await pool.fetch("SELECT DISTINCT ts FROM samples")}
    assert times == {datetime.fromtimestamp(T0 + 15 * i, UTC) for i in (2, 3, 4)}


class Outage:
    """Takes one test database offline for everyone, from a connection to another database."""

    def __init__(self, conn: asyncpg.Connection, database: str) -> None:
        self.conn = conn
        self.database = database

    async def start(self) -> None:
        await self.conn.execute(f'ALTER DATABASE "{self.database}" ALLOW_CONNECTIONS false')
        await self.conn.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = $1",
            self.database,
        )

    async def end(self) -> None:
        await self.conn.execute(f'ALTER DATABASE "{self.database}" ALLOW_CONNECTIONS true')


@pytest.fixture
async def outage(database_url: str) -> AsyncIterator[Outage]:
    parts = urllib.parse.urlsplit(database_url)
    database = parts.path.lstrip("/")
    conn = await asyncpg.connect(urllib.parse.urlunsplit(parts._replace(path="/postgres")))
    try:
        yield Outage(conn, database)
    finally:
        await Outage(conn, database).end()
        await conn.close()


async def test_a_flush_while_the_database_is_away_keeps_the_batch_for_later(
    pool: asyncpg.Pool, outage: Outage
) -> None:
    target = await add_server(pool)
    writer = SampleWriter(pool, "node")
    await writer.append(good_result(target, T0))
    assert await writer.flush()

    await writer.append(good_result(target, T0 + 15))
    await writer.append(good_result(target, T0 + 30))
    await outage.start()
    try:
        assert await writer.flush() is False
        assert writer.pending == 2
        assert await writer.flush() is False  # still away: still kept, in order
        assert writer.pending == 2
        await writer.append(good_result(target, T0 + 45))
    finally:
        await outage.end()

    assert await writer.flush() is True
    assert writer.pending == 0
    times = [r["ts"] for r in await pool.fetch("SELECT DISTINCT ts FROM samples ORDER BY ts")]
    assert times == [datetime.fromtimestamp(T0 + 15 * i, UTC) for i in range(4)]
    assert await pool.fetchval("SELECT count(*) FROM samples") == 4 * 5
    last_seen = await pool.fetchval("SELECT last_seen_at FROM servers")
    assert last_seen == datetime.fromtimestamp(T0 + 45, UTC)


async def test_a_samples_transaction_that_fails_after_new_series_leaves_no_dangling_ids(
    pool: asyncpg.Pool, database_url: str
) -> None:
    """New series are committed ahead of their samples; a samples transaction that fails
    after them stores nothing, and the retry stores every sample once against those ids."""
    target = await add_server(pool)
    # The writer's own pool gives up quickly on a row lock, so the samples transaction fails
    # after the new series were created (the servers UPDATE comes last in the transaction).
    writer_pool = await asyncpg.create_pool(
        database_url, min_size=1, max_size=2, server_settings={"lock_timeout": "200ms"}
    )
    blocker = await asyncpg.connect(database_url)
    try:
        writer = SampleWriter(writer_pool, "node")
        await writer.append(good_result(target))
        tx = blocker.transaction()
        await tx.start()
        await blocker.execute(
            "SELECT 1 FROM servers WHERE id = $1 FOR NO KEY UPDATE", target.server_id
        )
        try:
            assert await writer.flush() is False
            assert writer.pending == 1
        finally:
            await tx.rollback()
        assert await pool.fetchval("SELECT count(*) FROM series") == 5
        assert await pool.fetchval("SELECT count(*) FROM samples") == 0

        assert await writer.flush() is True
        assert await pool.fetchval("SELECT count(*) FROM series") == 5
        assert await pool.fetchval("SELECT count(*) FROM samples") == 5
        dangling = await pool.fetchval(
            "SELECT count(*) FROM samples WHERE series_id NOT IN (SELECT id FROM series)"
        )
        assert dangling == 0
    finally:
        await blocker.close()
        await writer_pool.close()


async def test_a_scrape_error_with_a_nul_byte_does_not_block_the_writer(
    pool: asyncpg.Pool,
) -> None:
    """PostgreSQL text cannot hold NUL; an exporter's garbage must not poison the queue."""
    target = await add_server(pool)
    writer = SampleWriter(pool, "node")
    await writer.append(
        ScrapeResult(target, T0, 0.1, [], "invalid exposition: invalid metric name:a\x00b 1")
    )
    await writer.append(
        ScrapeResult(target, T0 + 15, 0.1, [Sample("node_info", (("name", "a\x00b"),), 1.0)])
    )
    assert await writer.flush() is True
    assert writer.pending == 0
    assert await pool.fetchval("SELECT count(*) FROM samples") == 3 + 4
    await writer.append(
        ScrapeResult(target, T0 + 30, 0.1, [], "invalid exposition: invalid metric name:a\x00b 1")
    )
    assert await writer.flush() is True
    error = await pool.fetchval("SELECT last_error FROM servers")
    assert error.startswith("invalid exposition: invalid metric name:a")
    assert "\x00" not in error


async def test_a_scrape_the_database_refuses_is_dropped_alone_and_the_rest_is_stored(
    pool: asyncpg.Pool,
) -> None:
    target = await add_server(pool)
    writer = SampleWriter(pool, "node")
    # A metric name too long (and too random to compress) for a btree index entry:
    # PostgreSQL refuses the series row.
    poison = ScrapeResult(target, T0 + 15, 0.01, [Sample(secrets.token_hex(20_000), (), 1.0)])
    await writer.append(good_result(target, T0))
    await writer.append(poison)
    await writer.append(good_result(target, T0 + 30))
    assert await writer.flush() is True
    assert writer.pending == 0
    assert writer.rejected == 1
    times = [r["ts"] for r in await pool.fetch("SELECT DISTINCT ts FROM samples ORDER BY ts")]
    assert times == [datetime.fromtimestamp(T0, UTC), datetime.fromtimestamp(T0 + 30, UTC)]


async def test_a_bounded_series_cache_forgets_ids_and_finds_them_again(pool: asyncpg.Pool) -> None:
    """The id cache keeps at most series_cache_max series; a forgotten one is read back, not
    created again, and its samples still go to the series they belong to."""
    targets = [
        await add_server(pool, f"web-{i}", f"http://10.0.0.{i}:9190/metrics") for i in range(4)
    ]
    writer = SampleWriter(pool, "node", series_cache_max=8)
    for ts in (T0, T0 + 15):
        for target in targets:
            result = good_result(target, ts)
            if ts > T0:  # another shape: ids from the id cache, not the server's last scrape
                result.samples.append(Sample("node_load5", (), 0.25))
            await writer.append(result)
        assert await writer.flush()
    assert len(writer._series_ids) <= 8
    assert await pool.fetchval("SELECT count(*) FROM series") == 4 * 6
    assert await pool.fetchval("SELECT last_value FROM series_id_seq") == 4 * 6
    assert await pool.fetchval("SELECT count(*) FROM samples") == 4 * (5 + 6)
    per_series = await pool.fetch(
        "SELECT s.metric, s.labels->>'instance' AS instance, count(*) AS n"
        " FROM samples x JOIN series s ON s.id = x.series_id GROUP BY 1, 2"
    )
    assert sorted(r["n"] for r in per_series) == [1] * 4 + [2] * 20
    assert writer.duplicates == 0


async def test_batches_written_two_at_a_time_store_everything_once_and_the_latest_last_seen(
    pool: asyncpg.Pool, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With small batches a queue of 30 scrapes goes two batches at a time (never one server in
    both), every sample once, and each server's last_seen_at is its latest scrape."""
    from vpsmon.collector.storage import writer as writer_module

    monkeypatch.setattr(writer_module, "BATCH", 2)
    targets = [
        await add_server(pool, f"web-{i}", f"http://10.0.0.{i}:9190/metrics") for i in range(3)
    ]
    writer = SampleWriter(pool, "node")
    for k in range(10):
        for target in targets:
            await writer.append(good_result(target, T0 + 15 * k))
    assert await writer.flush()
    assert writer.pending == 0
    assert await pool.fetchval("SELECT count(*) FROM samples") == 30 * 5
    assert await pool.fetchval("SELECT count(DISTINCT (series_id, ts)) FROM samples") == 30 * 5
    assert writer.duplicates == 0
    seen = {r["last_seen_at"] for r in await pool.fetch("SELECT last_seen_at FROM servers")}
    assert seen == {datetime.fromtimestamp(T0 + 15 * 9, UTC)}
