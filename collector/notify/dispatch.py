"""The dispatcher: alerts in, aggregation groups, and notifications into the outbox.

Follows Alertmanager's dispatcher and notification pipeline
(https://github.com/prometheus/alertmanager/blob/main/dispatch/dispatch.go, notify/notify.go):

- each alert goes to the groups of the routes it matches (plus matching subscriptions),
  grouped by the route's `group_by` labels;
- a new group waits `group_wait` before its first notification (at once if its alert started
  longer ago than that), then is looked at every `group_interval`;
- at each flush, silenced and inhibited alerts are left out, and a channel is notified only if
  the firing set grew or changed, something resolved (with `send_resolved`), or
  `repeat_interval` has passed since it was last told (Alertmanager's DedupStage);
- what each channel was told is the notification log; it is written in the same transaction
  as the outbox row, so after a restart nothing is repeated and nothing is lost.

Time is passed in (`tick(now)`), and `submit` reads the injected clock, so tests use a fake one.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import asyncpg

from vpsmon.collector.access import visible_server_ids
from vpsmon.collector.accounts import User
from vpsmon.collector.notify import store
from vpsmon.collector.notify.alerts import Alert, AlertError, parse_alert
from vpsmon.collector.notify.api import PostableAlert
from vpsmon.collector.notify.builtin import instance_of
from vpsmon.collector.notify.routing import (
    ALL_CHANNELS,
    Route,
    Routing,
    RoutingError,
    default_routing,
    parse_routing,
)
from vpsmon.collector.notify.silences import Silence
from vpsmon.collector.notify.store import Channel, ts

log = logging.getLogger("vpsmon.notify")

# Channels that forward raw alerts to another alerting system rather than messages to people.
FORWARD_KINDS = frozenset({"alertmanager"})
# As Prometheus: resolved alerts are re-sent to an Alertmanager for 15 minutes, and active ones
# at least every minute so it never times them out.
FORWARD_RESOLVED_RETENTION = 15 * 60.0
FORWARD_RESEND = 60.0
REFRESH_SECONDS = 15.0
MAX_ALERTS = 100_000


@dataclass
class Group:
    key: str
    route: Route
    labels: dict[str, str]
    created_at: float
    next_flush: float
    alerts: dict[str, Alert] = field(default_factory=dict)
    flushed: bool = False


@dataclass
class Counters:
    received: int = 0
    invalid: int = 0
    dropped: int = 0
    notifications: int = 0


def needs_update(
    entry: Mapping[str, Any] | None,
    firing: set[str],
    resolved: set[str],
    send_resolved: bool,
    repeat_interval: float,
    now: float,
) -> bool:
    """Alertmanager's DedupStage.needsUpdate, over the notification log entry."""
    if entry is None:
        return bool(firing)
    if not firing <= set(entry["firing"]):
        return True
    if not firing:
        # All resolved: tell the channel once (even without send_resolved, so the log is
        # cleared), unless it never heard of them.
        return bool(entry["firing"])
    if send_resolved and not resolved <= set(entry["resolved"]):
        return True
    return bool(entry["notified_at"] + repeat_interval <= now)


def common(maps: Sequence[Mapping[str, str]]) -> dict[str, str]:
    if not maps:
        return {}
    first = dict(maps[0])
    return {k: v for k, v in first.items() if all(m.get(k) == v for m in maps[1:])}


class Dispatcher:
    """Implements the `AlertSink` contract (collector/notify/api.py)."""

    def __init__(
        self,
        pool: asyncpg.Pool,
        *,
        clock: Callable[[], float] = time.time,
        resolve_timeout: float = 300.0,
        external_url: str = "",
    ) -> None:
        self.pool = pool
        self.clock = clock
        self.resolve_timeout = resolve_timeout
        self.external_url = external_url
        self.alerts: dict[str, Alert] = {}
        self.groups: dict[str, Group] = {}
        self.routing: Routing = default_routing()
        self.channels: list[Channel] = []
        self.silences: list[Silence] = []
        self.subscription_routes: list[Route] = []
        # Tenant isolation: a subscription only gets alerts of servers its user may see.
        self.subscription_visible: dict[str, frozenset[int] | None] = {}
        self.instance_servers: dict[str, int] = {}
        self.counters = Counters()
        self._forwarded: dict[int, tuple[float, frozenset[tuple[str, bool]]]] = {}
        self._lock = asyncio.Lock()
        self.wakeup = asyncio.Event()  # set when new outbox rows exist

    # -- configuration --------------------------------------------------------------------

    async def refresh(self) -> None:
        """Reload channels, routing, silences and subscriptions from the database."""
        self.channels = await store.list_channels(self.pool)
        try:
            self.routing = parse_routing(await store.load_routing(self.pool))
        except RoutingError as err:  # saved documents are validated; keep the last good one
            log.error("stored routing is invalid, keeping the previous one error=%s", err)
        self.silences = await store.list_silences(self.pool, since=self.clock())
        root = self.routing.route
        subscriptions = await store.list_subscriptions(self.pool)
        self.subscription_visible = {
            f"sub{sub.id}": await visible_server_ids(
                self.pool, User(sub.user_id, sub.username, "viewer")
            )
            for sub in subscriptions
        }
        self.instance_servers = {
            instance_of(r["url"]): r["id"]
            for r in await self.pool.fetch("SELECT id, url FROM servers")
        }
        self.subscription_routes = [
            Route(
                receiver=sub.channel_name,
                matchers=sub.matchers,
                group_by=root.group_by,
                group_by_all=root.group_by_all,
                group_wait=root.group_wait,
                group_interval=root.group_interval,
                repeat_interval=root.repeat_interval,
                path=f"sub{sub.id}",
            )
            for sub in subscriptions
        ]

    async def start(self) -> None:
        """Load configuration and the alerts a previous run left, and regroup them."""
        await self.refresh()
        now = self.clock()
        for alert in await store.load_alerts(self.pool):
            self.alerts[alert.fingerprint] = alert
            if not alert.resolved(now) or alert.ends_at > now - self.resolve_timeout:
                self._insert(alert, now)

    # -- input ----------------------------------------------------------------------------

    async def submit(self, alerts: Sequence[PostableAlert]) -> None:
        now = self.clock()
        accepted: list[Alert] = []
        for raw in alerts:
            self.counters.received += 1
            try:
                alert = parse_alert(raw, now, self.resolve_timeout)
            except AlertError as err:
                self.counters.invalid += 1
                name = raw.get("labels", {}).get("alertname") if isinstance(raw, Mapping) else None
                log.warning("invalid alert dropped alertname=%s error=%s", name, err)
                continue
            old = self.alerts.get(alert.fingerprint)
            if old is None and alert.resolved(now):
                continue  # resolved and never seen (or long forgotten): nothing to tell anyone
            if old is None and len(self.alerts) >= MAX_ALERTS:
                self.counters.dropped += 1
                continue
            merged = old.merge(alert, now) if old is not None else alert
            self.alerts[alert.fingerprint] = merged
            accepted.append(merged)
        if not accepted:
            return
        async with self._lock:
            await store.upsert_alerts(self.pool, accepted)
            for alert in accepted:
                self._insert(alert, now)

    def server_of(self, labels: Mapping[str, str]) -> int | None:
        """The server an alert is about: its server_id label, else its instance's server."""
        sid = labels.get("server_id", "")
        if sid.isdigit():
            return int(sid)
        return self.instance_servers.get(labels.get("instance", ""))

    def visible_to(self, visible: frozenset[int] | None, labels: Mapping[str, str]) -> bool:
        """Whether a user with `visible` servers (None: all) may see this alert; an alert about
        no known server is for users who see every server."""
        if visible is None:
            return True
        server = self.server_of(labels)
        return server is not None and server in visible

    def silence_visible_to(self, visible: frozenset[int] | None, silence: Silence) -> bool:
        """Whether a user with `visible` servers (None: all) may see this silence: it is
        fleet-wide, or its instance/server_id matchers accept a server the user may see."""
        if visible is None:
            return True
        instances: dict[int, list[str]] = {}
        for instance, server in self.instance_servers.items():
            instances.setdefault(server, []).append(instance)
        return silence.accepts_any_server(
            identity
            for server in visible
            for identity in [
                {"server_id": str(server)},
                *({"instance": i} for i in instances.get(server, [])),
                *({"instance": i, "server_id": str(server)} for i in instances.get(server, [])),
            ]
        )

    def silence_confined_to(self, visible: frozenset[int] | None, silence: Silence) -> bool:
        """Whether a user with `visible` servers (None: all) may create this silence: it must
        pin itself to one of their servers with an equality matcher (`server_id="N"` or
        `instance="HOST:PORT"` of a granted server), so it can mute nobody else's alerts."""
        if visible is None:
            return True
        for m in silence.matchers:
            if m.op != "=":
                continue
            if m.name == "server_id" and m.value.isdigit() and int(m.value) in visible:
                return True
            if m.name == "instance" and self.instance_servers.get(m.value) in visible:
                return True
        return False

    def routes_for(self, labels: Mapping[str, str]) -> list[Route]:
        routes = self.routing.route.match(labels)
        routes += [
            r
            for r in self.subscription_routes
            if r.match(labels) and self.visible_to(self.subscription_visible.get(r.path), labels)
        ]
        return routes

    def _insert(self, alert: Alert, now: float) -> None:
        for route in self.routes_for(alert.labels):
            labels = route.group_labels(alert.labels)
            key = route.key() + ":" + json.dumps(labels, sort_keys=True, separators=(",", ":"))
            group = self.groups.get(key)
            if group is None:
                group = Group(key, route, labels, now, now + route.group_wait)
                self.groups[key] = group
            group.alerts[alert.fingerprint] = alert
            # Alertmanager: an alert that started long ago needs no group_wait.
            if not group.flushed and alert.starts_at + route.group_wait <= now:
                group.next_flush = min(group.next_flush, now)

    # -- muting ---------------------------------------------------------------------------

    def silenced_by(self, labels: Mapping[str, str], now: float) -> list[Silence]:
        return [s for s in self.silences if s.mutes(labels, now)]

    def inhibited(self, labels: Mapping[str, str], firing: Sequence[Mapping[str, str]]) -> bool:
        return any(rule.mutes(labels, firing) for rule in self.routing.inhibit_rules)

    def muted(self, alert: Alert, now: float, firing: Sequence[Mapping[str, str]]) -> bool:
        return bool(self.silenced_by(alert.labels, now)) or self.inhibited(alert.labels, firing)

    def channels_for(self, receiver: str) -> list[Channel]:
        if receiver == ALL_CHANNELS:
            return [c for c in self.channels if c.enabled and c.catch_all]
        return [c for c in self.channels if c.enabled and c.name == receiver]

    # -- output ---------------------------------------------------------------------------

    async def tick(self, now: float) -> int:
        """Flush the groups that are due; forward to Alertmanager channels. Returns rows queued."""
        queued = 0
        async with self._lock:
            self.silences = [s for s in self.silences if s.ends_at > now]
            firing = [a.labels for a in self.alerts.values() if not a.resolved(now)]
            for group in sorted(self.groups.values(), key=lambda g: g.next_flush):
                if group.next_flush <= now:
                    queued += await self._flush(group, now, firing)
            queued += await self._forward(now)
            await self._collect_garbage(now)
        if queued:
            self.wakeup.set()
        return queued

    def _payload(
        self, group: Group, channel: Channel, alerts: Sequence[Alert], now: float
    ) -> dict[str, Any]:
        """Alertmanager's webhook payload, version 4."""
        status = "firing" if any(not a.resolved(now) for a in alerts) else "resolved"
        return {
            "version": "4",
            "groupKey": group.key,
            "truncatedAlerts": 0,
            "status": status,
            "receiver": channel.name,
            "groupLabels": dict(group.labels),
            "commonLabels": common([a.labels for a in alerts]),
            "commonAnnotations": common([a.annotations for a in alerts]),
            "externalURL": self.external_url,
            "alerts": [a.to_json(now) for a in alerts],
        }

    async def _flush(self, group: Group, now: float, firing_labels: list[Mapping[str, str]]) -> int:
        current = [self.alerts.get(fp, a) for fp, a in group.alerts.items()]
        shown = [a for a in current if not self.muted(a, now, firing_labels)]
        shown.sort(key=lambda a: (a.resolved(now), a.starts_at, a.fingerprint))
        firing = {a.fingerprint for a in shown if not a.resolved(now)}
        resolved = {a.fingerprint for a in shown if a.resolved(now)}
        channels = [
            c for c in self.channels_for(group.route.receiver) if c.kind not in FORWARD_KINDS
        ]
        queued = 0
        if channels:
            async with self.pool.acquire() as conn, conn.transaction():
                entries = {
                    r["channel_id"]: {
                        "firing": r["firing"],
                        "resolved": r["resolved"],
                        "notified_at": r["notified_at"].timestamp(),
                    }
                    for r in await conn.fetch(
                        "SELECT * FROM notify_log WHERE group_key = $1 FOR UPDATE", group.key
                    )
                }
                for channel in channels:
                    entry = entries.get(channel.id)
                    if not needs_update(
                        entry,
                        firing,
                        resolved,
                        channel.send_resolved,
                        group.route.repeat_interval,
                        now,
                    ):
                        continue
                    send = [a for a in shown if channel.send_resolved or not a.resolved(now)]
                    if send:
                        await conn.execute(
                            "INSERT INTO notify_outbox (channel_id, group_key, payload,"
                            " created_at, next_attempt_at) VALUES ($1, $2, $3::jsonb, $4, $4)",
                            channel.id,
                            group.key,
                            json.dumps(self._payload(group, channel, send, now)),
                            ts(now),
                        )
                        queued += 1
                    await conn.execute(
                        "INSERT INTO notify_log (group_key, channel_id, firing, resolved,"
                        " notified_at) VALUES ($1, $2, $3, $4, $5) ON CONFLICT (group_key,"
                        " channel_id) DO UPDATE SET firing = $3, resolved = $4, notified_at = $5",
                        group.key,
                        channel.id,
                        sorted(firing),
                        sorted(resolved),
                        ts(now),
                    )
        self.counters.notifications += queued
        group.flushed = True
        group.next_flush = now + group.route.group_interval
        # Resolved alerts have been dealt with: drop them unless a newer copy came meanwhile.
        for alert in current:
            if alert.resolved(now) and group.alerts.get(alert.fingerprint) is alert:
                del group.alerts[alert.fingerprint]
        if not group.alerts:
            del self.groups[group.key]
        return queued

    async def _forward(self, now: float) -> int:
        """Alertmanager channels get every routed alert, re-sent as Prometheus would."""
        targets = [c for c in self.channels if c.enabled and c.kind in FORWARD_KINDS]
        queued = 0
        for channel in targets:
            chosen = [
                a
                for a in self.alerts.values()
                if (not a.resolved(now) or a.ends_at > now - FORWARD_RESOLVED_RETENTION)
                and any(channel in self.channels_for(r.receiver) for r in self.routes_for(a.labels))
            ]
            state = frozenset((a.fingerprint, a.resolved(now)) for a in chosen)
            last_at, last_state = self._forwarded.get(channel.id, (0.0, frozenset()))
            if not chosen or (state == last_state and now < last_at + FORWARD_RESEND):
                continue
            await self.pool.execute(
                "INSERT INTO notify_outbox (channel_id, group_key, payload, created_at,"
                " next_attempt_at) VALUES ($1, 'forward', $2::jsonb, $3, $3)",
                channel.id,
                json.dumps({"forward": [a.to_postable() for a in chosen]}),
                ts(now),
            )
            self._forwarded[channel.id] = (now, state)
            queued += 1
        return queued

    async def _collect_garbage(self, now: float) -> None:
        grouped = {fp for g in self.groups.values() for fp in g.alerts}
        stale = [
            a
            for fp, a in self.alerts.items()
            if fp not in grouped
            and a.resolved(now)
            and a.ends_at <= now - FORWARD_RESOLVED_RETENTION
        ]
        for alert in stale:
            del self.alerts[alert.fingerprint]
        if stale:
            await store.delete_alerts(self.pool, stale)

    async def run(self, stop: asyncio.Event, interval: float = 1.0) -> None:
        """Tick every `interval` seconds; reload the configuration every REFRESH_SECONDS."""
        last_refresh = self.clock()
        while not stop.is_set():
            now = self.clock()
            try:
                if now - last_refresh >= REFRESH_SECONDS:
                    await self.refresh()
                    last_refresh = now
                await self.tick(now)
            except Exception as err:  # database away: keep the groups, try again next tick
                log.warning("notify dispatcher tick failed error=%s", err)
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(stop.wait(), interval)

    # -- views for the UI -------------------------------------------------------------------

    def alert_states(self, now: float) -> list[dict[str, Any]]:
        firing = [a.labels for a in self.alerts.values() if not a.resolved(now)]
        out = []
        for alert in sorted(self.alerts.values(), key=lambda a: -a.starts_at):
            silenced = self.silenced_by(alert.labels, now)
            item = alert.to_json(now)
            item["silencedBy"] = [s.id for s in silenced]
            item["inhibited"] = self.inhibited(alert.labels, firing)
            item["receivers"] = sorted(
                {
                    c.name
                    for r in self.routes_for(alert.labels)
                    for c in self.channels_for(r.receiver)
                }
            )
            out.append(item)
        return out
