"""The exporter stays up and says what is wrong: broken /proc files, bad config, no privileges,
and a history buffer that had to drop samples."""

from __future__ import annotations

import logging
import os
import shutil
import subprocess
from pathlib import Path

import pytest
from collector_testkit import FIXTURES, default_options
from exporter_testkit import VPSMON, ExporterProcess, parse, value

from tests.conftest import free_port, require, require_binary
from vpsmon.exporter.collection import Collection
from vpsmon.exporter.collectors import by_name as collector_table
from vpsmon.exporter.collectors.base import Context
from vpsmon.exporter.history import History
from vpsmon.exporter.metrics import gauge

CONFIGS = Path(__file__).parent / "fixtures" / "config"

# ---------------------------------------------------------------- broken /proc files


@pytest.fixture
def broken_proc(tmp_path: Path) -> Path:
    """A copy of the fixture /proc with a corrupt loadavg and an unreadable meminfo."""
    proc = tmp_path / "proc"
    shutil.copytree(FIXTURES / "proc", proc, symlinks=True)
    (proc / "loadavg").write_text("garbage\n")
    # Tests run as root, which reads past any mode bits: a directory where the file should be
    # is unreadable for everyone.
    (proc / "meminfo").unlink()
    (proc / "meminfo").mkdir()
    return proc


def test_a_corrupt_and_an_unreadable_proc_file_fail_their_collectors_and_nothing_else(
    broken_proc: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="vpsmon.exporter")
    names = ("cpu", "loadavg", "meminfo", "stat", "netdev")
    table = collector_table()
    context = Context(proc=broken_proc, sys=FIXTURES / "sys", options=default_options())
    payload = Collection([table[n] for n in names], context).collect_once()
    samples = parse(payload.text.decode())  # still valid exposition

    def success(name: str) -> float | None:
        return value(samples, "vpsmon_collector_success", collector=name)

    assert [success(n) for n in names] == [1, 0, 0, 1, 1]
    assert "node_load1" not in samples and not any(k.startswith("node_memory_") for k in samples)
    assert samples["node_cpu_seconds_total"] and samples["node_boot_time_seconds"]
    assert samples["node_network_receive_bytes_total"]
    messages = sorted(r.getMessage() for r in caplog.records)
    assert messages == [
        'collector failed collector=loadavg error="ValueError: /proc/loadavg: expected at least'
        " 3 fields, got 'garbage\\\\n'\"",
        'collector failed collector=meminfo error="IsADirectoryError: [Errno 21] Is a'
        f" directory: '{broken_proc}/meminfo'\"",
    ]


def test_a_collector_that_recovers_is_logged_once_as_recovered(
    broken_proc: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="vpsmon.exporter")
    context = Context(proc=broken_proc, options=default_options())
    collection = Collection([collector_table()["loadavg"]], context)
    collection.collect_once()
    collection.collect_once()
    (broken_proc / "loadavg").write_text("0.10 0.20 0.30 1/100 42\n")
    text = collection.collect_once().text.decode()
    assert "node_load5 0.2" in text
    assert [r.getMessage().split(" error=")[0] for r in caplog.records] == [
        "collector failed collector=loadavg",
        "collector recovered collector=loadavg",
    ]


# ---------------------------------------------------------------- configuration


def config_cases(kind: str) -> list[Path]:
    return sorted(CONFIGS.glob(f"*.{kind}.yml"))


@pytest.mark.parametrize("path", config_cases("bad"), ids=lambda p: p.name)
def test_a_malformed_exporter_yml_is_a_one_line_error_and_nothing_starts(path: Path) -> None:
    # The first line of each bad fixture says the error it must produce.
    expected = path.read_text().splitlines()[0].removeprefix("# error: ")
    done = subprocess.run(
        [VPSMON, "exporter", "run", "--listen", f"127.0.0.1:{free_port()}", "-c", str(path)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        env={k: v for k, v in os.environ.items() if not k.startswith("VPSMON_")},
    )
    assert done.returncode == 2
    assert done.stderr == f"vpsmon: error: {path}: {expected}\n"


@pytest.mark.parametrize("path", config_cases("good"), ids=lambda p: p.name)
def test_a_good_exporter_yml_loads(path: Path) -> None:
    from vpsmon.exporter.config import load_config

    config = load_config(path, env={})
    assert "docker" in config.enabled and "hwmon" not in config.enabled
    assert config.options["docker.timeout"] == 3.0


def test_there_are_good_and_bad_config_fixtures() -> None:
    assert len(config_cases("bad")) >= 4 and config_cases("good")


# ---------------------------------------------------------------- unprivileged


def test_the_exporter_runs_as_nobody_and_serves_metrics(tmp_path: Path) -> None:
    setpriv = require_binary("setpriv")
    require(os.geteuid() == 0, "switching to nobody needs root")
    log_dir = tmp_path / "logs"
    log_dir.mkdir()
    exporter = ExporterProcess(
        free_port(),
        log_dir / "exporter.log",
        env={"HOME": "/nonexistent", "VPSMON_EXPORTER_INTERVAL": "1s"},
        prefix=[
            setpriv,
            "--reuid=nobody",
            "--regid=nogroup",
            "--clear-groups",
            "--inh-caps=-all",
            "--no-new-privs",
        ],
    )
    try:
        samples = exporter.wait_for(
            lambda s: value(s, "vpsmon_collector_success", collector="cpu") == 1, "metrics"
        )
        status = Path(f"/proc/{exporter.popen.pid}/status").read_text()
        uid_line = next(line for line in status.splitlines() if line.startswith("Uid:"))
        assert uid_line.split()[1:] == ["65534"] * 4
        for name in ("cpu", "meminfo", "loadavg", "stat", "netdev", "filesystem", "diskstats"):
            assert value(samples, "vpsmon_collector_success", collector=name) == 1, name
        assert (value(samples, "node_memory_MemTotal_bytes") or 0) > 0
    finally:
        assert exporter.stop() == 0


# ---------------------------------------------------------------- history bound


def test_samples_the_history_drops_early_are_counted_in_a_metric() -> None:
    history = History(retention=3600, max_samples=10)
    load = gauge("node_load1", "1m load average.", "cpu")
    for i in range(4):
        load.add(i, str(i))
    for i in range(5):  # 4 samples each: the bound of 10 keeps two collections
        history.record([load], now=1_700_000_000 + 5 * i)
    families = {f.name: f for f in history.families()}
    assert families["vpsmon_history_dropped_samples_total"].samples == [((), 12.0)]
    assert families["vpsmon_history_dropped_samples_total"].type == "counter"
    assert families["vpsmon_history_samples"].samples == [((), 8.0)]


def test_the_exporter_serves_its_history_metrics(tmp_path: Path) -> None:
    exporter = ExporterProcess(
        free_port(),
        tmp_path / "exporter.log",
        env={"VPSMON_EXPORTER_INTERVAL": "500ms", "VPSMON_EXPORTER_HISTORY_MAX_SAMPLES": "50"},
    )
    try:
        samples = exporter.wait_for(
            lambda s: (value(s, "vpsmon_history_dropped_samples_total") or 0) > 0,
            "the history to drop samples",
        )
        assert (value(samples, "vpsmon_history_samples") or 0) <= 50
    finally:
        assert exporter.stop() == 0
