"""The history buffer: the last `history.retention` of every series, served at /history.

A collector that missed scrapes (network away, collector restarted) asks for
`/history?since=T` and backfills the gap (DESIGN.md "Nothing is lost", issue #3 item 4).

Memory layout, chosen because a Python tuple per sample costs ~100 bytes while a double in an
`array` costs 8: every collection is one `Snapshot` holding its timestamp and a flat
`array('d')` of values, plus a reference to a `Layout` saying which series those values belong
to. Consecutive collections almost always have the same series, so they share one `Layout`
object, and HELP/TYPE/label names are kept once per family in it. At the defaults (5 s, 1 h,
~300 series on a small VPS) that is ~1.7 MB of values.
"""

from __future__ import annotations

import logging
import math
from array import array
from collections import deque
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from vpsmon.exporter.exposition import escape_help, escape_label_value, format_value
from vpsmon.exporter.metrics import MetricFamily, MetricType, counter, gauge

log = logging.getLogger("vpsmon.exporter")


@dataclass(frozen=True, slots=True)
class FamilyLayout:
    """One family's metadata and the label values of its series, in value order."""

    name: str
    type: MetricType
    help: str
    label_names: tuple[str, ...]
    series: tuple[tuple[str, ...], ...]


Layout = tuple[FamilyLayout, ...]


@dataclass(frozen=True, slots=True)
class Snapshot:
    """One collection: `values[i]` belongs to the i-th series of `layout`, in order."""

    timestamp: float
    layout: Layout
    values: array[float]


class HistoryQueryError(ValueError):
    """A /history query that cannot be answered; the message is shown to the client."""


class History:
    """A bounded ring of snapshots, oldest first.

    Two bounds, both applied on every `record`: snapshots older than `retention` seconds
    (relative to the `now` passed in) are dropped, and so are the oldest snapshots while more
    than `max_samples` values are held. `dropped_samples` counts what the second bound threw
    away before its time, so an operator can see that retention was cut short.
    """

    def __init__(self, retention: float, max_samples: int) -> None:
        if retention <= 0 or max_samples <= 0:
            raise ValueError("retention and max_samples must be positive")
        self.retention = retention
        self.max_samples = max_samples
        self.dropped_samples = 0
        self._snapshots: deque[Snapshot] = deque()
        self._held = 0
        self._warned = False

    def __len__(self) -> int:
        return len(self._snapshots)

    @property
    def samples(self) -> int:
        return self._held

    def record(self, families: Iterable[MetricFamily], now: float) -> None:
        """Keep one collection made at `now` (the payload's collected_at)."""
        layout, values = _flatten(families)
        previous = self._snapshots[-1].layout if self._snapshots else None
        if previous is not None and previous == layout:
            layout = previous  # share the object: the common case costs no layout memory
        self._snapshots.append(Snapshot(now, layout, values))
        self._held += len(values)
        self._expire(now)

    def families(self) -> list[MetricFamily]:
        """The buffer's own series, served in /metrics so a cut-short history is visible."""
        dropped = counter(
            "vpsmon_history_dropped_samples_total",
            "Samples dropped from the /history buffer before their retention ended, because"
            " history.max_samples was reached.",
        )
        dropped.add(self.dropped_samples)
        held = gauge("vpsmon_history_samples", "Samples held in the /history buffer.")
        held.add(self._held)
        return [dropped, held]

    def snapshots(self) -> list[Snapshot]:
        """A copy of the ring, safe to render in another thread while recording goes on."""
        return list(self._snapshots)

    def _expire(self, now: float) -> None:
        oldest_kept = now - self.retention
        while self._snapshots and self._snapshots[0].timestamp < oldest_kept:
            self._held -= len(self._snapshots.popleft().values)
        while self._held > self.max_samples and self._snapshots:
            dropped = len(self._snapshots.popleft().values)
            self._held -= dropped
            self.dropped_samples += dropped
            if not self._warned:
                # Once: this repeats every collection until the setting changes.
                log.warning(
                    "history is over history.max_samples; dropping the oldest samples"
                    " max_samples=%d retention=%gs",
                    self.max_samples,
                    self.retention,
                )
                self._warned = True


def _flatten(families: Iterable[MetricFamily]) -> tuple[Layout, array[float]]:
    values: array[float] = array("d")
    layout: list[FamilyLayout] = []
    for family in families:
        series = tuple(labels for labels, _ in family.samples)
        values.extend(value for _, value in family.samples)
        layout.append(
            FamilyLayout(family.name, family.type, family.help, family.label_names, series)
        )
    return tuple(layout), values


def parse_range(since: str | None, until: str | None) -> tuple[float, float | None]:
    """The `since`/`until` query parameters (UNIX seconds) of /history, checked."""
    if since is None or since == "":
        raise HistoryQueryError("since is required: /history?since=UNIX_SECONDS")
    start = _parse_seconds("since", since)
    end = None if until is None or until == "" else _parse_seconds("until", until)
    if end is not None and end < start:
        raise HistoryQueryError(f"until ({until}) is before since ({since})")
    return start, end


def _parse_seconds(name: str, text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not math.isfinite(value) or value < 0:
        # Echo a bounded piece of the input only: it goes back to whoever sent it.
        raise HistoryQueryError(
            f"{name} must be UNIX seconds such as 1700000000, got {text[:40]!r}"
        )
    return value


def render(snapshots: Sequence[Snapshot], since: float, until: float | None = None) -> str:
    """Text exposition of every sample with since <= timestamp <= until, timestamps in ms.

    The exposition format wants all lines of a family together under one HELP/TYPE, so samples
    are regrouped from per-collection order into family → series → time order. The newest
    HELP/TYPE of a family wins if it changed within the window.
    """
    # family name → (metadata, label values → [(timestamp_ms, value)])
    grouped: dict[str, tuple[FamilyLayout, dict[tuple[str, ...], list[tuple[int, float]]]]] = {}
    for snapshot in snapshots:
        if snapshot.timestamp < since or (until is not None and snapshot.timestamp > until):
            continue
        ts_ms = round(snapshot.timestamp * 1000)
        index = 0
        for family in snapshot.layout:
            entry = grouped.get(family.name)
            if entry is None or entry[0] is not family:
                series_map = entry[1] if entry is not None else {}
                entry = grouped[family.name] = (family, series_map)
            series_map = entry[1]
            for labels in family.series:
                series_map.setdefault(labels, []).append((ts_ms, snapshot.values[index]))
                index += 1
    out: list[str] = []
    for name, (family, series_map) in grouped.items():
        out.append(f"# HELP {name} {escape_help(family.help)}")
        out.append(f"# TYPE {name} {family.type}")
        for labels, points in series_map.items():
            prefix = _series_prefix(name, family.label_names, labels)
            out.extend(f"{prefix} {format_value(value)} {ts}" for ts, value in points)
    out.append("")
    return "\n".join(out)


def _series_prefix(name: str, label_names: tuple[str, ...], labels: tuple[str, ...]) -> str:
    if not label_names:
        return name
    pairs = ",".join(
        f'{n}="{escape_label_value(v)}"' for n, v in zip(label_names, labels, strict=True)
    )
    return f"{name}{{{pairs}}}"
