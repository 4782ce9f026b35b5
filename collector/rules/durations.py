"""Prometheus durations (model.Duration): "1h30m", "5m", "0s"; no fractions, no bare numbers.

Rule files and promtool's test files use exactly this syntax
(https://prometheus.io/docs/prometheus/latest/configuration/configuration/#duration), so a
file that promtool rejects for its durations is rejected here too.
"""

from __future__ import annotations

import re

_UNITS: tuple[tuple[str, float], ...] = (
    ("y", 365 * 86400),
    ("w", 7 * 86400),
    ("d", 86400),
    ("h", 3600),
    ("m", 60),
    ("s", 1),
    ("ms", 0.001),
)
_PATTERN = re.compile(
    r"^(?:(\d+)y)?(?:(\d+)w)?(?:(\d+)d)?(?:(\d+)h)?(?:(\d+)m)?(?:(\d+)s)?(?:(\d+)ms)?$"
)


def parse_duration(text: str) -> float:
    """Seconds in a Prometheus duration; ValueError with Prometheus' message otherwise."""
    if text == "":
        raise ValueError("empty duration string")
    if text == "0":
        return 0.0
    match = _PATTERN.match(text)
    if match is None or not any(match.groups()):
        raise ValueError(f'not a valid duration string: "{text}"')
    total = 0.0
    for (_, scale), amount in zip(_UNITS, match.groups(), strict=True):
        if amount:
            total += int(amount) * scale
    return total


def format_duration(seconds: float) -> str:
    """Prometheus' canonical form: 90 -> "1m30s", 0 -> "0s", 0.5 -> "500ms"."""
    ms = round(seconds * 1000)
    if ms == 0:
        return "0s"
    out = ""
    for unit, scale in _UNITS:
        unit_ms = round(scale * 1000)
        if ms >= unit_ms:
            out += f"{ms // unit_ms}{unit}"
            ms %= unit_ms
    return out
