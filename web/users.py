"""Accounts in the web UI and API (issue #5): login with an optional TOTP second factor,
step-up re-authentication, the own account page (password, TOTP, API tokens), user
management for admins (roles, state, passwords, server and group grants) and the audit log.

Every change here is written to the audit log; user management and token creation ask for
the password again unless it was given in the last `web.reauth_ttl`.
"""

from __future__ import annotations

import secrets
import urllib.parse
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from typing import Any

from aiohttp import web

from vpsmon.collector import access as grants
from vpsmon.collector import accounts, audit, tokens, totp
from vpsmon.collector.accounts import ROLES, AccountError
from vpsmon.web import access, auth
from vpsmon.web.app import _language, render
from vpsmon.web.i18n import messages
from vpsmon.web.keys import CONFIG, LIMITER, POOL

# A login waiting for its TOTP code expires after this.
MFA_PENDING_SECONDS = 300.0
TOKEN_EXPIRY_DAYS = ("", "30", "90", "365")
AUDIT_PAGE = 100
# ?done=KEY after a redirect shows t["acct.done.KEY"].
DONE = {
    "password",
    "totp_on",
    "totp_off",
    "token_revoked",
    "user_added",
    "role",
    "disabled",
    "enabled",
    "reset",
    "access",
    "deleted",
    "sessions_ended",
}


def setup(app: web.Application) -> None:
    r = app.router
    r.add_get("/login", login_page)
    r.add_post("/login", login_submit)
    r.add_get("/login/totp", login_totp_page)
    r.add_post("/login/totp", login_totp_submit)
    r.add_post("/logout", logout)
    r.add_get("/reauth", reauth_page)
    r.add_post("/reauth", reauth_submit)
    r.add_post("/api/reauth", api_reauth)
    r.add_get("/account", account_page)
    r.add_post("/account/password", account_password)
    r.add_post("/account/totp/begin", account_totp_begin)
    r.add_post("/account/totp/enable", account_totp_enable)
    r.add_post("/account/totp/disable", account_totp_disable)
    r.add_post("/account/sessions/end-others", account_end_other_sessions)
    r.add_post("/account/tokens", account_token_create)
    r.add_post("/account/tokens/{tid:[0-9]{1,9}}/revoke", account_token_revoke)
    r.add_get("/users", users_page)
    r.add_post("/users", users_add)
    r.add_get("/users/{id:[0-9]{1,9}}", user_page)
    r.add_post("/users/{id:[0-9]{1,9}}/role", user_role)
    r.add_post("/users/{id:[0-9]{1,9}}/state", user_state)
    r.add_post("/users/{id:[0-9]{1,9}}/password", user_password)
    r.add_post("/users/{id:[0-9]{1,9}}/access", user_access)
    r.add_post("/users/{id:[0-9]{1,9}}/delete", user_delete)
    r.add_post("/users/{id:[0-9]{1,9}}/totp/disable", user_totp_disable)
    r.add_post("/users/{id:[0-9]{1,9}}/tokens/{tid:[0-9]{1,9}}/revoke", user_token_revoke)
    r.add_get("/audit", audit_page)
    r.add_get("/api/audit", api_audit)
    r.add_get("/api/users", api_users)
    r.add_get("/api/me", api_me)


def _t(request: web.Request) -> Mapping[str, str]:
    return messages()[_language(request)]


def _safe_next(value: str | None) -> str:
    """A local path to go back to; anything else (other sites, //host, \\) becomes /."""
    if not value or not value.startswith("/") or value.startswith("//") or "\\" in value:
        return "/"
    parts = urllib.parse.urlsplit(value)
    if parts.scheme or parts.netloc:
        return "/"
    return value


def _form_str(form: Mapping[str, Any], name: str, limit: int = 1024) -> str:
    value = form.get(name, "")
    return value[:limit] if isinstance(value, str) else ""


def _redirect(path: str, done: str | None = None) -> web.HTTPSeeOther:
    """See Other to a local path (a #fragment kept last), with ?done=KEY for the notice."""
    if done:
        path, hash_, fragment = path.partition("#")
        path += ("&" if "?" in path else "?") + urllib.parse.urlencode({"done": done})
        path += hash_ + fragment
    return web.HTTPSeeOther(path)


def _done(request: web.Request) -> str | None:
    key = request.query.get("done")
    return key if key in DONE else None


def _session_cookie(response: web.StreamResponse, request: web.Request, token: str) -> None:
    ttl = request.app[CONFIG].session_ttl
    response.set_cookie(
        auth.SESSION_COOKIE,
        token,
        httponly=True,
        samesite="Lax",
        secure=request.secure,
        max_age=int(ttl),
        path="/",
    )


def _login_cookie(response: web.StreamResponse, request: web.Request, name: str, value: str,
                  max_age: int | None = None) -> None:  # fmt: skip
    """Cookies of the login steps: only ever sent to /login…, never readable by scripts."""
    response.set_cookie(
        name,
        value,
        httponly=True,
        samesite="Strict",
        secure=request.secure,
        path="/login",
        max_age=max_age,
    )


# ---------------------------------------------------------------- login


async def login_page(
    request: web.Request,
    error: str | None = None,
    status: int = 200,
    template: str = "login.html",
) -> web.Response:
    if auth.current_session(request) is not None:
        raise web.HTTPFound("/")
    # Double-submit token: the form field must match a cookie only our page could have set.
    token = secrets.token_urlsafe(24)
    response = render(request, template, status=status, login_csrf=token, error=error)
    _login_cookie(response, request, auth.LOGIN_CSRF_COOKIE, token)
    return response


def _login_form_ok(request: web.Request, form: Mapping[str, Any]) -> bool:
    cookie = request.cookies.get(auth.LOGIN_CSRF_COOKIE, "")
    field = _form_str(form, "csrf_token", 100)
    return bool(cookie) and secrets.compare_digest(cookie, field)


async def login_submit(request: web.Request) -> web.Response:
    form = await request.post()
    t = _t(request)
    if not _login_form_ok(request, form):
        return await login_page(request, t["login.expired"], 403)
    username = _form_str(form, "username", 64)
    password = _form_str(form, "password", accounts.MAX_PASSWORD_LENGTH)
    limiter = request.app[LIMITER]
    pool = request.app[POOL]
    address = access.client_address(request)
    now = auth.now()
    trusted = await accounts.is_trusted_device(
        pool, request.cookies.get(auth.DEVICE_COOKIE), username
    )
    if limiter.blocked(address, username, now, trusted_device=trusted):
        return await login_page(request, t["login.limited"], 429)
    user = await accounts.authenticate(pool, username, password)
    if user is None:
        limiter.failed(address, username, now)
        await access.audit(request, "login.failure", username=username, success=False)
        return await login_page(request, t["login.failed"], 401)
    enabled, _ = await accounts.totp_state(pool, user.id)
    if enabled:
        # The password was right; the session logs nobody in until the code is right too.
        pending, _ = await accounts.create_session(
            pool, user, MFA_PENDING_SECONDS, mfa_pending=True, address=address
        )
        response = web.HTTPSeeOther("/login/totp")
        _login_cookie(response, request, auth.MFA_COOKIE, pending, int(MFA_PENDING_SECONDS))
        raise response
    limiter.succeeded(address, username)
    token, _ = await accounts.create_session(
        pool, user, request.app[CONFIG].session_ttl, address=address
    )
    await access.audit(request, "login.success", user=user)
    raise await _logged_in(request, user, token, trusted)


async def _logged_in(
    request: web.Request, user: accounts.User, token: str, trusted: bool
) -> web.HTTPFound:
    response = web.HTTPFound("/")
    _session_cookie(response, request, token)
    if not trusted:
        device = await accounts.trust_device(request.app[POOL], user.id)
        _login_cookie(response, request, auth.DEVICE_COOKIE, device, accounts.DEVICE_TTL_SECONDS)
    response.del_cookie(auth.LOGIN_CSRF_COOKIE, path="/login")
    response.del_cookie(auth.MFA_COOKIE, path="/login")
    return response


async def _pending_user(request: web.Request) -> tuple[str, accounts.User] | None:
    token = request.cookies.get(auth.MFA_COOKIE)
    if not token:
        return None
    user = await accounts.pending_mfa_user(request.app[POOL], token, MFA_PENDING_SECONDS)
    return (token, user) if user else None


async def login_totp_page(request: web.Request) -> web.Response:
    if await _pending_user(request) is None:
        raise web.HTTPFound("/login")
    return await login_page(request, template="login_totp.html")


async def login_totp_submit(request: web.Request) -> web.Response:
    form = await request.post()
    t = _t(request)
    pending = await _pending_user(request)
    if pending is None:
        return await login_page(request, t["login.expired"], 403)
    if not _login_form_ok(request, form):
        return await login_page(request, t["login.expired"], 403, "login_totp.html")
    token, user = pending
    pool = request.app[POOL]
    limiter = request.app[LIMITER]
    address = access.client_address(request)
    now = auth.now()
    trusted = await accounts.is_trusted_device(
        pool, request.cookies.get(auth.DEVICE_COOKIE), user.username
    )
    if limiter.blocked(address, user.username, now, trusted_device=trusted):
        return await login_page(request, t["login.limited"], 429, "login_totp.html")
    if not await accounts.verify_totp(pool, user.id, _form_str(form, "code", 20), now):
        limiter.failed(address, user.username, now)
        await access.audit(
            request, "login.failure", user=user, success=False, detail={"step": "totp"}
        )
        return await login_page(request, t["acct.totp.wrong"], 401, "login_totp.html")
    limiter.succeeded(address, user.username)
    await accounts.complete_mfa(pool, token, request.app[CONFIG].session_ttl)
    await access.audit(request, "login.success", user=user, detail={"totp": True})
    raise await _logged_in(request, user, token, trusted)


async def logout(request: web.Request) -> web.Response:
    auth.require_session(request)
    token = request.cookies.get(auth.SESSION_COOKIE)
    if token:
        await accounts.delete_session(request.app[POOL], token)
    response = web.HTTPFound("/login")
    response.del_cookie(auth.SESSION_COOKIE, path="/")
    raise response


# ---------------------------------------------------------------- step-up


async def _check_reauth(request: web.Request, password: str, code: str) -> bool:
    """Password, or TOTP code when enabled; failures count against the login limits."""
    session = auth.require_session(request)
    pool = request.app[POOL]
    limiter = request.app[LIMITER]
    address = access.client_address(request)
    now = auth.now()
    name = session.user.username
    if limiter.blocked(address, name, now, trusted_device=True):
        raise web.HTTPTooManyRequests(text=_t(request)["login.limited"])
    if code:
        ok = await accounts.verify_totp(pool, session.user.id, code, now)
    else:
        ok = bool(password) and await accounts.verify_password(pool, session.user.id, password)
    if not ok:
        limiter.failed(address, name, now)
        await access.audit(request, "reauth.failure", success=False)
        return False
    token = request.cookies.get(auth.SESSION_COOKIE, "")
    await accounts.mark_reauthenticated(pool, token)
    await access.audit(request, "reauth.success", detail={"method": "totp" if code else "password"})
    return True


async def reauth_page(request: web.Request, error: str | None = None) -> web.Response:
    session = auth.require_session(request)
    enabled, _ = await accounts.totp_state(request.app[POOL], session.user.id)
    return render(
        request,
        "reauth.html",
        status=401 if error else 200,
        error=error,
        totp_enabled=enabled,
        next=_safe_next(request.query.get("next")),
    )


async def reauth_submit(request: web.Request) -> web.Response:
    form = await request.post()
    ok = await _check_reauth(
        request,
        _form_str(form, "password", accounts.MAX_PASSWORD_LENGTH),
        _form_str(form, "code", 20),
    )
    if not ok:
        return await reauth_page(request, _t(request)["acct.reauth.wrong"])
    raise web.HTTPSeeOther(_safe_next(_form_str(form, "next", 2000)))


async def api_reauth(request: web.Request) -> web.Response:
    """{"password": …} or {"code": …}: for pages that ask inline (the terminal)."""
    if access.via_token(request):
        raise web.HTTPForbidden(
            text='{"error": "API tokens cannot re-authenticate"}', content_type="application/json"
        )
    try:
        body = await request.json()
    except ValueError:
        body = None
    if not isinstance(body, dict):
        raise web.HTTPBadRequest(
            text='{"error": "expected a JSON object"}', content_type="application/json"
        )
    password, code = body.get("password"), body.get("code")
    ok = await _check_reauth(
        request,
        password[: accounts.MAX_PASSWORD_LENGTH] if isinstance(password, str) else "",
        code[:20] if isinstance(code, str) else "",
    )
    if not ok:
        return web.json_response({"error": "wrong password or code"}, status=401)
    return web.json_response({"ok": True, "valid_for": request.app[CONFIG].reauth_ttl})


async def _step_up_or_back(request: web.Request, back: str) -> accounts.User:
    """Like access.require_step_up, but a form post goes to /reauth and then back to `back`."""
    user = access.require_user(request)
    if not access.step_up_fresh(request):
        raise web.HTTPSeeOther("/reauth?" + urllib.parse.urlencode({"next": back}))
    return user


# ---------------------------------------------------------------- own account


def _qr_data_uri(uri: str) -> str:
    import segno

    data: str = segno.make(uri, error="m").svg_data_uri(scale=5, border=2, light="#fff")
    return data


async def account_page(
    request: web.Request,
    *,
    error: str | None = None,
    new_token: str | None = None,
    status: int = 200,
) -> web.Response:
    session = auth.require_session(request)
    pool = request.app[POOL]
    info = await accounts.get_user(pool, session.user.id)
    assert info is not None
    enabled, secret = await accounts.totp_state(pool, info.id)
    enrol = None
    if secret and not enabled:
        uri = totp.provisioning_uri(secret, info.username)
        enrol = {"secret": secret, "uri": uri, "qr": _qr_data_uri(uri)}
    visible = await access.request_visible_ids(request)
    return render(
        request,
        "account.html",
        status=status,
        info=info,
        totp_enabled=enabled,
        enrol=enrol,
        tokens=await tokens.list_tokens(pool, info.id),
        sessions=await accounts.list_sessions(
            pool, info.id, request.cookies.get(auth.SESSION_COOKIE)
        ),
        new_token=new_token,
        expiry_days=TOKEN_EXPIRY_DAYS,
        visible_count=None if visible is None else len(visible),
        now=datetime.now(UTC),
        error=error,
        done=_done(request),
    )


async def account_password(request: web.Request) -> web.Response:
    session = auth.require_session(request)
    form = await request.post()
    t = _t(request)
    current = _form_str(form, "current", accounts.MAX_PASSWORD_LENGTH)
    new = _form_str(form, "new", accounts.MAX_PASSWORD_LENGTH + 1)
    if not await _check_reauth(request, current, ""):
        return await account_page(request, error=t["acct.password.wrong_current"], status=401)
    if new != _form_str(form, "repeat", accounts.MAX_PASSWORD_LENGTH + 1):
        return await account_page(request, error=t["acct.password.mismatch"], status=400)
    try:
        await accounts.set_password(
            request.app[POOL],
            session.user.id,
            new,
            keep_session=request.cookies.get(auth.SESSION_COOKIE),
        )
    except AccountError as err:
        return await account_page(request, error=str(err), status=400)
    await access.audit(request, "user.password", detail={"user": session.user.username})
    raise _redirect("/account", "password")


async def account_totp_begin(request: web.Request) -> web.Response:
    session = auth.require_session(request)
    await _step_up_or_back(request, "/account")
    try:
        await accounts.begin_totp(request.app[POOL], session.user.id)
    except AccountError as err:
        return await account_page(request, error=str(err), status=409)
    raise web.HTTPSeeOther("/account#totp")


async def account_totp_enable(request: web.Request) -> web.Response:
    session = auth.require_session(request)
    form = await request.post()
    try:
        ok = await accounts.enable_totp(
            request.app[POOL], session.user.id, _form_str(form, "code", 20), auth.now()
        )
    except AccountError as err:
        return await account_page(request, error=str(err), status=409)
    if not ok:
        return await account_page(request, error=_t(request)["acct.totp.wrong"], status=400)
    await access.audit(request, "totp.enable", detail={"user": session.user.username})
    raise _redirect("/account", "totp_on")


async def account_totp_disable(request: web.Request) -> web.Response:
    session = auth.require_session(request)
    await _step_up_or_back(request, "/account")
    enabled, _ = await accounts.totp_state(request.app[POOL], session.user.id)
    await accounts.disable_totp(request.app[POOL], session.user.id)
    if enabled:
        await access.audit(request, "totp.disable", detail={"user": session.user.username})
    raise _redirect("/account", "totp_off")


async def account_end_other_sessions(request: web.Request) -> web.Response:
    session = auth.require_session(request)
    ended = await accounts.end_other_sessions(
        request.app[POOL], session.user.id, request.cookies.get(auth.SESSION_COOKIE, "")
    )
    await access.audit(
        request, "session.end_others", detail={"user": session.user.username, "ended": ended}
    )
    raise _redirect("/account#sessions", "sessions_ended")


def _expiry(form: Mapping[str, Any]) -> datetime | None:
    days = _form_str(form, "expires_days", 5)
    if days not in TOKEN_EXPIRY_DAYS:
        raise AccountError("choose an expiry from the list")
    return datetime.now(UTC) + timedelta(days=int(days)) if days else None


async def account_token_create(request: web.Request) -> web.Response:
    session = auth.require_session(request)
    # A stolen session must not turn into a long-lived token without the password.
    await _step_up_or_back(request, "/account#tokens")
    form = await request.post()
    try:
        created, secret = await tokens.create_token(
            request.app[POOL], session.user.id, _form_str(form, "name", 200), _expiry(form)
        )
    except AccountError as err:
        return await account_page(request, error=str(err), status=400)
    await access.audit(
        request,
        "token.create",
        detail={"user": session.user.username, "token_id": created.id, "name": created.name},
    )
    # Shown in this answer only: never stored, never in a URL.
    response = await account_page(request, new_token=secret)
    response.headers["Cache-Control"] = "no-store"
    return response


async def account_token_revoke(request: web.Request) -> web.Response:
    session = auth.require_session(request)
    token_id = int(request.match_info["tid"])
    if not await tokens.revoke_token(request.app[POOL], token_id, user_id=session.user.id):
        raise web.HTTPNotFound(text="no such token")
    await access.audit(
        request, "token.revoke", detail={"user": session.user.username, "token_id": token_id}
    )
    raise _redirect("/account#tokens", "token_revoked")


# ---------------------------------------------------------------- user management (admins)


def _admin(request: web.Request) -> accounts.Session:
    access.require_role(request, "admin")
    return auth.require_session(request)


def _user_id(request: web.Request) -> int:
    return int(request.match_info["id"])


async def _known_groups(request: web.Request) -> list[str]:
    rows = await request.app[POOL].fetch(
        "SELECT DISTINCT group_name FROM servers WHERE group_name <> ''"
        " UNION SELECT group_name FROM user_group_grants ORDER BY 1"
    )
    return [r["group_name"] for r in rows]


async def users_page(
    request: web.Request,
    *,
    error: str | None = None,
    values: Mapping[str, str] | None = None,
    status: int = 200,
) -> web.Response:
    _admin(request)
    pool = request.app[POOL]
    users = await accounts.list_users(pool)
    access_of: dict[int, grants.Grants | None] = {}
    for info in users:
        if info.role == "admin" or info.all_servers:
            access_of[info.id] = None
        else:
            access_of[info.id] = await grants.get_grants(pool, info.id)
    return render(
        request,
        "users.html",
        status=status,
        users=users,
        access_of=access_of,
        roles=ROLES,
        error=error,
        values=values or {"role": "viewer"},
        done=_done(request),
    )


async def users_add(request: web.Request) -> web.Response:
    _admin(request)
    await _step_up_or_back(request, "/users")
    form = await request.post()
    name = _form_str(form, "username", 100).strip()
    role = _form_str(form, "role", 20)
    password = _form_str(form, "password", accounts.MAX_PASSWORD_LENGTH + 1)
    try:
        created = await accounts.create_user(request.app[POOL], name, password, role)
    except AccountError as err:
        return await users_page(
            request, error=str(err), values={"username": name, "role": role}, status=400
        )
    await access.audit(
        request, "user.create", detail={"user": created.username, "role": created.role}
    )
    raise _redirect(f"/users/{created.id}", "user_added")


async def user_page(
    request: web.Request, *, error: str | None = None, status: int = 200
) -> web.Response:
    session = _admin(request)
    user_id = _user_id(request)
    await _step_up_or_back(request, f"/users/{user_id}")
    pool = request.app[POOL]
    info = await accounts.get_user(pool, user_id)
    if info is None:
        raise web.HTTPNotFound(text="no such user")
    servers = await pool.fetch("SELECT id, name, group_name FROM servers ORDER BY name, id")
    return render(
        request,
        "user_edit.html",
        status=status,
        info=info,
        is_self=info.id == session.user.id,
        roles=ROLES,
        user_grants=await grants.get_grants(pool, user_id),
        servers=servers,
        groups=await _known_groups(request),
        tokens=await tokens.list_tokens(pool, user_id),
        now=datetime.now(UTC),
        error=error,
        done=_done(request),
    )


async def _target(request: web.Request) -> tuple[accounts.Session, accounts.UserInfo]:
    session = _admin(request)
    user_id = _user_id(request)
    await _step_up_or_back(request, f"/users/{user_id}")
    info = await accounts.get_user(request.app[POOL], user_id)
    if info is None:
        raise web.HTTPNotFound(text="no such user")
    return session, info


async def user_role(request: web.Request) -> web.Response:
    _, info = await _target(request)
    role = _form_str(await request.post(), "role", 20)
    try:
        await accounts.set_role(request.app[POOL], info.id, role)
    except AccountError as err:
        return await user_page(request, error=str(err), status=400)
    await access.audit(
        request, "user.role", detail={"user": info.username, "from": info.role, "to": role}
    )
    raise _redirect(f"/users/{info.id}", "role")


async def user_state(request: web.Request) -> web.Response:
    session, info = await _target(request)
    disable = _form_str(await request.post(), "disabled", 5) == "1"
    if disable and info.id == session.user.id:
        return await user_page(request, error=_t(request)["acct.users.not_self"], status=400)
    try:
        await accounts.set_disabled(request.app[POOL], info.id, disable)
    except AccountError as err:
        return await user_page(request, error=str(err), status=400)
    action = "disable" if disable else "enable"
    await access.audit(request, f"user.{action}", detail={"user": info.username})
    raise _redirect(f"/users/{info.id}", f"{action}d")


async def user_password(request: web.Request) -> web.Response:
    session, info = await _target(request)
    password = _form_str(await request.post(), "password", accounts.MAX_PASSWORD_LENGTH + 1)
    keep = request.cookies.get(auth.SESSION_COOKIE) if info.id == session.user.id else None
    try:
        await accounts.set_password(request.app[POOL], info.id, password, keep_session=keep)
    except AccountError as err:
        return await user_page(request, error=str(err), status=400)
    await access.audit(request, "user.password", detail={"user": info.username, "reset": True})
    raise _redirect(f"/users/{info.id}", "reset")


async def user_access(request: web.Request) -> web.Response:
    _, info = await _target(request)
    form = await request.post()
    server_ids = []
    for value in form.getall("server", []):
        if not isinstance(value, str) or not value.isdigit() or len(value) > 9:
            return await user_page(request, error="bad server id", status=400)
        server_ids.append(int(value))
    groups = [g for g in form.getall("group", []) if isinstance(g, str)]
    extra = _form_str(form, "new_group", 300).strip()
    if extra:
        groups.append(extra)
    try:
        before, after = await grants.set_grants(
            request.app[POOL],
            info.id,
            all_servers=_form_str(form, "all_servers", 5) == "1",
            server_ids=server_ids,
            groups=groups,
        )
    except AccountError as err:
        return await user_page(request, error=str(err), status=400)
    await access.audit(
        request,
        "user.grants",
        detail={
            "user": info.username,
            "before": _grants_json(before),
            "after": _grants_json(after),
        },
    )
    raise _redirect(f"/users/{info.id}", "access")


def _grants_json(g: grants.Grants) -> dict[str, Any]:
    return {
        "all_servers": g.all_servers,
        "servers": sorted(g.server_ids),
        "groups": sorted(g.groups),
    }


async def user_totp_disable(request: web.Request) -> web.Response:
    """A lost phone: an admin turns the user's TOTP off; they may enrol again."""
    _, info = await _target(request)
    await accounts.disable_totp(request.app[POOL], info.id)
    await access.audit(request, "totp.disable", detail={"user": info.username})
    raise _redirect(f"/users/{info.id}", "totp_off")


async def user_delete(request: web.Request) -> web.Response:
    session, info = await _target(request)
    if info.id == session.user.id:
        return await user_page(request, error=_t(request)["acct.users.not_self"], status=400)
    try:
        await accounts.delete_user(request.app[POOL], info.id)
    except AccountError as err:
        return await user_page(request, error=str(err), status=400)
    await access.audit(request, "user.delete", detail={"user": info.username, "role": info.role})
    raise _redirect("/users", "deleted")


async def user_token_revoke(request: web.Request) -> web.Response:
    _, info = await _target(request)
    token_id = int(request.match_info["tid"])
    if not await tokens.revoke_token(request.app[POOL], token_id, user_id=info.id):
        raise web.HTTPNotFound(text="no such token")
    await access.audit(
        request, "token.revoke", detail={"user": info.username, "token_id": token_id}
    )
    raise _redirect(f"/users/{info.id}", "token_revoked")


async def api_users(request: web.Request) -> web.Response:
    access.require_role(request, "admin")
    pool = request.app[POOL]
    out = []
    for info in await accounts.list_users(pool):
        g = await grants.get_grants(pool, info.id)
        out.append(
            {
                "id": info.id,
                "username": info.username,
                "role": info.role,
                "disabled": info.disabled,
                "totp": info.totp_enabled,
                "created_at": info.created_at.isoformat(),
                "access": "all" if info.role == "admin" else _grants_json(g),
            }
        )
    return web.json_response({"users": out})


# ---------------------------------------------------------------- audit log (admins)


def _audit_query(request: web.Request) -> audit.AuditQuery:
    q = request.query

    def text(name: str) -> str | None:
        value = q.get(name, "").strip()
        return value[:100] or None

    def number(name: str) -> int | None:
        value = q.get(name, "")
        return int(value) if value.isdigit() and len(value) <= 18 else None

    def day(name: str, end: bool = False) -> datetime | None:
        value = q.get(name, "")
        try:
            parsed = datetime.strptime(value, "%Y-%m-%d").replace(tzinfo=UTC)
        except ValueError:
            return None
        return parsed + timedelta(days=1) if end else parsed

    outcome = q.get("outcome")
    return audit.AuditQuery(
        username=text("user"),
        action=text("action"),
        server_id=number("server"),
        success={"ok": True, "failed": False}.get(outcome or ""),
        since=day("since"),
        until=day("until", end=True),
        before_id=number("before"),
        limit=min(number("limit") or AUDIT_PAGE, audit.MAX_PAGE),
    )


async def audit_page(request: web.Request) -> web.Response:
    _admin(request)
    query = _audit_query(request)
    pool = request.app[POOL]
    entries = await audit.search(pool, query)
    older = None
    if len(entries) == query.limit:
        params = {k: v for k, v in request.query.items() if k != "before"}
        params["before"] = str(entries[-1].id)
        older = "/audit?" + urllib.parse.urlencode(params)
    servers = await pool.fetch("SELECT id, name FROM servers ORDER BY name, id")
    return render(
        request,
        "audit.html",
        entries=entries,
        actions=await audit.actions(pool),
        servers=servers,
        query=request.query,
        older=older,
    )


async def api_audit(request: web.Request) -> web.Response:
    access.require_role(request, "admin")
    entries = await audit.search(request.app[POOL], _audit_query(request))
    return web.json_response({"entries": [e.as_json() for e in entries]})


# ---------------------------------------------------------------- who am I


async def api_me(request: web.Request) -> web.Response:
    """Who the request is authenticated as: scripts check their token with this."""
    user = access.require_user(request)
    visible = await access.request_visible_ids(request)
    return web.json_response(
        {
            "id": user.id,
            "username": user.username,
            "role": user.role,
            "via_token": access.via_token(request),
            "servers": None if visible is None else sorted(visible),
        }
    )
