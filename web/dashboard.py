"""Helpers shared by the dashboard's pages (overview, server records, detail, status page).

Access: `visible_ids` asks web/access.py (per-server grants); only admins change records
(`require_editor`).
"""

from __future__ import annotations

from collections.abc import Mapping

from aiohttp import web

from vpsmon.collector.accounts import User
from vpsmon.collector.servers import InvalidServer
from vpsmon.web import access
from vpsmon.web.i18n import messages, pick_language
from vpsmon.web.keys import POOL


def texts_for(request: web.Request | None) -> Mapping[str, str]:
    """The UI strings in the request's language (English for the JSON API)."""
    if request is None:
        return messages()["en"]
    lang = pick_language(request.cookies.get("lang"), request.headers.get("Accept-Language"))
    return messages()[lang]


def error_texts(err: InvalidServer, texts: Mapping[str, str]) -> dict[str, str]:
    """{field: message}; the first error of each field."""
    out: dict[str, str] = {}
    for e in err.errors:
        out.setdefault(e.field, texts[e.code].format(**e.params))
    return out


def require_editor(request: web.Request) -> User:
    """Only admins add, change or delete server records (a session or an API token)."""
    return access.require_role(request, "admin")


def server_id_param(request: web.Request) -> int:
    text = request.match_info["id"]
    if not text.isdigit() or len(text) > 9:  # the column is a 32-bit serial
        raise web.HTTPNotFound(text="no such server")
    return int(text)


async def visible_ids(request: web.Request) -> set[int]:
    """Ids of the servers the signed-in user may see (read afresh: sockets live long)."""
    user = access.require_user(request)
    visible = await access.visible_server_ids(request.app[POOL], user)
    if visible is not None:
        return set(visible)
    rows = await request.app[POOL].fetch("SELECT id FROM servers")
    return {r["id"] for r in rows}
