"""The web terminal (issue #7): a page of xterm.js tabs, each a WebSocket bridged to the
exporter's Agent.Pty stream, and the playback of recorded sessions.

    GET /servers/{id}/terminal        the page (operators and admins; step-up first)
    GET /api/servers/{id}/terminal    may this user open a terminal now? (JSON; the page asks
                                      before each tab, and on 401 {"reauth"} shows the step-up
                                      dialog posting to /api/reauth)
    GET /ws/servers/{id}/pty?cols=&rows=   the terminal's WebSocket
    GET /recordings/{id}              playback page (admins, and the session's own user)
    GET /api/recordings/{id}.cast     the recording as asciicast v2

The WebSocket carries the keystrokes and the output as binary frames, and JSON text frames
for the rest: from the browser ``{"type": "resize", "cols", "rows"}``; to the browser
``{"type": "started", "recording"}``, ``{"type": "exit", "code", "signal"}`` and
``{"type": "error", "message"}``. Each side ending ends the other: the browser going away
cancels the gRPC call (the exporter then kills the shell), the shell exiting closes the socket.

Every session is audited (``pty.open`` before the shell starts, ``pty.close`` with the exit
status and byte counts after) and recorded (collector/fleet/recordings.py).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import weakref
from collections.abc import AsyncIterator
from typing import Any

import grpc
from aiohttp import WSMsgType, web

from vpsmon.collector import servers as records
from vpsmon.collector.accounts import User
from vpsmon.collector.fleet import recordings
from vpsmon.collector.fleet.agents import agent_enrolment
from vpsmon.v1 import agent_pb2 as pb
from vpsmon.web import access
from vpsmon.web.command import Agent, access_gone, audit_command, check_ws_origin, open_agent
from vpsmon.web.keys import CONFIG, POOL

log = logging.getLogger("vpsmon.web.terminal")

# Keystrokes and pastes arrive as frames of at most this; a bigger paste is refused, not held.
MAX_FRAME = 1024 * 1024
RECHECK_SECONDS = 10.0
DEFAULT_SIZE = (80, 24)


class TerminalSessions:
    """The open terminal sockets (closed on shutdown) and the terminal settings."""

    def __init__(
        self,
        max_recording_bytes: int = recordings.DEFAULT_MAX_BYTES,
        recheck_seconds: float = RECHECK_SECONDS,
    ) -> None:
        self.sockets: weakref.WeakSet[web.WebSocketResponse] = weakref.WeakSet()
        self.max_recording_bytes = max_recording_bytes
        self.recheck_seconds = recheck_seconds

    async def close_all(self) -> None:
        for ws in list(self.sockets):
            await ws.close(code=1001, message=b"server shutting down")


TERMINALS = web.AppKey("terminals", TerminalSessions)


def setup(app: web.Application) -> None:
    app[TERMINALS] = TerminalSessions(app[CONFIG].terminal_recording_max_bytes)
    app.router.add_get(r"/servers/{id:\d+}/terminal", terminal_page)
    app.router.add_get(r"/api/servers/{id:\d+}/terminal", api_terminal_check)
    app.router.add_get(r"/ws/servers/{id:\d+}/pty", pty_socket)
    app.router.add_get(r"/recordings/{id:\d+}", playback_page)
    app.router.add_get(r"/api/recordings/{id:\d+}.cast", api_recording_cast)
    app.on_shutdown.append(_close_terminals)
    app.cleanup_ctx.append(_expire_recordings)


def _id(request: web.Request) -> int:
    return int(request.match_info["id"])


def _with_xterm_csp(response: web.Response) -> web.Response:
    """xterm.js writes its theme and cell-size rules into <style> elements it creates, which a
    style-src without 'unsafe-inline' blocks (the terminal then draws nothing usable). Only
    these two pages allow inline styles; scripts stay 'self' only, and every value on them is
    escaped, so there is no markup an attacker could add styles to."""
    from vpsmon.web.app import CSP  # web.app imports this module

    response.headers["Content-Security-Policy"] = CSP.replace(
        "style-src 'self'", "style-src 'self' 'unsafe-inline'"
    )
    return response


# ---------------------------------------------------------------- the page


async def terminal_page(request: web.Request) -> web.Response:
    from vpsmon.web.app import render  # web.app imports this module

    server_id = _id(request)
    access.require_role(request, "operator")
    await access.require_server(request, server_id)
    server = await records.get_server(request.app[POOL], server_id)
    if server is None:
        raise web.HTTPNotFound(text="no such server")
    record = await agent_enrolment(request.app[POOL], server_id)
    if record is None or "pty" not in record.features:
        reason = "terminal.not_enrolled" if record is None else "terminal.not_enabled"
        return render(request, "terminal.html", status=409, server=server, unavailable=reason)
    # Step-up here too, so following the link asks for the password before the page; the page
    # itself asks again (inline) when a later tab finds the step-up expired.
    await access.require_step_up(request)
    return _with_xterm_csp(render(request, "terminal.html", server=server, unavailable=None))


async def api_terminal_check(request: web.Request) -> web.Response:
    """Every check the WebSocket makes, answered as JSON the page can act on (a failed
    WebSocket handshake shows the page no status or reason)."""
    agent = await open_agent(request, _id(request), "pty")
    return web.json_response({"ok": True, "server": agent.server_id})


# ---------------------------------------------------------------- the bridge


def _size(request: web.Request) -> tuple[int, int]:
    try:
        cols = int(request.query.get("cols", DEFAULT_SIZE[0]))
        rows = int(request.query.get("rows", DEFAULT_SIZE[1]))
    except ValueError:
        raise web.HTTPBadRequest(text="cols and rows must be whole numbers") from None
    return recordings.clamp_size(cols, rows)


async def pty_socket(request: web.Request) -> web.StreamResponse:
    check_ws_origin(request)  # first: another site learns nothing, not even the login state
    server_id = _id(request)
    agent = await open_agent(request, server_id, "pty")
    cols, rows = _size(request)
    ws = web.WebSocketResponse(heartbeat=30, max_msg_size=MAX_FRAME)
    await ws.prepare(request)
    sessions = request.app[TERMINALS]
    sessions.sockets.add(ws)
    try:
        await PtyBridge(request, ws, agent, sessions).run(cols, rows)
    finally:
        sessions.sockets.discard(ws)
        if not ws.closed:
            await ws.close()
    return ws


class PtyBridge:
    """One browser tab's terminal: WebSocket ⇄ Agent.Pty, recorded and audited."""

    def __init__(
        self,
        request: web.Request,
        ws: web.WebSocketResponse,
        agent: Agent,
        sessions: TerminalSessions,
    ) -> None:
        self.request = request
        self.ws = ws
        self.agent = agent
        self.sessions = sessions
        self.exit: pb.ExitStatus | None = None
        self.error: str | None = None
        self.close_code = 1000

    async def run(self, cols: int, rows: int) -> None:
        user, server_id = self.agent.user, self.agent.server_id
        self.recording = recording = await recordings.SessionRecording.begin(
            self.request.app[POOL],
            user=user,
            server_id=server_id,
            cols=cols,
            rows=rows,
            max_bytes=self.sessions.max_recording_bytes,
        )
        # Outbox order: the audit entry exists before the shell does.
        await audit_command(
            self.request,
            "pty.open",
            server_id,
            {"recording": recording.id, "cols": cols, "rows": rows},
        )
        call = self.agent.stub.Pty(metadata=self.agent.metadata)
        tasks: list[asyncio.Task[None]] = []
        try:
            await call.write(
                pb.PtyClientMessage(
                    start=pb.PtyStart(size=pb.PtySize(rows=rows, cols=cols), term="xterm-256color")
                )
            )
            await self.ws.send_str(json.dumps({"type": "started", "recording": recording.id}))
            tasks = [
                asyncio.create_task(self._from_exporter(call)),
                asyncio.create_task(self._from_browser(call)),
                asyncio.create_task(recording.flush_periodically()),
                asyncio.create_task(self._recheck_access()),
            ]
            exporter_side, browser_side = tasks[0], tasks[1]
            done, _ = await asyncio.wait(
                [exporter_side, browser_side, tasks[3]], return_when=asyncio.FIRST_COMPLETED
            )
            if browser_side in done and not self.ws.closed and not exporter_side.done():
                # A keystroke could not be written because the shell just ended: let the
                # exporter's last output and exit status through before closing.
                await asyncio.wait([exporter_side], timeout=5)
        except ConnectionResetError:  # the browser went away while we started
            pass
        except Exception as err:  # the exporter refused the call or is unreachable
            await self._failed(err, call)
            with contextlib.suppress(ConnectionResetError):
                await self.ws.send_str(json.dumps({"type": "error", "message": self.error}))
        finally:
            for task in tasks:
                task.cancel()
            for task in tasks:
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await task
            call.cancel()  # the browser went away first: the exporter ends the shell
            await self._finish()

    async def _failed(self, err: BaseException, call: Any = None) -> None:
        if isinstance(err, grpc.aio.AioRpcError):
            self.error = f"{err.code().name}: {err.details()}"
        elif call is not None and call.done():  # a write after the exporter ended the call
            self.error = f"{(await call.code()).name}: {await call.details()}"
        else:
            self.error = str(err) or type(err).__name__
        self.close_code = 1011

    async def _from_exporter(self, call: Any) -> None:
        try:
            while True:
                message = await call.read()
                if message is grpc.aio.EOF:
                    return
                kind = message.WhichOneof("kind")
                if kind == "data":
                    self.recording.output(message.data)
                    await self.ws.send_bytes(message.data)
                elif kind == "exit":
                    self.exit = message.exit
                    await self.ws.send_str(
                        json.dumps(
                            {
                                "type": "exit",
                                "code": message.exit.code,
                                "signal": message.exit.signal,
                            }
                        )
                    )
        except grpc.aio.AioRpcError as err:
            if err.code() == grpc.StatusCode.CANCELLED and self.ws.closed:
                return
            await self._failed(err)
            with contextlib.suppress(ConnectionResetError):
                await self.ws.send_str(json.dumps({"type": "error", "message": self.error}))
        except ConnectionResetError:
            return

    async def _from_browser(self, call: Any) -> None:
        async for msg in self.ws:
            if msg.type == WSMsgType.BINARY:
                self.recording.typed(msg.data)
                await call.write(pb.PtyClientMessage(data=msg.data))
            elif msg.type == WSMsgType.TEXT:
                size = _resize(msg.data)
                if size is not None:
                    self.recording.resize(size[0], size[1])
                    await call.write(
                        pb.PtyClientMessage(resize=pb.PtySize(cols=size[0], rows=size[1]))
                    )
            elif msg.type == WSMsgType.ERROR:
                return

    async def _recheck_access(self) -> None:
        """A terminal must not outlive its user's access: logout, a disabled account, a lower
        role or a revoked server grant close it within `recheck_seconds`."""
        while True:
            await asyncio.sleep(self.sessions.recheck_seconds)
            try:
                user = await access.recheck_credentials(self.request)
                allowed = user is not None and await _still_allowed(
                    self.request, user, self.agent.server_id
                )
            except Exception as err:  # database away: keep the session, look again later
                log.warning("cannot re-check terminal access error=%s", err)
                continue
            if not allowed:
                self.error = "access ended"
                with contextlib.suppress(ConnectionResetError):
                    await self.ws.send_str(json.dumps({"type": "error", "message": self.error}))
                self.close_code = 4403
                return

    async def _finish(self) -> None:
        status = self.exit
        detail: dict[str, Any] = self.recording.summary()
        if status is not None:
            detail["exit_code"] = status.code
            if status.signal:
                detail["signal"] = status.signal
        if self.error:
            detail["error"] = self.error
        await self.recording.end(
            exit_code=status.code if status is not None else None,
            exit_signal=status.signal if status is not None else None,
        )
        await audit_command(
            self.request, "pty.close", self.agent.server_id, detail, success=self.error is None
        )
        if not self.ws.closed:
            await self.ws.close(code=self.close_code)


async def _still_allowed(request: web.Request, user: User, server_id: int) -> bool:
    return await access_gone(request, user, server_id) is None


def _resize(text: str) -> tuple[int, int] | None:
    """(cols, rows) of a ``{"type": "resize", "cols", "rows"}`` frame; anything else is
    ignored (a page of another version must not break the session)."""
    try:
        message = json.loads(text)
    except ValueError:
        return None
    if not isinstance(message, dict) or message.get("type") != "resize":
        return None
    cols, rows = message.get("cols"), message.get("rows")
    if not all(isinstance(v, int) and not isinstance(v, bool) for v in (cols, rows)):
        return None
    assert isinstance(cols, int) and isinstance(rows, int)
    return recordings.clamp_size(cols, rows)


# ---------------------------------------------------------------- playback


async def _readable_recording(request: web.Request) -> recordings.Recording:
    """Admins read every recording; an operator reads their own sessions on servers still
    granted to them. Anyone else gets 404, as for a recording that does not exist."""
    user = access.require_user(request)
    found = await recordings.get(request.app[POOL], _id(request))
    if found is not None:
        if user.role == "admin":
            return found
        if (
            found.user_id == user.id
            and found.server_id is not None
            and await _still_allowed(request, user, found.server_id)
        ):
            return found
    raise web.HTTPNotFound(text="no such recording")


async def playback_page(request: web.Request) -> web.Response:
    from vpsmon.web.app import render  # web.app imports this module

    recording = await _readable_recording(request)
    return _with_xterm_csp(render(request, "playback.html", recording=recording))


async def api_recording_cast(request: web.Request) -> web.StreamResponse:
    recording = await _readable_recording(request)
    response = web.StreamResponse(
        headers={
            "Content-Type": "application/x-asciicast; charset=utf-8",
            "Content-Disposition": f'inline; filename="vpsmon-recording-{recording.id}.cast"',
            "Cache-Control": "no-store",
        }
    )
    await response.prepare(request)
    async for chunk in recordings.cast_lines(request.app[POOL], recording):
        await response.write(chunk.encode())
    await response.write_eof()
    return response


# ---------------------------------------------------------------- lifecycle


async def _close_terminals(app: web.Application) -> None:
    await app[TERMINALS].close_all()


async def _expire_recordings(app: web.Application) -> AsyncIterator[None]:
    async def loop() -> None:
        while True:
            with contextlib.suppress(Exception):
                await recordings.delete_older_than(app[POOL], app[CONFIG].audit_retention)
            await asyncio.sleep(3600)

    task = asyncio.create_task(loop())
    yield
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task
