"""CPU time of the PromQL numpy kernels (collector/promql/kernels.py) against the scalar path.

Issue #8: a rule cycle evaluates range functions over thousands of series at once. This times
each kernel over a block like the head's (rows × 41 cells: 10 minutes of 15 s scrapes), and
the scalar path (functions.py per row, as engine.py's one-step loop runs it) over the same
rows, with `time.process_time()`. Prints µs per call and per row.

    .venv/bin/python bench/kernels.py [--rows 2000] [--width 41] [--kind counter|gauge|integer]
                                      [--mallopt]

``--mallopt`` keeps freed memory in glibc's heap (no mmap per large array, no trimming): each
kernel makes a few temporaries of rows × width float64 (656 KB at 2000 × 41), and by default
every one of them is fresh memory, page-faulted in again at each call.
"""

from __future__ import annotations

import argparse
import ctypes
import os
import time

import numpy as np

from vpsmon.collector.promql import kernels
from vpsmon.collector.promql.functions import RANGE_FUNCTIONS, Window

T0 = 1_700_000_000_000
STEP = 15_000


def make_block(rows: int, width: int, kind: str, seed: int = 8) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    jitter = rng.integers(0, 3000, rows)[:, None]
    ts = (T0 + np.arange(width)[None, :] * STEP + jitter) / 1000
    if kind == "counter":
        vs = np.cumsum(rng.uniform(0, 1e4, (rows, width)), axis=1).round(3)
    elif kind == "integer":
        vs = rng.integers(0, 2**40, (rows, width)).astype(np.float64)
    else:
        vs = rng.uniform(0, 8, (rows, width))
    return ts, vs


def cpu(fn: object, repeat: int) -> float:
    best = float("inf")
    for _ in range(3):
        start = time.process_time()
        for _ in range(repeat):
            fn()  # type: ignore[operator]
        best = min(best, (time.process_time() - start) / repeat)
    return best


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rows", type=int, default=2000)
    parser.add_argument("--width", type=int, default=41)
    parser.add_argument("--kind", default="counter", choices=["counter", "gauge", "integer"])
    parser.add_argument("--no-scalar", action="store_true")
    parser.add_argument("--mallopt", action="store_true")
    args = parser.parse_args()
    if args.mallopt:
        libc = ctypes.CDLL("libc.so.6")
        libc.mallopt(-1, 256 << 20)  # M_TRIM_THRESHOLD
        libc.mallopt(-3, 64 << 20)  # M_MMAP_THRESHOLD
    ts, vs = make_block(args.rows, args.width, args.kind)
    end = T0 + (args.width - 1) * STEP + 3000
    start = end - 600_000
    load = ", ".join(f"{x:.2f}" for x in os.getloadavg())
    print(
        f"load average {load}; {args.rows} rows × {args.width}, {args.kind}, mallopt {args.mallopt}"
    )
    print("| function | kernel µs | µs/row | scalar µs/row | speed-up |")
    print("|---|---:|---:|---:|---:|")
    lists = [(ts[i].tolist(), vs[i].tolist()) for i in range(args.rows)]
    for name in sorted(RANGE_FUNCTIONS):
        params: tuple[float, ...] = ()
        if name == "predict_linear":
            params = (86400.0,)
        elif name == "quantile_over_time":
            params = (0.9,)
        elif name == "holt_winters":
            params = (0.5, 0.5)
        window = Window(end, start, end, 600_000, params)
        fn = RANGE_FUNCTIONS[name]
        k = cpu(lambda: kernels.range_function(name, ts, vs, window), 20)  # noqa: B023
        if args.no_scalar:
            s = float("nan")
        else:
            s = cpu(lambda: [fn(t, v, window) for t, v in lists], 2) / args.rows  # noqa: B023
        print(
            f"| {name} | {k * 1e6:.0f} | {k / args.rows * 1e6:.2f} | {s * 1e6:.2f} "
            f"| {s * args.rows / k:.0f}× |"
        )
    low, high = (end - 300_000) / 1000, end / 1000
    k = cpu(lambda: kernels.instant(ts, vs, low, high), 50)
    print(f"| instant selector | {k * 1e6:.0f} | {k / args.rows * 1e6:.2f} | | |")


if __name__ == "__main__":
    main()
