"""The history buffer: retention, the sample bound, rendering, and GET /history."""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping

import aiohttp
import pytest
from prometheus_client.parser import text_string_to_metric_families

from vpsmon.exporter.config import load_config
from vpsmon.exporter.history import History, HistoryQueryError, parse_range, render
from vpsmon.exporter.metrics import MetricFamily, counter, gauge
from vpsmon.exporter.server import Exporter, serve

T0 = 1_700_000_000.0


def families(value: float, *, devices: tuple[str, ...] = ("eth0",)) -> list[MetricFamily]:
    load = gauge("node_load1", "1m load average.")
    load.add(value)
    received = counter(
        "node_network_receive_bytes_total", "Network device statistic receive_bytes.", "device"
    )
    for i, device in enumerate(devices):
        received.add(value * 100 + i, device)
    return [load, received]


def parsed(text: str) -> dict[str, list[tuple[dict[str, str], float, float | None]]]:
    """family name → [(labels, value, timestamp in seconds)] via prometheus_client's parser."""
    result: dict[str, list[tuple[dict[str, str], float, float | None]]] = {}
    for family in text_string_to_metric_families(text):
        rows = result.setdefault(family.name, [])
        for sample in family.samples:
            ts = float(sample.timestamp) if sample.timestamp is not None else None
            rows.append((dict(sample.labels), sample.value, ts))
    return result


def test_each_family_has_one_help_and_type_and_every_sample_its_own_millisecond_timestamp() -> None:
    history = History(retention=3600, max_samples=1000)
    for i in range(3):
        history.record(families(float(i)), now=T0 + 5 * i)
    text = render(history.snapshots(), since=0)
    assert text.count("# HELP node_load1 ") == 1
    assert text.count("# TYPE node_network_receive_bytes_total counter") == 1
    assert f"node_load1 2 {int(T0 * 1000) + 10_000}\n" in text
    rows = parsed(text)
    assert rows["node_load1"] == [({}, 0.0, T0), ({}, 1.0, T0 + 5), ({}, 2.0, T0 + 10)]
    # prometheus_client names counter families without _total.
    assert [r[2] for r in rows["node_network_receive_bytes"]] == [T0, T0 + 5, T0 + 10]


def test_samples_older_than_the_retention_are_dropped() -> None:
    history = History(retention=60, max_samples=1000)
    for i in range(20):  # 0 .. 95 s at 5 s
        history.record(families(float(i)), now=T0 + 5 * i)
    kept = [s.timestamp for s in history.snapshots()]
    assert kept[0] == T0 + 35  # 95 - 60
    assert kept[-1] == T0 + 95
    assert history.dropped_samples == 0  # retention is not a loss


def test_the_sample_bound_drops_the_oldest_collections_and_counts_them() -> None:
    history = History(retention=3600, max_samples=10)  # 2 samples per collection
    for i in range(8):
        history.record(families(float(i)), now=T0 + i)
    assert history.samples == 10
    assert [s.timestamp for s in history.snapshots()] == [T0 + i for i in range(3, 8)]
    assert history.dropped_samples == 6


def test_since_and_until_select_an_inclusive_window() -> None:
    history = History(retention=3600, max_samples=1000)
    for i in range(6):
        history.record(families(float(i)), now=T0 + 10 * i)
    rows = parsed(render(history.snapshots(), since=T0 + 10, until=T0 + 30))
    assert [value for _, value, _ in rows["node_load1"]] == [1.0, 2.0, 3.0]


def test_a_series_that_comes_and_goes_is_grouped_under_its_family_in_time_order() -> None:
    history = History(retention=3600, max_samples=1000)
    history.record(families(1.0, devices=("eth0",)), now=T0)
    history.record(families(2.0, devices=("eth0", "veth1")), now=T0 + 5)
    history.record(families(3.0, devices=("eth0",)), now=T0 + 10)
    text = render(history.snapshots(), since=0)
    assert text.count("# TYPE node_network_receive_bytes_total") == 1
    rows = parsed(text)["node_network_receive_bytes"]
    assert [(labels["device"], ts) for labels, _, ts in rows] == [
        ("eth0", T0),
        ("eth0", T0 + 5),
        ("eth0", T0 + 10),
        ("veth1", T0 + 5),
    ]


def test_collections_with_the_same_series_share_one_layout() -> None:
    history = History(retention=3600, max_samples=1000)
    history.record(families(1.0), now=T0)
    history.record(families(2.0), now=T0 + 5)
    first, second = history.snapshots()
    assert first.layout is second.layout


@pytest.mark.parametrize(
    ("since", "until", "message"),
    [
        (None, None, "since is required"),
        ("yesterday", None, "since must be UNIX seconds"),
        ("nan", None, "since must be UNIX seconds"),
        ("-5", None, "since must be UNIX seconds"),
        ("100", "50", "is before since"),
    ],
)
def test_a_bad_history_range_is_refused_with_a_message(
    since: str | None, until: str | None, message: str
) -> None:
    with pytest.raises(HistoryQueryError, match=message):
        parse_range(since, until)


@pytest.fixture
async def exporter() -> AsyncIterator[Exporter]:
    config = load_config(
        None, env={}, overrides={"collectors.hwmon": False, "listen": "127.0.0.1:0"}
    )
    exporter = await serve(config)
    try:
        yield exporter
    finally:
        await exporter.close()


async def get(exporter: Exporter, path: str, **params: str) -> tuple[int, str, Mapping[str, str]]:
    async with aiohttp.ClientSession() as session:
        url = f"http://127.0.0.1:{exporter.port}{path}"
        async with session.get(url, params=params) as response:
            return response.status, await response.text(), response.headers


async def test_get_history_serves_recorded_collections_as_parseable_exposition(
    exporter: Exporter,
) -> None:
    exporter.history.record(families(7.0), now=T0 + 5)
    status, text, headers = await get(exporter, "/history", since=str(T0))
    assert status == 200
    assert headers["Content-Type"].startswith("text/plain; version=0.0.4")
    rows = parsed(text)
    assert rows["node_load1"][-1] == ({}, 7.0, T0 + 5)
    # The collection create_app made at start-up is there too, with its real timestamp.
    assert "node_memory_MemTotal_bytes" in rows


async def test_get_history_with_a_bad_since_answers_400_with_the_reason(
    exporter: Exporter,
) -> None:
    status, text, _ = await get(exporter, "/history", since="last-tuesday")
    assert status == 400
    assert "since must be UNIX seconds" in text
