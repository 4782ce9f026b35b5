"""netstat: node_netstat_<Protocol>_<Field> from /proc/net/netstat, snmp and snmp6.

As node_exporter's netstat collector: untyped (the files mix counters and gauges such as
Tcp CurrEstab), HELP "Statistic <Protocol><Field>.", and only the fields that match a regular
expression, by default node_exporter's own list.
"""

from __future__ import annotations

import re

from vpsmon.config import Setting, parse_regex
from vpsmon.exporter.collectors.base import CollectorSpec, Context, stateless
from vpsmon.exporter.metrics import MetricFamily

# node_exporter's default --collector.netstat.fields.
DEFAULT_FIELDS = re.compile(
    r"^(.*_(InErrors|InErrs)|Ip_Forwarding|Ip(6|Ext)_(InOctets|OutOctets)|Icmp6?_(InMsgs|OutMsgs)"
    r"|TcpExt_(Listen.*|Syncookies.*|TCPSynRetrans|TCPTimeouts)"
    r"|Tcp_(ActiveOpens|InSegs|OutSegs|OutRsts|PassiveOpens|RetransSegs|CurrEstab)"
    r"|Udp6?_(InDatagrams|OutDatagrams|NoPorts|RcvbufErrors|SndbufErrors))$"
)

# (protocol, field) → value
Statistics = dict[tuple[str, str], float]


def parse_snmp(text: str) -> Statistics:
    """/proc/net/snmp and /proc/net/netstat: per protocol a header line, then a value line."""
    stats: Statistics = {}
    lines = [line for line in text.splitlines() if line.strip()]
    for header, values in zip(lines[::2], lines[1::2], strict=False):
        protocol, _, names = header.partition(":")
        value_protocol, _, numbers = values.partition(":")
        if protocol != value_protocol or len(names.split()) != len(numbers.split()):
            raise ValueError(f"netstat: mismatched lines {header!r} / {values!r}")
        for name, number in zip(names.split(), numbers.split(), strict=True):
            stats[(protocol, name)] = float(number)
    return stats


def parse_snmp6(text: str) -> Statistics:
    """/proc/net/snmp6: "Ip6InReceives 123" lines; the protocol ends at the first "6"."""
    stats: Statistics = {}
    for line in text.splitlines():
        fields = line.split()
        if len(fields) < 2:
            continue
        six = fields[0].find("6")
        if six == -1:
            continue
        stats[(fields[0][: six + 1], fields[0][six + 1 :])] = float(fields[1])
    return stats


def netstat_families(stats: Statistics, fields: re.Pattern[str]) -> list[MetricFamily]:
    families = []
    for protocol, name in sorted(stats):
        if not fields.search(f"{protocol}_{name}"):
            continue
        family = MetricFamily(
            f"node_netstat_{protocol}_{name}", "untyped", f"Statistic {protocol}{name}."
        )
        family.add(stats[(protocol, name)])
        families.append(family)
    return families


def collect(context: Context) -> list[MetricFamily]:
    net = context.proc / "net"
    stats = parse_snmp((net / "netstat").read_text())
    stats.update(parse_snmp((net / "snmp").read_text()))
    try:
        snmp6 = (net / "snmp6").read_text()
    except FileNotFoundError:
        # No IPv6 in this kernel or namespace, as node_exporter tolerates.
        snmp6 = ""
    stats.update(parse_snmp6(snmp6))
    return netstat_families(stats, context.option("netstat", "fields"))


SPEC = CollectorSpec(
    name="netstat",
    help="TCP, UDP, IP and ICMP statistics (node_netstat_*) from /proc/net/{netstat,snmp,snmp6}.",
    create=stateless(collect),
    settings=(
        Setting(
            "fields",
            parse_regex,
            DEFAULT_FIELDS,
            "Regular expression of <Protocol>_<Field> names to expose (node_exporter's default).",
        ),
    ),
)
