"""Per-server access: which servers a user may see (issue #5).

Admins see every server. Operators and viewers see the servers granted to them one by one,
the servers of the groups granted to them (groups are `servers.group_name`, so a server added
to a granted group later is visible too), or every server when `all_servers` is set. The role
says what a user may do; the grants say where.

Every reader of servers filters through `visible_server_ids`, the one place this is decided.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import asyncpg

from vpsmon.collector.accounts import AccountError, User

MAX_GROUP_LENGTH = 200


@dataclass(frozen=True)
class Grants:
    all_servers: bool
    server_ids: frozenset[int]
    groups: frozenset[str]


async def visible_server_ids(
    pool: asyncpg.Pool | asyncpg.Connection, user: User
) -> frozenset[int] | None:
    """The ids of the servers `user` may see; None means every server (admins, all_servers).

    Read from the database on every call, so a revoked grant or a disabled user takes effect
    at once; a disabled or deleted user sees nothing.
    """
    row = await pool.fetchrow(
        "SELECT role, all_servers, disabled FROM users WHERE id = $1", user.id
    )
    if row is None or row["disabled"]:
        return frozenset()
    if row["role"] == "admin" or row["all_servers"]:
        return None
    rows = await pool.fetch(
        "SELECT server_id AS id FROM user_server_grants WHERE user_id = $1"
        " UNION SELECT s.id FROM servers s JOIN user_group_grants g"
        " ON g.group_name = s.group_name WHERE g.user_id = $1 AND s.group_name <> ''",
        user.id,
    )
    return frozenset(r["id"] for r in rows)


async def can_see_server(pool: asyncpg.Pool, user: User, server_id: int) -> bool:
    visible = await visible_server_ids(pool, user)
    return visible is None or server_id in visible


def is_visible(visible: frozenset[int] | None, server_id: int) -> bool:
    return visible is None or server_id in visible


async def get_grants(pool: asyncpg.Pool | asyncpg.Connection, user_id: int) -> Grants:
    all_servers = await pool.fetchval("SELECT all_servers FROM users WHERE id = $1", user_id)
    if all_servers is None:
        raise AccountError("no such user")
    servers = await pool.fetch(
        "SELECT server_id FROM user_server_grants WHERE user_id = $1", user_id
    )
    groups = await pool.fetch(
        "SELECT group_name FROM user_group_grants WHERE user_id = $1", user_id
    )
    return Grants(
        bool(all_servers),
        frozenset(r["server_id"] for r in servers),
        frozenset(r["group_name"] for r in groups),
    )


def _clean_groups(groups: Iterable[str]) -> frozenset[str]:
    cleaned = set()
    for group in groups:
        group = group.strip()
        if not group:
            continue
        if len(group) > MAX_GROUP_LENGTH:
            raise AccountError(f"a group name is at most {MAX_GROUP_LENGTH} characters")
        cleaned.add(group)
    return frozenset(cleaned)


async def set_grants(
    pool: asyncpg.Pool,
    user_id: int,
    *,
    all_servers: bool,
    server_ids: Iterable[int],
    groups: Iterable[str],
) -> tuple[Grants, Grants]:
    """Replace a user's grants; returns (before, after) for the audit log.

    An unknown server id is an error that changes nothing.
    """
    wanted = frozenset(server_ids)
    wanted_groups = _clean_groups(groups)
    async with pool.acquire() as conn, conn.transaction():
        before = await get_grants(conn, user_id)
        known = await conn.fetch("SELECT id FROM servers WHERE id = ANY($1::int[])", list(wanted))
        missing = wanted - {r["id"] for r in known}
        if missing:
            raise AccountError(f"no server with id {', '.join(map(str, sorted(missing)))}")
        await conn.execute("UPDATE users SET all_servers = $2 WHERE id = $1", user_id, all_servers)
        await conn.execute(
            "DELETE FROM user_server_grants WHERE user_id = $1 AND NOT (server_id = ANY($2))",
            user_id,
            list(wanted),
        )
        await conn.executemany(
            "INSERT INTO user_server_grants (user_id, server_id) VALUES ($1, $2)"
            " ON CONFLICT DO NOTHING",
            [(user_id, sid) for sid in sorted(wanted)],
        )
        await conn.execute(
            "DELETE FROM user_group_grants WHERE user_id = $1 AND NOT (group_name = ANY($2))",
            user_id,
            list(wanted_groups),
        )
        await conn.executemany(
            "INSERT INTO user_group_grants (user_id, group_name) VALUES ($1, $2)"
            " ON CONFLICT DO NOTHING",
            [(user_id, g) for g in sorted(wanted_groups)],
        )
    return before, Grants(all_servers, wanted, wanted_groups)


async def grant_server(pool: asyncpg.Pool, user_id: int, server_id: int) -> None:
    try:
        await pool.execute(
            "INSERT INTO user_server_grants (user_id, server_id) VALUES ($1, $2)"
            " ON CONFLICT DO NOTHING",
            user_id,
            server_id,
        )
    except asyncpg.ForeignKeyViolationError:
        raise AccountError("no such user or server") from None


async def grant_group(pool: asyncpg.Pool, user_id: int, group: str) -> None:
    (clean,) = _clean_groups([group]) or {""}
    if not clean:
        raise AccountError("a group name cannot be empty")
    try:
        await pool.execute(
            "INSERT INTO user_group_grants (user_id, group_name) VALUES ($1, $2)"
            " ON CONFLICT DO NOTHING",
            user_id,
            clean,
        )
    except asyncpg.ForeignKeyViolationError:
        raise AccountError("no such user") from None
