"""The web terminal's WebSocket bridge against real exporters (issue #7): a shell echoes what
is typed, each side ending ends the other, every refusal happens before any shell starts, and
every session is audited and recorded (output, never keystrokes)."""

from __future__ import annotations

import asyncio
import json
import re
import urllib.parse
from typing import Any

import aiohttp
import pytest

from tests.command_fixtures import CommandRig, EnrollServer, Web
from vpsmon.collector import access as grants
from vpsmon.collector import audit
from vpsmon.web.terminal import TERMINALS


async def connect(
    web: Web, client: aiohttp.ClientSession, server_id: int, origin: str | None = None, **q: Any
) -> aiohttp.ClientWebSocketResponse:
    query = "&".join(f"{k}={v}" for k, v in {"cols": 100, "rows": 30, **q}.items())
    return await client.ws_connect(
        f"/ws/servers/{server_id}/pty?{query}", origin=origin or web.origin, autoping=True
    )


async def read_until(
    ws: aiohttp.ClientWebSocketResponse, pattern: str, seconds: float = 20
) -> tuple[str, list[dict[str, Any]]]:
    """Output until `pattern` (a regex) appears in it, and the JSON frames seen meanwhile."""
    out, frames = b"", []
    async with asyncio.timeout(seconds):
        while not re.search(pattern, out.decode(errors="replace")):
            msg = await ws.receive()
            if msg.type == aiohttp.WSMsgType.BINARY:
                out += msg.data
            elif msg.type == aiohttp.WSMsgType.TEXT:
                frames.append(json.loads(msg.data))
                if re.search(pattern, msg.data):
                    break
            else:
                raise AssertionError(f"socket ended ({msg.type}) before {pattern!r}: {out!r}")
    return out.decode(errors="replace"), frames


async def frames_until_closed(ws: aiohttp.ClientWebSocketResponse) -> list[dict[str, Any]]:
    frames = []
    async with asyncio.timeout(20):
        async for msg in ws:
            if msg.type == aiohttp.WSMsgType.TEXT:
                frames.append(json.loads(msg.data))
    return frames


async def entries(rig: CommandRig, action: str) -> list[audit.AuditEntry]:
    return await audit.search(rig.pool, audit.AuditQuery(action=action))


async def wait_for_entry(rig: CommandRig, action: str) -> audit.AuditEntry:
    """The newest `action` entry, waiting for it: it is written as the session ends."""
    async with asyncio.timeout(20):
        while True:
            found = await entries(rig, action)
            if found:
                return found[0]
            await asyncio.sleep(0.05)


async def revoke_all(rig: CommandRig, username: str) -> None:
    await grants.set_grants(
        rig.pool, rig.users[username].id, all_servers=False, server_ids=(), groups=()
    )


async def handshake_status(
    web: Web, client: aiohttp.ClientSession, server_id: int, origin: str | None = None
) -> int:
    with pytest.raises(aiohttp.WSServerHandshakeError) as err:
        await connect(web, client, server_id, origin=origin)
    return err.value.status


async def test_a_terminal_echoes_typed_input_and_records_output_but_not_keystrokes(
    command_rig: CommandRig, enrolled_server: EnrollServer
) -> None:
    box = await enrolled_server("pty")
    await command_rig.grant("olga", box.server_id)
    web = await command_rig.start_web()
    async with web.client() as client:
        await web.login(client, "olga")
        ws = await connect(web, client, box.server_id)
        _, frames = await read_until(ws, '"started"')
        recording_id = frames[-1]["recording"]
        await ws.send_bytes(b"echo hello-$((6*7))\r")
        await read_until(ws, r"hello-42")
        await ws.send_str(json.dumps({"type": "resize", "cols": 132, "rows": 43}))
        await ws.send_bytes(b"stty size\r")
        await read_until(ws, r"43 132")
        # A secret typed at a prompt that does not echo (like sudo's) is never recorded.
        await ws.send_bytes(b"stty -echo; read x; stty echo; echo got-${#x}\r")
        await asyncio.sleep(0.3)
        await ws.send_bytes(b"topsecret\r")
        await read_until(ws, r"got-9")
        await ws.send_bytes(b"exit 3\r")
        frames = await frames_until_closed(ws)
        assert {"type": "exit", "code": 3, "signal": 0} in frames
        assert ws.close_code == 1000

        opened = await wait_for_entry(command_rig, "pty.open")
        closed = await wait_for_entry(command_rig, "pty.close")
        assert (opened.username, opened.server_id, opened.success) == ("olga", box.server_id, True)
        assert opened.detail == {"recording": recording_id, "cols": 100, "rows": 30}
        assert closed.success and closed.detail["exit_code"] == 3
        assert closed.detail["recording"] == recording_id
        assert closed.detail["bytes_in"] > len("topsecret") and closed.detail["bytes_out"] > 0
        assert opened.id < closed.id

        # The owner may replay their own session.
        cast = await client.get(f"/api/recordings/{recording_id}.cast")
        assert cast.status == 200
        assert cast.headers["Content-Type"].startswith("application/x-asciicast")
        text = await cast.text()
    header, *events = [json.loads(line) for line in text.splitlines()]
    assert header["version"] == 2 and (header["width"], header["height"]) == (100, 30)
    output = "".join(e[2] for e in events if e[1] == "o")
    assert "hello-42" in output and "got-9" in output
    assert "topsecret" not in text
    assert [132, 43] in [[int(v) for v in e[2].split("x")] for e in events if e[1] == "r"]


async def test_a_websocket_from_another_origin_is_refused_before_anything_runs(
    command_rig: CommandRig, enrolled_server: EnrollServer
) -> None:
    box = await enrolled_server("pty")
    await command_rig.grant("olga", box.server_id)
    web = await command_rig.start_web()
    async with web.client() as client:
        await web.login(client, "olga")
        assert await handshake_status(web, client, box.server_id, "http://evil.example") == 403
        # Same host, another port or scheme is another origin too.
        other_port = web.origin.rsplit(":", 1)[0] + ":1"
        assert await handshake_status(web, client, box.server_id, other_port) == 403
        # The same site is accepted (the check is not refusing everything).
        ws = await connect(web, client, box.server_id)
        await read_until(ws, '"started"')
        await ws.close()
    await wait_for_entry(command_rig, "pty.close")
    assert len(await entries(command_rig, "pty.open")) == 1


async def test_a_viewer_cannot_open_a_terminal_even_on_a_granted_server(
    command_rig: CommandRig, enrolled_server: EnrollServer
) -> None:
    box = await enrolled_server("pty")
    await command_rig.grant("vic", box.server_id)
    web = await command_rig.start_web()
    async with web.client() as client:
        await web.login(client, "vic")
        assert await handshake_status(web, client, box.server_id) == 403
        assert (await client.get(f"/api/servers/{box.server_id}/terminal")).status == 403
        assert (await client.get(f"/servers/{box.server_id}/terminal")).status == 403
        detail = await (await client.get(f"/servers/{box.server_id}")).text()
        assert "open-terminal" not in detail
    assert await entries(command_rig, "pty.open") == []


async def test_an_operator_gets_404_for_a_server_not_granted_to_them(
    command_rig: CommandRig, enrolled_server: EnrollServer
) -> None:
    box = await enrolled_server("pty")
    web = await command_rig.start_web()
    async with web.client() as client:
        await web.login(client, "olga")
        assert await handshake_status(web, client, box.server_id) == 404
        assert await handshake_status(web, client, box.server_id + 1000) == 404
        check = await client.get(f"/api/servers/{box.server_id}/terminal")
        assert check.status == 404 and (await check.json())["error"] == "no such server"
    assert await entries(command_rig, "pty.open") == []


async def test_pty_disabled_on_the_exporter_is_refused_there_even_when_the_collector_asks(
    command_rig: CommandRig, enrolled_server: EnrollServer
) -> None:
    # The enrolment record says pty, the exporter's own config says no.
    box = await enrolled_server("pty", **{"command.pty": False, "command.exec": True})
    await command_rig.grant("olga", box.server_id)
    web = await command_rig.start_web()
    async with web.client() as client:
        await web.login(client, "olga")
        ws = await connect(web, client, box.server_id)
        frames = await frames_until_closed(ws)
        errors = [f["message"] for f in frames if f["type"] == "error"]
        assert errors and errors[0].startswith("PERMISSION_DENIED"), frames
        assert not any(f["type"] == "exit" for f in frames)
        assert ws.close_code == 1011
    closed = await wait_for_entry(command_rig, "pty.close")
    assert not closed.success and "PERMISSION_DENIED" in closed.detail["error"]


async def test_a_server_without_pty_in_its_enrolment_is_refused_by_the_collector(
    command_rig: CommandRig, enrolled_server: EnrollServer
) -> None:
    box = await enrolled_server("exec")
    await command_rig.grant("olga", box.server_id)
    web = await command_rig.start_web()
    async with web.client() as client:
        await web.login(client, "olga")
        assert await handshake_status(web, client, box.server_id) == 403
        check = await client.get(f"/api/servers/{box.server_id}/terminal")
        assert check.status == 403 and "pty is not enabled" in (await check.json())["error"]
        page = await client.get(f"/servers/{box.server_id}/terminal")
        assert page.status == 409 and "terminal-unavailable" in await page.text()


async def test_an_expired_step_up_is_asked_again_before_a_terminal_opens(
    command_rig: CommandRig, enrolled_server: EnrollServer
) -> None:
    box = await enrolled_server("pty")
    await command_rig.grant("olga", box.server_id)
    web = await command_rig.start_web()
    async with web.client() as client:
        csrf = await web.login(client, "olga")
        await command_rig.age_step_up("olga")
        check = await client.get(f"/api/servers/{box.server_id}/terminal")
        assert check.status == 401 and (await check.json())["reauth"] == "/reauth"
        page = await client.get(f"/servers/{box.server_id}/terminal", allow_redirects=False)
        assert page.status == 302
        location = urllib.parse.unquote(page.headers["Location"])
        assert location == f"/reauth?next=/servers/{box.server_id}/terminal"
        with pytest.raises(aiohttp.WSServerHandshakeError):
            await connect(web, client, box.server_id)
        # What the page's dialog does.
        wrong = await client.post(
            "/api/reauth", json={"password": "nope"}, headers={"X-CSRF-Token": csrf}
        )
        assert wrong.status == 401
        ok = await client.post(
            "/api/reauth",
            json={"password": "correct horse battery"},
            headers={"X-CSRF-Token": csrf},
        )
        assert ok.status == 200
        assert (await client.get(f"/api/servers/{box.server_id}/terminal")).status == 200
        page = await client.get(f"/servers/{box.server_id}/terminal")
        assert page.status == 200
        # xterm.js needs inline <style>; scripts stay same-origin only.
        csp = page.headers["Content-Security-Policy"]
        assert "style-src 'self' 'unsafe-inline'" in csp and "script-src 'self';" in csp
    assert await entries(command_rig, "pty.open") == []


async def test_closing_the_browser_side_ends_the_shell_on_the_exporter(
    command_rig: CommandRig, enrolled_server: EnrollServer
) -> None:
    box = await enrolled_server("pty")
    await command_rig.grant("olga", box.server_id)
    web = await command_rig.start_web()
    async with web.client() as client:
        await web.login(client, "olga")
        ws = await connect(web, client, box.server_id)
        await read_until(ws, '"started"')
        await ws.send_bytes(b"echo pid=$$\r")
        out, _ = await read_until(ws, r"pid=\d+")
        pid = int(re.findall(r"pid=(\d+)", out)[-1])
        assert running(pid)
        await ws.close()
    closed = await wait_for_entry(command_rig, "pty.close")
    assert closed.success and "exit_code" not in closed.detail
    async with asyncio.timeout(10):
        while True:
            if not running(pid):
                break
            await asyncio.sleep(0.05)


def running(pid: int) -> bool:
    """The process exists and is not a zombie waiting for its parent."""
    try:
        with open(f"/proc/{pid}/status") as f:
            return "zombie" not in f.read().lower()
    except FileNotFoundError:
        return False


async def test_revoking_the_grant_closes_an_open_terminal(
    command_rig: CommandRig, enrolled_server: EnrollServer
) -> None:
    box = await enrolled_server("pty")
    await command_rig.grant("olga", box.server_id)
    web = await command_rig.start_web()
    web.app[TERMINALS].recheck_seconds = 0.2
    async with web.client() as client:
        await web.login(client, "olga")
        ws = await connect(web, client, box.server_id)
        await read_until(ws, '"started"')
        await revoke_all(command_rig, "olga")
        frames = await frames_until_closed(ws)
        assert {"type": "error", "message": "access ended"} in frames
        assert ws.close_code == 4403


async def test_shutdown_closes_open_terminals(
    command_rig: CommandRig, enrolled_server: EnrollServer
) -> None:
    box = await enrolled_server("pty")
    await command_rig.grant("olga", box.server_id)
    web = await command_rig.start_web()
    async with web.client() as client:
        await web.login(client, "olga")
        ws = await connect(web, client, box.server_id)
        await read_until(ws, '"started"')
        assert len(web.app[TERMINALS].sockets) == 1
        await web.app[TERMINALS].close_all()
        await frames_until_closed(ws)
        assert ws.close_code == 1001
    await wait_for_entry(command_rig, "pty.close")


async def test_recordings_are_for_admins_and_the_session_owner_only(
    command_rig: CommandRig, enrolled_server: EnrollServer
) -> None:
    box = await enrolled_server("pty")
    await command_rig.grant("olga", box.server_id)
    await command_rig.grant("vic", box.server_id)
    web = await command_rig.start_web()
    async with web.client() as client:
        await web.login(client, "olga")
        ws = await connect(web, client, box.server_id)
        _, frames = await read_until(ws, '"started"')
        recording_id = frames[-1]["recording"]
        await ws.send_bytes(b"echo played-$((2+3))\rexit\r")
        await frames_until_closed(ws)
    await wait_for_entry(command_rig, "pty.close")
    other = await command_rig.pool.fetchval(
        "INSERT INTO users (username, password_hash, role) SELECT 'otto', password_hash,"
        " 'operator' FROM users WHERE username = 'olga' RETURNING id"
    )
    await grants.grant_server(command_rig.pool, other, box.server_id)
    for name, status in (("vic", 404), ("otto", 404), ("root", 200)):
        async with web.client() as client:
            await web.login(client, name)
            cast = await client.get(f"/api/recordings/{recording_id}.cast")
            page = await client.get(f"/recordings/{recording_id}")
            assert (name, cast.status, page.status) == (name, status, status)
            if name == "root":
                assert "played-5" in await cast.text()
                audit_page = await (await client.get("/audit?action=pty.")).text()
                assert f'href="/recordings/{recording_id}"' in audit_page
    # The owner loses the recording with the server's grant.
    await revoke_all(command_rig, "olga")
    async with web.client() as client:
        await web.login(client, "olga")
        assert (await client.get(f"/api/recordings/{recording_id}.cast")).status == 404


async def test_a_session_past_the_recording_cap_goes_on_and_its_recording_is_truncated(
    command_rig: CommandRig, enrolled_server: EnrollServer
) -> None:
    box = await enrolled_server("pty")
    await command_rig.grant("olga", box.server_id)
    web = await command_rig.start_web()
    sessions = web.app[TERMINALS]
    assert sessions.max_recording_bytes == command_rig.config.terminal_recording_max_bytes
    sessions.max_recording_bytes = 2000
    async with web.client() as client:
        await web.login(client, "olga")
        ws = await connect(web, client, box.server_id)
        _, frames = await read_until(ws, '"started"')
        recording_id = frames[-1]["recording"]
        await ws.send_bytes(b"for i in $(seq 1 400); do echo line-$i; done; echo done-$((1+1))\r")
        await read_until(ws, r"done-2")  # the terminal showed everything
        await ws.send_bytes(b"exit\r")
        await frames_until_closed(ws)
    closed = await wait_for_entry(command_rig, "pty.close")
    assert closed.detail["truncated"] is True and closed.detail["bytes_out"] > 3000
    async with web.client() as client:
        await web.login(client, "root")
        text = await (await client.get(f"/api/recordings/{recording_id}.cast")).text()
        page = await (await client.get(f"/recordings/{recording_id}")).text()
    lines = text.splitlines()[1:]
    assert len("".join(line + "\n" for line in lines).encode()) <= 2000
    output = "".join(json.loads(line)[2] for line in lines)
    assert "line-1\r\nline-2\r\n" in output and "done-2" not in output
    assert 'data-testid="truncated"' in page


async def test_typing_while_the_shell_exits_still_delivers_the_exit_status(
    command_rig: CommandRig, enrolled_server: EnrollServer
) -> None:
    box = await enrolled_server("pty")
    await command_rig.grant("olga", box.server_id)
    web = await command_rig.start_web()
    async with web.client() as client:
        await web.login(client, "olga")
        ws = await connect(web, client, box.server_id)
        await read_until(ws, '"started"')
        await ws.send_bytes(b"exit 4\r")
        frames: list[dict[str, Any]] = []

        async def keep_typing() -> None:
            while not ws.closed:
                await ws.send_bytes(b"x")
                await asyncio.sleep(0.002)

        typing = asyncio.create_task(keep_typing())
        try:
            frames = await frames_until_closed(ws)
        finally:
            typing.cancel()
        assert {"type": "exit", "code": 4, "signal": 0} in frames, frames
    closed = await wait_for_entry(command_rig, "pty.close")
    assert closed.detail["exit_code"] == 4
