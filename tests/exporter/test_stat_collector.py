from __future__ import annotations

import pytest
from collector_testkit import FIXTURES, by_name

from vpsmon.exporter.collectors.stat import SPEC, KernelStats, parse_stat


def test_stat_parses_kernel_counters() -> None:
    assert parse_stat((FIXTURES / "proc" / "stat").read_text()) == KernelStats(
        boot_time=1795294821,
        context_switches=931806,
        forks=9799,
        interrupts=397882,
        procs_running=3,
        procs_blocked=1,
    )


def test_stat_without_btime_is_an_error() -> None:
    with pytest.raises(ValueError, match="missing boot_time"):
        parse_stat("ctxt 1\nprocesses 2\nintr 3 0\nprocs_running 1\nprocs_blocked 0\n")


def test_stat_collector_uses_node_exporter_names_and_types(fixture_context) -> None:
    families = by_name(SPEC.create(fixture_context())())
    assert {name: f.type for name, f in families.items()} == {
        "node_boot_time_seconds": "gauge",
        "node_context_switches_total": "counter",
        "node_forks_total": "counter",
        "node_intr_total": "counter",
        "node_procs_running": "gauge",
        "node_procs_blocked": "gauge",
    }
    assert families["node_intr_total"].samples == [((), 397882.0)]
