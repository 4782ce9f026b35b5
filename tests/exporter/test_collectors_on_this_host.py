"""Every registered collector against the real /proc and /sys of the machine running the tests."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from collector_testkit import default_options
from prometheus_client.parser import text_string_to_metric_families

from tests.dockerd import Dockerd
from vpsmon.exporter.collectors import COLLECTORS
from vpsmon.exporter.collectors.base import Context
from vpsmon.exporter.exposition import render
from vpsmon.exporter.metrics import MetricFamily

CORE_NAMES = {
    "node_cpu_seconds_total",
    "node_load1",
    "node_memory_MemTotal_bytes",
    "node_memory_MemAvailable_bytes",
    "node_filesystem_size_bytes",
    "node_network_receive_bytes_total",
    "node_boot_time_seconds",
    "node_uname_info",
    "container_cpu_usage_seconds_total",
    "vpsmon_container_info",
}


def collect_host(daemon: Dockerd) -> list[MetricFamily]:
    # The docker collector talks to the test run's private dockerd, with one container in it.
    context = Context(options=default_options(**{"docker.host": daemon.url}))
    families: list[MetricFamily] = []
    for spec in COLLECTORS:
        collect = spec.create(context)
        try:
            families.extend(collect())
        finally:
            close = getattr(collect, "close", None)
            if close is not None:
                close()
    return families


@pytest.fixture(scope="module")
def daemon(dockerd: Dockerd) -> Iterator[Dockerd]:
    container = dockerd.run(name="vpsmon-on-this-host")
    try:
        yield dockerd
    finally:
        container.remove(force=True)


def test_every_collector_runs_on_this_host_and_renders_parseable_text(daemon: Dockerd) -> None:
    payload = render(collect_host(daemon))
    sample_names = {
        sample.name
        for family in text_string_to_metric_families(payload)
        for sample in family.samples
    }
    assert CORE_NAMES <= sample_names, CORE_NAMES - sample_names


def test_no_family_or_series_appears_twice_on_this_host(daemon: Dockerd) -> None:
    families = collect_host(daemon)
    names = [f.name for f in families]
    assert len(names) == len(set(names))
    for family in families:
        series = [labels for labels, _ in family.samples]
        assert len(series) == len(set(series)), family.name
