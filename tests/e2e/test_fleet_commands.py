"""The fleet commands end to end (issue #7 item 3): a real `vpsmon collector run` serving the
Fleet service on its gRPC port, real exporters enrolled with its identity, and `vpsmon
collector fingerprint`, `vpsmon login` and `vpsmon exec` as a person would run them."""

from __future__ import annotations

import asyncio
import os
import secrets
from collections.abc import AsyncIterator
from pathlib import Path

import asyncpg
import pytest

from tests.conftest import free_port, require, require_binary
from tests.e2e.procs import VPSMON, Proc, base_env, wait_http
from tests.fleet_fixtures import start_exporter
from vpsmon.collector.access import grant_server
from vpsmon.collector.accounts import create_user
from vpsmon.collector.fleet.agents import record_agent
from vpsmon.collector.fleet.identity import ensure_identity
from vpsmon.collector.fleet.tokenkey import TokenKey
from vpsmon.collector.tokens import create_token
from vpsmon.exporter.server import Exporter

pytestmark = pytest.mark.e2e


async def run(*args: str, env: dict[str, str], stdin: bytes | None = None) -> tuple[int, str, str]:
    process = await asyncio.create_subprocess_exec(
        VPSMON,
        *args,
        env=env,
        stdin=asyncio.subprocess.PIPE if stdin is not None else asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    async with asyncio.timeout(120):
        out, err = await process.communicate(stdin)
    assert process.returncode is not None
    return process.returncode, out.decode(), err.decode()


@pytest.fixture
async def exporters() -> AsyncIterator[list[Exporter]]:
    started: list[Exporter] = []
    try:
        yield started
    finally:
        for exporter in started:
            await exporter.close()


async def test_exec_through_a_running_collector_on_its_grpc_port(
    database_url: str, tmp_path: Path, exporters: list[Exporter]
) -> None:
    require_binary("openssl")
    require(os.geteuid() == 0, "commands as other users need root")
    data_dir = tmp_path / "data"
    identity = ensure_identity(data_dir)  # what the collector will load from its data dir
    grpc_port, web_port = free_port(), free_port()
    collector = Proc(
        ["collector", "run", "--listen", f"127.0.0.1:{web_port}", "--data-dir", str(data_dir)],
        base_env(
            VPSMON_DATABASE_URL=database_url,
            VPSMON_GRPC_LISTEN=f"127.0.0.1:{grpc_port}",
            VPSMON_ADMIN_PASSWORD="an admin password",
        ),
        tmp_path / "collector.log",
    )
    try:
        await asyncio.to_thread(wait_http, f"http://127.0.0.1:{web_port}/healthz", collector, 120)
        pool = await asyncpg.create_pool(database_url, min_size=1, max_size=2)
        try:
            ids = {}
            for name, run_as in (("web1", "nobody"), ("web2", "daemon")):
                exporter, target = await start_exporter(
                    tmp_path, identity, run_as, secrets.token_hex(24)
                )
                exporters.append(exporter)
                ids[name] = await pool.fetchval(
                    "INSERT INTO servers (name, url, group_name) VALUES ($1, $2, 'web')"
                    " RETURNING id",
                    name,
                    f"http://127.0.0.1:{free_port()}/metrics",
                )
                await record_agent(
                    pool,
                    ids[name],
                    TokenKey.in_data_dir(data_dir),
                    address=target.address,
                    exporter_cert=target.exporter_cert,
                    features=["exec"],
                    token=target.token,
                )
            operator = await create_user(pool, "olga", "a long password", "operator")
            await grant_server(pool, operator.id, ids["web2"])
            _, token = await create_token(pool, operator.id, "cli")
        finally:
            await pool.close()

        code, printed, err = await run(
            "collector", "fingerprint", "--data-dir", str(data_dir), env=base_env()
        )
        assert code == 0, err
        fingerprint = printed.strip()
        assert fingerprint.startswith("sha256:")

        client = tmp_path / "client.yml"
        env = base_env(VPSMON_CLIENT_CONFIG=str(client))
        code, printed, err = await run(
            "login",
            "--collector",
            f"127.0.0.1:{grpc_port}",
            "--fingerprint",
            fingerprint,
            "--token-file",
            "-",
            env=env,
            stdin=token.encode(),
        )
        assert code == 0, err + collector.output()
        assert "as olga (operator)" in printed

        code, printed, err = await run("exec", "web", "--", "id", "-un", env=env)
        assert code == 0, err + collector.output()
        assert printed == "web2 | daemon\n"
        assert "1 server(s) of the group not granted to you: skipped" in err
        assert "1 server(s): 1 ok" in err
    finally:
        assert collector.stop() == 0, collector.output()
