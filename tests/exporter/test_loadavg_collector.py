from __future__ import annotations

import pytest
from collector_testkit import by_name

from vpsmon.exporter.collectors.loadavg import SPEC, parse_loadavg


def test_loadavg_parses_three_averages() -> None:
    assert parse_loadavg("0.25 0.50 1.75 2/153 9803\n") == (0.25, 0.5, 1.75)


def test_loadavg_with_too_few_fields_is_an_error() -> None:
    with pytest.raises(ValueError, match="at least 3 fields"):
        parse_loadavg("0.25 0.50\n")


def test_loadavg_collector_exposes_node_load_gauges(fixture_context) -> None:
    families = by_name(SPEC.create(fixture_context())())
    assert list(families) == ["node_load1", "node_load5", "node_load15"]
    assert families["node_load15"].type == "gauge"
    assert families["node_load15"].help == "15m load average."
    assert families["node_load15"].samples == [((), 1.75)]
