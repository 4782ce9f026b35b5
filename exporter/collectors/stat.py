"""stat: boot time, context switches, forks, interrupts and run queue from /proc/stat.

The same names, types and HELP texts as node_exporter's stat collector.
"""

from __future__ import annotations

from dataclasses import dataclass

from vpsmon.exporter.collectors.base import CollectorSpec, Context, stateless
from vpsmon.exporter.metrics import MetricFamily, counter, gauge


@dataclass(frozen=True, slots=True)
class KernelStats:
    boot_time: float
    context_switches: float
    forks: float
    interrupts: float
    procs_running: float
    procs_blocked: float


# /proc/stat key → KernelStats field; "intr" is followed by per-IRQ counts, its first is the total.
_KEYS = {
    "btime": "boot_time",
    "ctxt": "context_switches",
    "processes": "forks",
    "intr": "interrupts",
    "procs_running": "procs_running",
    "procs_blocked": "procs_blocked",
}


def parse_stat(text: str) -> KernelStats:
    values: dict[str, float] = {}
    for line in text.splitlines():
        key, _, rest = line.partition(" ")
        if key in _KEYS:
            first = rest.split(maxsplit=1)[0] if rest.strip() else ""
            values[_KEYS[key]] = float(first)
    missing = sorted(set(_KEYS.values()) - values.keys())
    if missing:
        raise ValueError(f"/proc/stat: missing {', '.join(missing)}")
    return KernelStats(**values)


def stat_families(stats: KernelStats) -> list[MetricFamily]:
    rows = (
        (gauge, "node_boot_time_seconds", "Node boot time, in unixtime.", stats.boot_time),
        (
            counter,
            "node_context_switches_total",
            "Total number of context switches.",
            stats.context_switches,
        ),
        (counter, "node_forks_total", "Total number of forks.", stats.forks),
        (counter, "node_intr_total", "Total number of interrupts serviced.", stats.interrupts),
        (
            gauge,
            "node_procs_running",
            "Number of processes in runnable state.",
            stats.procs_running,
        ),
        (
            gauge,
            "node_procs_blocked",
            "Number of processes blocked waiting for I/O to complete.",
            stats.procs_blocked,
        ),
    )
    families = []
    for make, name, help_text, value in rows:
        family = make(name, help_text)
        family.add(value)
        families.append(family)
    return families


def collect(context: Context) -> list[MetricFamily]:
    return stat_families(parse_stat((context.proc / "stat").read_text()))


SPEC = CollectorSpec(
    name="stat",
    help="Boot time, context switches, forks, interrupts and run queue from /proc/stat.",
    create=stateless(collect),
)
