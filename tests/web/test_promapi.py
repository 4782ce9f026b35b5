"""The Prometheus-compatible HTTP API (/api/v1) on the real app, database and storage reader.

Data comes in through POST /api/v1/import/prometheus; answers are compared with Debian's
Prometheus serving the same data, and checked in the shapes Grafana's data source reads.
"""

from __future__ import annotations

import re
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from typing import Any

import aiohttp
import asyncpg
import pytest
from aiohttp.test_utils import TestClient, TestServer

from tests.collector import promql_corpus as corpus
from vpsmon.collector import accounts, tokens
from vpsmon.collector.access import grant_server
from vpsmon.collector.config import load_config
from vpsmon.collector.head import Head
from vpsmon.web.app import create_app

ADMIN = ("root", "correct horse battery")
CSRF_FIELD = re.compile(r'name="csrf_token" value="([^"]+)"')


@dataclass
class Api:
    client: TestClient
    pool: asyncpg.Pool
    csrf: str = ""

    async def get(self, path: str, **params: Any) -> tuple[int, dict[str, Any]]:
        resp = await self.client.get(path, params=params)
        return resp.status, await resp.json()

    async def post_form(self, path: str, data: Any) -> tuple[int, dict[str, Any]]:
        resp = await self.client.post(path, data=data, headers={"X-CSRF-Token": self.csrf})
        return resp.status, await resp.json()

    async def import_text(self, text: str, **params: Any) -> tuple[int, dict[str, Any]]:
        resp = await self.client.post(
            "/api/v1/import/prometheus",
            data=text.encode(),
            params=params,
            headers={"X-CSRF-Token": self.csrf, "Content-Type": "text/plain"},
        )
        return resp.status, await resp.json()


async def login(client: TestClient, username: str, password: str) -> str:
    page = await client.get("/login")
    token = CSRF_FIELD.search(await page.text())
    assert token
    resp = await client.post(
        "/login",
        data={"username": username, "password": password, "csrf_token": token.group(1)},
        allow_redirects=False,
    )
    assert resp.status == 302, await resp.text()
    home = await client.get("/")
    csrf = CSRF_FIELD.search(await home.text())
    assert csrf
    return csrf.group(1)


@pytest.fixture
async def api(pool: asyncpg.Pool) -> AsyncIterator[Api]:
    await accounts.create_user(pool, *ADMIN, "admin")
    app = create_app(load_config(None, env={}), pool, Head())
    async with TestClient(TestServer(app, host="127.0.0.1")) as client:
        csrf = await login(client, *ADMIN)
        yield Api(client, pool, csrf)


@pytest.fixture(scope="module")
def prometheus_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    with corpus.run_prometheus(tmp_path_factory.mktemp("prometheus")) as url:
        yield url


async def test_logged_out_requests_get_a_prometheus_style_401(pool: asyncpg.Pool) -> None:
    app = create_app(load_config(None, env={}), pool, Head())
    async with TestClient(TestServer(app, host="127.0.0.1")) as client:
        resp = await client.get("/api/v1/query", params={"query": "up"})
        assert resp.status == 401
        body = await resp.json()
        assert body["status"] == "error" and body["errorType"] == "unauthorized"
        resp = await client.post("/api/v1/import/prometheus", data=b"x 1 1")
        assert resp.status in (401, 403)


async def test_imported_data_answers_like_prometheus_through_the_api(
    api: Api, prometheus_url: str
) -> None:
    status, body = await api.import_text(corpus.exposition(corpus.generate()))
    assert status == 200, body
    assert body["data"]["samples"] == sum(len(s.values) for s in corpus.generate())
    problems: list[str] = []
    queries = [
        "dt_requests_total",
        "rate(dt_requests_total[5m])",
        "sum by (code) (increase(dt_requests_total[10m]))",
        "dt_memory_bytes * on(instance) group_left(region) dt_info",
        "histogram_quantile(0.9, sum by (le) (rate(dt_latency_seconds_bucket[5m])))",
        "max_over_time(deriv(dt_memory_bytes[10m])[30m:1m])",
        'absent(dt_memory_bytes{instance="gone"})',
        "scalar(count(dt_info))",
    ]
    async with aiohttp.ClientSession() as session:

        async def prometheus(path: str, **params: str) -> dict[str, Any]:
            async with session.get(prometheus_url + path, params=params) as resp:
                result: dict[str, Any] = await resp.json()
                return result

        for query in queries:
            for t in (corpus.START + 1800, corpus.START + 3300, corpus.END - 60):
                theirs = await prometheus("/api/v1/query", query=query, time=f"{t:.3f}")
                status, ours = await api.get("/api/v1/query", query=query, time=f"{t:.3f}")
                assert status == 200 and ours["status"] == "success", ours
                problems += corpus.compare(f"{query} @ {t}", ours["data"], theirs["data"])
            start, end, step = corpus.RANGES[1]
            params = {"query": query, "start": str(start), "end": str(end), "step": str(step)}
            theirs = await prometheus("/api/v1/query_range", **params)
            status, ours = await api.get("/api/v1/query_range", **params)
            assert status == 200, ours
            problems += corpus.compare(f"{query} range", ours["data"], theirs["data"])
        # The metadata endpoints list the same series.
        match = 'dt_memory_bytes{instance=~"web.*"}'
        theirs = await prometheus("/api/v1/series", **{"match[]": match})
        _, ours = await api.get("/api/v1/series", **{"match[]": match})
        assert ours["data"] == sorted(theirs["data"], key=lambda s: sorted(s.items()))
        theirs = await prometheus("/api/v1/labels")
        _, ours = await api.get("/api/v1/labels")
        assert ours["data"] == theirs["data"]
        theirs = await prometheus("/api/v1/label/instance/values")
        _, ours = await api.get("/api/v1/label/instance/values")
        assert ours["data"] == theirs["data"]
    assert not problems, "\n".join(problems[:20])


async def test_grafana_data_source_requests_get_the_shapes_grafana_reads(api: Api) -> None:
    lines = "\n".join(
        f'node_load1{{instance="a"}} {i / 10} {1_700_000_000_000 + i * 15_000}' for i in range(100)
    )
    status, _ = await api.import_text(lines)
    assert status == 200
    # "Save & test" and version detection.
    status, body = await api.get("/api/v1/status/buildinfo")
    assert status == 200 and body["data"]["version"].startswith("2.")
    status, body = await api.get("/api/v1/query", query="1+1", time="1700000100")
    assert body == {
        "status": "success",
        "data": {"resultType": "scalar", "result": [1700000100, "2"]},
    }
    # A panel: query_range with a step as Grafana sends it (seconds, POST form body).
    status, body = await api.post_form(
        "/api/v1/query_range",
        {"query": "node_load1", "start": "1700000000", "end": "1700000600", "step": "60"},
    )
    assert status == 200, body
    assert body["data"]["resultType"] == "matrix"
    series = body["data"]["result"][0]
    assert series["metric"] == {"__name__": "node_load1", "instance": "a"}
    assert series["values"][0] == [1700000000, "0"]
    assert len(series["values"]) == 11
    assert all(isinstance(t, int | float) and isinstance(v, str) for t, v in series["values"])
    # RFC 3339 times and duration steps are accepted too.
    status, body = await api.get(
        "/api/v1/query_range",
        query="node_load1",
        start="2023-11-14T22:13:20Z",
        end="2023-11-14T22:23:20.000Z",
        step="1m",
    )
    assert status == 200 and len(body["data"]["result"][0]["values"]) == 11
    # The metrics browser and variable queries.
    status, body = await api.get("/api/v1/labels")
    assert body["data"] == ["__name__", "instance"]
    status, body = await api.get("/api/v1/label/__name__/values")
    assert body["data"] == ["node_load1"]
    status, body = await api.get(
        "/api/v1/series", **{"match[]": "node_load1", "start": "1700000000", "end": "1700000600"}
    )
    assert body["data"] == [{"__name__": "node_load1", "instance": "a"}]
    status, body = await api.get(
        "/api/v1/series", **{"match[]": "node_load1", "start": "1800000000"}
    )
    assert body["data"] == []
    for path in ("/api/v1/metadata", "/api/v1/targets", "/api/v1/rules", "/api/v1/alerts"):
        status, body = await api.get(path)
        assert status == 200 and body["status"] == "success", path
    _, body = await api.get("/api/v1/targets")
    assert body["data"] == {"activeTargets": [], "droppedTargets": []}
    _, body = await api.get("/api/v1/rules")
    assert body["data"] == {"groups": []}


async def test_errors_use_prometheus_error_json(api: Api) -> None:
    cases = [
        ({"query": "sum("}, 400, "bad_data", "unclosed left parenthesis"),
        ({"query": "histogram_count(x)"}, 400, "bad_data", "not supported"),
        ({"query": "foo(x)"}, 400, "bad_data", "unknown function"),
        ({"query": ""}, 400, "bad_data", "empty query"),
        ({"query": "up", "time": "yesterday"}, 400, "bad_data", "cannot parse"),
    ]
    for params, status, kind, text in cases:
        got_status, body = await api.get("/api/v1/query", **params)
        assert got_status == status, (params, body)
        assert body["status"] == "error" and body["errorType"] == kind, body
        assert text in body["error"], body
    await api.import_text('a{x="1"} 1 1700000000000\nb{x="1"} 2 1700000000000\n')
    status, body = await api.get("/api/v1/query", query='{__name__=~"a|b"} * 2', time="1700000000")
    assert status == 422 and body["errorType"] == "execution"
    assert "same labelset" in body["error"]
    status, body = await api.get(
        "/api/v1/query_range", query="a", start="0", end="1000000", step="1"
    )
    assert status == 400 and "11,000 points" in body["error"]
    status, body = await api.get("/api/v1/query_range", query="a", start="10", end="0", step="1")
    assert status == 400 and "end timestamp" in body["error"]
    status, body = await api.get(
        "/api/v1/query_range", query="a[5m]", start="0", end="10", step="1"
    )
    assert status == 400 and "range vector" in body["error"]
    status, body = await api.get("/api/v1/series")
    assert status == 400 and "match[]" in body["error"]
    status, body = await api.get("/api/v1/label/1x/values")
    assert status == 400 and "invalid label name" in body["error"]


async def test_a_bad_import_is_refused_with_its_line_and_changes_nothing(api: Api) -> None:
    before = await api.pool.fetchval("SELECT count(*) FROM samples")
    bad = 'ok{a="1"} 1 1700000000000\nok{a="1"} 2 1700000015000\nbroken{a=1} 3 1700000030000\n'
    status, body = await api.import_text(bad)
    assert status == 400 and body["errorType"] == "bad_data"
    assert body["error"].startswith("line 3:"), body
    for text, message in [
        ("x 1", "no timestamp"),
        ('x{a="1",a="2"} 1 1', "duplicate label"),
        ('x{__x="1"} 1 1', "reserved"),
        ("x one 1", "invalid value"),
        ("x 1 1.5", "invalid timestamp"),
        ("", "no samples"),
        ("x 1 1\nx 2 1", "different value"),
    ]:
        status, body = await api.import_text(text)
        assert status == 400 and message in body["error"], (text, body)
    assert await api.pool.fetchval("SELECT count(*) FROM samples") == before
    status, body = await api.import_text("x 1 1", server="999")
    assert status == 400 and "no server" in body["error"]


async def test_importing_needs_the_operator_role(api: Api, pool: asyncpg.Pool) -> None:
    await accounts.create_user(pool, "vera", "viewer password 1", "viewer")
    app = create_app(load_config(None, env={}), pool, Head())
    async with TestClient(TestServer(app, host="127.0.0.1")) as client:
        csrf = await login(client, "vera", "viewer password 1")
        viewer = Api(client, pool, csrf)
        status, body = await viewer.import_text("x 1 1700000000000")
        assert status == 403 and body["errorType"] == "forbidden"
    assert await pool.fetchval("SELECT count(*) FROM samples") == 0


async def test_a_token_user_sees_only_the_series_of_servers_granted_to_them(
    api: Api, pool: asyncpg.Pool
) -> None:
    ids = {}
    for name in ("alpha", "beta"):
        ids[name] = await pool.fetchval(
            "INSERT INTO servers (name, url) VALUES ($1, $2) RETURNING id",
            name,
            f"http://{name}.example:9190/metrics",
        )
        text = "\n".join(
            f'node_load1{{instance="{name}",secret="{name}-only"}} {ids[name]} '
            f"{1_700_000_000_000 + i * 15_000}"
            for i in range(10)
        )
        status, body = await api.import_text(text, server=str(ids[name]))
        assert status == 200, body
    vera = await accounts.create_user(pool, "vera", "viewer password 1", "viewer")
    await grant_server(pool, vera.id, ids["alpha"])
    _, secret = await tokens.create_token(pool, vera.id, "grafana")

    bearer = {"Authorization": f"Bearer {secret}"}
    t = "1700000100"

    async def get(path: str, **params: str) -> dict[str, Any]:
        resp = await api.client.get(path, params=params, headers=bearer)
        assert resp.status == 200, await resp.text()
        body: dict[str, Any] = await resp.json()
        return body

    body = await get("/api/v1/query", query="sum(node_load1)", time=t)
    assert body["data"]["result"][0]["value"][1] == str(ids["alpha"])
    body = await get("/api/v1/query", query="count(node_load1)", time=t)
    assert body["data"]["result"][0]["value"][1] == "1"
    body = await get(
        "/api/v1/query_range", query="node_load1", start="1700000000", end=t, step="15"
    )
    assert [r["metric"]["instance"] for r in body["data"]["result"]] == ["alpha"]
    body = await get("/api/v1/label/secret/values")
    assert body["data"] == ["alpha-only"]
    body = await get("/api/v1/series", **{"match[]": '{__name__=~".+"}'})
    assert [s["instance"] for s in body["data"]] == ["alpha"]
    body = await get("/api/v1/query", query='node_load1{instance="beta"}', time=t)
    assert body["data"]["result"] == []
    # A viewer cannot import, not even into their own server.
    resp = await api.client.post(
        "/api/v1/import/prometheus",
        data=b"x 1 1700000000000",
        params={"server": str(ids["alpha"])},
        headers=bearer,
    )
    assert resp.status == 403
    # A wrong token is refused, and the admin sees both servers.
    resp = await api.client.get(
        "/api/v1/query", params={"query": "1"}, headers={"Authorization": "Bearer nope"}
    )
    assert resp.status == 401
    _, body = await api.get("/api/v1/query", query="count(node_load1)", time=t)
    assert body["data"]["result"][0]["value"][1] == "2"
    entries = await pool.fetchval("SELECT count(*) FROM audit_log WHERE action = 'metrics.import'")
    assert entries == 2
