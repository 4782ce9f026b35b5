"""Grants, visible servers, API tokens, the audit log and TOTP, on a real migrated database."""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime, timedelta

import asyncpg
import pytest

from vpsmon.collector import access, accounts, audit, tokens, totp
from vpsmon.collector.accounts import AccountError


async def add_server(pool: asyncpg.Pool, name: str, group: str = "") -> int:
    server_id: int = await pool.fetchval(
        "INSERT INTO servers (name, url, group_name) VALUES ($1, $2, $3) RETURNING id",
        name,
        f"http://{name}.example:9190/metrics",
        group,
    )
    return server_id


# ---------------------------------------------------------------- access


async def test_admins_see_every_server_and_others_only_what_is_granted(
    pool: asyncpg.Pool,
) -> None:
    admin = await accounts.create_user(pool, "root", "long enough", "admin")
    viewer = await accounts.create_user(pool, "vic", "long enough", "viewer")
    a = await add_server(pool, "a")
    b = await add_server(pool, "b")
    assert await access.visible_server_ids(pool, admin) is None
    assert await access.visible_server_ids(pool, viewer) == frozenset()
    await access.grant_server(pool, viewer.id, a)
    assert await access.visible_server_ids(pool, viewer) == {a}
    assert await access.can_see_server(pool, viewer, a)
    assert not await access.can_see_server(pool, viewer, b)


async def test_a_group_grant_covers_servers_added_to_the_group_later(pool: asyncpg.Pool) -> None:
    op = await accounts.create_user(pool, "op", "long enough", "operator")
    await add_server(pool, "other", "eu")
    await access.grant_group(pool, op.id, "asia")
    assert await access.visible_server_ids(pool, op) == frozenset()
    later = await add_server(pool, "tokyo", "asia")
    assert await access.visible_server_ids(pool, op) == {later}


async def test_all_servers_and_disabling_change_visibility_at_once(pool: asyncpg.Pool) -> None:
    op = await accounts.create_user(pool, "op", "long enough", "operator")
    await add_server(pool, "a")
    await access.set_grants(pool, op.id, all_servers=True, server_ids=[], groups=[])
    assert await access.visible_server_ids(pool, op) is None
    await accounts.set_disabled(pool, op.id, True)
    assert await access.visible_server_ids(pool, op) == frozenset()


async def test_set_grants_with_an_unknown_server_changes_nothing(pool: asyncpg.Pool) -> None:
    op = await accounts.create_user(pool, "op", "long enough", "operator")
    a = await add_server(pool, "a")
    await access.set_grants(pool, op.id, all_servers=False, server_ids=[a], groups=["g"])
    with pytest.raises(AccountError, match="no server with id 999"):
        await access.set_grants(pool, op.id, all_servers=True, server_ids=[999], groups=[])
    grants = await access.get_grants(pool, op.id)
    assert grants == access.Grants(False, frozenset({a}), frozenset({"g"}))


async def test_set_grants_returns_before_and_after(pool: asyncpg.Pool) -> None:
    op = await accounts.create_user(pool, "op", "long enough", "operator")
    a = await add_server(pool, "a")
    b = await add_server(pool, "b")
    await access.set_grants(pool, op.id, all_servers=False, server_ids=[a], groups=[])
    before, after = await access.set_grants(
        pool, op.id, all_servers=False, server_ids=[b], groups=[" web "]
    )
    assert before.server_ids == {a}
    assert after == access.Grants(False, frozenset({b}), frozenset({"web"}))
    assert await access.visible_server_ids(pool, op) == {b}


async def test_role_order_is_admin_over_operator_over_viewer() -> None:
    assert accounts.role_allows("admin", "operator")
    assert accounts.role_allows("operator", "operator")
    assert accounts.role_allows("operator", "viewer")
    assert not accounts.role_allows("viewer", "operator")
    assert not accounts.role_allows("operator", "admin")
    assert not accounts.role_allows("root", "viewer")
    with pytest.raises(ValueError):
        accounts.role_allows("admin", "root")


async def test_the_last_enabled_admin_cannot_be_demoted_disabled_or_deleted(
    pool: asyncpg.Pool,
) -> None:
    root = await accounts.create_user(pool, "root", "long enough", "admin")
    for change in (
        accounts.set_role(pool, root.id, "viewer"),
        accounts.set_disabled(pool, root.id, True),
        accounts.delete_user(pool, root.id),
    ):
        with pytest.raises(AccountError, match="last enabled admin"):
            await change
    assert (await accounts.get_user(pool, root.id)) is not None
    second = await accounts.create_user(pool, "second", "long enough", "admin")
    await accounts.set_role(pool, root.id, "viewer")
    assert (await accounts.find_user(pool, "root")).role == "viewer"
    with pytest.raises(AccountError, match="last enabled admin"):
        await accounts.set_disabled(pool, second.id, True)


async def test_a_new_password_ends_other_sessions_but_the_one_changing_it(
    pool: asyncpg.Pool,
) -> None:
    user = await accounts.create_user(pool, "u", "long enough", "viewer")
    keep, _ = await accounts.create_session(pool, user, 3600)
    other, _ = await accounts.create_session(pool, user, 3600)
    await accounts.set_password(pool, user.id, "a new password", keep_session=keep)
    assert await accounts.load_session(pool, keep) is not None
    assert await accounts.load_session(pool, other) is None
    assert await accounts.authenticate(pool, "u", "a new password") == user
    assert await accounts.authenticate(pool, "u", "long enough") is None


async def test_a_session_waiting_for_its_second_factor_logs_nobody_in(pool: asyncpg.Pool) -> None:
    user = await accounts.create_user(pool, "u", "long enough", "viewer")
    token, _ = await accounts.create_session(pool, user, 300, mfa_pending=True)
    assert await accounts.load_session(pool, token) is None
    assert await accounts.pending_mfa_user(pool, token, 300) == user
    await accounts.complete_mfa(pool, token, 3600)
    session = await accounts.load_session(pool, token)
    assert session is not None and session.user == user
    assert await accounts.pending_mfa_user(pool, token, 300) is None


# ---------------------------------------------------------------- tokens


async def test_a_token_is_stored_only_as_its_hash_and_authenticates_as_its_user(
    pool: asyncpg.Pool,
) -> None:
    user = await accounts.create_user(pool, "bot", "long enough", "operator")
    token, secret = await tokens.create_token(pool, user.id, "grafana")
    assert secret.startswith("vpsmon_") and len(secret) > 40
    assert token.prefix == secret[:13]
    stored = await pool.fetchrow("SELECT * FROM api_tokens WHERE id = $1", token.id)
    assert bytes(stored["token_hash"]) == hashlib.sha256(secret.encode()).digest()
    assert secret not in str(dict(stored))
    assert await tokens.authenticate_token(pool, secret) == (user, token.id)
    assert await tokens.authenticate_token(pool, secret + "x") is None
    assert await tokens.authenticate_token(pool, "") is None
    used = await tokens.get_token(pool, token.id)
    assert used is not None and used.last_used_at is not None


async def test_a_revoked_expired_or_disabled_users_token_stops_working(pool: asyncpg.Pool) -> None:
    user = await accounts.create_user(pool, "bot", "long enough", "operator")
    keeper = await accounts.create_user(pool, "root", "long enough", "admin")
    revoked, s1 = await tokens.create_token(pool, user.id, "one")
    assert await tokens.revoke_token(pool, revoked.id, user_id=keeper.id) is False  # not theirs
    assert await tokens.authenticate_token(pool, s1) is not None
    assert await tokens.revoke_token(pool, revoked.id) is True
    assert await tokens.revoke_token(pool, revoked.id) is False  # already revoked
    assert await tokens.authenticate_token(pool, s1) is None

    soon = datetime.now(UTC) + timedelta(hours=1)
    expiring, s2 = await tokens.create_token(pool, user.id, "two", soon)
    assert await tokens.authenticate_token(pool, s2) is not None
    await pool.execute(
        "UPDATE api_tokens SET expires_at = now() - interval '1 second' WHERE id = $1",
        expiring.id,
    )
    assert await tokens.authenticate_token(pool, s2) is None

    _, s3 = await tokens.create_token(pool, user.id, "three")
    await accounts.set_disabled(pool, user.id, True)
    assert await tokens.authenticate_token(pool, s3) is None
    await accounts.set_disabled(pool, user.id, False)
    assert await tokens.authenticate_token(pool, s3) is not None


async def test_bad_token_requests_are_refused_and_store_nothing(pool: asyncpg.Pool) -> None:
    user = await accounts.create_user(pool, "bot", "long enough", "operator")
    await tokens.create_token(pool, user.id, "ci")
    with pytest.raises(AccountError, match="already has a token named 'ci'"):
        await tokens.create_token(pool, user.id, "ci")
    with pytest.raises(AccountError, match="1-100 printable"):
        await tokens.create_token(pool, user.id, "bad\nname")
    with pytest.raises(AccountError, match="in the past"):
        await tokens.create_token(pool, user.id, "old", datetime.now(UTC) - timedelta(days=1))
    with pytest.raises(AccountError, match="no such user"):
        await tokens.create_token(pool, 9999, "ghost")
    assert await pool.fetchval("SELECT count(*) FROM api_tokens") == 1


# ---------------------------------------------------------------- audit


async def test_audit_entries_keep_who_what_where_and_cannot_be_rewritten(
    pool: asyncpg.Pool,
) -> None:
    user = await accounts.create_user(pool, "op", "long enough", "operator")
    server = await add_server(pool, "<b>web</b>")
    entry = await audit.record(
        pool,
        "exec",
        user=user,
        server_id=server,
        address="203.0.113.9",
        detail={"command": ["uptime"]},
    )
    await audit.record(pool, "login.failure", username="mallory", success=False, address="x")
    await pool.execute("DELETE FROM servers WHERE id = $1", server)
    (found,) = await audit.search(pool, audit.AuditQuery(action="exec"))
    assert found.id == entry
    assert (found.username, found.server_id, found.server_name) == ("op", server, "<b>web</b>")
    assert found.address == "203.0.113.9"
    assert found.detail == {"command": ["uptime"]}
    with pytest.raises(asyncpg.RaiseError, match="cannot be changed"):
        await pool.execute("UPDATE audit_log SET username = 'someone else'")


async def test_the_audit_log_filters_by_user_action_prefix_server_outcome_and_pages(
    pool: asyncpg.Pool,
) -> None:
    for i in range(5):
        await audit.record(pool, "login.success", username=f"u{i % 2}")
    await audit.record(pool, "login.failure", username="u0", success=False)
    await audit.record(pool, "user.create", username="u1")
    assert len(await audit.search(pool, audit.AuditQuery(action="login."))) == 6
    assert len(await audit.search(pool, audit.AuditQuery(username="u0"))) == 4
    failed = await audit.search(pool, audit.AuditQuery(success=False))
    assert [e.action for e in failed] == ["login.failure"]
    first = await audit.search(pool, audit.AuditQuery(limit=3))
    rest = await audit.search(pool, audit.AuditQuery(limit=10, before_id=first[-1].id))
    assert len(first) == 3 and len(rest) == 4
    assert [e.id for e in first + rest] == sorted((e.id for e in first + rest), reverse=True)
    assert await audit.actions(pool) == ["login.failure", "login.success", "user.create"]


async def test_a_malformed_audit_action_is_refused(pool: asyncpg.Pool) -> None:
    with pytest.raises(audit.AuditError):
        await audit.record(pool, "Drop Table")
    assert await pool.fetchval("SELECT count(*) FROM audit_log") == 0


# ---------------------------------------------------------------- TOTP


# RFC 6238 Appendix B: the seeds are the ASCII strings below; 8-digit codes.
RFC6238_SEEDS = {
    "sha1": b"12345678901234567890",
    "sha256": b"12345678901234567890123456789012",
    "sha512": b"1234567890123456789012345678901234567890123456789012345678901234",
}
RFC6238_VECTORS = [
    (59, "94287082", "46119246", "90693936"),
    (1111111109, "07081804", "68084774", "25091201"),
    (1111111111, "14050471", "67062674", "99943326"),
    (1234567890, "89005924", "91819424", "93441116"),
    (2000000000, "69279037", "90698825", "38618901"),
    (20000000000, "65353130", "77737706", "47863826"),
]


@pytest.mark.parametrize(("t", "sha1", "sha256", "sha512"), RFC6238_VECTORS)
def test_totp_matches_the_rfc_6238_test_vectors(
    t: int, sha1: str, sha256: str, sha512: str
) -> None:
    for digest, want in (("sha1", sha1), ("sha256", sha256), ("sha512", sha512)):
        assert totp.totp(RFC6238_SEEDS[digest], t, digits=8, digest=digest) == want


def test_hotp_matches_the_rfc_4226_test_vectors() -> None:
    want = ["755224", "287082", "359152", "969429", "338314", "254676", "287922", "162583"]
    got = [totp.hotp(b"12345678901234567890", i) for i in range(8)]
    assert got == want


def test_a_code_matches_within_one_step_and_never_twice() -> None:
    secret = totp.new_secret()
    key = totp.decode_secret(secret)
    t = 1_700_000_000.0
    now_step = totp.time_step(t)
    assert totp.match_step(secret, totp.totp(key, t), t) == now_step
    assert totp.match_step(secret, totp.totp(key, t - 30), t) == now_step - 1
    assert totp.match_step(secret, totp.totp(key, t + 30), t) == now_step + 1
    assert totp.match_step(secret, totp.totp(key, t - 90), t) is None
    assert totp.match_step(secret, totp.totp(key, t), t, after_step=now_step) is None
    assert totp.match_step(secret, "12345", t) is None
    assert totp.match_step(secret, "abcdef", t) is None


def test_the_provisioning_uri_is_what_authenticator_apps_read() -> None:
    uri = totp.provisioning_uri("JBSWY3DPEHPK3PXP", "alice@example")
    assert uri.startswith("otpauth://totp/vpsmon%3Aalice%40example?secret=JBSWY3DPEHPK3PXP")
    assert "issuer=vpsmon" in uri and "digits=6" in uri and "period=30" in uri


async def test_totp_enrolment_needs_a_right_code_and_a_code_is_used_once(
    pool: asyncpg.Pool,
) -> None:
    user = await accounts.create_user(pool, "u", "long enough", "viewer")
    secret = await accounts.begin_totp(pool, user.id)
    key = totp.decode_secret(secret)
    t = 1_700_000_000.0
    assert not await accounts.verify_totp(pool, user.id, totp.totp(key, t), t)  # not yet on
    assert not await accounts.enable_totp(pool, user.id, "000000", t)
    assert await accounts.enable_totp(pool, user.id, totp.totp(key, t), t)
    with pytest.raises(AccountError, match="already on"):
        await accounts.begin_totp(pool, user.id)
    # The code used to enrol is spent; the next step's code works once.
    assert not await accounts.verify_totp(pool, user.id, totp.totp(key, t), t)
    assert await accounts.verify_totp(pool, user.id, totp.totp(key, t + 30), t + 30)
    assert not await accounts.verify_totp(pool, user.id, totp.totp(key, t + 30), t + 30)
    await accounts.disable_totp(pool, user.id)
    assert await accounts.totp_state(pool, user.id) == (False, None)


async def test_audit_retention_deletes_only_entries_older_than_the_limit(
    pool: asyncpg.Pool,
) -> None:
    old = await audit.record(pool, "login.success", username="a")
    new = await audit.record(pool, "login.success", username="b")
    # Deleting is allowed (retention); rewriting is not.
    await pool.execute("ALTER TABLE audit_log DISABLE TRIGGER audit_log_no_update")
    await pool.execute("UPDATE audit_log SET at = now() - interval '400 days' WHERE id = $1", old)
    await pool.execute("ALTER TABLE audit_log ENABLE TRIGGER audit_log_no_update")
    assert await audit.delete_older_than(pool, 365 * 86400) == 1
    assert [e.id for e in await audit.search(pool, audit.AuditQuery())] == [new]
