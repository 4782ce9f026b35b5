"""web/command.py open_agent against real enrolled exporters: who may reach which server's
command channel, and what the exporter refuses on its own (issue #7)."""

from __future__ import annotations

from pathlib import Path

import aiohttp
import grpc
from aiohttp import web

from tests.command_fixtures import CommandRig, EnrollServer, Web
from vpsmon.collector import audit
from vpsmon.collector.fleet.agents import revoke_agent
from vpsmon.collector.fleet.pool import AgentPool
from vpsmon.exporter.security import ensure_self_signed, fingerprint
from vpsmon.v1 import agent_pb2 as pb
from vpsmon.web.command import audit_command, check_ws_origin, open_agent


async def _exec(request: web.Request) -> web.Response:
    """What a real exec handler does: open_agent, audit first, then run."""
    server_id = int(request.match_info["id"])
    agent = await open_agent(request, server_id, "exec")
    argv = (await request.json())["argv"]
    await audit_command(request, "exec", server_id, {"argv": argv})
    out = b""
    exit_code = None
    try:
        async for message in agent.stub.Exec(pb.ExecRequest(argv=argv), **agent.options(10)):
            if message.WhichOneof("kind") == "stdout":
                out += message.stdout
            elif message.WhichOneof("kind") == "exit":
                exit_code = message.exit.code
    except grpc.aio.AioRpcError as err:
        return web.json_response({"grpc": err.code().name, "details": err.details()}, status=502)
    return web.json_response(
        {"stdout": out.decode(), "exit": exit_code, "user": agent.user.username}
    )


async def _files(request: web.Request) -> web.Response:
    agent = await open_agent(request, int(request.match_info["id"]), "files")
    return web.json_response({"server": agent.server.name})


async def _socket(request: web.Request) -> web.StreamResponse:
    await open_agent(request, int(request.match_info["id"]), "pty")
    check_ws_origin(request)
    ws = web.WebSocketResponse()
    await ws.prepare(request)
    await ws.send_str("open")
    await ws.close()
    return ws


def routes(app: web.Application) -> None:
    app.router.add_post("/api/test/exec/{id}", _exec)
    app.router.add_get("/api/test/files/{id}", _files)
    app.router.add_get("/api/test/pty/{id}", _socket)


async def run(web_: Web, user: str, server_id: int, argv: list[str]) -> aiohttp.ClientResponse:
    async with web_.client() as client:
        csrf = await web_.login(client, user)
        resp = await client.post(
            f"/api/test/exec/{server_id}", json={"argv": argv}, headers={"X-CSRF-Token": csrf}
        )
        await resp.read()
        return resp


async def test_an_operator_runs_a_command_on_a_granted_enrolled_server_and_it_is_audited(
    command_rig: CommandRig, enrolled_server: EnrollServer
) -> None:
    box = await enrolled_server("exec")
    await command_rig.grant("olga", box.server_id)
    web_ = await command_rig.start_web(routes)
    resp = await run(web_, "olga", box.server_id, ["id", "-un"])
    assert resp.status == 200, await resp.text()
    assert await resp.json() == {"stdout": "nobody\n", "exit": 0, "user": "olga"}
    entries = await audit.search(command_rig.pool, audit.AuditQuery(action="exec"))
    assert [(e.username, e.server_id, e.detail["argv"]) for e in entries] == [
        ("olga", box.server_id, ["id", "-un"])
    ]


async def test_a_viewer_cannot_exec_even_on_a_server_granted_to_them(
    command_rig: CommandRig, enrolled_server: EnrollServer
) -> None:
    box = await enrolled_server("exec")
    await command_rig.grant("vic", box.server_id)
    web_ = await command_rig.start_web(routes)
    marker = box.files / "ran"
    resp = await run(web_, "vic", box.server_id, ["touch", str(marker)])
    assert resp.status == 403
    assert await resp.json() == {"error": "forbidden: this needs the operator role"}
    assert not marker.exists()
    assert await audit.search(command_rig.pool, audit.AuditQuery(action="exec")) == []


async def test_an_operator_cannot_reach_a_server_not_granted_to_them(
    command_rig: CommandRig, enrolled_server: EnrollServer
) -> None:
    box = await enrolled_server("exec")
    web_ = await command_rig.start_web(routes)
    marker = box.files / "ran"
    hidden = await run(web_, "olga", box.server_id, ["touch", str(marker)])
    missing = await run(web_, "olga", 999_999, ["touch", str(marker)])
    assert hidden.status == missing.status == 404
    assert await hidden.json() == await missing.json() == {"error": "no such server"}
    assert not marker.exists()


async def test_a_server_not_enrolled_answers_409_and_a_feature_not_enabled_403(
    command_rig: CommandRig, enrolled_server: EnrollServer
) -> None:
    box = await enrolled_server("exec", name="web-1")
    await command_rig.grant("olga", box.server_id)
    web_ = await command_rig.start_web(routes)
    async with web_.client() as client:
        await web_.login(client, "olga")
        files = await client.get(f"/api/test/files/{box.server_id}")
        assert files.status == 403
        assert await files.json() == {
            "error": "files is not enabled on server 'web-1': enrol it again with files ticked"
        }
        await revoke_agent(command_rig.pool, box.server_id)
        gone = await client.get(f"/api/test/files/{box.server_id}")
        assert gone.status == 409
        assert "'web-1' is not enrolled for management" in (await gone.json())["error"]


async def test_exec_needs_a_fresh_step_up(
    command_rig: CommandRig, enrolled_server: EnrollServer
) -> None:
    box = await enrolled_server("exec")
    await command_rig.grant("olga", box.server_id)
    web_ = await command_rig.start_web(routes)
    marker = box.files / "ran"
    async with web_.client() as client:
        csrf = await web_.login(client, "olga")
        await command_rig.age_step_up("olga")
        resp = await client.post(
            f"/api/test/exec/{box.server_id}",
            json={"argv": ["touch", str(marker)]},
            headers={"X-CSRF-Token": csrf},
        )
        assert resp.status == 401
        assert await resp.json() == {"error": "re-authentication required", "reauth": "/reauth"}
    assert not marker.exists()


async def test_a_wrong_token_on_record_is_refused_by_the_exporter_before_anything_runs(
    command_rig: CommandRig, enrolled_server: EnrollServer
) -> None:
    box = await enrolled_server("exec")
    await command_rig.grant("olga", box.server_id)
    await command_rig.pool.execute(
        "UPDATE agents SET command_token = $2 WHERE server_id = $1", box.server_id, b"w" * 43
    )
    web_ = await command_rig.start_web(routes)
    marker = box.files / "ran"
    resp = await run(web_, "olga", box.server_id, ["touch", str(marker)])
    assert resp.status == 502
    assert (await resp.json())["grpc"] == "UNAUTHENTICATED"
    assert not marker.exists()


async def test_a_lost_command_token_key_file_is_an_error_naming_it_and_nothing_runs(
    command_rig: CommandRig, enrolled_server: EnrollServer
) -> None:
    box = await enrolled_server("exec")
    await command_rig.grant("olga", box.server_id)
    stored = await command_rig.pool.fetchval(
        "SELECT command_token FROM agents WHERE server_id = $1", box.server_id
    )
    assert stored[:1] == b"\x01" and box.token.encode() not in stored
    key_file = command_rig.token_key.path
    key_file.unlink()  # lost with the data dir: the next use makes a new key
    web_ = await command_rig.start_web(routes)
    marker = box.files / "ran"
    resp = await run(web_, "olga", box.server_id, ["touch", str(marker)])
    assert resp.status == 500
    error = (await resp.json())["error"]
    assert str(key_file) in error and "does not decrypt" in error
    assert not marker.exists()


async def test_a_collector_key_the_exporter_did_not_pin_is_refused_before_anything_runs(
    command_rig: CommandRig, enrolled_server: EnrollServer, tmp_path: Path
) -> None:
    box = await enrolled_server("exec")
    await command_rig.grant("olga", box.server_id)
    # Another collector (its own key pair) that somehow has the token and the exporter's pin.
    stranger = AgentPool(ensure_self_signed(tmp_path / "stranger", stem="collector"))
    command_rig.agents = stranger
    try:
        web_ = await command_rig.start_web(routes)
        marker = box.files / "ran"
        resp = await run(web_, "olga", box.server_id, ["touch", str(marker)])
        assert resp.status == 502
        assert (await resp.json())["grpc"] == "UNAVAILABLE"  # the TLS handshake fails
        assert not marker.exists()
    finally:
        await stranger.close()


async def test_an_exporter_answering_with_another_key_than_the_pinned_one_is_not_trusted(
    command_rig: CommandRig, enrolled_server: EnrollServer, tmp_path: Path
) -> None:
    box = await enrolled_server("exec")
    await command_rig.grant("olga", box.server_id)
    impostor = ensure_self_signed(tmp_path / "impostor").cert
    await command_rig.pool.execute(
        "UPDATE agents SET exporter_cert = $2, exporter_fingerprint = $3 WHERE server_id = $1",
        box.server_id,
        impostor.read_text(),
        fingerprint(impostor),
    )
    web_ = await command_rig.start_web(routes)
    resp = await run(web_, "olga", box.server_id, ["echo", "hi"])
    assert resp.status == 502
    assert (await resp.json())["grpc"] == "UNAVAILABLE"


async def test_a_command_websocket_from_another_origin_is_refused(
    command_rig: CommandRig, enrolled_server: EnrollServer
) -> None:
    box = await enrolled_server("pty")
    await command_rig.grant("olga", box.server_id)
    web_ = await command_rig.start_web(routes)
    async with web_.client() as client:
        await web_.login(client, "olga")
        url = f"/api/test/pty/{box.server_id}"
        for origin in ("http://evil.example", f"{web_.origin}.evil.example", None):
            headers = {"Origin": origin} if origin else {}
            try:
                ws = await client.ws_connect(url, headers=headers)
            except aiohttp.WSServerHandshakeError as err:
                assert err.status == 403, origin
            else:
                await ws.close()
                raise AssertionError(f"Origin {origin!r} was accepted")
        ws = await client.ws_connect(url, headers={"Origin": web_.origin})
        assert (await ws.receive_str()) == "open"
        await ws.close()
