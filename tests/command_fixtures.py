"""Fixtures for the command channel (issue #7): a collector side and enrolled real exporters.

Registered in tests/conftest.py (pytest_plugins), so every test can ask for them:

    async def test_x(enrolled_server: EnrollServer, command_rig: CommandRig) -> None:
        box = await enrolled_server("exec", "files")          # a real exporter, enrolled
        web = await command_rig.start_web(lambda app: app.router.add_get(...))
        async with web.client() as client:
            csrf = await web.login(client, "olga")   # operator; "vic" viewer, "root" admin
            await command_rig.grant("olga", box.server_id)
            ...
        agent_record = box.record                            # AgentRecord (target, features)
        stub = command_rig.agents.stub(box.record.target)    # straight to the exporter

- `command_rig`: a migrated test database (the `pool` fixture), a collector data dir in
  tmp with the collector identity made in it, a CollectorConfig pointing there (reauth 10m),
  the AgentPool, and users root (admin), olga (operator), vic (viewer), all with PASSWORD.
  `start_web(setup)` runs the real web app (create_app) with that pool and config on a
  TestServer; `setup(app)` may add routes first.
- `enrolled_server(*features, name=..., policy=..., **exporter_overrides)`: starts an
  in-process exporter (serve()) with the command channel on a free port, those features,
  run_as nobody and a policy whose file root is `box.files` (owned by nobody); inserts a
  server row and its enrolment record (sql/080) with a fresh command token. Needs root (to
  run commands as nobody) and openssl: skipped on a laptop without them, failing under CI.
"""

from __future__ import annotations

import os
import pwd
import re
import secrets
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import aiohttp
import asyncpg
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from tests.conftest import free_port, require, require_binary
from vpsmon.collector import access as grants
from vpsmon.collector import accounts
from vpsmon.collector.config import CollectorConfig, load_config
from vpsmon.collector.fleet.agents import AgentRecord, record_agent
from vpsmon.collector.fleet.identity import ensure_identity
from vpsmon.collector.fleet.pool import AgentPool
from vpsmon.collector.fleet.tokenkey import TokenKey
from vpsmon.collector.head import Head
from vpsmon.exporter.config import load_config as load_exporter_config
from vpsmon.exporter.security import CertificatePaths, fingerprint
from vpsmon.exporter.server import Exporter, identity, serve

PASSWORD = "correct horse battery"
CSRF_FIELD = re.compile(r'name="csrf_token" value="([^"]+)"')
USERS = (("root", "admin"), ("olga", "operator"), ("vic", "viewer"))


@dataclass
class Web:
    app: web.Application
    server: TestServer

    @property
    def origin(self) -> str:
        return f"http://127.0.0.1:{self.server.port}"

    def client(self) -> aiohttp.ClientSession:
        """A browser of its own (own cookies) on the running app."""
        return aiohttp.ClientSession(
            base_url=self.origin, cookie_jar=aiohttp.CookieJar(unsafe=True)
        )

    async def login(
        self, client: aiohttp.ClientSession, username: str, password: str = PASSWORD
    ) -> str:
        """Log in through the form (this also counts as a fresh step-up); returns the CSRF
        token for X-CSRF-Token headers or csrf_token form fields."""
        page = await (await client.get("/login")).text()
        match = CSRF_FIELD.search(page)
        assert match, page[:300]
        resp = await client.post(
            "/login",
            data={"username": username, "password": password, "csrf_token": match.group(1)},
            allow_redirects=False,
        )
        assert resp.status == 302, await resp.text()
        page = await (await client.get("/")).text()
        match = CSRF_FIELD.search(page)
        assert match
        return match.group(1)


@dataclass
class CommandRig:
    pool: asyncpg.Pool
    data_dir: Path
    identity: CertificatePaths  # the collector's key pair (data_dir/identity)
    config: CollectorConfig
    agents: AgentPool
    users: dict[str, accounts.User]
    tmp: Path
    _webs: list[Web] = field(default_factory=list)

    @property
    def token_key(self) -> TokenKey:
        """The key file the web app opens command tokens with (data_dir/command-token.key)."""
        return TokenKey.in_data_dir(self.data_dir)

    async def start_web(self, setup: Callable[[web.Application], None] | None = None) -> Web:
        from vpsmon.web.app import create_app

        app = create_app(self.config, self.pool, Head(), agents=self.agents)
        if setup is not None:
            setup(app)
        server = TestServer(app, host="127.0.0.1")
        await server.start_server()
        running = Web(app, server)
        self._webs.append(running)
        return running

    async def grant(self, username: str, server_id: int) -> None:
        await grants.grant_server(self.pool, self.users[username].id, server_id)

    async def age_step_up(self, username: str) -> None:
        """As if the user's last password entry were longer ago than web.reauth_ttl (10m)."""
        await self.pool.execute(
            "UPDATE sessions SET authenticated_at = now() - interval '11 minutes'"
            " WHERE user_id = $1",
            self.users[username].id,
        )


@dataclass
class EnrolledServer:
    server_id: int
    name: str
    exporter: Exporter
    record: AgentRecord
    token: str
    files: Path  # the policy's file root, owned by nobody
    exporter_cert: Path

    @property
    def port(self) -> int:
        return self.exporter.config.command.listen.port


class EnrollServer(Protocol):
    def __call__(
        self,
        *features: str,
        name: str | None = None,
        policy: str | None = None,
        **exporter_overrides: Any,
    ) -> Awaitable[EnrolledServer]: ...


@pytest.fixture
async def command_rig(pool: asyncpg.Pool, tmp_path: Path) -> AsyncIterator[CommandRig]:
    require_binary("openssl")
    os.chmod(tmp_path, 0o755)  # noqa: ASYNC240, S103 (the exporter's commands run as nobody here)
    data_dir = tmp_path / "collector-data"
    own = ensure_identity(data_dir)
    config = load_config(
        None, env={"VPSMON_WEB_REAUTH_TTL": "10m"}, overrides={"data_dir": str(data_dir)}
    )
    users = {name: await accounts.create_user(pool, name, PASSWORD, role) for name, role in USERS}
    agents = AgentPool(own, call_timeout=20)
    rig = CommandRig(pool, data_dir, own, config, agents, users, tmp_path)
    try:
        yield rig
    finally:
        for running in rig._webs:
            await running.server.close()
        await agents.close()


@pytest.fixture
async def enrolled_server(command_rig: CommandRig) -> AsyncIterator[EnrollServer]:
    require(os.geteuid() == 0, "commands as nobody need root")
    nobody = pwd.getpwnam("nobody")
    started: list[Exporter] = []
    rig = command_rig

    async def enroll(
        *features: str,
        name: str | None = None,
        policy: str | None = None,
        **exporter_overrides: Any,
    ) -> EnrolledServer:
        name = name or f"box-{len(started) + 1}"
        home = rig.tmp / f"exporter-{name}"
        files = home / "files"
        files.mkdir(parents=True)
        home.chmod(0o755)
        os.chown(files, nobody.pw_uid, nobody.pw_gid)
        policy_file = home / "policy.yml"
        policy_file.write_text(policy if policy is not None else f"file_roots: [{files}]\n")
        token = secrets.token_urlsafe(32)
        port = free_port()
        values: dict[str, Any] = {
            "listen": "127.0.0.1:0",
            "state_dir": str(home / "state"),
            "collectors.hwmon": False,
            "collectors.filesystem": False,
            "collectors.docker": False,
            "command.listen": f"127.0.0.1:{port}",
            "command.collector_cert": str(rig.identity.cert),
            "command.collector_fingerprint": fingerprint(rig.identity.cert),
            "command.token": token,
            "command.run_as": "nobody",
            "command.policy_file": str(policy_file),
            **{f"command.{f}": True for f in features},
            **exporter_overrides,
        }
        config = load_exporter_config(None, env={}, overrides=values)
        exporter = await serve(config)
        started.append(exporter)
        cert = identity(config).cert
        server_id = await rig.pool.fetchval(
            "INSERT INTO servers (name, url) VALUES ($1, $2) RETURNING id",
            name,
            f"http://127.0.0.1:{exporter.port}/metrics",
        )
        record = await record_agent(
            rig.pool,
            server_id,
            rig.token_key,
            address=f"127.0.0.1:{port}",
            exporter_cert=cert.read_bytes(),
            features=features,
            token=token,
        )
        return EnrolledServer(server_id, name, exporter, record, token, files, cert)

    try:
        yield enroll
    finally:
        for exporter in started:
            await exporter.close()


__all__: Sequence[str] = (
    "PASSWORD",
    "CommandRig",
    "EnrollServer",
    "EnrolledServer",
    "Web",
    "command_rig",
    "enrolled_server",
)
