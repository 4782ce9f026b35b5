"""Run `vpsmon exporter run` as a real process and read its payload (a module with a unique
name, so test files import it whatever else sits on sys.path)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from prometheus_client.parser import text_string_to_metric_families

VPSMON = str(Path(sys.executable).with_name("vpsmon"))

Samples = dict[str, list[tuple[dict[str, str], float]]]


def parse(text: str) -> Samples:
    """sample name → [(labels, value)], through prometheus_client's parser (so it is valid)."""
    result: Samples = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            result.setdefault(sample.name, []).append((dict(sample.labels), sample.value))
    return result


def value(samples: Samples, metric: str, /, **labels: str) -> float | None:
    for got, number in samples.get(metric, []):
        if all(got.get(k) == v for k, v in labels.items()):
            return number
    return None


class ExporterProcess:
    """`vpsmon exporter run` in its own session, output to a log file, stopped by PID."""

    def __init__(
        self,
        port: int,
        log: Path,
        *,
        config: Path | None = None,
        env: Mapping[str, str] | None = None,
        prefix: Sequence[str] = (),
    ) -> None:
        self.port = port
        self.log = log
        args = [*prefix, VPSMON, "exporter", "run", "--listen", f"127.0.0.1:{port}"]
        if config is not None:
            args += ["--config", str(config)]
        base = {k: v for k, v in os.environ.items() if not k.startswith("VPSMON_")}
        base.update(env or {})
        self._out = log.open("wb")
        self.popen = subprocess.Popen(
            args, env=base, stdout=self._out, stderr=subprocess.STDOUT, start_new_session=True
        )

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/metrics"

    def output(self) -> str:
        if not self._out.closed:
            self._out.flush()
        return self.log.read_text(errors="replace")

    def scrape(self) -> Samples:
        with urllib.request.urlopen(self.url, timeout=10) as response:  # noqa: S310 (ours, local)
            return parse(response.read().decode())

    def wait_for(
        self, check: Callable[[Samples], Any], what: str, timeout: float = 60.0
    ) -> Samples:
        """Scrape every 0.3 s until check(samples) is true; fails with the log otherwise."""
        deadline = time.monotonic() + timeout
        last: Samples = {}
        while time.monotonic() < deadline:
            if self.popen.poll() is not None:
                raise AssertionError(f"exporter exited ({self.popen.returncode}):\n{self.output()}")
            try:
                last = self.scrape()
            except OSError:
                last = {}
            if last and check(last):
                return last
            time.sleep(0.3)
        raise AssertionError(f"timed out waiting for {what}:\n{self.output()[-3000:]}")

    def wait_log(self, text: str, timeout: float = 60.0) -> str:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            output = self.output()
            if text in output:
                return output
            time.sleep(0.2)
        raise AssertionError(f"{text!r} not logged within {timeout}s:\n{self.output()[-3000:]}")

    def stop(self, timeout: float = 30.0) -> int:
        try:
            if self.popen.poll() is None:
                self.popen.send_signal(signal.SIGTERM)
            try:
                return self.popen.wait(timeout)
            except subprocess.TimeoutExpired:
                os.killpg(self.popen.pid, signal.SIGKILL)
                self.popen.wait()
                raise AssertionError(f"exporter did not stop:\n{self.output()}") from None
        finally:
            self._out.close()
