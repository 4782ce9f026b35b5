"""sockstat: node_sockstat_* socket counts from /proc/net/sockstat and /proc/net/sockstat6.

As node_exporter's sockstat collector: "sockets: used N" → node_sockstat_sockets_used, every
"<PROTO>: key value ..." pair → node_sockstat_<PROTO>_<key>, and a `mem` count (pages) also
as node_sockstat_<PROTO>_mem_bytes.
"""

from __future__ import annotations

import resource
from dataclasses import dataclass, field

from vpsmon.exporter.collectors.base import CollectorSpec, Context, stateless
from vpsmon.exporter.metrics import MetricFamily, gauge


@dataclass(slots=True)
class SocketStats:
    sockets_used: float | None = None
    # (protocol, state) → value, in file order, e.g. ("TCP", "inuse") → 14.
    protocols: dict[tuple[str, str], float] = field(default_factory=dict)


def parse_sockstat(text: str) -> SocketStats:
    stats = SocketStats()
    for line in text.splitlines():
        protocol, sep, rest = line.partition(":")
        pairs = rest.split()
        if not sep or len(pairs) % 2:
            if line.strip():
                raise ValueError(f"sockstat: malformed line {line!r}")
            continue
        for key, value in zip(pairs[::2], pairs[1::2], strict=True):
            if protocol == "sockets" and key == "used":
                stats.sockets_used = float(value)
            else:
                stats.protocols[(protocol, key)] = float(value)
    return stats


def sockstat_families(stats: list[SocketStats], page_size: int) -> list[MetricFamily]:
    families: list[MetricFamily] = []
    for part in stats:
        if part.sockets_used is not None:
            used = gauge("node_sockstat_sockets_used", "Number of IPv4 sockets in use.")
            used.add(part.sockets_used)
            families.append(used)
        for (protocol, key), value in part.protocols.items():
            families.append(_state(protocol, key, value))
            if key == "mem":
                families.append(_state(protocol, "mem_bytes", value * page_size))
    return families


def _state(protocol: str, key: str, value: float) -> MetricFamily:
    family = gauge(
        f"node_sockstat_{protocol}_{key}", f"Number of {protocol} sockets in state {key}."
    )
    family.add(value)
    return family


def collect(context: Context) -> list[MetricFamily]:
    net = context.proc / "net"
    parts = [parse_sockstat((net / "sockstat").read_text())]
    try:
        parts.append(parse_sockstat((net / "sockstat6").read_text()))
    except FileNotFoundError:
        # IPv6 is disabled or absent; node_exporter skips the file the same way.
        pass
    return sockstat_families(parts, resource.getpagesize())


SPEC = CollectorSpec(
    name="sockstat",
    help="Socket counts per protocol (node_sockstat_*) from /proc/net/sockstat{,6}.",
    create=stateless(collect),
)
