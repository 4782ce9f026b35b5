"""A server's detail page: live and historical charts, host information, records, containers.

``GET /servers/{id}`` renders the page; ``GET /api/servers/{id}/history`` answers one range
(``range=1h|6h|24h|7d|30d``, or ``start``/``end`` in Unix seconds) with every chart in one
JSON document; ``GET /api/servers/{id}/containers`` lists the containers the exporter reports.
Live points arrive over the page's one WebSocket (/api/live, ``{"watch": id}``).
"""

from __future__ import annotations

import math
from datetime import UTC, date, datetime
from typing import Any

from aiohttp import web

from vpsmon.collector import servers as records
from vpsmon.collector.accounts import role_allows
from vpsmon.collector.fleet.agents import agent_enrolment
from vpsmon.collector.head import ServerState
from vpsmon.web import access, auth
from vpsmon.web.dashboard import server_id_param, visible_ids
from vpsmon.web.history import MAX_RANGE_SECONDS, history
from vpsmon.web.keys import CHARTS, CONFIG, HEAD, HUB, POOL, TRAFFIC

RANGES = {"1h": 3600, "6h": 6 * 3600, "24h": 86400, "7d": 7 * 86400, "30d": 30 * 86400}


def setup(app: web.Application) -> None:
    app.router.add_get(r"/servers/{id:\d+}", detail_page)
    app.router.add_get(r"/api/servers/{id:\d+}/history", api_history)
    app.router.add_get(r"/api/servers/{id:\d+}/containers", api_containers)


async def _visible_server(request: web.Request) -> records.Server:
    server_id = server_id_param(request)
    if server_id not in await visible_ids(request):
        raise web.HTTPNotFound(text="no such server")
    server = await records.get_server(request.app[POOL], server_id)
    if server is None:
        raise web.HTTPNotFound(text="no such server")
    return server


def days_left(expires: date | None, today: date) -> int | None:
    return None if expires is None else (expires - today).days


async def detail_page(request: web.Request) -> web.Response:
    from vpsmon.web.app import render  # web.app imports this module

    user = access.require_user(request)
    server = await _visible_server(request)
    state = request.app[HEAD].state(server.id)
    live = (
        request.app[HUB].summary(state)
        if state
        else {"online": False, "last_seen": server.last_seen}
    )
    usage = request.app[TRAFFIC].usage(server.id, auth.now())
    # Management features enabled for this server, for the operators who may use them.
    agent = (
        await agent_enrolment(request.app[POOL], server.id)
        if role_allows(user.role, "operator")
        else None
    )
    features = agent.features if agent else frozenset()
    return render(
        request,
        "detail.html",
        server=server,
        record=server.as_json(),
        live=live,
        traffic=usage.as_json() if usage else None,
        can_edit=user.role == "admin",
        can_terminal="pty" in features,
        can_files="files" in features,
        ranges=list(RANGES),
        days_left=days_left(server.expires_on, datetime.now(UTC).date()),
    )


def _bad(message: str) -> web.HTTPBadRequest:
    return web.HTTPBadRequest(text=f'{{"error": "{message}"}}', content_type="application/json")


def parse_range(query: dict[str, str] | Any, now: float) -> tuple[float, float]:
    """(start, end) from ``range`` or ``start``/``end``; raises HTTPBadRequest with a reason."""
    name = query.get("range")
    if name is not None:
        if name not in RANGES:
            raise _bad(f"range must be one of {', '.join(RANGES)}")
        return now - RANGES[name], now
    try:
        start = float(query["start"])
        end = float(query.get("end", now))
    except (KeyError, ValueError):
        raise _bad("give range, or start and end as Unix seconds") from None
    if not (math.isfinite(start) and math.isfinite(end)) or end <= start:
        raise _bad("start must be before end")
    if end - start > MAX_RANGE_SECONDS:
        raise _bad("at most 400 days at once")
    return start, min(end, now + 60)


async def api_history(request: web.Request) -> web.Response:
    server = await _visible_server(request)
    start, end = parse_range(request.query, auth.now())
    data = await history(
        request.app[CHARTS], server.id, start, end, request.app[CONFIG].scrape_interval
    )
    return web.json_response(data, headers={"Cache-Control": "no-store"})


def containers(state: ServerState | None) -> list[dict[str, Any]]:
    """Containers from cAdvisor's series and vpsmon_container_info in the last two scrapes."""
    if state is None or state.current is None:
        return []
    cur, prev = state.current, state.previous
    found: dict[str, dict[str, Any]] = {}

    def entry(labels: dict[str, str]) -> dict[str, Any] | None:
        name = labels.get("name") or labels.get("container") or ""
        if not name:
            return None
        return found.setdefault(
            name, {"name": name, "image": "", "state": "", "cpu": None, "memory": None}
        )

    for labels, _ in cur.matching("vpsmon_container_info"):
        d = dict(labels)
        e = entry(d)
        if e is not None:
            e["image"] = d.get("image", "")
            e["state"] = d.get("state", "")
    for labels, value in cur.matching("container_memory_usage_bytes"):
        e = entry(dict(labels))
        if e is not None:
            e["memory"] = value
    elapsed = cur.timestamp - prev.timestamp if prev else 0
    for labels, value in cur.matching("container_cpu_usage_seconds_total"):
        e = entry(dict(labels))
        before = prev.values.get(("container_cpu_usage_seconds_total", labels)) if prev else None
        if e is not None and before is not None and elapsed > 0:
            e["cpu"] = max(0.0, (value - before if value >= before else value) / elapsed)
    for e in found.values():
        if not e["state"]:
            e["state"] = "running" if e["memory"] is not None else "unknown"
    return sorted(found.values(), key=lambda e: (e["state"] != "running", e["name"]))


async def api_containers(request: web.Request) -> web.Response:
    server = await _visible_server(request)
    return web.json_response({"containers": containers(request.app[HEAD].state(server.id))})
