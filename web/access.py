"""Who may do what, and where: the checks every web handler makes (issue #5).

    user = access.require_role(request, "operator")        # 401 logged out, 403 below operator
    await access.require_server(request, server_id)        # 404 unless the user may see it
    visible = await access.request_visible_ids(request)    # None = all; else a frozenset of ids
    await access.require_step_up(request)                  # 401 unless password/TOTP given lately
    await access.audit(request, "exec", server_id=server_id, detail={"command": cmd})

A request is authenticated by the session cookie (browsers; state changes need the CSRF
token) or by `Authorization: Bearer vpsmon_…` on /api/* (scripts; no CSRF token, since a
browser never sends that header on its own). Both give a `User` with the same role and access.
"""

from __future__ import annotations

import json
import urllib.parse
from collections.abc import Mapping
from typing import Any

import asyncpg
from aiohttp import web

from vpsmon.collector import accounts, tokens
from vpsmon.collector import audit as audit_log
from vpsmon.collector.access import can_see_server, is_visible, visible_server_ids
from vpsmon.collector.accounts import ROLES, User, role_allows
from vpsmon.web import auth
from vpsmon.web.keys import CONFIG, POOL

__all__ = [
    "ROLES",
    "audit",
    "can_see_server",
    "client_address",
    "current_user",
    "is_visible",
    "recheck_credentials",
    "request_visible_ids",
    "require_role",
    "require_server",
    "require_step_up",
    "require_user",
    "step_up_fresh",
    "visible_server_ids",
]

VISIBLE_KEY: web.RequestKey[frozenset[int] | None] = web.RequestKey("visible_server_ids")


def _wants_json(request: web.Request) -> bool:
    return request.path.startswith("/api/")


def _json_error(cls: type[web.HTTPException], message: str, **extra: Any) -> web.HTTPException:
    return cls(text=json.dumps({"error": message, **extra}), content_type="application/json")


def current_user(request: web.Request) -> User | None:
    """The logged-in user (session cookie or API token), or None."""
    user: User | None = request.get(auth.USER_KEY)
    return user


def via_token(request: web.Request) -> bool:
    return request.get(auth.TOKEN_KEY) is not None


def require_user(request: web.Request) -> User:
    """The user; else 401 JSON on /api/*, a redirect to /login on pages."""
    user = current_user(request)
    if user is None:
        if _wants_json(request):
            raise _json_error(web.HTTPUnauthorized, "login required")
        raise web.HTTPFound("/login")
    return user


def require_role(request: web.Request, role: str) -> User:
    """The user if their role is `role` or above (admin > operator > viewer); else 403."""
    user = require_user(request)
    if not role_allows(user.role, role):
        message = f"forbidden: this needs the {role} role"
        if _wants_json(request):
            raise _json_error(web.HTTPForbidden, message)
        raise web.HTTPForbidden(text=message)
    return user


async def request_visible_ids(request: web.Request) -> frozenset[int] | None:
    """visible_server_ids of the request's user, read once per request."""
    if VISIBLE_KEY in request:
        return request[VISIBLE_KEY]
    user = require_user(request)
    visible = await visible_server_ids(request.app[POOL], user)
    request[VISIBLE_KEY] = visible
    return visible


async def require_server(request: web.Request, server_id: int) -> User:
    """The user if they may see server `server_id`; else 404, the same answer as for a server
    that does not exist, so ids cannot be probed."""
    user = require_user(request)
    if not is_visible(await request_visible_ids(request), server_id):
        if _wants_json(request):
            raise _json_error(web.HTTPNotFound, "no such server")
        raise web.HTTPNotFound(text="no such server")
    return user


def step_up_fresh(request: web.Request) -> bool:
    """True when the user gave their password (or TOTP code) in this session lately."""
    session = auth.current_session(request)
    if session is None:
        return False
    return auth.now() - session.authenticated_at < request.app[CONFIG].reauth_ttl


async def require_step_up(request: web.Request) -> User:
    """Sensitive actions ask for the password or TOTP code again unless it was given in the
    last `web.reauth_ttl` (5 minutes): the terminal and commands (web/command.py, exec and
    pty), every file change made from a browser session (upload, editor save, mkdir, rename,
    delete, chmod; browsing and downloading do not ask) and Docker start, stop and restart
    made from a browser session (web/docker.py; viewing does not ask) -- both through
    web/command.py's open_agent_for_change, which lets API tokens make them without it --, and
    account, token and user management (web/users.py).

    API tokens cannot step up, so they cannot do these actions through the web: 403.
    Pages are redirected to /reauth?next=…; the API answers 401 {"error", "reauth": "/reauth"}.
    """
    user = require_user(request)
    if via_token(request):
        raise _json_error(
            web.HTTPForbidden, "this action needs a browser session with re-authentication"
        )
    if step_up_fresh(request):
        return user
    if _wants_json(request) or request.method not in auth.SAFE_METHODS:
        raise _json_error(web.HTTPUnauthorized, "re-authentication required", reauth="/reauth")
    raise web.HTTPFound("/reauth?" + urllib.parse.urlencode({"next": request.path_qs}))


async def recheck_credentials(request: web.Request) -> User | None:
    """Is the request's session or API token still valid (for long-lived sockets)?"""
    pool = request.app[POOL]
    if via_token(request):
        secret = request.headers.get("Authorization", "").partition(" ")[2].strip()
        found = await tokens.authenticate_token(pool, secret)
        return found[0] if found else None
    cookie = request.cookies.get(auth.SESSION_COOKIE)
    session = await accounts.load_session(pool, cookie) if cookie else None
    return session.user if session else None


def client_address(request: web.Request) -> str:
    return request.remote or "?"


async def audit(
    request: web.Request,
    action: str,
    *,
    server_id: int | None = None,
    success: bool = True,
    detail: Mapping[str, Any] | None = None,
    username: str | None = None,
    user: User | None = None,
    db: asyncpg.Pool | asyncpg.Connection | None = None,
) -> int:
    """Write an audit entry for this request's user and address; returns its id.

    Pass `db` (a connection in a transaction) to make the entry part of the change it
    records. An API token's id is added to the detail, so script actions can be traced.
    """
    full = dict(detail or {})
    token_id = request.get(auth.TOKEN_KEY)
    if token_id is not None:
        full.setdefault("api_token_id", token_id)
    return await audit_log.record(
        db if db is not None else request.app[POOL],
        action,
        user=user or current_user(request),
        username=username,
        server_id=server_id,
        address=client_address(request),
        success=success,
        detail=full,
    )
