"""The notify stage's tables (sql/050_notify.sql): reads and writes, nothing else.

Times are passed in as seconds since the epoch (STYLE.md: time passed in), so tests that
drive the dispatcher with a fake clock see the same times in the database.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import asyncpg

from vpsmon.collector.notify.alerts import Alert
from vpsmon.collector.notify.matchers import Matcher
from vpsmon.collector.notify.routing import DEFAULT_ROUTING_YAML
from vpsmon.collector.notify.silences import Silence


def ts(seconds: float) -> datetime:
    return datetime.fromtimestamp(seconds, UTC)


def secs(moment: datetime | None) -> float | None:
    return moment.timestamp() if moment is not None else None


@dataclass(frozen=True)
class Channel:
    id: int
    name: str
    kind: str
    settings: Mapping[str, Any] = field(default_factory=dict)
    send_resolved: bool = True
    language: str = "en"
    title_template: str | None = None
    body_template: str | None = None
    enabled: bool = True
    catch_all: bool = True
    created_by: str = ""


def _channel(row: asyncpg.Record) -> Channel:
    return Channel(
        row["id"],
        row["name"],
        row["kind"],
        json.loads(row["settings"]),
        row["send_resolved"],
        row["language"],
        row["title_template"],
        row["body_template"],
        row["enabled"],
        row["catch_all"],
        row["created_by"],
    )


async def list_channels(pool: asyncpg.Pool) -> list[Channel]:
    rows = await pool.fetch("SELECT * FROM notify_channels ORDER BY name")
    return [_channel(r) for r in rows]


async def get_channel(pool: asyncpg.Pool, channel_id: int) -> Channel | None:
    row = await pool.fetchrow("SELECT * FROM notify_channels WHERE id = $1", channel_id)
    return _channel(row) if row else None


async def save_channel(pool: asyncpg.Pool, channel: Channel) -> int:
    """Insert (id 0) or update a channel; returns its id. Name clashes raise UniqueViolation."""
    values = (
        channel.name,
        channel.kind,
        json.dumps(dict(channel.settings)),
        channel.send_resolved,
        channel.language,
        channel.title_template,
        channel.body_template,
        channel.enabled,
        channel.catch_all,
    )
    if channel.id:
        await pool.execute(
            "UPDATE notify_channels SET name=$2, kind=$3, settings=$4::jsonb, send_resolved=$5,"
            " language=$6, title_template=$7, body_template=$8, enabled=$9, catch_all=$10,"
            " updated_at=now() WHERE id=$1",
            channel.id,
            *values,
        )
        return channel.id
    new_id: int = await pool.fetchval(
        "INSERT INTO notify_channels (name, kind, settings, send_resolved, language,"
        " title_template, body_template, enabled, catch_all, created_by)"
        " VALUES ($1, $2, $3::jsonb, $4, $5, $6, $7, $8, $9, $10) RETURNING id",
        *values,
        channel.created_by,
    )
    return new_id


async def delete_channel(pool: asyncpg.Pool, channel_id: int) -> bool:
    return await pool.execute("DELETE FROM notify_channels WHERE id=$1", channel_id) != "DELETE 0"


async def load_routing(pool: asyncpg.Pool) -> str:
    text: str | None = await pool.fetchval("SELECT document FROM notify_routing WHERE id = 1")
    return text if text is not None else DEFAULT_ROUTING_YAML


async def save_routing(pool: asyncpg.Pool, document: str, user: str) -> None:
    await pool.execute(
        "INSERT INTO notify_routing (id, document, updated_by) VALUES (1, $1, $2)"
        " ON CONFLICT (id) DO UPDATE SET document = $1, updated_by = $2, updated_at = now()",
        document,
        user,
    )


def _silence(row: asyncpg.Record) -> Silence:
    return Silence(
        str(row["id"]),
        tuple(Matcher.from_json(m) for m in json.loads(row["matchers"])),
        row["starts_at"].timestamp(),
        row["ends_at"].timestamp(),
        row["created_by"],
        row["comment"],
        row["updated_at"].timestamp(),
    )


async def list_silences(pool: asyncpg.Pool, *, since: float | None = None) -> list[Silence]:
    """Silences ending after `since` (all when None), newest first."""
    rows = await pool.fetch(
        "SELECT * FROM notify_silences WHERE $1::timestamptz IS NULL OR ends_at > $1"
        " ORDER BY starts_at DESC",
        ts(since) if since is not None else None,
    )
    return [_silence(r) for r in rows]


async def get_silence(pool: asyncpg.Pool, silence_id: str) -> Silence | None:
    """The silence with this id, or None (also for an id that is not a UUID)."""
    try:
        row = await pool.fetchrow("SELECT * FROM notify_silences WHERE id = $1::uuid", silence_id)
    except asyncpg.DataError:
        return None
    return _silence(row) if row is not None else None


async def save_silence(pool: asyncpg.Pool, silence: Silence) -> None:
    await pool.execute(
        "INSERT INTO notify_silences (id, matchers, starts_at, ends_at, created_by, comment,"
        " updated_at) VALUES ($1, $2::jsonb, $3, $4, $5, $6, $7) ON CONFLICT (id) DO UPDATE"
        " SET matchers=$2::jsonb, starts_at=$3, ends_at=$4, comment=$6, updated_at=$7",
        silence.id,
        json.dumps([m.to_json() for m in silence.matchers]),
        ts(silence.starts_at),
        ts(silence.ends_at),
        silence.created_by,
        silence.comment,
        ts(silence.updated_at),
    )


async def expire_silence(pool: asyncpg.Pool, silence_id: str, now: float) -> bool:
    """End a silence now (Alertmanager's DELETE /api/v2/silence/{id}); False if none active."""
    result = await pool.execute(
        "UPDATE notify_silences SET ends_at = greatest($2, starts_at + interval '1 millisecond'),"
        " updated_at = $2 WHERE id = $1::uuid AND ends_at > $2",
        silence_id,
        ts(now),
    )
    return result != "UPDATE 0"


@dataclass(frozen=True)
class Subscription:
    id: int
    user_id: int
    username: str
    channel_id: int
    channel_name: str
    matchers: tuple[Matcher, ...]


async def list_subscriptions(pool: asyncpg.Pool) -> list[Subscription]:
    rows = await pool.fetch(
        "SELECT s.id, s.user_id, u.username, s.channel_id, c.name AS channel_name, s.matchers"
        " FROM notify_subscriptions s JOIN users u ON u.id = s.user_id"
        " JOIN notify_channels c ON c.id = s.channel_id ORDER BY u.username, s.id"
    )
    return [
        Subscription(
            r["id"],
            r["user_id"],
            r["username"],
            r["channel_id"],
            r["channel_name"],
            tuple(Matcher.from_json(m) for m in json.loads(r["matchers"])),
        )
        for r in rows
    ]


async def add_subscription(
    pool: asyncpg.Pool, user_id: int, channel_id: int, matchers: Sequence[Matcher]
) -> int:
    new_id: int = await pool.fetchval(
        "INSERT INTO notify_subscriptions (user_id, channel_id, matchers)"
        " VALUES ($1, $2, $3::jsonb) RETURNING id",
        user_id,
        channel_id,
        json.dumps([m.to_json() for m in matchers]),
    )
    return new_id


async def delete_subscription(pool: asyncpg.Pool, sub_id: int, user_id: int | None) -> bool:
    result = await pool.execute(
        "DELETE FROM notify_subscriptions WHERE id = $1 AND ($2::int IS NULL OR user_id = $2)",
        sub_id,
        user_id,
    )
    return result != "DELETE 0"


# The alert store ---------------------------------------------------------------------------


async def upsert_alerts(conn: asyncpg.Connection | asyncpg.Pool, alerts: Sequence[Alert]) -> None:
    rows = [
        (
            a.fingerprint,
            json.dumps(dict(a.labels)),
            json.dumps(dict(a.annotations)),
            ts(a.starts_at),
            ts(a.ends_at),
            a.ends_given,
            a.generator_url,
            ts(a.updated_at),
        )
        for a in alerts
    ]
    if not rows:
        return
    await conn.executemany(
        "INSERT INTO notify_alerts (fingerprint, labels, annotations, starts_at, ends_at,"
        " ends_given, generator_url, updated_at) VALUES ($1, $2::jsonb, $3::jsonb, $4, $5, $6,"
        " $7, $8) ON CONFLICT (fingerprint) DO UPDATE SET labels = EXCLUDED.labels,"
        " annotations = EXCLUDED.annotations, starts_at = EXCLUDED.starts_at,"
        " ends_at = EXCLUDED.ends_at, ends_given = EXCLUDED.ends_given,"
        " generator_url = EXCLUDED.generator_url, updated_at = EXCLUDED.updated_at",
        rows,
    )
    # History: one row per episode (fingerprint, start); the end is set once resolved.
    await conn.executemany(
        "INSERT INTO notify_alert_history (fingerprint, starts_at, ends_at, alertname, labels,"
        " annotations) VALUES ($1, $4, CASE WHEN $6::boolean THEN $5::timestamptz END, $7,"
        " $2::jsonb, $3::jsonb)"
        " ON CONFLICT (fingerprint, starts_at) DO UPDATE SET"
        " ends_at = CASE WHEN $6::boolean THEN $5::timestamptz END, annotations = $3::jsonb",
        [
            (r[0], r[1], r[2], r[3], r[4], bool(a.ends_at <= a.updated_at), a.name)
            for r, a in zip(rows, alerts, strict=True)
        ],
    )


async def load_alerts(pool: asyncpg.Pool) -> list[Alert]:
    rows = await pool.fetch("SELECT * FROM notify_alerts")
    return [
        Alert(
            json.loads(r["labels"]),
            json.loads(r["annotations"]),
            r["starts_at"].timestamp(),
            r["ends_at"].timestamp(),
            r["generator_url"],
            r["updated_at"].timestamp(),
            r["ends_given"],
        )
        for r in rows
    ]


async def delete_alerts(pool: asyncpg.Pool, alerts: Iterable[Alert]) -> None:
    """Forget alerts, unless they were updated since (a newer copy arrived meanwhile)."""
    await pool.executemany(
        "DELETE FROM notify_alerts WHERE fingerprint = $1 AND updated_at <= $2",
        [(a.fingerprint, ts(a.updated_at)) for a in alerts],
    )
