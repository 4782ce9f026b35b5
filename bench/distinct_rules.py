# ruff: noqa: E501  (rule expressions read best whole, one per line, as in a rule file)
"""A diverse rule set for bench/rules.py: 200 alerting rules that share no subexpression.

Real rule files are not ten shapes with twenty thresholds each. These are the shipped default
rules (rules/*.yml) and alerts commonly written for node_exporter (CPU modes, steal, iowait,
memory and swap, OOM kills, major page faults, disk space, inodes and I/O, network throughput,
errors and drops, TCP retransmits, conntrack, file descriptors, clock skew, pressure stall,
reboots, context switches, containers): different metrics, functions (rate, increase, irate,
deriv, delta, changes, resets, predict_linear, *_over_time, abs, clamp, absent, timestamp),
aggregations (sum, avg, max, min, count, topk, quantile, stddev) by and without different
labels, and binary operators matched on different label sets.

Each base expression is instantiated four times with a different range, offset or a
selector matcher that every series passes (``job="node"``, ``instance=~"srv-.*"``, …), chosen
so that no two rules read the same selection (matchers, range and offset), so the engine's
per-evaluation cache shares nothing between them: every rule pays for its own fetch and every
node of its expression. `check_distinct` proves it by walking the parsed expressions.

Ranges stay within the head's 10-minute window (the rules of rules/*.yml that read 15 min or
6 h would reach the database, which this benchmark has none of).

{hi}/{lo} are thresholds: the ``natural`` values let some alerts fire on the benchmark fleet;
``quiet`` replaces them with values nothing reaches.
"""

from __future__ import annotations

import dataclasses
import itertools
import random

from vpsmon.collector.promql import Engine
from vpsmon.collector.promql.nodes import MatrixSel, Node, Subquery, VectorSel
from vpsmon.collector.scrape.parse import Sample

FS = 'fstype!~"tmpfs|ramfs|devtmpfs|overlay|squashfs|nsfs|fuse.*"'
NET = 'device!~"lo|veth.*|docker.*|br-.*"'

# (expression with {m} extra matcher, {r} range, {o} offset; natural {hi}/{lo})
BASES: list[tuple[str, str, str]] = [
    # rules/node.yml and rules/containers.yml
    (
        '1 - avg without (cpu, mode) (rate(node_cpu_seconds_total{{mode="idle"{m}}}[{r}]{o})) > {hi}',
        "0.9",
        "",
    ),
    (
        "node_memory_MemAvailable_bytes{{{m}}}{o} / node_memory_MemTotal_bytes{{{m}}}{o} < {lo}",
        "",
        "0.1",
    ),
    (
        f"node_filesystem_avail_bytes{{{{{FS}{{m}}}}}}{{o}} / node_filesystem_size_bytes{{{{{{m}}}}}}{{o}} < {{lo}} and node_filesystem_readonly{{{{{{m}}}}}}{{o}} == 0",
        "",
        "0.1",
    ),
    (
        f"predict_linear(node_filesystem_avail_bytes{{{{{FS}{{m}}}}}}[{{r}}]{{o}}, 24 * 3600) < {{lo}} and node_filesystem_readonly{{{{{{m}}}}}}{{o}} == 0",
        "",
        "0",
    ),
    (
        'node_load15{{{m}}}{o} / count without (cpu, mode) (node_cpu_seconds_total{{mode="idle"{m}}}{o}) > {hi}',
        "2",
        "",
    ),
    (
        f"sum without (device) (rate(node_network_receive_bytes_total{{{{{NET}{{m}}}}}}[{{r}}]{{o}})) > {{hi}}",
        "100e6",
        "",
    ),
    (
        f"sum without (device) (rate(node_network_transmit_bytes_total{{{{{NET}{{m}}}}}}[{{r}}]{{o}})) > {{hi}}",
        "100e6",
        "",
    ),
    ("abs(node_time_seconds{{{m}}}{o} - timestamp(node_time_seconds{{{m}}}{o})) > {hi}", "30", ""),
    (
        'vpsmon_container_info{{state=~"exited|dead", status!~"Exited \\\\(0\\\\).*"{m}}}{o} > {hi} - 1',
        "1",
        "",
    ),
    (
        'changes(container_start_time_seconds{{{m}}}[{r}]{o}) >= {hi} or on (instance, id) (vpsmon_container_info{{state="restarting"{m}}}{o} == {one})',
        "3",
        "",
    ),
    ("up{{{m}}}{o} < {lo} + 1", "", "0"),
    # CPU
    (
        'sum by (instance) (rate(node_cpu_seconds_total{{mode="iowait"{m}}}[{r}]{o})) / count by (instance) (node_cpu_seconds_total{{mode="idle"{m}}}{o}) > {hi}',
        "0.1",
        "",
    ),
    (
        'avg by (instance) (rate(node_cpu_seconds_total{{mode="steal"{m}}}[{r}]{o})) * 100 > {hi}',
        "10",
        "",
    ),
    (
        'max by (instance, cpu) (irate(node_cpu_seconds_total{{mode="user"{m}}}[{r}]{o})) > {hi}',
        "0.95",
        "",
    ),
    (
        'sum without (cpu) (increase(node_cpu_seconds_total{{mode="system"{m}}}[{r}]{o})) > {hi}',
        "200",
        "",
    ),
    (
        'node_load5{{{m}}}{o} > on (instance) 2 * count by (instance) (node_cpu_seconds_total{{mode="user"{m}}}{o}) + {hi}',
        "0",
        "",
    ),
    ("avg_over_time(node_load1{{{m}}}[{r}]{o}) > {hi}", "3.5", ""),
    (
        "max_over_time(node_load5{{{m}}}[{r}]{o}) - min_over_time(node_load5{{{m}}}[{r}]{o}) > {hi}",
        "3",
        "",
    ),
    ("stddev_over_time(node_load1{{{m}}}[{r}]{o}) > {hi}", "1", ""),
    ("rate(node_context_switches_total{{{m}}}[{r}]{o}) > {hi}", "5e4", ""),
    ("rate(node_intr_total{{{m}}}[{r}]{o}) > {hi}", "4e4", ""),
    ("irate(node_forks_total{{{m}}}[{r}]{o}) > {hi}", "900", ""),
    ("node_procs_blocked{{{m}}}{o} > {hi}", "8", ""),
    ("max_over_time(node_procs_running{{{m}}}[{r}]{o}) > {hi}", "30", ""),
    ("rate(node_pressure_cpu_waiting_seconds_total{{{m}}}[{r}]{o}) > {hi}", "0.5", ""),
    # memory
    (
        "node_memory_MemAvailable_bytes{{{m}}}{o} / node_memory_MemTotal_bytes{{{m}}}{o} * 100 < {lo}",
        "",
        "5",
    ),
    (
        "(node_memory_MemFree_bytes{{{m}}}{o} + node_memory_Cached_bytes{{{m}}}{o} + node_memory_Buffers_bytes{{{m}}}{o}) / node_memory_MemTotal_bytes{{{m}}}{o} < {lo}",
        "",
        "0.05",
    ),
    (
        "(1 - node_memory_SwapFree_bytes{{{m}}}{o} / node_memory_SwapTotal_bytes{{{m}}}{o}) * 100 > {hi}",
        "80",
        "",
    ),
    ("rate(node_vmstat_pgmajfault{{{m}}}[{r}]{o}) > {hi}", "900", ""),
    ("increase(node_vmstat_oom_kill{{{m}}}[{r}]{o}) > {hi}", "0.5", ""),
    ("deriv(node_memory_MemAvailable_bytes{{{m}}}[{r}]{o}) < {lo}", "", "-1e7"),
    ("rate(node_pressure_memory_waiting_seconds_total{{{m}}}[{r}]{o}) > {hi}", "0.3", ""),
    ("min_over_time(node_memory_MemAvailable_bytes{{{m}}}[{r}]{o}) < {lo}", "", "2e8"),
    # disk
    (
        f"node_filesystem_files_free{{{{{FS}{{m}}}}}}{{o}} / node_filesystem_files{{{{{{m}}}}}}{{o}} * 100 < {{lo}}",
        "",
        "10",
    ),
    ("rate(node_disk_read_bytes_total{{{m}}}[{r}]{o}) / 1024 / 1024 > {hi}", "50", ""),
    ("rate(node_disk_written_bytes_total{{{m}}}[{r}]{o}) / 1024 / 1024 > {hi}", "50", ""),
    ("rate(node_disk_io_time_seconds_total{{{m}}}[{r}]{o}) > {hi}", "0.8", ""),
    (
        "rate(node_disk_read_time_seconds_total{{{m}}}[{r}]{o}) / rate(node_disk_reads_completed_total{{{m}}}[{r}]{o}) > {hi}",
        "0.1",
        "",
    ),
    (
        "rate(node_disk_write_time_seconds_total{{{m}}}[{r}]{o}) / rate(node_disk_writes_completed_total{{{m}}}[{r}]{o}) > {hi}",
        "0.1",
        "",
    ),
    (f"delta(node_filesystem_avail_bytes{{{{{FS}{{m}}}}}}[{{r}}]{{o}}) < {{lo}}", "", "-1e9"),
    # network
    (
        "sum by (instance) (rate(node_network_receive_errs_total{{{m}}}[{r}]{o})) / sum by (instance) (rate(node_network_receive_packets_total{{{m}}}[{r}]{o})) > {hi}",
        "0.01",
        "",
    ),
    ("increase(node_network_transmit_errs_total{{{m}}}[{r}]{o}) > {hi}", "20", ""),
    ('rate(node_network_receive_drop_total{{device!="lo"{m}}}[{r}]{o}) > {hi}', "0.5", ""),
    (
        "topk by (instance) (1, irate(node_network_transmit_packets_total{{{m}}}[{r}]{o})) > {hi}",
        "5e4",
        "",
    ),
    (
        "rate(node_netstat_Tcp_RetransSegs{{{m}}}[{r}]{o}) / rate(node_netstat_Tcp_OutSegs{{{m}}}[{r}]{o}) * 100 > {hi}",
        "5",
        "",
    ),
    (
        "node_nf_conntrack_entries{{{m}}}{o} / node_nf_conntrack_entries_limit{{{m}}}{o} > {hi}",
        "0.8",
        "",
    ),
    ("node_sockstat_TCP_inuse{{{m}}}{o} > {hi}", "2000", ""),
    (
        'quantile by (job) (0.99, rate(node_network_receive_bytes_total{{device="eth0"{m}}}[{r}]{o})) > {hi}',
        "5e6",
        "",
    ),
    # system
    ("node_filefd_allocated{{{m}}}{o} / node_filefd_maximum{{{m}}}{o} * 100 > {hi}", "80", ""),
    (
        "abs(node_timex_offset_seconds{{{m}}}{o}) > {hi} or node_timex_sync_status{{{m}}}{o} == {one} - 1",
        "0.05",
        "",
    ),
    ("max_over_time(node_timex_maxerror_seconds{{{m}}}[{r}]{o}) > {hi}", "16", ""),
    ("time() - node_boot_time_seconds{{{m}}}{o} < {lo}", "", "600"),
    ("resets(node_boot_time_seconds{{{m}}}[{r}]{o}) > {hi}", "0", ""),
    ("rate(node_pressure_io_waiting_seconds_total{{{m}}}[{r}]{o}) > {hi}", "0.4", ""),
    ("node_entropy_available_bits{{{m}}}{o} < {lo}", "", "200"),
    ("absent(node_uname_info{{{m}}}{o})", "", ""),
    (
        "clamp_max(node_load1{{{m}}}{o}, 10) / clamp_min(node_load15{{{m}}}{o}, 0.1) > {hi}",
        "20",
        "",
    ),
    ('count without (cpu) (node_cpu_seconds_total{{mode="nice"{m}}}{o}) < {lo}', "", "1"),
    ("stddev by (job) (node_load15{{{m}}}{o}) > {hi}", "2", ""),
    ('min by (instance) (node_filesystem_size_bytes{{mountpoint="/"{m}}}{o}) < {lo}', "", "1e10"),
    ("sum by (job) (up{{{m}}}{o}) < {lo}", "", "1"),
    ("scrape_duration_seconds{{{m}}}{o} > {hi}", "5", ""),
    ("avg_over_time(scrape_samples_scraped{{{m}}}[{r}]{o}) < {lo}", "", "1"),
]

# Selector variants that every series passes (realistic: rules often pin job or instance).
MATCHERS = ("", ', job="node"', ', instance=~"srv-.*"', ', instance!=""', ', job=~"no.*"')
RANGES = ("1m", "2m", "3m", "4m", "5m", "6m", "7m", "8m", "9m")
OFFSETS = ("", "", "", " offset 30s", " offset 1m")  # most rules have none


def _expr(base: str, m: str, r: str, o: str, hi: str, lo: str) -> str:
    one = "-1" if hi == "1e15" or lo == "-1e15" else "1"  # quiet: the or-clauses too
    text = base.format(m=m, r=r, o=o, hi=hi or "0", lo=lo or "0", one=one)
    # "{, job=...}" when a selector had no other matcher: drop the leading comma.
    return text.replace("{, ", "{").replace("{}", "")


def _selections(node: Node) -> list[tuple[str, int]]:
    """(selector, window) pairs the engine fetches: what the selector cache is keyed on."""
    if isinstance(node, MatrixSel):
        return [(repr(node.selector), node.range)]
    if isinstance(node, VectorSel):
        return [(repr(node), 0)]  # the lookback window
    out: list[tuple[str, int]] = []
    for f in dataclasses.fields(node):  # type: ignore[arg-type]
        child = getattr(node, f.name)
        children = child if isinstance(child, tuple) else (child,)
        for c in children:
            if dataclasses.is_dataclass(c) and not isinstance(c, str):
                if isinstance(c, Subquery):
                    raise ValueError("no subqueries here")
                out.extend(_selections(c))  # type: ignore[arg-type]
    return out


def distinct_rules(count: int, calm: bool) -> list[str]:
    """``count`` expressions (up to 4 per base), no selection read by two of them."""
    used: set[tuple[str, int]] = set()
    out: list[str] = []
    variants = list(itertools.product(OFFSETS, MATCHERS, RANGES))
    random.Random(8).shuffle(variants)
    for _round in range(4):  # round-robin over the bases, so every one of them is in the set
        for b, (base, hi, lo) in enumerate(BASES):
            if len(out) == count:
                break
            start = (b * 11 + _round * 29) % len(variants)  # each base its own mix of variants
            for o, m, r in variants[start:] + variants[:start]:
                expr = _expr(base, m, r, o, "1e15" if calm and hi else hi,
                             "-1e15" if calm and lo else lo)  # fmt: skip
                sels = set(_selections(Engine.check(expr)))
                if sels & used:
                    continue
                used.update(sels)
                out.append(expr)
                break
    if len(out) < count:
        raise ValueError(f"only {len(out)} distinct rules")
    return out


def check_distinct(expressions: list[str]) -> int:
    """How many selections two or more of ``expressions`` read (0: nothing shared)."""
    seen: dict[tuple[str, int], int] = {}
    for k, expr in enumerate(expressions):
        for sel in set(_selections(Engine.check(expr))):
            seen.setdefault(sel, k)
            if seen[sel] != k:
                seen[sel] = -1
    return sum(1 for v in seen.values() if v == -1)


# -- the fleet's extra series ------------------------------------------------------------------

COUNTERS = (  # name, labels, increase per second (upper bound)
    *(
        ("node_cpu_seconds_total", (("cpu", str(c)), ("mode", mode)), share)
        for c in range(2)
        for mode, share in (
            ("user", 0.3),
            ("system", 0.1),
            ("iowait", 0.05),
            ("steal", 0.02),
            ("nice", 0.01),
        )  # fmt: skip
    ),
    *(
        (f"node_network_{d}_{what}_total", (("device", dev),), rate)
        for dev in ("eth0", "lo")
        for d in ("receive", "transmit")
        for what, rate in (("bytes", 2e6), ("packets", 2e3), ("errs", 0.01), ("drop", 0.1))
    ),
    *(
        (f"node_disk_{what}", (("device", "vda"),), rate)
        for what, rate in (
            ("read_bytes_total", 1e6),
            ("written_bytes_total", 2e6),
            ("io_time_seconds_total", 0.2),
            ("reads_completed_total", 50),
            ("writes_completed_total", 80),
            ("read_time_seconds_total", 0.1),
            ("write_time_seconds_total", 0.3),
        )  # fmt: skip
    ),
    ("node_context_switches_total", (), 3e4),
    ("node_intr_total", (), 2e4),
    ("node_forks_total", (), 20.0),
    ("node_vmstat_pgmajfault", (), 5.0),
    ("node_vmstat_oom_kill", (), 0.0),
    ("node_netstat_Tcp_RetransSegs", (), 2.0),
    ("node_netstat_Tcp_OutSegs", (), 500.0),
    ("node_pressure_cpu_waiting_seconds_total", (), 0.2),
    ("node_pressure_memory_waiting_seconds_total", (), 0.05),
    ("node_pressure_io_waiting_seconds_total", (), 0.1),
)

GAUGES = (  # name, labels, low, high
    ("node_load5", (), 0.0, 4.0),
    ("node_load15", (), 0.0, 4.0),
    ("node_memory_MemFree_bytes", (), 1e8, 1e9),
    ("node_memory_Cached_bytes", (), 1e8, 2e9),
    ("node_memory_Buffers_bytes", (), 1e7, 2e8),
    ("node_memory_SwapTotal_bytes", (), 2e9, 2e9),
    ("node_memory_SwapFree_bytes", (), 1e8, 2e9),
    ("node_filesystem_readonly", (("mountpoint", "/"),), 0.0, 0.0),
    ("node_filesystem_files", (("mountpoint", "/"),), 6e6, 6e6),
    ("node_filesystem_files_free", (("mountpoint", "/"),), 1e5, 5e6),
    ("node_filesystem_avail_bytes", (("fstype", "tmpfs"), ("mountpoint", "/run")), 1e8, 2e8),
    ("node_filesystem_size_bytes", (("fstype", "tmpfs"), ("mountpoint", "/run")), 2e8, 2e8),
    ("node_filesystem_readonly", (("fstype", "tmpfs"), ("mountpoint", "/run")), 0.0, 0.0),
    ("node_procs_blocked", (), 0.0, 10.0),
    ("node_procs_running", (), 1.0, 40.0),
    ("node_nf_conntrack_entries", (), 100.0, 6e4),
    ("node_nf_conntrack_entries_limit", (), 65536.0, 65536.0),
    ("node_sockstat_TCP_inuse", (), 10.0, 2500.0),
    ("node_filefd_allocated", (), 1e3, 9e4),
    ("node_filefd_maximum", (), 1e5, 1e5),
    ("node_timex_offset_seconds", (), -0.06, 0.06),
    ("node_timex_sync_status", (), 1.0, 1.0),
    ("node_timex_maxerror_seconds", (), 0.0, 20.0),
    ("node_entropy_available_bits", (), 150.0, 4000.0),
    ("node_uname_info", (("nodename", "srv"), ("release", "6.1.0")), 1.0, 1.0),
)


class ExtraSeries:
    """One server's extra series; `samples(t)` gives one scrape's worth."""

    def __init__(self, rng: random.Random, t0: float) -> None:
        self.t0 = t0
        self.rates = [rng.uniform(0.5, 1.0) * rate for _, _, rate in COUNTERS]
        self.counters = [rng.uniform(0, 1e6) for _ in COUNTERS]
        self.gauges = [rng.uniform(low, high) for _, _, low, high in GAUGES]
        self.boot = t0 - rng.uniform(300, 1e7)
        self.skew = rng.uniform(-40, 40) if rng.random() < 0.05 else 0.0
        self.containers = [
            (f"c{k}", rng.choice(("running", "running", "exited", "restarting"))) for k in range(2)
        ]

    def samples(self, t: float, previous: float | None) -> list[Sample]:
        if previous is not None:
            for k, rate in enumerate(self.rates):
                self.counters[k] += (t - previous) * rate
        out = [
            Sample(name, labels, self.counters[k]) for k, (name, labels, _) in enumerate(COUNTERS)
        ]
        out += [
            Sample(name, labels, self.gauges[k]) for k, (name, labels, _, _) in enumerate(GAUGES)
        ]
        out.append(Sample("node_time_seconds", (), t + self.skew))
        out.append(Sample("node_boot_time_seconds", (), self.boot))
        for name, state in self.containers:
            labels = (("id", f"/docker/{name}"), ("image", "nginx:1"), ("name", name),
                      ("state", state), ("status", "Exited (1)" if state == "exited" else "Up"))  # fmt: skip
            out.append(Sample("vpsmon_container_info", labels, 1.0))
            out.append(Sample("container_start_time_seconds", (("id", f"/docker/{name}"),),
                              self.t0 - 3600.0))  # fmt: skip
        return out
