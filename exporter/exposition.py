"""Render metric families in the Prometheus text exposition format (version 0.0.4).

https://prometheus.io/docs/instrumenting/exposition_formats/#text-based-format
"""

from __future__ import annotations

import math
from collections.abc import Iterable

from vpsmon.exporter.metrics import MetricFamily

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


def escape_label_value(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def escape_help(text: str) -> str:
    return text.replace("\\", "\\\\").replace("\n", "\\n")


def format_value(value: float) -> str:
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    if value.is_integer() and abs(value) < 1e15:
        return str(int(value))
    return repr(value)


def render(families: Iterable[MetricFamily], timestamp_ms: int | None = None) -> str:
    """Text exposition of the families; with `timestamp_ms`, every sample carries it."""
    out: list[str] = []
    suffix = f" {timestamp_ms}" if timestamp_ms is not None else ""
    for family in families:
        out.append(f"# HELP {family.name} {escape_help(family.help)}")
        out.append(f"# TYPE {family.name} {family.type}")
        names = family.label_names
        for label_values, value in family.samples:
            if names:
                pairs = ",".join(
                    f'{n}="{escape_label_value(v)}"'
                    for n, v in zip(names, label_values, strict=True)
                )
                out.append(f"{family.name}{{{pairs}}} {format_value(value)}{suffix}")
            else:
                out.append(f"{family.name} {format_value(value)}{suffix}")
    out.append("")
    return "\n".join(out)
