"""Fleet benchmark: the collector scraping N fake exporters at 15 s, beside Debian's prometheus.

    .venv/bin/python bench/fleet.py [--sizes 100,1000] [--warmup SECONDS] [--duration 60]
                                    [--database-url URL]

For each N in ``--sizes``, in one run:

1. One process (this script with ``--serve``) serves N paths ``/t/<i>/metrics`` on 127.0.0.1
   with one real vpsmon exporter payload (rendered once by vpsmon.exporter's collection code on
   this machine, gzip when asked, HTTP/1.1 keep-alive).
2. ``vpsmon collector run`` scrapes the N paths every 15 s as static targets into a fresh
   database of its own on ``--database-url`` (dropped at the end; backfill off, since the fake
   exporters have no /history), and Debian's ``prometheus`` scrapes the same N paths every 15 s
   into a temporary TSDB.
3. After ``--warmup`` seconds (default 0.15 s per target, at least 30: the first scrapes
   create N x ~300 series), CPU (psutil ``cpu_times``, user + system) of the collector, of
   the PostgreSQL backends serving its database, and of prometheus is measured over
   ``--duration`` seconds; RSS at the end. Samples per second: the collector's rows stored in
   the window (by sample time), prometheus' ``prometheus_tsdb_head_samples_appended_total``.
   Also: scrapes stored in the window, missed intervals, scrape durations (from the stored
   ``up`` and ``scrape_duration_seconds``), the writer's queue and duplicates (/api/storage),
   and CPU per scrape handled (what N targets cost whatever share a busy machine leaves).
4. A day of one server (bench/storage.py's moving values, 25 h written through the writer and
   the maintenance) and its dashboard history over 24 h, timed (``--no-day`` skips it).
5. Bytes per sample: the raw partition the collector wrote (heap + indexes, after VACUUM)
   against the same rows in a plain ``(series_id, ts, value)`` table with its primary key,
   and after the maintenance compacted them into chunks.

Prints Markdown tables (docs/benchmarks.md), then PASS/FAIL per budget of issue #4 (exit
status 1 when one fails). Not a test: the numbers depend on the machine.
"""

from __future__ import annotations

import argparse
import asyncio
import gzip
import http.server
import importlib.util
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from datetime import datetime
from pathlib import Path
from typing import Any

import asyncpg
import psutil

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))


def _bench(name: str) -> Any:
    """A sibling benchmark script as a module (bench/ is no package; ``exporter`` is taken)."""
    spec = importlib.util.spec_from_file_location(f"bench_{name}", HERE / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


_exporter = _bench("exporter")
_storage = _bench("storage")
free_port, machine = _exporter.free_port, _exporter.machine
fresh_database, drop_database = _storage.fresh_database, _storage.drop_database

VPSMON = str(Path(sys.executable).with_name("vpsmon"))
PROMETHEUS = "/usr/bin/prometheus"
INTERVAL = 15


def render_payload() -> bytes:
    """One real exporter payload of this machine, as `vpsmon exporter run` serves it."""
    from vpsmon.exporter.collection import Collection
    from vpsmon.exporter.collectors import COLLECTORS
    from vpsmon.exporter.collectors.base import Context
    from vpsmon.exporter.config import load_config

    config = load_config(None, env={})
    payload = Collection(COLLECTORS, Context(options=config.options)).collect_once()
    text = payload.text
    return text if isinstance(text, bytes) else text.encode()


def serve(port: int, payload_file: str) -> None:
    """The fake exporters: every path /t/<i>/metrics answers the same payload."""
    body = Path(payload_file).read_bytes()
    zipped = gzip.compress(body, 6)

    class Handler(http.server.BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_GET(self) -> None:  # noqa: N802 — http.server's name
            if not (self.path.startswith("/t/") and self.path.endswith("/metrics")):
                self.send_error(404)
                return
            data = body
            self.send_response(200)
            self.send_header("Content-Type", "text/plain; version=0.0.4; charset=utf-8")
            if "gzip" in self.headers.get("Accept-Encoding", ""):
                data = zipped
                self.send_header("Content-Encoding", "gzip")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, format: str, *args: object) -> None:  # noqa: A002
            pass

    class Server(http.server.ThreadingHTTPServer):
        def handle_error(self, request: Any, client_address: Any) -> None:
            pass  # a scraper that hung up (its timeout): counted by the collector, not here

    server = Server(("127.0.0.1", port), Handler)
    server.daemon_threads = True
    server.serve_forever()


def wait_port(port: int, popen: subprocess.Popen[bytes], what: str, timeout: float = 60) -> None:
    import socket

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if popen.poll() is not None:
            raise SystemExit(f"{what} exited with {popen.returncode}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1):
                return
        except OSError:
            time.sleep(0.3)
    raise SystemExit(f"{what} did not listen on {port} within {timeout:.0f}s")


def stop(popen: subprocess.Popen[bytes]) -> None:
    if popen.poll() is None:
        popen.send_signal(signal.SIGTERM)
        try:
            popen.wait(20)
        except subprocess.TimeoutExpired:
            popen.kill()
            popen.wait()


def backends(database: str) -> dict[int, psutil.Process]:
    """PostgreSQL backend processes connected to `database` (their title names it)."""
    found = {}
    for proc in psutil.process_iter(["cmdline"]):
        cmd = " ".join(proc.info["cmdline"] or ())
        if cmd.startswith("postgres: ") and f" {database} " in cmd:
            found[proc.pid] = proc
    return found


def cpu(proc: psutil.Process) -> float:
    try:
        t = proc.cpu_times()
        return float(t.user + t.system)
    except psutil.Error:
        return float("nan")


def prometheus_appended(port: int) -> float:
    url = f"http://127.0.0.1:{port}/metrics"
    with urllib.request.urlopen(url, timeout=10) as r:  # noqa: S310 — our own 127.0.0.1
        for line in r.read().decode().splitlines():
            if line.startswith("prometheus_tsdb_head_samples_appended_total"):
                return float(line.rsplit(" ", 1)[1])
    return float("nan")


async def stored(url: str, t0: float, t1: float) -> int:
    conn = await asyncpg.connect(url)
    try:
        n: int = await conn.fetchval(
            "SELECT count(*) FROM samples WHERE ts >= to_timestamp($1) AND ts < to_timestamp($2)",
            t0,
            t1,
        )
        return n
    finally:
        await conn.close()


def create_token(url: str) -> str:
    """An API token of the admin the collector created (VPSMON_ADMIN_PASSWORD)."""
    done = subprocess.run(  # noqa: S603
        [VPSMON, "token", "create", "--user", "admin", "--name", "bench"],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "VPSMON_DATABASE_URL": url},
        check=True,
    )
    return done.stdout.strip().splitlines()[-1].strip()


def api(port: int, path: str, token: str) -> Any:
    import json

    req = urllib.request.Request(  # noqa: S310 — our own 127.0.0.1
        f"http://127.0.0.1:{port}{path}", headers={"Authorization": f"Bearer {token}"}
    )
    with urllib.request.urlopen(req, timeout=60) as r:  # noqa: S310
        return json.loads(r.read())


def writer_health(port: int, token: str) -> dict[str, Any]:
    """The writer's counters from /api/storage, or {} when a starved collector does not
    answer within the timeout (then the table shows "?")."""
    try:
        health: dict[str, Any] = api(port, "/api/storage", token)["writer"]
    except OSError as err:
        print(f"/api/storage did not answer: {err}", file=sys.stderr, flush=True)
        return {}
    return health


async def scrapes(url: str, t0: float, t1: float) -> dict[str, float]:
    """What the stored `up` and `scrape_duration_seconds` series say about the window."""
    conn = await asyncpg.connect(url)
    try:
        row = await conn.fetchrow(
            "SELECT count(*) AS scrapes, count(DISTINCT s.server_id) AS targets,"
            " sum(x.value) AS up FROM samples x JOIN series s ON s.id = x.series_id"
            " WHERE s.metric = 'up' AND x.ts >= to_timestamp($1) AND x.ts < to_timestamp($2)",
            t0,
            t1,
        )
        durations = await conn.fetchrow(
            "SELECT percentile_cont(0.5) WITHIN GROUP (ORDER BY value) AS p50,"
            " percentile_cont(0.99) WITHIN GROUP (ORDER BY value) AS p99, max(value) AS max"
            " FROM samples x JOIN series s ON s.id = x.series_id"
            " WHERE s.metric = 'scrape_duration_seconds'"
            " AND x.ts >= to_timestamp($1) AND x.ts < to_timestamp($2)",
            t0,
            t1,
        )
        # Gaps: consecutive stored scrapes of one target further apart than 1.5 intervals.
        gaps = await conn.fetchval(
            "SELECT count(*) FROM (SELECT x.ts - lag(x.ts) OVER (PARTITION BY s.server_id"
            " ORDER BY x.ts) AS d FROM samples x JOIN series s ON s.id = x.series_id"
            " WHERE s.metric = 'up' AND x.ts >= to_timestamp($1) AND x.ts < to_timestamp($2)) g"
            " WHERE d > make_interval(secs => $3)",
            t0,
            t1,
            1.5 * INTERVAL,
        )
    finally:
        await conn.close()
    return {
        "scrapes": float(row["scrapes"]),
        "targets": float(row["targets"]),
        "up": float(row["up"] or 0),
        "p50": float(durations["p50"] or 0),
        "p99": float(durations["p99"] or 0),
        "max": float(durations["max"] or 0),
        "gaps": float(gaps),
    }


async def disk(url: str) -> tuple[int, int, int, int]:
    """(rows, bytes of the raw partitions, of the same rows as naive keyed rows, compacted)."""
    from vpsmon.collector.storage import maintenance
    from vpsmon.collector.storage.db import connect_pool

    conn = await asyncpg.connect(url)
    try:
        await conn.execute("VACUUM ANALYZE samples")
        parts = await conn.fetch(
            "SELECT c.oid::regclass::text AS name FROM pg_inherits i"
            " JOIN pg_class c ON c.oid = i.inhrelid WHERE i.inhparent = 'samples'::regclass"
        )
        raw = 0
        for p in parts:
            raw += await conn.fetchval("SELECT pg_total_relation_size($1::regclass)", p["name"])
        rows = await conn.fetchval("SELECT count(*) FROM samples")
        await conn.execute(
            "CREATE TABLE naive (series_id bigint, ts timestamptz, value float8,"
            " PRIMARY KEY (series_id, ts))"
        )
        await conn.execute("INSERT INTO naive SELECT series_id, ts, value FROM samples")
        await conn.execute("VACUUM ANALYZE naive")
        naive = await conn.fetchval("SELECT pg_total_relation_size('naive')")
    finally:
        await conn.close()
    # Compact what the collector wrote as it will once the hour has closed.
    pool = await connect_pool(url, max_size=2)
    try:
        await maintenance.maintain(pool, time.time() + 3600 + maintenance.GRACE + 1)
        async with pool.acquire() as conn:
            await conn.execute("VACUUM ANALYZE")
            compacted = 0
            for table in ("sample_chunks", "samples"):
                compacted += await conn.fetchval(
                    "SELECT pg_total_relation_size($1::regclass)", table
                )
            for p in await conn.fetch(
                "SELECT c.oid::regclass::text AS name FROM pg_inherits i JOIN pg_class c"
                " ON c.oid = i.inhrelid WHERE i.inhparent = 'samples'::regclass"
            ):
                compacted += await conn.fetchval(
                    "SELECT pg_total_relation_size($1::regclass)", p["name"]
                )
    finally:
        await pool.close()
    return rows, raw, naive, compacted


async def day_of_one_server(admin_url: str, repeat: int = 9) -> dict[str, float]:
    """Write 25 h of one server (bench/storage.py's moving values) through the collector's
    writer and maintenance, then time the dashboard's 24 h history of it: wall and CPU of
    this process (the reader's side), median and worst of ``repeat``."""
    from vpsmon.collector.storage.chart import ChartReader
    from vpsmon.collector.storage.db import connect_pool
    from vpsmon.collector.storage.maintenance import maintain
    from vpsmon.collector.storage.migrate import migrate
    from vpsmon.collector.storage.reader import StorageReader
    from vpsmon.collector.storage.writer import SampleWriter
    from vpsmon.web.history import history

    name, url = await fresh_database(admin_url)
    pool = await connect_pool(url, max_size=4)
    try:
        await migrate(pool)
        samples, counters = _storage.real_payload()
        fleet = _storage.Fleet(samples, counters, 1)
        target = fleet.targets[0]
        await pool.execute(
            "INSERT INTO servers (id, name, url) VALUES ($1, $2, $3)",
            target.server_id,
            target.name,
            target.url,
        )
        writer = SampleWriter(pool, "node")
        hours = 25
        # The day ends at the last whole hour: history() reads "now" from the clock, and a day
        # older than rollup_1m's retention would be charted from the 1 h rollups (24 points).
        start = time.time() // 3600 * 3600 - hours * 3600
        for h in range(hours):
            hour = start + h * 3600
            for k in range(int(3600 / INTERVAL)):
                await writer.append(fleet.scrape(0, hour + k * INTERVAL))
            assert await writer.flush()
            from vpsmon.collector.storage import maintenance

            async with pool.acquire() as conn:
                await maintenance.ensure_partitions(conn, hour)
            await maintain(pool, hour + 3600 + maintenance.GRACE + 1)
        end = start + hours * 3600
        async with pool.acquire() as conn:
            await conn.execute("VACUUM ANALYZE")
            stored_bytes = sum(
                [
                    await conn.fetchval("SELECT pg_total_relation_size($1::regclass)", t)
                    for t in ("sample_chunks", "samples")
                ]
            )
        charts = ChartReader(StorageReader(pool))
        await history(charts, target.server_id, end - 86400, end, INTERVAL)  # warm
        walls, cpus = [], []
        points = 0
        for _ in range(repeat):
            c0, t0 = time.process_time(), time.perf_counter()
            got = await history(charts, target.server_id, end - 86400, end, INTERVAL)
            walls.append(time.perf_counter() - t0)
            cpus.append(time.process_time() - c0)
            points = sum(len(line["values"]) for c in got["charts"] for line in c["series"])
    finally:
        await pool.close()
        await drop_database(admin_url, name)
    walls.sort()
    cpus.sort()
    return {
        "wall": walls[len(walls) // 2],
        "worst": walls[-1],
        "cpu": cpus[len(cpus) // 2],
        "points": float(points),
        "load": os.getloadavg()[0],
        "bytes": stored_bytes / max(writer.written_samples, 1),
    }


def run_size(n: int, args: argparse.Namespace, payload_file: Path, series: int) -> dict:
    tmp = Path(tempfile.mkdtemp(prefix=f"vpsmon-bench-fleet-{n}-"))
    name, url = asyncio.run(fresh_database(args.database_url))
    procs: list[subprocess.Popen[bytes]] = []
    try:
        fake_port = free_port()
        fake = subprocess.Popen(  # noqa: S603
            [sys.executable, __file__, "--serve", str(fake_port), str(payload_file)]
        )
        procs.append(fake)
        wait_port(fake_port, fake, "fake exporters")
        paths = [f"/t/{i}/metrics" for i in range(n)]

        web = free_port()
        lines = [
            f"database_url: {url}",
            f"listen: 127.0.0.1:{web}",
            f"data_dir: {tmp / 'data'}",
            "grpc:",
            f"  listen: 127.0.0.1:{free_port()}",
            "scrape:",
            f"  interval: {INTERVAL}s",
            "  backfill: false",
            "targets:",
        ]
        # Every fake target is the same host:port, so each needs its own instance label (as
        # prometheus gets below): with the default instance (host:port) all N targets would
        # be one set of series, and scrapes landing on the same millisecond one sample.
        lines += [
            f"  - {{name: fake-{i}, url: 'http://127.0.0.1:{fake_port}{p}',"
            f" labels: {{instance: fake-{i}}}}}"
            for i, p in enumerate(paths)
        ]
        (tmp / "collector.yml").write_text("\n".join(lines) + "\n")
        collector = subprocess.Popen(  # noqa: S603
            [VPSMON, "collector", "run", "-c", str(tmp / "collector.yml")],
            env={**os.environ, "VPSMON_ADMIN_PASSWORD": "bench-password-123"},
            stdout=subprocess.DEVNULL,
            stderr=open(tmp / "collector.log", "wb"),  # noqa: SIM115
        )
        procs.append(collector)

        prom_port = free_port()
        prom_lines = [
            "global:",
            f"  scrape_interval: {INTERVAL}s",
            "scrape_configs:",
            "  - job_name: fake",
            "    static_configs:",
        ]
        for i, p in enumerate(paths):
            prom_lines.append(f"      - targets: ['127.0.0.1:{fake_port}']")
            prom_lines.append(f"        labels: {{instance: fake-{i}, __metrics_path__: '{p}'}}")
        (tmp / "prometheus.yml").write_text("\n".join(prom_lines) + "\n")
        prometheus = None
        if Path(PROMETHEUS).exists() and not args.no_prometheus:
            prometheus = subprocess.Popen(  # noqa: S603
                [
                    PROMETHEUS,
                    f"--config.file={tmp / 'prometheus.yml'}",
                    f"--storage.tsdb.path={tmp / 'tsdb'}",
                    f"--web.listen-address=127.0.0.1:{prom_port}",
                ],
                stdout=subprocess.DEVNULL,
                stderr=open(tmp / "prometheus.log", "wb"),  # noqa: SIM115
            )
            procs.append(prometheus)
            wait_port(prom_port, prometheus, "prometheus")
        wait_port(web, collector, "vpsmon collector")
        token = create_token(url)

        # The first scrapes of N targets create N x ~300 series, which takes PostgreSQL a while
        # (the GIN index on labels): measure the steady state after it.
        warmup = args.warmup if args.warmup is not None else max(30.0, 0.15 * n)
        print(f"N={n}: warming up {warmup:.0f}s", file=sys.stderr, flush=True)
        time.sleep(warmup)
        load0 = os.getloadavg()[0]
        col = psutil.Process(collector.pid)
        pg0 = {pid: (p, cpu(p)) for pid, p in backends(name).items()}
        c0 = cpu(col)
        pr0 = cpu(psutil.Process(prometheus.pid)) if prometheus else float("nan")
        ap0 = prometheus_appended(prom_port) if prometheus else float("nan")
        written0 = writer_health(web, token).get("written_samples", float("nan"))
        w0 = time.time()
        m0 = time.monotonic()
        print(f"N={n}: measuring {args.duration:.0f}s", file=sys.stderr, flush=True)
        time.sleep(args.duration)
        wall = time.monotonic() - m0
        w1 = time.time()
        c1 = cpu(col)
        pg = sum(cpu(p) - before for p, before in pg0.values() if cpu(p) == cpu(p))
        pr1 = cpu(psutil.Process(prometheus.pid)) if prometheus else float("nan")
        ap1 = prometheus_appended(prom_port) if prometheus else float("nan")
        col_rss = col.memory_info().rss
        prom_rss = psutil.Process(prometheus.pid).memory_info().rss if prometheus else float("nan")
        load1 = os.getloadavg()[0]
        writer1 = writer_health(web, token)
        try:
            targets = api(web, "/api/targets", token)["targets"]
        except OSError:
            targets = []
        time.sleep(5)  # the writer's last batch of the window
        writer2 = writer_health(web, token)
        rows_window = asyncio.run(stored(url, w0, w1))
        seen = asyncio.run(scrapes(url, w0, w1))
        lags = sorted(
            w1 - datetime.fromisoformat(t["last_scrape"]).timestamp()
            for t in targets
            if t["last_scrape"]
        )
        diag = {
            "written_rate": (writer1.get("written_samples", float("nan")) - written0) / wall,
            "pending_end": writer1.get("pending_scrapes", "?"),
            "pending_settled": writer2.get("pending_scrapes", "?"),
            "dropped": writer2.get("dropped_scrapes", "?"),
            "duplicates": writer2.get("duplicate_samples", "?"),
            "rejected": writer2.get("rejected_scrapes", "?"),
            "down": sum(1 for t in targets if t["health"] != "up"),
            "errors": sorted({t["last_error"] for t in targets if t["last_error"]})[:3],
            "max_lag": lags[-1] if lags else float("nan"),
            **seen,
        }
        print(f"N={n}: {diag}", file=sys.stderr, flush=True)
        for p in procs[1:]:
            stop(p)
        rows, raw, naive, compacted = asyncio.run(disk(url))
        return {
            "n": n,
            "wall": wall,
            "collector_cpu": (c1 - c0) / wall,
            # CPU per scrape handled (scraped, parsed, into the head, written): what the
            # collector costs whatever share of the cores a busy machine leaves it.
            "cpu_per_scrape": (c1 - c0) / max(seen["scrapes"], 1),
            "pg_per_scrape": pg / max(seen["scrapes"], 1),
            "pg_cpu": pg / wall,
            "prom_cpu": (pr1 - pr0) / wall,
            "collector_rss": col_rss,
            "prom_rss": prom_rss,
            "rate": rows_window / (w1 - w0),
            "prom_rate": (ap1 - ap0) / wall,
            "expected": n * series / INTERVAL,
            "rows": rows,
            "raw": raw,
            "naive": naive,
            "compacted": compacted,
            "load": (load0, load1),
            "diag": diag,
        }
    finally:
        for p in reversed(procs):
            stop(p)
        asyncio.run(drop_database(args.database_url, name))
        if args.keep:
            print(f"kept {tmp}", file=sys.stderr)
        else:
            shutil.rmtree(tmp, ignore_errors=True)


def main(argv: list[str]) -> int:
    if argv[:1] == ["--serve"]:
        serve(int(argv[1]), argv[2])
        return 0
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="100,1000", help="comma-separated N")
    parser.add_argument(
        "--warmup",
        type=float,
        default=None,
        help="seconds before measuring (default: 0.15 s per target, at least 30)",
    )
    parser.add_argument("--duration", type=float, default=60.0, help="measured seconds per N")
    parser.add_argument(
        "--database-url",
        default=os.environ.get("VPSMON_BENCH_DATABASE_URL")
        or os.environ.get("VPSMON_TEST_DATABASE_URL"),
        help="a PostgreSQL server to create the benchmark database on",
    )
    parser.add_argument("--no-prometheus", action="store_true", help="the collector alone")
    parser.add_argument("--keep", action="store_true", help="keep the temp dir (logs, configs)")
    parser.add_argument("--no-day", action="store_true", help="skip the 24 h query of one server")
    parser.add_argument(
        "--day-only", action="store_true", help="only the 24 h query of one server (no fleet)"
    )
    args = parser.parse_args(argv)
    if not args.database_url:
        print(
            "fleet: skipped, set VPSMON_BENCH_DATABASE_URL (a PostgreSQL to create a database on)"
        )
        return 0
    if args.day_only:
        print(asyncio.run(day_of_one_server(args.database_url)))
        return 0
    payload = render_payload()
    series = sum(1 for line in payload.decode().splitlines() if line and line[0] != "#")
    series += 3  # up, scrape_duration_seconds, scrape_samples_scraped
    with tempfile.NamedTemporaryFile(prefix="vpsmon-bench-payload-", delete=False) as f:
        f.write(payload)
    results = []
    try:
        for n in (int(s) for s in args.sizes.split(",")):
            results.append(run_size(n, args, Path(f.name), series))
    finally:
        os.unlink(f.name)
    day = None
    if not args.no_day:
        print("24 h of one server: writing a day, then querying", file=sys.stderr, flush=True)
        day = asyncio.run(day_of_one_server(args.database_url))

    print()
    print(f"Machine: {machine()}; payload {len(payload):,} bytes, {series} series per target")
    print()
    print(
        "| targets | collector CPU | + its PostgreSQL backends | collector RSS"
        " | prometheus CPU | prometheus RSS | samples/s stored (expected) | prometheus samples/s"
        " | load average |"
    )
    print("|---|---|---|---|---|---|---|---|---|")
    for r in results:
        print(
            f"| {r['n']:,} | {r['collector_cpu'] * 100:.1f}% of a core"
            f" | {(r['collector_cpu'] + r['pg_cpu']) * 100:.1f}%"
            f" | {r['collector_rss'] / 2**20:.1f} MiB"
            f" | {r['prom_cpu'] * 100:.1f}% | {r['prom_rss'] / 2**20:.1f} MiB"
            f" | {r['rate']:,.0f} ({r['expected']:,.0f}) | {r['prom_rate']:,.0f}"
            f" | {r['load'][0]:.1f} → {r['load'][1]:.1f} |"
        )
    print()
    print(
        "| targets | rows stored | naive keyed row | raw partitions (before compaction)"
        " | compacted chunks | naive / compacted |"
    )
    print("|---|---|---|---|---|---|")
    for r in results:
        rows = max(r["rows"], 1)
        print(
            f"| {r['n']:,} | {r['rows']:,} | {r['naive'] / rows:.1f} B/sample"
            f" | {r['raw'] / rows:.1f} B/sample | {r['compacted'] / rows:.2f} B/sample"
            f" | {r['naive'] / max(r['compacted'], 1):.1f}× |"
        )
    print()
    print(
        "| targets | scrapes stored in the window (expected) | CPU per scrape, collector + PG"
        " | scrape duration p50 / p99 / max"
        " | missed intervals | writer queue at the end, 5 s later | duplicates, dropped |"
    )
    print("|---|---|---|---|---|---|---|")
    for r in results:
        d = r["diag"]
        print(
            f"| {r['n']:,} | {d['scrapes']:,.0f} ({r['n'] * r['wall'] / INTERVAL:,.0f})"
            f" | {1000 * r['cpu_per_scrape']:.2f} + {1000 * r['pg_per_scrape']:.2f} ms"
            f" | {d['p50'] * 1000:.0f} / {d['p99'] * 1000:.0f} / {d['max'] * 1000:.0f} ms"
            f" | {d['gaps']:.0f} | {d['pending_end']} → {d['pending_settled']} scrapes"
            f" | {d['duplicates']}, {d['dropped']} |"
        )
    if day is not None:
        print()
        print(
            f"24 h of one server (dashboard history, {day['points']:,.0f} points):"
            f" median {day['wall'] * 1000:.0f} ms wall, worst {day['worst'] * 1000:.0f} ms,"
            f" {day['cpu'] * 1000:.0f} ms CPU in the reader; chunks {day['bytes']:.2f} B/sample"
            f" with moving values; load average {day['load']:.1f}"
        )
    print()
    return verdicts(results, day)


def verdicts(results: list[dict], day: dict[str, float] | None) -> int:
    """PASS/FAIL against issue #4's budgets; the exit status is 1 when one fails."""
    checks: list[tuple[str, bool, str]] = []
    for r in results:
        d = r["diag"]
        expected = r["n"] * r["wall"] / INTERVAL
        stored = r["rate"] / r["expected"]
        checks.append(
            (
                f"N={r['n']:,}: every scrape stored (samples/s >= 99% of N x series / 15 s,"
                " no missed interval, no duplicate)",
                stored >= 0.99 and d["gaps"] == 0 and d["duplicates"] in (0, "?"),
                f"{stored:.1%} of the samples, {d['scrapes']:,.0f} of {expected:,.0f} scrapes,"
                f" {d['gaps']:.0f} missed, {d['duplicates']} duplicates",
            )
        )
    big = max(results, key=lambda r: r["n"])
    if big["n"] >= 1000:
        used = big["collector_cpu"] + big["pg_cpu"]
        # What N targets cost at 15 s from the CPU time per scrape handled: the same as `used`
        # when the collector keeps up, and still meaningful when a busy machine starves it.
        need = (big["cpu_per_scrape"] + big["pg_per_scrape"]) * big["n"] / INTERVAL
        kept_up = big["diag"]["scrapes"] >= 0.9 * big["n"] * big["wall"] / INTERVAL
        checks.append(
            (
                f"N={big['n']:,}: collector + its PostgreSQL backends under half the 2 cores",
                kept_up and need < 1.0,
                (
                    f"{need:.0%} of one core from {1000 * big['cpu_per_scrape']:.2f} ms collector"
                    f" + {1000 * big['pg_per_scrape']:.2f} ms PostgreSQL CPU per scrape"
                    if kept_up
                    else "the collector did not keep up (fewer than 90% of the scrapes stored)"
                )
                + f" (measured over the window: {used:.0%}, collector alone"
                f" {big['collector_cpu']:.0%})",
            )
        )
    # A minute of a fleet is a handful of samples per series, too few for chunks to pay off
    # (their per-chunk overhead dominates): the day of one server is the figure to judge.
    naive = big["naive"] / max(big["rows"], 1)
    if day is not None:
        checks.append(
            (
                "bytes per sample at least 4x smaller than a plain (series_id, ts, value) row",
                naive / day["bytes"] >= 4,
                f"{day['bytes']:.2f} B/sample in chunks after a day vs {naive:.1f} B for the"
                f" keyed naive row: {naive / day['bytes']:.1f}x",
            )
        )
    if day is not None:
        checks.append(
            (
                "24 h of one server answers in under 100 ms",
                day["wall"] < 0.1,
                f"median {day['wall'] * 1000:.0f} ms (worst {day['worst'] * 1000:.0f} ms,"
                f" load {day['load']:.1f})",
            )
        )
    failed = 0
    for what, ok, detail in checks:
        failed += not ok
        print(f"{'PASS' if ok else 'FAIL'}  {what}: {detail}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
