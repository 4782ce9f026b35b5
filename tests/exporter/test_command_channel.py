"""The command channel against a real exporter: mutual TLS with a pinned collector, token,
features, policy, exec, PTY, files and Docker control (issue #7)."""

from __future__ import annotations

import asyncio
import hashlib
import os
import secrets
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import pytest
from exporter_testkit import ExporterProcess

from tests.conftest import free_port, require, require_binary
from tests.dockerd import Dockerd
from vpsmon.config import ConfigError
from vpsmon.exporter.config import ExporterConfig, load_config
from vpsmon.exporter.security import CertificatePaths, ensure_self_signed, fingerprint
from vpsmon.exporter.server import Exporter, serve
from vpsmon.v1 import agent_pb2 as pb
from vpsmon.v1 import agent_pb2_grpc

ALL = ("exec", "pty", "files", "docker")


@dataclass
class Setup:
    tmp: Path
    exporter_cert: Path
    collector: CertificatePaths
    token: str
    roots: Path

    def config(self, *features: str, **more: Any) -> ExporterConfig:
        values: dict[str, Any] = {
            "listen": "127.0.0.1:0",
            "state_dir": str(self.tmp / "state"),
            "collectors.hwmon": False,
            "collectors.filesystem": False,
            "collectors.docker": False,
            "command.listen": f"127.0.0.1:{free_port()}",
            "command.collector_cert": str(self.collector.cert),
            "command.collector_fingerprint": fingerprint(self.collector.cert),
            "command.token": self.token,
            "command.run_as": "nobody",
            "command.policy_file": str(self.policy()),
            **{f"command.{f}": True for f in features},
        }
        values.update(more)
        return load_config(None, env={}, overrides=values)

    def policy(self, commands: list[str] | None = None) -> Path:
        path = self.tmp / ("policy-cmds.yml" if commands else "policy.yml")
        text = f"file_roots: [{self.roots}]\n"
        if commands:
            text += f"commands: [{', '.join(commands)}]\n"
        path.write_text(text)
        return path


@pytest.fixture
def setup(tmp_path: Path) -> Setup:
    require_binary("openssl")
    require(os.geteuid() == 0, "commands as nobody need root")
    state = tmp_path / "state"
    exporter_cert = ensure_self_signed(state).cert
    collector = ensure_self_signed(tmp_path / "collector")
    roots = tmp_path / "files"
    roots.mkdir()
    tmp_path.chmod(0o755)
    return Setup(tmp_path, exporter_cert, collector, secrets.token_hex(24), roots)


def channel(
    setup: Setup, port: int, client: CertificatePaths | None = None, *, with_cert: bool = True
) -> grpc.aio.Channel:
    client = client or setup.collector
    credentials = grpc.ssl_channel_credentials(
        root_certificates=setup.exporter_cert.read_bytes(),
        private_key=client.key.read_bytes() if with_cert else None,
        certificate_chain=client.cert.read_bytes() if with_cert else None,
    )
    return grpc.aio.secure_channel(f"127.0.0.1:{port}", credentials)


@pytest.fixture
async def running(setup: Setup) -> AsyncIterator[Callable[..., Awaitable[Exporter]]]:
    started: list[Exporter] = []

    async def start(*features: str, **more: Any) -> Exporter:
        exporter = await serve(setup.config(*features, **more))
        started.append(exporter)
        return exporter

    try:
        yield start
    finally:
        for exporter in started:
            await exporter.close()


def auth(setup: Setup, token: str | None = None) -> tuple[tuple[str, str], ...]:
    return (("authorization", f"Bearer {token or setup.token}"),)


def port_of(exporter: Exporter) -> int:
    return exporter.config.command.listen.port


async def exec_all(stub: agent_pb2_grpc.AgentStub, setup: Setup, **request: Any) -> dict[str, Any]:
    out, err, status = b"", b"", None
    async for message in stub.Exec(pb.ExecRequest(**request), metadata=auth(setup)):
        kind = message.WhichOneof("kind")
        if kind == "stdout":
            out += message.stdout
        elif kind == "stderr":
            err += message.stderr
        else:
            status = message.exit
    return {"stdout": out.decode(), "stderr": err.decode(), "exit": status}


# ---------------------------------------------------------------- who may call


async def test_info_tells_the_enabled_features_and_the_run_as_user(
    setup: Setup, running: Callable[..., Awaitable[Exporter]]
) -> None:
    exporter = await running("exec", "files")
    async with channel(setup, port_of(exporter)) as ch:
        info = await agent_pb2_grpc.AgentStub(ch).Info(pb.InfoRequest(), metadata=auth(setup))
    assert list(info.features) == ["exec", "files"]
    assert info.run_as == "nobody"
    # The file manager starts in the policy's roots; without the files feature none are told.
    assert list(info.file_roots) == [str(setup.roots.resolve())]
    exec_only = await running("exec")
    async with channel(setup, port_of(exec_only)) as ch:
        info = await agent_pb2_grpc.AgentStub(ch).Info(pb.InfoRequest(), metadata=auth(setup))
    assert list(info.file_roots) == []


async def test_a_client_without_the_pinned_certificate_is_refused_before_anything_runs(
    setup: Setup, running: Callable[..., Awaitable[Exporter]]
) -> None:
    exporter = await running("exec")
    marker = setup.tmp / "ran"
    stranger = ensure_self_signed(setup.tmp / "stranger")
    for ch in (
        channel(setup, port_of(exporter), stranger),
        channel(setup, port_of(exporter), with_cert=False),
    ):
        async with ch:
            stub = agent_pb2_grpc.AgentStub(ch)
            with pytest.raises(grpc.aio.AioRpcError) as err:
                await exec_all(stub, setup, argv=["touch", str(marker)])
            assert err.value.code() == grpc.StatusCode.UNAVAILABLE  # the handshake fails
    assert not marker.exists()


async def test_a_wrong_or_missing_token_is_refused_before_anything_runs(
    setup: Setup, running: Callable[..., Awaitable[Exporter]]
) -> None:
    exporter = await running("exec")
    marker = setup.tmp / "ran"
    async with channel(setup, port_of(exporter)) as ch:
        stub = agent_pb2_grpc.AgentStub(ch)
        for metadata in (auth(setup, "x" * 48), ()):
            call = stub.Exec(pb.ExecRequest(argv=["touch", str(marker)]), metadata=metadata)
            with pytest.raises(grpc.aio.AioRpcError) as err:
                async for _ in call:
                    pass
            assert err.value.code() == grpc.StatusCode.UNAUTHENTICATED
    assert not marker.exists()


async def test_a_feature_not_enabled_on_the_exporter_is_refused_even_if_asked(
    setup: Setup, running: Callable[..., Awaitable[Exporter]]
) -> None:
    exporter = await running("exec")
    async with channel(setup, port_of(exporter)) as ch:
        stub = agent_pb2_grpc.AgentStub(ch)
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await stub.FileStat(pb.FilePath(path=str(setup.roots)), metadata=auth(setup))
    assert err.value.code() == grpc.StatusCode.PERMISSION_DENIED
    assert "files is not enabled" in (err.value.details() or "")


def test_management_without_enrolment_is_a_config_error(setup: Setup) -> None:
    with pytest.raises(ConfigError, match="command.exec is enabled but command.collector_cert"):
        load_config(None, env={}, overrides={"command.exec": True})


async def test_a_collector_certificate_that_does_not_match_the_pin_stops_the_start(
    setup: Setup,
) -> None:
    other = ensure_self_signed(setup.tmp / "other")
    config = setup.config("exec", **{"command.collector_cert": str(other.cert)})
    with pytest.raises(ConfigError, match="does not match command.collector_fingerprint"):
        await serve(config)


def test_commands_as_root_need_run_as_said_explicitly(setup: Setup) -> None:
    config = setup.config("exec", **{"command.run_as": None})
    from vpsmon.exporter.command.identity import resolve_run_as

    with pytest.raises(ConfigError, match="command.run_as is not set and the exporter runs as"):
        resolve_run_as(config.command.run_as)


# ---------------------------------------------------------------- exec


async def test_exec_streams_output_and_the_exit_code_as_the_run_as_user(
    setup: Setup, running: Callable[..., Awaitable[Exporter]]
) -> None:
    exporter = await running("exec")
    async with channel(setup, port_of(exporter)) as ch:
        stub = agent_pb2_grpc.AgentStub(ch)
        got = await exec_all(
            stub, setup, argv=["sh", "-c", "echo out; echo err >&2; id -un; exit 3"]
        )
        piped = await exec_all(stub, setup, argv=["cat"], stdin=b"typed\n", cwd="/tmp")
    assert got["stdout"] == "out\nnobody\n" and got["stderr"] == "err\n", got
    assert (got["exit"].code, got["exit"].signal, got["exit"].timed_out) == (3, 0, False)
    assert piped["stdout"] == "typed\n"


async def test_exec_past_its_timeout_is_killed_and_says_so(
    setup: Setup, running: Callable[..., Awaitable[Exporter]]
) -> None:
    exporter = await running("exec")
    async with channel(setup, port_of(exporter)) as ch:
        got = await exec_all(
            agent_pb2_grpc.AgentStub(ch), setup, argv=["sleep", "30"], timeout_seconds=0.5
        )
    assert (got["exit"].code, got["exit"].signal, got["exit"].timed_out) == (-1, 9, True)


async def test_the_policy_allow_list_refuses_other_commands_and_loader_variables(
    setup: Setup, running: Callable[..., Awaitable[Exporter]]
) -> None:
    policy = setup.policy(commands=["echo"])
    exporter = await running("exec", **{"command.policy_file": str(policy)})
    async with channel(setup, port_of(exporter)) as ch:
        stub = agent_pb2_grpc.AgentStub(ch)
        allowed = await exec_all(stub, setup, argv=["echo", "fine"])
        for request in (
            {"argv": ["id"]},
            {"argv": ["/bin/sh", "-c", "id"]},
            {"argv": ["echo", "x"], "env": {"LD_PRELOAD": "/tmp/evil.so"}},
        ):
            with pytest.raises(grpc.aio.AioRpcError) as err:
                await exec_all(stub, setup, **request)
            assert err.value.code() == grpc.StatusCode.PERMISSION_DENIED, request
    assert allowed["stdout"] == "fine\n"


# ---------------------------------------------------------------- pty


async def test_a_pty_runs_bash_and_echoes_typed_input(
    setup: Setup, running: Callable[..., Awaitable[Exporter]]
) -> None:
    require_binary("bash")
    exporter = await running("pty")
    async with channel(setup, port_of(exporter)) as ch:
        stub = agent_pb2_grpc.AgentStub(ch)
        typed: asyncio.Queue[pb.PtyClientMessage | None] = asyncio.Queue()
        start = pb.PtyStart(argv=["/bin/bash", "--norc", "--noprofile", "-i"])
        start.size.rows, start.size.cols = 24, 80
        await typed.put(pb.PtyClientMessage(start=start))

        async def requests() -> AsyncIterator[pb.PtyClientMessage]:
            while (message := await typed.get()) is not None:
                yield message

        screen = b""
        status = None
        call = stub.Pty(requests(), metadata=auth(setup))

        async def read_until(text: bytes) -> None:
            nonlocal screen, status
            async for message in call:
                if message.WhichOneof("kind") == "data":
                    screen += message.data
                    if text in screen:
                        return
                else:
                    status = message.exit
                    return

        await typed.put(pb.PtyClientMessage(resize=pb.PtySize(rows=40, cols=120)))
        # $((6*7)) shows bash ran the line; `stty size` that the resize reached the terminal.
        await typed.put(pb.PtyClientMessage(data=b"echo typed-$((6*7)); stty size; id -un\n"))
        await asyncio.wait_for(read_until(b"nobody"), 30)
        await typed.put(pb.PtyClientMessage(data=b"exit 5\n"))
        await asyncio.wait_for(read_until(b"\x00never"), 30)
        await typed.put(None)
    assert b"echo typed-$((6*7))" in screen  # the terminal echoed what was typed
    assert b"typed-42" in screen and b"40 120" in screen
    assert status is not None and status.code == 5


# ---------------------------------------------------------------- files


async def test_files_round_trip_list_mkdir_rename_chmod_and_delete(
    setup: Setup, running: Callable[..., Awaitable[Exporter]]
) -> None:
    exporter = await running("files")
    root = setup.roots
    async with channel(setup, port_of(exporter)) as ch:
        stub = agent_pb2_grpc.AgentStub(ch)
        made = await stub.FileMkdir(
            pb.FileMkdirRequest(path=f"{root}/a/b", parents=True), metadata=auth(setup)
        )
        body = "héllo\n".encode()
        written = await stub.FileWrite(
            iter(
                [
                    pb.FileWriteRequest(header=pb.FileWriteHeader(path=f"{root}/a/b/x.txt")),
                    pb.FileWriteRequest(data=body),
                ]
            ),
            metadata=auth(setup),
        )
        listing = await stub.FileList(pb.FilePath(path=f"{root}/a/b"), metadata=auth(setup))
        renamed = await stub.FileRename(
            pb.FileRenameRequest(path=f"{root}/a/b/x.txt", new_path=f"{root}/a/y.txt"),
            metadata=auth(setup),
        )
        chmodded = await stub.FileChmod(
            pb.FileChmodRequest(path=f"{root}/a/y.txt", mode=0o600), metadata=auth(setup)
        )
        read = b"".join(
            [
                c.data
                async for c in stub.FileRead(
                    pb.FileReadRequest(path=f"{root}/a/y.txt"), metadata=auth(setup)
                )
            ]
        )
        with pytest.raises(grpc.aio.AioRpcError) as exists:
            await stub.FileWrite(
                iter([pb.FileWriteRequest(header=pb.FileWriteHeader(path=f"{root}/a/y.txt"))]),
                metadata=auth(setup),
            )
        await stub.FileDelete(
            pb.FileDeleteRequest(path=f"{root}/a", recursive=True), metadata=auth(setup)
        )
    assert made.type == "dir" and made.owner == "nobody"
    assert (written.size, written.mode, written.owner) == (len(body), 0o644, "nobody")
    assert [e.name for e in listing.entries] == ["x.txt"]
    assert renamed.path == f"{root}/a/y.txt" and chmodded.mode == 0o600
    assert read == body
    assert exists.value.code() == grpc.StatusCode.ALREADY_EXISTS
    assert not (root / "a").exists()
    assert [p.name for p in root.iterdir()] == []  # no temporary files left behind


@pytest.mark.parametrize(
    "path",
    [
        "{root}/../outside.txt",
        "{root}/../../../../etc/passwd",
        "{root}/link-out/passwd",
        "/etc/passwd",
        "relative/path",
    ],
)
async def test_paths_outside_the_file_roots_are_refused(
    setup: Setup, running: Callable[..., Awaitable[Exporter]], path: str
) -> None:
    (setup.roots / "link-out").symlink_to("/etc")
    (setup.tmp / "outside.txt").write_text("secret")
    exporter = await running("files")
    target = path.format(root=setup.roots)
    async with channel(setup, port_of(exporter)) as ch:
        stub = agent_pb2_grpc.AgentStub(ch)
        with pytest.raises(grpc.aio.AioRpcError) as read:
            async for _ in stub.FileRead(pb.FileReadRequest(path=target), metadata=auth(setup)):
                pass
        with pytest.raises(grpc.aio.AioRpcError) as write:
            await stub.FileWrite(
                iter(
                    [
                        pb.FileWriteRequest(
                            header=pb.FileWriteHeader(path=target + ".new", overwrite=True)
                        ),
                        pb.FileWriteRequest(data=b"x"),
                    ]
                ),
                metadata=auth(setup),
            )
        with pytest.raises(grpc.aio.AioRpcError) as delete:
            await stub.FileDelete(pb.FileDeleteRequest(path=target), metadata=auth(setup))
    for err in (read, write, delete):
        assert err.value.code() == grpc.StatusCode.PERMISSION_DENIED, err.value.details()
    assert (setup.tmp / "outside.txt").read_text() == "secret"
    escaped = await asyncio.to_thread(lambda: os.path.exists(os.path.realpath(target) + ".new"))
    assert not escaped


def chunks(total: int, size: int = 256 * 1024) -> Iterator[bytes]:
    block = hashlib.sha256(b"seed").digest() * (size // 32)
    for i in range(total // size):
        yield i.to_bytes(8, "big") + block[8:]


def peak_rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
    raise AssertionError("no VmHWM")


async def test_a_100_mb_file_goes_up_and_down_intact_with_flat_exporter_memory(
    setup: Setup,
) -> None:
    config_path = setup.tmp / "exporter.yml"
    command_port = free_port()
    config_path.write_text(
        f"state_dir: {setup.tmp / 'state'}\n"
        "collectors: {hwmon: false, filesystem: false, docker: false}\n"
        "command:\n"
        f"  listen: 127.0.0.1:{command_port}\n"
        "  files: true\n"
        f"  collector_cert: {setup.collector.cert}\n"
        f"  collector_fingerprint: {fingerprint(setup.collector.cert)}\n"
        "  run_as: nobody\n"
        f"  policy_file: {setup.policy()}\n"
    )
    exporter = ExporterProcess(
        free_port(),
        setup.tmp / "exporter.log",
        config=config_path,
        env={"VPSMON_EXPORTER_COMMAND_TOKEN": setup.token},
    )
    total = 100 * 1024 * 1024
    expected = hashlib.sha256()
    for chunk in chunks(total):
        expected.update(chunk)
    try:
        exporter.wait_for(lambda s: "node_load1" in s, "the exporter")
        exporter.wait_log("command channel listening")
        before = peak_rss_kib(exporter.popen.pid)
        peaks = []
        async with channel(setup, command_port) as ch:
            stub = agent_pb2_grpc.AgentStub(ch)
            for name in ("big-1.bin", "big-2.bin"):

                def upload(name: str = name) -> Iterator[pb.FileWriteRequest]:
                    header = pb.FileWriteHeader(
                        path=f"{setup.roots}/{name}", sha256=expected.hexdigest()
                    )
                    yield pb.FileWriteRequest(header=header)
                    for chunk in chunks(total):
                        yield pb.FileWriteRequest(data=chunk)

                started = time.monotonic()
                info = await stub.FileWrite(upload(), metadata=auth(setup))
                got = hashlib.sha256()
                size = 0
                async for chunk in stub.FileRead(
                    pb.FileReadRequest(path=f"{setup.roots}/{name}"), metadata=auth(setup)
                ):
                    got.update(chunk.data)
                    size += len(chunk.data)
                elapsed = time.monotonic() - started
                peaks.append(peak_rss_kib(exporter.popen.pid))
    finally:
        assert exporter.stop() == 0
    assert info.size == total and size == total
    assert got.hexdigest() == expected.hexdigest()
    # Flat: 400 MiB moved (two files, up and down) and the peak grew by far less than one
    # file. A buffered copy would add 100 MiB; so did gRPC's BDP-grown receive window when
    # the host was busy (15-100 MiB at load 7). With the fixed 1 MiB window the growth is
    # the window, a few chunks in flight and the allocator: 6-12 MiB at load 10.
    assert peaks[1] - before < 32 * 1024, f"peak RSS {before} KiB -> {peaks} KiB"
    print(f"100 MiB up and down in {elapsed:.1f}s; exporter peak RSS {before} -> {peaks} KiB")


# ---------------------------------------------------------------- docker


async def test_docker_start_stop_restart_and_logs_on_a_real_dockerd(
    setup: Setup, running: Callable[..., Awaitable[Exporter]], dockerd: Dockerd
) -> None:
    container = dockerd.run(
        "sh", "-c", "echo hello-out; echo hello-err >&2; while :; do sleep 1; done",
        name="vpsmon-control",
    )  # fmt: skip
    exporter = await running("docker", **{"docker.host": dockerd.url})
    try:
        async with channel(setup, port_of(exporter)) as ch:
            stub = agent_pb2_grpc.AgentStub(ch)
            ref = pb.ContainerRef(container="vpsmon-control")
            listed = await stub.DockerList(pb.DockerListRequest(all=True), metadata=auth(setup))
            logs: list[tuple[str, bytes]] = []
            async for chunk in stub.DockerLogs(
                pb.DockerLogsRequest(container="vpsmon-control"), metadata=auth(setup)
            ):
                logs.append((chunk.stream, chunk.data))
            stopped = await stub.DockerStop(
                pb.DockerStopRequest(container="vpsmon-control", timeout_seconds=1),
                metadata=auth(setup),
            )
            started = await stub.DockerStart(ref, metadata=auth(setup))
            restarted = await stub.DockerRestart(
                pb.DockerStopRequest(container="vpsmon-control", timeout_seconds=1),
                metadata=auth(setup),
            )
            stats = await stub.DockerStats(ref, metadata=auth(setup))
            inspect = await stub.DockerInspect(ref, metadata=auth(setup))
            with pytest.raises(grpc.aio.AioRpcError) as missing:
                await stub.DockerStart(pb.ContainerRef(container="nope"), metadata=auth(setup))
            # Follow: new output arrives while the stream is open.
            follow = stub.DockerLogs(
                pb.DockerLogsRequest(container="vpsmon-control", follow=True, tail=1),
                metadata=auth(setup),
            )
            first = await asyncio.wait_for(follow.read(), 30)
            follow.cancel()
    finally:
        container.remove(force=True)
    assert "vpsmon-control" in [c.name for c in listed.containers]
    assert ("stdout", b"hello-out\n") in logs and ("stderr", b"hello-err\n") in logs
    assert stopped.container.state == "exited"
    assert started.container.state == "running" and restarted.container.state == "running"
    assert '"cpu_stats"' in stats.json and '"vpsmon-control"' in inspect.json.replace("/", "")
    assert missing.value.code() == grpc.StatusCode.NOT_FOUND
    assert first.data.startswith(b"hello-")


def test_a_metrics_only_exporter_does_not_load_grpc(tmp_path: Path) -> None:
    script = (
        "import sys, asyncio\n"
        "from vpsmon.exporter.config import load_config\n"
        "from vpsmon.exporter.server import serve\n"
        "async def main():\n"
        "    e = await serve(load_config(None, env={}, overrides={'listen': '127.0.0.1:0'}))\n"
        "    await e.close()\n"
        "asyncio.run(main())\n"
        "print('grpc' in sys.modules)\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", script],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert (done.returncode, done.stdout) == (0, "False\n"), done.stderr


@pytest.mark.parametrize(
    "path", ["{root}/..", "{root}/a/..", "{root}/a/../..", "{root}/.", "{root}"]
)
async def test_deleting_a_root_or_through_dot_dot_is_refused_and_deletes_nothing(
    setup: Setup, running: Callable[..., Awaitable[Exporter]], path: str
) -> None:
    (setup.roots / "a").mkdir()
    (setup.roots / "a" / "keep.txt").write_text("keep")
    exporter = await running("files")
    async with channel(setup, port_of(exporter)) as ch:
        stub = agent_pb2_grpc.AgentStub(ch)
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await stub.FileDelete(
                pb.FileDeleteRequest(path=path.format(root=setup.roots), recursive=True),
                metadata=auth(setup),
            )
    assert err.value.code() == grpc.StatusCode.PERMISSION_DENIED, err.value.details()
    assert (setup.roots / "a" / "keep.txt").read_text() == "keep"
    assert (setup.tmp / "state").is_dir()  # the root's parent is untouched too


async def test_deleting_a_symlink_removes_the_link_not_its_target(
    setup: Setup, running: Callable[..., Awaitable[Exporter]]
) -> None:
    (setup.roots / "target.txt").write_text("stay")
    (setup.roots / "link").symlink_to(setup.roots / "target.txt")
    exporter = await running("files")
    async with channel(setup, port_of(exporter)) as ch:
        await agent_pb2_grpc.AgentStub(ch).FileDelete(
            pb.FileDeleteRequest(path=f"{setup.roots}/link"), metadata=auth(setup)
        )
    assert not (setup.roots / "link").is_symlink()
    assert (setup.roots / "target.txt").read_text() == "stay"
