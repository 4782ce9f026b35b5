"""loadavg: node_load1, node_load5, node_load15 from /proc/loadavg (node_exporter's loadavg)."""

from __future__ import annotations

from vpsmon.exporter.collectors.base import CollectorSpec, Context, stateless
from vpsmon.exporter.metrics import MetricFamily, gauge


def parse_loadavg(text: str) -> tuple[float, float, float]:
    """The 1, 5 and 15 minute averages: the first three fields of /proc/loadavg."""
    fields = text.split()
    if len(fields) < 3:
        raise ValueError(f"/proc/loadavg: expected at least 3 fields, got {text!r}")
    return float(fields[0]), float(fields[1]), float(fields[2])


def loadavg_families(loads: tuple[float, float, float]) -> list[MetricFamily]:
    families = []
    for minutes, value in zip((1, 5, 15), loads, strict=True):
        family = gauge(f"node_load{minutes}", f"{minutes}m load average.")
        family.add(value)
        families.append(family)
    return families


def collect(context: Context) -> list[MetricFamily]:
    return loadavg_families(parse_loadavg((context.proc / "loadavg").read_text()))


SPEC = CollectorSpec(
    name="loadavg",
    help="Load averages (node_load1, node_load5, node_load15) from /proc/loadavg.",
    create=stateless(collect),
)
