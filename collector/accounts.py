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

from vpsmon.collector import totp

ROLES = ("admin", "operator", "viewer")
# admin > operator > viewer: a role may do everything the roles below it may.
ROLE_RANK = {"viewer": 0, "operator": 1, "admin": 2}
USERNAME_RE = re.compile(r"[A-Za-z0-9_.@-]{1,64}")
MIN_PASSWORD_LENGTH = 8
MAX_PASSWORD_LENGTH = 1024

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
    # When the user last proved who they are in this session (login or step-up), epoch seconds.
    authenticated_at: float = 0.0


@dataclass(frozen=True)
class UserInfo:
    """A user as the admin pages and `vpsmon user list` show it."""

    id: int
    username: str
    role: str
    disabled: bool
    all_servers: bool
    totp_enabled: bool
    created_at: datetime


def role_allows(role: str, needed: str) -> bool:
    """True when `role` is `needed` or above it (admin > operator > viewer)."""
    if needed not in ROLE_RANK:
        raise ValueError(f"unknown role {needed!r}")
    return ROLE_RANK.get(role, -1) >= ROLE_RANK[needed]


def generate_password() -> str:
    return secrets.token_urlsafe(15)


def validate_password(password: str) -> None:
    if len(password) < MIN_PASSWORD_LENGTH:
        raise AccountError(f"password must be at least {MIN_PASSWORD_LENGTH} characters")
    if len(password) > MAX_PASSWORD_LENGTH:
        raise AccountError(f"password must be at most {MAX_PASSWORD_LENGTH} characters")


def validate_role(role: str) -> None:
    if role not in ROLES:
        raise AccountError(f"role must be one of {', '.join(ROLES)}")


def _validate(username: str, password: str, role: str) -> None:
    if not USERNAME_RE.fullmatch(username):
        raise AccountError("username must be 1-64 letters, digits or . _ @ -")
    validate_password(password)
    validate_role(role)


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


async def create_session(
    pool: asyncpg.Pool,
    user: User,
    ttl: float,
    *,
    mfa_pending: bool = False,
    address: str | None = None,
) -> tuple[str, str]:
    """Returns (session token for the cookie, CSRF token).

    A session made with `mfa_pending` logs nobody in until `complete_mfa` (the right TOTP code).
    """
    token = secrets.token_urlsafe(32)
    csrf = secrets.token_urlsafe(32)
    expires = datetime.now(UTC) + timedelta(seconds=ttl)
    await pool.execute(
        "INSERT INTO sessions (token_hash, user_id, csrf_token, expires_at, mfa_pending, address)"
        " VALUES ($1, $2, $3, $4, $5, $6)",
        _token_hash(token),
        user.id,
        csrf,
        expires,
        mfa_pending,
        address,
    )
    return token, csrf


async def pending_mfa_user(pool: asyncpg.Pool, token: str, max_age: float) -> User | None:
    """The user of a session still waiting for its second factor, if younger than max_age."""
    row = await pool.fetchrow(
        "SELECT u.id, u.username, u.role FROM sessions s JOIN users u ON u.id = s.user_id"
        " WHERE s.token_hash = $1 AND s.mfa_pending AND NOT u.disabled"
        " AND s.created_at > now() - make_interval(secs => $2)",
        _token_hash(token),
        max_age,
    )
    return User(row["id"], row["username"], row["role"]) if row else None


async def complete_mfa(pool: asyncpg.Pool, token: str, ttl: float) -> None:
    """The second factor was right: the pending session becomes a logged-in one."""
    await pool.execute(
        "UPDATE sessions SET mfa_pending = false, authenticated_at = now(),"
        " expires_at = now() + make_interval(secs => $2) WHERE token_hash = $1",
        _token_hash(token),
        ttl,
    )


async def mark_reauthenticated(pool: asyncpg.Pool, token: str) -> None:
    """Step-up: the user proved again who they are in this session."""
    await pool.execute(
        "UPDATE sessions SET authenticated_at = now() WHERE token_hash = $1", _token_hash(token)
    )


async def verify_password(pool: asyncpg.Pool, user_id: int, password: str) -> bool:
    row = await pool.fetchrow(
        "SELECT password_hash FROM users WHERE id = $1 AND NOT disabled", user_id
    )
    try:
        _hasher.verify(row["password_hash"] if row else _dummy_hash(), password)
    except (VerificationError, InvalidHashError):
        return False
    return row is not None


async def load_session(pool: asyncpg.Pool, token: str) -> Session | None:
    """The logged-in session of a cookie token; None when unknown, expired, waiting for the
    second factor, or its user is disabled."""
    row = await pool.fetchrow(
        "SELECT u.id, u.username, u.role, s.csrf_token,"
        " extract(epoch FROM s.authenticated_at)::float8 AS authenticated_at"
        " FROM sessions s JOIN users u ON u.id = s.user_id"
        " WHERE s.token_hash = $1 AND s.expires_at > now() AND NOT s.mfa_pending"
        " AND NOT u.disabled",
        _token_hash(token),
    )
    if row is None:
        return None
    user = User(row["id"], row["username"], row["role"])
    return Session(user, row["csrf_token"], row["authenticated_at"])


async def delete_session(pool: asyncpg.Pool, token: str) -> None:
    await pool.execute("DELETE FROM sessions WHERE token_hash = $1", _token_hash(token))


async def delete_expired_sessions(pool: asyncpg.Pool) -> int:
    result: str = await pool.execute("DELETE FROM sessions WHERE expires_at <= now()")
    return int(result.split()[-1])


# ---------------------------------------------------------------- user management


_USER_INFO_COLUMNS = "id, username, role, disabled, all_servers, totp_enabled, created_at"


def _user_info(row: asyncpg.Record) -> UserInfo:
    return UserInfo(
        row["id"],
        row["username"],
        row["role"],
        row["disabled"],
        row["all_servers"],
        row["totp_enabled"],
        row["created_at"],
    )


async def list_users(pool: asyncpg.Pool) -> list[UserInfo]:
    rows = await pool.fetch(f"SELECT {_USER_INFO_COLUMNS} FROM users ORDER BY username")  # noqa: S608
    return [_user_info(r) for r in rows]


async def get_user(pool: asyncpg.Pool, user_id: int) -> UserInfo | None:
    row = await pool.fetchrow(
        f"SELECT {_USER_INFO_COLUMNS} FROM users WHERE id = $1",  # noqa: S608
        user_id,
    )
    return _user_info(row) if row else None


async def find_user(pool: asyncpg.Pool, username: str) -> UserInfo:
    """The user named `username`; AccountError when there is none."""
    row = await pool.fetchrow(
        f"SELECT {_USER_INFO_COLUMNS} FROM users WHERE username = $1",  # noqa: S608
        username,
    )
    if row is None:
        raise AccountError(f"no user {username!r}")
    return _user_info(row)


async def _ensure_an_admin_remains(conn: asyncpg.Connection, user_id: int) -> None:
    """Refuse a change that would leave no enabled admin (nobody could manage users)."""
    left = await conn.fetchval(
        "SELECT count(*) FROM users WHERE role = 'admin' AND NOT disabled AND id <> $1", user_id
    )
    if not left:
        raise AccountError("this is the last enabled admin: make another admin first")


async def set_role(pool: asyncpg.Pool, user_id: int, role: str) -> None:
    validate_role(role)
    async with pool.acquire() as conn, conn.transaction():
        # Serialises admin changes, so two demotions cannot both pass the last-admin check.
        await conn.execute("LOCK TABLE users IN SHARE ROW EXCLUSIVE MODE")
        current = await conn.fetchval("SELECT role FROM users WHERE id = $1", user_id)
        if current is None:
            raise AccountError("no such user")
        if current == "admin" and role != "admin":
            await _ensure_an_admin_remains(conn, user_id)
        await conn.execute("UPDATE users SET role = $2 WHERE id = $1", user_id, role)


async def set_disabled(pool: asyncpg.Pool, user_id: int, disabled: bool) -> None:
    """Disabling ends the user's sessions; their API tokens stop working while disabled."""
    async with pool.acquire() as conn, conn.transaction():
        await conn.execute("LOCK TABLE users IN SHARE ROW EXCLUSIVE MODE")
        current = await conn.fetchval("SELECT role FROM users WHERE id = $1", user_id)
        if current is None:
            raise AccountError("no such user")
        if disabled and current == "admin":
            await _ensure_an_admin_remains(conn, user_id)
        await conn.execute("UPDATE users SET disabled = $2 WHERE id = $1", user_id, disabled)
        if disabled:
            await conn.execute("DELETE FROM sessions WHERE user_id = $1", user_id)


async def set_password(
    pool: asyncpg.Pool, user_id: int, password: str, *, keep_session: str | None = None
) -> None:
    """A new password ends every session of the user but `keep_session` (the one changing it)."""
    validate_password(password)
    async with pool.acquire() as conn, conn.transaction():
        result = await conn.execute(
            "UPDATE users SET password_hash = $2, password_changed_at = now() WHERE id = $1",
            user_id,
            _hasher.hash(password),
        )
        if result.split()[-1] == "0":
            raise AccountError("no such user")
        await conn.execute(
            "DELETE FROM sessions WHERE user_id = $1 AND token_hash IS DISTINCT FROM $2",
            user_id,
            _token_hash(keep_session) if keep_session else None,
        )


async def delete_user(pool: asyncpg.Pool, user_id: int) -> None:
    async with pool.acquire() as conn, conn.transaction():
        await conn.execute("LOCK TABLE users IN SHARE ROW EXCLUSIVE MODE")
        current = await conn.fetchval("SELECT role FROM users WHERE id = $1", user_id)
        if current is None:
            raise AccountError("no such user")
        if current == "admin":
            await _ensure_an_admin_remains(conn, user_id)
        await conn.execute("DELETE FROM users WHERE id = $1", user_id)


# ---------------------------------------------------------------- TOTP (second factor)


async def totp_state(pool: asyncpg.Pool, user_id: int) -> tuple[bool, str | None]:
    """(enabled, secret): the secret is the pending one while enrolling."""
    row = await pool.fetchrow("SELECT totp_enabled, totp_secret FROM users WHERE id = $1", user_id)
    if row is None:
        raise AccountError("no such user")
    return row["totp_enabled"], row["totp_secret"]


async def begin_totp(pool: asyncpg.Pool, user_id: int) -> str:
    """Start enrolling: a new secret, not yet in force until `enable_totp` sees a right code."""
    secret = totp.new_secret()
    result = await pool.execute(
        "UPDATE users SET totp_secret = $2 WHERE id = $1 AND NOT totp_enabled", user_id, secret
    )
    if result.split()[-1] == "0":
        raise AccountError("two-factor authentication is already on; turn it off first")
    return secret


async def enable_totp(pool: asyncpg.Pool, user_id: int, code: str, now: float) -> bool:
    """Turn TOTP on if `code` matches the secret being enrolled."""
    enabled, secret = await totp_state(pool, user_id)
    if enabled or not secret:
        raise AccountError("start enrolling first")
    step = totp.match_step(secret, code, now)
    if step is None:
        return False
    await pool.execute(
        "UPDATE users SET totp_enabled = true, totp_last_step = $2 WHERE id = $1", user_id, step
    )
    return True


async def disable_totp(pool: asyncpg.Pool, user_id: int) -> None:
    await pool.execute(
        "UPDATE users SET totp_enabled = false, totp_secret = NULL, totp_last_step = 0"
        " WHERE id = $1",
        user_id,
    )


async def verify_totp(pool: asyncpg.Pool, user_id: int, code: str, now: float) -> bool:
    """A right code of an enabled TOTP, never accepted twice (RFC 6238 §5.2)."""
    row = await pool.fetchrow(
        "SELECT totp_secret, totp_last_step FROM users"
        " WHERE id = $1 AND totp_enabled AND NOT disabled",
        user_id,
    )
    if row is None or not row["totp_secret"]:
        return False
    step = totp.match_step(row["totp_secret"], code, now, after_step=row["totp_last_step"])
    if step is None:
        return False
    # Atomic: of two requests with the same code, only one moves last_step forward.
    result = await pool.execute(
        "UPDATE users SET totp_last_step = $2 WHERE id = $1 AND totp_last_step < $2",
        user_id,
        step,
    )
    return bool(result.split()[-1] != "0")


# ---------------------------------------------------------------- trusted devices

DEVICE_TTL_SECONDS = 30 * 86400


async def trust_device(pool: asyncpg.Pool, user_id: int) -> str:
    """A cookie value marking this browser as one that logged in as `user_id`."""
    token = secrets.token_urlsafe(32)
    await pool.execute(
        "INSERT INTO trusted_devices (token_hash, user_id, expires_at)"
        " VALUES ($1, $2, now() + make_interval(secs => $3))",
        _token_hash(token),
        user_id,
        DEVICE_TTL_SECONDS,
    )
    await pool.execute("DELETE FROM trusted_devices WHERE expires_at <= now()")
    return token


async def is_trusted_device(pool: asyncpg.Pool, token: str | None, username: str) -> bool:
    if not token:
        return False
    found = await pool.fetchval(
        "SELECT 1 FROM trusted_devices d JOIN users u ON u.id = d.user_id"
        " WHERE d.token_hash = $1 AND u.username = $2 AND d.expires_at > now()",
        _token_hash(token),
        username,
    )
    return found is not None


# ---------------------------------------------------------------- sessions of a user


@dataclass(frozen=True)
class SessionInfo:
    created_at: datetime
    expires_at: datetime
    address: str | None
    current: bool


async def list_sessions(pool: asyncpg.Pool, user_id: int, current: str | None) -> list[SessionInfo]:
    """The user's logged-in sessions, newest first; `current` (a cookie token) is marked."""
    rows = await pool.fetch(
        "SELECT created_at, expires_at, address, token_hash = $2 AS current FROM sessions"
        " WHERE user_id = $1 AND NOT mfa_pending AND expires_at > now()"
        " ORDER BY created_at DESC",
        user_id,
        _token_hash(current) if current else b"",
    )
    return [SessionInfo(r["created_at"], r["expires_at"], r["address"], r["current"]) for r in rows]


async def end_other_sessions(pool: asyncpg.Pool, user_id: int, keep: str) -> int:
    """Sign out everywhere else; returns how many sessions ended."""
    result: str = await pool.execute(
        "DELETE FROM sessions WHERE user_id = $1 AND token_hash <> $2", user_id, _token_hash(keep)
    )
    return int(result.split()[-1])
