"""The collector table: every metric collector the exporter has, in one place.

Each row makes an `exporter.yml` switch `collectors.<name>` and a `--collector.<name>` /
`--no-collector.<name>` flag. See docs/metrics.md for what each one exposes.
"""

from __future__ import annotations

from vpsmon.exporter.collectors import (
    cpu,
    diskstats,
    docker,
    filesystem,
    hostinfo,
    hwmon,
    loadavg,
    meminfo,
    netdev,
    netstat,
    sockstat,
    stat,
    time,
    uname,
)
from vpsmon.exporter.collectors import os as os_release
from vpsmon.exporter.collectors.base import CollectorSpec

# In node_exporter's order of names (alphabetical), our own hostinfo last.
COLLECTORS: tuple[CollectorSpec, ...] = (
    cpu.SPEC,
    diskstats.SPEC,
    docker.SPEC,
    filesystem.SPEC,
    hwmon.SPEC,
    loadavg.SPEC,
    meminfo.SPEC,
    netdev.SPEC,
    netstat.SPEC,
    os_release.SPEC,
    sockstat.SPEC,
    stat.SPEC,
    time.SPEC,
    uname.SPEC,
    hostinfo.SPEC,
)


def by_name() -> dict[str, CollectorSpec]:
    return {spec.name: spec for spec in COLLECTORS}
