"""Helpers for the exporter's collector tests (a module with a unique name, so it can be
imported from the test files whatever else sits on sys.path)."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import Any

from vpsmon.exporter.collectors import COLLECTORS
from vpsmon.exporter.metrics import MetricFamily

FIXTURES = Path(__file__).parent / "fixtures"


def default_options(**overrides: Any) -> dict[str, Any]:
    """Every collector option at its default, keyed `<collector>.<option>` as the runner does."""
    options = {
        f"{spec.name}.{setting.name}": setting.default
        for spec in COLLECTORS
        for setting in spec.settings
    }
    options.update(overrides)
    return options


def by_name(families: Iterable[MetricFamily]) -> dict[str, MetricFamily]:
    result: dict[str, MetricFamily] = {}
    for family in families:
        assert family.name not in result, f"family {family.name} appears twice"
        result[family.name] = family
    return result


def samples(family: MetricFamily) -> dict[tuple[str, ...], float]:
    """label values → value; fails on a duplicate series, which Prometheus would reject."""
    result: dict[tuple[str, ...], float] = {}
    for labels, value in family.samples:
        assert labels not in result, f"{family.name}{labels} appears twice"
        result[labels] = value
    return result
