"""The accounts pages over HTTP: TOTP login, step-up, own account, user management, audit."""

from __future__ import annotations

import re
import time

import aiohttp

from tests.web.test_access_web import (
    CSRF_FIELD,
    PASSWORD,
    Fleet,
    age_step_up,
    fleet,
    login,
    post_login,
)
from vpsmon.collector import access as grants
from vpsmon.collector import accounts, audit, tokens, totp
from vpsmon.web.keys import CONFIG

__all__ = ["fleet"]  # the fixture, imported for pytest


def code_for(secret: str, t: float | None = None) -> str:
    return totp.totp(totp.decode_secret(secret), time.time() if t is None else t)


async def test_a_user_with_totp_needs_the_code_after_the_password(fleet: Fleet) -> None:
    vic = fleet.viewer
    secret = await accounts.begin_totp(fleet.pool, vic.id)
    assert await accounts.enable_totp(
        fleet.pool, vic.id, code_for(secret, time.time() - 30), time.time()
    )
    async with fleet.client() as client:
        page = await (await client.get("/login")).text()
        token = CSRF_FIELD.search(page).group(1)  # type: ignore[union-attr]
        resp = await client.post(
            "/login",
            data={"username": "vic", "password": PASSWORD, "csrf_token": token},
            allow_redirects=False,
        )
        assert resp.status == 303 and resp.headers["Location"] == "/login/totp"
        # The password alone logs nobody in.
        assert (await client.get("/api/me")).status == 401
        page = await (await client.get("/login/totp")).text()
        token = CSRF_FIELD.search(page).group(1)  # type: ignore[union-attr]
        wrong = await client.post("/login/totp", data={"code": "000000", "csrf_token": token})
        assert wrong.status == 401
        page = await (await client.get("/login/totp")).text()
        token = CSRF_FIELD.search(page).group(1)  # type: ignore[union-attr]
        resp = await client.post(
            "/login/totp",
            data={"code": code_for(secret), "csrf_token": token},
            allow_redirects=False,
        )
        assert resp.status == 302, await resp.text()
        me = await (await client.get("/api/me")).json()
        assert me["username"] == "vic"
    entries = await audit.search(fleet.pool, audit.AuditQuery(action="login."))
    assert [(e.action, e.success, e.detail) for e in entries] == [
        ("login.success", True, {"totp": True}),
        ("login.failure", False, {"step": "totp"}),
    ]


async def test_the_totp_step_cannot_be_skipped_with_a_forged_pending_cookie(fleet: Fleet) -> None:
    async with fleet.client() as client:
        client.cookie_jar.update_cookies({"vpsmon_mfa": "forged"})
        resp = await client.get("/login/totp", allow_redirects=False)
        assert resp.status == 302 and resp.headers["Location"] == "/login"


async def test_enrolling_totp_on_the_account_page_shows_a_qr_code(fleet: Fleet) -> None:
    async with fleet.client() as client:
        csrf = await login(client, "olga")
        resp = await client.post("/account/totp/begin", data={"csrf_token": csrf})
        page = await resp.text()
        assert 'src="data:image/svg+xml' in page
        secret = re.search(r'id="totp-secret">([A-Z2-7]+)<', page)
        assert secret
        assert "otpauth://totp/vpsmon%3Aolga?secret=" + secret.group(1) in page.replace(
            "&amp;", "&"
        )
        resp = await client.post(
            "/account/totp/enable", data={"csrf_token": csrf, "code": code_for(secret.group(1))}
        )
        assert "Two-factor authentication is on." in await resp.text()
    olga = await accounts.find_user(fleet.pool, "olga")
    assert olga.totp_enabled


async def test_changing_the_own_password_needs_the_current_one(fleet: Fleet) -> None:
    async with fleet.client() as client:
        csrf = await login(client, "olga")
        form = {
            "csrf_token": csrf,
            "current": "wrong",
            "new": "new password 1",
            "repeat": "new password 1",
        }
        resp = await client.post("/account/password", data=form)
        assert resp.status == 401
        form["current"] = PASSWORD
        form["repeat"] = "different"
        assert (await client.post("/account/password", data=form)).status == 400
        form["repeat"] = "new password 1"
        resp = await client.post("/account/password", data=form)
        assert resp.status == 200 and "Password changed." in await resp.text()
        assert (await client.get("/api/me")).status == 200, "this session stays"
    assert await accounts.authenticate(fleet.pool, "olga", "new password 1") is not None


async def test_creating_a_token_in_the_ui_needs_a_recent_password_and_shows_it_once(
    fleet: Fleet,
) -> None:
    async with fleet.client() as client:
        csrf = await login(client, "olga")
        await age_step_up(fleet, "olga")  # the login no longer counts as a recent password
        resp = await client.post(
            "/account/tokens",
            data={"csrf_token": csrf, "name": "grafana", "expires_days": "30"},
            allow_redirects=False,
        )
        assert resp.status == 303
        assert resp.headers["Location"].startswith("/reauth?next=")
        assert await tokens.list_tokens(fleet.pool) == []
        resp = await client.post(
            "/reauth",
            data={"csrf_token": csrf, "password": PASSWORD, "next": "/account#tokens"},
            allow_redirects=False,
        )
        assert resp.status == 303 and resp.headers["Location"] == "/account#tokens"
        resp = await client.post(
            "/account/tokens", data={"csrf_token": csrf, "name": "grafana", "expires_days": "30"}
        )
        page = await resp.text()
        assert resp.headers["Cache-Control"] == "no-store"
        secret = re.search(r'id="new-token" value="(vpsmon_[^"]+)"', page)
        assert secret
        again = await (await client.get("/account")).text()
        assert secret.group(1) not in again, "shown once"
    async with aiohttp.ClientSession() as http:
        headers = {"Authorization": f"Bearer {secret.group(1)}"}
        async with http.get(f"{fleet.origin}/api/me", headers=headers) as resp:
            assert (await resp.json())["username"] == "olga"
    actions = [e.action for e in await audit.search(fleet.pool, audit.AuditQuery())]
    assert "token.create" in actions and "reauth.success" in actions


async def test_reauth_refuses_a_wrong_password_and_only_redirects_within_the_site(
    fleet: Fleet,
) -> None:
    async with fleet.client() as client:
        csrf = await login(client, "olga")
        resp = await client.post(
            "/reauth", data={"csrf_token": csrf, "password": "nope", "next": "/x"}
        )
        assert resp.status == 401
        resp = await client.post(
            "/reauth",
            data={"csrf_token": csrf, "password": PASSWORD, "next": "//evil.example/x"},
            allow_redirects=False,
        )
        assert resp.headers["Location"] == "/"
        resp = await client.post(
            "/api/reauth", json={"password": PASSWORD}, headers={"X-CSRF-Token": csrf}
        )
        assert resp.status == 200 and (await resp.json())["ok"] is True
        resp = await client.post(
            "/api/reauth", json={"password": "nope"}, headers={"X-CSRF-Token": csrf}
        )
        assert resp.status == 401


async def test_an_admin_adds_a_user_sets_role_access_and_password_all_audited(
    fleet: Fleet,
) -> None:
    async with fleet.client() as client:
        csrf = await login(client, "root")
        resp = await client.post(
            "/users",
            data={
                "csrf_token": csrf,
                "username": "newbie",
                "role": "viewer",
                "password": "pw pw pw pw",
            },
            allow_redirects=False,
        )
        assert resp.status == 303, await resp.text()
        user_path = resp.headers["Location"].split("?")[0]
        newbie = await accounts.find_user(fleet.pool, "newbie")
        assert user_path == f"/users/{newbie.id}"
        page = await (await client.get(user_path)).text()
        assert "secret-box" in page and "granted-box" in page
        resp = await client.post(
            f"{user_path}/access",
            data={"csrf_token": csrf, "server": str(fleet.hidden), "new_group": "asia"},
        )
        assert "Access saved." in await resp.text()
        g = await grants.get_grants(fleet.pool, newbie.id)
        assert g == grants.Grants(False, frozenset({fleet.hidden}), frozenset({"asia"}))
        await client.post(f"{user_path}/role", data={"csrf_token": csrf, "role": "operator"})
        await client.post(
            f"{user_path}/password", data={"csrf_token": csrf, "password": "another pw 2"}
        )
        await client.post(f"{user_path}/state", data={"csrf_token": csrf, "disabled": "1"})
        info = await accounts.find_user(fleet.pool, "newbie")
        assert (info.role, info.disabled) == ("operator", True)
        bad = await client.post(f"{user_path}/access", data={"csrf_token": csrf, "server": "999"})
        assert bad.status == 400
        own = await accounts.find_user(fleet.pool, "root")
        resp = await client.post(f"/users/{own.id}/delete", data={"csrf_token": csrf})
        assert resp.status == 400, "an admin does not delete themself"
        resp = await client.post(
            f"{user_path}/delete", data={"csrf_token": csrf}, allow_redirects=False
        )
        assert resp.status == 303
    entries = await audit.search(fleet.pool, audit.AuditQuery(action="user."))
    assert [e.action for e in reversed(entries)] == [
        "user.create",
        "user.grants",
        "user.role",
        "user.password",
        "user.disable",
        "user.delete",
    ]
    assert all(e.username == "root" and e.address == "127.0.0.1" for e in entries)
    grants_entry = next(e for e in entries if e.action == "user.grants")
    assert grants_entry.detail["after"] == {
        "all_servers": False,
        "servers": [fleet.hidden],
        "groups": ["asia"],
    }


async def test_user_management_and_the_audit_log_are_for_admins_only(fleet: Fleet) -> None:
    async with fleet.client() as client:
        csrf = await login(client, "olga")
        for path in ("/users", f"/users/{fleet.viewer.id}", "/audit", "/api/audit", "/api/users"):
            assert (await client.get(path, allow_redirects=False)).status == 403, path
        resp = await client.post(
            "/users",
            data={"csrf_token": csrf, "username": "x", "role": "admin", "password": "pw pw pw pw"},
        )
        assert resp.status == 403
        resp = await client.post(
            f"/users/{fleet.viewer.id}/role", data={"csrf_token": csrf, "role": "admin"}
        )
        assert resp.status == 403
    assert (await accounts.find_user(fleet.pool, "vic")).role == "viewer"


async def test_admin_pages_without_the_csrf_token_change_nothing(fleet: Fleet) -> None:
    async with fleet.client() as client:
        await login(client, "root")
        resp = await client.post(f"/users/{fleet.viewer.id}/role", data={"role": "admin"})
        assert resp.status == 403
    assert (await accounts.find_user(fleet.pool, "vic")).role == "viewer"


async def test_the_audit_page_filters_and_escapes(fleet: Fleet) -> None:
    await audit.record(fleet.pool, "login.failure", username="<script>x</script>", success=False)
    async with fleet.client() as client:
        await login(client, "root")
        page = await (await client.get("/audit?action=login.&outcome=failed")).text()
        assert "&lt;script&gt;x&lt;/script&gt;" in page and "<script>x" not in page
        assert "login.success" not in page.split("<tbody>")[1]
        data = await (await client.get("/api/audit?action=login.success")).json()
        assert [e["username"] for e in data["entries"]] == ["root"]


async def test_a_token_of_a_disabled_user_and_a_lapsed_reauth_ttl_are_honoured(
    fleet: Fleet,
) -> None:
    assert fleet.app[CONFIG].reauth_ttl == 600.0
    _, secret = await tokens.create_token(fleet.pool, fleet.viewer.id, "t")
    await accounts.set_disabled(fleet.pool, fleet.viewer.id, True)
    async with aiohttp.ClientSession() as http:
        async with http.get(
            f"{fleet.origin}/api/me", headers={"Authorization": f"Bearer {secret}"}
        ) as resp:
            assert resp.status == 401
    async with fleet.client() as client:
        assert await post_login(client, "vic", PASSWORD) == 401


async def test_an_admin_turns_off_the_totp_of_a_user_who_lost_their_phone(fleet: Fleet) -> None:
    secret = await accounts.begin_totp(fleet.pool, fleet.viewer.id)
    assert await accounts.enable_totp(fleet.pool, fleet.viewer.id, code_for(secret), time.time())
    async with fleet.client() as client:
        csrf = await login(client, "root")
        page = await (await client.get(f"/users/{fleet.viewer.id}")).text()
        assert f"/users/{fleet.viewer.id}/totp/disable" in page
        resp = await client.post(
            f"/users/{fleet.viewer.id}/totp/disable", data={"csrf_token": csrf}
        )
        assert "Two-factor authentication is off." in await resp.text()
    assert await accounts.totp_state(fleet.pool, fleet.viewer.id) == (False, None)
    async with fleet.client() as client:
        await login(client, "vic")  # the password alone again
    (entry,) = await audit.search(fleet.pool, audit.AuditQuery(action="totp.disable"))
    assert entry.username == "root" and entry.detail == {"user": "vic"}


async def test_the_account_page_lists_sessions_and_signs_out_the_others(fleet: Fleet) -> None:
    async with fleet.client() as phone, fleet.client() as laptop:
        await login(phone, "olga")
        csrf = await login(laptop, "olga")
        page = await (await laptop.get("/account")).text()
        assert page.count("127.0.0.1") >= 2 and "this browser" in page
        resp = await laptop.post("/account/sessions/end-others", data={"csrf_token": csrf})
        assert "Your other sessions are signed out." in await resp.text()
        assert (await phone.get("/api/me")).status == 401
        assert (await laptop.get("/api/me")).status == 200
    (entry,) = await audit.search(fleet.pool, audit.AuditQuery(action="session.end_others"))
    assert entry.detail == {"user": "olga", "ended": 1}
