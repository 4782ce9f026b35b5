"""The head's cost (issue #8): feeding bench/rules.py's fleet into it, its memory, and
selections of bench/distinct_rules.py read as `select` (lists per series) and as
`select_block` (a `RangeBlock`, the columnar rule path).

    .venv/bin/python bench/head.py [--servers 1000] [--memory]

CPU is `time.process_time()`; the load average is printed first (other work on the machine
inflates the figures). ``--memory`` feeds the head again under tracemalloc (slower) and prints
what the head holds.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import os
import random
import statistics
import sys
import time
import tracemalloc
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from promql import END  # noqa: E402

from rules import head_source  # noqa: E402
from vpsmon.collector.head import RecentSamples  # noqa: E402
from vpsmon.collector.storage.query import Matcher  # noqa: E402

SELECTIONS = [
    ('node_cpu_seconds_total{mode="idle"}', [Matcher("__name__", "=", "node_cpu_seconds_total"),
                                            Matcher("mode", "=", "idle")], 300),
    ("node_load1", [Matcher("__name__", "=", "node_load1")], 300),
    ('node_network_receive_bytes_total{device!~"lo|veth.*"}',
     [Matcher("__name__", "=", "node_network_receive_bytes_total"),
      Matcher("device", "!~", "lo|veth.*")], 120),
    ("up", [Matcher("__name__", "=", "up")], 0),
]  # fmt: skip


def cpu_of(fn: object, repeat: int) -> float:
    """Median CPU seconds of one call."""
    times = []
    for _ in range(repeat):
        began = time.process_time()
        fn()  # type: ignore[operator]
        times.append(time.process_time() - began)
    return statistics.median(times)


async def main(argv: list[str]) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--servers", type=int, default=1000)
    parser.add_argument("--memory", action="store_true")
    args = parser.parse_args(argv)
    load = os.getloadavg()
    print(f"load average {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}, {os.cpu_count()} CPUs")
    gc.collect()
    began = time.process_time()
    reader = await head_source(random.Random(2), args.servers)
    feed = time.process_time() - began
    recent = reader.recent
    assert isinstance(recent, RecentSamples)
    print(f"feed {args.servers} servers x 41 scrapes: {feed:.2f} s CPU "
          f"({recent.series_count} series, {recent.sample_count} samples)")  # fmt: skip
    if args.memory:
        del reader, recent
        gc.collect()
        tracemalloc.start()
        reader = await head_source(random.Random(2), args.servers)
        gc.collect()
        held, _ = tracemalloc.get_traced_memory()
        tracemalloc.stop()
        recent = reader.recent
        assert isinstance(recent, RecentSamples)
        print(f"memory held after the feed: {held / 1e6:.1f} MB "
              f"({held / recent.sample_count:.1f} B per sample)")  # fmt: skip
    print("\n| selection | range | rows | select | select_block |\n|---|---|---|---|---|")
    for label, matchers, rng in SELECTIONS:
        start, end = END - rng, END
        recent.select(matchers, start, end)  # matched once, as a rule's later cycles find it
        block = recent.select_block(matchers, start, end)
        sel = cpu_of(lambda m=matchers, s=start, e=end: recent.select(m, s, e), 20)
        blk = cpu_of(lambda m=matchers, s=start, e=end: recent.select_block(m, s, e), 50)
        print(f"| `{label}` | {rng} s | {len(block.keys)} x {block.ts.shape[1]} "
              f"| {sel * 1000:.2f} ms | {blk * 1000:.3f} ms |")  # fmt: skip


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1:]))
