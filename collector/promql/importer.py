"""Parse Prometheus text exposition with timestamps for import (backfill, tests; issue #8).

Each sample line is ``name{label="value",...} VALUE TIMESTAMP_MS``; ``# HELP`` / ``# TYPE`` and
other comments are skipped. The whole input is validated before anything is written, and every
error names its line, so a bad file changes nothing. Limits keep one import bounded.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field

_NAME = re.compile(r"[a-zA-Z_:][a-zA-Z0-9_:]*")
_LABEL = re.compile(r"[a-zA-Z_][a-zA-Z0-9_]*")
_ESCAPES = {"\\": "\\", '"': '"', "n": "\n"}
MAX_LABELS = 64
MAX_LABEL_VALUE = 4096
MAX_SERIES_DEFAULT = 100_000
MIN_TIMESTAMP_MS = 0
MAX_TIMESTAMP_MS = 4_102_444_800_000  # 2100-01-01


class InvalidImport(ValueError):
    """Invalid import input; the message names the line."""


@dataclass
class ImportedSeries:
    name: str
    labels: tuple[tuple[str, str], ...]  # sorted, without __name__
    timestamps: list[float] = field(default_factory=list)  # seconds, ascending
    values: list[float] = field(default_factory=list)

    @property
    def all_labels(self) -> dict[str, str]:
        return {"__name__": self.name, **dict(self.labels)}


@dataclass
class ParsedImport:
    series: list[ImportedSeries]
    samples: int


def parse_import(
    text: str, *, max_samples: int = 1_000_000, max_series: int = MAX_SERIES_DEFAULT
) -> ParsedImport:
    found: dict[tuple[str, tuple[tuple[str, str], ...]], dict[int, float]] = {}
    samples = 0
    for number, raw in enumerate(text.splitlines(), start=1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        try:
            name, labels, value, millis = _parse_line(line)
        except InvalidImport as err:
            raise InvalidImport(f"line {number}: {err}") from None
        key = (name, labels)
        points = found.get(key)
        if points is None:
            if len(found) >= max_series:
                raise InvalidImport(f"line {number}: more than {max_series} series in one import")
            points = found[key] = {}
        previous = points.get(millis)
        if previous is not None:
            if previous == value or (math.isnan(previous) and math.isnan(value)):
                continue
            raise InvalidImport(
                f"line {number}: a different value for {name} at the same timestamp {millis}"
            )
        points[millis] = value
        samples += 1
        if samples > max_samples:
            raise InvalidImport(f"line {number}: more than {max_samples} samples in one import")
    if samples == 0:
        raise InvalidImport("no samples found")
    series = []
    for (name, labels), points in found.items():
        ordered = sorted(points)
        series.append(
            ImportedSeries(name, labels, [t / 1000 for t in ordered], [points[t] for t in ordered])
        )
    return ParsedImport(series, samples)


def _parse_line(line: str) -> tuple[str, tuple[tuple[str, str], ...], float, int]:
    match = _NAME.match(line)
    if not match:
        raise InvalidImport(f"invalid metric name at {line[:40]!r}")
    name = match.group()
    pos = match.end()
    labels: dict[str, str] = {}
    if pos < len(line) and line[pos] == "{":
        labels, pos = _parse_labels(line, pos + 1)
    rest = line[pos:].split()
    if len(rest) != 2:
        if len(rest) == 1:
            raise InvalidImport(f"{name}: the sample has no timestamp (milliseconds) to import at")
        raise InvalidImport(f"{name}: expected a value and a timestamp after the labels")
    value = _parse_value(rest[0])
    try:
        millis = int(rest[1])
    except ValueError:
        raise InvalidImport(
            f"{name}: invalid timestamp {rest[1]!r} (integer milliseconds)"
        ) from None
    if not MIN_TIMESTAMP_MS <= millis <= MAX_TIMESTAMP_MS:
        raise InvalidImport(f"{name}: timestamp {millis} is out of range (milliseconds since 1970)")
    return name, tuple(sorted(labels.items())), value, millis


def _parse_value(text: str) -> float:
    lowered = text.lower()
    if lowered in ("nan",):
        return math.nan
    if lowered in ("+inf", "inf"):
        return math.inf
    if lowered == "-inf":
        return -math.inf
    try:
        value = float(text)
    except ValueError:
        raise InvalidImport(f"invalid value {text!r}") from None
    if "_" in text:
        raise InvalidImport(f"invalid value {text!r}")
    return value


def _parse_labels(line: str, pos: int) -> tuple[dict[str, str], int]:
    labels: dict[str, str] = {}
    n = len(line)
    while True:
        while pos < n and line[pos] in " \t":
            pos += 1
        if pos < n and line[pos] == "}":
            return labels, pos + 1
        match = _LABEL.match(line, pos)
        if not match:
            raise InvalidImport(f"invalid label name at column {pos + 1}")
        label = match.group()
        if label.startswith("__"):
            raise InvalidImport(f"label names starting with __ are reserved: {label}")
        if label in labels:
            raise InvalidImport(f"duplicate label {label}")
        pos = match.end()
        while pos < n and line[pos] in " \t":
            pos += 1
        if not line.startswith('="', pos):
            raise InvalidImport(f'expected =" after label {label} at column {pos + 1}')
        pos += 2
        chars: list[str] = []
        while True:
            if pos >= n:
                raise InvalidImport(f"unterminated value of label {label}")
            c = line[pos]
            if c == "\\":
                if pos + 1 >= n or line[pos + 1] not in _ESCAPES:
                    raise InvalidImport(f"invalid escape in the value of label {label}")
                chars.append(_ESCAPES[line[pos + 1]])
                pos += 2
                continue
            if c == '"':
                pos += 1
                break
            chars.append(c)
            pos += 1
        value = "".join(chars)
        if len(value) > MAX_LABEL_VALUE:
            raise InvalidImport(f"the value of label {label} is longer than {MAX_LABEL_VALUE}")
        if value:  # an empty value is the same as no label (Prometheus)
            labels[label] = value
        if len(labels) > MAX_LABELS:
            raise InvalidImport(f"more than {MAX_LABELS} labels")
        while pos < n and line[pos] in " \t":
            pos += 1
        if pos < n and line[pos] == ",":
            pos += 1
            continue
        if pos < n and line[pos] == "}":
            return labels, pos + 1
        raise InvalidImport(
            f"expected , or }} after the value of label {label} at column {pos + 1}"
        )
