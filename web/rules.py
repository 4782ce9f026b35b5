"""The rules page: groups, rules, their state and health, the alerts they produce, rule files
that failed to load, and a builder that writes a valid alerting rule (issue #8 items 4, 6).

Pages: ``GET /rules``, ``GET/POST /rules/new`` (the builder). API: ``GET /api/rules`` (groups
and alerts as Prometheus shows them, plus ``errors``: rule files that failed to load).
Everyone logged in sees every rule; alerts are limited to the servers the user may see.
Saving a built rule needs the admin role and the session's CSRF token (checked by the session
middleware), and is written to the audit log.
"""

from __future__ import annotations

import logging
from typing import Any

from aiohttp import web

from vpsmon.collector import audit
from vpsmon.collector.accounts import User, role_allows
from vpsmon.collector.rules.builder import (
    CONDITIONS,
    METRICS,
    SEVERITIES,
    BuilderError,
    add_to_file,
    build_rule,
)
from vpsmon.collector.rules.durations import format_duration
from vpsmon.collector.servers import list_servers, to_targets
from vpsmon.web import access
from vpsmon.web.keys import POOL, RULES

log = logging.getLogger("vpsmon.web.rules")


def setup(app: web.Application) -> None:
    app.router.add_get("/rules", rules_page)
    app.router.add_get("/rules/new", builder_page)
    app.router.add_post("/rules/new", builder_submit)
    app.router.add_get("/api/rules", api_rules)


def _view(request: web.Request) -> Any:
    return request.app.get(RULES)


async def _data(request: web.Request) -> dict[str, Any]:
    visible = await access.request_visible_ids(request)
    view = _view(request)
    if view is None:
        return {"groups": [], "alerts": [], "errors": {}}
    return {
        "groups": view.rule_groups(visible),
        "alerts": view.alerts(visible),
        "errors": view.file_errors(),
    }


async def api_rules(request: web.Request) -> web.Response:
    access.require_user(request)
    return web.json_response(await _data(request))


def _summary(data: dict[str, Any]) -> dict[str, int]:
    counts = {"firing": 0, "pending": 0, "rules": 0, "errors": 0}
    for group in data["groups"]:
        for rule in group["rules"]:
            counts["rules"] += 1
            counts["errors"] += rule["health"] == "err"
    for alert in data["alerts"]:
        counts[alert["state"]] = counts.get(alert["state"], 0) + 1
    return counts


async def rules_page(request: web.Request) -> web.Response:
    from vpsmon.web.app import render  # web.app imports this module

    user = access.require_user(request)
    data = await _data(request)
    return render(
        request,
        "rules.html",
        data=data,
        summary=_summary(data),
        can_build=role_allows(user.role, "admin"),
        saved=request.query.get("saved", "")[:100],
        duration=format_duration,
    )


async def _server_choices(request: web.Request) -> list[tuple[str, str]]:
    visible = await access.request_visible_ids(request)
    servers = await list_servers(request.app[POOL])
    targets = {t.server_id: t.instance for t in to_targets(servers, 1.0, 1.0)}
    return [
        (targets[s.id], s.name)
        for s in servers
        if s.id in targets and (visible is None or s.id in visible)
    ]


async def _builder(
    request: web.Request,
    values: dict[str, Any],
    errors: dict[str, str] | None = None,
    preview: str = "",
    status: int = 200,
) -> web.Response:
    from vpsmon.web.app import render

    return render(
        request,
        "rules_builder.html",
        status=status,
        values=values,
        errors=errors or {},
        preview=preview,
        metrics=list(METRICS),
        conditions=CONDITIONS,
        severities=SEVERITIES,
        servers=await _server_choices(request),
    )


async def builder_page(request: web.Request) -> web.Response:
    access.require_role(request, "admin")
    values = {"metric": "cpu_percent", "condition": ">", "threshold": "90", "for": "5m"}
    return await _builder(request, {**values, "severity": "warning", "servers": []})


async def builder_submit(request: web.Request) -> web.Response:
    user = access.require_role(request, "admin")
    form = await request.post()
    values: dict[str, Any] = {
        k: str(form.get(k, ""))[:300]
        for k in ("name", "metric", "condition", "threshold", "for", "severity")
    }
    chosen = [str(v) for v in form.getall("servers", [])]
    values["servers"] = chosen
    allowed = {instance for instance, _ in await _server_choices(request)}
    if any(c not in allowed for c in chosen):
        return await _builder(request, values, {"servers": "builder.error.servers"}, status=400)
    try:
        rule = build_rule(values, chosen)
    except BuilderError as err:
        return await _builder(request, values, err.errors, status=400)
    if form.get("action") != "save":
        return await _builder(request, values, preview=rule.yaml())
    view = _view(request)
    path = getattr(view, "builder_file", None)
    if path is None:
        return await _builder(request, values, {"name": "builder.error.nofile"}, rule.yaml(), 409)
    try:
        add_to_file(path, rule)
    except BuilderError as err:
        return await _builder(request, values, err.errors, rule.yaml(), 400)
    except OSError as err:
        log.error("cannot write the builder's rule file path=%s error=%s", path, err)
        return await _builder(request, values, {"name": "builder.error.write"}, rule.yaml(), 500)
    await _audit(request, user, rule.name, str(path))
    view.manager.request_reload()
    raise web.HTTPFound(f"/rules?saved={rule.name}")


async def _audit(request: web.Request, user: User, rule: str, path: str) -> None:
    await audit.record(
        request.app[POOL],
        "rule.add",
        user=user,
        address=request.remote,
        detail={"rule": rule, "file": path},
    )
