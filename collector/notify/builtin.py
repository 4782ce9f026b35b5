"""Built-in alerts that need no rule file: ServerDown, TrafficQuota and ServerExpiring.

They are evaluated like a rule group (`evaluate(now)`, time passed in) and fed to the same
notify function as rule alerts, in the same shape: firing alerts are re-sent on every
evaluation with `endsAt` a few intervals ahead, and a cleared one is sent as resolved for 15
minutes, as Prometheus does. So routing, grouping, silences and inhibition treat them like
any other alert; "server online" is ServerDown's resolved notification.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import urllib.parse
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from datetime import UTC, date, datetime
from typing import Any

from vpsmon.collector.config import NotifyConfig
from vpsmon.collector.head import ServerState
from vpsmon.collector.notify.alerts import fingerprint, format_time
from vpsmon.collector.notify.api import NotifyFunction
from vpsmon.collector.servers import Server
from vpsmon.collector.traffic import Usage

log = logging.getLogger("vpsmon.notify.builtin")

RESOLVED_RETENTION = 15 * 60.0


def instance_of(url: str) -> str:
    """host:port as the scrape loop sets `instance` (so inhibition can match rule alerts)."""
    parts = urllib.parse.urlsplit(url)
    port = parts.port or (443 if parts.scheme == "https" else 80)
    host = parts.hostname or ""
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


@dataclass
class _Active:
    alert: dict[str, Any]
    starts_at: float
    resolved_at: float | None = None


class BuiltinAlerts:
    def __init__(
        self,
        config: NotifyConfig,
        *,
        job: str = "vpsmon",
        interval: float = 15.0,
        external_url: str = "",
    ) -> None:
        self.config = config
        self.job = job
        self.interval = interval
        self.external_url = external_url.rstrip("/")
        self._active: dict[str, _Active] = {}
        self._down_since: dict[int, float] = {}

    def _labels(
        self, server: Server, alertname: str, severity: str, **extra: str
    ) -> dict[str, str]:
        return {
            "alertname": alertname,
            "severity": severity,
            "instance": instance_of(server.url),
            "job": self.job,
            "server": server.name,
            "server_id": str(server.id),
            **extra,
        }

    def _offline(
        self, server: Server, state: ServerState | None, now: float
    ) -> Iterable[tuple[dict[str, str], dict[str, str]]]:
        if state is None or state.up or state.last_scrape is None:
            self._down_since.pop(server.id, None)
            return
        since = self._down_since.setdefault(server.id, state.last_scrape)
        last_seen = state.last_seen or server.last_seen
        down_for_since = max(last_seen, since) if last_seen else since
        if now - down_for_since < self.config.offline_after and (
            last_seen is None or now - last_seen < self.config.offline_after
        ):
            return
        seen = format_time(last_seen) if last_seen else "never"
        yield (
            self._labels(server, "ServerDown", "critical"),
            {
                "summary": f"Server {server.name} is offline",
                "description": f"Scrapes fail since {format_time(since)} (last seen: {seen}): "
                f"{state.error or 'no answer'}",
            },
        )

    def _traffic(
        self, server: Server, usage: Usage | None
    ) -> Iterable[tuple[dict[str, str], dict[str, str]]]:
        quota = server.traffic_quota_bytes
        if not quota or usage is None:
            return
        percent = usage.used / quota * 100
        for threshold in self.config.traffic_thresholds:
            if percent >= threshold:
                label = f"{threshold:g}"
                yield (
                    self._labels(
                        server,
                        "TrafficQuota",
                        "critical" if threshold >= 100 else "warning",
                        threshold=label,
                    ),
                    {
                        "summary": f"Server {server.name} used {percent:.1f}% of its monthly "
                        f"traffic (threshold {label}%)",
                        "description": f"{usage.used / 1e9:.2f} GB of {quota / 1e9:.2f} GB "
                        f"({usage.mode}) since {usage.period_start.isoformat()}; resets "
                        f"{usage.period_end.isoformat()}",
                    },
                )

    def _expiry(
        self, server: Server, today: date
    ) -> Iterable[tuple[dict[str, str], dict[str, str]]]:
        if server.expires_on is None:
            return
        left = (server.expires_on - today).days
        for days in self.config.expiry_days:
            if left <= days:
                yield (
                    self._labels(
                        server,
                        "ServerExpiring",
                        "critical" if left <= 1 else "warning",
                        days=f"{days:g}",
                    ),
                    {
                        "summary": f"Server {server.name} expires on "
                        f"{server.expires_on.isoformat()} ({left} days left)",
                        "description": f"Renew it with {server.provider or 'the provider'} "
                        "before it is switched off.",
                    },
                )

    def evaluate(
        self,
        servers: Iterable[Server],
        state: Callable[[int], ServerState | None],
        usage: Callable[[int, float], Usage | None] | None,
        now: float,
    ) -> list[dict[str, Any]]:
        """The postable alerts to send now: every firing one, and recently resolved ones."""
        today = datetime.fromtimestamp(now, UTC).date()
        found: dict[str, tuple[dict[str, str], dict[str, str]]] = {}
        for server in servers:
            items = list(self._offline(server, state(server.id), now))
            items += self._traffic(server, usage(server.id, now) if usage else None)
            items += self._expiry(server, today)
            for labels, notes in items:
                found[fingerprint(labels)] = (labels, notes)
        ends = now + 4 * self.interval  # as Prometheus: survives a few missed evaluations
        for fp, (labels, notes) in found.items():
            active = self._active.get(fp)
            if active is None or active.resolved_at is not None:
                active = self._active[fp] = _Active({}, now)
            active.alert = {
                "labels": labels,
                "annotations": notes,
                "startsAt": format_time(active.starts_at),
                "endsAt": format_time(ends),
                "generatorURL": f"{self.external_url}/notify/alerts" if self.external_url else "",
            }
        out = []
        for fp, active in list(self._active.items()):
            if fp not in found:
                if active.resolved_at is None:
                    active.resolved_at = now
                    active.alert["endsAt"] = format_time(now)
                if now - active.resolved_at > RESOLVED_RETENTION:
                    del self._active[fp]
                    continue
            out.append(active.alert)
        return out

    async def run(
        self,
        notify: NotifyFunction,
        servers: Callable[[], Awaitable[list[Server]]],
        state: Callable[[int], ServerState | None],
        usage: Callable[[], Callable[[int, float], Usage | None] | None],
        clock: Callable[[], float],
        stop: asyncio.Event,
    ) -> None:
        while not stop.is_set():
            try:
                alerts = self.evaluate(await servers(), state, usage(), clock())
                if alerts:
                    await notify(alerts)
            except Exception as err:  # database away: try again next interval
                log.warning("built-in alerts failed error=%s", err)
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(stop.wait(), self.interval)
