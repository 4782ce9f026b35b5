"""The add-server dialog's management features and the enrolment API (issue #7)."""

from __future__ import annotations

import html
import re

from tests.command_fixtures import CommandRig
from vpsmon.collector import audit
from vpsmon.collector.fleet.agents import agent_target, record_agent
from vpsmon.exporter.security import ensure_self_signed, fingerprint

FORM = {
    "name": "tokyo-1",
    "address": "10.0.0.9",
    "scheme": "http",
    "metrics_port": "9190",
    "metrics_path": "/metrics",
    "traffic_reset_day": "1",
    "traffic_mode": "sum",
}


async def token_rows(rig: CommandRig) -> list[tuple[int, list[str]]]:
    rows = await rig.pool.fetch("SELECT server_id, features FROM enrolment_tokens ORDER BY id")
    return [(r["server_id"], list(r["features"])) for r in rows]


async def test_adding_a_server_with_features_ticked_shows_the_one_line_enrol_command(
    command_rig: CommandRig,
) -> None:
    web_ = await command_rig.start_web()
    async with web_.client() as client:
        csrf = await web_.login(client, "root")
        page = await (await client.get("/servers/new")).text()
        assert 'name="feature" value="exec"' in page and 'name="run_as"' in page
        assert 'name="file_roots"' in page
        resp = await client.post(
            "/servers/new",
            data={**FORM, "csrf_token": csrf, "feature": ["exec", "pty"], "run_as": "ops"},
            allow_redirects=False,
        )
        body = await resp.text()
    assert resp.status == 200, body
    assert resp.headers["Cache-Control"] == "no-store"
    command = html.unescape(
        re.search(r'<pre class="command mono" id="command">(.*?)</pre>', body)[1]
    )  # type: ignore[index]
    own = fingerprint(command_rig.identity.cert)
    match = re.fullmatch(
        rf"curl -fsSL {re.escape(web_.origin)}/install-exporter\.sh \| sudo sh -s --"
        r" --collector 127\.0\.0\.1:8081"
        r" --fingerprint (\S+) --token (vpsmon-enrol_\S+) --features exec,pty --run-as ops",
        command,
    )
    assert match, command
    assert match[1] == own
    server_id = await command_rig.pool.fetchval("SELECT id FROM servers WHERE name = 'tokyo-1'")
    assert await token_rows(command_rig) == [(server_id, ["exec", "pty"])]
    stored = await command_rig.pool.fetchval("SELECT token_hash FROM enrolment_tokens")
    assert match[2].encode() not in stored  # only the hash is kept
    entries = await audit.search(command_rig.pool, audit.AuditQuery(action="agent.token"))
    assert [(e.username, e.server_id, e.detail["features"]) for e in entries] == [
        ("root", server_id, ["exec", "pty"])
    ]


async def test_adding_a_server_without_features_makes_no_token(command_rig: CommandRig) -> None:
    web_ = await command_rig.start_web()
    async with web_.client() as client:
        csrf = await web_.login(client, "root")
        resp = await client.post(
            "/servers/new", data={**FORM, "csrf_token": csrf}, allow_redirects=False
        )
    assert resp.status == 302
    assert await token_rows(command_rig) == []


async def test_a_bad_feature_or_user_name_refuses_the_whole_form_and_adds_nothing(
    command_rig: CommandRig,
) -> None:
    web_ = await command_rig.start_web()
    async with web_.client() as client:
        csrf = await web_.login(client, "root")
        for extra in (
            {"feature": "rootkit"},
            {"feature": "exec", "run_as": "x; rm -rf /"},
            {"feature": "files", "file_roots": "/srv/www\nrelative/path"},
        ):
            resp = await client.post(
                "/servers/new", data={**FORM, "csrf_token": csrf, **extra}, allow_redirects=False
            )
            assert resp.status == 400
            assert "rm -rf" not in (await resp.text()).split("<form")[0]
    assert await command_rig.pool.fetchval("SELECT count(*) FROM servers") == 0
    assert await token_rows(command_rig) == []


async def test_only_admins_make_enrolment_tokens(command_rig: CommandRig) -> None:
    server_id = await command_rig.pool.fetchval(
        "INSERT INTO servers (name, url) VALUES ('b', 'http://10.0.0.1:9190/metrics') RETURNING id"
    )
    await command_rig.grant("olga", server_id)
    await command_rig.grant("vic", server_id)
    web_ = await command_rig.start_web()
    for user in ("olga", "vic"):
        async with web_.client() as client:
            csrf = await web_.login(client, user)
            resp = await client.post(
                f"/api/servers/{server_id}/enrolment",
                json={"features": ["exec"]},
                headers={"X-CSRF-Token": csrf},
            )
            assert resp.status == 403, user
            page = await client.post(
                f"/servers/{server_id}/enrol", data={"csrf_token": csrf, "feature": "exec"}
            )
            assert page.status == 403, user
    async with web_.client() as client:  # and never without the CSRF token
        await web_.login(client, "root")
        resp = await client.post(f"/api/servers/{server_id}/enrolment", json={"features": []})
        assert resp.status == 403
    assert await token_rows(command_rig) == []


async def test_the_enrolment_api_shows_status_without_secrets_and_revokes(
    command_rig: CommandRig,
) -> None:
    server_id = await command_rig.pool.fetchval(
        "INSERT INTO servers (name, url) VALUES ('b', 'http://10.0.0.1:9190/metrics') RETURNING id"
    )
    exporter = ensure_self_signed(command_rig.tmp / "exporter").cert
    record = await record_agent(
        command_rig.pool,
        server_id,
        command_rig.token_key,
        address="10.0.0.1:9191",
        exporter_cert=exporter.read_bytes(),
        features=["files"],
    )
    web_ = await command_rig.start_web()
    async with web_.client() as client:
        csrf = await web_.login(client, "root")
        got = await (await client.get(f"/api/servers/{server_id}/enrolment")).json()
        assert got["enrolled"]["fingerprint"] == fingerprint(exporter)
        assert got["enrolled"]["features"] == ["files"]
        assert got["collector"]["fingerprint"] == fingerprint(command_rig.identity.cert)
        assert record.target.token not in str(got)
        page = await (await client.get(f"/servers/{server_id}/enrol")).text()
        assert fingerprint(exporter) in page and record.target.token not in page
        bad = await client.post(
            f"/api/servers/{server_id}/enrolment",
            json={"features": "exec"},
            headers={"X-CSRF-Token": csrf},
        )
        assert bad.status == 400
        gone = await client.delete(
            f"/api/servers/{server_id}/enrolment", headers={"X-CSRF-Token": csrf}
        )
        assert await gone.json() == {"server_id": server_id, "revoked": True}
    assert await agent_target(command_rig.pool, server_id, command_rig.token_key) is None
    entries = await audit.search(command_rig.pool, audit.AuditQuery(action="agent.revoke"))
    assert [e.detail["fingerprint"] for e in entries] == [fingerprint(exporter)]
