"""The public status page (issue #5 item 5): off unless ``status_page.enabled``.

It shows the servers marked public, read-only and without login. Only what a visitor needs is
sent: name, location, group, online state and load figures. Never the address, URL, labels,
host name, kernel, price, provider, notes or errors (an error text can carry an address).
"""

from __future__ import annotations

from typing import Any

from aiohttp import web

from vpsmon.collector.servers import list_servers
from vpsmon.web import auth
from vpsmon.web.keys import CONFIG, HEAD, HUB, POOL

# The live figures a visitor may see; everything else in a summary stays private.
PUBLIC_FIGURES = (
    "online",
    "cpu",
    "cores",
    "memory_used",
    "memory_total",
    "disk_used",
    "disk_total",
    "load1",
    "net_rx",
    "net_tx",
    "uptime",
    "os",
)


def setup(app: web.Application) -> None:
    app.router.add_get("/status", status_page)
    app.router.add_get("/status/servers", status_json)


def _enabled(request: web.Request) -> None:
    if not request.app[CONFIG].status_page:
        raise web.HTTPNotFound(text="the status page is not enabled")


async def public_servers(request: web.Request) -> list[dict[str, Any]]:
    head = request.app[HEAD]
    out = []
    for position, server in enumerate(s for s in await list_servers(request.app[POOL]) if s.public):
        state = head.state(server.id)
        live = request.app[HUB].summary(state) if state else {"online": False}
        entry: dict[str, Any] = {
            "key": position,  # not the database id: visitors need no handle on records
            "name": server.name,
            "country_code": server.country_code,
            "region": server.region,
            "group": server.group_name,
        }
        entry.update({k: live.get(k) for k in PUBLIC_FIGURES})
        out.append(entry)
    return out


async def status_page(request: web.Request) -> web.Response:
    from vpsmon.web.app import render  # web.app imports this module

    _enabled(request)
    servers = await public_servers(request)
    down = sum(1 for s in servers if not s["online"])
    return render(
        request,
        "status.html",
        servers=servers,
        down=down,
        title=request.app[CONFIG].status_title,
        signed_in=auth.current_session(request) is not None,
    )


async def status_json(request: web.Request) -> web.Response:
    _enabled(request)
    return web.json_response(
        {"servers": await public_servers(request)}, headers={"Cache-Control": "no-store"}
    )
