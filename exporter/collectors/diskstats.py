"""diskstats: node_disk_* counters per block device from /proc/diskstats.

Names, HELP texts and units as node_exporter's diskstats collector: sectors are 512 bytes
whatever the device's sector size (Documentation/admin-guide/iostats.rst), times are
milliseconds and become seconds. Kernels add columns over time (4.18: discards, 5.5: flushes);
a device only gets the metrics its line has.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from vpsmon.config import Setting, parse_regex
from vpsmon.exporter.collectors.base import CollectorSpec, Context, stateless
from vpsmon.exporter.metrics import MetricFamily, MetricType

SECTOR_BYTES = 512.0

# node_exporter's default --collector.diskstats.device-exclude: partitions of common disks,
# RAM disks, loop and floppy devices.
DEFAULT_DEVICE_EXCLUDE = re.compile(r"^(ram|loop|fd|(h|s|v|xv)d[a-z]|nvme\d+n\d+p)\d+$")


@dataclass(frozen=True, slots=True)
class DiskMetric:
    name: str
    type: MetricType
    help: str
    scale: float


# In /proc/diskstats column order, after major, minor and device name.
DISK_METRICS: tuple[DiskMetric, ...] = (
    DiskMetric(
        "node_disk_reads_completed_total",
        "counter",
        "The total number of reads completed successfully.",
        1.0,
    ),
    DiskMetric("node_disk_reads_merged_total", "counter", "The total number of reads merged.", 1.0),
    DiskMetric(
        "node_disk_read_bytes_total",
        "counter",
        "The total number of bytes read successfully.",
        SECTOR_BYTES,
    ),
    DiskMetric(
        "node_disk_read_time_seconds_total",
        "counter",
        "The total number of seconds spent by all reads.",
        0.001,
    ),
    DiskMetric(
        "node_disk_writes_completed_total",
        "counter",
        "The total number of writes completed successfully.",
        1.0,
    ),
    DiskMetric("node_disk_writes_merged_total", "counter", "The number of writes merged.", 1.0),
    DiskMetric(
        "node_disk_written_bytes_total",
        "counter",
        "The total number of bytes written successfully.",
        SECTOR_BYTES,
    ),
    DiskMetric(
        "node_disk_write_time_seconds_total",
        "counter",
        "This is the total number of seconds spent by all writes.",
        0.001,
    ),
    DiskMetric("node_disk_io_now", "gauge", "The number of I/Os currently in progress.", 1.0),
    DiskMetric(
        "node_disk_io_time_seconds_total", "counter", "Total seconds spent doing I/Os.", 0.001
    ),
    DiskMetric(
        "node_disk_io_time_weighted_seconds_total",
        "counter",
        "The weighted # of seconds spent doing I/Os.",
        0.001,
    ),
    DiskMetric(
        "node_disk_discards_completed_total",
        "counter",
        "The total number of discards completed successfully.",
        1.0,
    ),
    DiskMetric(
        "node_disk_discards_merged_total", "counter", "The total number of discards merged.", 1.0
    ),
    DiskMetric(
        "node_disk_discarded_sectors_total",
        "counter",
        "The total number of sectors discarded successfully.",
        1.0,
    ),
    DiskMetric(
        "node_disk_discard_time_seconds_total",
        "counter",
        "This is the total number of seconds spent by all discards.",
        0.001,
    ),
    DiskMetric(
        "node_disk_flush_requests_total",
        "counter",
        # Sic: node_exporter's text has no final full stop.
        "The total number of flush requests completed successfully",
        1.0,
    ),
    DiskMetric(
        "node_disk_flush_requests_time_seconds_total",
        "counter",
        "This is the total number of seconds spent by all flush requests.",
        0.001,
    ),
)


@dataclass(frozen=True, slots=True)
class DiskStats:
    device: str
    values: tuple[float, ...]


def parse_diskstats(text: str) -> list[DiskStats]:
    disks: list[DiskStats] = []
    for line in text.splitlines():
        fields = line.split()
        if not fields:
            continue
        if len(fields) < 14:
            raise ValueError(f"/proc/diskstats: expected at least 14 fields, got {line!r}")
        disks.append(DiskStats(fields[2], tuple(float(v) for v in fields[3:])))
    return disks


def diskstats_families(disks: list[DiskStats], exclude: re.Pattern[str]) -> list[MetricFamily]:
    families = [MetricFamily(m.name, m.type, m.help, ("device",)) for m in DISK_METRICS]
    for disk in disks:
        if exclude.search(disk.device):
            continue
        for family, metric, value in zip(families, DISK_METRICS, disk.values, strict=False):
            family.add(value * metric.scale, disk.device)
    return [f for f in families if f.samples]


def collect(context: Context) -> list[MetricFamily]:
    disks = parse_diskstats((context.proc / "diskstats").read_text())
    return diskstats_families(disks, context.option("diskstats", "device_exclude"))


SPEC = CollectorSpec(
    name="diskstats",
    help="Block device I/O statistics (node_disk_*) from /proc/diskstats.",
    create=stateless(collect),
    settings=(
        Setting(
            "device_exclude",
            parse_regex,
            DEFAULT_DEVICE_EXCLUDE,
            "Regular expression of block devices to leave out (node_exporter's default: "
            "partitions, RAM disks, loop and floppy devices).",
        ),
    ),
)
