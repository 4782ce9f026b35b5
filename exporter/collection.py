"""Runs the enabled collectors and keeps the rendered payload ready for scrapes.

A scrape never triggers collection: it is served from the last pre-rendered payload (plain and
gzipped), so scrape cost does not depend on how many collectors are on (issue #3).
"""

from __future__ import annotations

import gzip
import logging
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from vpsmon import __version__
from vpsmon.exporter import exposition
from vpsmon.exporter.collectors.base import Collect, CollectorSpec, Context
from vpsmon.exporter.metrics import MetricFamily, gauge

log = logging.getLogger("vpsmon.exporter")


@dataclass(frozen=True, slots=True)
class Payload:
    """One collection, rendered."""

    collected_at: float
    text: bytes
    gzipped: bytes
    families: tuple[MetricFamily, ...]


class Collection:
    """The enabled collectors, run together by `collect_once`."""

    def __init__(self, specs: Sequence[CollectorSpec], context: Context) -> None:
        self._collectors: list[tuple[str, Collect]] = [(s.name, s.create(context)) for s in specs]
        self._failing: set[str] = set()

    @property
    def names(self) -> list[str]:
        return [name for name, _ in self._collectors]

    def close(self) -> None:
        """Release what stateful collectors hold (the docker collector's threads and client)."""
        for _, collect in self._collectors:
            close = getattr(collect, "close", None)
            if close is not None:
                close()

    def collect_once(self, now: float | None = None, own: Iterable[MetricFamily] = ()) -> Payload:
        """Run every collector once; `own` are the exporter's other self-metrics (history)."""
        now = time.time() if now is None else now
        success = gauge(
            "vpsmon_collector_success",
            "Whether a collector succeeded (1) or failed (0).",
            "collector",
        )
        duration = gauge(
            "vpsmon_collector_duration_seconds", "How long a collector took.", "collector"
        )
        families: list[MetricFamily] = []
        for name, collect in self._collectors:
            started = time.perf_counter()
            try:
                families.extend(_materialise(collect()))
            except Exception as err:  # one failing collector never breaks the payload
                ok = False
                if name not in self._failing:
                    # Once per failure streak, not every 5 s; recovery is logged too.
                    log.warning("collector failed collector=%s error=%r", name, describe(err))
                    self._failing.add(name)
            else:
                ok = True
                if name in self._failing:
                    log.info("collector recovered collector=%s", name)
                    self._failing.discard(name)
            duration.add(time.perf_counter() - started, name)
            success.add(1.0 if ok else 0.0, name)
        build = gauge(
            "vpsmon_exporter_build_info", "The vpsmon exporter's version; value is 1.", "version"
        )
        build.add(1, __version__)
        families.extend([success, duration, *own, build])
        text = exposition.render(families).encode()
        return Payload(now, text, gzip.compress(text, compresslevel=5), tuple(families))


def describe(err: BaseException) -> str:
    """What went wrong, for a log line: the message with the file name an OSError carries
    (`PermissionError: [Errno 13] Permission denied: '/proc/loadavg'`)."""
    text = str(err)
    if isinstance(err, OSError | ValueError | LookupError) or not text:
        return f"{type(err).__name__}: {text}" if text else type(err).__name__
    return text


def _materialise(result: Iterable[MetricFamily]) -> list[MetricFamily]:
    return list(result)
