"""The collector's Fleet gRPC service against real exporters (issue #7 item 3): fan-out with
per-server output, role and per-server access through the API token, the audit log."""

from __future__ import annotations

import asyncio
import os
from typing import Any

import grpc
import pytest

from tests.fleet_fixtures import Fleet, fleet_fixture  # noqa: F401 (the fixture)
from vpsmon.collector.audit import AuditQuery, search
from vpsmon.collector.fleet import recordings
from vpsmon.collector.fleet.agents import record_agent, revoke_agent
from vpsmon.collector.tokens import revoke_token
from vpsmon.fleet_client import ClientError, ClientSettings, auth_metadata, open_channel
from vpsmon.v1 import agent_pb2 as pb
from vpsmon.v1 import fleet_service_pb2 as fpb
from vpsmon.v1 import fleet_service_pb2_grpc


async def fleet_exec(
    settings: ClientSettings, selector: fpb.FleetSelector, *argv: str, **more: Any
) -> list[fpb.FleetExecEvent]:
    concurrency = more.pop("concurrency", 0)
    channel = await open_channel(settings)
    async with channel:
        stub = fleet_service_pb2_grpc.FleetStub(channel)
        request = fpb.FleetExecRequest(
            selector=selector, exec=pb.ExecRequest(argv=list(argv), **more), concurrency=concurrency
        )
        return [e async for e in stub.Exec(request, metadata=auth_metadata(settings))]


def outputs(events: list[fpb.FleetExecEvent]) -> dict[int, str]:
    found: dict[int, str] = {}
    for event in events:
        if event.WhichOneof("kind") == "output":
            found[event.output.server_id] = (
                found.get(event.output.server_id, "") + event.output.stdout.decode()
            )
    return found


def of_kind(events: list[fpb.FleetExecEvent], kind: str) -> list[Any]:
    return [getattr(e, kind) for e in events if e.WhichOneof("kind") == kind]


async def test_a_group_fan_out_runs_on_each_server_and_tags_its_output(fleet: Fleet) -> None:
    events = await fleet_exec(fleet.settings("boss"), fpb.FleetSelector(group="web"), "id", "-un")
    assert events[0].WhichOneof("kind") == "plan"
    assert [s.name for s in events[0].plan.servers] == ["web1", "web2"]
    # Each exporter runs commands as its own user: the output says which server answered.
    assert outputs(events) == {
        fleet.ids["web1"]: "nobody\n",
        fleet.ids["web2"]: "daemon\n",
    }
    results = {r.server.name: r for r in of_kind(events, "result")}
    assert set(results) == {"web1", "web2"}
    assert all(r.exit.code == 0 and not r.error for r in results.values())
    (summary,) = of_kind(events, "summary")
    assert (summary.servers, summary.succeeded, summary.failed, summary.errors) == (2, 2, 0, 0)
    assert events[-1].WhichOneof("kind") == "summary"


async def test_exit_codes_timeouts_and_unreachable_servers_are_per_server_results(
    fleet: Fleet,
) -> None:
    await fleet.exporters["db1"].close()  # db1 is gone; the others answer
    script = 'case "$(id -un)" in nobody) exit 0;; daemon) exit 3;; esac'
    events = await fleet_exec(
        fleet.settings("boss"), fpb.FleetSelector(target="web"), "sh", "-c", script
    )
    results = {r.server.name: r for r in of_kind(events, "result")}
    assert results["web1"].exit.code == 0 and results["web2"].exit.code == 3
    events = await fleet_exec(fleet.settings("boss"), fpb.FleetSelector(target="db1"), "true")
    (result,) = of_kind(events, "result")
    assert result.error_code == "UNAVAILABLE" and result.error
    (summary,) = of_kind(events, "summary")
    assert summary.errors == 1
    events = await fleet_exec(
        fleet.settings("boss"),
        fpb.FleetSelector(target="web1"),
        "sleep",
        "30",
        timeout_seconds=0.5,
    )
    (result,) = of_kind(events, "result")
    assert result.exit.timed_out and result.duration_seconds < 20


async def test_the_concurrency_limit_holds_on_real_exporters(fleet: Fleet) -> None:
    # One at a time: the runs cannot overlap, so their start/end times interleave in order.
    events = await fleet_exec(
        fleet.settings("boss"),
        fpb.FleetSelector(target="web"),
        "sh",
        "-c",
        "date +%s.%N; sleep 0.3; date +%s.%N",
        concurrency=1,
    )
    spans = sorted(tuple(map(float, text.split())) for text in outputs(events).values())
    assert len(spans) == 2 and spans[0][1] <= spans[1][0]


async def test_an_operator_runs_only_on_the_granted_server_of_a_group(fleet: Fleet) -> None:
    events = await fleet_exec(fleet.settings("op"), fpb.FleetSelector(group="web"), "id", "-un")
    assert [s.name for s in events[0].plan.servers] == ["web1"]
    assert events[0].plan.not_granted == 1
    assert outputs(events) == {fleet.ids["web1"]: "nobody\n"}
    (summary,) = of_kind(events, "summary")
    assert (summary.servers, summary.not_granted) == (1, 1)
    # The same by name of the group, and the server not granted is never run.
    events = await fleet_exec(fleet.settings("op"), fpb.FleetSelector(target="web"), "true")
    assert [r.server.name for r in of_kind(events, "result")] == ["web1"]
    entries = await search(fleet.pool, AuditQuery(action="exec", username="op"))
    assert {e.server_id for e in entries} == {fleet.ids["web1"]}


async def test_an_operator_cannot_reach_a_server_not_granted_by_id_name_or_group(
    fleet: Fleet,
) -> None:
    for selector in (
        fpb.FleetSelector(target=str(fleet.ids["web2"])),
        fpb.FleetSelector(target="web2"),
        fpb.FleetSelector(group="db"),
        fpb.FleetSelector(target="no-such-server"),
    ):
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await fleet_exec(fleet.settings("op"), selector, "touch", "/tmp/should-not-exist")
        assert err.value.code() == grpc.StatusCode.NOT_FOUND
    entries = await search(fleet.pool, AuditQuery(action="exec", username="op"))
    assert len(entries) == 4 and not any(e.success for e in entries)
    assert all(e.server_id is None for e in entries)


async def test_a_viewer_cannot_exec_or_open_a_terminal(fleet: Fleet) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await fleet_exec(fleet.settings("looker"), fpb.FleetSelector(target="web1"), "true")
    assert err.value.code() == grpc.StatusCode.PERMISSION_DENIED
    channel = await open_channel(fleet.settings("looker"))
    async with channel:
        call = fleet_service_pb2_grpc.FleetStub(channel).Pty(
            metadata=auth_metadata(fleet.settings("looker"))
        )
        await call.write(fpb.FleetPtyClientMessage(open=fpb.FleetPtyOpen(target="web1")))
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await call.read()
    assert err.value.code() == grpc.StatusCode.PERMISSION_DENIED
    denied = await search(fleet.pool, AuditQuery(username="looker"))
    assert {e.action for e in denied} == {"exec", "pty.open"}
    assert not any(e.success for e in denied)


@pytest.mark.parametrize("token", ["", "vpsmon_" + "x" * 43, "not-a-token"])
async def test_a_wrong_or_missing_token_is_refused_before_anything(
    fleet: Fleet, token: str
) -> None:
    settings = ClientSettings(fleet.address, fleet.fingerprint, token)
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await fleet_exec(settings, fpb.FleetSelector(target="web1"), "true")
    assert err.value.code() == grpc.StatusCode.UNAUTHENTICATED
    assert await search(fleet.pool, AuditQuery(action="exec")) == []


async def test_a_revoked_token_is_refused(fleet: Fleet) -> None:
    token_id = await fleet.pool.fetchval("SELECT id FROM api_tokens WHERE name = 'test' LIMIT 1")
    owner = await fleet.pool.fetchval(
        "SELECT u.username FROM api_tokens t JOIN users u ON u.id = t.user_id WHERE t.id = $1",
        token_id,
    )
    assert await revoke_token(fleet.pool, token_id)
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await fleet_exec(fleet.settings(owner), fpb.FleetSelector(target="web1"), "true")
    assert err.value.code() == grpc.StatusCode.UNAUTHENTICATED


async def test_a_client_with_another_pin_sends_no_token(fleet: Fleet) -> None:
    wrong = "sha256:" + "0" * 64
    with pytest.raises(ClientError, match="not the pinned"):
        await open_channel(ClientSettings(fleet.address, wrong, fleet.tokens["boss"]))


async def test_every_run_is_audited_before_and_after_with_its_outcome(fleet: Fleet) -> None:
    await fleet_exec(fleet.settings("boss"), fpb.FleetSelector(group="web"), "sh", "-c", "exit 4")
    started = await search(fleet.pool, AuditQuery(action="exec"))
    ended = await search(fleet.pool, AuditQuery(action="exec.end"))
    assert {e.server_name for e in started} == {"web1", "web2"}
    assert {e.server_name for e in ended} == {"web1", "web2"}
    for entry in started:
        assert entry.username == "boss" and entry.address == "127.0.0.1"
        assert entry.detail["argv"] == ["sh", "-c", "exit 4"]
        assert entry.detail["group"] == "web" and "api_token_id" in entry.detail
    assert all(e.detail["exit_code"] == 4 and not e.success for e in ended)
    assert len({e.detail["run"] for e in started + ended}) == 1
    assert max(e.id for e in started) < min(e.id for e in ended) or len(started) == 2


async def test_a_server_not_enrolled_or_without_exec_is_an_error_result_not_a_run(
    fleet: Fleet,
) -> None:
    assert await revoke_agent(fleet.pool, fleet.ids["web2"])
    events = await fleet_exec(fleet.settings("boss"), fpb.FleetSelector(group="web"), "true")
    results = {r.server.name: r for r in of_kind(events, "result")}
    assert results["web2"].error_code == "NOT_ENROLLED"
    assert results["web1"].exit.code == 0
    target = fleet.targets["web2"]
    await record_agent(
        fleet.pool,
        fleet.ids["web2"],
        fleet.token_key,
        address=target.address,
        exporter_cert=target.exporter_cert,
        features=["pty"],
        token=target.token,
    )
    events = await fleet_exec(fleet.settings("boss"), fpb.FleetSelector(target="web2"), "true")
    (result,) = of_kind(events, "result")
    assert result.error_code == "FEATURE_DISABLED"


async def test_a_terminal_through_the_collector_echoes_typed_input(fleet: Fleet) -> None:
    settings = fleet.settings("op")
    channel = await open_channel(settings)
    async with channel:
        call = fleet_service_pb2_grpc.FleetStub(channel).Pty(metadata=auth_metadata(settings))
        start = pb.PtyStart(argv=["/bin/sh"], size=pb.PtySize(rows=24, cols=80))
        await call.write(
            fpb.FleetPtyClientMessage(open=fpb.FleetPtyOpen(target="web1", start=start))
        )
        await call.write(fpb.FleetPtyClientMessage(resize=pb.PtySize(rows=40, cols=100)))
        await call.write(fpb.FleetPtyClientMessage(data=b"stty size; echo hel''lo; exit 7\n"))
        seen, status = b"", None
        async with asyncio.timeout(30):
            async for message in call:
                if message.WhichOneof("kind") == "data":
                    seen += message.data
                else:
                    status = message.exit
    assert b"hello" in seen and b"40 100" in seen
    assert status is not None and status.code == 7
    opened = await search(fleet.pool, AuditQuery(action="pty.open"))
    closed = await search(fleet.pool, AuditQuery(action="pty.close"))
    assert [e.server_name for e in opened] == ["web1"] and opened[0].username == "op"
    assert closed[0].detail["exit_code"] == 7
    assert closed[0].detail["session"] == opened[0].detail["session"]
    # Recorded like a web terminal: output and resizes, replayable as asciicast v2.
    recording = await recordings.get(fleet.pool, opened[0].detail["recording"])
    assert recording is not None and recording.exit_code == 7
    assert (recording.username, recording.server_name) == ("op", "web1")
    assert recording.bytes_in == len(b"stty size; echo hel''lo; exit 7\n")
    cast = "".join([line async for line in recordings.cast_lines(fleet.pool, recording)])
    assert "hello" in cast and '"r", "100x40"' in cast


async def test_a_terminal_on_a_server_not_granted_or_on_a_group_is_refused(fleet: Fleet) -> None:
    settings = fleet.settings("op")
    for target, code in (
        ("web2", grpc.StatusCode.NOT_FOUND),
        (str(fleet.ids["db1"]), grpc.StatusCode.NOT_FOUND),
        ("web", grpc.StatusCode.INVALID_ARGUMENT),
    ):
        channel = await open_channel(settings)
        async with channel:
            call = fleet_service_pb2_grpc.FleetStub(channel).Pty(metadata=auth_metadata(settings))
            await call.write(fpb.FleetPtyClientMessage(open=fpb.FleetPtyOpen(target=target)))
            with pytest.raises(grpc.aio.AioRpcError) as err:
                await call.read()
        assert err.value.code() == code, target
    assert await search(fleet.pool, AuditQuery(action="pty.open", success=True)) == []


async def test_whoami_and_resolve_answer_for_the_token_user(fleet: Fleet) -> None:
    settings = fleet.settings("op")
    channel = await open_channel(settings)
    async with channel:
        stub = fleet_service_pb2_grpc.FleetStub(channel)
        me = await stub.WhoAmI(fpb.WhoAmIRequest(), metadata=auth_metadata(settings))
        plan = await stub.Resolve(fpb.FleetSelector(group="web"), metadata=auth_metadata(settings))
    assert (me.username, me.role) == ("op", "operator")
    assert [s.name for s in plan.servers] == ["web1"] and plan.not_granted == 1


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


async def test_a_client_that_goes_away_stops_the_commands_and_the_audit_says_so(
    fleet: Fleet,
) -> None:
    settings = fleet.settings("boss")
    channel = await open_channel(settings)
    async with channel:
        stub = fleet_service_pb2_grpc.FleetStub(channel)
        request = fpb.FleetExecRequest(
            selector=fpb.FleetSelector(group="web"),
            exec=pb.ExecRequest(argv=["sh", "-c", "echo $$; exec sleep 60"]),
        )
        call = stub.Exec(request, metadata=auth_metadata(settings))
        pids = []
        async with asyncio.timeout(30):
            async for event in call:
                if event.WhichOneof("kind") == "output":
                    pids.append(int(event.output.stdout))
                if len(pids) == 2:
                    break
        assert all(alive(pid) for pid in pids)
        call.cancel()
    async with asyncio.timeout(30):
        while any(alive(pid) for pid in pids):  # noqa: ASYNC110 (polls the process table)
            await asyncio.sleep(0.1)
        while len(ended := await search(fleet.pool, AuditQuery(action="exec.end"))) < 2:  # noqa: ASYNC110
            await asyncio.sleep(0.1)
    assert {e.server_name for e in ended} == {"web1", "web2"}
    assert all(e.detail["error"].startswith("cancelled") and not e.success for e in ended)


@pytest.mark.parametrize("revoke", ["grant", "token", "role"])
async def test_an_open_terminal_closes_when_access_token_or_role_goes_away(
    fleet: Fleet, revoke: str
) -> None:
    settings = fleet.settings("op")
    channel = await open_channel(settings)
    async with channel:
        call = fleet_service_pb2_grpc.FleetStub(channel).Pty(metadata=auth_metadata(settings))
        start = pb.PtyStart(argv=["/bin/sh"])
        await call.write(
            fpb.FleetPtyClientMessage(open=fpb.FleetPtyOpen(target="web1", start=start))
        )
        await call.write(fpb.FleetPtyClientMessage(data=b"echo sta''rted\n"))
        seen = b""
        async with asyncio.timeout(30):
            while b"started" not in seen:
                seen += (await call.read()).data
        if revoke == "grant":
            await fleet.pool.execute("DELETE FROM user_server_grants")
        elif revoke == "token":
            await fleet.pool.execute("UPDATE api_tokens SET revoked_at = now()")
        else:
            await fleet.pool.execute("UPDATE users SET role = 'viewer' WHERE username = 'op'")
        with pytest.raises(grpc.aio.AioRpcError) as err:
            async with asyncio.timeout(30):
                while True:
                    await call.read()
    assert err.value.code() == grpc.StatusCode.PERMISSION_DENIED
    async with asyncio.timeout(10):
        while not (closed := await search(fleet.pool, AuditQuery(action="pty.close"))):  # noqa: ASYNC110
            await asyncio.sleep(0.1)
    assert closed[0].detail["error"] == "access revoked" and not closed[0].success


async def test_bad_requests_are_refused_before_anything_runs(fleet: Fleet) -> None:
    settings = fleet.settings("boss")
    web1 = fpb.FleetSelector(target="web1")
    for argv, more, message in (
        ([], {}, "no command"),
        (["true"], {"timeout_seconds": -1}, "the timeout is between"),
        (["true"], {"timeout_seconds": float("nan")}, "the timeout is between"),
        (["true"], {"stdin": b"x" * (1024 * 1024 + 1)}, "standard input is at most"),
        (["x" * (64 * 1024 + 1)], {}, "too long"),
    ):
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await fleet_exec(settings, web1, *argv, **more)
        assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert message in (err.value.details() or "")
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await fleet_exec(settings, fpb.FleetSelector(), "true")
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert await search(fleet.pool, AuditQuery(action="exec", success=True)) == []
