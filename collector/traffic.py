"""Monthly traffic accounting from the interface byte counters (issue #5 item 4).

Each server has an accounting period that starts on its reset day (1-31; a day past the end of
a month means that month's last day) at 00:00 UTC. Traffic is the growth of
``node_network_receive_bytes_total`` / ``node_network_transmit_bytes_total`` summed over the
physical interfaces (loopback and virtual interfaces are skipped: their packets also cross a
physical interface, so counting them would count traffic twice).

Counters are not monotonic in practice: a reboot or a driver reload starts them from zero, and
32-bit counters wrap. The rules, as Prometheus' ``increase()`` treats a counter reset:

- a reading below the previous one is a reset; the new reading is all growth since it;
- a changed ``node_boot_time_seconds`` is a reboot; every reading is growth since the boot,
  even when it already exceeds the reading before the reboot;
- an interface seen for the first time (and the very first scrape of a server) is a baseline,
  never growth: we cannot know how much of its counter belongs to this period.

The per-interface readings are persisted beside the totals (``server_traffic``), so a restarted
collector counts the growth since its last stored reading and loses nothing of the month.
"""

from __future__ import annotations

import asyncio
import calendar
import contextlib
import json
import logging
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from typing import Any, Literal

import asyncpg

from vpsmon.collector.head import ServerState

log = logging.getLogger("vpsmon.collector.traffic")

Mode = Literal["in", "out", "sum", "max"]
MODES: tuple[Mode, ...] = ("in", "out", "sum", "max")

RX = "node_network_receive_bytes_total"
TX = "node_network_transmit_bytes_total"

# Loopback, container/VM bridges and veths, overlay and VPN tunnels (their traffic is also
# counted on the physical interface that carries it). Same spirit as Nezha/Komari's lists.
VIRTUAL_INTERFACE = re.compile(
    r"lo|(docker|veth|br-|virbr|vmbr|vnet|kube|cni|flannel|cali|tun|tap|wg|tailscale|zt|ifb"
    r"|dummy|lxc|lxd|podman|vxlan|gre|sit|ip6tnl|nlmon).*"
)

# Boot times read from /proc/stat move by a second or so between reads; a reboot moves them
# by at least the time the machine was down.
REBOOT_TOLERANCE_SECONDS = 30.0


def is_counted_interface(device: str) -> bool:
    return bool(device) and VIRTUAL_INTERFACE.fullmatch(device) is None


def _clamped(year: int, month: int, day: int) -> date:
    return date(year, month, min(day, calendar.monthrange(year, month)[1]))


def period_start(day: date, reset_day: int) -> date:
    """First day of the accounting period that contains ``day``."""
    this_month = _clamped(day.year, day.month, reset_day)
    if day >= this_month:
        return this_month
    year, month = (day.year - 1, 12) if day.month == 1 else (day.year, day.month - 1)
    return _clamped(year, month, reset_day)


def period_end(start: date, reset_day: int) -> date:
    """First day of the next period (exclusive end)."""
    year, month = (start.year + 1, 1) if start.month == 12 else (start.year, start.month + 1)
    return _clamped(year, month, reset_day)


def utc_day(ts: float) -> date:
    return datetime.fromtimestamp(ts, UTC).date()


@dataclass(frozen=True)
class Readings:
    """One scrape's counters: {device: (rx_bytes, tx_bytes)} and the host's boot time."""

    timestamp: float
    counters: Mapping[str, tuple[float, float]]
    boot_time: float | None = None


@dataclass(frozen=True)
class TrafficState:
    period_start: date
    rx: float = 0.0
    tx: float = 0.0
    counters: Mapping[str, tuple[float, float]] = field(default_factory=dict)
    boot_time: float | None = None
    last_ts: float | None = None

    def used(self, mode: Mode) -> float:
        if mode == "in":
            return self.rx
        if mode == "out":
            return self.tx
        if mode == "max":
            return max(self.rx, self.tx)
        return self.rx + self.tx


def _growth(before: float | None, now: float, rebooted: bool) -> float:
    if rebooted:
        return now
    if before is None:
        return 0.0
    return now if now < before else now - before


def advance(state: TrafficState | None, readings: Readings, reset_day: int) -> TrafficState:
    """The state after one more scrape (a pure step; time comes from the readings)."""
    start = period_start(utc_day(readings.timestamp), reset_day)
    if state is None:
        return TrafficState(
            start, 0.0, 0.0, dict(readings.counters), readings.boot_time, readings.timestamp
        )
    if state.last_ts is not None and readings.timestamp <= state.last_ts:
        return state  # an old or repeated scrape adds nothing
    rebooted = (
        readings.boot_time is not None
        and state.boot_time is not None
        and abs(readings.boot_time - state.boot_time) > REBOOT_TOLERANCE_SECONDS
    )
    rx = tx = 0.0
    for device, (now_rx, now_tx) in readings.counters.items():
        before = state.counters.get(device)
        rx += _growth(before[0] if before else None, now_rx, rebooted)
        tx += _growth(before[1] if before else None, now_tx, rebooted)
    # Growth across a period boundary belongs to the new period (a scrape interval at most).
    base_rx, base_tx = (state.rx, state.tx) if start == state.period_start else (0.0, 0.0)
    return TrafficState(
        start,
        base_rx + rx,
        base_tx + tx,
        dict(readings.counters),
        readings.boot_time if readings.boot_time is not None else state.boot_time,
        readings.timestamp,
    )


def readings_from(state: ServerState) -> Readings | None:
    """The counted interfaces' counters from a server's latest scrape."""
    snap = state.current
    if snap is None:
        return None
    rx: dict[str, float] = {}
    tx: dict[str, float] = {}
    for (name, labels), value in snap.values.items():
        if name != RX and name != TX:
            continue
        device = dict(labels).get("device", "")
        if not is_counted_interface(device):
            continue
        (rx if name == RX else tx)[device] = value
    counters = {d: (rx[d], tx.get(d, 0.0)) for d in rx}
    for d in tx.keys() - rx.keys():
        counters[d] = (0.0, tx[d])
    return Readings(snap.timestamp, counters, snap.get("node_boot_time_seconds"))


@dataclass(frozen=True)
class Plan:
    """A server's accounting settings (servers table)."""

    reset_day: int = 1
    mode: Mode = "sum"
    quota: float | None = None


@dataclass(frozen=True)
class Usage:
    period_start: date
    period_end: date
    rx: float
    tx: float
    used: float
    quota: float | None
    mode: Mode

    def as_json(self) -> dict[str, Any]:
        return {
            "period_start": self.period_start.isoformat(),
            "period_end": self.period_end.isoformat(),
            "rx": self.rx,
            "tx": self.tx,
            "used": self.used,
            "quota": self.quota,
            "mode": self.mode,
        }


class TrafficAccountant:
    """Keeps every server's period totals in memory and in ``server_traffic``.

    ``observe`` is a head listener (called on every scrape); ``run`` loads the stored state,
    then saves what changed every ``flush_interval`` seconds and once more when cancelled.
    """

    def __init__(self, pool: asyncpg.Pool, flush_interval: float = 30.0) -> None:
        self._pool = pool
        self._flush_interval = flush_interval
        self._states: dict[int, TrafficState] = {}
        self._plans: dict[int, Plan] = {}
        self._dirty: set[int] = set()
        # Until the stored state is loaded, a scrape would only be a baseline that hides the
        # growth since the stored readings (and its save would overwrite the month's totals).
        self.loaded = False

    def set_plan(self, server_id: int, plan: Plan) -> None:
        # A new reset day that moves the period start begins a new period at the next scrape
        # (`advance` compares starts); the totals so far stay in their own row.
        self._plans[server_id] = plan

    def forget(self, server_id: int) -> None:
        self._states.pop(server_id, None)
        self._plans.pop(server_id, None)
        self._dirty.discard(server_id)

    def observe(self, server: ServerState) -> None:
        if not self.loaded:
            return
        readings = readings_from(server)
        if readings is None:
            return
        plan = self._plans.get(server.server_id, Plan())
        before = self._states.get(server.server_id)
        after = advance(before, readings, plan.reset_day)
        if after is not before:
            self._states[server.server_id] = after
            self._dirty.add(server.server_id)

    def usage(self, server_id: int, now: float) -> Usage | None:
        plan = self._plans.get(server_id, Plan())
        state = self._states.get(server_id)
        start = period_start(utc_day(now), plan.reset_day)
        if state is None or state.period_start != start:
            state = TrafficState(start)  # nothing counted yet this period
        return Usage(
            start,
            period_end(start, plan.reset_day),
            state.rx,
            state.tx,
            state.used(plan.mode),
            plan.quota,
            plan.mode,
        )

    async def load(self) -> None:
        await self.refresh_plans()
        rows = await self._pool.fetch(
            "SELECT DISTINCT ON (server_id) server_id, period_start, rx_bytes, tx_bytes,"
            " counters, boot_time, extract(epoch FROM last_ts) AS last_ts"
            " FROM server_traffic ORDER BY server_id, period_start DESC"
        )
        for row in rows:
            counters = {
                k: (float(v[0]), float(v[1])) for k, v in json.loads(row["counters"]).items()
            }
            self._states[row["server_id"]] = TrafficState(
                row["period_start"],
                row["rx_bytes"],
                row["tx_bytes"],
                counters,
                row["boot_time"],
                float(row["last_ts"]) if row["last_ts"] is not None else None,
            )
        self.loaded = True

    async def refresh_plans(self) -> None:
        rows = await self._pool.fetch(
            "SELECT id, traffic_reset_day, traffic_mode, traffic_quota_bytes FROM servers"
        )
        seen = set()
        for row in rows:
            seen.add(row["id"])
            self.set_plan(
                row["id"],
                Plan(row["traffic_reset_day"], row["traffic_mode"], row["traffic_quota_bytes"]),
            )
        for gone in set(self._plans) - seen:
            self.forget(gone)

    async def flush(self) -> None:
        dirty, self._dirty = self._dirty, set()
        rows = [(sid, self._states[sid]) for sid in dirty if sid in self._states]
        try:
            await self._save(rows)
        except BaseException:
            self._dirty |= dirty  # try again next time
            raise

    async def _save(self, rows: Iterable[tuple[int, TrafficState]]) -> None:
        records = [
            (
                sid,
                s.period_start,
                s.rx,
                s.tx,
                json.dumps({k: list(v) for k, v in s.counters.items()}),
                s.boot_time,
                datetime.fromtimestamp(s.last_ts, UTC) if s.last_ts is not None else None,
            )
            for sid, s in rows
        ]
        if not records:
            return
        await self._pool.executemany(
            "INSERT INTO server_traffic"
            " (server_id, period_start, rx_bytes, tx_bytes, counters, boot_time, last_ts)"
            " SELECT $1, $2, $3, $4, $5::jsonb, $6, $7 WHERE EXISTS"
            " (SELECT 1 FROM servers WHERE id = $1)"
            " ON CONFLICT (server_id, period_start) DO UPDATE SET rx_bytes = EXCLUDED.rx_bytes,"
            " tx_bytes = EXCLUDED.tx_bytes, counters = EXCLUDED.counters,"
            " boot_time = EXCLUDED.boot_time, last_ts = EXCLUDED.last_ts",
            records,
        )

    async def run(self) -> None:
        """Load (retrying while the database is away), then save every flush_interval."""
        try:
            while True:
                await asyncio.sleep(self._flush_interval)
                try:
                    if not self.loaded:
                        await self.load()
                    await self.refresh_plans()
                    await self.flush()
                except Exception as err:  # database away: keep counting, save later
                    log.warning("cannot save traffic totals error=%s", err)
        finally:
            with contextlib.suppress(Exception):
                await self.flush()
