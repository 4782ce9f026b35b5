"""uname: node_uname_info{sysname,release,version,machine,nodename,domainname} = 1."""

from __future__ import annotations

import os

from vpsmon.exporter.collectors.base import CollectorSpec, Context, stateless
from vpsmon.exporter.metrics import MetricFamily, gauge

LABELS = ("domainname", "machine", "nodename", "release", "sysname", "version")


def uname_families(info: dict[str, str]) -> list[MetricFamily]:
    family = gauge(
        "node_uname_info",
        "Labeled system information as provided by the uname system call.",
        *LABELS,
    )
    family.add(1, *(info[label] for label in LABELS))
    return [family]


def read_uname(context: Context) -> dict[str, str]:
    uname = os.uname()
    # os.uname() has no domainname field (the C struct does); the kernel shows the same
    # value here, "(none)" when unset, as node_exporter reports it.
    domainname = (context.proc / "sys" / "kernel" / "domainname").read_text().strip()
    return {
        "domainname": domainname,
        "machine": uname.machine,
        "nodename": uname.nodename,
        "release": uname.release,
        "sysname": uname.sysname,
        "version": uname.version,
    }


def collect(context: Context) -> list[MetricFamily]:
    return uname_families(read_uname(context))


SPEC = CollectorSpec(
    name="uname",
    help="Kernel and host names from uname (node_uname_info).",
    create=stateless(collect),
)
