from __future__ import annotations

import resource

import pytest
from collector_testkit import by_name

from vpsmon.exporter.collectors.sockstat import SPEC, parse_sockstat


def test_sockstat_parses_used_sockets_and_protocol_states() -> None:
    stats = parse_sockstat(
        "sockets: used 27\nTCP: inuse 11 orphan 0 mem 117\nFRAG: inuse 0 memory 0\n"
    )
    assert stats.sockets_used == 27
    assert stats.protocols == {
        ("TCP", "inuse"): 11,
        ("TCP", "orphan"): 0,
        ("TCP", "mem"): 117,
        ("FRAG", "inuse"): 0,
        ("FRAG", "memory"): 0,
    }


def test_sockstat_odd_number_of_fields_is_an_error() -> None:
    with pytest.raises(ValueError, match="malformed"):
        parse_sockstat("TCP: inuse 11 orphan\n")


def test_sockstat_collector_adds_mem_bytes_and_ipv6_protocols(fixture_context) -> None:
    families = by_name(SPEC.create(fixture_context())())
    assert families["node_sockstat_sockets_used"].samples == [((), 27.0)]
    assert families["node_sockstat_sockets_used"].help == "Number of IPv4 sockets in use."
    assert families["node_sockstat_TCP_inuse"].help == "Number of TCP sockets in state inuse."
    assert families["node_sockstat_TCP_mem_bytes"].samples == [((), 117.0 * resource.getpagesize())]
    assert families["node_sockstat_UDP_mem_bytes"].samples == [((), 2.0 * resource.getpagesize())]
    assert families["node_sockstat_TCP6_inuse"].samples == [((), 2.0)]
    assert families["node_sockstat_FRAG6_memory"].type == "gauge"
    assert "node_sockstat_FRAG_memory_bytes" not in families
