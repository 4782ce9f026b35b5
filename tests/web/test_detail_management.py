"""The server detail page's management buttons (issue #7 walk-through): Terminal and Files
only where the server is enrolled with that feature (they answered 409/403 before), and a link
to the enrol page for admins."""

from __future__ import annotations

from tests.command_fixtures import CommandRig, EnrollServer, Web


async def buttons(web: Web, user: str, server_id: int) -> set[str]:
    async with web.client() as client:
        await web.login(client, user)
        resp = await client.get(f"/servers/{server_id}")
        assert resp.status == 200
        page = await resp.text()
    marks = {
        "files": 'id="open-files"',
        "terminal": 'data-testid="open-terminal"',
        "enrol": f'href="/servers/{server_id}/enrol"',
    }
    return {name for name, mark in marks.items() if mark in page}


async def test_a_server_not_enrolled_shows_no_terminal_or_files_and_admins_get_the_enrol_link(
    command_rig: CommandRig,
) -> None:
    server_id = await command_rig.pool.fetchval(
        "INSERT INTO servers (name, url) VALUES ('bare', 'http://10.0.0.3:9190/metrics')"
        " RETURNING id"
    )
    await command_rig.grant("olga", server_id)
    web = await command_rig.start_web()
    assert await buttons(web, "root", server_id) == {"enrol"}
    assert await buttons(web, "olga", server_id) == set()


async def test_terminal_and_files_show_only_for_the_features_enrolled(
    command_rig: CommandRig, enrolled_server: EnrollServer
) -> None:
    exec_only = await enrolled_server("exec", name="exec-only")
    both = await enrolled_server("pty", "files", name="both")
    for box in (exec_only, both):
        await command_rig.grant("olga", box.server_id)
        await command_rig.grant("vic", box.server_id)
    web = await command_rig.start_web()
    assert await buttons(web, "olga", exec_only.server_id) == set()
    assert await buttons(web, "olga", both.server_id) == {"files", "terminal"}
    assert await buttons(web, "root", both.server_id) == {"files", "terminal", "enrol"}
    assert await buttons(web, "vic", both.server_id) == set()  # viewers manage nothing
