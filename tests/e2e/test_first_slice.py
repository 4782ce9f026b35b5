"""End to end: exporter, collector and web started as a user would, then checked over HTTP."""

from __future__ import annotations

import asyncio
import json
import re
import subprocess
import time
from pathlib import Path

import aiohttp
import asyncpg
import pytest

from tests.conftest import free_port, require_binary
from tests.e2e.procs import Proc, Slice, base_env, wait_http

PASSWORD = "e2e-password-123"
SERVER_NAME = "e2e-box"

pytestmark = pytest.mark.e2e


async def login(session: aiohttp.ClientSession, base: str, password: str) -> None:
    async with session.get(f"{base}/login") as resp:
        page = await resp.text()
    match = re.search(r'name="csrf_token" value="([^"]+)"', page)
    assert match, page
    async with session.post(
        f"{base}/login",
        data={"csrf_token": match.group(1), "username": "admin", "password": password},
        allow_redirects=False,
    ) as resp:
        assert resp.status == 302, await resp.text()
        assert resp.headers["Location"] == "/"


def mem_total_bytes() -> float:
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemTotal:"):
            return float(line.split()[1]) * 1024
    raise AssertionError("no MemTotal in /proc/meminfo")


async def test_exporter_collector_and_web_show_the_server_and_its_samples(
    tmp_path: Path, database_url: str
) -> None:
    running = Slice(tmp_path, database_url, SERVER_NAME, PASSWORD)
    base, exporter_port = running.base, running.exporter_port
    try:
        async with aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True)) as http:
            await login(http, base, PASSWORD)

            # Stored samples: MemTotal reached PostgreSQL through the sql/ schema.
            conn = await asyncpg.connect(database_url)
            try:
                stored = None
                for _ in range(100):
                    stored = await conn.fetchrow(
                        "SELECT s.value, se.labels FROM samples s JOIN series se"
                        " ON se.id = s.series_id JOIN servers sv ON sv.id = se.server_id"
                        " WHERE sv.name = $1 AND se.metric = 'node_memory_MemTotal_bytes'"
                        " LIMIT 1",
                        SERVER_NAME,
                    )
                    if stored:
                        break
                    await asyncio.sleep(0.2)
                assert stored is not None, running.collector.output()
                assert stored["value"] == mem_total_bytes()
                labels = json.loads(stored["labels"])
                assert labels["job"] == "vpsmon"
                assert labels["instance"] == f"127.0.0.1:{exporter_port}"
                up = await conn.fetchval(
                    "SELECT count(*) FROM samples s JOIN series se ON se.id = s.series_id"
                    " WHERE se.metric = 'up' AND s.value = 1"
                )
                assert up >= 1
            finally:
                await conn.close()

            # The page shows the server, online, with live CPU and memory.
            async with http.get(f"{base}/") as resp:
                assert resp.status == 200
                assert SERVER_NAME in await resp.text()
            async with http.get(f"{base}/api/servers") as resp:
                servers = (await resp.json())["servers"]
            (server,) = [s for s in servers if s["name"] == SERVER_NAME]
            assert server["live"]["online"] is True
            assert server["live"]["memory_total"] == mem_total_bytes()

            # Live updates arrive over the WebSocket without reloading.
            async with http.ws_connect(f"{base}/api/live", origin=base) as ws:
                first = json.loads((await ws.receive(timeout=10)).data)
                assert first["type"] == "snapshot"
                assert any(s["name"] == SERVER_NAME for s in first["servers"])
                seen: list[float] = []
                deadline = time.monotonic() + 15
                while len(seen) < 2 and time.monotonic() < deadline:
                    msg = json.loads((await ws.receive(timeout=10)).data)
                    live = msg.get("server", {})
                    # CPU needs two collections of the exporter; wait for it.
                    if live.get("id") == server["id"] and live["cpu"] is not None:
                        assert 0.0 <= live["cpu"] <= 1.0
                        assert live["memory_used"] > 0
                        seen.append(live["last_seen"])
                assert len(seen) == 2 and seen[1] > seen[0], "no live updates arrived"
    finally:
        collector_rc, exporter_rc = running.stop()
    assert collector_rc == 0, running.collector.output()
    assert exporter_rc == 0, running.exporter.output()
    assert "Traceback" not in running.collector.output()
    # The collector's garbage-collector policy ran once it served (collector/gcpolicy.py).
    assert "garbage collector: start-up objects frozen" in running.collector.output()


ALLOWED_LINT = re.compile(
    r"^(node_memory_|node_netstat_)\S+ metric names should be written in 'snake_case' not "
    r"'camelCase'$"
)


def test_exporter_payload_passes_promtool_check_metrics(tmp_path: Path) -> None:
    promtool = require_binary("promtool")
    port = free_port()
    exporter = Proc(
        ["exporter", "run", "--listen", f"127.0.0.1:{port}"], base_env(), tmp_path / "exporter.log"
    )
    try:
        wait_http(f"http://127.0.0.1:{port}/metrics", exporter)
        import urllib.request

        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics") as resp:  # noqa: S310
            payload = resp.read()
    finally:
        assert exporter.stop() == 0
    result = subprocess.run(
        [promtool, "check", "metrics"], input=payload, capture_output=True, check=False
    )
    lines = [
        line
        for line in result.stdout.decode().splitlines() + result.stderr.decode().splitlines()
        if line.strip()
    ]
    problems = [line for line in lines if not ALLOWED_LINT.match(line)]
    assert problems == [], "\n".join(problems)
    assert b"node_cpu_seconds_total" in payload
