"""Parse a /metrics body into samples.

For now this uses prometheus_client's parser; issue #4 measures it and may replace it.
"""

from __future__ import annotations

from dataclasses import dataclass

from prometheus_client.parser import text_string_to_metric_families

from vpsmon.collector.scrape.target import Labels


class ParseError(Exception):
    pass


@dataclass(frozen=True, slots=True)
class Sample:
    name: str
    labels: Labels
    value: float


def parse_exposition(text: str, sample_limit: int) -> list[Sample]:
    samples: list[Sample] = []
    try:
        for family in text_string_to_metric_families(text):
            for s in family.samples:
                samples.append(Sample(s.name, tuple(sorted(s.labels.items())), float(s.value)))
                if len(samples) > sample_limit:
                    raise ParseError(f"sample limit {sample_limit} exceeded")
    except ParseError:
        raise
    except (ValueError, TypeError, IndexError, KeyError) as err:
        raise ParseError(f"invalid exposition: {err}") from None
    return samples


def parse_timestamped(text: str) -> list[tuple[Sample, float | None]]:
    """Samples with their timestamps (seconds), for /history bodies; no sample limit (the
    body size limit bounds them)."""
    out: list[tuple[Sample, float | None]] = []
    try:
        for family in text_string_to_metric_families(text):
            for s in family.samples:
                ts = float(s.timestamp) if s.timestamp is not None else None
                out.append((Sample(s.name, tuple(sorted(s.labels.items())), float(s.value)), ts))
    except (ValueError, TypeError, IndexError, KeyError) as err:
        raise ParseError(f"invalid exposition: {err}") from None
    return out
