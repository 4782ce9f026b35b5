from __future__ import annotations

import os

from collector_testkit import by_name, samples

from vpsmon.exporter.collectors import time as time_collector
from vpsmon.exporter.collectors import uname


def test_time_families_carry_the_given_clock_and_zone() -> None:
    families = by_name(time_collector.time_families(1700000000.5, "CET", 3600))
    assert families["node_time_seconds"].samples == [((), 1700000000.5)]
    assert samples(families["node_time_zone_offset_seconds"]) == {("CET",): 3600}


def test_time_clock_sources_are_read_from_sys(fixture_context) -> None:
    families = by_name(time_collector.SPEC.create(fixture_context())())
    assert samples(families["node_time_clocksource_available_info"]) == {
        ("tsc", "0"): 1,
        ("kvm-clock", "0"): 1,
        ("acpi_pm", "0"): 1,
    }
    assert samples(families["node_time_clocksource_current_info"]) == {("kvm-clock", "0"): 1}


def test_time_without_clocksource_directory_still_reports_the_time(
    fixture_context, tmp_path
) -> None:
    families = by_name(time_collector.SPEC.create(fixture_context(sys=tmp_path))())
    assert set(families) == {"node_time_seconds", "node_time_zone_offset_seconds"}


def test_uname_info_has_all_six_labels_and_domainname_from_proc(fixture_context) -> None:
    (family,) = uname.SPEC.create(fixture_context())()
    assert family.name == "node_uname_info"
    labels = dict(zip(family.label_names, family.samples[0][0], strict=True))
    assert set(labels) == {"sysname", "release", "version", "machine", "nodename", "domainname"}
    assert labels["domainname"] == "(none)"
    assert labels["nodename"] == os.uname().nodename
    assert family.samples[0][1] == 1
