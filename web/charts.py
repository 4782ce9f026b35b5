"""The detail page's charts: which series each chart needs and how its lines are computed.

One function, `build`, turns samples laid on a time grid (one value per series per grid step,
``None`` where the step has none) into every chart's lines. History and live use it alike:
history grids come from the database (bucketed to about 1,000 steps), the live grid is a
server's last two scrapes from the head. Counters become per-second rates the way PromQL's
``rate()`` treats them: a lower value than the one before is a counter reset, and everything
after a reset counts as growth.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from vpsmon.collector.head import ServerState
from vpsmon.collector.scrape.target import Labels
from vpsmon.collector.traffic import is_counted_interface

Values = list[float | None]

# Gauges are averaged within a step; counters keep the step's last (largest) reading.
GAUGES = (
    "node_memory_MemTotal_bytes",
    "node_memory_MemAvailable_bytes",
    "node_memory_Buffers_bytes",
    "node_memory_Cached_bytes",
    "node_memory_SwapTotal_bytes",
    "node_memory_SwapFree_bytes",
    "node_load1",
    "node_load5",
    "node_load15",
    "node_filesystem_size_bytes",
    "node_filesystem_avail_bytes",
    "node_netstat_Tcp_CurrEstab",
    "node_sockstat_TCP_inuse",
    "node_sockstat_TCP_tw",
    "node_procs_running",
    "node_procs_blocked",
    "node_hwmon_temp_celsius",
)
COUNTERS = (
    "node_cpu_seconds_total",
    "node_disk_read_bytes_total",
    "node_disk_written_bytes_total",
    "node_network_receive_bytes_total",
    "node_network_transmit_bytes_total",
)
METRICS = GAUGES + COUNTERS

# node_exporter's default --collector.diskstats.device-exclude: partitions and pseudo devices
# would count the same bytes twice.
_DISK_EXCLUDE = re.compile(r"^(z?ram|loop|fd|(h|s|v|xv)d[a-z]|nvme\d+n\d+p)\d+$")
_FS_EXCLUDE = {"tmpfs", "devtmpfs", "overlay", "squashfs", "ramfs", "autofs", "proc", "sysfs"}
CPU_MODES = ("user", "system", "iowait", "steal", "irq", "softirq", "nice")


@dataclass
class GridSeries:
    """One stored series on the grid.

    ``times`` are the actual sample times (rates between two readings, the live view); when
    the storage already summed a counter's ``increase`` per step (history), that is used.
    """

    metric: str
    labels: Mapping[str, str]
    values: Values
    times: Values
    increase: Values | None = None
    step: float = 0.0


def _sum(columns: Iterable[Values], length: int) -> Values:
    out: Values | None = None
    for col in columns:
        if out is None:
            out = list(col)
        else:
            out = [
                b if a is None else a if b is None else a + b for a, b in zip(out, col, strict=True)
            ]
    return [None] * length if out is None else out


def rate(series: GridSeries, max_gap: int) -> Values:
    """Per-second growth between a step and the previous step that has a reading."""
    if series.increase is not None and series.step > 0:
        return [None if v is None else v / series.step for v in series.increase]
    out: Values = [None] * len(series.values)
    last_i: int | None = None
    for i, v in enumerate(series.values):
        if v is None:
            continue
        if last_i is not None and i - last_i <= max_gap:
            before = series.values[last_i]
            t0, t1 = series.times[last_i], series.times[i]
            assert before is not None and t0 is not None and t1 is not None
            if t1 > t0:
                out[i] = (v - before if v >= before else v) / (t1 - t0)
        last_i = i
    return out


def _ratio(num: Values, den: Values, scale: float = 1.0) -> Values:
    return [(n / d * scale) if n is not None and d else None for n, d in zip(num, den, strict=True)]


def _diff(a: Values, b: Values) -> Values:
    return [x - y if x is not None and y is not None else None for x, y in zip(a, b, strict=True)]


def _line(name: str, values: Values) -> dict[str, Any]:
    # Four significant digits, None for what JSON cannot carry; a day's history rounds some
    # 20,000 values. round() to the digits log10 gives equals float(f"{v:.4g}") (correctly
    # rounded both; checked on 1.3 million values and around every power of ten), at a third
    # of the cost.
    return {
        "name": name,
        "values": [
            None
            if v is None or v != v or v == _INF or v == -_INF
            else 0
            if v == 0
            else round(v, 3 - _floor(_log10(abs(v))))
            for v in values
        ],
    }


_INF = math.inf
_floor = math.floor
_log10 = math.log10


def _first(before: Values | None, values: Values) -> Values:
    """Where ``before`` has no value, take the one from ``values``."""
    if before is None:
        return values
    return [b if b is not None else v for b, v in zip(before, values, strict=True)]


def _has_data(values: Values) -> bool:
    return any(v is not None for v in values)


def build(series: Sequence[GridSeries], length: int, max_gap: int = 3) -> list[dict[str, Any]]:
    """Every chart's lines on a grid of ``length`` steps. Charts without data are left out."""
    by_metric: dict[str, list[GridSeries]] = {}
    for s in series:
        by_metric.setdefault(s.metric, []).append(s)

    def one(metric: str) -> Values:
        found = by_metric.get(metric)
        return _sum((s.values for s in found), length) if found else [None] * length

    charts: list[dict[str, Any]] = []

    # CPU by mode: each mode's share of all CPU time, summed over the CPUs.
    mode_rates: dict[str, Values] = {}
    for s in by_metric.get("node_cpu_seconds_total", []):
        mode = s.labels.get("mode", "")
        mode_rates[mode] = _sum([mode_rates.get(mode, [None] * length), rate(s, max_gap)], length)
    total = _sum(mode_rates.values(), length)
    cpu_lines = []
    for mode in CPU_MODES:
        if mode in mode_rates and _has_data(mode_rates[mode]):
            cpu_lines.append(_line(mode, _ratio(mode_rates[mode], total, 100.0)))
    if cpu_lines:
        charts.append({"id": "cpu", "unit": "percent", "series": cpu_lines})

    mem_total = one("node_memory_MemTotal_bytes")
    mem_used = _diff(mem_total, one("node_memory_MemAvailable_bytes"))
    cache = _sum([one("node_memory_Buffers_bytes"), one("node_memory_Cached_bytes")], length)
    swap_used = _diff(one("node_memory_SwapTotal_bytes"), one("node_memory_SwapFree_bytes"))
    if _has_data(mem_used):
        lines = [_line("used", mem_used), _line("cache", cache)]
        if any(v for v in swap_used if v):
            lines.append(_line("swap", swap_used))
        charts.append({"id": "memory", "unit": "bytes", "series": lines})

    loads = [(n, one(f"node_load{n}")) for n in ("1", "5", "15")]
    if _has_data(loads[0][1]):
        charts.append({"id": "load", "unit": "number", "series": [_line(n, v) for n, v in loads]})

    sizes: dict[str, Values] = {}
    for s in by_metric.get("node_filesystem_size_bytes", []):
        if s.labels.get("fstype", "") not in _FS_EXCLUDE:
            mount = s.labels.get("mountpoint", "")
            sizes[mount] = _first(sizes.get(mount), s.values)
    # One line per mount point, even if the device behind it changed within the range.
    by_mount: dict[str, Values] = {}
    for avail in by_metric.get("node_filesystem_avail_bytes", []):
        mount = avail.labels.get("mountpoint", "")
        size = sizes.get(mount)
        if size is None:
            continue
        share = _ratio(_diff(size, avail.values), size, 100.0)
        by_mount[mount] = _first(by_mount.get(mount), share)
    disk_lines = [_line(mount, values) for mount, values in by_mount.items()]
    if disk_lines:
        disk_lines.sort(key=lambda line: (line["name"] != "/", line["name"]))
        charts.append({"id": "disk", "unit": "percent", "series": disk_lines[:12]})

    def device_rates(metric: str) -> Values:
        return _sum(
            (
                rate(s, max_gap)
                for s in by_metric.get(metric, [])
                if not _DISK_EXCLUDE.match(s.labels.get("device", ""))
            ),
            length,
        )

    read, written = (
        device_rates("node_disk_read_bytes_total"),
        device_rates("node_disk_written_bytes_total"),
    )
    if _has_data(read) or _has_data(written):
        charts.append(
            {
                "id": "diskio",
                "unit": "bytes/s",
                "series": [_line("read", read), _line("write", written)],
            }
        )

    net_lines = []
    for direction, metric in (
        ("rx", "node_network_receive_bytes_total"),
        ("tx", "node_network_transmit_bytes_total"),
    ):
        for s in sorted(by_metric.get(metric, []), key=lambda s: s.labels.get("device", "")):
            device = s.labels.get("device", "")
            if is_counted_interface(device):
                net_lines.append(_line(f"{device} {direction}", rate(s, max_gap)))
    if net_lines:
        charts.append({"id": "net", "unit": "bytes/s", "series": net_lines[:16]})

    tcp = [
        ("established", one("node_netstat_Tcp_CurrEstab")),
        ("inuse", one("node_sockstat_TCP_inuse")),
        ("tw", one("node_sockstat_TCP_tw")),
    ]
    tcp_lines = [_line(n, v) for n, v in tcp if _has_data(v)]
    if tcp_lines:
        charts.append({"id": "tcp", "unit": "number", "series": tcp_lines})

    procs = [("running", one("node_procs_running")), ("blocked", one("node_procs_blocked"))]
    if _has_data(procs[0][1]):
        charts.append({"id": "procs", "unit": "number", "series": [_line(n, v) for n, v in procs]})

    temps = [
        _line(f"{s.labels.get('chip', '')} {s.labels.get('sensor', '')}".strip(), s.values)
        for s in by_metric.get("node_hwmon_temp_celsius", [])
        if _has_data(s.values)
    ]
    if temps:
        temps.sort(key=lambda line: line["name"])
        charts.append({"id": "temp", "unit": "celsius", "series": temps[:12]})
    return charts


def live_point(state: ServerState) -> dict[str, Any] | None:
    """The charts' newest point from a server's last two scrapes (for the live view)."""
    cur, prev = state.current, state.previous
    if cur is None or prev is None:
        return None
    wanted = set(METRICS)
    keys: set[tuple[str, Labels]] = {k for k in cur.values if k[0] in wanted}
    grid = [
        GridSeries(
            name,
            dict(labels),
            [prev.values.get((name, labels)), cur.values[(name, labels)]],
            [prev.timestamp, cur.timestamp],
        )
        for name, labels in keys
    ]
    charts = build(grid, 2, max_gap=1)
    return {
        "t": cur.timestamp,
        "charts": {c["id"]: {s["name"]: s["values"][1] for s in c["series"]} for c in charts},
    }
