"""A small fleet for the collector's Fleet service tests (issue #7 item 3): three real
exporters with the command channel (exec and pty), enrolled in a real database, each running
commands as a different system user so the output tells which server answered; the Fleet
gRPC service on TLS with the collector's own certificate; users with API tokens.

    web1 (runs as nobody), web2 (daemon)  group "web"
    db1  (bin)                            group "db"
    users: admin; operator "op" granted web1 only; viewer "looker" granted everything
"""

from __future__ import annotations

import os
import secrets
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path

import asyncpg
import grpc
import pytest

from tests.conftest import free_port, require, require_binary
from vpsmon.collector.access import grant_server, set_grants
from vpsmon.collector.accounts import create_user
from vpsmon.collector.fleet.agents import record_agent
from vpsmon.collector.fleet.pool import AgentPool, AgentTarget
from vpsmon.collector.fleet.service import FleetService, add_fleet_service
from vpsmon.collector.fleet.tokenkey import TokenKey
from vpsmon.collector.tokens import create_token
from vpsmon.exporter.config import load_config
from vpsmon.exporter.security import CertificatePaths, ensure_self_signed, fingerprint
from vpsmon.exporter.server import Exporter, serve
from vpsmon.fleet_client import ClientSettings

SERVERS = {"web1": ("web", "nobody"), "web2": ("web", "daemon"), "db1": ("db", "bin")}


@dataclass
class Fleet:
    pool: asyncpg.Pool
    address: str
    fingerprint: str
    identity: CertificatePaths
    ids: dict[str, int]
    run_as: dict[str, str]
    tokens: dict[str, str]
    exporters: dict[str, Exporter]
    token_key: TokenKey  # the collector's data_dir/command-token.key (tmp_path)
    targets: dict[str, AgentTarget] = field(default_factory=dict)

    def settings(self, who: str) -> ClientSettings:
        return ClientSettings(self.address, self.fingerprint, self.tokens[who])

    def name_of(self, server_id: int) -> str:
        return {v: k for k, v in self.ids.items()}[server_id]


async def start_exporter(
    tmp: Path, collector: CertificatePaths, run_as: str, token: str
) -> tuple[Exporter, AgentTarget]:
    state = tmp / f"state-{run_as}"
    cert = ensure_self_signed(state).cert
    port = free_port()
    config = load_config(
        None,
        env={},
        overrides={
            "listen": "127.0.0.1:0",
            "state_dir": str(state),
            "collectors.hwmon": False,
            "collectors.filesystem": False,
            "collectors.docker": False,
            "command.listen": f"127.0.0.1:{port}",
            "command.exec": True,
            "command.pty": True,
            "command.collector_cert": str(collector.cert),
            "command.collector_fingerprint": fingerprint(collector.cert),
            "command.token": token,
            "command.run_as": run_as,
        },
    )
    exporter = await serve(config)
    return exporter, AgentTarget(f"127.0.0.1:{port}", cert.read_bytes(), fingerprint(cert), token)


@pytest.fixture(name="fleet")
async def fleet_fixture(pool: asyncpg.Pool, tmp_path: Path) -> AsyncIterator[Fleet]:
    require_binary("openssl")
    require(os.geteuid() == 0, "commands as other users need root")
    identity = ensure_self_signed(tmp_path / "collector")
    exporters: dict[str, Exporter] = {}
    targets: dict[str, AgentTarget] = {}
    ids: dict[str, int] = {}
    agents = AgentPool(identity, call_timeout=20)
    token_key = TokenKey.in_data_dir(tmp_path)
    server = grpc.aio.server()
    try:
        for name, (group, run_as) in SERVERS.items():
            exporter, target = await start_exporter(
                tmp_path, identity, run_as, secrets.token_hex(24)
            )
            exporters[name] = exporter
            ids[name] = await pool.fetchval(
                "INSERT INTO servers (name, url, group_name) VALUES ($1, $2, $3) RETURNING id",
                name,
                f"http://127.0.0.1:{free_port()}/metrics",
                group,
            )
            targets[name] = target
            await record_agent(
                pool,
                ids[name],
                token_key,
                address=target.address,
                exporter_cert=target.exporter_cert,
                features=["exec", "pty"],
                token=target.token,
            )
        add_fleet_service(
            server, FleetService(pool, agents, token_key, concurrency=10, recheck_seconds=0.5)
        )
        credentials = grpc.ssl_server_credentials(
            [(identity.key.read_bytes(), identity.cert.read_bytes())]
        )
        port = server.add_secure_port("127.0.0.1:0", credentials)
        await server.start()
        admin = await create_user(pool, "boss", "a long password", "admin")
        operator = await create_user(pool, "op", "a long password", "operator")
        viewer = await create_user(pool, "looker", "a long password", "viewer")
        await grant_server(pool, operator.id, ids["web1"])
        await set_grants(pool, viewer.id, all_servers=True, server_ids=[], groups=[])
        tokens = {
            user.username: (await create_token(pool, user.id, "test"))[1]
            for user in (admin, operator, viewer)
        }
        yield Fleet(
            pool,
            f"127.0.0.1:{port}",
            fingerprint(identity.cert),
            identity,
            ids,
            {name: run_as for name, (_, run_as) in SERVERS.items()},
            tokens,
            exporters,
            token_key,
            targets,
        )
    finally:
        await server.stop(grace=1)
        await agents.close()
        for exporter in exporters.values():
            await exporter.close()
