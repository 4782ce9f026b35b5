"""Docker control from the web (issue #7), end to end: the collector's web API, its pooled
channel, a real enrolled exporter and a real dockerd (tests/dockerd.py). Whatever the API says,
the container's state is read back from dockerd itself."""

from __future__ import annotations

import asyncio
import contextlib
import json
import threading
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from tests.command_fixtures import PASSWORD, CommandRig, EnrolledServer, EnrollServer, Web
from tests.dockerd import Dockerd
from vpsmon.collector import tokens
from vpsmon.web.docker import LogText, logs_request, stats_summary
from vpsmon.web.keys import HUB

HOSTILE = '<img src=x onerror="alert(1)">&amp;'


@pytest.fixture
def container(dockerd: Dockerd) -> Iterator[Any]:
    """A busybox container that prints a line, then one more for each file /tmp/go-N."""
    script = (
        "echo first-line; echo to-stderr >&2; n=0; "
        "while :; do if [ -f /tmp/go-$n ]; then cat /tmp/go-$n; n=$((n+1)); fi; sleep 0.1; done"
    )
    made = dockerd.run("sh", "-c", script, name=f"web-{uuid.uuid4().hex[:8]}")
    try:
        yield made
    finally:
        with contextlib.suppress(Exception):
            made.remove(force=True)


def docker_state(dockerd: Dockerd, name: str) -> dict[str, Any]:
    with contextlib.closing(dockerd.client()) as client:
        state: dict[str, Any] = client.api.inspect_container(name)["State"]
        return state


def say(dockerd: Dockerd, name: str, n: int, text: str) -> None:
    """Make the container print `text` (its loop cats /tmp/go-N)."""
    with contextlib.closing(dockerd.client()) as client:
        exec_id = client.api.exec_create(
            name,
            ["sh", "-c", 'printf "%s\\n" "$0" > /tmp/.t && mv /tmp/.t /tmp/go-' + str(n), text],
        )
        client.api.exec_start(exec_id)


async def docker_server(
    enrolled_server: EnrollServer, dockerd: Dockerd, *features: str, **more: Any
) -> EnrolledServer:
    return await enrolled_server(*(features or ("docker",)), **{"docker.host": dockerd.url, **more})


class Session:
    def __init__(self, web: Web, client: aiohttp.ClientSession, csrf: str) -> None:
        self.web, self.client, self.csrf = web, client, csrf

    async def call(
        self, method: str, path: str, body: Any = None, csrf: bool = True
    ) -> tuple[int, Any]:
        headers = {"X-CSRF-Token": self.csrf} if csrf else {}
        async with self.client.request(method, path, json=body, headers=headers) as resp:
            data = await resp.json() if resp.content_type == "application/json" else None
            return resp.status, data


@contextlib.asynccontextmanager
async def session(web: Web, username: str) -> AsyncIterator[Session]:
    async with web.client() as client:
        yield Session(web, client, await web.login(client, username))


async def audit_rows(rig: CommandRig, server_id: int) -> list[dict[str, Any]]:
    rows = await rig.pool.fetch(
        "SELECT action, username, success, detail FROM audit_log"
        " WHERE server_id = $1 AND action LIKE 'docker.%' ORDER BY id",
        server_id,
    )
    return [
        {
            **dict(r),
            "detail": json.loads(r["detail"]) if isinstance(r["detail"], str) else r["detail"],
        }
        for r in rows
    ]


async def read_logs(ws: aiohttp.ClientWebSocketResponse, until: str, limit: float = 30) -> str:
    """Log text from the socket until `until` shows up."""
    text = ""
    deadline = time.monotonic() + limit
    while until not in text:
        msg = await asyncio.wait_for(ws.receive(), max(0.1, deadline - time.monotonic()))
        assert msg.type == aiohttp.WSMsgType.TEXT, msg
        data = json.loads(msg.data)
        assert data["type"] == "log", data
        text += data["data"]
    return text


# ---------------------------------------------------------------- what an operator can do


async def test_an_operator_stops_starts_and_restarts_a_container_as_dockerd_sees_it(
    command_rig: CommandRig, enrolled_server: EnrollServer, dockerd: Dockerd, container: Any
) -> None:
    box = await docker_server(enrolled_server, dockerd)
    await command_rig.grant("olga", box.server_id)
    web = await command_rig.start_web()
    name = container.name
    base = f"/api/servers/{box.server_id}/containers/{name}"
    async with session(web, "olga") as olga:
        status, can = await olga.call("GET", f"/api/servers/{box.server_id}/docker")
        assert (status, can) == (200, {"control": True, "reason": None})
        status, listed = await olga.call("GET", f"/api/servers/{box.server_id}/docker/containers")
        assert status == 200
        assert {"name": name, "state": "running"}.items() <= next(
            c for c in listed["containers"] if c["name"] == name
        ).items()

        status, stopped = await olga.call("POST", base + "/stop", {"timeout": 1})
        assert status == 200, stopped
        assert stopped["container"]["state"] == "exited"
        assert docker_state(dockerd, name)["Running"] is False

        status, started = await olga.call("POST", base + "/start")
        assert status == 200 and started["container"]["state"] == "running"
        first_start = docker_state(dockerd, name)
        assert first_start["Running"] is True

        status, restarted = await olga.call("POST", base + "/restart", {"timeout": 1})
        assert status == 200 and restarted["container"]["state"] == "running"
        after = docker_state(dockerd, name)
        assert after["Running"] is True and after["StartedAt"] != first_start["StartedAt"]

        status, inspected = await olga.call("GET", base + "/inspect")
        assert status == 200 and inspected["inspect"]["Name"] == "/" + name
        status, stats = await olga.call("GET", base + "/stats")
        assert status == 200 and stats["stats"]["memory"] > 0 and stats["stats"]["pids"] >= 1

    rows = await audit_rows(command_rig, box.server_id)
    actions = [(r["action"], r["username"], r["success"]) for r in rows]
    assert actions == [
        ("docker.stop", "olga", True),
        ("docker.stop.result", "olga", True),
        ("docker.start", "olga", True),
        ("docker.start.result", "olga", True),
        ("docker.restart", "olga", True),
        ("docker.restart.result", "olga", True),
        ("docker.inspect", "olga", True),
    ]
    assert rows[0]["detail"] == {"container": name, "timeout": 1}
    assert rows[1]["detail"]["container_id"] == container.id
    assert rows[1]["detail"]["result"] == "exited" and rows[1]["detail"]["name"] == name
    assert rows[1]["detail"]["request"] is not None


async def test_logs_stream_the_lines_the_container_prints_and_follow_gets_new_ones(
    command_rig: CommandRig, enrolled_server: EnrollServer, dockerd: Dockerd, container: Any
) -> None:
    box = await docker_server(enrolled_server, dockerd)
    await command_rig.grant("olga", box.server_id)
    web = await command_rig.start_web()
    path = f"/api/servers/{box.server_id}/containers/{container.name}/logs"
    async with session(web, "olga") as olga:
        # Without follow: what is there, then the end.
        async with olga.client.ws_connect(
            path + "?follow=0&tail=all", headers={"Origin": web.origin}
        ) as ws:
            messages = []
            async for msg in ws:
                messages.append(json.loads(msg.data))
        assert messages[-1] == {"type": "end"}
        assert {"type": "log", "stream": "stdout", "data": "first-line\n"} in messages
        assert {"type": "log", "stream": "stderr", "data": "to-stderr\n"} in messages

        # With follow: new lines arrive while the socket is open, hostile text untouched.
        async with olga.client.ws_connect(
            path + "?follow=1&tail=10&timestamps=1", headers={"Origin": web.origin}
        ) as ws:
            seen = await read_logs(ws, "first-line")
            assert seen.split(" ", 1)[0].startswith(time.strftime("%Y-"))  # a timestamp
            await asyncio.to_thread(say, dockerd, container.name, 0, HOSTILE)
            seen = await read_logs(ws, HOSTILE)
            await asyncio.to_thread(say, dockerd, container.name, 1, "second-new-line")
            assert "second-new-line" in await read_logs(ws, "second-new-line")
    rows = await audit_rows(command_rig, box.server_id)
    assert [(r["action"], r["detail"]["follow"]) for r in rows] == [
        ("docker.logs", False),
        ("docker.logs", True),
    ]


def log_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name == "docker-logs" and t.is_alive()]


async def test_leaving_the_logs_stops_the_exporter_stream(
    command_rig: CommandRig, enrolled_server: EnrollServer, dockerd: Dockerd, container: Any
) -> None:
    box = await docker_server(enrolled_server, dockerd)
    await command_rig.grant("olga", box.server_id)
    web = await command_rig.start_web()
    path = f"/api/servers/{box.server_id}/containers/{container.name}/logs?follow=1"
    before = len(log_threads())
    async with session(web, "olga") as olga:
        ws = await olga.client.ws_connect(path, headers={"Origin": web.origin})
        await read_logs(ws, "first-line")
        # The exporter (in this process) follows dockerd's log in a thread of its own.
        assert len(log_threads()) == before + 1
        await ws.close()  # the browser leaves
        for _ in range(150):  # nothing to wait on but the thread itself
            if len(log_threads()) == before:
                break
            await asyncio.sleep(0.1)
        assert len(log_threads()) == before


async def test_a_followed_log_closes_when_the_users_grant_is_revoked(
    command_rig: CommandRig, enrolled_server: EnrollServer, dockerd: Dockerd, container: Any
) -> None:
    box = await docker_server(enrolled_server, dockerd)
    await command_rig.grant("olga", box.server_id)

    def quick_recheck(app: web.Application) -> None:
        app[HUB].recheck_seconds = 0.2

    web_app = await command_rig.start_web(quick_recheck)
    path = f"/api/servers/{box.server_id}/containers/{container.name}/logs?follow=1"
    before = len(log_threads())
    async with session(web_app, "olga") as olga:
        ws = await olga.client.ws_connect(path, headers={"Origin": web_app.origin})
        await read_logs(ws, "first-line")
        await asyncio.sleep(0.5)  # several re-checks pass while the grant stands
        assert not ws.closed
        await command_rig.pool.execute(
            "DELETE FROM user_server_grants WHERE user_id = $1", command_rig.users["olga"].id
        )
        # Lines printed before the revoke (the stderr line comes on its own and may still be
        # on its way) can precede the error; nothing else may.
        message = {"type": "log"}
        while message["type"] == "log":
            message = json.loads((await asyncio.wait_for(ws.receive(), 30)).data)
        assert message == {"type": "error", "error": "access ended: no such server"}
        closing = await asyncio.wait_for(ws.receive(), 30)
        assert closing.type == aiohttp.WSMsgType.CLOSE and closing.data == 4403
    for _ in range(150):
        if len(log_threads()) == before:
            break
        await asyncio.sleep(0.1)
    assert len(log_threads()) == before


async def test_a_container_that_stops_ends_its_followed_log(
    command_rig: CommandRig, enrolled_server: EnrollServer, dockerd: Dockerd, container: Any
) -> None:
    box = await docker_server(enrolled_server, dockerd)
    await command_rig.grant("olga", box.server_id)
    web = await command_rig.start_web()
    base = f"/api/servers/{box.server_id}/containers/{container.name}"
    async with session(web, "olga") as olga:
        ws = await olga.client.ws_connect(base + "/logs?follow=1", headers={"Origin": web.origin})
        await read_logs(ws, "first-line")
        status, _ = await olga.call("POST", base + "/stop", {"timeout": 0})
        assert status == 200
        last = {"type": "log"}
        while last["type"] == "log":
            last = json.loads((await asyncio.wait_for(ws.receive(), 30)).data)
        assert last == {"type": "end"}
        assert (await asyncio.wait_for(ws.receive(), 30)).type == aiohttp.WSMsgType.CLOSE


# ---------------------------------------------------------------- step-up


REAUTH = {"error": "re-authentication required", "reauth": "/reauth"}  # as web/files.py's


async def test_container_actions_from_a_browser_need_a_fresh_step_up_but_viewing_does_not(
    command_rig: CommandRig, enrolled_server: EnrollServer, dockerd: Dockerd, container: Any
) -> None:
    box = await docker_server(enrolled_server, dockerd)
    await command_rig.grant("olga", box.server_id)
    web = await command_rig.start_web()
    name = container.name
    base = f"/api/servers/{box.server_id}/containers/{name}"
    started_at = docker_state(dockerd, name)["StartedAt"]
    async with session(web, "olga") as olga:
        await command_rig.age_step_up("olga")
        # Viewing never asks: what may be done, the list, details, stats and the logs.
        for path in (
            f"/api/servers/{box.server_id}/docker",
            f"/api/servers/{box.server_id}/docker/containers",
            base + "/inspect",
            base + "/stats",
        ):
            status, body = await olga.call("GET", path)
            assert status == 200, (path, body)
        ws = await olga.client.ws_connect(base + "/logs?follow=0", headers={"Origin": web.origin})
        await read_logs(ws, "first-line")
        await ws.close()
        # Every change is refused as a file change is, and dockerd sees nothing.
        for action in ("stop", "restart", "start"):
            status, body = await olga.call("POST", f"{base}/{action}", {"timeout": 1})
            assert (status, body) == (401, REAUTH), action
        state = docker_state(dockerd, name)
        assert state["Running"] is True and state["StartedAt"] == started_at
        # After the password again, the same stop goes through.
        status, body = await olga.call("POST", "/api/reauth", {"password": PASSWORD})
        assert status == 200, body
        status, body = await olga.call("POST", base + "/stop", {"timeout": 1})
        assert status == 200 and body["container"]["state"] == "exited", body
        assert docker_state(dockerd, name)["Running"] is False
        # A stopped container is not started without one either.
        await command_rig.age_step_up("olga")
        status, body = await olga.call("POST", base + "/start")
        assert (status, body) == (401, REAUTH)
        assert docker_state(dockerd, name)["Running"] is False
        status, body = await olga.call("POST", "/api/reauth", {"password": PASSWORD})
        assert status == 200, body
        status, body = await olga.call("POST", base + "/start")
        assert status == 200 and body["container"]["state"] == "running", body
        assert docker_state(dockerd, name)["Running"] is True
    rows = await audit_rows(command_rig, box.server_id)
    # The refusals reached no audit entry for an action: only what ran is there.
    assert [(r["action"], r["success"]) for r in rows] == [
        ("docker.inspect", True),
        ("docker.logs", True),
        ("docker.stop", True),
        ("docker.stop.result", True),
        ("docker.start", True),
        ("docker.start.result", True),
    ]


async def test_an_api_token_starts_and_stops_containers_without_a_step_up(
    command_rig: CommandRig, enrolled_server: EnrollServer, dockerd: Dockerd, container: Any
) -> None:
    """Scripts use `Authorization: Bearer` (docs/docker.md): a token cannot answer a step-up,
    so it is not asked, as for file changes; a viewer's token is still refused."""
    box = await docker_server(enrolled_server, dockerd)
    await command_rig.grant("olga", box.server_id)
    await command_rig.grant("vic", box.server_id)
    web = await command_rig.start_web()
    _, olga = await tokens.create_token(command_rig.pool, command_rig.users["olga"].id, "deploy")
    _, vic = await tokens.create_token(command_rig.pool, command_rig.users["vic"].id, "ro")
    name = container.name
    base = f"/api/servers/{box.server_id}/containers/{name}"
    async with aiohttp.ClientSession(base_url=web.origin) as client:

        async def post(path: str, token: str, body: Any = None) -> tuple[int, Any]:
            headers = {"Authorization": f"Bearer {token}"}
            async with client.post(path, json=body, headers=headers) as resp:
                return resp.status, await resp.json()

        status, body = await post(base + "/stop", vic, {"timeout": 1})
        assert status == 403, body
        assert docker_state(dockerd, name)["Running"] is True
        status, body = await post(base + "/stop", olga, {"timeout": 1})
        assert status == 200 and body["container"]["state"] == "exited", body
        assert docker_state(dockerd, name)["Running"] is False
        status, body = await post(base + "/start", olga)
        assert status == 200 and body["container"]["state"] == "running", body
        assert docker_state(dockerd, name)["Running"] is True
    rows = await audit_rows(command_rig, box.server_id)
    assert [(r["action"], r["username"]) for r in rows] == [
        ("docker.stop", "olga"),
        ("docker.stop.result", "olga"),
        ("docker.start", "olga"),
        ("docker.start.result", "olga"),
    ]
    assert all(r["detail"].get("api_token_id") is not None for r in rows[::2])


# ---------------------------------------------------------------- who may not


async def test_a_viewer_is_refused_every_docker_action_and_nothing_changes(
    command_rig: CommandRig, enrolled_server: EnrollServer, dockerd: Dockerd, container: Any
) -> None:
    box = await docker_server(enrolled_server, dockerd)
    await command_rig.grant("vic", box.server_id)
    web = await command_rig.start_web()
    base = f"/api/servers/{box.server_id}/containers/{container.name}"
    async with session(web, "vic") as vic:
        status, can = await vic.call("GET", f"/api/servers/{box.server_id}/docker")
        assert (status, can) == (200, {"control": False, "reason": "viewer"})
        for action in ("stop", "restart"):
            status, body = await vic.call("POST", f"{base}/{action}")
            assert status == 403 and "operator" in body["error"]
        for path in (
            base + "/inspect",
            base + "/stats",
            f"/api/servers/{box.server_id}/docker/containers",
        ):
            status, _ = await vic.call("GET", path)
            assert status == 403, path
        with pytest.raises(aiohttp.WSServerHandshakeError) as refused:
            await vic.client.ws_connect(base + "/logs", headers={"Origin": web.origin})
        assert refused.value.status == 403
    assert docker_state(dockerd, container.name)["Running"] is True
    assert await audit_rows(command_rig, box.server_id) == []


async def test_an_operator_gets_404_for_a_server_not_granted(
    command_rig: CommandRig, enrolled_server: EnrollServer, dockerd: Dockerd, container: Any
) -> None:
    box = await docker_server(enrolled_server, dockerd)  # not granted to olga
    web = await command_rig.start_web()
    base = f"/api/servers/{box.server_id}/containers/{container.name}"
    async with session(web, "olga") as olga:
        for method, path in (
            ("GET", f"/api/servers/{box.server_id}/docker"),
            ("GET", f"/api/servers/{box.server_id}/docker/containers"),
            ("POST", base + "/stop"),
            ("POST", base + "/start"),
            ("GET", base + "/inspect"),
        ):
            status, body = await olga.call(method, path)
            assert (status, body) == (404, {"error": "no such server"}), path
        with pytest.raises(aiohttp.WSServerHandshakeError) as refused:
            await olga.client.ws_connect(base + "/logs", headers={"Origin": web.origin})
        assert refused.value.status == 404
    assert docker_state(dockerd, container.name)["Running"] is True
    assert await audit_rows(command_rig, box.server_id) == []


async def test_docker_disabled_on_the_exporter_is_refused_there_even_when_the_collector_asks(
    command_rig: CommandRig, enrolled_server: EnrollServer, dockerd: Dockerd, container: Any
) -> None:
    # The collector's record says docker; the exporter's own config says no.
    box = await docker_server(
        enrolled_server, dockerd, "docker", "files", **{"command.docker": False}
    )
    await command_rig.grant("olga", box.server_id)
    web = await command_rig.start_web()
    base = f"/api/servers/{box.server_id}/containers/{container.name}"
    async with session(web, "olga") as olga:
        status, body = await olga.call("POST", base + "/stop", {"timeout": 0})
        assert status == 403
        assert "refused by the exporter" in body["error"] and "docker" in body["error"]
        async with olga.client.ws_connect(base + "/logs", headers={"Origin": web.origin}) as ws:
            message = json.loads((await asyncio.wait_for(ws.receive(), 30)).data)
        assert message["type"] == "error" and "docker is not enabled" in message["error"]
    assert docker_state(dockerd, container.name)["Running"] is True
    rows = await audit_rows(command_rig, box.server_id)
    assert [(r["action"], r["success"]) for r in rows][:2] == [
        ("docker.stop", True),
        ("docker.stop.result", False),
    ]
    assert "docker is not enabled" in rows[1]["detail"]["result"]


async def test_a_server_enrolled_without_docker_says_so_and_refuses(
    command_rig: CommandRig, enrolled_server: EnrollServer, dockerd: Dockerd, container: Any
) -> None:
    box = await docker_server(enrolled_server, dockerd, "files")
    await command_rig.grant("olga", box.server_id)
    web = await command_rig.start_web()
    async with session(web, "olga") as olga:
        status, can = await olga.call("GET", f"/api/servers/{box.server_id}/docker")
        assert (status, can) == (200, {"control": False, "reason": "disabled"})
        status, body = await olga.call(
            "POST", f"/api/servers/{box.server_id}/containers/{container.name}/stop"
        )
        assert status == 403 and "docker is not enabled" in body["error"]
    assert docker_state(dockerd, container.name)["Running"] is True


async def test_a_server_not_enrolled_says_so_and_refuses(
    command_rig: CommandRig, enrolled_server: EnrollServer
) -> None:
    server_id = await command_rig.pool.fetchval(
        "INSERT INTO servers (name, url) VALUES ('plain', 'http://127.0.0.1:9/metrics')"
        " RETURNING id"
    )
    await command_rig.grant("olga", server_id)
    web = await command_rig.start_web()
    async with session(web, "olga") as olga:
        status, can = await olga.call("GET", f"/api/servers/{server_id}/docker")
        assert (status, can) == (200, {"control": False, "reason": "not_enrolled"})
        status, body = await olga.call("POST", f"/api/servers/{server_id}/containers/x/start")
        assert status == 409 and "not enrolled" in body["error"]
    assert await audit_rows(command_rig, server_id) == []


async def test_without_the_csrf_token_or_from_another_origin_nothing_happens(
    command_rig: CommandRig, enrolled_server: EnrollServer, dockerd: Dockerd, container: Any
) -> None:
    box = await docker_server(enrolled_server, dockerd)
    await command_rig.grant("olga", box.server_id)
    web = await command_rig.start_web()
    base = f"/api/servers/{box.server_id}/containers/{container.name}"
    async with session(web, "olga") as olga:
        status, _ = await olga.call("POST", base + "/stop", csrf=False)
        assert status == 403
        for origin in ("http://evil.example", None):
            headers = {"Origin": origin} if origin else {}
            with pytest.raises(aiohttp.WSServerHandshakeError) as refused:
                await olga.client.ws_connect(base + "/logs", headers=headers)
            assert refused.value.status == 403
    assert docker_state(dockerd, container.name)["Running"] is True
    assert await audit_rows(command_rig, box.server_id) == []


async def test_bad_input_gets_a_clear_error_and_changes_nothing(
    command_rig: CommandRig, enrolled_server: EnrollServer, dockerd: Dockerd, container: Any
) -> None:
    box = await docker_server(enrolled_server, dockerd)
    await command_rig.grant("olga", box.server_id)
    web = await command_rig.start_web()
    base = f"/api/servers/{box.server_id}/containers"
    async with session(web, "olga") as olga:
        status, body = await olga.call("POST", f"{base}/no-such-container/start")
        assert status == 404 and "no-such-container" in body["error"].lower()
        for bad in ({"timeout": -1}, {"timeout": "10"}, {"timeout": 301}, [1]):
            status, body = await olga.call("POST", f"{base}/{container.name}/stop", bad)
            assert status == 400 and ("timeout" in body["error"] or "object" in body["error"])
        status, _ = await olga.call("POST", f"{base}/..%2Fetc/stop")
        assert status in (400, 404)  # not a container name
        for query in ("tail=0", "tail=abc", "tail=100001", "follow=maybe"):
            with pytest.raises(aiohttp.WSServerHandshakeError) as refused:
                await olga.client.ws_connect(
                    f"{base}/{container.name}/logs?{query}", headers={"Origin": web.origin}
                )
            assert refused.value.status == 400, query
    assert docker_state(dockerd, container.name)["Running"] is True


# ---------------------------------------------------------------- pieces


def test_log_text_keeps_characters_split_across_chunks_and_streams_apart() -> None:
    text = LogText()
    data = "日志 ok\n".encode()
    assert text.feed("stdout", data[:2]) == ""
    assert text.feed("stderr", b"err\n") == "err\n"
    assert text.feed("stdout", data[2:]) == "日志 ok\n"
    assert text.feed("stdout", b"\xff\n") == "\ufffd\n"


def test_logs_request_defaults_and_limits() -> None:
    message = logs_request("web", {})
    assert (message.follow, message.tail, message.timestamps) == (True, 200, False)
    assert logs_request("web", {"tail": "all", "follow": "0"}).tail == 0


def test_stats_summary_reads_cgroup_v2_and_v1_documents() -> None:
    v2 = {
        "read": "2026-01-01T00:00:00Z",
        "memory_stats": {
            "usage": 10_000_000, "limit": 2**30, "stats": {"inactive_file": 1_000_000}
        },
        "cpu_stats": {
            "cpu_usage": {"total_usage": 5_000}, "system_cpu_usage": 90_000, "online_cpus": 2
        },
        "pids_stats": {"current": 3},
        "networks": {
            "eth0": {"rx_bytes": 10, "tx_bytes": 20}, "eth1": {"rx_bytes": 1, "tx_bytes": 2}
        },
        "blkio_stats": {"io_service_bytes_recursive": [
            {"op": "read", "value": 4096}, {"op": "write", "value": 8192},
            {"op": "Read", "value": 4},
        ]},
    }  # fmt: skip
    summary = stats_summary(v2)
    assert summary["memory"] == 9_000_000 and summary["memory_limit"] == 2**30
    assert (summary["cpu_total"], summary["system_total"], summary["online_cpus"]) == (5e3, 9e4, 2)
    assert (summary["pids"], summary["net_rx"], summary["net_tx"]) == (3, 11, 22)
    assert (summary["block_read"], summary["block_write"]) == (4100, 8192)
    v1 = {"memory_stats": {"usage": 500, "stats": {"total_inactive_file": 100}},
          "cpu_stats": {"cpu_usage": {"total_usage": 1, "percpu_usage": [1, 0, 0, 0]}}}  # fmt: skip
    assert stats_summary(v1)["memory"] == 400 and stats_summary(v1)["online_cpus"] == 4
    stopped = stats_summary({"memory_stats": {}, "cpu_stats": {}, "blkio_stats": {}})
    assert stopped["memory"] is None and stopped["pids"] is None and stopped["net_rx"] == 0
