"""`vpsmon user …` and `vpsmon token …` as a person runs them: on VPSMON_DATABASE_URL, and on
the embedded database of a running `vpsmon up` (which must keep running)."""

from __future__ import annotations

import re
import signal
import subprocess
from pathlib import Path

import aiohttp
import asyncpg
import pytest

from tests.conftest import free_port
from tests.e2e.procs import VPSMON, Proc, base_env, wait_http

pytestmark = pytest.mark.e2e


def vpsmon(
    *args: str, env: dict[str, str], stdin: str | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [VPSMON, *args],
        input=stdin,
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
        check=False,
    )


async def me(base: str, token: str) -> tuple[int, dict[str, object]]:
    async with (
        aiohttp.ClientSession() as http,
        http.get(f"{base}/api/me", headers={"Authorization": f"Bearer {token}"}) as resp,
    ):
        return resp.status, await resp.json()


def test_user_and_token_commands_on_a_database_url(database_url: str) -> None:
    env = base_env(VPSMON_DATABASE_URL=database_url)
    added = vpsmon(
        "user", "add", "ops", "--role", "operator", "--password-file", "-",
        env=env, stdin="a good password\n",
    )  # fmt: skip
    assert added.returncode == 0, added.stderr
    assert "created user ops (role operator)" in added.stdout

    again = vpsmon(
        "user", "add", "ops", "--role", "viewer", "--password-file", "-",
        env=env, stdin="a good password\n",
    )  # fmt: skip
    assert again.returncode == 1
    assert again.stderr.strip() == "vpsmon: error: user 'ops' already exists"

    short = vpsmon(
        "user", "add", "x", "--role", "viewer", "--password-file", "-", env=env, stdin="short\n"
    )
    assert short.returncode == 1 and "at least 8 characters" in short.stderr

    no_tty = vpsmon("user", "add", "y", "--role", "viewer", env=env, stdin="")
    assert no_tty.returncode == 1 and "--password-file" in no_tty.stderr

    created = vpsmon("token", "create", "--user", "ops", "--name", "ci", env=env)
    assert created.returncode == 0, created.stderr
    secret = created.stdout.strip().splitlines()[-1]
    assert re.fullmatch(r"vpsmon_[A-Za-z0-9_-]{43}", secret)
    assert "shown once" in created.stderr

    listed = vpsmon("token", "list", env=env)
    assert re.search(r"^1\s+ops\s+ci\s+active\s+never$", listed.stdout, re.M), listed.stdout
    assert secret not in listed.stdout

    users = vpsmon("user", "list", env=env)
    assert re.search(r"^ops\s+operator\s+active\s+-\s+0 granted$", users.stdout, re.M)

    revoked = vpsmon("token", "revoke", "1", env=env)
    assert revoked.returncode == 0 and "revoked" in revoked.stdout
    twice = vpsmon("token", "revoke", "1", env=env)
    assert twice.returncode == 1 and "no active token with id 1" in twice.stderr

    missing = vpsmon("token", "create", "--user", "nobody", env=env)
    assert missing.returncode == 1 and missing.stderr.strip() == "vpsmon: error: no user 'nobody'"


async def test_cli_actions_are_in_the_audit_log(database_url: str) -> None:
    env = base_env(VPSMON_DATABASE_URL=database_url)
    vpsmon(
        "user", "add", "ops", "--role", "viewer", "--password-file", "-",
        env=env, stdin="a good password\n",
    )  # fmt: skip
    vpsmon("token", "create", "--user", "ops", "--name", "ci", env=env)
    conn = await asyncpg.connect(database_url)
    try:
        rows = await conn.fetch("SELECT action, username, detail FROM audit_log ORDER BY id")
    finally:
        await conn.close()
    assert [r["action"] for r in rows] == ["user.create", "token.create"]
    assert all(r["username"].startswith("cli") for r in rows)
    assert "vpsmon_" not in " ".join(r["detail"] for r in rows), "no secret in the log"


def test_token_create_on_an_unknown_data_dir_makes_nothing(tmp_path: Path) -> None:
    result = vpsmon(
        "token", "create", "--user", "admin", "--data-dir", str(tmp_path / "typo"), env=base_env()
    )
    assert result.returncode == 1
    assert "no database in" in result.stderr and "vpsmon up" in result.stderr
    assert not (tmp_path / "typo" / "pgdata").exists()


async def test_token_create_works_on_the_embedded_database_of_a_running_up(
    tmp_path: Path, embedded_data_dir: Path
) -> None:
    data_dir = embedded_data_dir
    web_port, exporter_port = free_port(), free_port()
    base = f"http://127.0.0.1:{web_port}"
    up = Proc(
        [
            "up", "--data-dir", str(data_dir), "--listen", f"127.0.0.1:{web_port}",
            "--exporter-listen", f"127.0.0.1:{exporter_port}",
        ],
        base_env(),
        tmp_path / "up.log",
    )  # fmt: skip
    try:
        wait_http(f"{base}/healthz", up, timeout=120)
        created = vpsmon(
            "token", "create", "--user", "admin", "--data-dir", str(data_dir), env=base_env()
        )
        assert created.returncode == 0, created.stderr
        secret = created.stdout.strip().splitlines()[-1]
        # The collector still has its database (the CLI attached and left it running).
        status, body = await me(base, secret)
        assert status == 200, body
        assert body["username"] == "admin" and body["via_token"] is True
        revoked = vpsmon("token", "revoke", "1", "--data-dir", str(data_dir), env=base_env())
        assert revoked.returncode == 0, revoked.stderr
        status, body = await me(base, secret)
        assert status == 401
    finally:
        rc = up.stop(signal.SIGINT)
    assert rc == 0, up.output()
    assert "Traceback" not in up.output()
