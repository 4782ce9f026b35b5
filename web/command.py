"""The one door from a web handler to an exporter's command channel (issue #7).

    agent = await open_agent(request, server_id, "exec")      # every check, in order
    await audit_command(request, "exec", server_id, {"argv": argv})   # BEFORE it runs
    async for message in agent.stub.Exec(pb.ExecRequest(argv=argv), **agent.options()):
        ...

WebSocket handlers call `check_ws_origin(request)` before `ws.prepare`.

open_agent checks, in this order, and refuses with the first that fails:
1. logged in (401 / redirect to /login);
2. role operator or admin: a viewer gets 403;
3. the server is granted to the user: 404 otherwise, the same as for a server that does not
   exist, so ids cannot be probed;
4. the server is enrolled: 409 "not enrolled" otherwise;
5. the feature is enabled for that server: 403 otherwise;
6. for exec and pty, and for any change made from a browser session through
   `open_agent_for_change` (`step_up=True`): files (upload, save, mkdir, rename, delete,
   chmod; writing ~/.ssh/authorized_keys is as strong as exec; web/files.py) and Docker
   (start, stop, restart; web/docker.py): a fresh step-up (password or TOTP in the last
   web.reauth_ttl): 401 {"reauth": "/reauth"} on the API, a redirect to /reauth on pages.
   Browsing and downloading files, and listing containers, their logs, details and stats, do
   not ask; API tokens are not asked for those changes (open_agent_for_change).
The exporter checks again on its side (pinned collector key, token, its own feature switches).
"""

from __future__ import annotations

import json
import logging
import urllib.parse
from dataclasses import dataclass
from typing import Any

from aiohttp import web

from vpsmon.collector.accounts import User, role_allows
from vpsmon.collector.fleet.agents import FEATURES, AgentRecord, agent_target
from vpsmon.collector.fleet.pool import AgentPool
from vpsmon.collector.fleet.tokenkey import TokenKeyError
from vpsmon.collector.servers import Server, get_server
from vpsmon.v1 import agent_pb2_grpc
from vpsmon.web import access
from vpsmon.web.keys import AGENTS, CONFIG, POOL, TOKEN_KEY

log = logging.getLogger("vpsmon.web.command")

# Features whose use runs arbitrary code on the server: they ask for the password again.
STEP_UP_FEATURES = frozenset({"exec", "pty"})


@dataclass(frozen=True)
class Agent:
    """An enrolled server's command channel, opened for one request's user."""

    stub: agent_pb2_grpc.AgentStub
    pool: AgentPool
    record: AgentRecord
    server: Server
    user: User
    feature: str

    @property
    def server_id(self) -> int:
        return self.server.id

    @property
    def metadata(self) -> tuple[tuple[str, str], ...]:
        """The call metadata (the command token) for streaming calls given their own timeout."""
        return self.pool.metadata(self.record.target)

    def options(self, timeout: float | None = None) -> dict[str, Any]:
        """Keyword arguments for a call: metadata with the token and a deadline (the pool's
        call_timeout, 30 s, unless given). Long streams (Pty, logs with follow) pass a timeout
        of their own or use `metadata` alone."""
        return self.pool.call_options(self.record.target, timeout)


def _refuse(request: web.Request, cls: type[web.HTTPException], message: str) -> web.HTTPException:
    if request.path.startswith("/api/"):
        return cls(text=json.dumps({"error": message}), content_type="application/json")
    return cls(text=message)


async def open_agent(
    request: web.Request, server_id: int, feature: str, *, step_up: bool = False
) -> Agent:
    """The Agent for `server_id` and `feature` after every check (module docstring).

    `step_up=True` asks for a fresh step-up whatever the feature (file changes)."""
    if feature not in FEATURES:
        raise ValueError(f"unknown feature {feature!r}; one of {FEATURES}")
    access.require_user(request)
    user = access.require_role(request, "operator")
    await access.require_server(request, server_id)
    db = request.app[POOL]
    server = await get_server(db, server_id)
    if server is None:  # an admin (who sees every id) asking for one that does not exist
        raise _refuse(request, web.HTTPNotFound, "no such server")
    try:
        record = await agent_target(db, server_id, request.app[TOKEN_KEY])
    except TokenKeyError as err:  # the key file was lost or replaced: say which file
        log.error("command token unreadable server=%d: %s", server_id, err)
        raise _refuse(request, web.HTTPInternalServerError, str(err)) from None
    if record is None:
        raise _refuse(
            request,
            web.HTTPConflict,
            f"server {server.name!r} is not enrolled for management: add it again with the"
            " features to enable and run the enrol command shown on it",
        )
    if feature not in record.features:
        raise _refuse(
            request,
            web.HTTPForbidden,
            f"{feature} is not enabled on server {server.name!r}: enrol it again with"
            f" {feature} ticked",
        )
    if step_up or feature in STEP_UP_FEATURES:
        await access.require_step_up(request)
    pool = request.app[AGENTS]
    return Agent(pool.stub(record.target), pool, record, server, user, feature)


async def open_agent_for_change(request: web.Request, server_id: int, feature: str) -> Agent:
    """open_agent for a call that changes the server (files, Docker control): every check and,
    for a browser session, a fresh step-up. An API token is the scripted way to make these
    changes (docs/files.md, docs/docker.md): creating one needed a step-up, it is revocable,
    and it could not answer a step-up anyway, so it is not asked."""
    fresh = not access.via_token(request)
    return await open_agent(request, server_id, feature, step_up=fresh)


def _origins(request: web.Request) -> set[str]:
    """scheme://host[:port] this site is reached at: the Host header, and the configured
    public URLs (rules.external_url, notify.external_url) for setups behind a proxy."""
    allowed = {f"http://{request.host}", f"https://{request.host}"}
    config = request.app[CONFIG]
    for url in (config.external_url, config.notify.external_url):
        if url:
            parts = urllib.parse.urlsplit(url)
            if parts.scheme in {"http", "https"} and parts.netloc:
                allowed.add(f"{parts.scheme}://{parts.netloc}".lower())
    return {o.lower() for o in allowed}


def check_ws_origin(request: web.Request) -> None:
    """403 unless the WebSocket's Origin is this site (cross-site WebSocket hijacking).

    Browsers always send Origin on a WebSocket handshake; a handshake without one is accepted
    only with an API token (a script, which no other site can make a browser send)."""
    origin = request.headers.get("Origin")
    if origin is None:
        if access.via_token(request):
            return
        raise _refuse(request, web.HTTPForbidden, "WebSocket without an Origin refused")
    if origin.strip().lower().rstrip("/") not in _origins(request):
        raise _refuse(request, web.HTTPForbidden, "WebSocket from another origin refused")


async def audit_command(
    request: web.Request,
    action: str,
    server_id: int,
    detail: dict[str, Any],
    *,
    success: bool = True,
) -> int:
    """Write the audit entry of a command-channel action (exec, pty.open, file.write,
    docker.start …) for the request's user; call it BEFORE the action runs. Returns its id."""
    return await access.audit(request, action, server_id=server_id, success=success, detail=detail)


async def access_gone(
    request: web.Request, user: User | None, server_id: int, feature: str | None = None
) -> str | None:
    """Why `user` may no longer use `server_id` (and `feature`, when given, as enrolled),
    or None while they may. Long-lived sockets (terminal, docker logs) ask it every
    `recheck_seconds` with the user re-read from the session or token."""
    if user is None:
        return "the session ended"
    if not role_allows(user.role, "operator"):
        return "this needs the operator role"
    db = request.app[POOL]
    if not access.is_visible(await access.visible_server_ids(db, user), server_id):
        return "no such server"
    if feature is not None:
        try:
            record = await agent_target(db, server_id, request.app[TOKEN_KEY])
        except TokenKeyError as err:
            return str(err)
        if record is None or feature not in record.features:
            what = "docker control" if feature == "docker" else feature
            return f"{what} is no longer enabled on this server"
    return None
