"""Enrolment end to end (issue #7): the web API makes a one-time token and the command, the
real `vpsmon exporter enrol` CLI trades it over the collector's pinned gRPC port, the exporter
restarted with the written exporter.yml runs a command the collector sends through open_agent.
Refused tokens and a wrong fingerprint change nothing."""

from __future__ import annotations

import asyncio
import dataclasses
import shlex
import sys
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import grpc
import pytest
import yaml
from aiohttp import web

from tests.command_fixtures import CommandRig, Web
from tests.conftest import free_port, require
from vpsmon.collector.fleet.agents import agent_target, create_enrolment_token
from vpsmon.collector.fleet.server import enrol_service, start_grpc_server
from vpsmon.config import HostPort
from vpsmon.exporter.command.enrol import updated_yaml
from vpsmon.exporter.command.policy import load_policy
from vpsmon.exporter.config import load_config
from vpsmon.exporter.security import ensure_self_signed, fingerprint
from vpsmon.exporter.server import serve
from vpsmon.v1 import agent_pb2 as pb
from vpsmon.web.command import open_agent

ROOT = Path(__file__).resolve().parents[2]


async def _exec(request: web.Request) -> web.Response:
    agent = await open_agent(request, int(request.match_info["id"]), "exec")
    out = b""
    async for message in agent.stub.Exec(
        pb.ExecRequest(argv=(await request.json())["argv"]), **agent.options(20)
    ):
        out += message.stdout
    return web.json_response({"stdout": out.decode()})


@dataclass
class Collector:
    rig: CommandRig
    web: Web
    grpc_port: int
    server_id: int
    csrf: str


@pytest.fixture
async def collector(command_rig: CommandRig) -> AsyncIterator[Collector]:
    require(__import__("os").geteuid() == 0, "commands as nobody need root")
    port = free_port()
    command_rig.config = dataclasses.replace(
        command_rig.config, grpc_listen=HostPort("127.0.0.1", port)
    )
    server = await start_grpc_server(
        command_rig.config.grpc_listen,
        command_rig.identity,
        [enrol_service(command_rig.pool, command_rig.identity, command_rig.token_key)],
    )
    running = await command_rig.start_web(
        lambda app: app.router.add_post(r"/api/test/exec/{id:\d+}", _exec)
    )
    try:
        async with running.client() as client:
            csrf = await running.login(client, "root")
            made = await client.post(
                "/api/servers",
                json={"name": "fresh-box", "address": "127.0.0.1"},
                headers={"X-CSRF-Token": csrf},
            )
            assert made.status == 201, await made.text()
            server_id = (await made.json())["server"]["id"]
        yield Collector(command_rig, running, port, server_id, csrf)
    finally:
        await server.stop(grace=1)


EXPORTER_YML = """\
# exporter.yml written by hand: these comments and settings must survive enrolment
listen: 127.0.0.1:0   # metrics
state_dir: {state}
collectors:
  hwmon: false
  docker: false
  filesystem: false
command.listen: 127.0.0.1:{port}
command.policy_file: {policy}
"""


def exporter_yml(tmp: Path) -> Path:
    tmp.chmod(0o755)
    policy = tmp / "policy.yml"
    policy.write_text(f"file_roots: [{tmp}]\n")
    path = tmp / "exporter.yml"
    path.write_text(EXPORTER_YML.format(state=tmp / "state", port=free_port(), policy=policy))
    return path


async def make_command(
    c: Collector, features: list[str], file_roots: list[str] | None = None
) -> tuple[str, list[str]]:
    async with c.web.client() as client:
        csrf = await c.web.login(client, "root")
        resp = await client.post(
            f"/api/servers/{c.server_id}/enrolment",
            json={"features": features, "run_as": "nobody", "file_roots": file_roots or []},
            headers={"X-CSRF-Token": csrf},
        )
        assert resp.status == 201, await resp.text()
        issued = await resp.json()
    # curl -fsSL .../install-exporter.sh | sudo sh -s -- OPTIONS: the script hands OPTIONS
    # to `vpsmon exporter enrol` (tests/web/test_installer.py checks it accepts them).
    pipeline, options = issued["command"].split(" -s -- ")
    assert pipeline.startswith("curl -fsSL ") and pipeline.endswith(" | sudo sh")
    return issued["token"], shlex.split(options)


async def run_enrol(config: Path, args: list[str]) -> tuple[int, str, str]:
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "vpsmon",
        "exporter",
        "enrol",
        "-c",
        str(config),
        *args,
        cwd=ROOT,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(process.communicate(), 60)
    assert process.returncode is not None
    return process.returncode, out.decode(), err.decode()


def with_arg(args: list[str], name: str, value: str) -> list[str]:
    changed = list(args)
    changed[changed.index(name) + 1] = value
    return changed


async def test_an_exporter_enrolled_with_the_ui_command_runs_what_the_collector_sends(
    collector: Collector, tmp_path: Path
) -> None:
    config = exporter_yml(tmp_path)
    before = config.read_text()
    token, args = await make_command(collector, ["exec", "pty"])
    assert args[args.index("--collector") + 1] == f"127.0.0.1:{collector.grpc_port}"
    assert args[args.index("--fingerprint") + 1] == fingerprint(collector.rig.identity.cert)

    code, out, err = await run_enrol(config, args)
    assert code == 0, err
    assert f"enrolled as server {collector.server_id}" in out

    after = config.read_text()
    assert after.startswith(before.split("command.listen")[0])  # comments and settings kept
    written = yaml.safe_load(after)
    assert written["command"]["exec"] is True and written["command"]["pty"] is True
    assert written["command"]["files"] is False
    assert written["command"]["run_as"] == "nobody"
    assert written["command"]["collector_fingerprint"] == fingerprint(collector.rig.identity.cert)
    assert (config.stat().st_mode & 0o007) == 0  # it holds the command token now: no others

    record = await agent_target(collector.rig.pool, collector.server_id, collector.rig.token_key)
    assert record is not None and record.features == {"exec", "pty"}
    exporter_config = load_config(config, env={})
    assert record.target.token == exporter_config.command.token
    stored = await collector.rig.pool.fetchval(
        "SELECT command_token FROM agents WHERE server_id = $1", collector.server_id
    )
    assert stored[:1] == b"\x01" and record.target.token.encode() not in stored  # sealed
    assert collector.rig.token_key.path.stat().st_mode & 0o777 == 0o600
    assert record.target.address == f"127.0.0.1:{exporter_config.command.listen.port}"

    exporter = await serve(exporter_config)  # "restarted with the written config"
    try:
        await collector.rig.grant("olga", collector.server_id)
        async with collector.web.client() as client:
            csrf = await collector.web.login(client, "olga")
            resp = await client.post(
                f"/api/test/exec/{collector.server_id}",
                json={"argv": ["id", "-un"]},
                headers={"X-CSRF-Token": csrf},
            )
            assert resp.status == 200, await resp.text()
            assert await resp.json() == {"stdout": "nobody\n"}
    finally:
        await exporter.close()

    # The same token again: refused, and nothing on either side changed.
    code, _, err = await run_enrol(config, args)
    assert code == 1
    assert "already used" in err
    assert config.read_text() == after
    assert (
        await agent_target(collector.rig.pool, collector.server_id, collector.rig.token_key)
        == record
    )


async def test_unknown_and_expired_tokens_are_refused_and_change_nothing(
    collector: Collector, tmp_path: Path
) -> None:
    config = exporter_yml(tmp_path)
    before = config.read_text()
    token, args = await make_command(collector, ["exec"])
    code, _, err = await run_enrol(config, with_arg(args, "--token", "vpsmon-enrol_" + "x" * 43))
    assert code == 1 and "unknown enrolment token" in err, err

    await collector.rig.pool.execute(
        "UPDATE enrolment_tokens SET expires_at = $1", datetime.now(UTC) - timedelta(seconds=1)
    )
    code, _, err = await run_enrol(config, args)
    assert code == 1 and "has expired" in err, err
    assert config.read_text() == before
    assert not (tmp_path / "state" / "enrolled-collector.crt").exists()
    assert (
        await agent_target(collector.rig.pool, collector.server_id, collector.rig.token_key) is None
    )
    refused = await collector.rig.pool.fetch(
        "SELECT detail->>'reason' AS reason FROM audit_log"
        " WHERE action = 'agent.enrol' AND NOT success ORDER BY id"
    )
    assert [r["reason"].split(":")[0] for r in refused] == [
        "unknown enrolment token",
        "this enrolment token has expired",
    ]


async def test_a_wrong_fingerprint_is_refused_before_the_token_is_spent(
    collector: Collector, tmp_path: Path
) -> None:
    config = exporter_yml(tmp_path)
    before = config.read_text()
    token, args = await make_command(collector, ["exec"])
    other = fingerprint(ensure_self_signed(tmp_path / "other").cert)
    code, _, err = await run_enrol(config, with_arg(args, "--fingerprint", other))
    assert code == 1
    assert f"not the pinned {other}" in err and "nothing was changed" in err
    assert config.read_text() == before
    assert (
        await agent_target(collector.rig.pool, collector.server_id, collector.rig.token_key) is None
    )
    unused = await collector.rig.pool.fetchval("SELECT used_at IS NULL FROM enrolment_tokens")
    assert unused is True
    # The right command still works afterwards: the token was not spent.
    code, _, err = await run_enrol(config, args)
    assert code == 0, err


async def test_the_exporter_agrees_to_fewer_features_than_the_token_offers(
    collector: Collector, tmp_path: Path
) -> None:
    config = exporter_yml(tmp_path)
    _, args = await make_command(collector, ["exec", "pty", "files"])
    code, out, err = await run_enrol(config, with_arg(args, "--features", "exec"))
    assert code == 0, err
    record = await agent_target(collector.rig.pool, collector.server_id, collector.rig.token_key)
    assert record is not None and record.features == {"exec"}
    written = yaml.safe_load(config.read_text())["command"]
    assert (written["exec"], written["pty"], written["files"]) == (True, False, False)


async def test_a_token_for_another_collector_key_cannot_be_used_through_a_fake_port(
    collector: Collector, tmp_path: Path
) -> None:
    """An exporter pinned to collector A never talks to B, even with a valid token of A."""
    token = await create_enrolment_token(
        collector.rig.pool, collector.server_id, ["exec"], created_by=None
    )
    fake_identity = ensure_self_signed(tmp_path / "fake", stem="collector")
    port = free_port()
    fake = await start_grpc_server(
        HostPort("127.0.0.1", port),
        fake_identity,
        [enrol_service(collector.rig.pool, fake_identity, collector.rig.token_key)],
    )
    try:
        config = exporter_yml(tmp_path)
        code, _, err = await run_enrol(
            config,
            [
                "--collector",
                f"127.0.0.1:{port}",
                "--fingerprint",
                fingerprint(collector.rig.identity.cert),
                "--token",
                token.secret,
                "--run-as",
                "nobody",
            ],
        )
    finally:
        await fake.stop(grace=1)
    assert code == 1 and "not the pinned" in err
    assert (
        await agent_target(collector.rig.pool, collector.server_id, collector.rig.token_key) is None
    )


def test_updating_exporter_yml_keeps_every_other_setting_and_replaces_the_command_block() -> None:
    text = (
        "# top comment\nlisten: 0.0.0.0:9190\ncommand:\n  run_as: ops\n  exec: true\n"
        "  # inside\ncommand.policy_file: /etc/p.yml\ninterval: 5s  # keep\n"
    )
    new = updated_yaml(text, {"token": "t" * 43, "exec": False, "pty": True})
    parsed = yaml.safe_load(new)
    assert parsed["listen"] == "0.0.0.0:9190" and parsed["interval"] == "5s"
    assert parsed["command"] == {
        "run_as": "ops",
        "exec": False,
        "policy_file": "/etc/p.yml",
        "token": "t" * 43,
        "pty": True,
    }
    assert "# top comment" in new and "interval: 5s  # keep" in new
    assert updated_yaml("", {"exec": True}) == "command:\n  exec: true\n"


async def test_the_enrol_port_refuses_a_client_that_does_not_speak_tls(
    collector: Collector,
) -> None:
    async with grpc.aio.insecure_channel(f"127.0.0.1:{collector.grpc_port}") as channel:
        from vpsmon.v1 import fleet_pb2, fleet_pb2_grpc

        with pytest.raises(grpc.aio.AioRpcError) as err:
            await fleet_pb2_grpc.EnrolStub(channel).Enrol(fleet_pb2.EnrolRequest(), timeout=5)
    assert err.value.code() == grpc.StatusCode.UNAVAILABLE


async def test_the_running_collector_serves_enrol_and_fleet_on_its_grpc_port(
    database_url: str, tmp_path: Path
) -> None:
    from vpsmon.collector.app import run_collector
    from vpsmon.collector.config import load_config as load_collector_config
    from vpsmon.collector.fleet.identity import identity_fingerprint
    from vpsmon.exporter.command.enrol import EnrolError, pinned_certificate, request_enrolment
    from vpsmon.v1 import fleet_service_pb2, fleet_service_pb2_grpc

    grpc_port = free_port()
    config = load_collector_config(
        None,
        env={},
        overrides={
            "listen": f"127.0.0.1:{free_port()}",
            "grpc.listen": f"127.0.0.1:{grpc_port}",
            "data_dir": str(tmp_path / "data"),
        },
    )
    stop, ready = asyncio.Event(), asyncio.Event()
    task = asyncio.create_task(
        run_collector(
            config,
            database_url,
            stop,
            admin_password="pw-0123456789",
            on_ready=lambda r: ready.set(),
        )
    )
    try:
        await asyncio.wait_for(ready.wait(), 60)
        address = HostPort("127.0.0.1", grpc_port)
        pem = await asyncio.to_thread(
            pinned_certificate, address, identity_fingerprint(tmp_path / "data")
        )
        with pytest.raises(EnrolError, match="unknown enrolment token"):
            await request_enrolment(
                address,
                pem,
                token="vpsmon-enrol_nope",
                exporter_cert_pem=ensure_self_signed(tmp_path / "e").cert.read_text(),
                command_port=9191,
                advertise=None,
                features=None,
            )
        credentials = grpc.ssl_channel_credentials(root_certificates=pem.encode())
        async with grpc.aio.secure_channel(
            str(address), credentials, options=[("grpc.ssl_target_name_override", "localhost")]
        ) as channel:
            with pytest.raises(grpc.aio.AioRpcError) as err:
                await fleet_service_pb2_grpc.FleetStub(channel).WhoAmI(
                    fleet_service_pb2.WhoAmIRequest(), timeout=10
                )
        assert err.value.code() == grpc.StatusCode.UNAUTHENTICATED
    finally:
        stop.set()
        await asyncio.wait_for(task, 60)


async def test_file_roots_from_the_dialog_are_written_into_the_exporters_policy(
    collector: Collector, tmp_path: Path
) -> None:
    config = exporter_yml(tmp_path)
    policy = tmp_path / "policy.yml"
    policy.write_text("commands: [id]\nfile_roots: [/tmp]\n")
    www = tmp_path / "www"
    www.mkdir()
    token, args = await make_command(collector, ["files"], [str(www), "/var/log"])
    assert args[-4:] == ["--file-root", str(www), "--file-root", "/var/log"]

    # A root that is not there: refused before anything is sent, nothing written.
    before = config.read_text()
    code, _, err = await run_enrol(config, [*args, "--file-root", str(tmp_path / "gone")])
    assert code == 1 and f"--file-root {tmp_path / 'gone'}: no such directory" in err
    code, _, err = await run_enrol(config, [*args, "--file-root", "srv"])
    assert code == 1 and "absolute path" in err
    assert config.read_text() == before
    assert policy.read_text() == "commands: [id]\nfile_roots: [/tmp]\n"

    code, out, err = await run_enrol(config, args)
    assert code == 0, err
    written = yaml.safe_load(policy.read_text())
    assert written == {"commands": ["id"], "file_roots": [str(www), "/var/log"]}
    loaded = load_config(config, env={})
    assert loaded.command.policy_file == policy
    assert load_policy(policy, Path("/nonexistent")).file_roots == (
        www.resolve(),
        Path("/var/log"),
    )
