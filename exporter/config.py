"""exporter.yml: the exporter's settings table (env prefix `VPSMON_EXPORTER_`).

The per-collector switches (`collectors.<name>`) and options (`<name>.<option>`) are made
from the collector table, so a new collector is configurable and documented by being listed.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from vpsmon.config import (
    HostPort,
    Setting,
    load,
    parse_bool,
    parse_duration,
    parse_hostport,
)
from vpsmon.exporter.collectors import COLLECTORS
from vpsmon.exporter.collectors.base import CollectorSpec

ENV_PREFIX = "VPSMON_EXPORTER_"

BASE_SETTINGS: tuple[Setting, ...] = (
    Setting(
        "listen",
        parse_hostport,
        parse_hostport("0.0.0.0:9190"),
        "Address for /metrics (HOST:PORT, [IPv6]:PORT or :PORT).",
    ),
    Setting(
        "interval",
        parse_duration,
        5.0,
        "How often the collectors run; scrapes are served from the last result.",
    ),
)


def settings(specs: Sequence[CollectorSpec] = COLLECTORS) -> tuple[Setting, ...]:
    rows = list(BASE_SETTINGS)
    for spec in specs:
        rows.append(
            Setting(
                f"collectors.{spec.name}",
                parse_bool,
                spec.default_enabled,
                f"Enable the {spec.name} collector: {spec.help}",
            )
        )
        rows.extend(replace(s, name=f"{spec.name}.{s.name}") for s in spec.settings)
    return tuple(rows)


@dataclass(frozen=True)
class ExporterConfig:
    listen: HostPort
    interval: float
    enabled: tuple[str, ...]
    options: Mapping[str, Any]


def load_config(
    path: Path | None,
    overrides: Mapping[str, Any] | None = None,
    env: Mapping[str, str] | None = None,
) -> ExporterConfig:
    values = load(settings(), path=path, env=env, env_prefix=ENV_PREFIX, overrides=overrides)
    enabled = tuple(s.name for s in COLLECTORS if values[f"collectors.{s.name}"])
    options = {
        k: v
        for k, v in values.items()
        if k not in {"listen", "interval"} and not k.startswith("collectors.")
    }
    return ExporterConfig(values["listen"], values["interval"], enabled, options)
