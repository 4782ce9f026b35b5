from __future__ import annotations

import pytest
from collector_testkit import by_name

from vpsmon.exporter.collectors.meminfo import SPEC, parse_meminfo


def test_meminfo_fields_with_kb_become_bytes() -> None:
    assert parse_meminfo("MemTotal:       24684096 kB\n") == [("MemTotal_bytes", 24684096 * 1024.0)]


def test_meminfo_field_in_parentheses_is_named_like_node_exporter() -> None:
    assert parse_meminfo("Active(anon):       9360 kB\n") == [("Active_anon_bytes", 9360 * 1024.0)]


def test_meminfo_field_without_unit_keeps_its_name() -> None:
    assert parse_meminfo("HugePages_Total:       3\n") == [("HugePages_Total", 3.0)]


def test_meminfo_malformed_line_is_an_error() -> None:
    with pytest.raises(ValueError, match="malformed"):
        parse_meminfo("MemTotal 12 kB\n")


def test_meminfo_collector_exposes_every_field_as_a_gauge(fixture_context) -> None:
    families = by_name(SPEC.create(fixture_context())())
    assert len(families) == 20
    assert families["node_memory_MemAvailable_bytes"].samples == [((), 24051700 * 1024.0)]
    assert families["node_memory_Inactive_file_bytes"].help == (
        "Memory information field Inactive_file_bytes."
    )
    assert families["node_memory_HugePages_Total"].type == "gauge"
    assert "node_memory_Hugepagesize_bytes" in families
