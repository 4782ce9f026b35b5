from __future__ import annotations

import re

import pytest
from collector_testkit import by_name

from vpsmon.exporter.collectors.netstat import SPEC, parse_snmp, parse_snmp6


def test_snmp_pairs_header_and_value_lines() -> None:
    stats = parse_snmp("Tcp: MaxConn CurrEstab\nTcp: -1 4\nUdp: InDatagrams\nUdp: 54\n")
    assert stats == {("Tcp", "MaxConn"): -1, ("Tcp", "CurrEstab"): 4, ("Udp", "InDatagrams"): 54}


def test_snmp_mismatched_lines_are_an_error() -> None:
    with pytest.raises(ValueError, match="mismatched"):
        parse_snmp("Tcp: MaxConn CurrEstab\nTcp: -1\n")


def test_snmp6_splits_the_protocol_after_the_six() -> None:
    stats = parse_snmp6("Ip6InOctets    128\nUdpLite6InErrors\t0\nIcmp6InMsgs 1\n")
    assert stats == {("Ip6", "InOctets"): 128, ("UdpLite6", "InErrors"): 0, ("Icmp6", "InMsgs"): 1}


def test_netstat_exposes_node_exporters_default_fields_untyped(fixture_context) -> None:
    families = by_name(SPEC.create(fixture_context())())
    assert families["node_netstat_Tcp_CurrEstab"].samples == [((), 4.0)]
    assert families["node_netstat_Tcp_CurrEstab"].type == "untyped"
    assert families["node_netstat_Tcp_CurrEstab"].help == "Statistic TcpCurrEstab."
    assert families["node_netstat_TcpExt_ListenOverflows"].samples == [((), 7.0)]
    assert families["node_netstat_Ip6_InOctets"].samples == [((), 128.0)]
    assert families["node_netstat_IpExt_InOctets"].samples == [((), 339208883.0)]
    assert families["node_netstat_Ip_Forwarding"].samples == [((), 2.0)]
    # Not in node_exporter's default list.
    assert "node_netstat_Tcp_MaxConn" not in families
    assert "node_netstat_Ip6_InReceives" not in families
    assert "node_netstat_TcpExt_EmbryonicRsts" not in families


def test_netstat_fields_are_an_option(fixture_context) -> None:
    context = fixture_context({"netstat.fields": re.compile("^Tcp_MaxConn$")})
    assert [f.name for f in SPEC.create(context)()] == ["node_netstat_Tcp_MaxConn"]


def test_netstat_without_snmp6_still_collects(fixture_context, tmp_path) -> None:
    (tmp_path / "net").mkdir()
    (tmp_path / "net" / "snmp").write_text("Tcp: CurrEstab\nTcp: 2\n")
    (tmp_path / "net" / "netstat").write_text("")
    families = by_name(SPEC.create(fixture_context(proc=tmp_path))())
    assert list(families) == ["node_netstat_Tcp_CurrEstab"]
