"""User accounts and login sessions, stored in PostgreSQL.

Passwords are argon2id hashes (argon2-cffi). Session tokens are 256-bit random values; only
their SHA-256 is stored, so a copy of the table logs nobody in.
"""

from __future__ import annotations

import functools
import hashlib
import re
import secrets
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import asyncpg
from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError

ROLES = ("admin", "operator", "viewer")
USERNAME_RE = re.compile(r"[A-Za-z0-9_.@-]{1,64}")
MIN_PASSWORD_LENGTH = 8

_hasher = PasswordHasher()


@functools.cache
def _dummy_hash() -> str:
    """Verified against when the user does not exist, so timing does not reveal usernames."""
    return _hasher.hash("vpsmon-no-such-user")


class AccountError(ValueError):
    pass


@dataclass(frozen=True)
class User:
    id: int
    username: str
    role: str


@dataclass(frozen=True)
class Session:
    user: User
    csrf_token: str


def generate_password() -> str:
    return secrets.token_urlsafe(15)


def _validate(username: str, password: str, role: str) -> None:
    if not USERNAME_RE.fullmatch(username):
        raise AccountError("username must be 1-64 letters, digits or . _ @ -")
    if len(password) < MIN_PASSWORD_LENGTH:
        raise AccountError(f"password must be at least {MIN_PASSWORD_LENGTH} characters")
    if role not in ROLES:
        raise AccountError(f"role must be one of {', '.join(ROLES)}")


async def create_user(pool: asyncpg.Pool, username: str, password: str, role: str) -> User:
    _validate(username, password, role)
    try:
        row = await pool.fetchrow(
            "INSERT INTO users (username, password_hash, role) VALUES ($1, $2, $3)"
            " RETURNING id, username, role",
            username,
            _hasher.hash(password),
            role,
        )
    except asyncpg.UniqueViolationError:
        raise AccountError(f"user {username!r} already exists") from None
    assert row is not None
    return User(row["id"], row["username"], row["role"])


async def ensure_admin(pool: asyncpg.Pool, password: str | None) -> str | None:
    """Create the first admin `admin` if there is no user at all.

    Returns the password when a user was created (a random one unless given), else None.
    """
    if await pool.fetchval("SELECT count(*) FROM users"):
        return None
    password = password or generate_password()
    await create_user(pool, "admin", password, "admin")
    return password


async def authenticate(pool: asyncpg.Pool, username: str, password: str) -> User | None:
    row = await pool.fetchrow(
        "SELECT id, username, role, password_hash FROM users WHERE username = $1 AND NOT disabled",
        username,
    )
    try:
        _hasher.verify(row["password_hash"] if row else _dummy_hash(), password)
    except (VerificationError, InvalidHashError):
        return None
    if row is None:
        return None
    return User(row["id"], row["username"], row["role"])


def _token_hash(token: str) -> bytes:
    return hashlib.sha256(token.encode()).digest()


async def create_session(pool: asyncpg.Pool, user: User, ttl: float) -> tuple[str, str]:
    """Returns (session token for the cookie, CSRF token)."""
    token = secrets.token_urlsafe(32)
    csrf = secrets.token_urlsafe(32)
    expires = datetime.now(UTC) + timedelta(seconds=ttl)
    await pool.execute(
        "INSERT INTO sessions (token_hash, user_id, csrf_token, expires_at)"
        " VALUES ($1, $2, $3, $4)",
        _token_hash(token),
        user.id,
        csrf,
        expires,
    )
    return token, csrf


async def load_session(pool: asyncpg.Pool, token: str) -> Session | None:
    row = await pool.fetchrow(
        "SELECT u.id, u.username, u.role, s.csrf_token FROM sessions s JOIN users u"
        " ON u.id = s.user_id WHERE s.token_hash = $1 AND s.expires_at > now() AND NOT u.disabled",
        _token_hash(token),
    )
    if row is None:
        return None
    return Session(User(row["id"], row["username"], row["role"]), row["csrf_token"])


async def delete_session(pool: asyncpg.Pool, token: str) -> None:
    await pool.execute("DELETE FROM sessions WHERE token_hash = $1", _token_hash(token))


async def delete_expired_sessions(pool: asyncpg.Pool) -> int:
    result: str = await pool.execute("DELETE FROM sessions WHERE expires_at <= now()")
    return int(result.split()[-1])
