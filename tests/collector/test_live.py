"""The overview figures computed from a server's last two snapshots."""

from __future__ import annotations

import pytest

from vpsmon.collector.head import Head, ServerState, Snapshot
from vpsmon.collector.live import cpu_busy_ratio, summarize
from vpsmon.collector.scrape.loop import ScrapeResult
from vpsmon.collector.scrape.parse import Sample
from vpsmon.collector.scrape.target import Labels, Target

GiB = 1024**3


def labels(**kv: str) -> Labels:
    return tuple(sorted(kv.items()))


def cpu(values: dict[tuple[str, str], float]) -> dict[tuple[str, Labels], float]:
    return {("node_cpu_seconds_total", labels(cpu=c, mode=m)): v for (c, m), v in values.items()}


def net(name: str, values: dict[str, float]) -> dict[tuple[str, Labels], float]:
    return {(name, labels(device=d)): v for d, v in values.items()}


def snapshot(
    timestamp: float,
    *,
    cpu_seconds: dict[tuple[str, str], float],
    rx: dict[str, float],
    tx: dict[str, float],
) -> Snapshot:
    values: dict[tuple[str, Labels], float] = {
        **cpu(cpu_seconds),
        **net("node_network_receive_bytes_total", rx),
        **net("node_network_transmit_bytes_total", tx),
        ("node_memory_MemTotal_bytes", ()): 8 * GiB,
        ("node_memory_MemAvailable_bytes", ()): 6 * GiB,
        ("node_memory_SwapTotal_bytes", ()): 2 * GiB,
        ("node_memory_SwapFree_bytes", ()): 1.5 * GiB,
        (
            "node_filesystem_size_bytes",
            labels(device="/dev/vda1", fstype="ext4", mountpoint="/"),
        ): 100 * GiB,
        (
            "node_filesystem_avail_bytes",
            labels(device="/dev/vda1", fstype="ext4", mountpoint="/"),
        ): 40 * GiB,
        (
            "node_filesystem_size_bytes",
            labels(device="/dev/vdb", fstype="xfs", mountpoint="/data"),
        ): 500 * GiB,
        (
            "node_filesystem_avail_bytes",
            labels(device="/dev/vdb", fstype="xfs", mountpoint="/data"),
        ): 1 * GiB,
        ("node_load1", ()): 0.5,
        ("node_load5", ()): 0.25,
        ("node_load15", ()): 0.125,
        ("node_boot_time_seconds", ()): timestamp - 3 * 86400,
        ("node_os_info", labels(id="debian", pretty_name="Debian GNU/Linux 12 (bookworm)")): 1,
        ("node_uname_info", labels(nodename="web-1", release="6.1.0-18-amd64", sysname="Linux")): 1,
    }
    return Snapshot(timestamp, values)


PREV = snapshot(
    1000.0,
    cpu_seconds={
        ("0", "idle"): 100.0,
        ("0", "iowait"): 10.0,
        ("0", "user"): 50.0,
        ("0", "system"): 20.0,
        ("1", "idle"): 200.0,
        ("1", "user"): 5.0,
    },
    rx={"eth0": 1_000_000.0, "eth1": 0.0, "lo": 0.0},
    tx={"eth0": 500_000.0, "eth1": 0.0, "lo": 0.0},
)
# 10 s later: 20 s of CPU time passed over two CPUs.
CUR = snapshot(
    1010.0,
    cpu_seconds={
        ("0", "idle"): 104.0,
        ("0", "iowait"): 1 + 10.0,
        ("0", "user"): 53.0,
        ("0", "system"): 22.0,
        ("1", "idle"): 209.0,
        ("1", "user"): 6.0,
    },
    rx={"eth0": 1_100_000.0, "eth1": 50_000.0, "lo": 9_999_999.0},
    tx={"eth0": 520_000.0, "eth1": 10_000.0, "lo": 9_999_999.0},
)


def state(current: Snapshot | None, previous: Snapshot | None = None) -> ServerState:
    return ServerState(
        server_id=7,
        up=current is not None,
        last_scrape=1010.0,
        last_seen=current.timestamp if current else None,
        current=current,
        previous=previous,
    )


def test_cpu_busy_ratio_counts_idle_and_iowait_as_idle() -> None:
    # busy: cpu0 user 3 + system 2, cpu1 user 1 = 6 s of 20 s
    assert cpu_busy_ratio(PREV, CUR) == pytest.approx(6 / 20)
    assert summarize(state(CUR, PREV))["cpu"] == pytest.approx(0.3)


def test_memory_swap_disk_load_and_facts_come_from_the_latest_snapshot() -> None:
    out = summarize(state(CUR, PREV))
    assert out["id"] == 7
    assert out["online"] is True
    assert out["memory_total"] == 8 * GiB
    assert out["memory_used"] == 2 * GiB
    assert out["swap_total"] == 2 * GiB
    assert out["swap_used"] == 0.5 * GiB
    # only the root filesystem, not /data
    assert out["disk_total"] == 100 * GiB
    assert out["disk_used"] == 60 * GiB
    assert (out["load1"], out["load5"], out["load15"]) == (0.5, 0.25, 0.125)
    assert out["cores"] == 2
    assert out["uptime"] == pytest.approx(3 * 86400)
    assert out["os"] == "Debian GNU/Linux 12 (bookworm)"
    assert out["kernel"] == "6.1.0-18-amd64"
    assert out["hostname"] == "web-1"


def test_network_rates_are_per_second_and_exclude_loopback() -> None:
    out = summarize(state(CUR, PREV))
    assert out["net_rx"] == pytest.approx((100_000 + 50_000) / 10)
    assert out["net_tx"] == pytest.approx((20_000 + 10_000) / 10)


def test_a_counter_reset_does_not_produce_a_negative_rate() -> None:
    reset = snapshot(
        1010.0,
        cpu_seconds={
            ("0", "idle"): 1.0,
            ("0", "iowait"): 0.0,
            ("0", "user"): 0.5,
            ("0", "system"): 0.2,
            ("1", "idle"): 1.0,
            ("1", "user"): 0.1,
        },
        rx={"eth0": 10.0, "eth1": 60_000.0, "lo": 0.0},
        tx={"eth0": 10.0, "eth1": 0.0, "lo": 0.0},
    )
    out = summarize(state(reset, PREV))
    # eth0 restarted from zero and is skipped; eth1 still counts
    assert out["net_rx"] == pytest.approx(60_000 / 10)
    assert out["net_tx"] == pytest.approx(0.0)
    # every CPU counter went backwards (reboot): no figure rather than a wrong one
    assert out["cpu"] is None


def test_a_reset_of_every_interface_gives_no_rate_rather_than_a_negative_one() -> None:
    reset = snapshot(1010.0, cpu_seconds={}, rx={"eth0": 5.0}, tx={"eth0": 5.0})
    out = summarize(state(reset, PREV))
    assert out["net_rx"] is None
    assert out["net_tx"] is None


def test_a_first_snapshot_alone_gives_no_cpu_or_rates_but_gauges() -> None:
    out = summarize(state(CUR))
    assert out["cpu"] is None
    assert out["net_rx"] is None
    assert out["net_tx"] is None
    assert out["memory_used"] == 2 * GiB
    assert out["load1"] == 0.5


def test_a_server_never_scraped_has_only_its_status() -> None:
    out = summarize(ServerState(server_id=3, up=False, error="connection failed: refused"))
    assert out == {
        "id": 3,
        "online": False,
        "last_seen": None,
        "error": "connection failed: refused",
    }


def test_snapshots_with_the_same_timestamp_give_no_rate() -> None:
    same = Snapshot(PREV.timestamp, CUR.values)
    assert summarize(state(same, PREV))["net_rx"] is None


async def test_the_head_keeps_the_last_two_successful_scrapes_and_notifies() -> None:
    head = Head()
    seen: list[tuple[bool, str | None]] = []
    head.subscribe(lambda s: seen.append((s.up, s.error)))
    t = Target(7, "web-1", "http://10.0.0.5:9190/metrics", 15.0, 10.0)
    await head.append(ScrapeResult(t, 100.0, 0.01, [Sample("node_load1", (), 1.0)]))
    await head.append(ScrapeResult(t, 115.0, 0.01, [Sample("node_load1", (), 2.0)]))
    await head.append(ScrapeResult(t, 130.0, 0.01, [], "timed out after 10s"))
    st = head.state(7)
    assert st is not None
    assert st.up is False
    assert st.error == "timed out after 10s"
    assert st.last_scrape == 130.0
    assert st.last_seen == 115.0
    # a failed scrape keeps the last good figures
    assert st.current is not None and st.current.get("node_load1") == 2.0
    assert st.previous is not None and st.previous.get("node_load1") == 1.0
    assert seen == [(True, None), (True, None), (False, "timed out after 10s")]
    head.forget(7)
    assert head.state(7) is None
