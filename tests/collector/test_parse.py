"""Our exposition parser against prometheus_client's, on generated and on malformed input.

The contract (collector/scrape/parse.py): on valid exposition both give the same samples;
on anything else, whatever ours accepts prometheus_client accepts too, with the same samples
(ours may refuse more: Prometheus does). Names may differ only where prometheus_client adds
`_total` to a counter that lacks it, which Prometheus does not.
"""

from __future__ import annotations

import math
import struct
from typing import Any

import pytest
from hypothesis import HealthCheck, assume, example, given, settings
from hypothesis import strategies as st
from prometheus_client.parser import text_string_to_metric_families

from vpsmon.collector.scrape.parse import (
    ParseError,
    Sample,
    ScrapeCache,
    parse_exposition,
    parse_scrape,
    parse_timestamped,
)

Row = tuple[str, tuple[tuple[str, str], ...], float, float | None]

PROPERTY = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def reference(text: str) -> list[Row]:
    rows = []
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            ts = float(s.timestamp) if s.timestamp is not None else None
            rows.append((s.name, tuple(sorted(s.labels.items())), float(s.value), ts))
    return rows


def ours(text: str) -> list[Row]:
    return [(s.name, s.labels, s.value, ts) for s, ts in parse_timestamped(text)]


def same_value(a: float, b: float) -> bool:
    return struct.pack("<d", a) == struct.pack("<d", b) or (math.isnan(a) and math.isnan(b))


def same_rows(mine: list[Row], theirs: list[Row]) -> bool:
    if len(mine) != len(theirs):
        return False
    for (n1, l1, v1, t1), (n2, l2, v2, t2) in zip(mine, theirs, strict=True):
        if n2 not in (n1, n1 + "_total") or l1 != l2 or not same_value(v1, v2):
            return False
        if t1 != t2 and not (t1 is not None and t2 is not None and math.isclose(t1, t2)):
            return False
    return True


# ------------------------------------------------------------------ generated valid input

metric_names = st.from_regex(r"[a-zA-Z_:][a-zA-Z0-9_:]{0,15}", fullmatch=True)
label_names = st.from_regex(r"[a-zA-Z][a-zA-Z0-9_]{0,10}", fullmatch=True)
label_values = st.text(max_size=12)
values = st.one_of(
    st.floats(allow_nan=True, allow_infinity=True),
    st.integers(min_value=-(2**53), max_value=2**53),
)


def escape_value(text: str) -> str:
    return text.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def render_value(value: float | int) -> str:
    if isinstance(value, int):
        return str(value)
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    return repr(value)


@st.composite
def expositions(draw: Any) -> tuple[str, list[Row]]:
    lines: list[str] = []
    expected: list[Row] = []
    used: set[str] = set()
    for _ in range(draw(st.integers(0, 6))):
        name = draw(metric_names.filter(lambda n: n not in used))
        used.add(name)
        kind = draw(st.sampled_from(["gauge", "untyped", "counter", None]))
        if kind == "counter" and not name.endswith("_total"):
            name += "_total"  # prometheus_client renames other counters (see module doc)
            assume(name not in used)
            used.add(name)
        if draw(st.booleans()):
            help_text = draw(
                st.text(alphabet=st.characters(blacklist_characters="\n\r"), max_size=20)
            )
            lines.append(f"# HELP {name} {help_text.replace(chr(92), chr(92) * 2)}")
        if kind is not None:
            lines.append(f"# TYPE {name} {kind}")
        seen_labels: set[tuple[tuple[str, str], ...]] = set()
        for _ in range(draw(st.integers(1, 4))):
            labels = draw(st.dictionaries(label_names, label_values, max_size=3))
            key = tuple(sorted(labels.items()))
            assume(key not in seen_labels)
            seen_labels.add(key)
            value = draw(values)
            ts = draw(st.one_of(st.none(), st.integers(0, 2**41)))
            pairs = ",".join(f'{k}="{escape_value(v)}"' for k, v in labels.items())
            series = f"{name}{{{pairs}}}" if labels or draw(st.booleans()) else name
            line = f"{series} {render_value(value)}" + (f" {ts}" if ts is not None else "")
            lines.append(line)
            expected.append((name, key, float(value), ts / 1000 if ts is not None else None))
        if draw(st.booleans()):
            lines.append("")
    return "\n".join(lines) + "\n", expected


@PROPERTY
@given(expositions())
def test_generated_exposition_parses_the_same_as_prometheus_client(
    case: tuple[str, list[Row]],
) -> None:
    text, expected = case
    mine = ours(text)
    assert same_rows(mine, expected), (mine, expected)
    assert same_rows(mine, reference(text))
    plain = parse_exposition(text, 10_000)
    assert same_rows(
        [(s.name, s.labels, s.value, None) for s in plain], [r[:3] + (None,) for r in mine]
    )


# ------------------------------------------------------------------ malformed input

ALPHABET = 'ab_:{}=",. \t\n#\\01234567eE+-naNIf\r\x00é'


def accepts_only_what_prometheus_client_accepts(text: str) -> None:
    try:
        mine = ours(text)
    except ParseError:
        return  # refusing is always allowed; any other exception fails the test
    try:
        theirs = reference(text)
    except Exception as err:  # noqa: BLE001 (prometheus_client raises many kinds)
        pytest.fail(f"ours accepted {text!r} as {mine!r}; prometheus_client refused: {err!r}")
    assert same_rows(mine, theirs), (text, mine, theirs)


@PROPERTY
@given(st.text(alphabet=ALPHABET, max_size=60))
@example('a{b="c"} 1\n')
@example("a 1 2 3\n")
@example('a{b="c",b="d"} 1\n')
@example('a{__name__="x"} 1\n')
@example("# TYPE a\n")
@example("a 1_000\n")
@example("a 1e3\na 0x10\n")
@example("# TYPE a counter\na 1\n")
def test_whatever_ours_accepts_prometheus_client_accepts_the_same(text: str) -> None:
    accepts_only_what_prometheus_client_accepts(text)


@st.composite
def mutated(draw: Any) -> str:
    text, _ = draw(expositions())
    chars = list(text)
    for _ in range(draw(st.integers(1, 4))):
        op = draw(st.sampled_from(["insert", "delete", "replace"]))
        pos = draw(st.integers(0, max(len(chars) - 1, 0)))
        char = draw(st.sampled_from(ALPHABET))
        if op == "insert":
            chars.insert(pos, char)
        elif chars and op == "delete":
            del chars[pos]
        elif chars:
            chars[pos] = char
    return "".join(chars)


@PROPERTY
@given(mutated())
def test_a_mutated_exposition_is_refused_or_read_as_prometheus_client_reads_it(
    text: str,
) -> None:
    accepts_only_what_prometheus_client_accepts(text)


@PROPERTY
@given(st.text(max_size=200))
def test_any_text_gives_samples_or_a_parse_error_never_a_crash(text: str) -> None:
    try:
        parse_exposition(text, 1000)
    except ParseError as err:
        assert str(err)


# ------------------------------------------------------------------ examples


def test_the_sample_limit_stops_parsing_early() -> None:
    text = "".join(f'm{{i="{i}"}} {i}\n' for i in range(1000))
    with pytest.raises(ParseError, match="sample limit 10 exceeded"):
        parse_exposition(text, 10)
    assert len(parse_exposition(text, 1000)) == 1000


def test_names_are_kept_as_sent_even_for_counters_without_total() -> None:
    assert parse_exposition("# TYPE requests counter\nrequests 5\n", 10) == [
        Sample("requests", (), 5.0)
    ]


@pytest.mark.parametrize(
    ("line", "error"),
    [
        ("a{b=c} 1", "malformed labels"),
        ('a{b="c"', "cannot parse line"),
        ('a{b="1",b="2"} 1', "label 'b' twice"),
        ("a one", "invalid value 'one'"),
        ("a 1 soon", "invalid timestamp 'soon'"),
        ("a 1 2 3", "cannot parse line"),
        ("# TYPE 1a gauge", "invalid metric name"),
        ("<html>", "cannot parse line"),
    ],
)
def test_malformed_lines_are_refused_with_the_reason_and_the_line(line: str, error: str) -> None:
    with pytest.raises(ParseError) as caught:
        parse_exposition(f"ok 1\n{line}\n", 10)
    assert error in str(caught.value)
    assert str(caught.value).startswith("invalid exposition: ")


# ------------------------------------------------------------------ the per-target cache


def outcome(text: str, cache: ScrapeCache | None) -> list[Row] | str:
    """The samples as rows (bit-exact values), or the parse error's message."""
    try:
        return [
            (s.name, s.labels, struct.unpack("<d", struct.pack("<d", s.value))[0], None)
            for s in parse_exposition(text, 1000, cache)
        ]
    except ParseError as err:
        return str(err)


def same_outcome(a: list[Row] | str, b: list[Row] | str) -> bool:
    return a == b if isinstance(a, str) or isinstance(b, str) else same_rows(a, b)


@PROPERTY
@given(
    st.lists(st.one_of(mutated(), st.text(alphabet=ALPHABET, max_size=60)), max_size=4), mutated()
)
@example(['a{b="c d"} 1\n'], 'a{b="c d"} 2 3\n')
@example(["a 1\n"], "a \t2\n")
@example(["a 1\n"], "a 2\x0b\n")
@example(["a 1\n"], "a 1_0\n")
@example(["a 1\n"], "a }\n")
@example(['a{b="c"} 1\n'], 'a{b="c"} 2}\n')
@example(["a  1\n"], "a  2\n")
@example(["# TYPE a gauge\n"], "# TYPE a gauge\n# TYPE 1a gauge\n")
def test_a_scrape_parses_the_same_with_a_cache_warmed_by_earlier_scrapes(
    earlier: list[str], text: str
) -> None:
    cache = ScrapeCache()
    for before in earlier:
        outcome(before, cache)
    outcome(text, cache)  # the same text twice: the second time every line is known
    assert same_outcome(outcome(text, cache), outcome(text, None))


def test_a_label_change_between_scrapes_gives_the_new_labels() -> None:
    cache = ScrapeCache()
    first = parse_scrape('a{x="1"} 1\nb 2\n', 10, cache)
    second = parse_scrape('a{x="2"} 3\nb 4\n', 10, cache)
    assert second.samples == [Sample("a", (("x", "2"),), 3.0), Sample("b", (), 4.0)]
    assert second.layout == (("a", (("x", "2"),)), ("b", ()))
    assert second.layout is not first.layout


def test_the_layout_is_the_same_object_while_the_series_stay_the_same() -> None:
    cache = ScrapeCache()
    first = parse_scrape("# TYPE a gauge\na 1\nb 2\n", 10, cache)
    second = parse_scrape("# TYPE a gauge\na 5\nb 6\n", 10, cache)
    assert second.layout is first.layout
    assert second.samples == [Sample("a", (), 5.0), Sample("b", (), 6.0)]
    reordered = parse_scrape("b 7\na 8\n", 10, cache)
    assert reordered.layout == (("b", ()), ("a", ()))
    vanished = parse_scrape("a 9\n", 10, cache)
    assert vanished.layout == (("a", ()),)


def test_a_duplicated_line_is_kept_twice_in_samples_and_layout() -> None:
    cache = ScrapeCache()
    for value in ("1", "2"):
        parsed = parse_scrape(f"a {value}\na {value}\n", 10, cache)
        assert parsed.samples == [Sample("a", (), float(value))] * 2
        assert parsed.layout == (("a", ()), ("a", ()))


def test_a_known_series_still_counts_against_the_sample_limit() -> None:
    cache = ScrapeCache()
    text = "".join(f'm{{i="{i}"}} {i}\n' for i in range(20))
    assert len(parse_exposition(text, 20, cache)) == 20
    with pytest.raises(ParseError, match="sample limit 10 exceeded"):
        parse_exposition(text, 10, cache)


def test_a_known_series_with_a_bad_value_is_refused_as_without_the_cache() -> None:
    cache = ScrapeCache()
    parse_exposition("a 1\n", 10, cache)
    with pytest.raises(ParseError, match="invalid value 'one'"):
        parse_exposition("a one\n", 10, cache)


def test_the_cache_starts_again_when_label_values_change_every_scrape(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import vpsmon.collector.scrape.parse as parse

    monkeypatch.setattr(parse, "LABELS_CACHE_MAX", 8)
    cache = ScrapeCache()
    for scrape in range(10):
        text = "".join(f'm{{i="{scrape}-{i}"}} {i}\n' for i in range(5))
        assert len(parse_exposition(text, 100, cache)) == 5
        assert len(cache.series) <= 8 and len(cache.labels) <= 8
