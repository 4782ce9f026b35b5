"""The audit log (issue #5, #7): who did what, where, when, from which address.

`record` writes one entry and returns its id. Call it BEFORE a dangerous action runs (and
record the outcome after, as a second entry or with `success`), so a crash never leaves an
action without its entry. Entries copy the user and server names, so they stay readable after
either is deleted; the table refuses UPDATE (sql/032).

Action names are dotted, lower case: `login.success`, `login.failure`, `user.create`,
`user.role`, `user.disable`, `user.enable`, `user.password`, `user.delete`, `user.grants`,
`token.create`, `token.revoke`, `totp.enable`, `totp.disable`, `reauth.success`,
`reauth.failure`, `session.end_others`; the command channel adds `exec`, `pty.open`,
`file.write`, `docker.start` …
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import asyncpg

from vpsmon.collector.accounts import User

ACTION_RE = re.compile(r"[a-z0-9_.-]{1,64}")
MAX_DETAIL_BYTES = 16 * 1024
MAX_PAGE = 500


class AuditError(ValueError):
    pass


@dataclass(frozen=True)
class AuditEntry:
    id: int
    at: datetime
    user_id: int | None
    username: str | None
    action: str
    server_id: int | None
    server_name: str | None
    address: str | None
    success: bool
    detail: dict[str, Any]

    def as_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "at": self.at.isoformat(),
            "user_id": self.user_id,
            "username": self.username,
            "action": self.action,
            "server_id": self.server_id,
            "server_name": self.server_name,
            "address": self.address,
            "success": self.success,
            "detail": self.detail,
        }


async def record(
    db: asyncpg.Pool | asyncpg.Connection,
    action: str,
    *,
    user: User | None = None,
    username: str | None = None,
    server_id: int | None = None,
    address: str | None = None,
    success: bool = True,
    detail: Mapping[str, Any] | None = None,
) -> int:
    """Write one entry; returns its id.

    `username` names who acted when there is no `user` (a failed login's attempted name).
    `detail` is any JSON-serialisable mapping (at most 16 KiB): command lines, paths, before
    and after values; never passwords or tokens.
    """
    if not ACTION_RE.fullmatch(action):
        raise AuditError(f"action {action!r} must be 1-64 of a-z 0-9 _ . -")
    text = json.dumps(dict(detail or {}), default=str, ensure_ascii=False)
    if len(text.encode()) > MAX_DETAIL_BYTES:
        text = json.dumps({"truncated": text[: MAX_DETAIL_BYTES // 2]}, ensure_ascii=False)
    entry_id: int = await db.fetchval(
        "INSERT INTO audit_log (user_id, username, action, server_id, server_name, address,"
        " success, detail)"
        " VALUES ($1, $2, $3, $4, (SELECT name FROM servers WHERE id = $4), $5, $6, $7::jsonb)"
        " RETURNING id",
        user.id if user else None,
        user.username if user else username,
        action,
        server_id,
        address,
        success,
        text.replace("\x00", ""),
    )
    return entry_id


@dataclass(frozen=True)
class AuditQuery:
    """A filter over the log; every field is optional. Pages go backwards from `before_id`."""

    username: str | None = None
    action: str | None = None  # exact name, or a prefix ending in "." such as "login."
    server_id: int | None = None
    success: bool | None = None
    since: datetime | None = None
    until: datetime | None = None
    before_id: int | None = None
    limit: int = 100


async def search(db: asyncpg.Pool, query: AuditQuery) -> list[AuditEntry]:
    """Entries matching `query`, newest first."""
    limit = max(1, min(query.limit, MAX_PAGE))
    action_exact = action_prefix = None
    if query.action:
        if query.action.endswith("."):
            action_prefix = query.action
        else:
            action_exact = query.action
    rows = await db.fetch(
        "SELECT id, at, user_id, username, action, server_id, server_name, address, success,"
        " detail FROM audit_log WHERE ($1::text IS NULL OR username = $1)"
        " AND ($2::text IS NULL OR action = $2)"
        " AND ($3::text IS NULL OR starts_with(action, $3))"
        " AND ($4::int IS NULL OR server_id = $4)"
        " AND ($5::bool IS NULL OR success = $5)"
        " AND ($6::timestamptz IS NULL OR at >= $6)"
        " AND ($7::timestamptz IS NULL OR at < $7)"
        " AND ($8::bigint IS NULL OR id < $8)"
        " ORDER BY id DESC LIMIT $9",
        query.username,
        action_exact,
        action_prefix,
        query.server_id,
        query.success,
        query.since,
        query.until,
        query.before_id,
        limit,
    )
    return [
        AuditEntry(
            r["id"],
            r["at"],
            r["user_id"],
            r["username"],
            r["action"],
            r["server_id"],
            r["server_name"],
            r["address"],
            r["success"],
            json.loads(r["detail"]),
        )
        for r in rows
    ]


async def delete_older_than(db: asyncpg.Pool, seconds: float) -> int:
    """Retention (web.audit_retention): delete entries older than `seconds`; returns how many."""
    result: str = await db.execute(
        "DELETE FROM audit_log WHERE at < now() - make_interval(secs => $1)", seconds
    )
    return int(result.split()[-1])


async def actions(db: asyncpg.Pool) -> list[str]:
    """The distinct action names in the log, for the filter's choices."""
    rows = await db.fetch("SELECT DISTINCT action FROM audit_log ORDER BY action")
    return [r["action"] for r in rows]
