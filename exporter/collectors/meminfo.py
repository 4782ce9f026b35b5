"""meminfo: one node_memory_* gauge per /proc/meminfo field (node_exporter's meminfo).

node_exporter's naming: "Active(anon)" becomes "Active_anon"; a field with a unit (always kB)
is multiplied by 1024 and gets `_bytes`; a field without one (HugePages_Total) keeps its name.
"""

from __future__ import annotations

import re

from vpsmon.exporter.collectors.base import CollectorSpec, Context, stateless
from vpsmon.exporter.metrics import MetricFamily, gauge

_PARENS = re.compile(r"\((.*)\)")


def parse_meminfo(text: str) -> list[tuple[str, float]]:
    """(metric suffix, value) per line, e.g. ("MemTotal_bytes", 25276514304.0)."""
    fields: list[tuple[str, float]] = []
    for line in text.splitlines():
        parts = line.split()
        if not parts:
            continue
        if not parts[0].endswith(":") or len(parts) not in (2, 3):
            raise ValueError(f"/proc/meminfo: malformed line {line!r}")
        key = _PARENS.sub(r"_\1", parts[0][:-1])
        value = float(parts[1])
        if len(parts) == 3:
            # The kernel only ever writes "kB" here (fs/proc/meminfo.c), as node_exporter presumes.
            value *= 1024
            key += "_bytes"
        fields.append((key, value))
    return fields


def meminfo_families(fields: list[tuple[str, float]]) -> list[MetricFamily]:
    families: dict[str, MetricFamily] = {}
    for key, value in fields:
        if key in families:
            # A repeated field would make a duplicate series; the first one wins.
            continue
        family = gauge(f"node_memory_{key}", f"Memory information field {key}.")
        family.add(value)
        families[key] = family
    return list(families.values())


def collect(context: Context) -> list[MetricFamily]:
    return meminfo_families(parse_meminfo((context.proc / "meminfo").read_text()))


SPEC = CollectorSpec(
    name="meminfo",
    help="Memory statistics (node_memory_*) from /proc/meminfo.",
    create=stateless(collect),
)
