"""Storage benchmark: bytes per sample against naive rows, ingest rate, one-server-day queries.

    .venv/bin/python bench/storage.py [--servers 3] [--hours 26] [--database-url URL]
        [--timescaledb] [--keep]
    .venv/bin/python bench/storage.py --compare KEPT_URL KEPT_URL...

What it does, on a fresh database of its own (dropped at the end):

1. Takes one real payload of the vpsmon exporter on this machine (its series, names and
   values) and makes ``--servers`` servers of it, scraped every 15 s for ``--hours`` hours.
   Values evolve as a fleet's do: of the counters 60 % move every scrape and 40 % stand still
   (idle devices, unused CPU modes); of the gauges half stand still (sizes, info series) and
   half wander by about 1 % per scrape; numbers keep the precision the exporter gives them.
2. Writes them through the collector's own `SampleWriter` (COPY), hour by hour, and runs the
   storage maintenance after each hour as the collector would (partition ahead, compaction
   of the closed hour, rollups): ingest rate and compaction time.
3. Measures the on-disk size (heap + indexes + TOAST, after VACUUM) of the compacted store and
   of the same samples in a plain ``(series_id bigint, ts timestamptz, value float8)`` table
   with the primary key the 001 schema had (and without any index).
4. Times queries of one server over the last 24 hours: charts at ~1,000 points (the dashboard),
   and raw selects through the `SampleSource` (PromQL).

With ``--timescaledb`` the store is in TimescaleDB hypertables (the server at --database-url
needs the extension, docs/storage.md): compression replaces the chunks, and sizes are
TimescaleDB's `hypertable_size` (every chunk, compressed or not, with indexes and TOAST).

Prints a Markdown table (docs/benchmarks.md).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import resource
import shutil
import statistics
import sys
import tempfile
import time
import urllib.parse
from pathlib import Path

import asyncpg

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from vpsmon.collector.scrape.loop import ScrapeResult  # noqa: E402
from vpsmon.collector.scrape.parse import Sample, parse_exposition  # noqa: E402
from vpsmon.collector.scrape.target import Target  # noqa: E402
from vpsmon.collector.storage import maintenance  # noqa: E402
from vpsmon.collector.storage.chart import ChartReader  # noqa: E402
from vpsmon.collector.storage.db import connect_pool  # noqa: E402
from vpsmon.collector.storage.migrate import migrate  # noqa: E402
from vpsmon.collector.storage.query import Matcher  # noqa: E402
from vpsmon.collector.storage.reader import StorageReader  # noqa: E402
from vpsmon.collector.storage.store import RollupCache  # noqa: E402
from vpsmon.collector.storage.timescale import pause_policies, prepare  # noqa: E402
from vpsmon.collector.storage.writer import SampleWriter  # noqa: E402
from vpsmon.web.history import chart_figures  # noqa: E402

INTERVAL = 15.0
HOUR = 3600.0
START = 1_767_225_600.0  # 2026-01-01T00:00:00Z
DASHBOARD = (
    "node_cpu_seconds_total|node_load1|node_memory_MemAvailable_bytes|node_memory_MemTotal_bytes"
    "|node_network_receive_bytes_total|node_network_transmit_bytes_total"
    "|node_filesystem_avail_bytes|node_disk_read_bytes_total|node_disk_written_bytes_total"
)


def real_payload() -> tuple[list[Sample], set[str]]:
    from vpsmon.exporter.collection import Collection
    from vpsmon.exporter.collectors import COLLECTORS
    from vpsmon.exporter.collectors.base import Context
    from vpsmon.exporter.config import load_config

    config = load_config(None, env={})
    payload = Collection(COLLECTORS, Context(options=config.options)).collect_once()
    counters = {f.name for f in payload.families if f.type == "counter"}
    text = payload.text.decode() if isinstance(payload.text, bytes) else payload.text
    return parse_exposition(text, 1_000_000), counters


class Fleet:
    """Servers whose values evolve as described in the module docstring (seeded)."""

    def __init__(self, samples: list[Sample], counters: set[str], servers: int) -> None:
        self.rng = random.Random(4)  # noqa: S311 — test data, not secrets
        self.targets = []
        self.state: list[list[float]] = []
        self.kinds: list[list[str]] = []
        self.samples = samples
        for i in range(servers):
            self.targets.append(
                Target(i + 1, f"s{i}", f"http://10.0.{i // 250}.{i % 250}:9190/metrics", 15, 10)
            )
            self.state.append([s.value for s in samples])
            kinds = []
            for s in samples:
                moving = self.rng.random() < (0.6 if s.name in counters else 0.5)
                kinds.append(("counter" if s.name in counters else "gauge") if moving else "still")
            self.kinds.append(kinds)

    def scrape(self, server: int, ts: float) -> ScrapeResult:
        values = self.state[server]
        rng = self.rng
        for j, kind in enumerate(self.kinds[server]):
            v = values[j]
            if kind == "still" or v != v:
                continue
            whole = v == int(v)
            if kind == "counter":
                v += abs(v) * rng.uniform(0, 2e-5) + rng.uniform(0, 2)
            else:
                v *= 1 + rng.gauss(0, 0.01)
            values[j] = float(round(v)) if whole else round(v, 2)
        out = [Sample(s.name, s.labels, values[j]) for j, s in enumerate(self.samples)]
        return ScrapeResult(self.targets[server], ts, rng.uniform(0.001, 0.01), out)


async def size_of(conn: asyncpg.Connection, *tables: str) -> int:
    total = 0
    for table in tables:
        total += await conn.fetchval("SELECT pg_total_relation_size($1::regclass)", table)
    return total


async def timed(fn, repeat: int = 7) -> tuple[float, float, object]:  # type: ignore[no-untyped-def]
    await fn()  # warm: plans, caches
    times = []
    result = None
    for _ in range(repeat):
        t = time.perf_counter()
        result = await fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times), max(times), result


async def store_size(conn: asyncpg.Connection, timescale: bool, *tables: str) -> int:
    if not timescale:
        return await size_of(conn, *tables)
    total = 0
    for table in tables:
        total += await conn.fetchval("SELECT hypertable_size($1::regclass)", table)
    return total


async def run(url: str, servers: int, hours: int, timescale: bool = False) -> None:
    samples, counters = real_payload()
    fleet = Fleet(samples, counters, servers)
    pool = await connect_pool(url, max_size=4)
    try:
        await migrate(pool)
        layout = await prepare(pool, "on" if timescale else "off", maintenance.Retention())
        if timescale:
            async with pool.acquire() as conn:
                await pause_policies(conn)  # their clock is today's; this data is of 2026-01
        for t in fleet.targets:
            await pool.execute(
                "INSERT INTO servers (id, name, url) VALUES ($1, $2, $3)",
                t.server_id,
                t.name,
                t.url,
            )
        writer = SampleWriter(pool, "node")
        ingest_wall = ingest_cpu = compact_wall = 0.0
        raw_bytes_per_sample = 0.0
        for h in range(hours):
            hour = START + h * HOUR
            async with pool.acquire() as conn:
                await maintenance.ensure_partitions(conn, hour)
            scrapes = [
                fleet.scrape(s, hour + k * INTERVAL + s * 0.037)
                for k in range(int(HOUR / INTERVAL))
                for s in range(servers)
            ]
            cpu0 = resource.getrusage(resource.RUSAGE_SELF)
            t0 = time.perf_counter()
            for result in scrapes:
                await writer.append(result)
            assert await writer.flush()
            ingest_wall += time.perf_counter() - t0
            cpu1 = resource.getrusage(resource.RUSAGE_SELF)
            ingest_cpu += (cpu1.ru_utime - cpu0.ru_utime) + (cpu1.ru_stime - cpu0.ru_stime)
            if h == 0:
                async with pool.acquire() as conn:
                    await conn.execute("VACUUM ANALYZE samples")
                    name = maintenance.partition_name(hour)
                    if timescale:
                        name = await conn.fetchval("SELECT show_chunks('samples') LIMIT 1")
                    rows = await conn.fetchval(f"SELECT count(*) FROM {name}")  # noqa: S608
                    raw_bytes_per_sample = await size_of(conn, name) / rows
            t0 = time.perf_counter()
            await maintenance.maintain(pool, hour + HOUR + maintenance.GRACE + 1)
            compact_wall += time.perf_counter() - t0
            print(f"hour {h + 1}/{hours} written and compacted", file=sys.stderr, flush=True)
        total = writer.written_samples
        end = START + hours * HOUR

        async with pool.acquire() as conn:
            await conn.execute(
                "CREATE TABLE naive (series_id bigint, ts timestamptz, value float8,"
                " PRIMARY KEY (series_id, ts))"
            )
            # Minutes on a loaded machine: longer than the pool's 60 s statement timeout.
            await conn.execute(
                "INSERT INTO naive SELECT series_id, ts, value FROM samples", timeout=1800
            )
            await conn.execute(
                "INSERT INTO naive SELECT c.series_id,"
                " to_timestamp((c.first_ms + sum(u.d) OVER (PARTITION BY c.series_id,"
                " c.block_start ORDER BY u.o)) / 1000.0), u.v"
                " FROM sample_chunks c, unnest(c.deltas, c.vals) WITH ORDINALITY u(d, v, o)",
                timeout=1800,
            )
            await conn.execute("VACUUM ANALYZE", timeout=1800)
            naive_rows = await conn.fetchval("SELECT count(*) FROM naive")
            assert naive_rows == total, (naive_rows, total)
            naive_total = await size_of(conn, "naive")
            naive_heap = await conn.fetchval("SELECT pg_relation_size('naive')")
            chunks = await size_of(conn, "sample_chunks")
            raw_left = await store_size(conn, timescale, "samples")
            rollups = await store_size(conn, timescale, "rollup_1m", "rollup_1h")
            chunk_rows = await conn.fetchval("SELECT count(*) FROM sample_chunks")

        reader = StorageReader(pool)
        charts = ChartReader(reader)
        cached = ChartReader(reader, cache=RollupCache())  # as the web app's
        day = (end - 86400, end)
        one = fleet.targets[0].server_id
        dash = [Matcher("__name__", "=~", DASHBOARD)]
        cpu = [Matcher("__name__", "=", "node_cpu_seconds_total")]
        inst = Matcher("instance", "=", fleet.targets[0].instance)
        queries = [
            (
                "chart, dashboard metrics of one server, 24 h",
                lambda: charts.chart(dash, *day, server_id=one, now=end),
            ),
            (
                "same, the figures the history page draws (gauges' avg, counters' last and"
                " increase)",
                lambda: charts.chart(dash, *day, server_id=one, now=end, figures=chart_figures),
            ),
            (
                "same, from the web app's cache of folded rollup rows (warm)",
                lambda: cached.chart(dash, *day, server_id=one, now=end, figures=chart_figures),
            ),
            (
                "chart, every series of one server, 24 h",
                lambda: charts.chart([], *day, server_id=one, now=end),
            ),
            (
                "raw select, node_cpu_seconds_total of one server, 24 h",
                lambda: reader.select([*cpu, inst], *day),
            ),
            (
                "raw select, every series of one server, 1 h",
                lambda: reader.select([inst], end - 3600, end),
            ),
            (
                "raw select, every series of one server, 24 h",
                lambda: reader.select([inst], *day),
            ),
        ]
        results = []
        for label, fn in queries:
            median, worst, got = await timed(fn, repeat=3 if "every series" in label else 7)
            if hasattr(got, "series"):
                n_series = len(got.series)  # type: ignore[union-attr]
                points = sum(len(s.buckets.timestamps) for s in got.series)  # type: ignore[union-attr]
                what = f"{n_series} series, {points} points ({got.resolution})"  # type: ignore[union-attr]
            else:
                n_series = len(got)  # type: ignore[arg-type]
                points = sum(len(s.values) for s in got)  # type: ignore[union-attr]
                what = f"{n_series} series, {points} samples"
            results.append((label, what, median, worst))

        print()
        print(
            f"{servers} servers × {len(samples) + 3} series × {hours} h at 15 s = "
            f"{total:,} samples, {layout} layout"
            + ("" if timescale else f" ({chunk_rows:,} chunks)")
        )
        print()
        print("| storage | bytes | bytes per sample | vs naive with key |")
        print("|---|---|---|---|")
        rows = [
            ("naive rows with primary key (001)", naive_total),
            ("naive rows, heap only, no index", naive_heap),
            (
                "TimescaleDB hypertable, compressed (raw samples)"
                if timescale
                else "compacted chunks (raw samples)",
                chunks + raw_left,
            ),
            ("rollups 1 m + 1 h", rollups),
            ("chunks + rollups", chunks + raw_left + rollups),
        ]
        for label, size in rows:
            print(f"| {label} | {size:,} | {size / total:.2f} | {naive_total / size:.1f}× |")
        what = (
            "raw hour chunk before compression" if timescale else "raw partition before compaction"
        )
        print(f"| {what} | | {raw_bytes_per_sample:.2f} | |")
        print()
        print("| ingest | value |")
        print("|---|---|")
        print(
            f"| samples per second through SampleWriter (COPY), wall | {total / ingest_wall:,.0f} |"
        )
        print(
            f"| collector CPU per 1,000 samples (writer side) | {ingest_cpu / total * 1e6:.1f} ms |"
        )
        print(
            f"| compaction + rollups per hour of {servers} servers | {compact_wall / hours:.2f} s |"
        )
        print()
        print("| query (one server, last 24 h unless said) | answer | median | worst |")
        print("|---|---|---|---|")
        for label, what, median, worst in results:
            print(f"| {label} | {what} | {median * 1000:.0f} ms | {worst * 1000:.0f} ms |")
    finally:
        await pool.close()


async def compare(urls: list[str], hours: int, rounds: int = 9) -> None:
    """Time one server's queries on databases kept by earlier runs (--keep), alternately, so
    that every layout sees the same load (a shared machine's load moves within minutes)."""
    end = START + hours * HOUR
    day = (end - 86400, end)
    pools = [await connect_pool(url) for url in urls]
    try:
        plans = []
        for pool in pools:
            reader = StorageReader(pool)
            charts = ChartReader(reader)
            url = await pool.fetchval("SELECT url FROM servers ORDER BY id LIMIT 1")
            inst = Matcher("instance", "=", urllib.parse.urlsplit(url).netloc)
            dash = [Matcher("__name__", "=~", DASHBOARD)]
            cpu = [Matcher("__name__", "=", "node_cpu_seconds_total"), inst]
            plans.append(
                [
                    ("chart, dashboard metrics, 24 h", lambda c=charts, d=dash: c.chart(
                        d, *day, server_id=1, now=end)),
                    ("raw select, node_cpu_seconds_total, 24 h", lambda r=reader, q=cpu: r.select(
                        q, *day)),
                    ("raw select, every series, last hour", lambda r=reader, i=inst: r.select(
                        [i], end - 3600, end)),
                    ("raw select, every series, 24 h", lambda r=reader, i=inst: r.select(
                        [i], *day)),
                ]
            )  # fmt: skip
        times: dict[tuple[int, int], list[float]] = {}
        for plan in plans:
            for _, fn in plan:
                await fn()  # warm
        for _ in range(rounds):
            for k in range(len(plans[0])):
                for d, plan in enumerate(plans):
                    t = time.perf_counter()
                    await plan[k][1]()
                    times.setdefault((d, k), []).append(time.perf_counter() - t)
        print("| query (one server) | " + " | ".join(urls) + " |")
        print("|---|" + "---|" * len(urls))
        for k, (label, _) in enumerate(plans[0]):
            cells = [
                f"{statistics.median(times[d, k]) * 1000:,.0f} / {max(times[d, k]) * 1000:,.0f} ms"
                for d in range(len(plans))
            ]
            print(f"| {label} | " + " | ".join(cells) + " |")
    finally:
        for pool in pools:
            await pool.close()


def _backend_cpu(database: str) -> float:
    """CPU seconds (user + system) of the PostgreSQL backends connected to ``database``."""
    import psutil

    total = 0.0
    for proc in psutil.process_iter(["cmdline"]):
        cmd = " ".join(proc.info["cmdline"] or ())
        if cmd.startswith("postgres: ") and f" {database} " in cmd:
            try:
                t = proc.cpu_times()
            except psutil.Error:
                continue
            total += t.user + t.system
    return total


async def writer_rounds(url: str, database: str, servers: int, rounds: int) -> None:
    """`--writer`: ``servers`` x the real payload through `SampleWriter.flush`, round by round:
    the first round creates every series, the next ones find them cached, the last is a new
    writer (a restarted collector: cold cache, series in the database). Each round is one
    scrape of every server; wall time, the writer process's CPU and its PostgreSQL backends'
    CPU (psutil, user + system; backends live for the whole run, so they are summed)."""
    samples, counters = real_payload()
    fleet = Fleet(samples, counters, servers)
    pool = await connect_pool(url, max_size=4)
    try:
        await migrate(pool)
        await pool.executemany(
            "INSERT INTO servers (id, name, url) VALUES ($1, $2, $3)",
            [(t.server_id, t.name, t.url) for t in fleet.targets],
        )
        now = time.time()
        async with pool.acquire() as conn:
            await maintenance.ensure_partitions(conn, now)
        writer = SampleWriter(pool, "node")
        base = now - now % HOUR + 60.0
        plan = ["first scrapes: every series new"]
        plan += ["series cached"] * max(rounds - 2, 1)
        plan += ["new writer (cold cache), series exist"]
        print(
            f"{servers:,} servers x {len(samples) + 3} series, load average"
            f" {os.getloadavg()[0]:.1f} at the start"
        )
        print("| round | samples | wall | samples/s | writer CPU | PostgreSQL CPU | load |")
        print("|---|---|---|---|---|---|---|")
        for k, label in enumerate(plan):
            if label.startswith("new writer"):
                writer = SampleWriter(pool, "node")
            for s in range(servers):
                await writer.append(fleet.scrape(s, base + k * INTERVAL + s * 0.013))
            before = writer.written_samples
            pg0, c0, w0 = _backend_cpu(database), time.process_time(), time.perf_counter()
            if not await writer.flush() or writer.pending:
                raise SystemExit("the writer could not store a round")
            wall = time.perf_counter() - w0
            cpu, pg = time.process_time() - c0, _backend_cpu(database) - pg0
            n = writer.written_samples - before
            print(
                f"| {label} | {n:,} | {wall:.1f} s | {n / wall:,.0f} | {cpu:.1f} s"
                f" ({1e6 * cpu / max(n, 1):.1f} µs/sample) | {pg:.1f} s"
                f" ({1e6 * pg / max(n, 1):.1f} µs/sample) | {os.getloadavg()[0]:.1f} |",
                flush=True,
            )
    finally:
        await pool.close()


async def fresh_database(admin_url: str) -> tuple[str, str]:
    name = f"vpsmon_bench_{os.getpid()}"
    conn = await asyncpg.connect(admin_url)
    try:
        await conn.execute(f'CREATE DATABASE "{name}"')
    finally:
        await conn.close()
    parts = urllib.parse.urlsplit(admin_url)
    return name, urllib.parse.urlunsplit(parts._replace(path="/" + name))


async def drop_database(admin_url: str, name: str) -> None:
    conn = await asyncpg.connect(admin_url)
    try:
        await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await conn.close()


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--servers", type=int, default=3)
    parser.add_argument("--hours", type=int, default=26)
    parser.add_argument(
        "--database-url",
        default=os.environ.get("VPSMON_BENCH_DATABASE_URL")
        or os.environ.get("VPSMON_TEST_DATABASE_URL"),
        help="a PostgreSQL server to create the benchmark database on (default: embedded)",
    )
    parser.add_argument("--keep", action="store_true", help="keep the database afterwards")
    parser.add_argument(
        "--timescaledb",
        action="store_true",
        help="store in TimescaleDB hypertables (the server needs the extension)",
    )
    parser.add_argument(
        "--compare",
        nargs="+",
        metavar="DATABASE_URL",
        help="only time one server's queries, alternately, on databases kept with --keep",
    )
    parser.add_argument(
        "--writer",
        action="store_true",
        help="only the writer micro-benchmark: --servers servers (e.g. 1000) through"
        " SampleWriter.flush, --rounds rounds (first creation, cached, cold cache)",
    )
    parser.add_argument("--rounds", type=int, default=4, help="rounds of --writer")
    args = parser.parse_args(argv)
    if args.compare:
        asyncio.run(compare(args.compare, args.hours))
        return 0
    embedded = None
    tmp = None
    admin = args.database_url
    if not admin:
        from vpsmon.collector.storage.embedded import EmbeddedPostgres

        tmp = Path(tempfile.mkdtemp(prefix="vpsmon-bench-pg-"))
        embedded = EmbeddedPostgres(tmp / "pgdata")
        embedded.start()
        admin = embedded.url("postgres")
    name, url = asyncio.run(fresh_database(admin))
    try:
        if args.writer:
            asyncio.run(writer_rounds(url, name, args.servers, args.rounds))
        else:
            asyncio.run(run(url, args.servers, args.hours, args.timescaledb))
    finally:
        if args.keep:
            print(f"kept database {url}", file=sys.stderr)
        else:
            asyncio.run(drop_database(admin, name))
        if embedded is not None:
            embedded.stop()
        if tmp is not None:
            shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
