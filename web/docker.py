"""Docker control from the web (issue #7): the containers tab's actions, details and live logs,
through the collector's pooled channel to the exporter's Agent Docker RPCs.

    GET  /api/servers/{id}/docker                          what this user may do here, and why not
    GET  /api/servers/{id}/docker/containers               live list from dockerd (all containers)
    POST /api/servers/{id}/containers/{cid}/start|stop|restart   (CSRF; audited)
    GET  /api/servers/{id}/containers/{cid}/inspect        dockerd's inspect document
    GET  /api/servers/{id}/containers/{cid}/stats          one-shot stats, summarised
    GET  /api/servers/{id}/containers/{cid}/logs           WebSocket: ?follow=1&tail=N&timestamps=1

Every call goes through `open_agent(request, id, "docker")`: logged in, operator or above,
server granted (else 404), server enrolled (else 409), docker enabled for it (else 403).
Start, stop and restart from a browser session also need a fresh step-up (password or TOTP in
the last web.reauth_ttl; 401 {"error", "reauth": "/reauth"} otherwise, as for file changes:
`open_agent_for_change`); the list, logs, inspect and stats do not ask, and API tokens (scripts)
are not asked. The
exporter checks its own switch again: docker control disabled there is PERMISSION_DENIED even
when the collector's record says otherwise, and becomes a 403 here.

The logs socket checks the Origin first, like every WebSocket here, and cancels the gRPC stream
as soon as the browser goes away, so a closed tab never keeps a `docker logs -f` running.
"""

from __future__ import annotations

import asyncio
import codecs
import contextlib
import json
import logging
import re
import weakref
from collections.abc import AsyncIterator, Mapping
from typing import Any

import grpc
from aiohttp import WSMsgType, web

from vpsmon.collector.accounts import role_allows
from vpsmon.collector.fleet.agents import agent_enrolment
from vpsmon.v1 import agent_pb2 as pb
from vpsmon.web import access
from vpsmon.web.command import (
    Agent,
    access_gone,
    audit_command,
    check_ws_origin,
    open_agent,
    open_agent_for_change,
)
from vpsmon.web.keys import DOCKER_SOCKETS, HUB, POOL

log = logging.getLogger("vpsmon.web.docker")

# Docker's own rule for names ([a-zA-Z0-9][a-zA-Z0-9_.-]+), which also covers ids and id
# prefixes; anything else never reaches the exporter.
CONTAINER = r"[A-Za-z0-9][A-Za-z0-9_.-]{0,127}"
CONTAINER_RE = re.compile(CONTAINER)
ACTIONS = ("start", "stop", "restart")
MAX_STOP_TIMEOUT = 300  # seconds dockerd waits before SIGKILL, at most
DEFAULT_STOP_TIMEOUT = 10
MAX_TAIL = 100_000
DEFAULT_TAIL = 200


def setup(app: web.Application) -> None:
    base = r"/api/servers/{id:\d+}"
    app.router.add_get(base + "/docker", api_capability)
    app.router.add_get(base + "/docker/containers", api_list)
    one = base + "/containers/{cid:" + CONTAINER + "}"
    for action in ACTIONS:
        app.router.add_post(f"{one}/{action}", api_action)
    app.router.add_get(one + "/inspect", api_inspect)
    app.router.add_get(one + "/stats", api_stats)
    app.router.add_get(one + "/logs", logs_socket)
    app[DOCKER_SOCKETS] = weakref.WeakSet()
    app.on_shutdown.append(_close_sockets)


def _json_error(cls: type[web.HTTPException], message: str) -> web.HTTPException:
    return cls(text=json.dumps({"error": message}), content_type="application/json")


def _ids(request: web.Request) -> tuple[int, str]:
    container = request.match_info.get("cid", "")
    if container and not CONTAINER_RE.fullmatch(container):  # the route already says so
        raise _json_error(web.HTTPBadRequest, "not a container name or id")
    return int(request.match_info["id"]), container


# ------------------------------------------------------------------ errors from the exporter

# How a refusal of the exporter (or no answer) reads in the browser.
STATUS_OF: Mapping[grpc.StatusCode, type[web.HTTPException]] = {
    grpc.StatusCode.NOT_FOUND: web.HTTPNotFound,
    grpc.StatusCode.PERMISSION_DENIED: web.HTTPForbidden,
    grpc.StatusCode.FAILED_PRECONDITION: web.HTTPConflict,
    grpc.StatusCode.INVALID_ARGUMENT: web.HTTPBadRequest,
    grpc.StatusCode.DEADLINE_EXCEEDED: web.HTTPGatewayTimeout,
}


def grpc_message(err: grpc.aio.AioRpcError) -> str:
    code = err.code()
    details = err.details() or code.name.lower()
    if code == grpc.StatusCode.UNAVAILABLE:
        return f"the exporter cannot be reached: {details}"
    if code == grpc.StatusCode.UNAUTHENTICATED:
        return f"the exporter refused the collector ({details}); enrol the server again"
    if code == grpc.StatusCode.DEADLINE_EXCEEDED:
        return "the exporter did not answer in time"
    if code == grpc.StatusCode.PERMISSION_DENIED:
        return f"refused by the exporter: {details}"
    return details


def http_error(err: grpc.aio.AioRpcError) -> web.HTTPException:
    return _json_error(STATUS_OF.get(err.code(), web.HTTPBadGateway), grpc_message(err))


# ------------------------------------------------------------------ what this user may do


async def capability(request: web.Request, server_id: int) -> dict[str, Any]:
    """Whether the containers tab shows its controls, and if not the reason (for the hint):
    ``viewer`` (role below operator), ``not_enrolled`` (no command channel for this server),
    ``disabled`` (enrolled without docker control)."""
    user = await access.require_server(request, server_id)
    if not role_allows(user.role, "operator"):
        return {"control": False, "reason": "viewer"}
    record = await agent_enrolment(request.app[POOL], server_id)
    if record is None:
        return {"control": False, "reason": "not_enrolled"}
    if "docker" not in record.features:
        return {"control": False, "reason": "disabled"}
    return {"control": True, "reason": None}


async def api_capability(request: web.Request) -> web.Response:
    server_id, _ = _ids(request)
    return web.json_response(await capability(request, server_id))


# ------------------------------------------------------------------ list, inspect, stats


def container_json(container: pb.Container) -> dict[str, Any]:
    return {
        "id": container.id,
        "name": container.name,
        "image": container.image,
        "state": container.state,
        "status": container.status,
        "created": container.created,
    }


async def _call(agent: Agent, method: str, message: Any) -> Any:
    try:
        return await getattr(agent.stub, method)(message, **agent.options())
    except grpc.aio.AioRpcError as err:
        raise http_error(err) from None


async def api_list(request: web.Request) -> web.Response:
    server_id, _ = _ids(request)
    agent = await open_agent(request, server_id, "docker")
    found = await _call(agent, "DockerList", pb.DockerListRequest(all=True))
    rows = sorted(
        (container_json(c) for c in found.containers),
        key=lambda c: (c["state"] != "running", c["name"]),
    )
    return web.json_response({"containers": rows}, headers={"Cache-Control": "no-store"})


async def api_inspect(request: web.Request) -> web.Response:
    server_id, container = _ids(request)
    agent = await open_agent(request, server_id, "docker")
    # The document holds the container's environment, which may hold secrets: audited.
    await audit_command(request, "docker.inspect", server_id, {"container": container})
    found = await _call(agent, "DockerInspect", pb.ContainerRef(container=container))
    return web.json_response(
        {"inspect": json.loads(found.json)}, headers={"Cache-Control": "no-store"}
    )


def _number(value: Any) -> float | None:
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else None


def stats_summary(document: Mapping[str, Any]) -> dict[str, Any]:
    """The figures the tab shows, from dockerd's stats document (API 1.41+, cgroup v1 or v2).

    Memory is usage minus inactive file cache, as `docker stats` shows it. A one-shot document
    has no previous CPU sample, so the CPU share comes from two of these: the page keeps the
    last one and divides the CPU time delta by the system time delta.
    """
    memory = document.get("memory_stats") or {}
    details = memory.get("stats") or {}
    usage = _number(memory.get("usage"))
    cache = _number(details.get("inactive_file", details.get("total_inactive_file"))) or 0.0
    cpu = document.get("cpu_stats") or {}
    cpu_usage = cpu.get("cpu_usage") or {}
    networks = document.get("networks") or {}
    blkio = (document.get("blkio_stats") or {}).get("io_service_bytes_recursive") or []

    def blk(op: str) -> float:
        return float(sum(e.get("value", 0) for e in blkio if str(e.get("op", "")).lower() == op))

    return {
        "read": document.get("read"),
        "memory": None if usage is None else max(0.0, usage - cache),
        "memory_limit": _number(memory.get("limit")),
        "cpu_total": _number(cpu_usage.get("total_usage")),  # nanoseconds
        "system_total": _number(cpu.get("system_cpu_usage")),  # nanoseconds, all CPUs
        "online_cpus": _number(cpu.get("online_cpus")) or len(cpu_usage.get("percpu_usage") or []),
        "pids": _number((document.get("pids_stats") or {}).get("current")),
        "net_rx": float(sum(n.get("rx_bytes", 0) for n in networks.values())),
        "net_tx": float(sum(n.get("tx_bytes", 0) for n in networks.values())),
        "block_read": blk("read"),
        "block_write": blk("write"),
    }


async def api_stats(request: web.Request) -> web.Response:
    server_id, container = _ids(request)
    agent = await open_agent(request, server_id, "docker")
    found = await _call(agent, "DockerStats", pb.ContainerRef(container=container))
    return web.json_response(
        {"stats": stats_summary(json.loads(found.json))}, headers={"Cache-Control": "no-store"}
    )


# ------------------------------------------------------------------ start, stop, restart


async def _stop_timeout(request: web.Request) -> int:
    """``{"timeout": seconds}`` in the body (optional): how long dockerd waits before SIGKILL."""
    if not request.can_read_body:
        return DEFAULT_STOP_TIMEOUT
    try:
        body = await request.json()
    except ValueError:
        raise _json_error(web.HTTPBadRequest, "the body must be JSON") from None
    if body is None:
        return DEFAULT_STOP_TIMEOUT
    if not isinstance(body, dict):
        raise _json_error(web.HTTPBadRequest, "the body must be a JSON object")
    value = body.get("timeout", DEFAULT_STOP_TIMEOUT)
    if not isinstance(value, int) or isinstance(value, bool) or not 0 <= value <= MAX_STOP_TIMEOUT:
        raise _json_error(
            web.HTTPBadRequest, f"timeout must be whole seconds from 0 to {MAX_STOP_TIMEOUT}"
        )
    return value


async def api_action(request: web.Request) -> web.Response:
    server_id, container = _ids(request)
    action = request.path.rsplit("/", 1)[1]
    if action not in ACTIONS:  # the routes only add these
        raise _json_error(web.HTTPNotFound, "no such action")
    timeout = await _stop_timeout(request) if action != "start" else 0
    # A container's state is the server's state (a stopped database is an outage): like file
    # changes, a browser session needs a fresh step-up; API tokens are not asked.
    agent = await open_agent_for_change(request, server_id, "docker")
    detail: dict[str, Any] = {"container": container}
    if action != "start":
        detail["timeout"] = timeout
    # Written before the action runs (collector/audit.py), the outcome in a second entry.
    request_id = await audit_command(request, f"docker.{action}", server_id, detail)
    if action == "start":
        call = agent.stub.DockerStart(pb.ContainerRef(container=container), **agent.options())
    else:
        method = agent.stub.DockerStop if action == "stop" else agent.stub.DockerRestart
        # dockerd waits up to `timeout` before it kills, then answers: give the call that long.
        call = method(
            pb.DockerStopRequest(container=container, timeout_seconds=timeout),
            **agent.options(timeout + 30.0),
        )
    outcome: dict[str, Any] = {"container": container, "request": request_id}
    try:
        response = await call
    except grpc.aio.AioRpcError as err:
        outcome["result"] = grpc_message(err)
        await audit_command(request, f"docker.{action}.result", server_id, outcome, success=False)
        raise http_error(err) from None
    except BaseException:  # the browser went away or the collector stops: say so, then go on
        outcome["result"] = "interrupted"
        with contextlib.suppress(Exception):
            await asyncio.shield(
                audit_command(request, f"docker.{action}.result", server_id, outcome, success=False)
            )
        raise
    found = container_json(response.container)
    outcome.update(container_id=found["id"], name=found["name"], result=found["state"])
    await audit_command(request, f"docker.{action}.result", server_id, outcome)
    return web.json_response({"container": found})


# ------------------------------------------------------------------ logs


def _flag(query: Mapping[str, str], name: str, default: bool) -> bool:
    value = query.get(name)
    if value is None:
        return default
    if value in {"1", "true", "yes", "on"}:
        return True
    if value in {"0", "false", "no", "off", ""}:
        return False
    raise _json_error(web.HTTPBadRequest, f"{name} must be 1 or 0")


def logs_request(container: str, query: Mapping[str, str]) -> pb.DockerLogsRequest:
    """The DockerLogs request from the socket's query string; a clear 400 for bad values."""
    raw = query.get("tail", str(DEFAULT_TAIL))
    if raw == "all":
        tail = 0
    else:
        try:
            tail = int(raw)
        except ValueError:
            tail = -1
        if not 1 <= tail <= MAX_TAIL:
            raise _json_error(
                web.HTTPBadRequest, f"tail must be a number of lines from 1 to {MAX_TAIL}, or all"
            )
    return pb.DockerLogsRequest(
        container=container,
        follow=_flag(query, "follow", True),
        tail=tail,
        timestamps=_flag(query, "timestamps", False),
    )


class LogText:
    """UTF-8 text from byte chunks, one decoder per stream: a character split across two
    chunks is decoded whole, and bytes that are not UTF-8 become U+FFFD rather than an error."""

    def __init__(self) -> None:
        self._decoders: dict[str, codecs.IncrementalDecoder] = {}

    def feed(self, stream: str, data: bytes) -> str:
        decoder = self._decoders.get(stream)
        if decoder is None:
            decoder = self._decoders[stream] = codecs.getincrementaldecoder("utf-8")("replace")
        return decoder.decode(data)


async def logs_socket(request: web.Request) -> web.StreamResponse:
    server_id, container = _ids(request)
    check_ws_origin(request)
    message = logs_request(container, request.query)
    agent = await open_agent(request, server_id, "docker")
    await audit_command(
        request,
        "docker.logs",
        server_id,
        {"container": container, "follow": message.follow, "tail": message.tail},
    )
    ws = web.WebSocketResponse(heartbeat=30)
    await ws.prepare(request)
    sockets = request.app[DOCKER_SOCKETS]
    sockets.add(ws)
    # No deadline: a followed log stays open until one side goes away.
    call = agent.stub.DockerLogs(message, metadata=agent.metadata)
    pump = asyncio.create_task(_pump_logs(call, ws))
    watch = asyncio.create_task(_recheck_access(request, ws, server_id))
    try:
        async for msg in ws:  # the page sends nothing; this ends when it goes away
            if msg.type == WSMsgType.ERROR:
                break
            if msg.type == WSMsgType.TEXT and msg.data == "close":
                break
    finally:
        sockets.discard(ws)
        call.cancel()  # stops the exporter's `docker logs` at once
        for task in (pump, watch):
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        if not ws.closed:
            await ws.close()
        log.info(
            "docker logs closed server=%s container=%s user=%s",
            server_id,
            container,
            agent.user.username,
        )
    return ws


async def still_allowed(request: web.Request, server_id: int) -> str | None:
    """None while the socket's user may still read this server's logs, else why not."""
    user = await access.recheck_credentials(request)
    return await access_gone(request, user, server_id, "docker")


async def _recheck_access(request: web.Request, ws: web.WebSocketResponse, server_id: int) -> None:
    """A followed log can stay open for days: it must not outlive the user's access. Like the
    live socket (web/app.py), re-read the session or token, the role, the grants and the
    enrolment every `recheck_seconds`, and close the socket when one of them is gone."""
    every = request.app[HUB].recheck_seconds
    while not ws.closed:
        await asyncio.sleep(every)
        try:
            reason = await still_allowed(request, server_id)
        except Exception as err:  # database away: keep the socket, try again later
            log.warning("cannot re-check docker logs access error=%s", err)
            continue
        if reason is not None:
            with contextlib.suppress(ConnectionResetError):
                await ws.send_json({"type": "error", "error": f"access ended: {reason}"})
            await ws.close(code=4403, message=b"access ended")
            return


async def _pump_logs(call: Any, ws: web.WebSocketResponse) -> None:
    text = LogText()
    try:
        try:
            async for chunk in _chunks(call):
                data = text.feed(chunk.stream, chunk.data)
                if data:
                    await ws.send_json({"type": "log", "stream": chunk.stream, "data": data})
        except grpc.aio.AioRpcError as err:
            if err.code() != grpc.StatusCode.CANCELLED:
                await ws.send_json({"type": "error", "error": grpc_message(err)})
        else:
            await ws.send_json({"type": "end"})
        await ws.close()
    except ConnectionResetError:  # the page went away; the handler cancels the call
        pass


async def _chunks(call: Any) -> AsyncIterator[pb.DockerLogChunk]:
    async for chunk in call:
        yield chunk


async def _close_sockets(app: web.Application) -> None:
    sockets = app[DOCKER_SOCKETS]
    for ws in list(sockets):
        with contextlib.suppress(Exception):
            await ws.close(code=1001, message=b"server shutdown")
