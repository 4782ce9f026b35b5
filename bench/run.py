"""`make bench`: run every benchmark in bench/ and print their tables (docs/benchmarks.md)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

BENCHMARKS = (
    "exporter.py",
    "parser.py",
    "promql.py",
    "dashboard.py",
    "rules.py",
    "fleet.py",
    "terminal.py",
    "transfer.py",
)


def main(argv: list[str]) -> int:
    here = Path(__file__).resolve().parent
    worst = 0
    for name in BENCHMARKS:
        print(f"## {name}", flush=True)
        # A subprocess per benchmark, so one benchmark's memory or threads never skew another.
        done = subprocess.run([sys.executable, str(here / name), *argv], check=False)
        worst = max(worst, done.returncode)
    return worst


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
