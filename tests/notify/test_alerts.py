"""Postable alerts are validated and fingerprinted as Alertmanager does; matchers as amtool."""

from __future__ import annotations

import pytest

from vpsmon.collector.notify.alerts import AlertError, fingerprint, format_time, parse_alert
from vpsmon.collector.notify.matchers import Matcher, MatcherError, parse_matchers

NOW = 1_800_000_000.0


def test_fingerprint_is_prometheus_label_set_fingerprint() -> None:
    # Values from Prometheus' model/signature_test.go (TestLabelsToSignature / Fingerprint).
    assert fingerprint({}) == "cbf29ce484222325"
    assert fingerprint({"name": "garland, briggs", "fear": "love is not enough"}) == (
        f"{5799056148416392346:016x}"
    )


def test_alert_without_ends_at_fires_until_resolve_timeout() -> None:
    alert = parse_alert({"labels": {"alertname": "Down"}}, NOW, 300)
    assert alert.starts_at == NOW and alert.ends_at == NOW + 300
    assert alert.status(NOW) == "firing" and alert.status(NOW + 301) == "resolved"
    assert not alert.ends_given


def test_alert_with_ends_at_in_the_past_is_resolved() -> None:
    alert = parse_alert(
        {
            "labels": {"alertname": "Down", "instance": "a:9190"},
            "startsAt": "2027-01-15T07:00:00.123456789Z",
            "endsAt": format_time(NOW - 1),
        },
        NOW,
        300,
    )
    assert alert.resolved(NOW)
    assert format_time(alert.starts_at) == "2027-01-15T07:00:00.123Z"


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        ({"labels": {}}, "alertname is required"),
        ({"labels": {"alertname": "A", "bad-name": "x"}}, "invalid name 'bad-name'"),
        ({"labels": {"alertname": 3}}, "labels.alertname: expected a string"),
        ({"labels": {"alertname": "A"}, "startsAt": "yesterday"}, "startsAt: not an RFC 3339"),
        ({"labels": {"alertname": "A"}, "status": "firing"}, "unknown field 'status'"),
        (
            {
                "labels": {"alertname": "A"},
                "startsAt": "2027-01-02T00:00:00Z",
                "endsAt": "2027-01-01T00:00:00Z",
            },
            "endsAt is before startsAt",
        ),
    ],
)
def test_invalid_alert_is_refused_with_the_field_named(raw: dict, message: str) -> None:
    with pytest.raises(AlertError, match=message):
        parse_alert(raw, NOW, 300)


def test_matchers_parse_the_forms_alertmanager_accepts() -> None:
    got = parse_matchers('{alertname="Down", severity=~"crit.*|warn" ,team!=ops, x!~"a\\"b"}')
    assert got == [
        Matcher("alertname", "=", "Down"),
        Matcher("severity", "=~", "crit.*|warn"),
        Matcher("team", "!=", "ops"),
        Matcher("x", "!~", 'a"b'),
    ]
    labels = {"alertname": "Down", "severity": "critical", "team": "web"}
    assert all(m.matches(labels) for m in got)


def test_regex_matchers_are_anchored_and_absent_labels_are_empty() -> None:
    assert not Matcher("severity", "=~", "crit").matches({"severity": "critical"})
    assert Matcher("team", "=", "").matches({})
    assert Matcher("team", "!~", ".+").matches({})


def test_bad_matcher_is_an_error_that_quotes_it() -> None:
    with pytest.raises(MatcherError, match="cannot parse matcher"):
        parse_matchers('severity=="x" oops')
    with pytest.raises(MatcherError, match="invalid regular expression"):
        parse_matchers('a=~"("')
