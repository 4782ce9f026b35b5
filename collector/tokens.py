"""API tokens for scripts and Grafana (issue #5, #8): `Authorization: Bearer vpsmon_…`.

A token is 256 random bits, shown once when created; only its SHA-256 is stored (a hash this
fast is enough for a value this random: there is nothing to guess). A token acts as its user,
with the user's role and servers, and stops working when revoked, expired, or when its user
is disabled or deleted.
"""

from __future__ import annotations

import hashlib
import re
import secrets
from dataclasses import dataclass
from datetime import UTC, datetime

import asyncpg

from vpsmon.collector.accounts import AccountError, User

TOKEN_PREFIX = "vpsmon_"  # noqa: S105 (a public marker, not a secret)
NAME_RE = re.compile(r"[^\x00-\x1f\x7f]{1,100}")
# A token's last use is written at most this often, so busy scripts do not write every call.
LAST_USED_RESOLUTION_SECONDS = 60


@dataclass(frozen=True)
class ApiToken:
    id: int
    user_id: int
    username: str
    name: str
    prefix: str
    created_at: datetime
    expires_at: datetime | None
    last_used_at: datetime | None
    revoked_at: datetime | None

    def active(self, now: datetime) -> bool:
        return self.revoked_at is None and (self.expires_at is None or self.expires_at > now)


def _hash(secret: str) -> bytes:
    return hashlib.sha256(secret.encode()).digest()


def looks_like_token(value: str) -> bool:
    return value.startswith(TOKEN_PREFIX) and 20 <= len(value) <= 200


async def create_token(
    pool: asyncpg.Pool, user_id: int, name: str, expires_at: datetime | None = None
) -> tuple[ApiToken, str]:
    """Returns the stored token and its secret, which is never available again."""
    name = name.strip()
    if not NAME_RE.fullmatch(name):
        raise AccountError("a token name is 1-100 printable characters")
    if expires_at is not None and expires_at.tzinfo is None:
        raise AccountError("the expiry needs a time zone")
    secret = TOKEN_PREFIX + secrets.token_urlsafe(32)
    try:
        row = await pool.fetchrow(
            "INSERT INTO api_tokens (user_id, name, token_hash, prefix, expires_at)"
            " SELECT id, $2, $3, $4, $5 FROM users WHERE id = $1"
            " RETURNING id, (expires_at <= now()) AS expired",
            user_id,
            name,
            _hash(secret),
            secret[: len(TOKEN_PREFIX) + 6],
            expires_at,
        )
    except asyncpg.UniqueViolationError:
        raise AccountError(f"this user already has a token named {name!r}") from None
    if row is None:
        raise AccountError("no such user")
    if row["expired"]:
        await pool.execute("DELETE FROM api_tokens WHERE id = $1", row["id"])
        raise AccountError("the expiry is in the past")
    token = await get_token(pool, row["id"])
    assert token is not None
    return token, secret


# Constant column lists, never user input, are what the S608 noqa lines format in.
_COLUMNS = (
    "t.id, t.user_id, u.username, t.name, t.prefix, t.created_at, t.expires_at,"
    " t.last_used_at, t.revoked_at"
)


def _row(row: asyncpg.Record) -> ApiToken:
    return ApiToken(*(row[k] for k in range(9)))


async def get_token(pool: asyncpg.Pool, token_id: int) -> ApiToken | None:
    row = await pool.fetchrow(
        f"SELECT {_COLUMNS} FROM api_tokens t JOIN users u ON u.id = t.user_id"  # noqa: S608
        " WHERE t.id = $1",
        token_id,
    )
    return _row(row) if row else None


async def list_tokens(pool: asyncpg.Pool, user_id: int | None = None) -> list[ApiToken]:
    rows = await pool.fetch(
        f"SELECT {_COLUMNS} FROM api_tokens t JOIN users u ON u.id = t.user_id"  # noqa: S608
        " WHERE $1::int IS NULL OR t.user_id = $1 ORDER BY u.username, t.created_at DESC",
        user_id,
    )
    return [_row(r) for r in rows]


async def revoke_token(pool: asyncpg.Pool, token_id: int, user_id: int | None = None) -> bool:
    """Revoke a token (of `user_id` only, when given). False when there was none to revoke."""
    result: str = await pool.execute(
        "UPDATE api_tokens SET revoked_at = now()"
        " WHERE id = $1 AND revoked_at IS NULL AND ($2::int IS NULL OR user_id = $2)",
        token_id,
        user_id,
    )
    return result.split()[-1] != "0"


async def authenticate_token(pool: asyncpg.Pool, secret: str) -> tuple[User, int] | None:
    """(user, token id) for a valid token; None for anything else."""
    if not looks_like_token(secret):
        return None
    row = await pool.fetchrow(
        "SELECT t.id AS token_id, t.last_used_at, u.id, u.username, u.role"
        " FROM api_tokens t JOIN users u ON u.id = t.user_id"
        " WHERE t.token_hash = $1 AND t.revoked_at IS NULL"
        " AND (t.expires_at IS NULL OR t.expires_at > now()) AND NOT u.disabled",
        _hash(secret),
    )
    if row is None:
        return None
    last = row["last_used_at"]
    if last is None or (datetime.now(UTC) - last).total_seconds() > LAST_USED_RESOLUTION_SECONDS:
        await pool.execute(
            "UPDATE api_tokens SET last_used_at = now() WHERE id = $1", row["token_id"]
        )
    return User(row["id"], row["username"], row["role"]), row["token_id"]
