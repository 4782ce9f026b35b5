"""The server form's scrape settings (issue #5 leftover): interval, timeout, pinned TLS
fingerprint and bearer token of the metrics endpoint, stored and used by the scrape loop; the
token is write-only."""

from __future__ import annotations

import re

from tests.command_fixtures import CommandRig
from vpsmon.collector.scrape.sources import TargetSources

FP = "sha256:" + "ab" * 32
BODY = {"name": "pinned", "address": "10.0.0.7", "scheme": "https", "metrics_port": 9190}


async def stored_token(rig: CommandRig, server_id: int) -> str | None:
    token: str | None = await rig.pool.fetchval(
        "SELECT bearer_token FROM servers WHERE id = $1", server_id
    )
    return token


async def test_scrape_settings_are_stored_used_by_the_scraper_and_the_token_never_shown(
    command_rig: CommandRig,
) -> None:
    web_ = await command_rig.start_web()
    async with web_.client() as client:
        csrf = await web_.login(client, "root")
        headers = {"X-CSRF-Token": csrf}
        made = await client.post(
            "/api/servers",
            json={
                **BODY,
                "scrape_interval": "30s",
                "scrape_timeout": "5s",
                "tls_fingerprint": FP.upper().replace("SHA256", "sha256"),
                "bearer_token": "s3cret-token-value",
            },
            headers=headers,
        )
        assert made.status == 201, await made.text()
        server = (await made.json())["server"]
        sid = server["id"]
        assert (server["scrape_interval"], server["scrape_timeout"]) == (30.0, 5.0)
        assert server["tls_fingerprint"] == FP and server["bearer_token_set"] is True
        assert "s3cret" not in str(server)

        targets = await TargetSources(command_rig.config).targets(command_rig.pool)
        (target,) = [t for t in targets if t.server_id == sid]
        assert (target.interval, target.timeout) == (30.0, 5.0)
        assert target.tls.fingerprint == FP and target.bearer_token == "s3cret-token-value"

        # A change without the token keeps it; the edit page never shows it.
        patched = await client.patch(
            f"/api/servers/{sid}", json={"scrape_interval": "1m"}, headers=headers
        )
        assert (await patched.json())["server"]["scrape_interval"] == 60.0
        assert await stored_token(command_rig, sid) == "s3cret-token-value"
        page = await (await client.get(f"/servers/{sid}/edit")).text()
        assert "s3cret" not in page and 'value="1m"' in page and FP in page
        assert 'name="clear_bearer_token"' in page

        # The form: an empty token field keeps it, the box removes it.
        form = {**{k: str(v) for k, v in BODY.items()}, "csrf_token": csrf}
        form.update({"scrape_interval": "1m", "tls_fingerprint": FP, "bearer_token": ""})
        kept = await client.post(f"/servers/{sid}/edit", data=form, allow_redirects=False)
        assert kept.status == 302
        assert await stored_token(command_rig, sid) == "s3cret-token-value"
        cleared = await client.post(
            f"/servers/{sid}/edit", data={**form, "clear_bearer_token": "on"}, allow_redirects=False
        )
        assert cleared.status == 302
        assert await stored_token(command_rig, sid) is None
        # JSON null removes it too; a new value replaces it.
        await client.patch(f"/api/servers/{sid}", json={"bearer_token": "new-one"}, headers=headers)
        assert await stored_token(command_rig, sid) == "new-one"
        await client.patch(f"/api/servers/{sid}", json={"bearer_token": None}, headers=headers)
        assert await stored_token(command_rig, sid) is None


async def test_bad_scrape_settings_are_refused_field_by_field_and_change_nothing(
    command_rig: CommandRig,
) -> None:
    web_ = await command_rig.start_web()
    async with web_.client() as client:
        csrf = await web_.login(client, "root")
        for extra, field, text in (
            ({"scheme": "http", "tls_fingerprint": FP}, "tls_fingerprint", "needs the https"),
            ({"tls_fingerprint": "sha256:12"}, "tls_fingerprint", "SHA-256 fingerprint"),
            ({"scrape_interval": "soon"}, "scrape_interval", "duration"),
            ({"scrape_interval": "2d"}, "scrape_interval", "at most a day"),
            ({"scrape_interval": "10s", "scrape_timeout": "20s"}, "scrape_timeout", "longer"),
            ({"bearer_token": "a\nb"}, "bearer_token", "One line"),
        ):
            resp = await client.post(
                "/api/servers", json={**BODY, **extra}, headers={"X-CSRF-Token": csrf}
            )
            assert resp.status == 400, extra
            fields = (await resp.json())["fields"]
            assert text in fields[field], (extra, fields)
        page = await client.post(
            "/servers/new",
            data={"csrf_token": csrf, "name": "x", "address": "10.0.0.8", "scrape_interval": "x"},
        )
        assert page.status == 400
        assert re.search(r"field-error[^>]*>A duration such as 30s", await page.text())
    assert await command_rig.pool.fetchval("SELECT count(*) FROM servers") == 0
