"""Benchmark: our exporter beside Debian's prometheus-node-exporter, in one run on one host.

Both run at their defaults (ours collects every 5 s). Two phases:

1. scrape phase (--duration, 60 s): each exporter is scraped sequentially, alternately,
   `--rate` times a second over a kept-alive connection with `Accept-Encoding: gzip`, as
   Prometheus does; we record the latency of each full response (p50/p99).
2. idle phase (--idle, 60 s): scraped every 15 s (Prometheus' default interval), so the CPU
   measured there is what the exporter costs a server in normal use (the issue's budget:
   under 1% of a core at a 5 s interval).

CPU is the process' user+system time delta (psutil), scaled to seconds per minute; memory is
RSS and USS (psutil memory_full_info) at the end. Prints a Markdown table.

Not a test: numbers depend on the machine. `make bench` runs it through bench/run.py.
"""

from __future__ import annotations

import argparse
import http.client
import os
import platform
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psutil

VPSMON = str(Path(sys.executable).with_name("vpsmon"))
NODE_EXPORTER = "/usr/bin/prometheus-node-exporter"
PROMETHEUS_INTERVAL = 15.0


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


@dataclass
class Subject:
    name: str
    port: int
    popen: subprocess.Popen[bytes]
    latencies: list[float] = field(default_factory=list)
    errors: int = 0
    body_bytes: int = 0
    conn: http.client.HTTPConnection | None = None

    @property
    def process(self) -> psutil.Process:
        return psutil.Process(self.popen.pid)

    def scrape(self) -> float:
        """One GET /metrics over a kept-alive connection; seconds until the body is read."""
        if self.conn is None:
            self.conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=10)
        started = time.perf_counter()
        try:
            self.conn.request("GET", "/metrics", headers={"Accept-Encoding": "gzip"})
            response = self.conn.getresponse()
            body = response.read()
        except (OSError, http.client.HTTPException):
            self.errors += 1
            self.conn.close()
            self.conn = None
            return float("nan")
        elapsed = time.perf_counter() - started
        if response.status != 200:
            self.errors += 1
        self.body_bytes = len(body)
        return elapsed

    def cpu_seconds(self) -> float:
        times = self.process.cpu_times()
        return float(times.user + times.system)

    def memory(self) -> tuple[float, float | None]:
        try:
            info = self.process.memory_full_info()
            return float(info.rss), float(info.uss)
        except psutil.AccessDenied:
            return float(self.process.memory_info().rss), None


def start_dockerd(containers: int) -> Any:
    """A private dockerd (the test suite's tests/dockerd.py) running `containers` sleepers."""
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    from tests.dockerd import Dockerd

    dockerd = shutil.which("dockerd")
    if dockerd is None or os.geteuid() != 0:
        raise SystemExit("--containers needs dockerd and root; use --containers 0 without them")
    daemon = Dockerd(Path(tempfile.mkdtemp(prefix="vpsmon-bench-dockerd-", dir="/tmp")), dockerd)
    try:
        daemon.start()
        daemon.ensure_image()
        for i in range(containers):
            daemon.run(name=f"bench-{i}")
    except BaseException:
        daemon.close()
        raise
    return daemon


def count_series(subject: Subject, name: str) -> int:
    with urllib.request.urlopen(f"http://127.0.0.1:{subject.port}/metrics", timeout=10) as r:
        return sum(1 for line in r.read().decode().splitlines() if line.startswith(name + "{"))


def wait_ready(subject: Subject, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if subject.popen.poll() is not None:
            raise SystemExit(f"{subject.name} exited with {subject.popen.returncode}")
        try:
            with socket.create_connection(("127.0.0.1", subject.port), timeout=1):
                return
        except OSError:
            time.sleep(0.2)
    raise SystemExit(f"{subject.name} did not listen within {timeout}s")


def percentile(values: Sequence[float], q: float) -> float:
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    index = min(len(ordered) - 1, max(0, round(q / 100 * len(ordered)) - 1))
    return ordered[index]


def run_phase(subjects: list[Subject], seconds: float, interval: float, record: bool) -> float:
    """Scrape every subject once per `interval` for `seconds`; returns the elapsed time."""
    started = time.monotonic()
    nxt = started
    turn = 0
    while time.monotonic() - started < seconds:
        # Alternate who goes first so neither always scrapes right after the other's burst.
        order = subjects if turn % 2 == 0 else list(reversed(subjects))
        for subject in order:
            latency = subject.scrape()
            if record and latency == latency:  # not NaN
                subject.latencies.append(latency)
        turn += 1
        nxt += interval
        time.sleep(max(0.0, nxt - time.monotonic()))
    return time.monotonic() - started


def machine() -> str:
    model = "unknown CPU"
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            model = line.split(":", 1)[1].strip()
            break
    mem = psutil.virtual_memory().total / 2**30
    return (
        f"{os.cpu_count()} cores ({model}), {mem:.1f} GiB RAM, Linux {platform.release()},"
        f" Python {platform.python_version()}"
    )


def version(cmd: list[str]) -> str:
    done = subprocess.run(cmd, capture_output=True, text=True, check=False)
    lines = (done.stdout or done.stderr).strip().splitlines()
    return lines[0] if lines else "unknown"


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--duration", type=float, default=60.0, help="scrape phase, seconds")
    parser.add_argument("--idle", type=float, default=60.0, help="idle phase, seconds")
    parser.add_argument("--rate", type=float, default=2.0, help="scrapes per second each")
    parser.add_argument("--warmup", type=float, default=6.0, help="seconds before measuring")
    parser.add_argument(
        "--containers",
        type=int,
        default=5,
        help="busybox containers on a private dockerd for the docker collector (0: no dockerd)",
    )
    args = parser.parse_args(argv)

    if not Path(NODE_EXPORTER).exists() or shutil.which(VPSMON) is None:
        print(f"needs {NODE_EXPORTER} (apt-get install prometheus-node-exporter) and {VPSMON}")
        return 2
    env = {k: v for k, v in os.environ.items() if not k.startswith("VPSMON_")}
    daemon = start_dockerd(args.containers) if args.containers else None
    if daemon is not None:
        env["DOCKER_HOST"] = daemon.url
    ours_port, node_port = free_port(), free_port()
    ours = Subject(
        "vpsmon exporter",
        ours_port,
        subprocess.Popen(
            [VPSMON, "exporter", "run", "--listen", f"127.0.0.1:{ours_port}"],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        ),
    )
    node = Subject(
        "node_exporter",
        node_port,
        subprocess.Popen(
            [NODE_EXPORTER, f"--web.listen-address=127.0.0.1:{node_port}"],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        ),
    )
    subjects = [ours, node]
    try:
        for subject in subjects:
            wait_ready(subject)
        print(f"machine: {machine()}", file=sys.stderr)
        print(f"warm-up {args.warmup:g}s", file=sys.stderr)
        run_phase(subjects, args.warmup, 1.0 / args.rate, record=False)

        print(f"scrape phase {args.duration:g}s at {args.rate:g}/s each", file=sys.stderr)
        cpu0 = [s.cpu_seconds() for s in subjects]
        busy = run_phase(subjects, args.duration, 1.0 / args.rate, record=True)
        cpu_busy = [(s.cpu_seconds() - c) * 60 / busy for s, c in zip(subjects, cpu0, strict=True)]

        print(f"idle phase {args.idle:g}s, scraped every 15 s", file=sys.stderr)
        cpu1 = [s.cpu_seconds() for s in subjects]
        idle = run_phase(subjects, args.idle, PROMETHEUS_INTERVAL, record=False)
        cpu_idle = [(s.cpu_seconds() - c) * 60 / idle for s, c in zip(subjects, cpu1, strict=True)]
        memory = [s.memory() for s in subjects]
        container_series = count_series(ours, "container_memory_usage_bytes")
    finally:
        if daemon is not None:
            daemon.close()
        for subject in subjects:
            if subject.conn is not None:
                subject.conn.close()
            if subject.popen.poll() is None:
                subject.popen.send_signal(signal.SIGTERM)
                try:
                    subject.popen.wait(10)
                except subprocess.TimeoutExpired:
                    subject.popen.kill()
                    subject.popen.wait()

    def mib(value: float | None) -> str:
        return "n/a" if value is None else f"{value / 2**20:.1f} MiB"

    def ms(value: float) -> str:
        return f"{value * 1000:.2f} ms"

    print(f"\nMachine: {machine()}")
    print(f"node_exporter: {version([NODE_EXPORTER, '--version'])}")
    print(f"Scrapes: {args.rate:g}/s each for {args.duration:g}s, gzip, kept-alive connection")
    if daemon is not None:
        print(
            f"Docker collector on: private dockerd with {args.containers} running containers"
            f" ({container_series} seen in the last scrape)\n"
        )
    else:
        print("Docker collector on, no dockerd (the SDK is not imported)\n")
    print(
        "| exporter | scrapes | errors | body (gzip) | p50 | p99 | RSS | USS"
        " | CPU s/min, scraped every 15 s | CPU s/min, scraped 2/s |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|")
    for subject, (rss, uss), idle_cpu, busy_cpu in zip(
        subjects, memory, cpu_idle, cpu_busy, strict=True
    ):
        print(
            f"| {subject.name} | {len(subject.latencies)} | {subject.errors}"
            f" | {subject.body_bytes / 1024:.1f} KiB"
            f" | {ms(statistics.median(subject.latencies))}"
            f" | {ms(percentile(subject.latencies, 99))}"
            f" | {mib(rss)} | {mib(uss)}"
            f" | {idle_cpu:.3f} ({idle_cpu / 60 * 100:.2f}% of a core)"
            f" | {busy_cpu:.3f} ({busy_cpu / 60 * 100:.2f}% of a core) |"
        )
    p99 = [percentile(s.latencies, 99) for s in subjects]
    print("\nBudget (issue #3):")
    verdict = {True: "PASS", False: "FAIL"}
    print(f"- p99 at or below node_exporter's: {verdict[p99[0] <= p99[1]]}")
    print(f"- RSS within 2x node_exporter's: {verdict[memory[0][0] <= 2 * memory[1][0]]}")
    print(f"- CPU under 1% of a core (0.6 s/min): {verdict[cpu_idle[0] < 0.6]}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
