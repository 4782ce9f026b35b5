"""time: node_time_seconds, the time zone offset and the clock source (node_exporter's time).

The wall clock is what this collector measures, so it reads it in `collect` and hands it to
the pure `time_families`.
"""

from __future__ import annotations

import time as _time
from pathlib import Path

from vpsmon.exporter.collectors.base import CollectorSpec, Context, stateless
from vpsmon.exporter.metrics import MetricFamily, gauge


def time_families(now: float, zone: str, offset_seconds: float) -> list[MetricFamily]:
    seconds = gauge("node_time_seconds", "System time in seconds since epoch (1970).")
    seconds.add(now)
    offset = gauge(
        "node_time_zone_offset_seconds", "System time zone offset in seconds.", "time_zone"
    )
    offset.add(offset_seconds, zone)
    return [seconds, offset]


def read_clocksources(sys: Path) -> list[tuple[str, list[str], str]]:
    """(device number, available clock sources, current one) per clocksourceN directory."""
    base = sys / "devices" / "system" / "clocksource"
    try:
        entries = sorted(base.iterdir())
    except FileNotFoundError:
        return []
    sources = []
    for entry in entries:
        device = entry.name.removeprefix("clocksource")
        if device == entry.name or not device.isdigit():
            continue
        available = (entry / "available_clocksource").read_text().split()
        current = (entry / "current_clocksource").read_text().strip()
        sources.append((device, available, current))
    return sources


def clocksource_families(sources: list[tuple[str, list[str], str]]) -> list[MetricFamily]:
    available = gauge(
        "node_time_clocksource_available_info",
        "Available clocksources read from '/sys/devices/system/clocksource'.",
        "clocksource",
        "device",
    )
    current = gauge(
        "node_time_clocksource_current_info",
        "Current clocksource read from '/sys/devices/system/clocksource'.",
        "clocksource",
        "device",
    )
    for device, names, name in sources:
        for source in names:
            available.add(1, source, device)
        current.add(1, name, device)
    return [f for f in (available, current) if f.samples]


def collect(context: Context) -> list[MetricFamily]:
    now = _time.time()
    local = _time.localtime(now)
    families = time_families(now, local.tm_zone, float(local.tm_gmtoff))
    return families + clocksource_families(read_clocksources(context.sys))


SPEC = CollectorSpec(
    name="time",
    help="System time, time zone offset and clock source (node_time_*).",
    create=stateless(collect),
)
