"""What one scrape (or one backfilled instant) hands to the head and the writer."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Literal

from vpsmon.collector.scrape.parse import Sample
from vpsmon.collector.scrape.target import Labels, Target
from vpsmon.collector.storage.query import STALE_NAN

# The series Prometheus writes for every scrape, whatever the target sent.
SYNTHETIC = ("up", "scrape_duration_seconds", "scrape_samples_scraped")

ResultKind = Literal["scrape", "backfill", "end"]


@dataclass(frozen=True, slots=True)
class ScrapeResult:
    """One scrape's outcome.

    kind:
      - "scrape": a scrape; written with the synthetic series and sets the target's health.
      - "backfill": samples read back from the exporter's /history after a gap, at their own
        time: written as they are, no synthetic series, no effect on health or last_seen.
      - "end": the target was removed; carries only stale markers for its last series.
    stale: series to mark stale at `timestamp` with Prometheus' staleness marker: those of
    the previous scrape missing from this one, or all of them when this scrape failed
    (https://prometheus.io/docs/prometheus/latest/querying/basics/#staleness).
    layout: the samples' (name, labels) in order, as the parser's cache hands it back: the
    same tuple object as the target's previous scrape while its series stay the same, so the
    scraper and the head skip their per-series work (None: not known, take the long way).
    """

    target: Target
    timestamp: float  # when the scrape started (seconds since the epoch)
    duration: float
    samples: list[Sample] = field(default_factory=list)
    error: str | None = None
    stale: Sequence[tuple[str, Labels]] = ()
    kind: ResultKind = "scrape"
    layout: tuple[tuple[str, Labels], ...] | None = None

    @property
    def up(self) -> bool:
        return self.error is None

    def with_synthetic(self) -> list[Sample]:
        """What to store: the samples, stale markers, and for a scrape up,
        scrape_duration_seconds and scrape_samples_scraped."""
        out = [*self.samples, *(Sample(name, labels, STALE_NAN) for name, labels in self.stale)]
        if self.kind == "scrape":
            out.extend(self.synthetic())
        return out

    def synthetic(self) -> list[Sample]:
        """The synthetic series of a scrape (`SYNTHETIC`, in that order)."""
        return [
            Sample("up", (), 1.0 if self.up else 0.0),
            Sample("scrape_duration_seconds", (), self.duration),
            Sample("scrape_samples_scraped", (), float(len(self.samples))),
        ]
