"""The exporter installer the enrol command pipes into sh (issue #7 walk-through): the
collector serves deploy/install-exporter.sh as is, and the printed command's options are ones
the script accepts and hands to `vpsmon exporter enrol`."""

from __future__ import annotations

import re
import shlex
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.command_fixtures import CommandRig
from tests.conftest import require
from vpsmon.cli import exporter_enrol

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "deploy" / "install-exporter.sh"
UNIT = ROOT / "deploy" / "vpsmon-exporter.service"


def sh(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["sh", str(SCRIPT), *args], capture_output=True, text=True, timeout=30, check=False
    )


def script_options() -> set[str]:
    """The long options install-exporter.sh's parser accepts (its `case` patterns)."""
    text = SCRIPT.read_text()
    loop = text[text.index('while [ "$n" -gt 0 ]') : text.index("done\n")]
    return set(re.findall(r"(?<![\w-])(--[a-z][a-z-]*)(?=[\s|)])", loop))


def enrol_options() -> set[str]:
    return {o for p in exporter_enrol.params for o in p.opts if o.startswith("--")}


def test_the_script_is_valid_sh_and_its_unit_is_the_deploy_unit() -> None:
    require(shutil.which("sh") is not None, "no sh")
    assert subprocess.run(["sh", "-n", str(SCRIPT)], check=False).returncode == 0
    text = SCRIPT.read_text()
    unit = re.search(r"<<'UNIT'\n(.*?)^UNIT$", text, re.S | re.M)
    assert unit, "install-exporter.sh writes the unit from a <<'UNIT' here-document"
    assert unit[1] == UNIT.read_text()  # one unit: `curl | sh` has no other file to copy


def test_the_script_hands_only_enrol_options_on_and_refuses_others() -> None:
    own = {"--help", "--dry-run"}
    accepted = script_options()
    assert {"--collector", "--fingerprint", "--token", "--features", "--run-as"} <= accepted
    assert accepted - own <= enrol_options(), accepted - own - enrol_options()
    refused = sh("--dry-run", "--bogus", "x")
    assert refused.returncode == 2 and "unknown option '--bogus'" in refused.stderr
    half = sh("--dry-run", "--features", "exec")
    assert half.returncode == 2 and "need --collector" in half.stderr
    usage = sh("--help")
    assert usage.returncode == 0 and "--run-as USER" in usage.stdout


@pytest.mark.parametrize("run_as", [None, "ops"])
async def test_the_collector_serves_the_script_and_prints_a_command_it_accepts(
    command_rig: CommandRig, run_as: str | None
) -> None:
    web = await command_rig.start_web()
    server_id = await command_rig.pool.fetchval(
        "INSERT INTO servers (name, url) VALUES ('fresh-1', 'http://10.0.0.7:9190/metrics')"
        " RETURNING id"
    )
    async with web.client() as client:
        served = await client.get("/install-exporter.sh")  # no login: it holds no secret
        body = await served.read()
        assert served.status == 200
        assert served.content_type == "text/x-shellscript"
        csrf = await web.login(client, "root")
        resp = await client.post(
            f"/api/servers/{server_id}/enrolment",
            json={
                "features": ["exec", "pty", "files"],
                **({"run_as": run_as, "file_roots": ["/srv/www", "/var/log"]} if run_as else {}),
            },
            headers={"X-CSRF-Token": csrf},
        )
        assert resp.status == 201, await resp.text()
        issued = await resp.json()
    assert body == SCRIPT.read_bytes()

    pipeline, options = issued["command"].split(" -s -- ")
    assert pipeline == f"curl -fsSL {web.origin}/install-exporter.sh | sudo sh"
    args = shlex.split(options)
    dry = sh("--dry-run", *args)
    assert dry.returncode == 0, dry.stderr
    enrol_line = next(line for line in dry.stdout.splitlines() if " exporter enrol " in line)
    handed = enrol_line.split(" exporter enrol -c /etc/vpsmon/exporter.yml ", 1)[1].split()
    expected = args if run_as else [*args, "--run-as", "vpsmon"]
    assert handed == expected
    if run_as:
        assert args[-4:] == ["--file-root", "/srv/www", "--file-root", "/var/log"]
    assert handed[handed.index("--token") + 1] == issued["token"]
    assert issued["manual_command"].startswith("sudo vpsmon exporter enrol --collector ")


def test_piped_into_sh_no_program_can_swallow_the_rest_of_the_script() -> None:
    # `curl ... | sudo sh -s --`: sh reads the script from stdin as it goes, so a program that
    # reads stdin (apt-get, dpkg's prompts, pip, the enrol) would eat the lines after it.
    runs = [
        line.strip()
        for line in SCRIPT.read_text().splitlines()
        if re.search(
            r"apt-get (update|install)|/pip\" install|-m venv|\" exporter enrol -c|-m vpsmon", line
        )
    ]
    assert len(runs) == 6, runs
    assert all("</dev/null" in line for line in runs), runs
