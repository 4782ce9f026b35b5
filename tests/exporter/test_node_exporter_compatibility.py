"""Compare our payload with Debian's prometheus-node-exporter on this host, and lint both with
promtool. Names, types, label names and HELP of the core metrics must match so that dashboards
and rule files written for node_exporter work on vpsmon data."""

from __future__ import annotations

import http.client
import os
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass, field

import pytest
from collector_testkit import default_options
from prometheus_client.parser import text_string_to_metric_families

from vpsmon.exporter.collectors import COLLECTORS
from vpsmon.exporter.collectors.base import Context
from vpsmon.exporter.exposition import render

NODE_EXPORTER = "/usr/bin/prometheus-node-exporter"
PROMTOOL = "/usr/bin/promtool"

CORE_METRICS = (
    "node_cpu_seconds_total",
    "node_load1",
    "node_load5",
    "node_load15",
    "node_memory_MemTotal_bytes",
    "node_memory_MemAvailable_bytes",
    "node_memory_MemFree_bytes",
    "node_memory_Buffers_bytes",
    "node_memory_Cached_bytes",
    "node_memory_SwapTotal_bytes",
    "node_memory_SwapFree_bytes",
    "node_filesystem_size_bytes",
    "node_filesystem_avail_bytes",
    "node_filesystem_free_bytes",
    "node_filesystem_files",
    "node_filesystem_files_free",
    "node_disk_read_bytes_total",
    "node_disk_written_bytes_total",
    "node_disk_reads_completed_total",
    "node_disk_writes_completed_total",
    "node_disk_io_time_seconds_total",
    "node_network_receive_bytes_total",
    "node_network_transmit_bytes_total",
    "node_network_receive_packets_total",
    "node_network_transmit_packets_total",
    "node_network_receive_errs_total",
    "node_network_transmit_errs_total",
    "node_network_receive_drop_total",
    "node_network_transmit_drop_total",
    "node_netstat_Tcp_CurrEstab",
    "node_sockstat_sockets_used",
    "node_boot_time_seconds",
    "node_context_switches_total",
    "node_forks_total",
    "node_procs_running",
    "node_procs_blocked",
    "node_time_seconds",
    "node_uname_info",
    "node_os_info",
)


def require(binary: str) -> None:
    """Skip on a laptop without the peer; fail in CI, where it must be installed."""
    if shutil.which(binary) is None:
        message = f"{binary} is not installed (apt-get install prometheus-node-exporter prometheus)"
        if os.environ.get("CI") == "true":
            pytest.fail(message)
        pytest.skip(message)


@dataclass
class Metric:
    """One sample name as a payload exposes it."""

    type: str
    help: str
    label_names: set[str] = field(default_factory=set)
    samples: list[tuple[dict[str, str], float]] = field(default_factory=list)


def index(payload: str) -> dict[str, Metric]:
    """Sample name → Metric; keyed by sample name because the parser drops `_total` from
    counter family names."""
    metrics: dict[str, Metric] = {}
    for family in text_string_to_metric_families(payload):
        for sample in family.samples:
            metric = metrics.setdefault(sample.name, Metric(family.type, family.documentation))
            metric.label_names |= set(sample.labels)
            metric.samples.append((sample.labels, sample.value))
    return metrics


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def scrape(port: int, deadline: float) -> str:
    """GET /metrics, retrying until node_exporter listens."""
    while True:
        connection = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
        try:
            connection.request("GET", "/metrics")
            response = connection.getresponse()
            assert response.status == 200, response.status
            return response.read().decode()
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.1)
        finally:
            connection.close()


@pytest.fixture(scope="module")
def node_exporter_payload() -> Iterator[str]:
    require(NODE_EXPORTER)
    port = free_port()
    process = subprocess.Popen(
        [NODE_EXPORTER, f"--web.listen-address=127.0.0.1:{port}"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        yield scrape(port, time.monotonic() + 15)
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


@pytest.fixture(scope="module")
def our_payload(node_exporter_payload: str) -> str:
    # Collected right after node_exporter's scrape, so slowly moving values are comparable.
    # node_exporter has no container metrics; the docker collector's payload is checked with
    # promtool in test_docker_collector.py.
    context = Context(options=default_options())
    specs = [spec for spec in COLLECTORS if spec.name != "docker"]
    return render(family for spec in specs for family in spec.create(context)())


@pytest.mark.parametrize("name", CORE_METRICS)
def test_core_metric_matches_node_exporter(
    name: str, node_exporter_payload: str, our_payload: str
) -> None:
    theirs = index(node_exporter_payload).get(name)
    ours = index(our_payload).get(name)
    if theirs is None:
        pytest.skip(f"node_exporter exposes no {name} on this host")
    assert ours is not None, f"we expose no {name}"
    assert ours.type == theirs.type
    assert ours.label_names == theirs.label_names
    assert ours.help == theirs.help


def test_memory_total_matches_node_exporter(node_exporter_payload: str, our_payload: str) -> None:
    theirs = index(node_exporter_payload)["node_memory_MemTotal_bytes"].samples
    ours = index(our_payload)["node_memory_MemTotal_bytes"].samples
    assert ours == theirs


def test_boot_time_matches_node_exporter(node_exporter_payload: str, our_payload: str) -> None:
    ((_, theirs),) = index(node_exporter_payload)["node_boot_time_seconds"].samples
    ((_, ours),) = index(our_payload)["node_boot_time_seconds"].samples
    assert abs(ours - theirs) <= 1


def test_cpu_count_matches_node_exporter(node_exporter_payload: str, our_payload: str) -> None:
    def cpus(payload: str) -> set[str]:
        return {labels["cpu"] for labels, _ in index(payload)["node_cpu_seconds_total"].samples}

    assert cpus(our_payload) == cpus(node_exporter_payload)


def test_filesystem_sizes_match_node_exporter_on_common_mount_points(
    node_exporter_payload: str, our_payload: str
) -> None:
    # node_exporter runs as root and Debian's build excludes other mount points than
    # upstream's default, so only mount points both report are compared.
    def sizes(payload: str, name: str) -> dict[tuple[str, str, str], float]:
        return {
            (labels["device"], labels["fstype"], labels["mountpoint"]): value
            for labels, value in index(payload)[name].samples
        }

    for name in ("node_filesystem_size_bytes", "node_filesystem_files"):
        theirs = sizes(node_exporter_payload, name)
        ours = sizes(our_payload, name)
        common = theirs.keys() & ours.keys()
        assert common, f"no mount point in common for {name}"
        assert {k: ours[k] for k in common} == {k: theirs[k] for k in common}


def promtool_lints(payload: str) -> set[str]:
    result = subprocess.run(
        [PROMTOOL, "check", "metrics"],
        input=payload,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    lines = {line.strip() for line in (result.stdout + result.stderr).splitlines() if line.strip()}
    assert not any("error while linting" in line for line in lines), lines
    return lines


def test_promtool_finds_nothing_in_our_payload_it_does_not_find_in_node_exporters(
    node_exporter_payload: str, our_payload: str
) -> None:
    require(PROMTOOL)
    # Lines read "<metric name> <problem>"; node_memory_* and node_netstat_* keep the
    # kernel's CamelCase on purpose, and promtool flags that on node_exporter too.
    ours = promtool_lints(our_payload)
    theirs = promtool_lints(node_exporter_payload)
    assert ours - theirs == set()
