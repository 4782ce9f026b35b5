from __future__ import annotations

import re

import pytest
from collector_testkit import by_name, samples

from vpsmon.exporter.collectors.netdev import SPEC, parse_netdev


def test_netdev_names_columns_from_the_header() -> None:
    interfaces = parse_netdev(
        "Inter-|   Receive |  Transmit\n face |bytes packets|bytes packets\n  eth0:10 2 30 4\n"
    )
    assert interfaces[0].device == "eth0"
    assert interfaces[0].values == {
        "receive_bytes": 10,
        "receive_packets": 2,
        "transmit_bytes": 30,
        "transmit_packets": 4,
    }


def test_netdev_counter_glued_to_the_colon_is_parsed() -> None:
    text = "x|r|t\n face |bytes|bytes\n  eth0:337651583 451267\n"
    assert parse_netdev(text)[0].values["receive_bytes"] == 337651583


def test_netdev_line_with_missing_columns_is_an_error() -> None:
    with pytest.raises(ValueError, match="malformed"):
        parse_netdev("x|r|t\n face |bytes|bytes\n  eth0: 1\n")


def test_netdev_exposes_all_sixteen_counters_per_device(fixture_context) -> None:
    families = by_name(SPEC.create(fixture_context())())
    assert len(families) == 16
    for family in families.values():
        assert family.type == "counter"
        assert family.label_names == ("device",)
        assert family.name.endswith("_total")
    assert samples(families["node_network_receive_bytes_total"]) == {
        ("lo",): 96931,
        ("eth0",): 337651583,
    }
    assert samples(families["node_network_receive_drop_total"])[("eth0",)] == 2
    assert samples(families["node_network_transmit_carrier_total"])[("eth0",)] == 11
    assert families["node_network_transmit_colls_total"].help == (
        "Network device statistic transmit_colls."
    )


def test_netdev_device_exclude_is_an_option(fixture_context) -> None:
    families = SPEC.create(fixture_context({"netdev.device_exclude": re.compile("^lo$")}))()
    for family in families:
        assert {labels for labels, _ in family.samples} == {("eth0",)}
