"""Accounts in the web UI and API: who am I, own account, user management, audit log."""

from __future__ import annotations

from aiohttp import web

from vpsmon.web import access


def setup(app: web.Application) -> None:
    app.router.add_get("/api/me", api_me)


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
