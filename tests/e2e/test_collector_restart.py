"""Issue #4's must-show, as a user would see it: `vpsmon collector run` stopped for two
minutes and started again leaves no gap beyond one scrape interval in the stored series.

Real processes (`vpsmon exporter run`, `vpsmon collector run`), real PostgreSQL; the gap is
read from the database. The collector scrapes every 5 s and the exporter collects every 5 s,
so two minutes stopped are 24 missed scrapes that only the backfill from the exporter's
/history can fill. This test takes about 2.5 minutes (most of it the two minutes stopped);
tests/collector/test_backfill.py covers the same mechanism in 20 s.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import asyncpg
import pytest

from tests.conftest import free_port
from tests.e2e.procs import Proc, base_env, wait_http

pytestmark = pytest.mark.e2e

INTERVAL = 5.0
STOPPED = 120.0
# One interval between stored points, plus what a timer on a busy machine may wake late.
ALLOWED_GAP = INTERVAL * 1.3
METRICS = ("node_load1", "node_memory_MemAvailable_bytes", "node_cpu_seconds_total")


async def stored_times(conn: asyncpg.Connection, metric: str) -> list[float]:
    """Times of every stored sample of ``metric`` (one series: the first cpu, mode idle)."""
    rows = await conn.fetch(
        "SELECT extract(epoch FROM s.ts)::float8 AS t FROM samples s"
        " JOIN series r ON r.id = s.series_id WHERE r.metric = $1"
        " AND (r.labels->>'mode' IS NULL OR (r.labels->>'mode' = 'idle'"
        "      AND r.labels->>'cpu' = '0'))"
        " AND s.value = s.value ORDER BY s.ts",
        metric,
    )
    return [r["t"] for r in rows]


def largest_gap(times: list[float]) -> tuple[float, float]:
    gaps = [(b - a, a) for a, b in zip(times, times[1:], strict=False)]
    return max(gaps) if gaps else (0.0, 0.0)


def start_collector(tmp_path: Path, database_url: str, config: Path, run: int) -> Proc:
    web = free_port()
    proc = Proc(
        ["collector", "run", "-c", str(config), "--listen", f"127.0.0.1:{web}"],
        base_env(VPSMON_DATABASE_URL=database_url, VPSMON_ADMIN_PASSWORD="restart-pw-123"),
        tmp_path / f"collector-{run}.log",
    )
    wait_http(f"http://127.0.0.1:{web}/healthz", proc)
    return proc


async def wait_until(conn: asyncpg.Connection, metric: str, after: float, seconds: float) -> None:

    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        times = await stored_times(conn, metric)
        if times and times[-1] > after:
            return
        await asyncio.sleep(1)
    raise AssertionError(f"no {metric} sample after {after} within {seconds}s")


async def test_a_collector_stopped_for_two_minutes_leaves_no_gap_beyond_one_interval(
    tmp_path: Path, database_url: str
) -> None:

    port = free_port()
    exporter = Proc(
        ["exporter", "run", "--listen", f"127.0.0.1:{port}"],
        base_env(VPSMON_EXPORTER_INTERVAL=f"{INTERVAL:g}s"),
        tmp_path / "exporter.log",
    )
    conn = None
    try:
        wait_http(f"http://127.0.0.1:{port}/metrics", exporter)
        config = tmp_path / "collector.yml"
        config.write_text(
            f"scrape:\n  interval: {INTERVAL:g}s\ntargets:\n"
            f"  - name: box\n    url: http://127.0.0.1:{port}/metrics\n"
        )
        first = start_collector(tmp_path, database_url, config, 1)
        conn = await asyncpg.connect(database_url)
        try:
            await wait_until(conn, "node_load1", time.time() + 3 * INTERVAL, 60)
        finally:
            assert first.stop() == 0, first.output()
        before = {m: await stored_times(conn, m) for m in METRICS}
        stopped_at = max(t[-1] for t in before.values())
        await asyncio.sleep(STOPPED)
        second = start_collector(tmp_path, database_url, config, 2)
        restarted_at = time.time()
        try:
            # Live scrapes after the restart, and the backfill of the two minutes.
            await wait_until(conn, "node_load1", restarted_at + 2 * INTERVAL, 60)
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline:
                times = await stored_times(conn, "node_load1")
                if largest_gap(times)[0] <= ALLOWED_GAP:
                    break
                await asyncio.sleep(1)
        finally:
            assert second.stop() == 0, second.output()
        after = {m: await stored_times(conn, m) for m in METRICS}
        ups = await stored_times(conn, "up")
    finally:
        if conn is not None:
            await conn.close()
        exporter.stop()
    for metric, times in after.items():
        gap, where = largest_gap(times)
        assert gap <= ALLOWED_GAP, f"{metric}: a gap of {gap:.1f}s at {where}"
        # The two minutes are there, not just their ends.
        inside = [t for t in times if stopped_at < t < stopped_at + STOPPED]
        assert len(inside) >= STOPPED / INTERVAL - 2, (metric, len(inside))
        assert times[0] <= before[metric][0] and times[-1] > restarted_at
    # `up` is the collector's own verdict: it was not running, so it has no points there.
    assert largest_gap(ups)[0] >= STOPPED - INTERVAL
