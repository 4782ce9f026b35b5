"""`vpsmon up --manage FEATURES`: the local exporter comes up enrolled with the collector, so
`vpsmon exec` (and the web terminal, file manager …) work on this machine in one step; a start
without the option withdraws that enrolment; bad options are refused before anything starts."""

from __future__ import annotations

import os
import re
import signal
import subprocess
from pathlib import Path

import asyncpg
import pytest

from tests.conftest import free_port
from tests.e2e.procs import VPSMON, Proc, base_env, wait_http, wait_output

pytestmark = pytest.mark.e2e

PASSWORD = "manage-this-machine-1"


def cli(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [VPSMON, *args], env=env, capture_output=True, text=True, timeout=120, check=False
    )


async def test_up_manage_enrols_the_local_exporter_and_a_plain_start_withdraws_it(
    tmp_path: Path, database_url: str
) -> None:
    web_port, exporter_port, command_port, grpc_port = (free_port() for _ in range(4))
    env = base_env(
        VPSMON_DATABASE_URL=database_url,
        VPSMON_ADMIN_PASSWORD=PASSWORD,
        VPSMON_GRPC_LISTEN=f"127.0.0.1:{grpc_port}",
    )
    data_dir = tmp_path / "data"
    common = [
        "up",
        "--data-dir",
        str(data_dir),
        "--listen",
        f"127.0.0.1:{web_port}",
        "--exporter-listen",
        f"127.0.0.1:{exporter_port}",
    ]
    # As root the option insists on an unprivileged user; as anyone else their own user runs.
    run_as = ["--run-as", "nobody"] if os.geteuid() == 0 else []
    manage = [
        *common,
        "--manage",
        "exec,files",
        "--command-listen",
        f"127.0.0.1:{command_port}",
        *run_as,
    ]
    up = Proc(manage, env, tmp_path / "up1.log")
    try:
        wait_http(f"http://127.0.0.1:{web_port}/healthz", up, timeout=120)
        wait_output(up, r"Press Ctrl-C to stop", timeout=60)
        assert "This machine is managed: exec, files" in up.output()
        token = cli("token", "create", "--user", "admin", "--data-dir", str(data_dir), env=env)
        assert token.returncode == 0, token.stderr
        fingerprint = cli("collector", "fingerprint", "--data-dir", str(data_dir), env=env)
        conn = await asyncpg.connect(database_url)
        try:
            server_id = await conn.fetchval(
                "SELECT id FROM servers WHERE url = $1",
                f"http://127.0.0.1:{exporter_port}/metrics",
            )
            row = await conn.fetchrow("SELECT address, features FROM agents")
            audited = await conn.fetchval(
                "SELECT detail->>'via' FROM audit_log WHERE action = 'agent.enrol'"
            )
        finally:
            await conn.close()
        assert row is not None and row["address"] == f"127.0.0.1:{command_port}"
        assert sorted(row["features"]) == ["exec", "files"]
        assert audited == "vpsmon up"
        ran = cli(
            "exec",
            "--collector",
            f"127.0.0.1:{grpc_port}",
            "--fingerprint",
            fingerprint.stdout.strip(),
            "--token",
            token.stdout.strip().splitlines()[-1],
            str(server_id),
            "--",
            "sh",
            "-c",
            "echo managed-$((6*7))",
            env=env,
        )
        assert ran.returncode == 0, ran.stderr
        assert re.search(r"\| managed-42$", ran.stdout, re.M), ran.stdout
    finally:
        rc = up.stop(signal.SIGINT)
    assert rc == 0, up.output()
    assert "Traceback" not in up.output()

    plain = Proc(common, env, tmp_path / "up2.log")
    try:
        wait_http(f"http://127.0.0.1:{web_port}/healthz", plain, timeout=120)
        wait_output(plain, r"Press Ctrl-C to stop", timeout=60)
        assert "managed" not in plain.output()
        conn = await asyncpg.connect(database_url)
        try:
            agents = await conn.fetchval("SELECT count(*) FROM agents")
            revoked = await conn.fetchval(
                "SELECT count(*) FROM audit_log WHERE action = 'agent.revoke'"
            )
        finally:
            await conn.close()
        assert (agents, revoked) == (0, 1)
    finally:
        assert plain.stop(signal.SIGTERM) == 0, plain.output()


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--manage", "exec,shell"], "--manage: unknown feature shell; one of exec, pty"),
        (["--run-as", "nobody"], "--run-as and --command-listen need --manage FEATURES"),
        (["--manage", "exec", "--command-listen", "nowhere"], "--command-listen:"),
    ],
)
def test_up_manage_bad_options_are_refused_before_anything_starts(
    tmp_path: Path, args: list[str], message: str
) -> None:
    result = cli(
        "up",
        "--data-dir",
        str(tmp_path / "data"),
        "--listen",
        "127.0.0.1:1",
        *args,
        env=base_env(VPSMON_DATABASE_URL="postgresql://nobody@127.0.0.1:1/none"),
    )
    assert result.returncode == 2, result.stderr
    assert message in result.stderr
    assert not (tmp_path / "data" / "identity").exists()
