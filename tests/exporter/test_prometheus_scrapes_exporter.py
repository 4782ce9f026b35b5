"""Debian's Prometheus scrapes our exporter, and its own query API shows the result (issue #3)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.parse
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import free_port, require_binary

VPSMON = str(Path(sys.executable).with_name("vpsmon"))

pytestmark = pytest.mark.e2e


def mem_total_bytes() -> float:
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemTotal:"):
            return float(line.split()[1]) * 1024
    raise AssertionError("no MemTotal in /proc/meminfo")


def start(args: list[str], log: Path, env: dict[str, str]) -> subprocess.Popen[bytes]:
    with log.open("wb") as out:
        return subprocess.Popen(
            args, stdout=out, stderr=subprocess.STDOUT, env=env, start_new_session=True
        )


def stop(proc: subprocess.Popen[bytes]) -> None:
    """Stop one process we started, by its PID: SIGTERM, then SIGKILL if it will not go."""
    if proc.poll() is None:
        os.kill(proc.pid, signal.SIGTERM)
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait()


@pytest.fixture
def processes() -> Iterator[list[subprocess.Popen[bytes]]]:
    started: list[subprocess.Popen[bytes]] = []
    yield started
    for proc in reversed(started):
        stop(proc)


def query(base: str, expr: str) -> list[dict[str, Any]]:
    url = f"{base}/api/v1/query?" + urllib.parse.urlencode({"query": expr})
    with urllib.request.urlopen(url, timeout=5) as response:  # noqa: S310 (127.0.0.1 only)
        body = json.load(response)
    assert body["status"] == "success", body
    result: list[dict[str, Any]] = body["data"]["result"]
    return result


def test_prometheus_scrapes_our_exporter_and_sees_up_and_memtotal(
    tmp_path: Path, processes: list[subprocess.Popen[bytes]]
) -> None:
    prometheus = require_binary("prometheus")
    exporter_port, prometheus_port = free_port(), free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("VPSMON_")}
    env["VPSMON_EXPORTER_INTERVAL"] = "1s"
    exporter_log = tmp_path / "exporter.log"
    processes.append(
        start(
            [VPSMON, "exporter", "run", "--listen", f"127.0.0.1:{exporter_port}"],
            exporter_log,
            env,
        )
    )
    target = f"127.0.0.1:{exporter_port}"
    config = tmp_path / "prometheus.yml"
    config.write_text(
        "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\n"
        "scrape_configs:\n"
        "  - job_name: vpsmon\n    scrape_interval: 1s\n    scrape_timeout: 1s\n"
        f"    static_configs:\n      - targets: ['{target}']\n"
    )
    prometheus_log = tmp_path / "prometheus.log"
    processes.append(
        start(
            [
                prometheus,
                f"--config.file={config}",
                f"--storage.tsdb.path={tmp_path / 'tsdb'}",
                f"--web.listen-address=127.0.0.1:{prometheus_port}",
            ],
            prometheus_log,
            env,
        )
    )
    base = f"http://127.0.0.1:{prometheus_port}"
    expected = mem_total_bytes()
    up: list[dict[str, Any]] = []
    mem: list[dict[str, Any]] = []
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        for proc, log in zip(processes, (exporter_log, prometheus_log), strict=True):
            assert proc.poll() is None, f"{proc.args[0]} exited:\n{log.read_text()}"
        try:
            up = query(base, f'up{{instance="{target}"}}')
            mem = query(base, f'node_memory_MemTotal_bytes{{instance="{target}"}}')
        except OSError:
            pass  # Prometheus is still starting
        if up and up[0]["value"][1] == "1" and mem:
            break
        time.sleep(0.5)
    detail = f"\nexporter:\n{exporter_log.read_text()}\nprometheus:\n{prometheus_log.read_text()}"
    assert up and up[0]["value"][1] == "1", f"up = {up}{detail}"
    assert mem, f"no node_memory_MemTotal_bytes{detail}"
    assert float(mem[0]["value"][1]) == expected
    assert mem[0]["metric"]["job"] == "vpsmon"
