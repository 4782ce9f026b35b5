"""The rules page, /api/rules and the rule builder: states, errors, per-server alerts, roles."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import asyncpg
import pytest
import yaml
from aiohttp.test_utils import TestClient, TestServer

from tests.web.test_servers import HOSTILE, PASSWORD, Browser, login
from vpsmon.collector import accounts
from vpsmon.collector.config import StaticTarget, load_config
from vpsmon.collector.head import Head
from vpsmon.collector.promql import Engine, MemorySource
from vpsmon.collector.rules.api import InstanceIndex, RulesApi
from vpsmon.collector.rules.engine import engine_query
from vpsmon.collector.rules.manager import RuleManager
from vpsmon.collector.rules.rulefile import load_rule_file
from vpsmon.collector.servers import upsert_static
from vpsmon.web import promapi
from vpsmon.web.app import create_app
from vpsmon.web.keys import RULES

RULES_YML = """groups:
  - name: hosts
    rules:
      - alert: HostDown
        expr: up == 0
        labels: {severity: critical}
        annotations: {summary: "{{ $labels.instance }} is down"}
      - record: job:up:sum
        expr: sum by (job) (up)
"""


async def _nothing(samples: Any) -> None:
    return None


@pytest.fixture
async def setup(pool: asyncpg.Pool, tmp_path: Path) -> AsyncIterator[tuple[TestServer, RulesApi]]:
    await accounts.create_user(pool, "root", PASSWORD, "admin")
    await accounts.create_user(pool, "watcher", PASSWORD, "viewer")
    await upsert_static(pool, [StaticTarget("web1", "http://web1:9190/metrics")])
    (tmp_path / "hosts.yml").write_text(RULES_YML)
    source = MemorySource()
    for instance in ("web1:9190", HOSTILE):
        source.add({"__name__": "up", "job": "node", "instance": instance}, 0, 0)
    manager = RuleManager(
        [str(tmp_path / "*.yml")],
        query=engine_query(Engine(source)),
        append=_nothing,
        notify=_nothing,
    )
    await manager.reload()
    for group in manager.groups.values():
        for rule in group.alerting_rules():
            rule.restored = True
        await group.evaluate(10)
    index = InstanceIndex()
    index.update([("web1:9190", 1)])
    api = RulesApi(manager, index, tmp_path / "built" / "builder.yml")
    app = create_app(load_config(None, env={}), pool, Head())
    app[RULES] = app[promapi.RULES] = api
    async with TestServer(app, host="127.0.0.1") as server:
        yield server, api


@pytest.fixture
async def admin(setup: tuple[TestServer, RulesApi]) -> AsyncIterator[Browser]:
    async with TestClient(setup[0]) as client:
        yield await login(client, "root")


@pytest.fixture
async def viewer(setup: tuple[TestServer, RulesApi]) -> AsyncIterator[Browser]:
    async with TestClient(setup[0]) as client:
        yield await login(client, "watcher")


async def test_rules_page_shows_groups_states_and_alerts_escaped(admin: Browser) -> None:
    resp = await admin.client.get("/rules")
    html = await resp.text()
    assert resp.status == 200
    assert "HostDown" in html and "job:up:sum" in html and "up == 0" in html
    assert html.count('class="pill state-firing"') >= 2  # the counter and the rule
    assert HOSTILE not in html and "&lt;img src=x onerror=alert(1)&gt;" in html


async def test_api_rules_gives_prometheus_shapes(admin: Browser) -> None:
    status, body = await admin.api("GET", "/api/rules")
    assert status == 200 and body["errors"] == {}
    (group,) = body["groups"]
    alerting, recording = group["rules"]
    assert (alerting["type"], alerting["state"], alerting["health"]) == ("alerting", "firing", "ok")
    assert recording["type"] == "recording" and "alerts" not in recording
    assert {a["labels"]["instance"] for a in body["alerts"]} == {"web1:9190", HOSTILE}
    assert body["alerts"][0]["value"] == "0e+00"


async def test_a_viewer_sees_rules_but_only_alerts_of_their_servers(viewer: Browser) -> None:
    status, body = await viewer.api("GET", "/api/rules")
    assert status == 200
    assert body["alerts"] == [] and len(body["groups"][0]["rules"]) == 2


async def test_a_broken_rule_file_shows_its_error_and_old_rules_keep_running(
    admin: Browser, setup: tuple[TestServer, RulesApi], tmp_path: Path
) -> None:
    (tmp_path / "hosts.yml").write_text(RULES_YML.replace("up == 0", "up =="))
    assert not await setup[1].manager.reload()
    status, body = await admin.api("GET", "/api/rules")
    (lines,) = body["errors"].values()
    assert "could not parse expression" in lines[0]
    assert len(body["groups"][0]["rules"]) == 2
    html = await (await admin.client.get("/rules")).text()
    assert 'data-testid="file-errors"' in html and "could not parse expression" in html


async def test_the_builder_is_for_admins_only(viewer: Browser) -> None:
    assert (await viewer.client.get("/rules/new")).status == 403
    resp = await viewer.client.post(
        "/rules/new", data={"csrf_token": viewer.csrf, "name": "X", "action": "save"}
    )
    assert resp.status == 403


async def test_the_builder_previews_then_saves_a_valid_rule_and_audits_it(
    admin: Browser, setup: tuple[TestServer, RulesApi], pool: asyncpg.Pool
) -> None:
    form = {
        "csrf_token": admin.csrf,
        "name": "BusyCpu",
        "metric": "cpu_percent",
        "condition": ">",
        "threshold": "85",
        "for": "10m",
        "severity": "warning",
        "servers": "web1:9190",
    }
    preview = await admin.client.post("/rules/new", data={**form, "action": "preview"})
    text = await preview.text()
    assert preview.status == 200 and "alert: BusyCpu" in text and "instance=~" in text
    path = setup[1].builder_file
    assert path is not None and not path.exists()
    saved = await admin.client.post(
        "/rules/new", data={**form, "action": "save"}, allow_redirects=False
    )
    assert saved.status == 302 and saved.headers["Location"] == "/rules?saved=BusyCpu"
    (group,) = load_rule_file(path).groups
    (rule,) = group.rules
    assert (rule.name, rule.for_, rule.labels) == ("BusyCpu", 600.0, {"severity": "warning"})
    assert yaml.safe_load(path.read_text())["groups"][0]["name"] == "builder"
    action = await pool.fetchval("SELECT action FROM audit_log WHERE action = 'rule.add'")
    assert action == "rule.add"


async def test_the_builder_refuses_bad_input_with_a_clear_message(admin: Browser) -> None:
    resp = await admin.client.post(
        "/rules/new",
        data={
            "csrf_token": admin.csrf,
            "name": "1bad name",
            "metric": "cpu_percent",
            "condition": ">",
            "threshold": "lots",
            "for": "5 minutes",
            "severity": "warning",
            "action": "save",
        },
    )
    text = await resp.text()
    assert resp.status == 400
    assert "Enter a number" in text and "Enter a duration" in text and "Use letters" in text


async def test_the_builder_refuses_servers_the_user_cannot_pick(admin: Browser) -> None:
    resp = await admin.client.post(
        "/rules/new",
        data={
            "csrf_token": admin.csrf,
            "name": "X",
            "metric": "up",
            "condition": "==",
            "threshold": "0",
            "for": "1m",
            "severity": "critical",
            "servers": 'x"} or vector(1) #',
            "action": "preview",
        },
    )
    assert resp.status == 400


async def test_saving_without_the_csrf_token_is_refused(admin: Browser) -> None:
    resp = await admin.client.post(
        "/rules/new", data={"name": "X", "metric": "up", "threshold": "0", "action": "save"}
    )
    assert resp.status == 403


async def test_prometheus_api_serves_rules_and_alerts_from_the_rule_manager(admin: Browser) -> None:
    resp = await admin.client.get("/api/v1/rules", params={"type": "alert"})
    body = await resp.json()
    assert resp.status == 200 and body["status"] == "success"
    (group,) = body["data"]["groups"]
    assert [r["name"] for r in group["rules"]] == ["HostDown"]
    assert group["rules"][0]["alerts"][0]["state"] == "firing"
    alerts = (await (await admin.client.get("/api/v1/alerts")).json())["data"]["alerts"]
    assert {a["labels"]["alertname"] for a in alerts} == {"HostDown"} and len(alerts) == 2


async def test_prometheus_alerts_api_limits_a_viewer_to_their_servers(viewer: Browser) -> None:
    alerts = (await (await viewer.client.get("/api/v1/alerts")).json())["data"]["alerts"]
    assert alerts == []
