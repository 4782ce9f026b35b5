"""netdev: node_network_{receive,transmit}_*_total per interface from /proc/net/dev.

The metric names are node_exporter's "legacy" netdev names, which are the /proc/net/dev
column names (its netlink mode maps the kernel's detailed counters back onto them).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from vpsmon.config import Setting, parse_regex
from vpsmon.exporter.collectors.base import CollectorSpec, Context, stateless
from vpsmon.exporter.metrics import MetricFamily, counter

# Upstream node_exporter excludes no interface by default (Debian's build excludes ^lo$);
# "^$" matches no interface name.
DEFAULT_DEVICE_EXCLUDE = re.compile(r"^$")


@dataclass(frozen=True, slots=True)
class InterfaceStats:
    device: str
    # Statistic name ("receive_bytes", "transmit_colls", ...) → value, in column order.
    values: dict[str, float]


def parse_netdev(text: str) -> list[InterfaceStats]:
    """Parse /proc/net/dev; the column names come from its second header line."""
    lines = text.splitlines()
    if len(lines) < 2 or lines[1].count("|") != 2:
        raise ValueError("/proc/net/dev: unexpected header")
    _, receive, transmit = lines[1].split("|")
    names = [f"receive_{c}" for c in receive.split()] + [f"transmit_{c}" for c in transmit.split()]
    interfaces: list[InterfaceStats] = []
    for line in lines[2:]:
        if not line.strip():
            continue
        # Old kernels glue large counters to the colon ("eth0:123"), so split on it, not spaces.
        device, sep, rest = line.partition(":")
        values = rest.split()
        if not sep or len(values) != len(names):
            raise ValueError(f"/proc/net/dev: malformed line {line!r}")
        interfaces.append(
            InterfaceStats(
                device.strip(), {n: float(v) for n, v in zip(names, values, strict=True)}
            )
        )
    return interfaces


def netdev_families(
    interfaces: list[InterfaceStats], exclude: re.Pattern[str]
) -> list[MetricFamily]:
    families: dict[str, MetricFamily] = {}
    for interface in interfaces:
        if exclude.search(interface.device):
            continue
        for stat, value in interface.values.items():
            family = families.get(stat)
            if family is None:
                family = families[stat] = counter(
                    f"node_network_{stat}_total", f"Network device statistic {stat}.", "device"
                )
            family.add(value, interface.device)
    return list(families.values())


def collect(context: Context) -> list[MetricFamily]:
    interfaces = parse_netdev((context.proc / "net" / "dev").read_text())
    return netdev_families(interfaces, context.option("netdev", "device_exclude"))


SPEC = CollectorSpec(
    name="netdev",
    help="Network interface traffic counters (node_network_*_total) from /proc/net/dev.",
    create=stateless(collect),
    settings=(
        Setting(
            "device_exclude",
            parse_regex,
            DEFAULT_DEVICE_EXCLUDE,
            "Regular expression of network interfaces to leave out (default: none).",
        ),
    ),
)
