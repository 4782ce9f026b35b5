"""The docker collector: cAdvisor's names from dockerd's stats, against fixtures and a real dockerd.

The real-dockerd tests run `vpsmon exporter run` as a process pointed at a private dockerd
(tests/dockerd.py) and read /metrics as any scraper would.
"""

from __future__ import annotations

import contextlib
import json
import logging
import socket
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import docker.errors
import pytest
from collector_testkit import FIXTURES, by_name, default_options, samples
from exporter_testkit import ExporterProcess, Samples, value

from tests.conftest import free_port, require_binary
from tests.dockerd import IMAGE, Dockerd
from vpsmon.exporter.collection import Collection
from vpsmon.exporter.collectors import by_name as collector_table
from vpsmon.exporter.collectors.base import Context
from vpsmon.exporter.collectors.docker import (
    Container,
    container_families,
    parse_stats,
    parse_time,
    resolve_host,
    stable_status,
)
from vpsmon.exporter.exposition import render

DOCKER = FIXTURES / "docker"
ID = "5e2f0c1a7d3b9e8f4a6c2d1b0e9f8a7c6b5d4e3f2a1b0c9d8e7f6a5b4c3d2e1f"
LABELS = (f"/docker/{ID}", "nginx:1.27", "web")


def stats(name: str) -> dict[str, object]:
    loaded: dict[str, object] = json.loads((DOCKER / name).read_text())
    return loaded


# ---------------------------------------------------------------- parsing, from fixtures


def test_cgroup_v2_stats_give_cpu_memory_working_set_network_and_io() -> None:
    usage = parse_stats(stats("stats-cgroup2.json"))
    assert usage.cpu_seconds == 1.5
    assert usage.memory_usage == 10485760
    assert usage.working_set == 10485760 - 2097152  # usage minus inactive_file, as cAdvisor
    assert usage.networks == {"eth0": (2048, 1024), "eth1": (7, 9)}
    assert usage.io == {(8, 0): (1048576, 4096), (253, 7): (512, 0)}


def test_cgroup_v1_stats_from_a_real_dockerd_use_total_inactive_file() -> None:
    usage = parse_stats(stats("stats-cgroup1.json"))
    assert usage.cpu_seconds == pytest.approx(0.023466978)
    assert usage.memory_usage == 720896
    assert usage.working_set == 720896  # total_inactive_file is 0 there
    assert usage.networks == {}  # --network none
    assert usage.io == {}


def test_families_carry_cadvisor_names_and_labels_and_name_devices_from_sys() -> None:
    running = Container(
        ID, "web", "nginx:1.27", "running", "Up", 1.7e9, stats("stats-cgroup2.json")
    )
    stopped = Container("0" * 64, "old", "busybox", "exited", "Exited (0)")
    families = by_name(container_families([running, stopped], now=1.8e9, sys=FIXTURES / "sys"))
    assert samples(families["container_cpu_usage_seconds_total"]) == {(*LABELS, "total"): 1.5}
    assert families["container_cpu_usage_seconds_total"].type == "counter"
    assert samples(families["container_memory_usage_bytes"]) == {LABELS: 10485760}
    assert samples(families["container_memory_working_set_bytes"]) == {LABELS: 8388608}
    assert samples(families["container_network_receive_bytes_total"]) == {
        (*LABELS, "eth0"): 2048,
        (*LABELS, "eth1"): 7,
    }
    assert samples(families["container_network_transmit_bytes_total"])[(*LABELS, "eth0")] == 1024
    # 8:0 has a uevent in the fixture /sys, 253:7 has none and keeps its number.
    assert samples(families["container_fs_reads_bytes_total"]) == {
        (*LABELS, "/dev/sda"): 1048576,
        (*LABELS, "253:7"): 512,
    }
    assert samples(families["container_fs_writes_bytes_total"])[(*LABELS, "/dev/sda")] == 4096
    assert samples(families["container_start_time_seconds"]) == {LABELS: 1.7e9}
    assert samples(families["container_last_seen"]) == {LABELS: 1.8e9}
    # Every container is in the info series; only running ones have usage series.
    assert samples(families["vpsmon_container_info"]) == {
        (*LABELS, "running", "Up"): 1,
        (f"/docker/{'0' * 64}", "busybox", "old", "exited", "Exited (0)"): 1,
    }
    assert families["container_cpu_usage_seconds_total"].label_names == (
        "id",
        "image",
        "name",
        "cpu",
    )


@pytest.mark.parametrize(
    ("text", "stable"),
    [
        ("Up 2 hours (healthy)", "Up (healthy)"),
        ("Up Less than a second", "Up"),
        ("Up About a minute", "Up"),
        ("Exited (137) 3 minutes ago", "Exited (137)"),
        ("Restarting (1) 5 seconds ago", "Restarting (1)"),
        ("Up 3 weeks (Paused)", "Up (Paused)"),
        ("Created", "Created"),
    ],
)
def test_status_loses_its_age_so_the_info_series_does_not_change_every_collection(
    text: str, stable: str
) -> None:
    assert stable_status(text) == stable


def test_docker_times_with_nanoseconds_and_the_zero_time_are_parsed() -> None:
    assert parse_time("2026-11-21T21:41:10.80067474Z") == pytest.approx(1795297270.80067474)
    assert parse_time("2026-11-21T22:41:10+01:00") == 1795297270.0
    assert parse_time("0001-01-01T00:00:00Z") is None
    with pytest.raises(ValueError, match="unexpected time"):
        parse_time("yesterday")


def test_the_host_is_the_setting_else_docker_host_else_the_default_socket() -> None:
    assert resolve_host("tcp://127.0.0.1:2375", {"DOCKER_HOST": "unix:///x"}) == (
        "tcp://127.0.0.1:2375"
    )
    assert resolve_host(None, {"DOCKER_HOST": "unix:///x"}) == "unix:///x"
    assert resolve_host(None, {}) == "unix:///var/run/docker.sock"


# ---------------------------------------------------------------- failures without dockerd


def docker_collection(host: str, **options: object) -> Collection:
    context = Context(
        options=default_options(**{"docker.host": host, **options}),  # type: ignore[arg-type]
    )
    return Collection([collector_table()["docker"]], context)


def test_no_socket_is_a_failed_docker_collector_with_a_clear_log_line(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="vpsmon.exporter")
    collection = docker_collection(f"unix://{tmp_path}/docker.sock")
    try:
        text = collection.collect_once().text.decode()
        collection.collect_once()  # a second failure is not logged again
    finally:
        collection.close()
    assert 'vpsmon_collector_success{collector="docker"} 0' in text
    assert "container_" not in text.replace("vpsmon_container", "")
    lines = [r.getMessage() for r in caplog.records]
    assert lines == [
        f"collector failed collector=docker error='cannot reach dockerd at unix://{tmp_path}"
        "/docker.sock: no such socket (is dockerd running?)'"
    ]


@pytest.fixture
def silent_dockerd(tmp_path: Path) -> Iterator[str]:
    """A unix socket that accepts connections and never answers: a hung dockerd."""
    path = tmp_path / "hung.sock"
    server = socket.socket(socket.AF_UNIX)
    server.bind(str(path))
    server.listen()
    held: list[socket.socket] = []
    stop = threading.Event()

    def accept() -> None:
        server.settimeout(0.2)
        while not stop.is_set():
            try:
                held.append(server.accept()[0])
            except TimeoutError:
                continue
            except OSError:
                return

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    try:
        yield f"unix://{path}"
    finally:
        stop.set()
        thread.join(5)
        for conn in held:
            conn.close()
        server.close()


def test_a_hung_dockerd_fails_the_docker_collector_after_its_timeout_not_the_payload(
    silent_dockerd: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="vpsmon.exporter")
    table = collector_table()
    context = Context(
        proc=FIXTURES / "proc",
        sys=FIXTURES / "sys",
        options=default_options(**{"docker.host": silent_dockerd, "docker.timeout": 0.5}),
    )
    collection = Collection([table["docker"], table["loadavg"]], context)
    try:
        text = collection.collect_once().text.decode()
    finally:
        collection.close()
    assert 'vpsmon_collector_success{collector="docker"} 0' in text
    assert 'vpsmon_collector_success{collector="loadavg"} 1' in text
    assert "node_load1 " in text
    assert f"dockerd at {silent_dockerd} did not answer within 0.5s" in caplog.text


# ---------------------------------------------------------------- a real dockerd


def has_container(name: str) -> Callable[[Samples], bool]:
    return lambda s: value(s, "container_memory_usage_bytes", name=name) is not None


def docker_config(tmp_path: Path, daemon: Dockerd) -> Path:
    path = tmp_path / "exporter.yml"
    path.write_text(
        f"interval: 500ms\ndocker:\n  host: {daemon.url}\n  timeout: 5s\n"
        "collectors:\n  hwmon: false\n  filesystem: false\n"
    )
    return path


def test_container_series_appear_for_a_running_container_and_vanish_after_removal(
    dockerd: Dockerd, tmp_path: Path
) -> None:
    container = dockerd.run("sh", "-c", "while :; do sleep 1; done", name="vpsmon-appears")
    exporter = ExporterProcess(
        free_port(), tmp_path / "exporter.log", config=docker_config(tmp_path, dockerd)
    )
    try:
        seen = exporter.wait_for(has_container("vpsmon-appears"), "the container's series")
        labels = {"name": "vpsmon-appears"}
        assert value(seen, "vpsmon_collector_success", collector="docker") == 1
        assert value(seen, "container_cpu_usage_seconds_total", cpu="total", **labels) is not None
        assert (value(seen, "container_memory_working_set_bytes", **labels) or 0) > 0
        started = value(seen, "container_start_time_seconds", **labels)
        assert started is not None and started > 1.7e9
        assert value(seen, "container_last_seen", **labels) is not None
        info = [lab for lab, _ in seen["vpsmon_container_info"] if lab["name"] == "vpsmon-appears"]
        assert info == [
            {
                "id": f"/docker/{container.id}",
                "image": IMAGE,
                "name": "vpsmon-appears",
                "state": "running",
                "status": "Up",
            }
        ]

        container.remove(force=True)
        # From a collection that succeeded: a failed one (a slow round) has no series at all.
        exporter.wait_for(
            lambda s: (
                value(s, "vpsmon_collector_success", collector="docker") == 1
                and not any(
                    lab.get("name") == "vpsmon-appears" for rows in s.values() for lab, _ in rows
                )
            ),
            "every series of the removed container to vanish",
        )
    finally:
        exporter.stop()
        with contextlib.suppress(docker.errors.NotFound):  # removed above unless it failed early
            container.remove(force=True)


def test_the_exporter_survives_dockerd_stopping_and_recovers_when_it_restarts(
    own_dockerd: Dockerd, tmp_path: Path
) -> None:
    own_dockerd.run(name="vpsmon-survivor", restart_policy={"Name": "always"})
    exporter = ExporterProcess(
        free_port(), tmp_path / "exporter.log", config=docker_config(tmp_path, own_dockerd)
    )
    try:
        exporter.wait_for(has_container("vpsmon-survivor"), "the container's series")

        own_dockerd.stop()
        down = exporter.wait_for(
            lambda s: value(s, "vpsmon_collector_success", collector="docker") == 0,
            "the docker collector to report failure",
        )
        assert value(down, "vpsmon_collector_success", collector="loadavg") == 1
        assert value(down, "node_load1") is not None
        assert value(down, "container_memory_usage_bytes", name="vpsmon-survivor") is None
        log = exporter.wait_log("collector failed collector=docker")
        assert f"cannot reach dockerd at {own_dockerd.url}" in log

        own_dockerd.start()
        up = exporter.wait_for(has_container("vpsmon-survivor"), "series after the restart")
        assert value(up, "vpsmon_collector_success", collector="docker") == 1
        exporter.wait_log("collector recovered collector=docker")
    finally:
        assert exporter.stop() == 0


def test_every_docker_series_is_in_the_metrics_reference() -> None:
    # tests/test_docs.py sees only what this host emits, and it may have no dockerd.
    text = (Path(__file__).resolve().parents[2] / "docs" / "metrics.md").read_text()
    running = Container(
        ID, "web", "nginx:1.27", "running", "Up", 1.7e9, stats("stats-cgroup2.json")
    )
    names = [f.name for f in container_families([running], now=1.8e9, sys=FIXTURES / "sys")]
    assert [n for n in names if f"`{n}`" not in text] == []


def test_promtool_finds_nothing_to_lint_in_the_container_payload() -> None:
    promtool = require_binary("promtool")
    running = Container(
        ID, "web", "nginx:1.27", "running", "Up", 1.7e9, stats("stats-cgroup2.json")
    )
    text = render(container_families([running], now=1.8e9, sys=FIXTURES / "sys"))
    done = subprocess.run(
        [promtool, "check", "metrics"], input=text, capture_output=True, text=True, check=False
    )
    assert (done.returncode, done.stdout + done.stderr) == (0, "")


def test_the_sdk_talks_to_dockerd_without_loading_a_charset_detector(dockerd: Dockerd) -> None:
    # requests' detector costs ~3 MiB of the exporter's memory budget (docs/benchmarks.md).
    script = (
        "import sys\n"
        "from vpsmon.exporter.collectors.base import Context\n"
        "from vpsmon.exporter.collectors.docker import SPEC\n"
        "from collector_testkit import default_options\n"
        f"options = default_options(**{{'docker.host': '{dockerd.url}'}})\n"
        "collect = SPEC.create(Context(options=options))\n"
        "names = [f.name for f in collect()]\n"
        "collect.close()\n"
        "assert 'vpsmon_container_info' in names, names\n"
        "loaded = ('charset_normalizer', 'chardet', 'docker')\n"
        "print(sorted(m for m in loaded if m in sys.modules))\n"
    )
    done = subprocess.run(
        [sys.executable, "-W", "error", "-c", script],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        cwd=Path(__file__).parent,
    )
    assert (done.returncode, done.stdout) == (0, "['docker']\n"), done.stderr
