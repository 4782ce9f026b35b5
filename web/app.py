"""The web UI and its JSON API (aiohttp + jinja2)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import urllib.parse
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any, Literal

import asyncpg
import jinja2
from aiohttp import WSMsgType, web

from vpsmon import __version__
from vpsmon.collector import accounts, audit, tokens
from vpsmon.collector.config import CollectorConfig
from vpsmon.collector.fleet.identity import ensure_identity
from vpsmon.collector.fleet.pool import AgentPool
from vpsmon.collector.fleet.tokenkey import TokenKey
from vpsmon.collector.head import Head
from vpsmon.collector.notify.service import NotifyService
from vpsmon.collector.servers import list_servers
from vpsmon.collector.storage.chart import ChartReader
from vpsmon.collector.storage.maintenance import Retention
from vpsmon.collector.storage.reader import StorageReader
from vpsmon.collector.storage.store import RollupCache
from vpsmon.collector.traffic import TrafficAccountant
from vpsmon.web import (
    access,
    auth,
    detail,
    enrol,
    promapi,
    rules,
    servers,
    status,
    targets,
    terminal,
)
from vpsmon.web import docker as docker_web
from vpsmon.web import files as files_web
from vpsmon.web import notify as notify_web
from vpsmon.web import storage as storage_web
from vpsmon.web.dashboard import visible_ids
from vpsmon.web.i18n import LANGUAGES, messages, pick_language
from vpsmon.web.keys import (
    AGENTS,
    CHARTS,
    CONFIG,
    HEAD,
    HUB,
    LIMITER,
    POOL,
    SAMPLES,
    TOKEN_KEY,
    TRAFFIC,
)
from vpsmon.web.live import LiveHub, Outbox, snapshot_message

log = logging.getLogger("vpsmon.web")
HERE = Path(__file__).parent
TEMPLATES = web.AppKey("templates", jinja2.Environment)

CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'self'"
)


def create_app(
    config: CollectorConfig,
    pool: asyncpg.Pool,
    head: Head,
    traffic: TrafficAccountant | None = None,
    notify: NotifyService | None = None,
    agents: AgentPool | None = None,
) -> web.Application:
    app = web.Application(
        middlewares=[security_headers, session_middleware], client_max_size=1024 * 1024
    )
    app[CONFIG] = config
    app[POOL] = pool
    app[HEAD] = head
    app[SAMPLES] = StorageReader(pool, recent=head.recent)
    app[CHARTS] = ChartReader(app[SAMPLES], Retention.of(config), RollupCache())
    app[LIMITER] = auth.LoginLimiter()
    # The collector's identity (identity/ in the data dir) is made on the first call to an
    # exporter, not here: building an app must not write files.
    app[AGENTS] = agents or AgentPool(lambda: ensure_identity(config.data_dir))
    app[TOKEN_KEY] = TokenKey.in_data_dir(config.data_dir)
    app.cleanup_ctx.append(_close_agents)
    app[TEMPLATES] = jinja2.Environment(
        loader=jinja2.FileSystemLoader(HERE / "templates"),
        autoescape=True,  # every value shown is escaped; names may be hostile (issue #5)
        undefined=jinja2.StrictUndefined,
    )
    if traffic is None:  # the overview shows traffic; count it here unless given one
        traffic = TrafficAccountant(pool)
        head.subscribe(traffic.observe)
        app.cleanup_ctx.append(_count_traffic)
    app[TRAFFIC] = traffic
    app[HUB] = hub = LiveHub(lambda sid: _traffic_json(traffic, sid))
    head.subscribe(hub.publish)
    app.router.add_get("/", overview)
    app.router.add_post("/lang", set_language)
    app.router.add_get("/api/servers", api_servers)
    app.router.add_get("/api/live", live_socket)
    targets.setup(app)
    app.router.add_get("/healthz", healthz)
    servers.setup(app)
    enrol.setup(app)
    promapi.setup(app, app[SAMPLES])
    detail.setup(app)
    from vpsmon.web import users  # here, not at the top: it imports render from this module

    users.setup(app)
    notify_web.setup(app, notify)
    status.setup(app)
    storage_web.setup(app)
    rules.setup(app)
    files_web.setup(app)
    docker_web.setup(app)
    terminal.setup(app)
    app.router.add_static("/static", HERE / "static", append_version=True, name="static")
    app.on_shutdown.append(_close_sockets)
    app.cleanup_ctx.append(_expire_sessions)
    return app


async def _close_agents(app: web.Application) -> AsyncIterator[None]:
    yield
    await app[AGENTS].close()


@web.middleware
async def security_headers(request: web.Request, handler: auth.Handler) -> web.StreamResponse:
    try:
        response = await handler(request)
    except web.HTTPException as exc:  # redirects and errors raised by handlers need them too
        _add_security_headers(exc.headers)
        raise
    _add_security_headers(response.headers)
    return response


def _add_security_headers(headers: Any) -> None:
    headers.setdefault("Content-Security-Policy", CSP)
    headers.setdefault("X-Content-Type-Options", "nosniff")
    headers.setdefault("X-Frame-Options", "DENY")
    headers.setdefault("Referrer-Policy", "same-origin")


@web.middleware
async def session_middleware(request: web.Request, handler: auth.Handler) -> web.StreamResponse:
    request[auth.TOKEN_KEY] = None
    header = request.headers.get("Authorization")
    if header is not None and request.path.startswith("/api/"):
        # Scripts: the token alone authenticates (cookies are ignored), and no CSRF token is
        # needed, because a browser never adds this header to a cross-site request.
        scheme, _, secret = header.partition(" ")
        found = (
            await tokens.authenticate_token(request.app[POOL], secret.strip())
            if scheme.lower() == "bearer"
            else None
        )
        if found is None:
            raise web.HTTPUnauthorized(
                text='{"error": "invalid, expired or revoked API token"}',
                content_type="application/json",
                headers={"WWW-Authenticate": 'Bearer realm="vpsmon"'},
            )
        request[auth.SESSION_KEY] = None
        request[auth.USER_KEY], request[auth.TOKEN_KEY] = found
        return await handler(request)
    token = request.cookies.get(auth.SESSION_COOKIE)
    session = await accounts.load_session(request.app[POOL], token) if token else None
    request[auth.SESSION_KEY] = session
    request[auth.USER_KEY] = session.user if session else None
    if (
        request.method not in auth.SAFE_METHODS
        and session is not None
        and request.path not in {"/login"}
    ):
        form = await request.post() if request.content_type.endswith("form-urlencoded") else {}
        field = form.get("csrf_token")
        auth.check_csrf(request, session, field if isinstance(field, str) else None)
    return await handler(request)


def _language(request: web.Request) -> str:
    return pick_language(request.cookies.get("lang"), request.headers.get("Accept-Language"))


def render(request: web.Request, template: str, status: int = 200, **context: Any) -> web.Response:
    lang = _language(request)
    texts = messages()[lang]
    session = auth.current_session(request)
    page = (
        request.app[TEMPLATES]
        .get_template(template)
        .render(
            t=texts,
            lang=lang,
            languages=LANGUAGES,
            version=__version__,
            user=session.user if session else None,
            request_path=request.path,
            csrf_token=session.csrf_token if session else "",
            static=lambda path: request.app.router["static"].url_for(filename=path),
            messages_json=json.dumps(texts),
            **context,
        )
    )
    return web.Response(text=page, content_type="text/html", status=status)


async def overview(request: web.Request) -> web.Response:
    # Rendered on the server too, so the page is useful before the WebSocket connects.
    session = auth.require_session(request)
    return render(
        request,
        "overview.html",
        servers=await _server_rows(request),
        can_edit=session.user.role == "admin",
    )


async def set_language(request: web.Request) -> web.Response:
    form = await request.post()
    lang = str(form.get("lang", ""))
    if lang not in LANGUAGES:
        raise web.HTTPBadRequest(text=f"unknown language {lang!r}; use one of {LANGUAGES}")
    back = request.headers.get("Referer", "/")
    path = urllib.parse.urlsplit(back).path or "/"
    response = web.HTTPFound(path if path.startswith("/") and not path.startswith("//") else "/")
    response.set_cookie("lang", lang, samesite="Lax", max_age=365 * 86400, path="/")
    raise response


async def _server_rows(
    request: web.Request, visible: frozenset[int] | None | Literal["request"] = "request"
) -> list[dict[str, Any]]:
    """The servers the request's user may see, with their live figures."""
    head = request.app[HEAD]
    traffic = request.app[TRAFFIC]
    now = auth.now()
    if visible == "request":
        visible = await access.request_visible_ids(request)
    rows = []
    for server in await list_servers(request.app[POOL]):
        if not access.is_visible(visible, server.id):
            continue
        row = server.as_json()
        state = head.state(server.id)
        row["live"] = (
            request.app[HUB].summary(state)
            if state
            else {"id": server.id, "online": False, "last_seen": server.last_seen, "error": None}
        )
        row["live"].update(_traffic_json(traffic, server.id, now))
        rows.append(row)
    return rows


def _traffic_json(
    traffic: TrafficAccountant, server_id: int, now: float | None = None
) -> dict[str, Any]:
    usage = traffic.usage(server_id, auth.now() if now is None else now)
    return {"traffic": usage.as_json() if usage else None}


async def api_servers(request: web.Request) -> web.Response:
    access.require_user(request)
    return web.json_response({"servers": await _server_rows(request)})


def _same_origin(request: web.Request) -> bool:
    """Browsers always send Origin on WebSocket handshakes; it must be this site."""
    origin = request.headers.get("Origin")
    if origin is None:
        return True  # not a browser (scripts authenticate with their session cookie anyway)
    parts = urllib.parse.urlsplit(origin)
    return parts.netloc == request.host and parts.scheme in {"http", "https"}


async def live_socket(request: web.Request) -> web.StreamResponse:
    access.require_user(request)
    if not _same_origin(request):
        raise web.HTTPForbidden(text="WebSocket from another origin refused")
    visible = await access.request_visible_ids(request)
    ws = web.WebSocketResponse(heartbeat=30)
    await ws.prepare(request)
    hub = request.app[HUB]
    queue = hub.register(ws, visible)
    try:
        try:
            await ws.send_str(snapshot_message(await _server_rows(request, visible)))
        except ConnectionResetError:  # the page went away while we built the snapshot
            return ws
        tasks = [
            asyncio.create_task(_pump(queue, ws)),
            asyncio.create_task(_recheck_access(request, ws, queue, visible)),
        ]
        try:
            async for msg in ws:
                if msg.type == WSMsgType.ERROR:
                    break
                if msg.type == WSMsgType.TEXT:
                    await _client_message(request, ws, msg.data)
        finally:
            for task in tasks:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
    finally:
        hub.unregister(ws)
    return ws


async def _recheck_access(
    request: web.Request,
    ws: web.WebSocketResponse,
    queue: Outbox,
    visible: frozenset[int] | None,
) -> None:
    """A long-lived socket must not outlive its access: re-read the session (or token) and the
    user's servers now and then; close on logout, disable or revocation, and send a new
    snapshot when the visible servers change."""
    hub = request.app[HUB]
    while not ws.closed:
        await asyncio.sleep(hub.recheck_seconds)
        try:
            user = await access.recheck_credentials(request)
            now_visible = (
                await access.visible_server_ids(request.app[POOL], user) if user else frozenset()
            )
        except Exception as err:  # database away: keep the socket as it is, try again later
            log.warning("cannot re-check live socket access error=%s", err)
            continue
        if user is None:
            await ws.close(code=4401, message=b"session ended")
            return
        if now_visible != visible:
            visible = now_visible
            hub.set_visible(ws, visible)
            await queue.put(snapshot_message(await _server_rows(request, visible)))


async def _client_message(request: web.Request, ws: web.WebSocketResponse, text: str) -> None:
    """``{"watch": id}``: the detail page wants that server's chart points."""
    try:
        message = json.loads(text)
    except ValueError:
        return
    if not isinstance(message, dict):
        return
    server_id = message.get("watch")
    if isinstance(server_id, int) and not isinstance(server_id, bool):
        if server_id in await visible_ids(request):
            request.app[HUB].watch(ws, server_id)


async def _pump(queue: Outbox, ws: web.WebSocketResponse) -> None:
    with contextlib.suppress(ConnectionResetError):  # the page went away
        while not ws.closed:
            await ws.send_str(await queue.get())


async def healthz(request: web.Request) -> web.Response:
    return web.json_response({"status": "ok", "version": __version__})


async def _close_sockets(app: web.Application) -> None:
    await app[HUB].close_all()


async def _expire_sessions(app: web.Application) -> AsyncIterator[None]:
    async def loop() -> None:
        while True:
            with contextlib.suppress(Exception):
                await accounts.delete_expired_sessions(app[POOL])
            with contextlib.suppress(Exception):
                await audit.delete_older_than(app[POOL], app[CONFIG].audit_retention)
            await asyncio.sleep(3600)

    task = asyncio.create_task(loop())
    yield
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task


async def _count_traffic(app: web.Application) -> AsyncIterator[None]:
    traffic = app[TRAFFIC]
    with contextlib.suppress(Exception):  # database away: start from what scrapes show
        await traffic.load()
    task = asyncio.create_task(traffic.run())
    yield
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task
