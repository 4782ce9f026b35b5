"""Start vpsmon commands as a user would (subprocesses), and stop them cleanly."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Mapping
from pathlib import Path

VPSMON = str(Path(sys.executable).with_name("vpsmon"))


class Proc:
    def __init__(self, args: list[str], env: Mapping[str, str], log: Path) -> None:
        self.log = log
        self._out = log.open("wb")
        self.popen = subprocess.Popen(
            [VPSMON, *args],
            env=dict(env),
            stdout=self._out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )

    def output(self) -> str:
        if not self._out.closed:
            self._out.flush()
        return self.log.read_text(errors="replace")

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 30.0) -> int:
        if self.popen.poll() is None:
            self.popen.send_signal(sig)
        try:
            return self.popen.wait(timeout)
        except subprocess.TimeoutExpired:
            os.killpg(self.popen.pid, signal.SIGKILL)
            self.popen.wait()
            message = f"process did not stop within {timeout}s:\n{self.output()}"
            raise AssertionError(message) from None
        finally:
            self._out.close()


def wait_http(url: str, proc: Proc, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.popen.poll() is not None:
            raise AssertionError(f"process exited early:\n{proc.output()}")
        try:
            with urllib.request.urlopen(url, timeout=2):  # noqa: S310 (our own local server)
                return
        except OSError:
            time.sleep(0.2)
    raise AssertionError(f"{url} did not answer within {timeout}s:\n{proc.output()}")


def wait_output(proc: Proc, pattern: str, timeout: float = 60.0) -> re.Match[str]:
    """Wait for output matching ``pattern`` (a process may print after it serves)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = re.search(pattern, proc.output())
        if found:
            return found
        if proc.popen.poll() is not None:
            raise AssertionError(f"process exited early:\n{proc.output()}")
        time.sleep(0.2)
    raise AssertionError(f"no output matching {pattern!r} within {timeout}s:\n{proc.output()}")


def base_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("VPSMON_")}
    env.update(extra)
    return env


class Slice:
    """An exporter and a collector (with its web UI) started as a user would start them."""

    def __init__(
        self,
        tmp_path: Path,
        database_url: str,
        server_name: str,
        password: str,
        collector_env: Mapping[str, str] | None = None,
    ) -> None:
        from tests.conftest import free_port

        self.exporter_port, self.web_port = free_port(), free_port()
        self.base = f"http://127.0.0.1:{self.web_port}"
        self.exporter = Proc(
            ["exporter", "run", "--listen", f"127.0.0.1:{self.exporter_port}"],
            base_env(VPSMON_EXPORTER_INTERVAL="1s"),
            tmp_path / "exporter.log",
        )
        config = tmp_path / "collector.yml"
        config.write_text(
            "scrape:\n  interval: 1s\ntargets:\n"
            f"  - name: '{server_name}'\n"
            f"    url: http://127.0.0.1:{self.exporter_port}/metrics\n"
        )
        self.collector = Proc(
            ["collector", "run", "-c", str(config), "--listen", f"127.0.0.1:{self.web_port}"],
            base_env(
                VPSMON_DATABASE_URL=database_url,
                VPSMON_ADMIN_PASSWORD=password,
                **(collector_env or {}),
            ),
            tmp_path / "collector.log",
        )
        try:
            wait_http(f"http://127.0.0.1:{self.exporter_port}/metrics", self.exporter)
            wait_http(f"{self.base}/healthz", self.collector)
        except BaseException:
            self.stop()
            raise

    def stop(self) -> tuple[int, int]:
        """Stop both (SIGTERM); returns their exit codes (collector, exporter)."""
        return self.collector.stop(), self.exporter.stop()
