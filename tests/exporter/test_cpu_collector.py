from __future__ import annotations

import pytest
from collector_testkit import FIXTURES, by_name, samples

from vpsmon.exporter.collectors.cpu import SPEC, cpu_families, parse_cpu_times


def test_cpu_times_are_parsed_per_cpu_in_seconds() -> None:
    cpus = parse_cpu_times((FIXTURES / "proc" / "stat").read_text())
    assert [c.cpu for c in cpus] == ["0", "1"]
    assert cpus[0].seconds["user"] == 23.80
    assert cpus[0].seconds["nice"] == 0.10
    assert cpus[0].seconds["irq"] == 0.01
    assert cpus[0].seconds["guest"] == 0.07
    assert cpus[0].seconds["guest_nice"] == 0.03


def test_cpu_times_of_an_old_kernel_without_steal_and_guest_are_zero() -> None:
    (cpu,) = parse_cpu_times("cpu  1 2 3 4 5 6 7\ncpu0 1 2 3 4 5 6 7\n")
    assert cpu.seconds["steal"] == 0.0
    assert cpu.seconds["guest"] == 0.0


def test_cpu_line_with_a_bad_number_is_an_error() -> None:
    with pytest.raises(ValueError, match="malformed cpu line"):
        parse_cpu_times("cpuX 1 2 3\n")


def test_cpu_seconds_have_node_exporters_eight_modes_per_cpu() -> None:
    families = by_name(
        cpu_families(parse_cpu_times((FIXTURES / "proc" / "stat").read_text()), True)
    )
    seconds = families["node_cpu_seconds_total"]
    assert seconds.type == "counter"
    assert seconds.label_names == ("cpu", "mode")
    values = samples(seconds)
    assert len(values) == 16
    assert {mode for _, mode in values} == {
        "idle",
        "iowait",
        "irq",
        "nice",
        "softirq",
        "steal",
        "system",
        "user",
    }
    assert values[("1", "idle")] == 320.06
    guest = samples(families["node_cpu_guest_seconds_total"])
    assert guest == {
        ("0", "nice"): 0.03,
        ("0", "user"): 0.07,
        ("1", "nice"): 0.0,
        ("1", "user"): 0.0,
    }


def test_cpu_guest_seconds_can_be_switched_off(fixture_context) -> None:
    collect = SPEC.create(fixture_context({"cpu.guest": False}))
    assert [f.name for f in collect()] == ["node_cpu_seconds_total"]
