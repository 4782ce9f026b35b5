"""PromQL engine benchmark (issue #8; results in docs/benchmarks.md).

1. **A day of one server**: node_exporter-like series (CPU counters per core and mode, memory,
   filesystems, network, load) at a 15 s interval for 24 h; dashboard range queries over the
   whole day at a 60 s step (1,441 points) and instant queries, timed over the in-memory source
   (the engine alone) and, when a database is given, over the storage reader on PostgreSQL.
2. **Alert rules over a fleet's head**: 1,000 servers with 10 minutes of recent samples each
   (the head's window), 200 alert-rule expressions evaluated as one cycle of instant queries.

    .venv/bin/python bench/promql.py [--database-url postgresql://...] [--repeat 5]
"""

from __future__ import annotations

import argparse
import asyncio
import math
import os
import platform
import random
import statistics
import sys
import time
from collections.abc import Awaitable, Callable

from vpsmon.collector.promql import Engine, MemorySource
from vpsmon.collector.storage.query import SampleSource

DAY = 86_400
INTERVAL = 15
END = 1_700_000_000 - 1_700_000_000 % 60
START = END - DAY
MODES = ("user", "system", "idle", "iowait", "irq", "softirq", "steal", "nice")


def one_server_day(rng: random.Random) -> list[tuple[dict[str, str], list[float], list[float]]]:
    base = {"job": "node", "instance": "web-1"}
    times = [float(t) for t in range(START, END + 1, INTERVAL)]
    out = []
    for cpu in range(4):
        for mode in MODES:
            share = {"idle": 0.7, "user": 0.15, "system": 0.08}.get(mode, 0.01)
            value, values = rng.uniform(0, 1e5), []
            for _ in times:
                value += INTERVAL * share * rng.uniform(0.5, 1.5)
                values.append(round(value, 2))
            labels = {"__name__": "node_cpu_seconds_total", **base, "cpu": str(cpu), "mode": mode}
            out.append((labels, times, values))
    total = 8 * 2**30
    for name, level in (
        ("node_memory_MemTotal_bytes", total),
        ("node_memory_MemAvailable_bytes", total / 2),
    ):
        values = [
            float(round(level + (0 if "Total" in name else rng.gauss(0, 2**28)))) for _ in times
        ]
        out.append(({"__name__": name, **base}, times, values))
    for mount in ("/", "/var", "/home"):
        avail, values = 50e9, []
        for _ in times:
            avail -= rng.uniform(0, 2e4)
            values.append(round(avail))
        out.append(
            (
                {"__name__": "node_filesystem_avail_bytes", **base, "mountpoint": mount},
                times,
                values,
            )
        )
        out.append(
            (
                {"__name__": "node_filesystem_size_bytes", **base, "mountpoint": mount},
                times,
                [100e9] * len(times),
            )
        )
    for device in ("eth0", "lo"):
        for direction in ("receive", "transmit"):
            value, values = 0.0, []
            for _ in times:
                value += rng.uniform(1e4, 1e6) * INTERVAL
                values.append(value)
            labels = {"__name__": f"node_network_{direction}_bytes_total", **base, "device": device}
            out.append((labels, times, values))
    for name in ("node_load1", "node_load5", "node_load15"):
        out.append(({"__name__": name, **base}, times, [abs(rng.gauss(1, 0.5)) for _ in times]))
    return out


RANGE_QUERIES = [
    ("one raw series", "node_load1"),
    ("rate of one counter", 'rate(node_network_receive_bytes_total{device="eth0"}[5m])'),
    (
        "CPU busy % (32 counters)",
        '100 * (1 - avg by (instance) (rate(node_cpu_seconds_total{mode="idle"}[5m])))',
    ),
    ("memory used %", "100 * (1 - node_memory_MemAvailable_bytes / node_memory_MemTotal_bytes)"),
    (
        "disk used % by mount",
        "100 - 100 * node_filesystem_avail_bytes / node_filesystem_size_bytes",
    ),
    ("CPU by mode (sum by mode, 32 counters)", "sum by (mode) (irate(node_cpu_seconds_total[1m]))"),
    (
        "disk full in 24 h (predict_linear 6h)",
        "predict_linear(node_filesystem_avail_bytes[6h], 86400) < 0",
    ),
]

INSTANT_QUERIES = [
    (
        "CPU busy % now",
        '100 * (1 - avg by (instance) (rate(node_cpu_seconds_total{mode="idle"}[5m])))',
    ),
    ("max load over the day", "max_over_time(node_load1[1d])"),
    (
        "95th percentile of rx rate over the day (subquery)",
        "quantile_over_time(0.95, "
        'rate(node_network_receive_bytes_total{device="eth0"}[5m])[1d:5m])',
    ),
]


def fleet_head(rng: random.Random, servers: int) -> MemorySource:
    """10 minutes of samples per server, the head's recent window."""
    source = MemorySource()
    now = END
    times = [float(t) for t in range(now - 600, now + 1, INTERVAL)]
    for i in range(servers):
        base = {"job": "node", "instance": f"srv-{i:04d}"}
        source.add_series({"__name__": "up", **base}, [(t, 1.0) for t in times])
        for name, value in (
            ("node_load1", rng.uniform(0, 4)),
            ("node_memory_MemAvailable_bytes", rng.uniform(1e8, 4e9)),
        ):
            source.add_series({"__name__": name, **base}, [(t, value) for t in times])
        source.add_series(
            {"__name__": "node_memory_MemTotal_bytes", **base}, [(t, 4e9) for t in times]
        )
        for cpu in range(2):
            counter, points = rng.uniform(0, 1e5), []
            for t in times:
                counter += INTERVAL * rng.uniform(0.2, 1.0)
                points.append((t, counter))
            source.add_series(
                {"__name__": "node_cpu_seconds_total", **base, "cpu": str(cpu), "mode": "idle"},
                points,
            )
        avail = rng.uniform(1e9, 5e10)
        source.add_series(
            {"__name__": "node_filesystem_avail_bytes", **base, "mountpoint": "/"},
            [(t, avail - (t - times[0]) * 1e4) for t in times],
        )
        source.add_series(
            {"__name__": "node_filesystem_size_bytes", **base, "mountpoint": "/"},
            [(t, 1e11) for t in times],
        )
    return source


RULE_TEMPLATES = [
    "up == 0",
    "node_load1 > {x}",
    '100 * (1 - avg by (instance) (rate(node_cpu_seconds_total{{mode="idle"}}[5m]))) > {x}',
    "100 * (1 - node_memory_MemAvailable_bytes / node_memory_MemTotal_bytes) > {x}",
    "100 - 100 * node_filesystem_avail_bytes / node_filesystem_size_bytes > {x}",
    "predict_linear(node_filesystem_avail_bytes[5m], 86400) < {x}",
    "avg_over_time(node_load1[5m]) > {x}",
    'absent(up{{instance="srv-{n:04d}"}})',
    "sum by (job) (up) < {n}",
    "count(node_load1 > {x}) > 10",
]


def rules(count: int) -> list[str]:
    out = []
    for i in range(count):
        template = RULE_TEMPLATES[i % len(RULE_TEMPLATES)]
        out.append(template.format(x=(i % 7) + 1, n=i))
    return out


async def timed(fn: Callable[[], Awaitable[object]], repeat: int) -> tuple[float, float]:
    """Median wall time and median CPU time of the process (the host may be shared: CPU time
    is what the engine itself costs)."""
    wall, cpu = [], []
    for _ in range(repeat):
        began, began_cpu = time.perf_counter(), time.process_time()
        await fn()
        wall.append(time.perf_counter() - began)
        cpu.append(time.process_time() - began_cpu)
    return statistics.median(wall), statistics.median(cpu)


def ms(seconds: float) -> str:
    return f"{seconds * 1000:.1f} ms"


async def bench_day(source: SampleSource, label: str, repeat: int) -> None:
    engine = Engine(source)
    print(f"\n### A day of one server, {label}\n")
    print("| query | kind | points | wall (median) | CPU (median) |")
    print("|---|---|---|---|---|")
    for name, expr in RANGE_QUERIES:
        result = await engine.range_query(expr, START, END, 60)
        points = sum(len(s.values) for s in result)
        median, worst = await timed(lambda e=expr: engine.range_query(e, START, END, 60), repeat)
        print(
            f"| {name}: `{expr}` | range 24 h, step 60 s | {points} | {ms(median)} | {ms(worst)} |"
        )
    for name, expr in INSTANT_QUERIES:
        wall, cpu = await timed(lambda e=expr: engine.instant_query(e, END), repeat)
        print(f"| {name}: `{expr}` | instant | 1 | {ms(wall)} | {ms(cpu)} |")


async def bench_rules(servers: int, count: int, repeat: int) -> None:
    rng = random.Random(2)
    source = fleet_head(rng, servers)
    expressions = rules(count)
    print(f"\n### {count} alert rules over {servers} servers' head\n")
    print("| selector cache | rules | series | alerts | cycle wall | cycle CPU | CPU per rule |")
    print("|---|---|---|---|---|---|---|")
    for label, ttl, share in (
        ("off", 0.0, False),
        ("selections (5 s)", 5.0, False),
        ("selections and subexpressions (5 s), as the rule manager", 5.0, True),
    ):
        engine = Engine(source, selector_cache_ttl=ttl, share_subexpressions=share)

        async def cycle(e: Engine = engine) -> None:
            if e.cache is not None:
                e.cache.entries.clear()  # a cycle at a new time shares nothing with the last
            for expr in expressions:
                await e.instant_query(expr, END)

        firing = 0
        for expr in expressions:
            firing += len(await engine.instant_query(expr, END))  # type: ignore[arg-type]
        wall, cpu = await timed(cycle, repeat)
        print(
            f"| {label} | {count} | {servers * 9} | {firing} | {ms(wall)} | {ms(cpu)} "
            f"| {ms(cpu / count)} |"
        )


async def load_database(
    url: str, data: list[tuple[dict[str, str], list[float], list[float]]]
) -> SampleSource:
    from vpsmon.collector.storage.bulk import BulkSeries, append_series
    from vpsmon.collector.storage.db import connect_pool
    from vpsmon.collector.storage.migrate import migrate
    from vpsmon.collector.storage.reader import StorageReader

    pool = await connect_pool(url)
    await migrate(pool)
    series = [
        BulkSeries(
            labels["__name__"],
            tuple(sorted((k, v) for k, v in labels.items() if k != "__name__")),
            ts,
            vs,
        )
        for labels, ts, vs in data
    ]
    await append_series(pool, series)
    await pool.execute("ANALYZE")
    return StorageReader(pool)


async def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--database-url", default=os.environ.get("VPSMON_BENCH_DATABASE_URL"))
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--servers", type=int, default=1000)
    parser.add_argument("--rules", type=int, default=200)
    args = parser.parse_args(argv)
    print(f"Python {platform.python_version()}, {os.cpu_count()} CPUs, {platform.machine()}")
    data = one_server_day(random.Random(1))
    samples = sum(len(ts) for _, ts, _ in data)
    print(f"one server: {len(data)} series, {samples} samples over 24 h")
    memory = MemorySource()
    for labels, ts, vs in data:
        memory.add_series(labels, list(zip(ts, vs, strict=True)))
    await bench_day(memory, "in-memory source (engine alone)", args.repeat)
    if args.database_url:
        source = await load_database(args.database_url, data)
        await bench_day(source, "storage reader on PostgreSQL", args.repeat)
    await bench_rules(args.servers, args.rules, args.repeat)
    return 0 if math.isfinite(samples) else 1


if __name__ == "__main__":
    sys.exit(asyncio.run(main(sys.argv[1:])))
