"""Stored history for tests: series and samples written straight into the tables."""

from __future__ import annotations

import json
import math
from datetime import UTC, datetime

import asyncpg

from vpsmon.collector.storage.writer import series_hash


async def add_series(
    pool: asyncpg.Pool, server_id: int, metric: str, labels: dict[str, str]
) -> int:
    full = {"instance": f"server-{server_id}", "job": "vpsmon", **labels}
    key = series_hash(metric, tuple(sorted(full.items())))
    series_id: int = await pool.fetchval(
        "INSERT INTO series (server_id, metric, labels, labels_hash) VALUES ($1, $2, $3::jsonb, $4)"
        " RETURNING id",
        server_id,
        metric,
        json.dumps(full),
        key,
    )
    return series_id


async def add_day_of_history(
    pool: asyncpg.Pool, server_id: int, end: float, interval: float = 60.0, hours: float = 24.0
) -> None:
    """A day of a busy little server: CPU 25% user, 4 GiB memory half used, a sine of load,
    eth0 receiving 1 MB/s with a counter reset (a reboot) half way through."""
    n = int(hours * 3600 / interval)
    times = [end - (n - 1 - i) * interval for i in range(n)]
    cores = ("0", "1")

    def counter(rate: float, reset_at: int | None = None) -> list[float]:
        out, value = [], 1e6
        for i in range(n):
            value = 0.0 if reset_at is not None and i == reset_at else value + rate * interval
            out.append(value)
        return out

    series: list[tuple[str, dict[str, str], list[float]]] = []
    for cpu in cores:
        series.append(("node_cpu_seconds_total", {"cpu": cpu, "mode": "user"}, counter(0.25)))
        series.append(("node_cpu_seconds_total", {"cpu": cpu, "mode": "system"}, counter(0.05)))
        series.append(("node_cpu_seconds_total", {"cpu": cpu, "mode": "idle"}, counter(0.70)))
    series.append(("node_memory_MemTotal_bytes", {}, [4 * 2**30] * n))
    series.append(("node_memory_MemAvailable_bytes", {}, [2 * 2**30] * n))
    series.append(("node_memory_SwapTotal_bytes", {}, [0.0] * n))
    series.append(("node_memory_SwapFree_bytes", {}, [0.0] * n))
    series.append(("node_load1", {}, [1 + math.sin(i / n * 6 * math.pi) for i in range(n)]))
    series.append(("node_load5", {}, [1.0] * n))
    series.append(("node_load15", {}, [0.8] * n))
    series.append(
        ("node_network_receive_bytes_total", {"device": "eth0"}, counter(1e6, reset_at=n // 2))
    )
    series.append(("node_network_transmit_bytes_total", {"device": "eth0"}, counter(2e5)))
    series.append(("node_network_receive_bytes_total", {"device": "lo"}, counter(5e7)))
    fs = {"device": "/dev/vda1", "fstype": "ext4", "mountpoint": "/"}
    series.append(("node_filesystem_size_bytes", fs, [100e9] * n))
    series.append(("node_filesystem_avail_bytes", fs, [60e9] * n))
    series.append(("node_netstat_Tcp_CurrEstab", {}, [42.0] * n))
    series.append(("node_procs_running", {}, [3.0] * n))
    series.append(("node_procs_blocked", {}, [0.0] * n))
    stamps = [datetime.fromtimestamp(t, UTC) for t in times]
    records = []
    for metric, labels, values in series:
        sid = await add_series(pool, server_id, metric, labels)
        records.extend((sid, ts, v) for ts, v in zip(stamps, values, strict=True))
    async with pool.acquire() as conn:
        await conn.copy_records_to_table(
            "samples", records=records, columns=["series_id", "ts", "value"]
        )
