"""The command line: help with examples, and one-line errors for bad configuration."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from tests.e2e.procs import VPSMON, base_env

COMMANDS = [
    [],
    ["up"],
    ["exporter"],
    ["exporter", "run"],
    ["collector"],
    ["collector", "run"],
    ["db"],
    ["db", "migrate"],
    ["user"],
    ["user", "add"],
    ["user", "passwd"],
    ["user", "list"],
    ["user", "role"],
    ["user", "disable"],
    ["user", "enable"],
    ["user", "reset-totp"],
    ["token"],
    ["token", "create"],
    ["token", "list"],
    ["token", "revoke"],
    ["import"],
    ["exec"],
    ["shell"],
    ["login"],
]


def run(
    *args: str, env: dict[str, str] | None = None, timeout: float = 60
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [VPSMON, *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=env or base_env(),
        check=False,
    )


@pytest.mark.parametrize("command", COMMANDS, ids=lambda c: " ".join(c) or "vpsmon")
def test_every_command_has_help_with_an_example(command: list[str]) -> None:
    result = run(*command, "--help")
    assert result.returncode == 0, result.stderr
    assert "Example" in result.stdout


def assert_one_line_error(result: subprocess.CompletedProcess[str], *needles: str) -> None:
    assert result.returncode != 0
    assert "Traceback" not in result.stderr
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("vpsmon: error: ")
    for needle in needles:
        assert needle in lines[0], lines[0]


def test_unknown_key_in_collector_yml_is_a_one_line_error_naming_it(tmp_path: Path) -> None:
    config = tmp_path / "collector.yml"
    config.write_text("scrape:\n  intervall: 15s\n")
    result = run("collector", "run", "-c", str(config))
    assert_one_line_error(result, "scrape.intervall", "scrape.interval")
    assert result.returncode == 2


def test_wrong_type_in_exporter_yml_is_a_one_line_error_naming_it(tmp_path: Path) -> None:
    config = tmp_path / "exporter.yml"
    config.write_text("interval: often\ncollectors:\n  cpu: true\n")
    result = run("exporter", "run", "-c", str(config))
    assert_one_line_error(result, "interval", "often")


def test_wrong_type_in_environment_names_the_variable() -> None:
    result = run("exporter", "run", env=base_env(VPSMON_EXPORTER_LISTEN="nonsense"))
    assert_one_line_error(result, "VPSMON_EXPORTER_LISTEN")


def test_unreachable_database_url_is_a_one_line_error_naming_it_without_the_password() -> None:
    url = "postgresql://vpsmon:hunter2@127.0.0.1:1/vpsmon"
    result = run("db", "migrate", env=base_env(VPSMON_DATABASE_URL=url))
    assert_one_line_error(result, "postgresql://vpsmon:***@127.0.0.1:1/vpsmon")
    assert "hunter2" not in result.stderr


def test_missing_config_file_is_a_one_line_error(tmp_path: Path) -> None:
    result = run("collector", "run", "-c", str(tmp_path / "nope.yml"))
    assert result.returncode == 2  # click's own usage error for a missing file
    assert "Traceback" not in result.stderr


def test_busy_port_is_a_one_line_error(tmp_path: Path) -> None:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        result = run("exporter", "run", "--listen", f"127.0.0.1:{port}")
    assert_one_line_error(result, f"127.0.0.1:{port}")


def test_module_entry_point_runs() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "vpsmon", "--version"], capture_output=True, text=True, check=False
    )
    assert result.returncode == 0 and "vpsmon" in result.stdout
