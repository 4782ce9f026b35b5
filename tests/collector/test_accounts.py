"""Accounts and sessions against a real, migrated PostgreSQL database."""

from __future__ import annotations

import hashlib

import asyncpg
import pytest

from vpsmon.collector import accounts
from vpsmon.collector.accounts import AccountError


async def test_a_user_authenticates_with_the_right_password_only(pool: asyncpg.Pool) -> None:
    created = await accounts.create_user(pool, "alice", "correct horse", "operator")
    assert created.username == "alice"
    assert created.role == "operator"
    assert await accounts.authenticate(pool, "alice", "correct horse") == created
    assert await accounts.authenticate(pool, "alice", "wrong horse") is None
    assert await accounts.authenticate(pool, "alice", "") is None
    assert await accounts.authenticate(pool, "mallory", "correct horse") is None


async def test_passwords_are_stored_as_argon2id_hashes(pool: asyncpg.Pool) -> None:
    await accounts.create_user(pool, "alice", "correct horse", "viewer")
    stored = await pool.fetchval("SELECT password_hash FROM users WHERE username = 'alice'")
    assert stored.startswith("$argon2id$")
    assert "correct horse" not in stored


async def test_a_disabled_user_cannot_log_in(pool: asyncpg.Pool) -> None:
    await accounts.create_user(pool, "bob", "long enough", "viewer")
    await pool.execute("UPDATE users SET disabled = true WHERE username = 'bob'")
    assert await accounts.authenticate(pool, "bob", "long enough") is None


async def test_a_short_password_is_refused(pool: asyncpg.Pool) -> None:
    with pytest.raises(AccountError, match="at least 8 characters"):
        await accounts.create_user(pool, "alice", "short", "admin")
    assert await pool.fetchval("SELECT count(*) FROM users") == 0


async def test_an_unknown_role_is_refused(pool: asyncpg.Pool) -> None:
    with pytest.raises(AccountError, match="role must be one of admin, operator, viewer"):
        await accounts.create_user(pool, "alice", "long enough", "root")
    assert await pool.fetchval("SELECT count(*) FROM users") == 0


@pytest.mark.parametrize("username", ["", "has space", "a/b", "x" * 65, "<script>"])
async def test_a_malformed_username_is_refused(pool: asyncpg.Pool, username: str) -> None:
    with pytest.raises(AccountError, match="username must be"):
        await accounts.create_user(pool, username, "long enough", "viewer")


async def test_a_duplicate_username_is_refused(pool: asyncpg.Pool) -> None:
    await accounts.create_user(pool, "alice", "long enough", "viewer")
    with pytest.raises(AccountError, match="already exists"):
        await accounts.create_user(pool, "alice", "other password", "admin")


async def test_ensure_admin_creates_the_first_admin_once(pool: asyncpg.Pool) -> None:
    password = await accounts.ensure_admin(pool, None)
    assert password is not None
    assert len(password) >= accounts.MIN_PASSWORD_LENGTH
    admin = await accounts.authenticate(pool, "admin", password)
    assert admin is not None
    assert admin.role == "admin"
    assert await accounts.ensure_admin(pool, None) is None
    assert await accounts.ensure_admin(pool, "another password") is None
    assert await pool.fetchval("SELECT count(*) FROM users") == 1


async def test_ensure_admin_uses_the_given_password(pool: asyncpg.Pool) -> None:
    assert await accounts.ensure_admin(pool, "chosen password") == "chosen password"
    assert await accounts.authenticate(pool, "admin", "chosen password") is not None


async def test_ensure_admin_does_nothing_when_any_user_exists(pool: asyncpg.Pool) -> None:
    await accounts.create_user(pool, "alice", "long enough", "viewer")
    assert await accounts.ensure_admin(pool, None) is None
    assert await pool.fetchval("SELECT count(*) FROM users WHERE username = 'admin'") == 0


async def test_a_session_loads_until_it_is_deleted(pool: asyncpg.Pool) -> None:
    user = await accounts.create_user(pool, "alice", "long enough", "operator")
    token, csrf = await accounts.create_session(pool, user, 3600)
    assert token != csrf
    session = await accounts.load_session(pool, token)
    assert session is not None
    assert session.user == user
    assert session.csrf_token == csrf
    assert await accounts.load_session(pool, token + "x") is None
    assert await accounts.load_session(pool, "") is None
    await accounts.delete_session(pool, token)
    assert await accounts.load_session(pool, token) is None


async def test_an_expired_session_does_not_load_and_is_cleaned_up(pool: asyncpg.Pool) -> None:
    user = await accounts.create_user(pool, "alice", "long enough", "operator")
    expired, _ = await accounts.create_session(pool, user, -1)
    live, _ = await accounts.create_session(pool, user, 3600)
    assert await accounts.load_session(pool, expired) is None
    assert await accounts.delete_expired_sessions(pool) == 1
    assert await pool.fetchval("SELECT count(*) FROM sessions") == 1
    assert await accounts.load_session(pool, live) is not None


async def test_a_disabled_users_sessions_stop_working(pool: asyncpg.Pool) -> None:
    user = await accounts.create_user(pool, "alice", "long enough", "operator")
    token, _ = await accounts.create_session(pool, user, 3600)
    await pool.execute("UPDATE users SET disabled = true WHERE id = $1", user.id)
    assert await accounts.load_session(pool, token) is None


async def test_only_a_hash_of_the_session_token_is_stored(pool: asyncpg.Pool) -> None:
    user = await accounts.create_user(pool, "alice", "long enough", "operator")
    token, _ = await accounts.create_session(pool, user, 3600)
    assert len(token) >= 40  # 256 random bits, url-safe base64
    rows = await pool.fetch("SELECT * FROM sessions")
    assert len(rows) == 1
    dumped = " ".join(
        v.hex() if isinstance(v, bytes) else str(v) for row in rows for v in row.values()
    )
    assert token not in dumped
    assert token.encode().hex() not in dumped
    assert bytes(rows[0]["token_hash"]) == hashlib.sha256(token.encode()).digest()
    text_dump = await pool.fetchval("SELECT string_agg(s::text, ' ') FROM sessions s")
    assert token not in text_dump


async def test_session_tokens_are_not_predictable(pool: asyncpg.Pool) -> None:
    user = await accounts.create_user(pool, "alice", "long enough", "operator")
    pairs = [await accounts.create_session(pool, user, 3600) for _ in range(5)]
    tokens = {t for t, _ in pairs} | {c for _, c in pairs}
    assert len(tokens) == 10
