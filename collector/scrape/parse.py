"""Parse a /metrics body (Prometheus text format 0.0.4) into samples.

Our own parser rather than prometheus_client's: bench/parser.py measured that one at about a
tenth of the speed (docs/benchmarks.md), which at 1,000 targets × 1,000 samples every 15 s
would take most of a core by itself; it also builds a whole family before handing back its
first sample, so a target sending a million samples cost hundreds of MB before the sample
limit could stop it, and it renames counters without the `_total` suffix. This one stops at
the sample limit, keeps names as sent, and is tested against prometheus_client's on generated
and malformed input (tests/collector/test_parse.py): whatever it accepts, prometheus_client
accepts with the same samples.

Format: https://prometheus.io/docs/instrumenting/exposition_formats/#text-based-format
Stricter than prometheus_client where Prometheus is too: label names without `:`, no
duplicate label names, at most a value and a timestamp after the series.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any, NamedTuple

from vpsmon.collector.scrape.target import Labels


class ParseError(Exception):
    pass


class Sample(NamedTuple):
    """One scraped sample. A named tuple, not a frozen dataclass: a fleet makes tens of
    thousands a second, and a tuple is built about three times faster."""

    name: str
    labels: Labels
    value: float


_METRIC_NAME = re.compile(r"[a-zA-Z_:][a-zA-Z0-9_:]*")
# name, then optionally {labels}, then value and optional timestamp. The label block is
# matched greedily to the last "}" of the line: value and timestamp never contain one.
_SAMPLE = re.compile(
    r"([a-zA-Z_:][a-zA-Z0-9_:]*)[ \t]*(?:\{(.*)\})?[ \t]*?(?<=[ \t}])(\S+)(?:[ \t]+(\S+))?"
)
# One label pair; values without backslashes (the usual case) and with escapes.
_LABEL = re.compile(r'[ \t]*([a-zA-Z_][a-zA-Z0-9_]*)[ \t]*=[ \t]*"((?:[^"\\\n]|\\.)*)"[ \t]*(,|$)')
# Characters split into lines at a time.
_BLOCK = 256 * 1024
_TYPES = frozenset(("counter", "gauge", "histogram", "summary", "untyped"))
_ESCAPE = re.compile(r"\\(.)")
_UNESCAPE = {"\\": "\\", "n": "\n", '"': '"'}


def _unescape(match: re.Match[str]) -> str:
    char = match.group(1)
    # prometheus_client keeps an unknown escape as written, and so does Prometheus.
    return _UNESCAPE.get(char, "\\" + char)


def _labels(text: str, line: str) -> Labels:
    if not text.strip(" \t"):
        return ()
    pairs: list[tuple[str, str]] = []
    pos = 0
    end = len(text)
    while pos < end:
        match = _LABEL.match(text, pos)
        if match is None:
            raise ParseError(f"invalid exposition: malformed labels in {line[:120]!r}")
        value = match.group(2)
        if "\\" in value:
            value = _ESCAPE.sub(_unescape, value)
        pairs.append((match.group(1), value))
        pos = match.end()
        if not match.group(3):
            break
        if text[pos:].strip(" \t") == "":
            break  # a trailing comma
    if pos < end and text[pos:].strip(" \t"):
        raise ParseError(f"invalid exposition: malformed labels in {line[:120]!r}")
    pairs.sort()
    if pairs[0][0] == "__name__" or any(k == "__name__" for k, _ in pairs):
        raise ParseError(f"invalid exposition: __name__ given as a label in {line[:120]!r}")
    for (a, _), (b, _) in zip(pairs, pairs[1:], strict=False):
        if a == b:
            raise ParseError(f"invalid exposition: label {a!r} twice in {line[:120]!r}")
    return tuple(pairs)


# The usual HELP and TYPE lines, which `_comment` would accept: a match skips its split and
# checks (half the lines of an exporter's payload are these; they were a sixth of the
# collector's CPU at 1,000 targets). Anything else takes the full check.
_PLAIN_COMMENT = re.compile(
    r"# (?:HELP [a-zA-Z_:][a-zA-Z0-9_:]*(?: .*)?"
    r"|TYPE [a-zA-Z_:][a-zA-Z0-9_:]* (?:counter|gauge|histogram|summary|untyped))"
)


def _comment(line: str) -> None:
    """HELP and TYPE lines must name a valid metric; other comments are free text."""
    parts = line[1:].split(None, 2)
    if len(parts) < 2 or parts[0] not in ("HELP", "TYPE"):
        return
    if not _METRIC_NAME.fullmatch(parts[1]):
        raise ParseError(f"invalid exposition: invalid metric name in {line[:120]!r}")
    if parts[0] == "TYPE" and (len(parts) < 3 or parts[2] not in _TYPES):
        raise ParseError(
            "invalid exposition: TYPE must be counter, gauge, histogram, summary or untyped"
            f" in {line[:120]!r}"
        )


def _chunks(text: str) -> Iterator[list[str]]:
    """The lines of `text`, a block at a time: splitting a 20 MB body at once would make a
    million strings before the sample limit can stop anything."""
    start, size = 0, len(text)
    while start < size:
        end = text.find("\n", start + _BLOCK)
        if end == -1:
            end = size
        yield text[start:end].split("\n")
        start = end + 1


# Entries a target's cache keeps at most (label blocks, series); past it that part starts
# again: a target whose label values change every scrape must not grow it without bound.
LABELS_CACHE_MAX = 8192

Series = tuple[str, Labels]


class ScrapeCache:
    """What the parser keeps of one target between its scrapes, as Prometheus' scrape cache
    does: an exporter sends the same series text every time, only the values change.

    - ``series``: the text of a line before its value (``name{labels}``) → that series'
      ``(name, labels)``, for lines without a timestamp. A line whose series text is known is
      split at its last space and only its value is parsed.
    - ``labels``: label blocks already parsed (text → sorted labels), for the other lines.
    - ``comments``: HELP and TYPE lines already checked (the same every scrape).
    - ``layout``: the series of the last scrape in order, one tuple kept while they stay the
      same, so the scraper and the head can tell "same series as last time" by identity.

    A cached entry is only ever the result the full parse gave for the same text, so a
    scrape parses the same with or without the cache (tests/collector/test_parse.py).
    """

    __slots__ = ("series", "labels", "comments", "layout")

    def __init__(self) -> None:
        self.series: dict[str, Series] = {}
        self.labels: dict[str, Labels] = {}
        self.comments: set[str] = set()
        self.layout: tuple[Series, ...] = ()


class Parsed(NamedTuple):
    samples: list[Any]  # [Sample], or [(Sample, seconds or None)] from parse_timestamped
    # The samples' series in order; the very tuple of the previous scrape when unchanged.
    layout: tuple[Series, ...]


def _parse(text: str, limit: int, with_time: bool, cache: ScrapeCache | None = None) -> Parsed:
    """Samples [Sample], or [(Sample, seconds or None)] with `with_time`."""
    out: list[Any] = []
    keys: list[Series] = []
    if cache is None:
        cache = ScrapeCache()
    else:
        # Label values that change every scrape: start again.
        if len(cache.series) >= LABELS_CACHE_MAX:
            cache.series.clear()
        if len(cache.labels) >= LABELS_CACHE_MAX:
            cache.labels.clear()
        if len(cache.comments) >= LABELS_CACHE_MAX:
            cache.comments.clear()
    for lines in _chunks(text):
        _parse_lines(lines, out, keys, limit, with_time, cache)
    layout = tuple(keys)
    if layout == cache.layout:  # the cached series compare by identity first: cheap
        layout = cache.layout
    else:
        cache.layout = layout
    return Parsed(out, layout)


def _parse_lines(
    lines: list[str],
    out: list[Any],
    keys: list[Series],
    limit: int,
    with_time: bool,
    cache: ScrapeCache,
) -> None:
    match_sample = _SAMPLE.fullmatch
    match_comment = _PLAIN_COMMENT.fullmatch
    series_cache = cache.series
    known_series = series_cache.get
    labels_cache = cache.labels
    comments = cache.comments
    new_sample = tuple.__new__  # Sample(...) without the named tuple's Python-level __new__
    for raw in lines:
        line = raw.strip(" \t\r")
        if not line:
            continue
        if line[0] == "#":
            if line not in comments:
                if match_comment(line) is None:
                    _comment(line)  # raises on a malformed HELP or TYPE; other text is free
                elif len(comments) < LABELS_CACHE_MAX:
                    comments.add(line)
            continue
        cut = line.rfind(" ")
        if cut > 0:
            key = known_series(line[:cut])
            if key is not None:
                # The series text is one the full parse accepted with the value right after
                # this space and no timestamp. The value (no space, as `cut` is the last one)
                # must be one the full parse takes whole: ASCII, no "_", no white space at
                # either end, a float. Anything else takes the full parse and its errors.
                value_text = line[cut + 1 :]
                if (
                    value_text.isascii()
                    and "_" not in value_text
                    and value_text[0] > " "
                    and value_text[-1] > " "
                ):
                    try:
                        value = float(value_text)
                    except ValueError:
                        pass
                    else:
                        keys.append(key)
                        sample = new_sample(Sample, (key[0], key[1], value))
                        out.append((sample, None) if with_time else sample)
                        if len(out) > limit:
                            raise ParseError(f"sample limit {limit} exceeded")
                        continue
        match = match_sample(line)
        if match is None:
            raise ParseError(f"invalid exposition: cannot parse line {line[:120]!r}")
        name, label_text, value_text, ts_text = match.groups()
        if label_text is None:
            labels: Labels = ()
        else:
            cached = labels_cache.get(label_text)
            if cached is None:
                cached = _labels(label_text, line)
                if len(labels_cache) < LABELS_CACHE_MAX:
                    labels_cache[label_text] = cached
            labels = cached
        try:
            # float() also takes "1_000" and non-ASCII digits, which the format does not.
            if "_" in value_text or not value_text.isascii():
                raise ValueError
            value = float(value_text)
        except ValueError:
            raise ParseError(
                f"invalid exposition: invalid value {value_text[:40]!r} in {line[:120]!r}"
            ) from None
        ts: float | None = None
        if ts_text is not None:
            try:
                if "_" in ts_text or not ts_text.isascii():
                    raise ValueError
                milliseconds = int(ts_text)
            except ValueError:
                raise ParseError(
                    f"invalid exposition: invalid timestamp {ts_text[:40]!r} in {line[:120]!r}"
                ) from None
            ts = milliseconds / 1000 if with_time else None
            key = (name, labels)
        elif cut > 0 and match.start(3) == cut + 1:
            # Value right after the last space, no timestamp: the fast path above can take
            # the next line with this series text.
            key = series_cache.get(line[:cut]) or (name, labels)
            if len(series_cache) < LABELS_CACHE_MAX:
                series_cache[line[:cut]] = key
        else:
            key = (name, labels)
        keys.append(key)
        sample = new_sample(Sample, (name, labels, value))
        out.append((sample, ts) if with_time else sample)
        if len(out) > limit:
            raise ParseError(f"sample limit {limit} exceeded")


def parse_exposition(
    text: str, sample_limit: int, cache: ScrapeCache | None = None
) -> list[Sample]:
    """The samples of a /metrics body (timestamps ignored, as Prometheus' scrapes do).

    ``cache``: what this target's previous scrapes taught the parser (`ScrapeCache`), kept by
    the caller between scrapes of one target.
    """
    return _parse(text, sample_limit, False, cache).samples


def parse_scrape(text: str, sample_limit: int, cache: ScrapeCache | None = None) -> Parsed:
    """`parse_exposition` with the series layout of the scrape (see `ScrapeCache.layout`)."""
    return _parse(text, sample_limit, False, cache)


def parse_timestamped(text: str) -> list[tuple[Sample, float | None]]:
    """Samples with their timestamps (seconds), for /history bodies; no sample limit (the
    body size limit bounds them)."""
    return _parse(text, 2**62, True).samples
