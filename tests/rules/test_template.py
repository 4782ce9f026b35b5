"""Alert templates: Go text/template as Prometheus uses it, evaluated safely."""

from __future__ import annotations

import pytest

from vpsmon.collector.rules.gofmt import format_float_v, go_sprintf
from vpsmon.collector.rules.template import (
    Context,
    QuerySample,
    TemplateError,
    expand_alert_template,
    parse_alert_template,
)

LABELS = {"instance": "web1:9100", "job": "node", "severity": "warn"}


async def _query(expr: str, t: float) -> list[QuerySample]:
    return [QuerySample({"instance": "b"}, 2.0), QuerySample({"instance": "a"}, 1.5)]


async def expand(text: str, value: float = 1234567.0, labels: dict[str, str] = LABELS) -> str:
    template = parse_alert_template(text, "A")
    ctx = Context(1000.0, _query, "http://prom.example/x")
    return await expand_alert_template(
        template, labels, {"cluster": "eu"}, "http://prom.example/x", value, ctx
    )


@pytest.mark.parametrize(
    ("text", "want"),
    [
        ("{{ $labels.instance }} down", "web1:9100 down"),
        ("{{ $value | humanize }}", "1.235M"),
        ("{{ humanize 0.00123 }}", "1.23m"),
        ("{{ humanize1024 1073741824 }}", "1Gi"),
        ("{{ humanizeDuration 3725 }}", "1h 2m 5s"),
        ("{{ humanizeDuration 90061 }}", "1d 1h 1m 1s"),
        ("{{ humanizeDuration 0.0012 }}", "1.2ms"),
        ("{{ humanizePercentage 0.12345 }}", "12.35%"),
        ("{{ humanizeTimestamp 1435065584.128 }}", "2015-06-23 13:19:44.128 +0000 UTC"),
        ('{{ printf "%.2f%%" 12.3456 }}', "12.35%"),
        ('{{ printf "%d" 3 }} {{ printf "%d" 1.5 }}', "3 %!d(float64=1.5)"),
        ("{{ $value }}", "1.234567e+06"),
        ('{{ $labels.job | printf "%s" | toUpper }}', "NODE"),
        ('{{ title "hello world" }} {{ toLower "ABC" }}', "Hello World abc"),
        ('{{ reReplaceAll "(.*):.*" "$1" $labels.instance }}', "web1"),
        (
            '{{ if eq $labels.severity "page" }}P'
            '{{ else if eq $labels.severity "warn" }}W{{ end }}',
            "W",
        ),
        ("{{ if gt $value 3.0 }}big{{ else }}small{{ end }}", "big"),
        (
            "{{ range $k, $v := $labels }}{{ $k }}={{ $v }};{{ end }}",
            "instance=web1:9100;job=node;severity=warn;",
        ),
        (
            "{{ with $labels.job }}[{{ . }}]{{ end }}"
            "{{ with $labels.nope }}x{{ else }}none{{ end }}",
            "[node]none",
        ),
        ("a {{- $labels.job -}} b {{/* comment */}}c", "anodeb c"),
        ("{{ $x := 3 }}{{ $x }}{{ $x = 4 }}{{ $x }}", "34"),
        ('{{ query "up" | first | value }}', "2"),
        ('{{ range query "up" | sortByLabel "instance" }}{{ .Labels.instance }}{{ end }}', "ab"),
        (
            "{{ .Labels.job }} {{ $externalLabels.cluster }} {{ $externalURL }}",
            "node eu http://prom.example/x",
        ),
        ("{{ $labels.missing }}|", "|"),
        ('{{ index $labels "job" }} {{ len $labels }}', "node 3"),
        ("{{ stripPort $labels.instance }}", "web1"),
        ("plain text only", "plain text only"),
    ],
)
async def test_template_expands_like_prometheus(text: str, want: str) -> None:
    assert await expand(text) == want


async def test_comparing_a_float_with_an_int_fails_as_in_go() -> None:
    out = await expand("{{ gt $value 3 }}")
    assert out.startswith("<error expanding template:") and "incompatible types" in out


async def test_an_unknown_field_is_an_expansion_error_not_a_crash() -> None:
    out = await expand("{{ .Nope }}")
    assert "can't evaluate field Nope" in out


@pytest.mark.parametrize(
    ("text", "error"),
    [
        ("{{ $labels.instance ", "unclosed action"),
        ("{{ nosuch 1 }}", 'function "nosuch" not defined'),
        ("{{ $undefined }}", 'undefined variable "$undefined"'),
        ("{{ if 1 }}x", "unexpected EOF"),
        ("{{ end }}", "unexpected {{end}}"),
        ('{{ define "x" }}{{ end }}', "not supported"),
        ("{{ .a | }}", "missing value for command"),
    ],
)
def test_bad_template_is_a_parse_error(text: str, error: str) -> None:
    with pytest.raises(TemplateError, match="template: __alert_A:1: ") as info:
        parse_alert_template(text, "A")
    assert error in str(info.value)


def test_templates_cannot_reach_python() -> None:
    with pytest.raises(TemplateError):
        parse_alert_template("{{ __import__ }}", "A")
    with pytest.raises(TemplateError):
        parse_alert_template("{{ .__class__ }}{{ eval }}", "A")


@pytest.mark.parametrize(
    ("value", "want"),
    [(1e6, "1e+06"), (123456.0, "123456"), (0.0001, "0.0001"), (1e-5, "1e-05"), (3.0, "3")],
)
def test_floats_print_as_go_prints_them(value: float, want: str) -> None:
    assert format_float_v(value) == want


def test_printf_reports_missing_and_extra_arguments_as_go_does() -> None:
    assert go_sprintf("%s %s", ["a"]) == "a %!s(MISSING)"
    assert go_sprintf("%s", ["a", 1]) == "a%!(EXTRA int=1)"


STRAIGHT = [
    "{{ $labels.instance }} is at {{ $value | humanize }}",
    '{{ printf "%.2f" $value }} on {{ $labels.job }}',
    "{{ $value }} {{ . }} {{ $ }} {{ .Value }} {{ $.Labels.job }}",
    "{{ $value | humanize1024 }} {{ $value | humanizePercentage }}",
    "{{ $value | humanizeDuration }} {{ humanizeTimestamp $value }}",
    '{{ $labels.job | printf "%s-%v" $labels.instance | toUpper }}',
    '{{ printf "%d" $value }} {{ printf "%5.1e|%x" $value }}',
    "{{ $labels }} {{ $externalLabels }} {{ $externalURL }} {{ $labels.missing }}|",
    '{{ reReplaceAll "(.*):.*" "$1" $labels.instance }} {{ stripPort $labels.instance }}',
    '{{ index $labels "job" }} {{ len $labels }} {{ eq $labels.job "node" }}',
    "{{ toTime $value }} {{ toDuration $value }} {{ not $value }} {{ print $value nil 1 }}",
    '{{ html "<a>" }} {{ js "it\'s" }} {{ urlquery "a b" }} {{ title $labels.job }}',
    "{{- $labels.job -}} b {{/* comment */}}c {{ 1.5 }} {{ true }} {{ nil }}",
    # Failing while expanding: the same error text both ways.
    "{{ .Labels.job.deeper }}",
    "{{ $value.Field }}",
    "{{ humanize $labels.job }}",
    '{{ printf 3 }} {{ index $labels "a" "b" }}',
    "{{ gt $value 1 }}",
    "{{ $labels.job | $value }}",
    '{{ parseDuration "nope" }} {{ len 3 }}',
]
VALUES = [0.0, -0.0, 1.0, 1234567.0, -2.5e-7, float("nan"), float("inf"), float("-inf"), 3.0]


@pytest.mark.parametrize("text", STRAIGHT)
async def test_a_straight_template_expands_as_the_walker_expands_it(text: str) -> None:
    straight = parse_alert_template(text, "A")
    walked = parse_alert_template(text, "A")
    walked.plan = None
    ctx = Context(1000.0, _query, "http://prom.example/x")
    for value in VALUES:
        texts = [
            await expand_alert_template(
                t, LABELS, {"cluster": "eu"}, "http://prom.example/x", value, ctx
            )
            for t in (straight, walked)
        ]
        assert texts[0] == texts[1]


def test_only_templates_of_text_and_pure_piped_operands_run_straight() -> None:
    assert all(parse_alert_template(t, "A").plan is not None for t in STRAIGHT[:13])
    for text in (
        '{{ query "up" | first | value }}',
        "{{ now }}",
        "{{ if gt $value 3.0 }}big{{ end }}",
        "{{ $x := 3 }}{{ $x }}",
        "{{ humanize (len $labels) }}",
        "{{ and $value 1 }}",
    ):
        assert parse_alert_template(text, "A").plan is None


def test_a_format_used_again_formats_the_new_arguments() -> None:
    # go_sprintf keeps each format parsed: only the text around the verbs may be reused.
    fmt = "%.2f on %s (%d%%)"
    assert go_sprintf(fmt, [1.234, "a", 3]) == "1.23 on a (3%)"
    assert go_sprintf(fmt, [-0.0, "b", 40]) == "-0.00 on b (40%)"
    assert go_sprintf(fmt, [float("nan"), "c"]) == "NaN on c (%!d(MISSING)%)"
    assert go_sprintf(fmt, [2.0, "d", 5, 6]) == "2.00 on d (5%)%!(EXTRA int=6)"
