"""Built-in alerts: a server that stops answering fires ServerDown after offline_after and
resolves when it answers again; traffic quota thresholds and expiry reminders fire as set."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta

from tests.notify.conftest import T0
from vpsmon.collector.config import NotifyConfig
from vpsmon.collector.head import ServerState
from vpsmon.collector.notify.alerts import parse_time
from vpsmon.collector.notify.builtin import BuiltinAlerts
from vpsmon.collector.servers import Server
from vpsmon.collector.traffic import Usage

WEB = Server(1, "web-1", "http://10.0.0.5:9190/metrics")


def names(alerts: list[dict]) -> list[tuple[str, str]]:
    return sorted(
        (
            a["labels"]["alertname"],
            "resolved" if parse_time(a["endsAt"], "e") <= now else "firing",  # type: ignore[operator]
        )
        for a in alerts
    )


now = T0


def test_server_down_fires_after_offline_after_and_resolves_when_back() -> None:
    global now
    builtin = BuiltinAlerts(NotifyConfig(offline_after=60), interval=15)
    state = ServerState(1, up=True, last_scrape=T0, last_seen=T0)
    now = T0
    assert builtin.evaluate([WEB], lambda sid: state, None, now) == []
    state = ServerState(1, up=False, last_scrape=T0 + 15, last_seen=T0, error="connection refused")
    now = T0 + 45
    assert builtin.evaluate([WEB], lambda sid: state, None, now) == []
    now = T0 + 61
    fired = builtin.evaluate([WEB], lambda sid: state, None, now)
    assert names(fired) == [("ServerDown", "firing")]
    labels = fired[0]["labels"]
    assert labels["instance"] == "10.0.0.5:9190" and labels["server"] == "web-1"
    assert labels["severity"] == "critical"
    assert "connection refused" in fired[0]["annotations"]["description"]
    start = fired[0]["startsAt"]
    now = T0 + 76
    again = builtin.evaluate([WEB], lambda sid: state, None, now)
    assert again[0]["startsAt"] == start, "re-sent with the same start while it fires"
    state = ServerState(1, up=True, last_scrape=T0 + 90, last_seen=T0 + 90)
    now = T0 + 91
    assert names(builtin.evaluate([WEB], lambda sid: state, None, now)) == [
        ("ServerDown", "resolved")
    ]
    now = T0 + 91 + 16 * 60
    assert builtin.evaluate([WEB], lambda sid: state, None, now) == []


def test_traffic_thresholds_and_expiry_reminders_fire_per_threshold() -> None:
    global now
    now = T0
    today = datetime.fromtimestamp(T0, UTC).date()
    server = Server(
        2,
        "db-1",
        "https://db.example:9190/metrics",
        traffic_quota_bytes=1000 * 10**9,
        expires_on=today + timedelta(days=3),
        provider="ExampleHost",
    )
    usage = Usage(date(2027, 1, 1), date(2027, 2, 1), 0, 0, 920 * 10**9, 1000e9, "sum")
    builtin = BuiltinAlerts(NotifyConfig(), interval=15)
    alerts = builtin.evaluate([server], lambda sid: None, lambda sid, t: usage, now)
    got = sorted(
        (a["labels"]["alertname"], a["labels"].get("threshold") or a["labels"]["days"])
        for a in alerts
    )
    assert got == [
        ("ServerExpiring", "3"),
        ("ServerExpiring", "7"),
        ("TrafficQuota", "80"),
        ("TrafficQuota", "90"),
    ]
    quota = next(a for a in alerts if a["labels"].get("threshold") == "90")
    assert "92.0%" in quota["annotations"]["summary"]
    assert quota["labels"]["instance"] == "db.example:9190"
