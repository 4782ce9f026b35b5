"""`vpsmon up` on the embedded database: comes up, stops without leftovers, reuses its data."""

from __future__ import annotations

import asyncio
import re
import signal
import time
import urllib.parse
from pathlib import Path

import aiohttp
import asyncpg
import psutil
import pytest

from tests.conftest import free_port
from tests.e2e.procs import Proc, base_env, wait_http, wait_output
from tests.e2e.test_first_slice import login

pytestmark = pytest.mark.e2e


def leftovers(data_dir: Path, ports: list[int]) -> list[str]:
    """Processes that still use the data dir, and ports still listened on."""
    found = []
    for proc in psutil.process_iter(["pid", "name", "cmdline"]):
        cmdline = " ".join(proc.info["cmdline"] or [])
        if str(data_dir) in cmdline:
            found.append(f"pid {proc.info['pid']}: {cmdline}")
    for conn in psutil.net_connections("tcp"):
        if conn.status == psutil.CONN_LISTEN and conn.laddr and conn.laddr.port in ports:
            found.append(f"port {conn.laddr.port} still listening")
    return found


async def test_up_starts_everything_stops_on_ctrl_c_and_reuses_data(
    tmp_path: Path, embedded_data_dir: Path
) -> None:
    data_dir = embedded_data_dir
    web_port, exporter_port = free_port(), free_port()
    args = [
        "up",
        "--data-dir",
        str(data_dir),
        "--listen",
        f"127.0.0.1:{web_port}",
        "--exporter-listen",
        f"127.0.0.1:{exporter_port}",
    ]
    base = f"http://127.0.0.1:{web_port}"

    first = Proc(args, base_env(), tmp_path / "up1.log")
    try:
        wait_http(f"{base}/healthz", first, timeout=120)
        # The banner comes once every stage runs, which can be a moment after the site serves.
        wait_output(first, r"Press Ctrl-C to stop", timeout=60)
        match = re.search(r"user admin, password (\S+)", first.output())
        assert match, first.output()
        password = match.group(1)
        assert f"{base}/" in first.output()
        async with aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True)) as http:
            await login(http, base, password)
            live: dict[str, object] = {}
            deadline = time.monotonic() + 40
            while time.monotonic() < deadline:
                async with http.get(f"{base}/api/servers") as resp:
                    servers = (await resp.json())["servers"]
                assert len(servers) == 1
                live = servers[0]["live"]
                if live.get("online") and live.get("cpu") is not None:
                    break
                await asyncio.sleep(1)
            assert live.get("online") is True, first.output()
            assert live.get("cpu") is not None and live.get("memory_total")
            assert servers[0]["url"] == f"http://127.0.0.1:{exporter_port}/metrics"
    finally:
        rc = first.stop(signal.SIGINT)  # what Ctrl-C sends
    assert rc == 0, first.output()
    assert "Traceback" not in first.output()
    await asyncio.sleep(0.5)
    assert leftovers(data_dir, [web_port, exporter_port]) == []

    second = Proc(args, base_env(), tmp_path / "up2.log")
    try:
        wait_http(f"{base}/healthz", second, timeout=120)
        wait_output(second, r"Press Ctrl-C to stop", timeout=60)
        assert "password" not in second.output(), "the admin password is printed only once"
        async with aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True)) as http:
            await login(http, base, password)
        socket_dir = urllib.parse.quote(str(data_dir / "pgdata"), safe="")
        conn = await asyncpg.connect(f"postgresql://postgres@/vpsmon?host={socket_dir}")
        try:
            servers = await conn.fetchval("SELECT count(*) FROM servers")
            samples = await conn.fetchval("SELECT count(*) FROM samples")
        finally:
            await conn.close()
        assert servers == 1
        assert samples > 0
    finally:
        rc = second.stop(signal.SIGTERM)
    assert rc == 0, second.output()
    await asyncio.sleep(0.5)
    assert leftovers(data_dir, [web_port, exporter_port]) == []
