"""GET /api/storage: the writer's and the spool's health, and how far maintenance has got.

Shown to every logged-in user (it names no server); the UI can warn when the database is
away or the spool fills up.
"""

from __future__ import annotations

from aiohttp import web

from vpsmon.collector.storage import store
from vpsmon.web import access
from vpsmon.web.keys import POOL, WRITER


def setup(app: web.Application) -> None:
    app.router.add_get("/api/storage", storage_health)


async def storage_health(request: web.Request) -> web.Response:
    access.require_user(request)
    writer = request.app.get(WRITER)
    body: dict[str, object] = {"writer": writer.health() if writer is not None else None}
    try:
        async with request.app[POOL].acquire() as conn:
            compacted, daily = await store.marks(conn)
        body["compacted_until"] = compacted or None
        body["rolled_up_until"] = daily or None
    except Exception as err:  # the database may be away: that is what this page is for
        body["database_error"] = str(err).splitlines()[0] if str(err) else type(err).__name__
    return web.json_response(body)
