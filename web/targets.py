"""The targets list as JSON for the UI: GET /api/targets (issue #4).

Every target's source, labels, health, last scrape, duration, last error and last backfill,
limited to the servers the user may see; and for admins, every target source (collector.yml,
each target file, the database) with its error, as those name files and addresses of the
whole fleet. The status comes from a `TargetStatusProvider` (the scraper) set on the app by
run_collector; an app built without one (tests of other pages) answers with empty lists.
"""

from __future__ import annotations

from typing import Any

from aiohttp import web

from vpsmon.collector.scrape.status import TargetStatusProvider
from vpsmon.web import access
from vpsmon.web.dashboard import visible_ids

TARGET_STATUS = web.AppKey("target_status", TargetStatusProvider)


def setup(app: web.Application) -> None:
    app.router.add_get("/api/targets", api_targets)


async def api_targets(request: web.Request) -> web.Response:
    user = access.require_user(request)
    provider = request.app.get(TARGET_STATUS)
    body: dict[str, Any] = {"targets": [], "sources": []}
    if provider is not None:
        visible = await visible_ids(request)
        body["targets"] = [t.as_json() for t in provider.target_status() if t.server_id in visible]
        if access.role_allows(user.role, "admin"):
            body["sources"] = [s.as_json() for s in provider.source_status()]
    return web.json_response(body)
