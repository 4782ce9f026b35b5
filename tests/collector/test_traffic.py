"""Monthly traffic accounting: periods, counter resets, reboots, restarts of the collector."""

from __future__ import annotations

from datetime import UTC, date, datetime

import asyncpg
import pytest

from vpsmon.collector.head import ServerState, Snapshot
from vpsmon.collector.servers import create_server, validate
from vpsmon.collector.traffic import (
    RX,
    TX,
    Plan,
    Readings,
    TrafficAccountant,
    TrafficState,
    advance,
    is_counted_interface,
    period_end,
    period_start,
    readings_from,
)

GIB = 2**30


def ts(year: int, month: int, day: int, hour: int = 12, minute: int = 0) -> float:
    return datetime(year, month, day, hour, minute, tzinfo=UTC).timestamp()


def r(
    at: float, eth0: tuple[float, float], boot: float | None = 1000.0, **more: tuple[float, float]
) -> Readings:
    return Readings(at, {"eth0": eth0, **more}, boot)


def run(readings: list[Readings], reset_day: int = 1) -> TrafficState:
    state = None
    for reading in readings:
        state = advance(state, reading, reset_day)
    assert state is not None
    return state


def test_period_starts_on_the_reset_day_and_clamps_to_short_months() -> None:
    assert period_start(date(2026, 3, 15), 1) == date(2026, 3, 1)
    assert period_start(date(2026, 3, 14), 15) == date(2026, 2, 15)
    assert period_start(date(2026, 3, 15), 15) == date(2026, 3, 15)
    assert period_start(date(2026, 1, 5), 10) == date(2025, 12, 10)
    # Day 31 in February is the 28th; in March the 31st.
    assert period_start(date(2026, 3, 1), 31) == date(2026, 2, 28)
    assert period_start(date(2026, 2, 28), 31) == date(2026, 2, 28)
    assert period_end(date(2026, 1, 31), 31) == date(2026, 2, 28)
    assert period_end(date(2026, 12, 5), 5) == date(2027, 1, 5)


def test_first_scrape_is_a_baseline_and_growth_is_counted_after_it() -> None:
    state = run([r(ts(2026, 3, 2), (5 * GIB, 1 * GIB)), r(ts(2026, 3, 2, 13), (6 * GIB, 3 * GIB))])
    assert (state.rx, state.tx) == (1 * GIB, 2 * GIB)
    assert state.used("in") == GIB
    assert state.used("out") == 2 * GIB
    assert state.used("sum") == 3 * GIB
    assert state.used("max") == 2 * GIB


def test_a_counter_reset_counts_the_new_reading_as_growth() -> None:
    state = run(
        [
            r(ts(2026, 3, 2, 1), (1000.0, 500.0)),
            r(ts(2026, 3, 2, 2), (1500.0, 700.0)),  # +500 / +200
            r(ts(2026, 3, 2, 3), (300.0, 100.0)),  # driver reload: +300 / +100
            r(ts(2026, 3, 2, 4), (400.0, 160.0)),  # +100 / +60
        ]
    )
    assert (state.rx, state.tx) == (900.0, 360.0)


def test_a_reboot_counts_everything_since_boot_even_above_the_old_reading() -> None:
    state = run(
        [
            r(ts(2026, 3, 2, 1), (1000.0, 1000.0), boot=1000.0),
            r(ts(2026, 3, 2, 2), (1200.0, 1100.0), boot=1001.0),  # jitter is not a reboot
            # Rebooted while we were away and already moved more than before the reboot.
            r(ts(2026, 3, 2, 5), (5000.0, 3000.0), boot=ts(2026, 3, 2, 4)),
        ]
    )
    assert (state.rx, state.tx) == (200.0 + 5000.0, 100.0 + 3000.0)


def test_a_new_period_starts_from_zero_and_keeps_counting() -> None:
    state = run(
        [
            r(ts(2026, 3, 31, 23, 50), (0.0, 0.0)),
            r(ts(2026, 3, 31, 23, 55), (10 * GIB, 0.0)),
            r(ts(2026, 4, 1, 0, 5), (11 * GIB, 0.0)),
            r(ts(2026, 4, 1, 0, 10), (12 * GIB, 0.0)),
        ]
    )
    assert state.period_start == date(2026, 4, 1)
    assert state.rx == 2 * GIB


def test_a_new_interface_is_a_baseline_and_old_or_repeated_scrapes_add_nothing() -> None:
    state = run(
        [
            r(ts(2026, 3, 2, 1), (100.0, 100.0)),
            r(ts(2026, 3, 2, 2), (200.0, 100.0), eth1=(9e9, 9e9)),
            r(ts(2026, 3, 2, 3), (300.0, 100.0), eth1=(9e9 + 50, 9e9)),
            r(ts(2026, 3, 2, 3), (900.0, 900.0), eth1=(9e9 + 50, 9e9)),  # same time again
            r(ts(2026, 3, 2, 2), (900.0, 900.0)),  # older
        ]
    )
    assert (state.rx, state.tx) == (250.0, 0.0)


def test_loopback_and_virtual_interfaces_are_not_counted() -> None:
    for device in ("lo", "docker0", "veth1a2b", "br-0c1d", "virbr0", "tun0", "wg0", "cali123"):
        assert not is_counted_interface(device), device
    for device in ("eth0", "ens3", "enp0s31f6", "venet0", "bond0", "wlan0"):
        assert is_counted_interface(device), device
    snap = Snapshot(
        ts(2026, 3, 2),
        {
            (RX, (("device", "eth0"),)): 10.0,
            (TX, (("device", "eth0"),)): 20.0,
            (RX, (("device", "lo"),)): 1e12,
            (TX, (("device", "docker0"),)): 1e12,
            ("node_boot_time_seconds", ()): 1234.0,
        },
    )
    readings = readings_from(ServerState(1, up=True, current=snap))
    assert readings is not None
    assert dict(readings.counters) == {"eth0": (10.0, 20.0)}
    assert readings.boot_time == 1234.0


def state_of(
    server_id: int, at: float, eth0: tuple[float, float], boot: float = 1000.0
) -> ServerState:
    snap = Snapshot(
        at,
        {
            (RX, (("device", "eth0"),)): eth0[0],
            (TX, (("device", "eth0"),)): eth0[1],
            ("node_boot_time_seconds", ()): boot,
        },
    )
    return ServerState(server_id, up=True, last_seen=at, current=snap)


async def test_totals_survive_a_collector_restart_including_traffic_while_it_was_away(
    pool: asyncpg.Pool,
) -> None:
    server = await create_server(
        pool,
        validate(
            {"name": "a", "address": "10.0.0.1", "traffic_quota_gib": "1000", "traffic_mode": "max"}
        ),
    )
    first = TrafficAccountant(pool)
    await first.load()
    first.observe(state_of(server.id, ts(2026, 3, 2, 1), (1 * GIB, 1 * GIB)))
    first.observe(state_of(server.id, ts(2026, 3, 2, 2), (3 * GIB, 2 * GIB)))
    await first.flush()

    # A new process: it loads the stored readings and counts the growth since them.
    second = TrafficAccountant(pool)
    await second.load()
    second.observe(state_of(server.id, ts(2026, 3, 2, 5), (7 * GIB, 2 * GIB)))
    usage = second.usage(server.id, ts(2026, 3, 2, 6))
    assert usage is not None
    assert (usage.rx, usage.tx) == (6 * GIB, 1 * GIB)
    assert usage.used == 6 * GIB  # max mode
    assert usage.quota == 1000 * GIB
    assert usage.period_start == date(2026, 3, 1)
    assert usage.period_end == date(2026, 4, 1)
    await second.flush()
    stored = await pool.fetchrow("SELECT rx_bytes, tx_bytes FROM server_traffic")
    assert (stored["rx_bytes"], stored["tx_bytes"]) == (6 * GIB, 1 * GIB)

    # Next month the page shows zero until the first scrape of the new period.
    assert second.usage(server.id, ts(2026, 4, 2)).used == 0  # type: ignore[union-attr]


async def test_a_failed_save_is_retried_on_the_next_flush(pool: asyncpg.Pool) -> None:
    server = await create_server(pool, validate({"name": "b", "address": "10.0.0.2"}))
    acct = TrafficAccountant(pool)
    await acct.load()
    acct.observe(state_of(server.id, ts(2026, 3, 2, 1), (0.0, 0.0)))
    await pool.execute("ALTER TABLE server_traffic RENAME TO server_traffic_away")
    with pytest.raises(asyncpg.PostgresError):
        await acct.flush()
    await pool.execute("ALTER TABLE server_traffic_away RENAME TO server_traffic")
    await acct.flush()
    assert await pool.fetchval("SELECT count(*) FROM server_traffic") == 1
    assert Plan().mode == "sum"
