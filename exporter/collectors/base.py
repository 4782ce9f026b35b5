"""What a metric collector is, and what it is given.

node_exporter's habit: every collector is a row in one table (collectors/__init__.py), can be
switched on or off, reads its sources through paths injected here (so tests feed fixtures),
keeps reading separate from parsing, and fails alone without breaking the payload.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from vpsmon.config import Setting
from vpsmon.exporter.metrics import MetricFamily


@dataclass(frozen=True)
class Context:
    """Where collectors read from, and their options (keys `<collector>.<option>`)."""

    proc: Path = Path("/proc")
    sys: Path = Path("/sys")
    rootfs: Path = Path("/")
    options: Mapping[str, Any] = field(default_factory=dict)

    def option(self, collector: str, name: str) -> Any:
        return self.options[f"{collector}.{name}"]


Collect = Callable[[], Iterable[MetricFamily]]


@dataclass(frozen=True)
class CollectorSpec:
    """A row of the collector table.

    `create(context)` returns the callable that collects once; stateless collectors use
    `stateless(fn)`, stateful ones (a docker client, previous counters) return an object.
    `settings` are the collector's own options; their names are relative (`mount_points_exclude`)
    and become `<name>.<option>` in exporter.yml.
    """

    name: str
    help: str
    create: Callable[[Context], Collect]
    default_enabled: bool = True
    settings: tuple[Setting, ...] = ()


def stateless(fn: Callable[[Context], Iterable[MetricFamily]]) -> Callable[[Context], Collect]:
    def create(context: Context) -> Collect:
        return lambda: fn(context)

    return create
