from __future__ import annotations

import importlib
import re

from vpsmon.config import parse_duration
from vpsmon.exporter.collectors import COLLECTORS, by_name

EXPECTED = {
    "cpu",
    "diskstats",
    "docker",
    "filesystem",
    "hostinfo",
    "hwmon",
    "loadavg",
    "meminfo",
    "netdev",
    "netstat",
    "os",
    "sockstat",
    "stat",
    "time",
    "uname",
}


def test_collector_table_has_every_collector_once() -> None:
    assert len(COLLECTORS) == len(by_name()) == len(EXPECTED)
    assert set(by_name()) == EXPECTED


def test_each_collector_lives_in_the_module_of_its_name() -> None:
    for spec in COLLECTORS:
        module = importlib.import_module(f"vpsmon.exporter.collectors.{spec.name}")
        assert module.SPEC is spec
        assert spec.help.strip()


def test_every_option_default_round_trips_through_its_parser() -> None:
    # The docs show a default in its written form; it must parse back to the same value.
    for spec in COLLECTORS:
        names = [s.name for s in spec.settings]
        assert len(names) == len(set(names)), spec.name
        for setting in spec.settings:
            assert setting.help.strip()
            if isinstance(setting.default, re.Pattern):
                assert setting.parse(setting.default.pattern) == setting.default
            elif setting.parse is parse_duration:
                assert setting.parse(f"{setting.default}s") == setting.default
            else:
                assert setting.parse(setting.default) == setting.default
