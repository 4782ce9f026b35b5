"""`make bench`: run every benchmark in bench/ and print their tables (docs/benchmarks.md).

    bench/run.py                      every benchmark of BENCHMARKS, each with its defaults
    bench/run.py parser --repeat 3    one benchmark (any bench/*.py), with its own options

Options go to one named benchmark only: the benchmarks do not share options, and one that is
handed another's would stop at its argument parser. `make bench ARGS="parser --repeat 3"`.
"""

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

HERE = Path(__file__).resolve().parent


def known() -> list[str]:
    return sorted(p.stem for p in HERE.glob("*.py") if p.name != "run.py")


def main(argv: list[str]) -> int:
    if argv and argv[0] in ("-h", "--help"):
        print(__doc__)
        print("benchmarks:", ", ".join(known()))
        return 0
    if argv:
        name = argv[0].removesuffix(".py")
        if name not in known():
            print(
                f"bench/run.py: {argv[0]!r} is not a benchmark; give one of"
                f" {', '.join(known())} first, then that benchmark's options",
                file=sys.stderr,
            )
            return 2
        return run(f"{name}.py", argv[1:])
    worst = 0
    for script in BENCHMARKS:
        worst = max(worst, run(script, []))
    return worst


def run(script: str, options: list[str]) -> int:
    print(f"## {script}", flush=True)
    # A subprocess per benchmark, so one benchmark's memory or threads never skew another.
    return subprocess.run([sys.executable, str(HERE / script), *options], check=False).returncode


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
