"""The file manager's HTTP API (web/files.py) against real enrolled exporters (issue #7):
transfers through the collector, the exporter's roots, who may do what, CSRF, audit, editor."""

from __future__ import annotations

import asyncio
import dataclasses
import hashlib
import os
import resource
import tracemalloc
import urllib.parse
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from tests.command_fixtures import PASSWORD, CommandRig, EnrolledServer, EnrollServer, Web
from vpsmon.collector import audit, tokens
from vpsmon.web.files import TEXT_LIMIT, content_disposition

MIB = 1024 * 1024
HOSTILE = "<img src=x onerror=alert(1)>.txt"


def api(box: EnrolledServer, action: str, **query: Any) -> str:
    return f"/api/servers/{box.server_id}/files/{action}?" + urllib.parse.urlencode(query)


def chown_nobody(*paths: Path) -> None:
    import pwd

    nobody = pwd.getpwnam("nobody")
    for path in paths:
        os.chown(path, nobody.pw_uid, nobody.pw_gid)


async def signed_in(web: Web, user: str = "olga") -> tuple[aiohttp.ClientSession, dict[str, str]]:
    client = web.client()
    csrf = await web.login(client, user)
    return client, {"X-CSRF-Token": csrf}


async def file_chunks(path: Path, size: int = MIB) -> AsyncIterator[bytes]:
    with path.open("rb") as f:
        while chunk := f.read(size):
            yield chunk


def write_random(path: Path, size: int) -> str:
    digest = hashlib.sha256()
    with path.open("wb") as f:
        left = size
        while left:
            chunk = os.urandom(min(left, 4 * MIB))
            digest.update(chunk)
            f.write(chunk)
            left -= len(chunk)
    return digest.hexdigest()


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        while chunk := f.read(4 * MIB):
            digest.update(chunk)
    return digest.hexdigest()


# ---------------------------------------------------------------- transfers


async def test_a_100_mb_file_goes_up_and_down_through_the_collector_intact_with_flat_memory(
    command_rig: CommandRig, enrolled_server: EnrollServer, tmp_path: Path
) -> None:
    """Collector, exporter and client share this process, so the measure is tracemalloc's
    peak of Python allocations over both transfers (every chunk that crosses the collector
    is a Python bytes object); a collector that buffered the file would peak above 100 MB."""
    box = await enrolled_server("files")
    await command_rig.grant("olga", box.server_id)
    web = await command_rig.start_web()
    source = tmp_path / "big.bin"
    size = 100 * MIB
    digest = write_random(source, size)
    client, csrf = await signed_in(web)
    async with client:
        tracemalloc.start()
        try:
            resp = await client.put(
                api(box, "upload", path=str(box.files / "big.bin"), sha256=digest),
                data=file_chunks(source),
                headers={**csrf, "Content-Type": "application/octet-stream"},
            )
            assert resp.status == 200, await resp.text()
            uploaded = await resp.json()
            _, upload_peak = tracemalloc.get_traced_memory()
            tracemalloc.reset_peak()
            received = hashlib.sha256()
            count = 0
            async with client.get(api(box, "download", path=str(box.files / "big.bin"))) as down:
                assert down.status == 200, await down.text()
                assert down.headers["Content-Length"] == str(size)
                assert down.headers["Content-Disposition"].startswith("attachment;")
                async for chunk in down.content.iter_chunked(MIB):
                    received.update(chunk)
                    count += len(chunk)
            _, download_peak = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
    assert uploaded["size"] == size and uploaded["received"] == size
    assert sha256_file(box.files / "big.bin") == digest  # on the exporter, intact
    assert count == size and received.hexdigest() == digest  # and back through the collector
    print(
        f"tracemalloc peak: upload {upload_peak / MIB:.1f} MiB, download"
        f" {download_peak / MIB:.1f} MiB; ru_maxrss"
        f" {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MiB"
    )
    assert upload_peak < 24 * MIB, f"upload peaked at {upload_peak / MIB:.1f} MiB"
    assert download_peak < 24 * MIB, f"download peaked at {download_peak / MIB:.1f} MiB"
    # No temporary file was left beside it.
    assert sorted(p.name for p in box.files.iterdir()) == ["big.bin"]


async def test_an_upload_the_browser_abandons_leaves_no_file_behind(
    command_rig: CommandRig, enrolled_server: EnrollServer
) -> None:
    box = await enrolled_server("files")
    await command_rig.grant("olga", box.server_id)
    web = await command_rig.start_web()
    client, csrf = await signed_in(web)

    async def half() -> AsyncIterator[bytes]:
        yield b"x" * MIB
        await asyncio.sleep(0.5)
        raise ConnectionAbortedError("the browser went away")

    async with client:
        with pytest.raises((aiohttp.ClientError, ConnectionAbortedError)):
            await client.put(
                api(box, "upload", path=str(box.files / "torn.bin")),
                data=half(),
                headers={**csrf, "Content-Length": str(10 * MIB)},
            )
    for _ in range(50):  # the exporter notices the cancelled stream and removes its temp file
        if not any(box.files.iterdir()):
            break
        await asyncio.sleep(0.1)
    assert list(box.files.iterdir()) == []


async def test_an_upload_declaring_more_than_the_limit_is_refused_with_413_before_any_write(
    command_rig: CommandRig, enrolled_server: EnrollServer
) -> None:
    box = await enrolled_server("files")
    await command_rig.grant("olga", box.server_id)
    command_rig.config = dataclasses.replace(command_rig.config, upload_max_bytes=MIB)
    web = await command_rig.start_web()
    client, csrf = await signed_in(web)
    async with client:
        resp = await client.put(
            api(box, "upload", path=str(box.files / "big.bin")),
            data=b"x" * (2 * MIB),
            headers={**csrf, "Content-Type": "application/octet-stream"},
        )
        assert resp.status == 413, await resp.text()
        body = await resp.json()
        assert body["code"] == "UPLOAD_TOO_LARGE" and body["limit"] == MIB
        assert "web.upload_max_bytes" in body["error"] and "1.0 MiB" in body["error"]
        # At the limit exactly is fine.
        resp = await client.put(
            api(box, "upload", path=str(box.files / "fits.bin")), data=b"y" * MIB, headers=csrf
        )
        assert resp.status == 200, await resp.text()
        # The page shows the limit and asks before uploading.
        check = await client.get(api(box, "may-change"))
        assert check.status == 200 and (await check.json())["upload_max_bytes"] == MIB
        page = await (await client.get(f"/servers/{box.server_id}/files")).text()
        assert f'data-upload-max="{MIB}"' in page
    assert sorted(p.name for p in box.files.iterdir()) == ["fits.bin"]
    entries = await audit.search(command_rig.pool, audit.AuditQuery(action="file.upload"))
    assert [e.detail["path"] for e in entries] == [str(box.files / "fits.bin")]


async def test_a_streamed_upload_past_the_limit_is_stopped_and_leaves_no_partial_file(
    command_rig: CommandRig, enrolled_server: EnrollServer
) -> None:
    """No Content-Length (chunked): the collector counts while it streams to the exporter."""
    box = await enrolled_server("files")
    (box.files / "old.bin").write_bytes(b"old")
    chown_nobody(box.files / "old.bin")
    await command_rig.grant("olga", box.server_id)
    command_rig.config = dataclasses.replace(command_rig.config, upload_max_bytes=3 * MIB)
    web = await command_rig.start_web()
    client, csrf = await signed_in(web)

    async def endless() -> AsyncIterator[bytes]:
        for _ in range(64):  # 64 MiB unless stopped
            yield b"z" * MIB

    async with client:
        for name, overwrite in (("new.bin", "0"), ("old.bin", "1")):
            try:
                resp = await client.put(
                    api(box, "upload", path=str(box.files / name), overwrite=overwrite),
                    data=endless(),
                    headers=csrf,
                )
            except aiohttp.ClientError as err:  # the collector may close before reading all
                pytest.fail(f"the 413 did not reach the client: {err!r}")
            assert resp.status == 413, await resp.text()
            assert (await resp.json())["code"] == "UPLOAD_TOO_LARGE"
    for _ in range(50):  # the exporter notices the cancelled stream and removes its temp file
        if sorted(p.name for p in box.files.iterdir()) == ["old.bin"]:
            break
        await asyncio.sleep(0.1)
    assert sorted(p.name for p in box.files.iterdir()) == ["old.bin"]
    assert (box.files / "old.bin").read_bytes() == b"old"  # the file it would replace is intact
    entries = await audit.search(command_rig.pool, audit.AuditQuery(action="file.upload"))
    failed = [e for e in entries if not e.success]
    assert len(failed) == 2 and all("upload_max_bytes" in e.detail["error"] for e in failed)


async def test_no_upload_limit_when_set_to_zero(
    command_rig: CommandRig, enrolled_server: EnrollServer
) -> None:
    box = await enrolled_server("files")
    await command_rig.grant("olga", box.server_id)
    command_rig.config = dataclasses.replace(command_rig.config, upload_max_bytes=0)
    web = await command_rig.start_web()
    client, csrf = await signed_in(web)
    async with client:
        resp = await client.put(
            api(box, "upload", path=str(box.files / "a.bin")), data=b"a" * (3 * MIB), headers=csrf
        )
        assert resp.status == 200, await resp.text()
        page = await (await client.get(f"/servers/{box.server_id}/files")).text()
        assert 'data-upload-max="0"' in page and 'id="upload-limit"' not in page
    assert (box.files / "a.bin").stat().st_size == 3 * MIB


async def test_file_changes_need_a_fresh_step_up_but_browsing_and_downloading_do_not(
    command_rig: CommandRig, enrolled_server: EnrollServer
) -> None:
    box = await enrolled_server("files")
    (box.files / "keep.txt").write_text("keep")
    (box.files / "dir").mkdir()
    chown_nobody(box.files / "keep.txt", box.files / "dir")
    await command_rig.grant("olga", box.server_id)
    web = await command_rig.start_web()
    client, csrf = await signed_in(web)
    keep = str(box.files / "keep.txt")
    async with client:
        await command_rig.age_step_up("olga")
        for resp in (
            await client.get(api(box, "list")),
            await client.get(api(box, "stat", path=keep)),
            await client.get(api(box, "download", path=keep)),
            await client.get(api(box, "text", path=keep)),
        ):
            assert resp.status == 200, (resp.url, resp.status, await resp.text())
        for resp in (
            await client.get(api(box, "may-change")),
            await client.put(
                api(box, "upload", path=str(box.files / "u")), data=b"u", headers=csrf
            ),
            await client.put(api(box, "text", path=keep), data=b"gone", headers=csrf),
            await client.post(api(box, "mkdir"), json={"path": str(box.files / "d")}, headers=csrf),
            await client.post(
                api(box, "rename"), json={"path": keep, "new_path": keep + ".x"}, headers=csrf
            ),
            await client.post(
                api(box, "delete"), json={"path": str(box.files / "dir")}, headers=csrf
            ),
            await client.post(api(box, "chmod"), json={"path": keep, "mode": "777"}, headers=csrf),
        ):
            assert resp.status == 401, (resp.url, resp.status)
            assert await resp.json() == {"error": "re-authentication required", "reauth": "/reauth"}
        assert sorted(p.name for p in box.files.iterdir()) == ["dir", "keep.txt"]
        assert (box.files / "keep.txt").read_text() == "keep"
        assert (box.files / "keep.txt").stat().st_mode & 0o777 != 0o777
        # After the password again, the same change goes through.
        resp = await client.post("/api/reauth", json={"password": PASSWORD}, headers=csrf)
        assert resp.status == 200, await resp.text()
        resp = await client.post(
            api(box, "mkdir"), json={"path": str(box.files / "d")}, headers=csrf
        )
        assert resp.status == 200, await resp.text()
    assert (box.files / "d").is_dir()
    assert not await audit.search(command_rig.pool, audit.AuditQuery(action="file.write"))


async def test_an_existing_file_is_replaced_only_when_asked(
    command_rig: CommandRig, enrolled_server: EnrollServer
) -> None:
    box = await enrolled_server("files")
    await command_rig.grant("olga", box.server_id)
    web = await command_rig.start_web()
    client, csrf = await signed_in(web)
    target = str(box.files / "a.txt")
    async with client:
        first = await client.put(api(box, "upload", path=target), data=b"one", headers=csrf)
        assert first.status == 200, await first.text()
        again = await client.put(api(box, "upload", path=target), data=b"two", headers=csrf)
        assert again.status == 409
        assert "exists" in (await again.json())["error"]
        assert (box.files / "a.txt").read_bytes() == b"one"
        forced = await client.put(
            api(box, "upload", path=target, overwrite=1), data=b"two", headers=csrf
        )
        assert forced.status == 200
        assert (box.files / "a.txt").read_bytes() == b"two"
        wrong = await client.put(
            api(box, "upload", path=target, overwrite=1, sha256="0" * 64),
            data=b"three",
            headers=csrf,
        )
        assert wrong.status == 400 and "sha256" in (await wrong.json())["error"]
        assert (box.files / "a.txt").read_bytes() == b"two"


# ---------------------------------------------------------------- the exporter's roots


async def test_paths_outside_the_allowed_roots_are_refused_through_the_collector(
    command_rig: CommandRig, enrolled_server: EnrollServer
) -> None:
    box = await enrolled_server("files")
    await command_rig.grant("olga", box.server_id)
    (box.files / "etc-link").symlink_to("/etc")
    escape = box.files.parent / "escaped.txt"
    web = await command_rig.start_web()
    client, csrf = await signed_in(web)
    async with client:
        refused = [
            await client.get(api(box, "list", path="/etc")),
            await client.get(api(box, "list", path=f"{box.files}/../..")),
            await client.get(api(box, "download", path=f"{box.files}/../../../../etc/passwd")),
            await client.get(api(box, "download", path=f"{box.files}/etc-link/passwd")),
            await client.get(api(box, "text", path=f"{box.files}/etc-link/hostname")),
            await client.put(
                api(box, "upload", path=f"{box.files}/../escaped.txt"), data=b"x", headers=csrf
            ),
            await client.put(
                api(box, "text", path=f"{box.files}/../escaped.txt"), data=b"x", headers=csrf
            ),
            await client.post(
                api(box, "mkdir"), json={"path": f"{box.files}/../outdir"}, headers=csrf
            ),
            await client.post(
                api(box, "rename"),
                json={"path": f"{box.files}/etc-link", "new_path": f"{box.files}/../moved"},
                headers=csrf,
            ),
            await client.post(
                api(box, "chmod"), json={"path": "/etc/passwd", "mode": "777"}, headers=csrf
            ),
            await client.post(api(box, "delete"), json={"path": "/etc/hostname"}, headers=csrf),
        ]
        for resp in refused:
            body = await resp.json()
            assert resp.status == 403, (resp.url, resp.status, body)
            assert "outside the exporter's allowed file roots" in body["error"], body
            assert body["code"] == "PERMISSION_DENIED"
        # A link that stays inside the roots is followed (the refusals above are not blanket).
        (box.files / "real.txt").write_text("inside")
        (box.files / "inside-link").symlink_to(box.files / "real.txt")
        inside = await client.get(api(box, "download", path=f"{box.files}/inside-link"))
        assert inside.status == 200 and await inside.read() == b"inside"
    assert not escape.exists()
    assert not (box.files.parent / "outdir").exists()
    assert not (box.files.parent / "moved").exists()
    assert os.stat("/etc/passwd").st_mode & 0o777 != 0o777
    # The refused changes are in the audit log as failures, with the exporter's reason.
    failed = await audit.search(command_rig.pool, audit.AuditQuery(action="file.mkdir"))
    assert sorted(e.success for e in failed) == [False, True]
    refusal = next(e for e in failed if not e.success)
    assert "outside" in refusal.detail["error"] and refusal.username == "olga"


async def test_relative_and_malformed_paths_get_a_clear_error(
    command_rig: CommandRig, enrolled_server: EnrollServer
) -> None:
    box = await enrolled_server("files")
    await command_rig.grant("olga", box.server_id)
    web = await command_rig.start_web()
    client, csrf = await signed_in(web)
    async with client:
        resp = await client.get(api(box, "list", path="etc"))
        assert resp.status == 400 and "absolute" in (await resp.json())["error"]
        resp = await client.get(api(box, "download"))
        assert resp.status == 400 and "path is required" in (await resp.json())["error"]
        resp = await client.post(
            api(box, "chmod"), json={"path": str(box.files), "mode": "9z"}, headers=csrf
        )
        assert resp.status == 400 and "octal" in (await resp.json())["error"]
        resp = await client.post(api(box, "mkdir"), data=b"not json", headers=csrf)
        assert resp.status == 400 and "JSON" in (await resp.json())["error"]


# ---------------------------------------------------------------- who may


async def test_a_viewer_is_refused_every_file_call(
    command_rig: CommandRig, enrolled_server: EnrollServer
) -> None:
    box = await enrolled_server("files")
    (box.files / "secret.txt").write_text("s3cret")
    await command_rig.grant("vic", box.server_id)
    web = await command_rig.start_web()
    client, csrf = await signed_in(web, "vic")
    async with client:
        calls = [
            await client.get(api(box, "list", path=str(box.files))),
            await client.get(api(box, "download", path=str(box.files / "secret.txt"))),
            await client.get(api(box, "text", path=str(box.files / "secret.txt"))),
            await client.put(
                api(box, "upload", path=str(box.files / "new.txt")), data=b"x", headers=csrf
            ),
            await client.post(
                api(box, "delete"), json={"path": str(box.files / "secret.txt")}, headers=csrf
            ),
            await client.get(f"/servers/{box.server_id}/files"),
        ]
        for resp in calls:
            assert resp.status == 403, (resp.url, resp.status)
            assert "s3cret" not in await resp.text()
    assert sorted(p.name for p in box.files.iterdir()) == ["secret.txt"]


async def test_an_operator_gets_404_for_a_server_not_granted(
    command_rig: CommandRig, enrolled_server: EnrollServer
) -> None:
    granted = await enrolled_server("files", name="granted")
    other = await enrolled_server("files", name="other")
    (other.files / "data.txt").write_text("theirs")
    await command_rig.grant("olga", granted.server_id)
    web = await command_rig.start_web()
    client, csrf = await signed_in(web)
    async with client:
        ok = await client.get(api(granted, "list"))
        assert ok.status == 200
        calls = [
            await client.get(api(other, "list")),
            await client.get(api(other, "download", path=str(other.files / "data.txt"))),
            await client.put(
                api(other, "upload", path=str(other.files / "x.txt")), data=b"x", headers=csrf
            ),
            await client.post(
                api(other, "delete"), json={"path": str(other.files / "data.txt")}, headers=csrf
            ),
            await client.get(f"/servers/{other.server_id}/files"),
            await client.get(api(granted, "list").replace(str(granted.server_id), "999999")),
        ]
        for resp in calls:
            assert resp.status == 404, (resp.url, resp.status)
            assert "theirs" not in await resp.text()
    assert sorted(p.name for p in other.files.iterdir()) == ["data.txt"]


async def test_a_server_without_the_files_feature_is_refused_with_a_clear_message(
    command_rig: CommandRig, enrolled_server: EnrollServer
) -> None:
    box = await enrolled_server("exec")
    await command_rig.grant("olga", box.server_id)
    web = await command_rig.start_web()
    client, csrf = await signed_in(web)
    async with client:
        for resp in (
            await client.get(api(box, "list")),
            await client.put(
                api(box, "upload", path=str(box.files / "x.txt")), data=b"x", headers=csrf
            ),
        ):
            assert resp.status == 403
            assert "files is not enabled" in (await resp.json())["error"]
    assert list(box.files.iterdir()) == []


async def test_the_exporter_refuses_files_even_if_the_collector_record_says_enabled(
    command_rig: CommandRig, enrolled_server: EnrollServer
) -> None:
    box = await enrolled_server("exec")
    await command_rig.pool.execute(
        "UPDATE agents SET features = array_append(features, 'files') WHERE server_id = $1",
        box.server_id,
    )
    await command_rig.grant("olga", box.server_id)
    web = await command_rig.start_web()
    client, _ = await signed_in(web)
    async with client:
        resp = await client.get(api(box, "list"))
        assert resp.status == 403, await resp.text()
        assert (await resp.json())["code"] == "PERMISSION_DENIED"


async def test_state_changes_need_the_csrf_token(
    command_rig: CommandRig, enrolled_server: EnrollServer
) -> None:
    box = await enrolled_server("files")
    (box.files / "keep.txt").write_text("keep")
    await command_rig.grant("olga", box.server_id)
    web = await command_rig.start_web()
    client, _ = await signed_in(web)
    async with client:
        for resp in (
            await client.post(api(box, "mkdir"), json={"path": str(box.files / "d")}),
            await client.post(api(box, "delete"), json={"path": str(box.files / "keep.txt")}),
            await client.put(api(box, "upload", path=str(box.files / "u.txt")), data=b"u"),
            await client.put(api(box, "text", path=str(box.files / "keep.txt")), data=b"gone"),
            await client.post(
                api(box, "chmod"),
                json={"path": str(box.files / "keep.txt"), "mode": "777"},
                headers={"X-CSRF-Token": "forged"},
            ),
        ):
            assert resp.status == 403, (resp.url, resp.status)
            assert "CSRF" in await resp.text()
    assert sorted(p.name for p in box.files.iterdir()) == ["keep.txt"]
    assert (box.files / "keep.txt").read_text() == "keep"


# ---------------------------------------------------------------- operations and audit


async def test_mkdir_rename_chmod_delete_and_list_each_audited(
    command_rig: CommandRig, enrolled_server: EnrollServer
) -> None:
    box = await enrolled_server("files")
    await command_rig.grant("olga", box.server_id)
    web = await command_rig.start_web()
    client, csrf = await signed_in(web)
    root = box.files
    async with client:
        listing = await (await client.get(api(box, "list"))).json()
        assert listing["path"] == str(root) and listing["roots"] == [str(root)]
        assert listing["run_as"] == "nobody" and listing["entries"] == []
        resp = await client.post(api(box, "mkdir"), json={"path": str(root / "conf")}, headers=csrf)
        assert resp.status == 200 and (await resp.json())["type"] == "dir"
        up = await client.put(
            api(box, "upload", path=str(root / "conf" / "app.ini")), data=b"[a]\n", headers=csrf
        )
        assert up.status == 200
        resp = await client.post(
            api(box, "rename"),
            json={"path": str(root / "conf" / "app.ini"), "new_path": str(root / "conf" / "b.ini")},
            headers=csrf,
        )
        assert resp.status == 200 and (await resp.json())["name"] == "b.ini"
        resp = await client.post(
            api(box, "chmod"),
            json={"path": str(root / "conf" / "b.ini"), "mode": "0600"},
            headers=csrf,
        )
        assert resp.status == 200 and (await resp.json())["mode"] == "0600"
        assert (root / "conf" / "b.ini").stat().st_mode & 0o7777 == 0o600
        listing = await (await client.get(api(box, "list", path=str(root / "conf")))).json()
        assert [
            (e["name"], e["type"], e["size"], e["mode"], e["owner"]) for e in listing["entries"]
        ] == [("b.ini", "file", 4, "0600", "nobody")]
        # A non-empty directory needs recursive.
        resp = await client.post(
            api(box, "delete"), json={"path": str(root / "conf")}, headers=csrf
        )
        assert resp.status == 409, await resp.text()
        assert (root / "conf" / "b.ini").exists()
        resp = await client.post(
            api(box, "delete"), json={"path": str(root / "conf"), "recursive": True}, headers=csrf
        )
        assert resp.status == 200
        assert not (root / "conf").exists()
        missing = await client.get(api(box, "stat", path=str(root / "conf")))
        assert missing.status == 404
    entries = await audit.search(command_rig.pool, audit.AuditQuery(action="file."))
    seen = [(e.action, e.success, e.detail.get("path"), e.username, e.server_id) for e in entries]
    for expected in [
        ("file.mkdir", True, str(root / "conf"), "olga", box.server_id),
        ("file.upload", True, str(root / "conf" / "app.ini"), "olga", box.server_id),
        ("file.rename", True, str(root / "conf" / "app.ini"), "olga", box.server_id),
        ("file.chmod", True, str(root / "conf" / "b.ini"), "olga", box.server_id),
        ("file.delete", False, str(root / "conf"), "olga", box.server_id),
        ("file.delete", True, str(root / "conf"), "olga", box.server_id),
    ]:
        assert expected in seen, (expected, seen)
    refused = [e for e in entries if not e.success]
    assert refused and "error" in refused[0].detail


# ---------------------------------------------------------------- the editor


async def test_the_editor_reads_and_saves_text_and_refuses_binary_big_and_stale(
    command_rig: CommandRig, enrolled_server: EnrollServer
) -> None:
    box = await enrolled_server("files")
    await command_rig.grant("olga", box.server_id)
    text_file = box.files / "nginx.conf"
    text_file.write_text("server {\n  listen 80;\n}\n# 你好\n")
    text_file.chmod(0o640)
    (box.files / "blob.bin").write_bytes(b"\x7fELF\x00\x01\x02")
    (box.files / "latin1.txt").write_bytes("caf\xe9".encode("latin-1"))
    (box.files / "big.log").write_bytes(b"a" * (TEXT_LIMIT + 1))
    chown_nobody(text_file)
    web = await command_rig.start_web()
    client, csrf = await signed_in(web)
    async with client:
        opened = await (await client.get(api(box, "text", path=str(text_file)))).json()
        assert opened["content"] == "server {\n  listen 80;\n}\n# 你好\n"
        edited = opened["content"].replace("80", "8080")
        saved = await client.put(
            api(box, "text", path=str(text_file), modified=opened["modified"]),
            data=edited.encode(),
            headers={**csrf, "Content-Type": "text/plain; charset=utf-8"},
        )
        assert saved.status == 200, await saved.text()
        assert text_file.read_text() == edited
        assert text_file.stat().st_mode & 0o777 == 0o640  # the mode is kept
        # Saving again with the old modification time: someone else's change would be lost.
        stale = await client.put(
            api(box, "text", path=str(text_file), modified=opened["modified"]),
            data=b"mine",
            headers=csrf,
        )
        assert stale.status == 409 and "changed on the server" in (await stale.json())["error"]
        assert text_file.read_text() == edited
        for name, status, words in (
            ("blob.bin", 415, "not UTF-8 text"),
            ("latin1.txt", 415, "not UTF-8 text"),
            ("big.log", 413, "Download it instead"),
        ):
            resp = await client.get(api(box, "text", path=str(box.files / name)))
            assert resp.status == status, (name, await resp.text())
            assert words in (await resp.json())["error"]
        too_big = await client.put(
            api(box, "text", path=str(text_file)), data=b"b" * (TEXT_LIMIT + 1), headers=csrf
        )
        assert too_big.status == 413
        not_utf8 = await client.put(
            api(box, "text", path=str(text_file)), data=b"\xff\xfe", headers=csrf
        )
        assert not_utf8.status == 400
        assert text_file.read_text() == edited
    writes = await audit.search(command_rig.pool, audit.AuditQuery(action="file.write"))
    assert [(e.detail["path"], e.success) for e in writes] == [(str(text_file), True)]


# ---------------------------------------------------------------- names


async def test_hostile_file_names_come_back_as_data_and_as_a_safe_download_header(
    command_rig: CommandRig, enrolled_server: EnrollServer
) -> None:
    box = await enrolled_server("files")
    await command_rig.grant("olga", box.server_id)
    (box.files / HOSTILE).write_text("x")
    quoted = 'a"b\\c;\r\n名字.txt'
    (box.files / quoted).write_text("y")
    web = await command_rig.start_web()
    client, _ = await signed_in(web)
    async with client:
        listing = await (await client.get(api(box, "list"))).json()
        assert sorted(e["name"] for e in listing["entries"]) == sorted([HOSTILE, quoted])
        resp = await client.get(api(box, "download", path=str(box.files / quoted)))
        assert resp.status == 200 and await resp.read() == b"y"
        header = resp.headers["Content-Disposition"]
        assert "\r" not in header and "\n" not in header
        assert header == content_disposition(quoted)
        page = await (await client.get(f"/servers/{box.server_id}/files")).text()
        assert "<img" not in page
    assert content_disposition(quoted) == (
        "attachment; filename=\"a_b_c_____.txt\"; filename*=UTF-8''"
        "a%22b%5Cc%3B%0D%0A%E5%90%8D%E5%AD%97.txt"
    )
    assert content_disposition(HOSTILE).startswith(
        'attachment; filename="_img src_x onerror_alert_1__.txt"'
    )


async def test_an_api_token_changes_files_without_a_step_up_as_docs_files_md_shows(
    command_rig: CommandRig, enrolled_server: EnrollServer
) -> None:
    """Scripts upload with `Authorization: Bearer` (docs/files.md's curl example): a token
    cannot answer a step-up, so it is not asked; a viewer's token is still refused."""
    box = await enrolled_server("files")
    await command_rig.grant("olga", box.server_id)
    await command_rig.grant("vic", box.server_id)
    web = await command_rig.start_web()
    _, olga = await tokens.create_token(command_rig.pool, command_rig.users["olga"].id, "backup")
    _, vic = await tokens.create_token(command_rig.pool, command_rig.users["vic"].id, "ro")
    data = os.urandom(300_000)
    target = str(box.files / "backup.tar")
    async with aiohttp.ClientSession(base_url=web.origin) as client:
        resp = await client.put(
            api(box, "upload", path=target, sha256=hashlib.sha256(data).hexdigest()),
            data=data,
            headers={"Authorization": f"Bearer {olga}"},
        )
        assert resp.status == 200, await resp.text()
        resp = await client.get(
            api(box, "download", path=target), headers={"Authorization": f"Bearer {olga}"}
        )
        assert resp.status == 200 and await resp.read() == data
        resp = await client.post(
            api(box, "delete"), json={"path": target}, headers={"Authorization": f"Bearer {vic}"}
        )
        assert resp.status == 403, await resp.text()
    assert (box.files / "backup.tar").read_bytes() == data
    entries = await audit.search(command_rig.pool, audit.AuditQuery(action="file.upload"))
    assert [e.detail.get("api_token_id") is not None for e in entries] == [True]
