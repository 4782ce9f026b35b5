"""The collector's pooled, pinned connections to exporters' command channels (issue #7)."""

from __future__ import annotations

import os
import secrets
from collections.abc import AsyncIterator
from pathlib import Path

import grpc
import pytest

from tests.conftest import free_port, require, require_binary
from vpsmon.collector.fleet.pool import AgentPool, AgentTarget, PinMismatch
from vpsmon.exporter.config import load_config
from vpsmon.exporter.security import CertificatePaths, ensure_self_signed, fingerprint
from vpsmon.exporter.server import Exporter, serve
from vpsmon.v1 import agent_pb2 as pb


@pytest.fixture
async def enrolled(tmp_path: Path) -> AsyncIterator[tuple[Exporter, AgentTarget, CertificatePaths]]:
    require_binary("openssl")
    require(os.geteuid() == 0, "commands as nobody need root")
    collector = ensure_self_signed(tmp_path / "collector")
    exporter_cert = ensure_self_signed(tmp_path / "state").cert
    token = secrets.token_hex(24)
    port = free_port()
    config = load_config(
        None,
        env={},
        overrides={
            "listen": "127.0.0.1:0",
            "state_dir": str(tmp_path / "state"),
            "collectors.hwmon": False,
            "collectors.docker": False,
            "command.listen": f"127.0.0.1:{port}",
            "command.exec": True,
            "command.collector_cert": str(collector.cert),
            "command.collector_fingerprint": fingerprint(collector.cert),
            "command.token": token,
            "command.run_as": "nobody",
        },
    )
    exporter = await serve(config)
    target = AgentTarget(
        f"127.0.0.1:{port}", exporter_cert.read_bytes(), fingerprint(exporter_cert), token
    )
    try:
        yield exporter, target, collector
    finally:
        await exporter.close()


async def exec_stdout(pool: AgentPool, target: AgentTarget, *argv: str) -> str:
    out = b""
    async for message in pool.stub(target).Exec(
        pb.ExecRequest(argv=list(argv)), **pool.call_options(target)
    ):
        out += message.stdout
    return out.decode()


async def test_calls_share_one_pooled_channel_per_exporter(
    enrolled: tuple[Exporter, AgentTarget, CertificatePaths],
) -> None:
    _, target, collector = enrolled
    pool = AgentPool(collector)
    try:
        info = await pool.info(target)
        first = pool._channel(target)
        assert await exec_stdout(pool, target, "echo", "pooled") == "pooled\n"
        assert pool._channel(target) is first
    finally:
        await pool.close()
    assert list(info.features) == ["exec"] and info.run_as == "nobody"


async def test_a_recorded_certificate_that_is_not_the_pinned_one_is_never_used(
    enrolled: tuple[Exporter, AgentTarget, CertificatePaths], tmp_path: Path
) -> None:
    _, target, collector = enrolled
    impostor = ensure_self_signed(tmp_path / "impostor").cert.read_bytes()
    pool = AgentPool(collector)
    try:
        with pytest.raises(PinMismatch, match="enrol the server again"):
            pool.stub(AgentTarget(target.address, impostor, target.exporter_fingerprint, "t"))
    finally:
        await pool.close()


async def test_an_exporter_with_another_key_than_the_pinned_one_is_refused(
    enrolled: tuple[Exporter, AgentTarget, CertificatePaths], tmp_path: Path
) -> None:
    _, target, collector = enrolled
    # What the collector would do if a different server answered at the pinned address.
    other = ensure_self_signed(tmp_path / "other").cert.read_bytes()
    pool = AgentPool(collector, call_timeout=5)
    try:
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await pool.info(AgentTarget(target.address, other, fingerprint_of(other), target.token))
    finally:
        await pool.close()
    assert err.value.code() == grpc.StatusCode.UNAVAILABLE


async def test_the_pool_reconnects_after_the_exporter_restarts(
    enrolled: tuple[Exporter, AgentTarget, CertificatePaths],
) -> None:
    exporter, target, collector = enrolled
    pool = AgentPool(collector, call_timeout=20)
    try:
        assert await exec_stdout(pool, target, "echo", "before") == "before\n"
        await exporter.close()
        restarted = await serve(exporter.config)
        try:
            info = await pool.stub(target).Info(
                pb.InfoRequest(), wait_for_ready=True, **pool.call_options(target)
            )
            assert info.run_as == "nobody"
            assert await exec_stdout(pool, target, "echo", "after") == "after\n"
        finally:
            await restarted.close()
    finally:
        await pool.close()


def fingerprint_of(pem: bytes) -> str:
    from vpsmon.collector.fleet.pool import pem_fingerprint

    return pem_fingerprint(pem)
