"""Rule manager cycle: 200 alerting rules over 1,000 servers' head, with everything a real
cycle does (templates, alert states, ALERTS/ALERTS_FOR_STATE outputs, staleness, notify).

The samples are in the collector's real head (collector/head.py `Head`, fed scrape by scrape
like the scrape loop does) and read through `StorageReader(recent=head.recent)` by an `Engine`
configured as collector/app.py configures the rule manager's (selector cache on), so the
benchmark runs the code path of a running collector; the head covers the whole window the
rules read, so the database is never asked (as in the collector). ``--source memory`` uses
bench/promql.py's `MemorySource` fleet instead (the engine alone).

Each measured cycle starts with an empty selector cache, as a real cycle at a new timestamp
does. Verdict: the median CPU time of a quiet cycle (no alert firing, the usual state of a
fleet) against the 1 s budget of issue #8. Prints Markdown for docs/benchmarks.md and
PASS/FAIL; the exit status is 1 on FAIL.

    .venv/bin/python bench/rules.py [--servers 1000] [--rules 200] [--repeat 5]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import re
import statistics
import sys
import time
from pathlib import Path
from typing import Any, cast

sys.path.insert(0, str(Path(__file__).resolve().parent))

from distinct_rules import ExtraSeries, check_distinct, distinct_rules  # noqa: E402
from promql import END, INTERVAL, fleet_head, rules  # noqa: E402

from vpsmon.collector.gcpolicy import freeze_startup_objects  # noqa: E402
from vpsmon.collector.head import Head  # noqa: E402
from vpsmon.collector.promql import Engine  # noqa: E402
from vpsmon.collector.rules.engine import engine_query  # noqa: E402
from vpsmon.collector.rules.group import RuleGroup  # noqa: E402
from vpsmon.collector.rules.model import OutputSample  # noqa: E402
from vpsmon.collector.rules.rulefile import GroupSpec, RuleSpec  # noqa: E402
from vpsmon.collector.scrape.parse import Sample  # noqa: E402
from vpsmon.collector.scrape.result import ScrapeResult  # noqa: E402
from vpsmon.collector.scrape.target import Target  # noqa: E402
from vpsmon.collector.storage.query import SampleSource  # noqa: E402
from vpsmon.collector.storage.reader import StorageReader  # noqa: E402

BUDGET_SECONDS = 1.0


def quiet(expr: str) -> str:
    """The same expression with a threshold nothing reaches: a fleet where all is well."""
    expr = re.sub(r"> [0-9.]+$", "> 1e15", expr)
    return re.sub(r"< [0-9.]+$", "< -1e15", expr)


def group_spec(count: int, calm: bool = False, distinct: bool = False) -> GroupSpec:
    if distinct:
        expressions = distinct_rules(count, calm)
    else:
        expressions = [quiet(e) if calm else e for e in rules(count)]
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
        for i, expr in enumerate(expressions)
    )
    return GroupSpec(file="bench.yml", name="bench", rules=specs, interval=15.0)


async def head_source(rng: random.Random, servers: int) -> SampleSource:
    """bench/promql.py's fleet (the same series and values), scraped into the real head."""
    head = Head(job="node")
    times = [float(t) for t in range(END - 600, END + 1, INTERVAL)]
    fleet = []
    for i in range(servers):
        # The instance label as bench/promql.py names it (a target label overrides host:port).
        target = Target(i + 1, f"srv-{i:04d}", f"http://10.0.{i // 250}.{i % 250}:9100/metrics",
                        15.0, 10.0, labels={"instance": f"srv-{i:04d}"})  # fmt: skip
        load, avail_mem = rng.uniform(0, 4), rng.uniform(1e8, 4e9)
        cpu = [rng.uniform(0, 1e5) for _ in range(2)]
        avail_fs = rng.uniform(1e9, 5e10)
        fleet.append(
            (target, load, avail_mem, cpu, avail_fs, ExtraSeries(random.Random(i), times[0]))
        )
    for k, t in enumerate(times):
        for target, load, avail_mem, cpu, avail_fs, extra in fleet:
            for c in range(2):
                cpu[c] += INTERVAL * rng.uniform(0.2, 1.0)
            samples = [
                Sample("node_load1", (), load),
                Sample("node_memory_MemAvailable_bytes", (), avail_mem),
                Sample("node_memory_MemTotal_bytes", (), 4e9),
                Sample("node_cpu_seconds_total", (("cpu", "0"), ("mode", "idle")), cpu[0]),
                Sample("node_cpu_seconds_total", (("cpu", "1"), ("mode", "idle")), cpu[1]),
                Sample(
                    "node_filesystem_avail_bytes",
                    (("mountpoint", "/"),),
                    avail_fs - (t - times[0]) * 1e4,
                ),  # fmt: skip
                Sample("node_filesystem_size_bytes", (("mountpoint", "/"),), 1e11),
                # The distinct rule set's metrics (bench/distinct_rules.py).
                *extra.samples(t, times[k - 1] if k else None),
            ]
            await head.append(ScrapeResult(target, t, 0.01, samples))
    # No pool: the head covers every range these rules read, so the database is never asked
    # (a query that reached it would fail here, not silently slow down).
    return StorageReader(cast(Any, None), recent=head.recent)


async def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--servers", type=int, default=1000)
    parser.add_argument("--rules", type=int, default=200)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--source", choices=("head", "memory"), default="head")
    parser.add_argument("--no-storm", action="store_true", help="only the quiet fleet")
    parser.add_argument(
        "--set",
        choices=("shared", "distinct", "both"),
        default="both",
        help="10 shapes x 20 thresholds (shared), 200 rules sharing nothing (distinct), or both",
    )
    parser.add_argument(
        "--stepwise",
        action="store_true",
        help="evaluate step by step (Engine(columnar=False)), as before the columnar evaluator",
    )
    parser.add_argument(
        "--selectors-only",
        action="store_true",
        help="share selections only, not subexpression values, between rules",
    )
    args = parser.parse_args(argv)
    load = os.getloadavg()
    print(f"load average {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}, {os.cpu_count()} CPUs")
    rng = random.Random(2)
    if args.source == "head":
        source = await head_source(rng, args.servers)
    else:
        source = fleet_head(rng, args.servers)
    # As the collector does once it serves (vpsmon/cli.py): what exists now is frozen and full
    # collections are ten times rarer; the head's samples are in untracked containers anyway.
    freeze_startup_objects()
    written: list[int] = []
    notified: list[int] = []

    async def append(samples: list[OutputSample]) -> None:
        written.append(len(samples))

    async def notify(alerts: list[dict[str, Any]]) -> None:
        notified.append(len(alerts))

    print(
        f"\n### {args.rules} alerting rules over {args.servers} servers' head"
        f" ({args.source}; shared between rules:"
        f" {'selections' if args.selectors_only else 'selections and subexpressions'};"
        f" {'step-wise' if args.stepwise else 'columnar'} evaluator), full cycle\n"
    )
    sets = ("shared", "distinct") if args.set == "both" else (args.set,)
    if "distinct" in sets:
        shared = check_distinct(distinct_rules(args.rules, calm=True))
        print(f"distinct set: {shared} selections read by more than one rule\n")
    print("| rule set | fleet | alerts | outputs | cycle wall | cycle CPU | CPU per rule |")
    print("|---|---|---|---|---|---|---|")
    verdict = 0.0
    runs = [(d, calm) for d in sets for calm in ((True,) if args.no_storm else (True, False))]
    for rule_set, calm in runs:
        written.append(0)
        # As collector/app.py builds the rule manager's engine.
        engine = Engine(
            source,
            300,
            default_subquery_step=15.0,
            selector_cache_ttl=5.0,
            share_subexpressions=not args.selectors_only,
            columnar=not args.stepwise,
        )
        group = RuleGroup(
            group_spec(args.rules, calm, distinct=rule_set == "distinct"),
            query=engine_query(engine),
            append=append,
            notify=notify,
        )
        for rule in group.alerting_rules():
            rule.restored = True
        await group.evaluate(END)  # the first cycle creates the alerts
        wall, cpu = [], []
        for _ in range(args.repeat):
            assert engine.cache is not None
            engine.cache.entries.clear()  # a new cycle's timestamp shares nothing with the last
            began, began_cpu = time.perf_counter(), time.process_time()
            await group.evaluate(END)
            wall.append(time.perf_counter() - began)
            cpu.append(time.process_time() - began_cpu)
        alerts = sum(len(r.active) for r in group.alerting_rules())
        cpu_s = statistics.median(cpu)
        if calm:
            verdict = max(verdict, cpu_s)
        fleet = "quiet" if calm else ("alert storm" if rule_set == "shared" else "alerts firing")
        print(
            f"| {rule_set} | {fleet} | {alerts} | {written[-1]} "
            f"| {statistics.median(wall) * 1000:.0f} ms | {cpu_s * 1000:.0f} ms "
            f"| {cpu_s * 1000 / args.rules:.2f} ms |"
        )
    ok = verdict < BUDGET_SECONDS
    print(
        f"\n{'PASS' if ok else 'FAIL'}: slowest quiet cycle {verdict * 1000:.0f} ms CPU (median of"
        f" {args.repeat}) against the {BUDGET_SECONDS * 1000:.0f} ms budget (issue #8)"
    )
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(asyncio.run(main(sys.argv[1:])))
