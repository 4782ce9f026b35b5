"""cpu: node_cpu_seconds_total{cpu,mode} and node_cpu_guest_seconds_total from /proc/stat.

Like node_exporter, only the per-CPU lines (cpu0, cpu1, ...) are exposed, not the "cpu" total,
and `user`/`nice` still include guest time as the kernel counts it.
"""

from __future__ import annotations

from dataclasses import dataclass

from vpsmon.config import Setting, parse_bool
from vpsmon.exporter.collectors.base import CollectorSpec, Context, stateless
from vpsmon.exporter.metrics import MetricFamily, counter

# /proc/stat counts in USER_HZ, which the kernel fixes at 100 for user space on every
# architecture (include/asm-generic/param.h); node_exporter's procfs hardcodes it the same way.
USER_HZ = 100.0

# Column order of a "cpuN" line (proc(5)); the first eight are node_exporter's modes.
_COLUMNS = (
    "user",
    "nice",
    "system",
    "idle",
    "iowait",
    "irq",
    "softirq",
    "steal",
    "guest",
    "guest_nice",
)
MODES = _COLUMNS[:8]


@dataclass(frozen=True, slots=True)
class CPUTimes:
    """Seconds per mode for one logical CPU; missing columns (old kernels) are 0."""

    cpu: str
    seconds: dict[str, float]


def parse_cpu_times(text: str) -> list[CPUTimes]:
    cpus: list[CPUTimes] = []
    for line in text.splitlines():
        if not line.startswith("cpu") or line.startswith("cpu "):
            continue
        fields = line.split()
        number = fields[0][3:]
        if not number.isdigit():
            raise ValueError(f"/proc/stat: malformed cpu line {line!r}")
        ticks = [float(v) for v in fields[1 : 1 + len(_COLUMNS)]]
        ticks += [0.0] * (len(_COLUMNS) - len(ticks))
        cpus.append(
            CPUTimes(number, {col: t / USER_HZ for col, t in zip(_COLUMNS, ticks, strict=True)})
        )
    return cpus


def cpu_families(cpus: list[CPUTimes], guest: bool) -> list[MetricFamily]:
    seconds = counter(
        "node_cpu_seconds_total", "Seconds the CPUs spent in each mode.", "cpu", "mode"
    )
    for times in cpus:
        for mode in MODES:
            seconds.add(times.seconds[mode], times.cpu, mode)
    families = [seconds]
    if guest:
        guest_seconds = counter(
            "node_cpu_guest_seconds_total",
            "Seconds the CPUs spent in guests (VMs) for each mode.",
            "cpu",
            "mode",
        )
        for times in cpus:
            guest_seconds.add(times.seconds["guest_nice"], times.cpu, "nice")
            guest_seconds.add(times.seconds["guest"], times.cpu, "user")
        families.append(guest_seconds)
    return families


def collect(context: Context) -> list[MetricFamily]:
    cpus = parse_cpu_times((context.proc / "stat").read_text())
    return cpu_families(cpus, guest=context.option("cpu", "guest"))


SPEC = CollectorSpec(
    name="cpu",
    help="Seconds each CPU spent in each mode (node_cpu_seconds_total) from /proc/stat.",
    create=stateless(collect),
    settings=(Setting("guest", parse_bool, True, "Also expose node_cpu_guest_seconds_total."),),
)
