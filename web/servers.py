"""Server records in the UI and the JSON API: add, edit, delete (issue #5 item 4).

Pages: ``GET/POST /servers/new``, ``GET/POST /servers/{id}/edit``, ``POST /servers/{id}/delete``.
API: ``GET /api/servers`` (with live figures, in web/app.py), ``POST /api/servers``,
``GET/PUT/PATCH/DELETE /api/servers/{id}``. Every state change needs the admin role and, from
a browser session, its CSRF token (API tokens need none); a user only reads the servers granted
to them. Changes are written to the audit log (server.create, server.update, server.delete).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable
from typing import Any

from aiohttp import web

from vpsmon.collector import servers as records
from vpsmon.collector.fleet.agents import FEATURES, EnrolmentError
from vpsmon.collector.servers import InvalidServer, Server
from vpsmon.config import format_duration
from vpsmon.web import access
from vpsmon.web.dashboard import (
    error_texts,
    require_editor,
    server_id_param,
    texts_for,
    visible_ids,
)
from vpsmon.web.keys import HEAD, HUB, POOL, TRAFFIC

log = logging.getLogger("vpsmon.web.servers")

GIB = 2**30


def setup(app: web.Application) -> None:
    app.router.add_get("/servers/new", new_page)
    app.router.add_post("/servers/new", new_submit)
    app.router.add_get(r"/servers/{id:\d+}/edit", edit_page)
    app.router.add_post(r"/servers/{id:\d+}/edit", edit_submit)
    app.router.add_post(r"/servers/{id:\d+}/delete", delete_submit)
    app.router.add_post("/api/servers", api_create)
    app.router.add_get(r"/api/servers/{id:\d+}", api_get)
    app.router.add_put(r"/api/servers/{id:\d+}", api_replace)
    app.router.add_patch(r"/api/servers/{id:\d+}", api_patch)
    app.router.add_delete(r"/api/servers/{id:\d+}", api_delete)


# ---------------------------------------------------------------- form <-> record


def form_values(server: Server | None) -> dict[str, str]:
    """What the edit form shows for a record (or the defaults for a new one)."""
    if server is None:
        return {
            "scheme": "http",
            "metrics_port": str(records.DEFAULT_METRICS_PORT),
            "metrics_path": "/metrics",
            "traffic_reset_day": "1",
            "traffic_mode": "sum",
        }
    d = server.as_json()
    quota = server.traffic_quota_bytes
    out = {k: "" if v is None else str(v) for k, v in d.items() if not isinstance(v, list | dict)}
    out["tags"] = ", ".join(server.tags)
    out["labels"] = "\n".join(f"{k}={v}" for k, v in server.labels.items())
    out["traffic_quota_gib"] = "" if quota is None else f"{quota / GIB:g}"
    out["public"] = "on" if server.public else ""
    for name in ("scrape_interval", "scrape_timeout"):
        seconds = getattr(server, name)
        out[name] = format_duration(seconds) if seconds else ""
    out["tls_fingerprint"] = server.tls_fingerprint or ""
    out.pop("bearer_token_set", None)  # the template reads server.has_bearer_token
    return out


FORM_FIELDS = (
    "name address scheme metrics_port metrics_path command_port group tags labels provider"
    " country_code region route purchase_url price currency billing_cycle expires_on"
    " traffic_quota_gib traffic_reset_day traffic_mode public notes"
    " scrape_interval scrape_timeout tls_fingerprint bearer_token"
).split()


async def _form_input(request: web.Request) -> dict[str, Any]:
    form = await request.post()
    values: dict[str, Any] = {name: str(form.get(name, "")) for name in FORM_FIELDS}
    # The token is never shown again: an empty field keeps it, the box removes it.
    if form.get("clear_bearer_token"):
        values["bearer_token"] = None
    elif not values["bearer_token"].strip():
        values.pop("bearer_token")
    return values


def _render_form(
    request: web.Request,
    server: Server | None,
    values: dict[str, Any],
    errors: dict[str, str] | None = None,
    status: int = 200,
    chosen: Iterable[str] = (),
) -> web.Response:
    from vpsmon.web.app import render  # web.app imports this module

    return render(
        request,
        "server_form.html",
        status=status,
        server=server,
        values=values,
        errors=errors or {},
        cycles=records.BILLING_CYCLES,
        modes=records.TRAFFIC_MODES,
        enrol_features=FEATURES,
        enrol_chosen=set(chosen),
    )


# ---------------------------------------------------------------- pages


async def new_page(request: web.Request) -> web.Response:
    require_editor(request)
    return _render_form(request, None, form_values(None))


async def new_submit(request: web.Request) -> web.Response:
    from vpsmon.web import enrol

    user = require_editor(request)
    values = await _form_input(request)
    form = await request.post()
    picked = [str(v) for v in form.getall("feature", [])]
    values["run_as"] = str(form.get("run_as", ""))
    try:
        # Checked before the server is made, so a bad choice changes nothing.
        features = enrol.checked_features(picked)
        run_as = enrol.checked_run_as(values["run_as"])
        roots = enrol.checked_file_roots(str(form.get("file_roots", "")))
    except EnrolmentError as err:
        return _render_form(request, None, values, {"run_as": str(err)}, 400, picked)
    try:
        record = records.validate({k: v for k, v in values.items() if k != "run_as"})
        server = await records.create_server(request.app[POOL], record)
    except InvalidServer as err:
        texts = texts_for(request)
        return _render_form(request, None, values, error_texts(err, texts), 400, picked)
    await _changed(request, server, "create", user.username)
    if not features:
        raise web.HTTPFound(f"/servers/{server.id}")
    # Management ticked: the one-line install-and-enrol command, shown once.
    issued = await enrol.issue(request, server, features, run_as, roots)
    return enrol.render_enrol(
        request, server, None, issued=issued, chosen=features, run_as=run_as or ""
    )


async def _load(request: web.Request) -> Server:
    server_id = server_id_param(request)
    if server_id not in await visible_ids(request):
        raise web.HTTPNotFound(text="no such server")
    server = await records.get_server(request.app[POOL], server_id)
    if server is None:
        raise web.HTTPNotFound(text="no such server")
    return server


async def edit_page(request: web.Request) -> web.Response:
    require_editor(request)
    server = await _load(request)
    return _render_form(request, server, form_values(server))


async def edit_submit(request: web.Request) -> web.Response:
    user = require_editor(request)
    server = await _load(request)
    values = await _form_input(request)
    try:
        updated = await records.update_server(
            request.app[POOL], server.id, records.validate(values)
        )
    except InvalidServer as err:
        texts = texts_for(request)
        return _render_form(request, server, values, error_texts(err, texts), 400)
    if updated is None:
        raise web.HTTPNotFound(text="no such server")
    await _changed(request, updated, "update", user.username, before=server)
    raise web.HTTPFound(f"/servers/{updated.id}")


async def delete_submit(request: web.Request) -> web.Response:
    user = require_editor(request)
    server = await _load(request)
    await _delete(request, server, user.username)
    raise web.HTTPFound("/")


# ---------------------------------------------------------------- JSON API


def _invalid(err: InvalidServer) -> web.HTTPBadRequest:
    errors = error_texts(err, texts_for(None))
    return web.HTTPBadRequest(
        text=json.dumps({"error": "invalid server", "fields": errors}),
        content_type="application/json",
    )


async def _json_body(request: web.Request) -> dict[str, Any]:
    try:
        body = await request.json()
    except (ValueError, UnicodeDecodeError):
        body = None
    if not isinstance(body, dict):
        raise web.HTTPBadRequest(
            text=json.dumps({"error": "expected a JSON object"}), content_type="application/json"
        )
    return body


async def api_get(request: web.Request) -> web.Response:
    server = await _load(request)
    return web.json_response({"server": server.as_json()})


async def api_create(request: web.Request) -> web.Response:
    user = require_editor(request)
    body = await _json_body(request)
    try:
        server = await records.create_server(request.app[POOL], records.validate(body))
    except InvalidServer as err:
        raise _invalid(err) from None
    await _changed(request, server, "create", user.username)
    return web.json_response({"server": server.as_json()}, status=201)


async def _update(request: web.Request, *, partial: bool) -> web.Response:
    user = require_editor(request)
    server = await _load(request)
    body = await _json_body(request)
    data = {**records.input_fields(server), **body} if partial else body
    try:
        updated = await records.update_server(request.app[POOL], server.id, records.validate(data))
    except InvalidServer as err:
        raise _invalid(err) from None
    if updated is None:
        raise web.HTTPNotFound(text="no such server")
    await _changed(request, updated, "update", user.username, before=server)
    return web.json_response({"server": updated.as_json()})


async def api_replace(request: web.Request) -> web.Response:
    return await _update(request, partial=False)


async def api_patch(request: web.Request) -> web.Response:
    return await _update(request, partial=True)


async def api_delete(request: web.Request) -> web.Response:
    user = require_editor(request)
    server = await _load(request)
    await _delete(request, server, user.username)
    return web.json_response({"deleted": server.id})


# ---------------------------------------------------------------- side effects


def _audit_detail(server: Server, before: Server | None) -> dict[str, Any]:
    after = records.input_fields(server)
    if before is None:
        return {"name": server.name, "url": server.url}
    old = records.input_fields(before)
    return {"changed": {k: [old.get(k), v] for k, v in after.items() if old.get(k) != v}}


async def _changed(
    request: web.Request, server: Server, action: str, who: str, before: Server | None = None
) -> None:
    from vpsmon.collector.traffic import Plan

    await access.audit(
        request, f"server.{action}", server_id=server.id, detail=_audit_detail(server, before)
    )

    request.app[TRAFFIC].set_plan(
        server.id,
        Plan(server.traffic_reset_day, server.traffic_mode, server.traffic_quota_bytes),  # type: ignore[arg-type]
    )
    request.app[HUB].broadcast(
        json.dumps({"type": "changed", "id": server.id}), server_id=server.id
    )
    log.info("server %s id=%d name=%r user=%s", action, server.id, server.name, who)


async def _delete(request: web.Request, server: Server, who: str) -> None:
    # Written first: the entry copies the server's name while the row still exists.
    await access.audit(
        request,
        "server.delete",
        server_id=server.id,
        detail={"name": server.name, "url": server.url},
    )
    await records.delete_server(request.app[POOL], server.id)
    request.app[HEAD].forget(server.id)
    request.app[HUB].forget(server.id)
    request.app[TRAFFIC].forget(server.id)
    request.app[HUB].broadcast(
        json.dumps({"type": "removed", "id": server.id}), server_id=server.id
    )
    log.info("server delete id=%d name=%r user=%s", server.id, server.name, who)
