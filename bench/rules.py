"""Rule manager cycle: 200 alerting rules over 1,000 servers' head, with everything a real
cycle does (templates, alert states, ALERTS/ALERTS_FOR_STATE outputs, staleness, notify).

Uses bench/promql.py's fleet head and rule expressions, so the numbers compare with the engine
alone. Prints a Markdown table for docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import asyncio
import random
import re
import statistics
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from promql import END, fleet_head, rules  # noqa: E402

from vpsmon.collector.promql import Engine  # noqa: E402
from vpsmon.collector.rules.engine import engine_query  # noqa: E402
from vpsmon.collector.rules.group import RuleGroup  # noqa: E402
from vpsmon.collector.rules.model import OutputSample  # noqa: E402
from vpsmon.collector.rules.rulefile import GroupSpec, RuleSpec  # noqa: E402


def quiet(expr: str) -> str:
    """The same expression with a threshold nothing reaches: a fleet where all is well."""
    expr = re.sub(r"> [0-9.]+$", "> 1e15", expr)
    return re.sub(r"< [0-9.]+$", "< -1e15", expr)


def group_spec(count: int, calm: bool = False) -> GroupSpec:
    specs = tuple(
        RuleSpec(
            kind="alert",
            name=f"Rule{i}",
            expr=expr,
            for_=300.0,
            labels={"severity": "warning"},
            annotations={
                "summary": "{{ $labels.instance }} is at {{ $value | humanize }}",
                "description": '{{ printf "%.2f" $value }} on {{ $labels.job }}',
            },
            index=i + 1,
        )
        for i, expr in enumerate(quiet(e) if calm else e for e in rules(count))
    )
    return GroupSpec(file="bench.yml", name="bench", rules=specs, interval=15.0)


async def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--servers", type=int, default=1000)
    parser.add_argument("--rules", type=int, default=200)
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args(argv)
    source = fleet_head(random.Random(2), args.servers)
    written: list[int] = []
    notified: list[int] = []

    async def append(samples: list[OutputSample]) -> None:
        written.append(len(samples))

    async def notify(alerts: list[dict[str, Any]]) -> None:
        notified.append(len(alerts))

    print(f"\n### {args.rules} alerting rules over {args.servers} servers' head, full cycle\n")
    print("| fleet | selector cache | alerts | outputs | cycle wall | cycle CPU | CPU per rule |")
    print("|---|---|---|---|---|---|---|")
    for calm, ttl in ((True, 0.0), (True, 5.0), (False, 0.0), (False, 5.0)):
        written.append(0)
        group = RuleGroup(
            group_spec(args.rules, calm),
            query=engine_query(Engine(source, selector_cache_ttl=ttl)),
            append=append,
            notify=notify,
        )
        for rule in group.alerting_rules():
            rule.restored = True
        await group.evaluate(END)  # the first cycle creates the alerts
        wall, cpu = [], []
        for _ in range(args.repeat):
            began, began_cpu = time.perf_counter(), time.process_time()
            await group.evaluate(END)
            wall.append(time.perf_counter() - began)
            cpu.append(time.process_time() - began_cpu)
        alerts = sum(len(r.active) for r in group.alerting_rules())
        cpu_ms = statistics.median(cpu) * 1000
        print(
            f"| {'quiet' if calm else 'alert storm'} | {'off' if ttl == 0 else f'{ttl:g} s'} "
            f"| {alerts} | {written[-1]} "
            f"| {statistics.median(wall) * 1000:.0f} ms | {cpu_ms:.0f} ms "
            f"| {cpu_ms / args.rules:.1f} ms |"
        )
    return 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main(sys.argv[1:])))
