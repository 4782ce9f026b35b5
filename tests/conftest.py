"""Shared test fixtures: a fresh PostgreSQL database, free ports, capability checks.

PostgreSQL: VPSMON_TEST_DATABASE_URL (a server we may create databases on) when set, else the
embedded server started once per run in a temp dir. Every run, and every test that asks for
`database_url`, gets a database of its own, dropped afterwards.
"""

from __future__ import annotations

import asyncio
import os
import secrets
import shutil
import socket
import tempfile
import urllib.parse
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import asyncpg
import pytest

IN_CI = os.environ.get("CI", "").lower() == "true"

# Before any test module imports grpc: its fork handlers can abort the children of processes
# started by in-process gRPC servers (see exporter/command/__init__.py).
os.environ.setdefault("GRPC_ENABLE_FORK_SUPPORT", "0")

# Fixtures every area may use: `dockerd` (a private real dockerd per run), `own_dockerd`;
# `command_rig` and `enrolled_server` (issue #7: real exporters enrolled with the collector).
pytest_plugins = ("tests.dockerd", "tests.command_fixtures")


def require(condition: bool, reason: str) -> None:
    """Skip with a reason on a laptop without the capability; fail in CI, which provides it."""
    if condition:
        return
    if IN_CI:
        pytest.fail(f"CI=true but {reason}")
    pytest.skip(reason)


def require_binary(name: str) -> str:
    path = shutil.which(name)
    require(path is not None, f"{name} is not installed")
    assert path is not None
    return path


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def with_database(url: str, database: str) -> str:
    parts = urllib.parse.urlsplit(url)
    return urllib.parse.urlunsplit(parts._replace(path="/" + database))


class DatabaseServer:
    """Creates and drops throwaway databases on one server."""

    def __init__(self, admin_url: str) -> None:
        self.admin_url = admin_url
        self.created: list[str] = []

    async def create(self) -> str:
        name = f"vpsmon_test_{os.getpid()}_{secrets.token_hex(4)}"
        conn = await asyncpg.connect(self.admin_url)
        try:
            await conn.execute(f'CREATE DATABASE "{name}"')
        finally:
            await conn.close()
        self.created.append(name)
        return with_database(self.admin_url, name)

    async def drop_all(self) -> None:
        # Side by side: every DROP DATABASE waits for a checkpoint, 2-18 s on a busy shared
        # server, and one after the other the run's few hundred databases outlasted the last
        # test's 300 s timeout. Drops waiting together share one checkpoint (12 dropped at
        # once: 1.6 s; 6 one by one: 13.9 s, load 7.5).
        gate = asyncio.Semaphore(16)

        async def drop(name: str) -> None:
            async with gate:
                conn = await asyncpg.connect(self.admin_url)
                try:
                    await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
                finally:
                    await conn.close()

        await asyncio.gather(*(drop(name) for name in self.created))


@pytest.fixture(scope="session")
def database_server() -> Iterator[DatabaseServer]:
    url = os.environ.get("VPSMON_TEST_DATABASE_URL")
    embedded = None
    tmp = None
    if not url:
        from vpsmon.collector.storage.embedded import EmbeddedPostgres

        tmp = Path(tempfile.mkdtemp(prefix="vpsmon-test-pg-"))
        embedded = EmbeddedPostgres(tmp / "pgdata")
        embedded.start()
        url = embedded.url("postgres")
    server = DatabaseServer(url)
    try:
        yield server
    finally:
        asyncio.run(server.drop_all())
        if embedded is not None:
            embedded.stop()
        if tmp is not None:
            shutil.rmtree(tmp, ignore_errors=True)


@pytest.fixture
async def database_url(database_server: DatabaseServer) -> str:
    """A fresh, empty database (no migrations applied)."""
    return await database_server.create()


@pytest.fixture
async def pool(database_url: str) -> AsyncIterator[asyncpg.Pool]:
    """A pool on a fresh database with every migration applied."""
    from vpsmon.collector.storage.db import connect_pool
    from vpsmon.collector.storage.migrate import migrate

    pool = await connect_pool(database_url)
    await migrate(pool)
    try:
        yield pool
    finally:
        await pool.close()


@pytest.fixture(scope="session")
def artifacts_dir() -> Path:
    """Screenshots and logs tests keep for people to look at (test-artifacts/)."""
    path = Path(__file__).resolve().parent.parent / "test-artifacts"
    path.mkdir(exist_ok=True)
    return path


@pytest.fixture
def embedded_data_dir() -> Iterator[Path]:
    """A data directory for a `vpsmon up` with its embedded PostgreSQL, outside pytest's tmp.

    The embedded server runs as its own user and needs every parent directory traversable;
    pytest resets its base temp directory to 0700 whenever another pytest session starts, so
    a data dir under ``tmp_path`` breaks as soon as two runs overlap on one machine.
    """
    parent = Path(tempfile.mkdtemp(prefix="vpsmon-up-"))
    try:
        yield parent / "data"
    finally:
        shutil.rmtree(parent, ignore_errors=True)
