"""Turn a server's last two snapshots into the figures the overview shows (CPU %, rates…)."""

from __future__ import annotations

from typing import Any

from vpsmon.collector.head import ServerState, Snapshot

# Time not spent working: node_exporter's idle and iowait modes.
_IDLE_MODES = {"idle", "iowait"}


def cpu_busy_ratio(prev: Snapshot, cur: Snapshot) -> float | None:
    total = idle = 0.0
    prev_values = prev.values
    for (name, labels), value in cur.values.items():
        if name != "node_cpu_seconds_total":
            continue
        before = prev_values.get((name, labels))
        if before is None or value < before:  # new CPU or a counter reset
            continue
        delta = value - before
        total += delta
        if dict(labels).get("mode") in _IDLE_MODES:
            idle += delta
    if total <= 0:
        return None
    return max(0.0, min(1.0, 1.0 - idle / total))


def _rate(prev: Snapshot, cur: Snapshot, name: str, skip_device: str = "lo") -> float | None:
    elapsed = cur.timestamp - prev.timestamp
    if elapsed <= 0:
        return None
    total = 0.0
    seen = False
    for labels, value in cur.matching(name):
        if dict(labels).get("device") == skip_device:
            continue
        before = prev.values.get((name, labels))
        if before is None or value < before:
            continue
        total += value - before
        seen = True
    return total / elapsed if seen else None


def _root_disk(cur: Snapshot) -> tuple[float, float] | None:
    size = avail = None
    for labels, value in cur.matching("node_filesystem_size_bytes"):
        if dict(labels).get("mountpoint") == "/":
            size = value
            avail = cur.values.get(("node_filesystem_avail_bytes", labels))
    if not size or avail is None:
        return None
    return size - avail, size


def _info_label(cur: Snapshot, name: str, label: str) -> str | None:
    for labels, _ in cur.matching(name):
        value = dict(labels).get(label)
        if value:
            return value
    return None


def summarize(state: ServerState) -> dict[str, Any]:
    cur, prev = state.current, state.previous
    out: dict[str, Any] = {
        "id": state.server_id,
        "online": state.up,
        "last_seen": state.last_seen,
        "error": state.error,
    }
    if cur is None:
        return out
    mem_total = cur.get("node_memory_MemTotal_bytes")
    mem_avail = cur.get("node_memory_MemAvailable_bytes")
    swap_total = cur.get("node_memory_SwapTotal_bytes")
    swap_free = cur.get("node_memory_SwapFree_bytes")
    boot = cur.get("node_boot_time_seconds")
    disk = _root_disk(cur)
    cores = {dict(lbl).get("cpu") for lbl, _ in cur.matching("node_cpu_seconds_total")}
    out.update(
        {
            "cpu": cpu_busy_ratio(prev, cur) if prev else None,
            "cores": len(cores) or None,
            "memory_used": mem_total - mem_avail if mem_total and mem_avail is not None else None,
            "memory_total": mem_total,
            "swap_used": swap_total - swap_free if swap_total and swap_free is not None else None,
            "swap_total": swap_total,
            "disk_used": disk[0] if disk else None,
            "disk_total": disk[1] if disk else None,
            "load1": cur.get("node_load1"),
            "load5": cur.get("node_load5"),
            "load15": cur.get("node_load15"),
            "net_rx": _rate(prev, cur, "node_network_receive_bytes_total") if prev else None,
            "net_tx": _rate(prev, cur, "node_network_transmit_bytes_total") if prev else None,
            "uptime": cur.timestamp - boot if boot else None,
            "os": _info_label(cur, "node_os_info", "pretty_name"),
            "kernel": _info_label(cur, "node_uname_info", "release"),
            "hostname": _info_label(cur, "node_uname_info", "nodename"),
            "arch": _info_label(cur, "node_uname_info", "machine"),
            "cpu_model": _info_label(cur, "vpsmon_host_info", "cpu_model"),
            "virtualization": _info_label(cur, "vpsmon_host_info", "virtualization"),
            "boot_time": boot,
        }
    )
    return out
