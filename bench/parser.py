"""Exposition parser benchmark (issue #4; results in docs/benchmarks.md).

Parses node_exporter-like payloads with our parser (collector/scrape/parse.py) and with
prometheus_client's (as the collector used it before: families → samples with sorted label
tuples), in this one process, and reports samples per second of one core and what share of a
core 1,000 targets × ~1,000 samples every 15 s (66,667 samples/s) would take.

Payloads: "node" is a node_exporter-like payload of ~1,000 samples (CPU per core and mode,
disks, network devices, filesystems with long mount points, HELP and TYPE for every family);
"history" is the same payload as /history renders it, 60 instants with timestamps.

    .venv/bin/python bench/parser.py [--repeat 5]
"""

from __future__ import annotations

import argparse
import gc
import platform
import statistics
import sys
import time
from collections.abc import Callable

from prometheus_client.parser import text_string_to_metric_families

from vpsmon.collector.scrape.parse import Sample, parse_exposition, parse_timestamped

BUDGET_SAMPLES_PER_SECOND = 1000 * 1000 / 15
MODES = ("user", "nice", "system", "idle", "iowait", "irq", "softirq", "steal")


def node_payload(target_samples: int = 1000) -> str:
    lines: list[str] = []

    def family(name: str, kind: str, helptext: str, rows: list[tuple[str, str]]) -> None:
        lines.append(f"# HELP {name} {helptext}")
        lines.append(f"# TYPE {name} {kind}")
        lines.extend(f"{name}{labels} {value}" for labels, value in rows)

    family(
        "node_cpu_seconds_total",
        "counter",
        "Seconds the CPUs spent in each mode.",
        [(f'{{cpu="{c}",mode="{m}"}}', f"{123456.78 + c * 10 + i:.2f}") for c in range(16)
         for i, m in enumerate(MODES)],
    )  # fmt: skip
    disks = [f"nvme{i}n1" for i in range(8)]
    for metric in ("reads_completed", "writes_completed", "read_bytes", "written_bytes",
                   "io_time_seconds", "read_time_seconds", "write_time_seconds"):  # fmt: skip
        family(
            f"node_disk_{metric}_total",
            "counter",
            f"The total number of {metric}.",
            [(f'{{device="{d}"}}', f"{9.87654321e9 + i:.9e}") for i, d in enumerate(disks)],
        )
    devices = ["lo", "eth0", "eth1", "docker0"] + [f"veth{i:04x}" for i in range(20)]
    for metric in ("receive_bytes", "transmit_bytes", "receive_packets", "transmit_packets",
                   "receive_errs", "transmit_errs", "receive_drop", "transmit_drop"):  # fmt: skip
        family(
            f"node_network_{metric}_total",
            "counter",
            f"Network device statistic {metric}.",
            [(f'{{device="{d}"}}', str(1234567 * (i + 1))) for i, d in enumerate(devices)],
        )
    mounts = [("/", "/dev/vda1", "ext4"), ("/boot", "/dev/vda15", "vfat")] + [
        (f"/var/lib/docker/overlay2/{i:032x}/merged", "overlay", "overlay") for i in range(20)
    ]
    for metric in ("size_bytes", "free_bytes", "avail_bytes", "files", "files_free", "readonly"):
        family(
            f"node_filesystem_{metric}",
            "gauge",
            f"Filesystem {metric}.",
            [(f'{{device="{d}",fstype="{f}",mountpoint="{m}"}}', "5.3687091e+10")
             for m, d, f in mounts],
        )  # fmt: skip
    n = 0
    while sum(1 for line in lines if not line.startswith("#")) < target_samples:
        family(f"node_misc_metric_{n}", "gauge", "Padding.", [("", f"{n}.5")])
        n += 1
    return "\n".join(lines) + "\n"


def history_payload(text: str, instants: int = 60) -> str:
    """The payload as /history renders it: per series, one line per instant, timestamps in ms."""
    out: list[str] = []
    for line in text.splitlines():
        if line.startswith("#"):
            out.append(line)
            continue
        out.extend(f"{line} {1_700_000_000_000 + i * 5000}" for i in range(instants))
    return "\n".join(out) + "\n"


def with_prometheus_client(text: str) -> list[Sample]:
    """What collector/scrape/parse.py did before it had its own parser."""
    samples = []
    for fam in text_string_to_metric_families(text):
        for s in fam.samples:
            samples.append(Sample(s.name, tuple(sorted(s.labels.items())), float(s.value)))
    return samples


def rate(parse: Callable[[str], object], text: str, samples: int, repeat: int) -> float:
    """Samples per second of CPU (process time), the best of `repeat` runs of ~1 s each."""
    runs = []
    for _ in range(repeat):
        gc.collect()
        loops = 0
        started = time.process_time()
        while time.process_time() - started < 1.0:
            parse(text)
            loops += 1
        runs.append(loops * samples / (time.process_time() - started))
    return max(runs)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--repeat", type=int, default=5)
    args = ap.parse_args()
    node = node_payload()
    history = history_payload(node)
    node_n = len(parse_exposition(node, 10**9))
    history_n = len(parse_timestamped(history))
    assert with_prometheus_client(node) == parse_exposition(node, 10**9)
    print(f"Python {platform.python_version()}, {platform.machine()}")
    print(f"payloads: node {node_n} samples, {len(node) / 1024:.0f} KiB;"
          f" history {history_n} samples, {len(history) / 1024:.0f} KiB")  # fmt: skip
    print()
    print(
        "| parser | payload | samples/s (one core) | µs/sample"
        " | share of a core at 1,000 × 1,000 / 15 s |"
    )
    print("|---|---|---|---|---|")
    rows = [
        ("prometheus_client", "node", with_prometheus_client, node, node_n),
        ("vpsmon", "node", lambda t: parse_exposition(t, 10**9), node, node_n),
        ("prometheus_client", "history", with_prometheus_client, history, history_n),
        ("vpsmon", "history", parse_timestamped, history, history_n),
    ]
    for name, payload, parse, text, n in rows:
        r = rate(parse, text, n, args.repeat)
        share = BUDGET_SAMPLES_PER_SECOND / r
        print(f"| {name} | {payload} | {r:,.0f} | {1e6 / r:.2f} | {share:.0%} |")
    print()
    print("spread of the vpsmon node runs:", end=" ")
    runs = [rate(lambda t: parse_exposition(t, 10**9), node, node_n, 1) for _ in range(3)]
    print(f"{min(runs):,.0f}..{max(runs):,.0f} samples/s (median {statistics.median(runs):,.0f})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
