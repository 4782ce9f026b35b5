"""End to end: a scraped exporter queried through /api/v1 with a token from `vpsmon token
create`, as a script or Grafana would (issue #8)."""

from __future__ import annotations

import asyncio
import subprocess
import time
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from tests.e2e.procs import VPSMON, Slice, base_env

PASSWORD = "e2e-password-123"

pytestmark = pytest.mark.e2e


def create_token(database_url: str) -> str:
    done = subprocess.run(
        [VPSMON, "token", "create", "--user", "admin", "--name", "grafana"],
        capture_output=True,
        text=True,
        timeout=60,
        env=base_env(VPSMON_DATABASE_URL=database_url),
        check=False,
    )
    assert done.returncode == 0, done.stderr
    return done.stdout.strip().splitlines()[-1].strip()


async def test_scraped_samples_answer_promql_through_the_api_with_a_token(
    tmp_path: Path, database_url: str
) -> None:
    running = Slice(tmp_path, database_url, "api-box", PASSWORD)
    try:
        token = await asyncio.to_thread(create_token, database_url)
        headers = {"Authorization": f"Bearer {token}"}
        async with aiohttp.ClientSession(headers=headers) as http:

            async def query(path: str, **params: str) -> dict[str, Any]:
                async with http.get(f"{running.base}{path}", params=params) as resp:
                    body: dict[str, Any] = await resp.json()
                    assert resp.status == 200, body
                    return body

            instance = f"127.0.0.1:{running.exporter_port}"
            rates: list[dict[str, Any]] = []
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline:
                body = await query(
                    "/api/v1/query", query="sum by (instance) (rate(node_cpu_seconds_total[10s]))"
                )
                rates = body["data"]["result"]
                if rates:
                    break
                await asyncio.sleep(0.5)
            assert rates, running.collector.output()
            assert rates[0]["metric"] == {"instance": instance}
            assert float(rates[0]["value"][1]) >= 0

            body = await query("/api/v1/query", query="up")
            (up,) = body["data"]["result"]
            assert up["metric"] == {"__name__": "up", "instance": instance, "job": "vpsmon"}
            assert up["value"][1] == "1"

            now = time.time()
            body = await query(
                "/api/v1/query_range",
                query="up",
                start=str(now - 5),
                end=str(now),
                step="1",
            )
            assert body["data"]["resultType"] == "matrix"
            values = body["data"]["result"][0]["values"]
            assert len(values) >= 2 and all(v == "1" for _, v in values), values

            body = await query("/api/v1/label/job/values")
            assert body["data"] == ["vpsmon"]
            body = await query("/api/v1/series", **{"match[]": "node_memory_MemTotal_bytes"})
            assert [s["instance"] for s in body["data"]] == [instance]

            async with http.get(
                f"{running.base}/api/v1/query", params={"query": "rate(up)"}
            ) as resp:
                assert resp.status == 400
                error = await resp.json()
            assert error["status"] == "error" and error["errorType"] == "bad_data"
        async with aiohttp.ClientSession() as anonymous:
            async with anonymous.get(f"{running.base}/api/v1/query", params={"query": "up"}) as r:
                assert r.status == 401
    finally:
        collector_rc, _ = running.stop()
    assert collector_rc == 0, running.collector.output()
    assert "Traceback" not in running.collector.output()
