"""Generated series and a corpus of PromQL queries for comparing vpsmon with Prometheus.

The data has what real fleets have: counters with resets, gauges with NaN, a series with a gap
longer than the lookback, a series that ends, scrape jitter (millisecond timestamps), classic
histogram buckets and an info metric for group_left joins. Deterministic (seeded).
"""

from __future__ import annotations

import contextlib
import math
import random
import subprocess
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tests.conftest import free_port, require_binary

START = 1_700_000_000.0  # 2023-11-14T22:13:20Z, a whole-second boundary
DURATION = 2 * 3600.0
INTERVAL = 15.0
END = START + DURATION


@dataclass
class GeneratedSeries:
    labels: dict[str, str]
    timestamps: list[float]
    values: list[float]


def _times(rng: random.Random, start: float, end: float) -> list[float]:
    out = []
    t = start
    while t <= end:
        # Scrape jitter of up to ±300 ms, kept at millisecond precision like Prometheus, and
        # an occasional failed scrape, so window edges fall at every distance from samples.
        if rng.random() > 0.08 or not out:
            out.append(round(t + rng.uniform(-0.3, 0.3), 3))
        t += INTERVAL
    return out


def memory_source() -> Any:
    """The generated series in the engine's in-memory source (what Prometheus is given)."""
    from vpsmon.collector.promql import MemorySource

    source = MemorySource()
    for s in generate():
        for t, v in zip(s.timestamps, s.values, strict=True):
            source.add(s.labels, t, v)
    return source


def generate() -> list[GeneratedSeries]:
    rng = random.Random(8)
    series: list[GeneratedSeries] = []
    codes = {"200": 5.0, "404": 0.4, "500": 0.1}
    for instance in ("web-1", "web-2", "db-1"):
        for code, per_second in codes.items():
            ts = _times(rng, START, END)
            value = rng.uniform(0, 1000)
            values = []
            for i, _ in enumerate(ts):
                if i and rng.random() < 0.01:
                    value = rng.uniform(0, 5)  # a process restart resets the counter
                else:
                    value += max(0.0, rng.gauss(per_second * INTERVAL, per_second * 3))
                values.append(round(value, 3))
            labels = {
                "__name__": "dt_requests_total",
                "job": "node",
                "instance": instance,
                "code": code,
            }
            series.append(GeneratedSeries(labels, ts, values))
    for instance, base in (("web-1", 2e8), ("web-2", 3e8), ("db-1", 8e8)):
        ts = _times(rng, START, END)
        values = []
        level = base
        for _ in ts:
            level = max(1e6, level + rng.gauss(0, base * 0.01))
            values.append(float(round(level)))
        if instance == "web-2":
            # A gap of 12 minutes (longer than the 5 minute lookback) in the middle.
            keep = [i for i, t in enumerate(ts) if not (START + 3000 <= t < START + 3720)]
            ts, values = [ts[i] for i in keep], [values[i] for i in keep]
        if instance == "db-1":
            values[100] = math.nan  # a NaN sample (not a staleness marker)
        labels = {"__name__": "dt_memory_bytes", "job": "node", "instance": instance}
        series.append(GeneratedSeries(labels, ts, values))
    # A series that stops half-way (its target went away).
    ts = _times(rng, START, START + DURATION / 2)
    series.append(
        GeneratedSeries(
            {"__name__": "dt_memory_bytes", "job": "node", "instance": "gone"},
            ts,
            [float(1e8 + i * 1000) for i in range(len(ts))],
        )
    )
    for instance, region in (("web-1", "eu"), ("web-2", "us"), ("db-1", "eu")):
        ts = _times(rng, START, END)
        series.append(
            GeneratedSeries(
                {"__name__": "dt_info", "instance": instance, "region": region},
                ts,
                [1.0] * len(ts),
            )
        )
    bounds = ["0.05", "0.1", "0.25", "0.5", "1", "2.5", "+Inf"]
    for instance in ("web-1", "web-2"):
        ts = _times(rng, START, END)
        counts = [0.0] * len(bounds)
        per_bucket: list[list[float]] = [[] for _ in bounds]
        for _ in ts:
            for _ in range(rng.randint(5, 40)):
                latency = rng.expovariate(4.0)
                for b, bound in enumerate(bounds):
                    if latency <= float(bound):
                        counts[b] += 1
            for b in range(len(bounds)):
                per_bucket[b].append(counts[b])
        for b, bound in enumerate(bounds):
            labels = {
                "__name__": "dt_latency_seconds_bucket",
                "job": "node",
                "instance": instance,
                "le": bound,
            }
            series.append(GeneratedSeries(labels, ts, per_bucket[b]))
    return series


def openmetrics(series: list[GeneratedSeries]) -> str:
    """The series as OpenMetrics text for `promtool tsdb create-blocks-from openmetrics`."""
    lines = []
    by_name: dict[str, list[GeneratedSeries]] = {}
    for s in series:
        by_name.setdefault(s.labels["__name__"], []).append(s)
    for name, members in by_name.items():
        lines.append(f"# TYPE {name} unknown")
        for s in members:
            pairs = ",".join(f'{k}="{v}"' for k, v in sorted(s.labels.items()) if k != "__name__")
            for t, v in zip(s.timestamps, s.values, strict=True):
                lines.append(f"{name}{{{pairs}}} {_om_value(v)} {t:.3f}")
    lines.append("# EOF")
    return "\n".join(lines) + "\n"


def _om_value(v: float) -> str:
    if math.isnan(v):
        return "NaN"
    return repr(v)


def exposition(series: list[GeneratedSeries]) -> str:
    """The series as Prometheus text exposition with millisecond timestamps (for import)."""
    lines = []
    for s in series:
        name = s.labels["__name__"]
        pairs = ",".join(f'{k}="{v}"' for k, v in sorted(s.labels.items()) if k != "__name__")
        for t, v in zip(s.timestamps, s.values, strict=True):
            lines.append(f"{name}{{{pairs}}} {_om_value(v)} {round(t * 1000)}")
    return "\n".join(lines) + "\n"


# Instant queries, evaluated at every time in INSTANT_TIMES.
QUERIES = [
    "dt_requests_total",
    'dt_requests_total{code=~"5..|404", instance!="db-1"}',
    'dt_memory_bytes{instance!~"web-.*"}',
    "dt_memory_bytes offset 7m",
    f"dt_memory_bytes @ {START + 1800:.0f}",
    "rate(dt_requests_total[5m])",
    "irate(dt_requests_total[1m])",
    "increase(dt_requests_total[10m])",
    "increase(dt_requests_total[2m] offset 3m)",
    "delta(dt_memory_bytes[10m])",
    "idelta(dt_memory_bytes[5m])",
    "deriv(dt_memory_bytes[10m])",
    "predict_linear(dt_memory_bytes[30m], 3600)",
    "resets(dt_requests_total[30m])",
    "changes(dt_memory_bytes[10m])",
    "holt_winters(dt_memory_bytes[10m], 0.3, 0.4)",
    "avg_over_time(dt_memory_bytes[10m])",
    "min_over_time(dt_memory_bytes[10m])",
    "max_over_time(dt_memory_bytes[10m])",
    "sum_over_time(dt_memory_bytes[3m])",
    "count_over_time(dt_memory_bytes[7m])",
    "last_over_time(dt_memory_bytes[10m])",
    "quantile_over_time(0.9, dt_memory_bytes[10m])",
    "stddev_over_time(dt_memory_bytes[10m])",
    "stdvar_over_time(dt_memory_bytes[10m])",
    "present_over_time(dt_memory_bytes[10m])",
    'absent_over_time(dt_memory_bytes{instance="gone"}[5m])',
    'absent(dt_memory_bytes{instance="gone", job="node"})',
    "absent(nonexistent)",
    "abs(-dt_memory_bytes)",
    "ceil(dt_memory_bytes / 1e6)",
    "floor(dt_memory_bytes / 1e6)",
    "round(dt_memory_bytes / 1e6, 0.5)",
    "sqrt(dt_memory_bytes)",
    "exp(dt_info)",
    "ln(dt_memory_bytes)",
    "log2(dt_memory_bytes)",
    "log10(dt_memory_bytes)",
    "sgn(deriv(dt_memory_bytes[5m]))",
    "clamp(dt_memory_bytes, 2.5e8, 5e8)",
    "clamp_min(dt_memory_bytes, 3e8)",
    "clamp_max(dt_memory_bytes, 3e8)",
    "timestamp(dt_memory_bytes)",
    "time()",
    "vector(time())",
    "scalar(sum(dt_info))",
    "hour(timestamp(dt_info))",
    "minute()",
    "day_of_week()",
    "day_of_month(timestamp(dt_info))",
    "day_of_year()",
    "days_in_month()",
    "month()",
    "year()",
    'label_replace(dt_info, "host", "$1", "instance", "(.*)-[0-9]+")',
    'label_join(dt_info, "id", "/", "instance", "region")',
    "sort_desc(rate(dt_requests_total[5m]))",
    "sort(dt_memory_bytes)",
    "histogram_quantile(0.9, sum by (le) (rate(dt_latency_seconds_bucket[5m])))",
    "histogram_quantile(0.5, rate(dt_latency_seconds_bucket[10m]))",
    "sum by (code) (rate(dt_requests_total[5m]))",
    "sum without (instance, code) (rate(dt_requests_total[5m]))",
    "avg by (instance) (dt_memory_bytes)",
    "min(dt_memory_bytes)",
    "max by (job) (dt_memory_bytes)",
    "count by (instance) (dt_requests_total)",
    'count_values("mb", round(dt_memory_bytes / 1e8))',
    "group by (instance) (dt_requests_total)",
    "stddev by (code) (rate(dt_requests_total[5m]))",
    "stdvar(rate(dt_requests_total[5m]))",
    "topk(3, rate(dt_requests_total[5m]))",
    "bottomk by (instance) (1, rate(dt_requests_total[5m]))",
    "quantile(0.75, rate(dt_requests_total[5m]))",
    "rate(dt_requests_total[5m]) / ignoring(code) group_left sum without (code) "
    "(rate(dt_requests_total[5m]))",
    "dt_memory_bytes * on(instance) group_left(region) dt_info",
    "dt_info * on(instance) group_right(region) dt_memory_bytes",
    "dt_memory_bytes > 3e8",
    "dt_memory_bytes > bool 3e8",
    "3e8 < dt_memory_bytes",
    "rate(dt_requests_total[5m]) > on(instance, code) group_left irate(dt_requests_total[1m])",
    "dt_memory_bytes and on(instance) dt_info",
    'dt_memory_bytes or dt_info{region="us"}',
    'dt_memory_bytes unless on(instance) dt_info{region="eu"}',
    "-dt_memory_bytes",
    "dt_memory_bytes % 7",
    "dt_info ^ 2",
    "dt_memory_bytes / 0",
    "dt_memory_bytes atan2 1e8",
    "1 + 2 * 3 - 4 / 2 ^ 2",
    "2 > bool 1",
    "max_over_time(rate(dt_requests_total[5m])[30m:1m])",
    "avg_over_time(dt_memory_bytes[10m:30s] offset 5m)",
    "rate(dt_requests_total[5m:15s])",
    f"min_over_time(dt_memory_bytes[20m:1m] @ {START + 3600:.0f})",
]

# Queries also run as range queries over RANGES.
RANGE_QUERIES = [
    "dt_memory_bytes",
    "rate(dt_requests_total[5m])",
    "sum by (instance) (increase(dt_requests_total[3m]))",
    "deriv(dt_memory_bytes[10m])",
    "histogram_quantile(0.99, sum by (le, instance) (rate(dt_latency_seconds_bucket[5m])))",
    "dt_memory_bytes * on(instance) group_left(region) dt_info",
    "topk(2, dt_memory_bytes)",
    'absent(dt_memory_bytes{instance="gone"})',
    "max_over_time(irate(dt_requests_total[1m])[10m:1m])",
    "timestamp(dt_memory_bytes)",
    "time()",
    f"dt_memory_bytes @ {START + 600:.0f}",
    "dt_memory_bytes > bool 3e8",
    "changes(dt_memory_bytes[5m])",
]

INSTANT_TIMES = [
    START - 60,  # before any data
    START + 45.5,  # windows reaching before the first sample
    START + 1800,
    START + 3000 + 200,  # inside the gap of web-2, within the lookback
    START + 3000 + 400,  # inside the gap, beyond the lookback
    START + DURATION / 2 + 100,  # just after "gone" stopped
    START + DURATION / 2 + 301,  # "gone" is beyond the lookback
    END - 7.25,
]

RANGES = [
    (START - 300, START + 1200, 60.0),
    (START + 2700, START + 4200, 37.0),
    (END - 1800, END + 600, 300.0),
]


def boundary_times(series: list[GeneratedSeries]) -> list[float]:
    """Times exactly 5 minutes (and 1 ms more) after the last sample of the series that ends:
    the lookback and range windows include a sample exactly at their start."""
    gone = next(s for s in series if s.labels.get("instance") == "gone")
    return [gone.timestamps[-1] + 300, gone.timestamps[-1] + 300.001]


@contextlib.contextmanager
def run_prometheus(work: Path) -> Iterator[str]:
    """Debian's prometheus serving the generated series from a TSDB made by promtool."""
    promtool = require_binary("promtool")
    binary = require_binary("prometheus")
    data = work / "data"
    om = work / "data.om"
    om.write_text(openmetrics(generate()))
    subprocess.run(
        [promtool, "tsdb", "create-blocks-from", "openmetrics", str(om), str(data)],
        check=True,
        capture_output=True,
        timeout=120,
    )
    config = work / "prometheus.yml"
    config.write_text("global:\n  scrape_interval: 1h\n")
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    with (work / "prometheus.log").open("w") as log:
        proc = subprocess.Popen(
            [
                binary,
                f"--config.file={config}",
                f"--storage.tsdb.path={data}",
                "--storage.tsdb.retention.time=100y",
                f"--web.listen-address=127.0.0.1:{port}",
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        try:
            deadline = time.monotonic() + 60
            while True:
                try:
                    ready = urllib.request.urlopen(base + "/-/ready", timeout=2)  # noqa: S310
                    with ready as resp:
                        if resp.status == 200:
                            break
                except OSError:
                    pass
                if time.monotonic() > deadline or proc.poll() is not None:
                    raise RuntimeError((work / "prometheus.log").read_text())
                time.sleep(0.2)
            yield base
        finally:
            proc.terminate()
            proc.wait(timeout=30)


def _number(text: str) -> float:
    return float(text)  # Go's "+Inf", "-Inf", "NaN" parse as Python floats too


def _close(a: float, b: float) -> bool:
    if math.isnan(a) or math.isnan(b):
        return math.isnan(a) and math.isnan(b)
    if a == b:
        return True
    return abs(a - b) <= 1e-9 * max(abs(a), abs(b)) or abs(a - b) < 1e-9


def _key(metric: dict[str, str]) -> tuple[tuple[str, str], ...]:
    return tuple(sorted(metric.items()))


def compare(query: str, ours: dict[str, Any], theirs: dict[str, Any]) -> list[str]:
    """Differences between two /api/v1/query(_range) data members."""
    problems: list[str] = []
    if ours["resultType"] != theirs["resultType"]:
        return [f"{query}: result type {ours['resultType']} != {theirs['resultType']}"]
    kind = ours["resultType"]
    if kind in ("scalar", "string"):
        (t1, v1), (t2, v2) = ours["result"], theirs["result"]
        if t1 != t2 or not (_close(_number(v1), _number(v2)) if kind == "scalar" else v1 == v2):
            problems.append(f"{query}: {ours['result']} != {theirs['result']}")
        return problems
    mine = {_key(r["metric"]): r for r in ours["result"]}
    real = {_key(r["metric"]): r for r in theirs["result"]}
    if mine.keys() != real.keys():
        return [
            f"{query}: series differ: only ours {sorted(mine.keys() - real.keys())}, "
            f"only Prometheus {sorted(real.keys() - mine.keys())}"
        ]
    for key, r in real.items():
        points_real = [r["value"]] if kind == "vector" else r["values"]
        points_mine = [mine[key]["value"]] if kind == "vector" else mine[key]["values"]
        if [p[0] for p in points_mine] != [p[0] for p in points_real]:
            problems.append(
                f"{query} {dict(key)}: timestamps {[p[0] for p in points_mine]} != "
                f"{[p[0] for p in points_real]}"
            )
            continue
        for (t, a), (_, b) in zip(points_mine, points_real, strict=True):
            if not _close(_number(a), _number(b)):
                problems.append(f"{query} {dict(key)} at {t}: ours {a}, Prometheus {b}")
                break
    if query.startswith(("sort", "topk", "bottomk")) and kind == "vector":
        order_mine = [_key(r["metric"]) for r in ours["result"]]
        order_real = [_key(r["metric"]) for r in theirs["result"]]
        if query.startswith("sort") and order_mine != order_real:
            problems.append(f"{query}: order {order_mine} != {order_real}")
    return problems
