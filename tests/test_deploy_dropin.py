"""The systemd drop-in install-exporter.sh writes (issue #7 walk-through): the metrics-only
unit (ProtectSystem=strict, ProtectHome=read-only) made terminal and file-manager writes fail,
so management features lift that, and metrics-only installs stay locked down."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from vpsmon.deploy.dropin import management_dropin
from vpsmon.exporter.config import load_config

ROOT = Path(__file__).resolve().parents[1]
TOKEN = "t" * 40
PIN = "sha256:" + "0" * 64


def exporter_yml(tmp_path: Path, *features: str, run_as: str | None = None) -> Path:
    lines = ["listen: 127.0.0.1:9190"]
    if features:
        lines += [
            "command:",
            f"  collector_cert: {tmp_path / 'collector.crt'}",
            f"  collector_fingerprint: {PIN}",
            f"  token: {TOKEN}",
            *(f"  {f}: true" for f in features),
            *([f"  run_as: {run_as}"] if run_as else []),
        ]
    path = tmp_path / "exporter.yml"
    path.write_text("\n".join(lines) + "\n")
    return path


def dropin(path: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "vpsmon.deploy.dropin", str(path)],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=ROOT,
        check=False,
    )


def test_metrics_only_keeps_the_locked_down_unit(tmp_path: Path) -> None:
    done = dropin(exporter_yml(tmp_path))
    assert done.returncode == 0 and done.stdout == ""  # the script then removes the drop-in
    unit = (ROOT / "deploy" / "vpsmon-exporter.service").read_text()
    assert "ProtectSystem=strict" in unit and "ProtectHome=read-only" in unit


@pytest.mark.parametrize("feature", ["exec", "pty", "files"])
def test_a_management_feature_lifts_the_sandbox_for_writes(tmp_path: Path, feature: str) -> None:
    done = dropin(exporter_yml(tmp_path, feature, run_as="vpsmon"))
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert "[Service]" in lines
    for setting in ("ProtectSystem=no", "ProtectHome=no", "PrivateTmp=no", "NoNewPrivileges=no"):
        assert setting in lines
    assert "User=root" not in lines  # commands run as the service's own user


def test_another_run_as_user_runs_the_service_as_root(tmp_path: Path) -> None:
    config = load_config(exporter_yml(tmp_path, "pty", run_as="ops"), env={})
    text = management_dropin(config)
    assert text is not None and "User=root\nGroup=root\n" in text


def test_a_broken_config_is_an_error_and_no_drop_in(tmp_path: Path) -> None:
    path = tmp_path / "exporter.yml"
    path.write_text("command:\n  pty: true\n")  # not enrolled
    done = dropin(path)
    assert done.returncode == 1 and done.stdout == "" and "enrol" in done.stderr


def test_the_installer_writes_and_removes_the_drop_in_from_this_module() -> None:
    script = (ROOT / "deploy" / "install-exporter.sh").read_text()
    assert '-m vpsmon.deploy.dropin "$CONFIG" >"$DROPIN.new"' in script
    assert "DROPIN=/etc/systemd/system/vpsmon-exporter.service.d/management.conf" in script
    assert 'rm -f "$DROPIN.new" "$DROPIN"' in script
    assert (
        subprocess.run(["sh", "-n", str(ROOT / "deploy" / "install-exporter.sh")]).returncode == 0
    )
