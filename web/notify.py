"""Notifications in the UI and the JSON API (issue #6): channels, routing, silences, alerts,
the notification log.

Who may do what (docs/notifications.md, "Security"): admins manage channels (each one is an
outbound request target: SSRF), the routing tree and subscriptions; operators and admins
create and expire silences and send tests; every signed-in user reads alerts, silences and the
log. Secrets in channel settings are never sent back to the browser.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator

from aiohttp import web

from vpsmon.collector.notify.service import NotifyService
from vpsmon.web.keys import CONFIG, HEAD, POOL, TRAFFIC

NOTIFY = web.AppKey("notify", NotifyService)


def setup(app: web.Application, service: NotifyService | None) -> None:
    """Register the routes; without a service (web tests), run one for the app's lifetime."""
    if service is not None:
        app[NOTIFY] = service
    else:
        app.cleanup_ctx.append(_own_service)
    app.on_startup.append(_connect_traffic)


async def _own_service(app: web.Application) -> AsyncIterator[None]:
    service = NotifyService(app[POOL], app[CONFIG])
    app[NOTIFY] = service
    async with service.running(app[HEAD]):
        yield


async def _connect_traffic(app: web.Application) -> None:
    with contextlib.suppress(KeyError):
        app[NOTIFY].usage = app[TRAFFIC].usage
