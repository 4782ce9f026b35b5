"""Enrolling a server for management (issue #7): the one-line command with a one-time token.

Pages: ``GET/POST /servers/{id}/enrol`` (status, tick features, show the command),
``POST /servers/{id}/unenrol``. API: ``GET/POST/DELETE /api/servers/{id}/enrolment``.
Admins only (like every server record change), CSRF on browser posts, audited as
``agent.token`` and ``agent.revoke``; the collector's gRPC side writes ``agent.enrol``.

The command carries the collector's gRPC address, its certificate fingerprint (which the
exporter pins) and a one-time token (stored hashed, valid `enrol.token_ttl`, once).
"""

from __future__ import annotations

import asyncio
import json
import re
import shlex
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from aiohttp import web

from vpsmon.collector.fleet.agents import (
    FEATURES,
    EnrolmentError,
    agent_enrolment,
    create_enrolment_token,
    revoke_agent,
)
from vpsmon.collector.fleet.identity import identity_fingerprint
from vpsmon.collector.servers import Server
from vpsmon.web import access
from vpsmon.web.dashboard import require_editor
from vpsmon.web.keys import AGENTS, CONFIG, POOL

RUN_AS_RE = re.compile(r"[a-z_][a-z0-9_.-]{0,31}")


def setup(app: web.Application) -> None:
    app.router.add_get(r"/servers/{id:\d+}/enrol", enrol_page)
    app.router.add_post(r"/servers/{id:\d+}/enrol", enrol_submit)
    app.router.add_post(r"/servers/{id:\d+}/unenrol", unenrol_submit)
    app.router.add_get(r"/api/servers/{id:\d+}/enrolment", api_get)
    app.router.add_post(r"/api/servers/{id:\d+}/enrolment", api_create)
    app.router.add_delete(r"/api/servers/{id:\d+}/enrolment", api_delete)
    app.router.add_get("/install-exporter.sh", installer)


def installer_path() -> Path:
    """deploy/install-exporter.sh as shipped (package vpsmon.deploy), or in this checkout."""
    try:
        from vpsmon.deploy import INSTALLER
    except ImportError:  # an editable install made before vpsmon.deploy existed
        return Path(__file__).resolve().parent.parent / "deploy" / "install-exporter.sh"
    return INSTALLER


async def installer(request: web.Request) -> web.Response:
    """The exporter installer the enrol command pipes into sh: public and read-only (the
    script holds no secret; the token and pinned fingerprint are in the command line)."""
    body = await asyncio.to_thread(installer_path().read_bytes)
    return web.Response(
        body=body,
        content_type="text/x-shellscript",
        charset="utf-8",
        headers={"Cache-Control": "no-cache"},
    )


def collector_url(request: web.Request) -> str:
    """Where this site is reached: rules.external_url, else the scheme and host used."""
    configured = request.app[CONFIG].external_url
    if configured:
        return configured.rstrip("/")
    return f"{request.scheme}://{request.host}"


def collector_address(request: web.Request) -> str:
    """HOST:PORT exporters dial to enrol: grpc.advertise, else the host the browser used."""
    config = request.app[CONFIG]
    if config.grpc_advertise:
        return config.grpc_advertise
    host = request.url.host or "127.0.0.1"
    if ":" in host:
        host = f"[{host}]"
    return f"{host}:{config.grpc_listen.port}"


async def collector_fingerprint(request: web.Request) -> str:
    return await asyncio.to_thread(identity_fingerprint, request.app[CONFIG].data_dir)


def enrol_command(
    site: str,
    address: str,
    fingerprint: str,
    token: str,
    features: Iterable[str],
    run_as: str | None,
    file_roots: Iterable[str] = (),
) -> str:
    """The one line to paste on the server as a sudoer (every value quoted for the shell):
    fetch this collector's install-exporter.sh and run it with the enrol options. It makes
    the venv, the unit and the `vpsmon` user, enrols, and restarts the exporter."""
    parts = [
        "--collector",
        address,
        "--fingerprint",
        fingerprint,
        "--token",
        token,
    ]
    chosen = [f for f in FEATURES if f in set(features)]
    if chosen:
        parts += ["--features", ",".join(chosen)]
    if run_as:
        parts += ["--run-as", run_as]
    for root in file_roots:
        parts += ["--file-root", root]
    options = " ".join(shlex.quote(p) for p in parts)
    url = shlex.quote(f"{site}/install-exporter.sh")
    return f"curl -fsSL {url} | sudo sh -s -- {options}"


def manual_command(command: str) -> str:
    """The enrol step alone, for an exporter installed by hand: `vpsmon exporter enrol` with
    the options of `command`, then a restart."""
    options = command.split(" -s -- ", 1)[1]
    return f"sudo vpsmon exporter enrol {options} && sudo systemctl restart vpsmon-exporter"


def checked_features(values: Iterable[str]) -> list[str]:
    chosen = [v for v in values if v]
    unknown = [v for v in chosen if v not in FEATURES]
    if unknown:
        raise EnrolmentError(f"unknown feature {', '.join(unknown)}; one of {', '.join(FEATURES)}")
    return [f for f in FEATURES if f in chosen]


def checked_file_roots(value: str | Iterable[str] | None) -> list[str]:
    """File manager roots for the exporter's policy: absolute paths, one a line (form) or a
    list (API); the exporter checks they exist when it enrols."""
    lines = value.splitlines() if isinstance(value, str) else list(value or [])
    roots: list[str] = []
    for line in (v.strip() for v in lines):
        if not line:
            continue
        if not line.startswith("/") or "\x00" in line or len(line) > 4096:
            raise EnrolmentError(f"file roots: {line!r} is not an absolute path such as /srv/www")
        if line not in roots:
            roots.append(line)
    if len(roots) > 32:
        raise EnrolmentError("file roots: at most 32")
    return roots


def checked_run_as(value: str | None) -> str | None:
    value = (value or "").strip()
    if not value:
        return None
    if not RUN_AS_RE.fullmatch(value):
        raise EnrolmentError("run as: a user name such as ops or nobody")
    return value


async def _server(request: web.Request) -> Server:
    from vpsmon.web.servers import _load

    return await _load(request)


async def issue(
    request: web.Request,
    server: Server,
    features: list[str],
    run_as: str | None,
    file_roots: Iterable[str] = (),
) -> dict[str, Any]:
    """Create a one-time token for `server` and the command that uses it (audited)."""
    user = require_editor(request)
    config = request.app[CONFIG]
    token = await create_enrolment_token(
        request.app[POOL], server.id, features, created_by=user.id, ttl=config.enrol_token_ttl
    )
    address = collector_address(request)
    fingerprint = await collector_fingerprint(request)
    await access.audit(
        request,
        "agent.token",
        server_id=server.id,
        detail={"features": features, "expires_at": token.expires_at.isoformat()},
    )
    command = enrol_command(
        collector_url(request), address, fingerprint, token.secret, features, run_as, file_roots
    )
    return {
        "server_id": server.id,
        "features": features,
        "token": token.secret,
        "expires_at": token.expires_at.isoformat(),
        "collector": {"address": address, "fingerprint": fingerprint},
        "command": command,
        "manual_command": manual_command(command),
    }


async def _status(request: web.Request, server: Server) -> dict[str, Any] | None:
    record = await agent_enrolment(request.app[POOL], server.id)
    return record.as_json() if record else None


# ---------------------------------------------------------------- pages


def render_enrol(
    request: web.Request,
    server: Server,
    enrolled: dict[str, Any] | None,
    *,
    issued: dict[str, Any] | None = None,
    chosen: Iterable[str] = (),
    run_as: str = "",
    file_roots: str = "",
    error: str | None = None,
    status: int = 200,
) -> web.Response:
    from vpsmon.web.app import render

    response = render(
        request,
        "server_enrol.html",
        status=status,
        server=server,
        enrolled=enrolled,
        issued=issued,
        features=FEATURES,
        chosen=set(chosen),
        run_as=run_as,
        file_roots=file_roots,
        error=error,
    )
    if issued is not None:  # the page holds a secret: never cached
        response.headers["Cache-Control"] = "no-store"
    return response


async def enrol_page(request: web.Request) -> web.Response:
    require_editor(request)
    server = await _server(request)
    enrolled = await _status(request, server)
    return render_enrol(request, server, enrolled, chosen=enrolled["features"] if enrolled else ())


async def enrol_submit(request: web.Request) -> web.Response:
    require_editor(request)
    server = await _server(request)
    form = await request.post()
    picked = [str(v) for v in form.getall("feature", [])]
    try:
        features = checked_features(picked)
        run_as = checked_run_as(str(form.get("run_as", "")))
        roots = checked_file_roots(str(form.get("file_roots", "")))
    except EnrolmentError as err:
        enrolled = await _status(request, server)
        return render_enrol(request, server, enrolled, chosen=picked, error=str(err), status=400)
    issued = await issue(request, server, features, run_as, roots)
    return render_enrol(
        request,
        server,
        await _status(request, server),
        issued=issued,
        chosen=features,
        run_as=run_as or "",
        file_roots="\n".join(roots),
    )


async def unenrol_submit(request: web.Request) -> web.Response:
    require_editor(request)
    server = await _server(request)
    await _revoke(request, server)
    raise web.HTTPFound(f"/servers/{server.id}/enrol")


async def _revoke(request: web.Request, server: Server) -> bool:
    record = await agent_enrolment(request.app[POOL], server.id)
    if record is None:
        return False
    await access.audit(
        request,
        "agent.revoke",
        server_id=server.id,
        detail={"fingerprint": record.target.exporter_fingerprint},
    )
    await revoke_agent(request.app[POOL], server.id)
    await request.app[AGENTS].evict(record.target)
    return True


# ---------------------------------------------------------------- JSON API


def _bad_request(message: str) -> web.HTTPBadRequest:
    return web.HTTPBadRequest(text=json.dumps({"error": message}), content_type="application/json")


async def api_get(request: web.Request) -> web.Response:
    require_editor(request)
    server = await _server(request)
    return web.json_response(
        {
            "enrolled": await _status(request, server),
            "collector": {
                "address": collector_address(request),
                "fingerprint": await collector_fingerprint(request),
            },
        }
    )


async def api_create(request: web.Request) -> web.Response:
    require_editor(request)
    server = await _server(request)
    try:
        body = await request.json()
    except (ValueError, UnicodeDecodeError):
        body = None
    if not isinstance(body, Mapping):
        raise _bad_request('expected a JSON object such as {"features": ["exec"]}')
    raw = body.get("features", [])
    if not isinstance(raw, list) or not all(isinstance(f, str) for f in raw):
        raise _bad_request("features: expected a list of names")
    run_as = body.get("run_as")
    raw_roots = body.get("file_roots", [])
    if not isinstance(raw_roots, list) or not all(isinstance(r, str) for r in raw_roots):
        raise _bad_request("file_roots: expected a list of absolute paths")
    try:
        features = checked_features(raw)
        user_name = checked_run_as(run_as if isinstance(run_as, str) else None)
        roots = checked_file_roots(raw_roots)
    except EnrolmentError as err:
        raise _bad_request(str(err)) from None
    issued = await issue(request, server, features, user_name, roots)
    return web.json_response(issued, status=201, headers={"Cache-Control": "no-store"})


async def api_delete(request: web.Request) -> web.Response:
    require_editor(request)
    server = await _server(request)
    revoked = await _revoke(request, server)
    return web.json_response({"server_id": server.id, "revoked": revoked})
