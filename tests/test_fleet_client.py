"""Where `vpsmon exec`/`shell` connect and as whom: options, then environment, then the login
file; bad values are clear errors."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest

from vpsmon.fleet_client import (
    ClientError,
    ClientSettings,
    normalize_address,
    normalize_fingerprint,
    resolve_settings,
    write_client_file,
)

PIN = "sha256:" + "ab" * 32
OTHER_PIN = "sha256:" + "cd" * 32


def test_options_win_over_the_environment_which_wins_over_the_login_file(tmp_path: Path) -> None:
    saved = tmp_path / "client.yml"
    write_client_file(saved, ClientSettings("saved.example:8081", PIN, "vpsmon_saved"))
    assert stat.S_IMODE(saved.stat().st_mode) == 0o600

    def settings(**options: str | None) -> ClientSettings:
        values = {"collector": None, "token": None, "fingerprint": None, **options}
        return resolve_settings(**values, config_path=saved, env=env)  # type: ignore[arg-type]

    env: dict[str, str] = {}
    assert settings() == ClientSettings("saved.example:8081", PIN, "vpsmon_saved")
    env = {"VPSMON_TOKEN": "vpsmon_env", "VPSMON_COLLECTOR": "env.example"}
    assert settings() == ClientSettings("env.example:8081", PIN, "vpsmon_env")
    chosen = settings(token="vpsmon_opt", collector="[::1]:9000", fingerprint=OTHER_PIN)
    assert chosen == ClientSettings("[::1]:9000", OTHER_PIN, "vpsmon_opt")


def test_missing_pieces_say_how_to_give_them(tmp_path: Path) -> None:
    nowhere = tmp_path / "none.yml"
    with pytest.raises(ClientError, match="--collector"):
        resolve_settings(collector=None, token="t", fingerprint=PIN, config_path=nowhere, env={})
    with pytest.raises(ClientError, match="VPSMON_TOKEN"):
        resolve_settings(collector="h", token=None, fingerprint=PIN, config_path=nowhere, env={})
    with pytest.raises(ClientError, match="vpsmon collector fingerprint"):
        resolve_settings(collector="h", token="t", fingerprint=None, config_path=nowhere, env={})


@pytest.mark.parametrize(
    ("text", "error"),
    [
        ("collector: [1, 2]\n", "collector must be a string"),
        ("colector: x\n", "unknown key 'colector'"),
        ("- a\n", "expected a mapping"),
        ("a: [\n", "not YAML"),
    ],
)
def test_a_broken_login_file_is_a_clear_error(tmp_path: Path, text: str, error: str) -> None:
    path = tmp_path / "client.yml"
    path.write_text(text)
    with pytest.raises(ClientError, match=error):
        resolve_settings(collector="h", token="t", fingerprint=PIN, config_path=path, env={})


def test_fingerprints_are_accepted_as_printed_by_common_tools() -> None:
    colons = ":".join(["AB"] * 32)
    assert normalize_fingerprint(colons) == PIN
    assert normalize_fingerprint("SHA256:" + "AB" * 32) == PIN
    for bad in ("sha256:abc", "sha1:" + "ab" * 20, "zz" * 32):
        with pytest.raises(ClientError, match="not a SHA-256 fingerprint"):
            normalize_fingerprint(bad)


def test_addresses_default_to_port_8081_and_refuse_urls() -> None:
    assert normalize_address("collector.example") == "collector.example:8081"
    assert normalize_address("10.0.0.2:9000") == "10.0.0.2:9000"
    assert normalize_address("[2001:db8::1]") == "[2001:db8::1]:8081"
    with pytest.raises(ClientError, match="without a scheme"):
        normalize_address("https://collector.example:8081")


def test_output_is_printed_whole_lines_per_server_with_safe_names() -> None:
    import io

    import vpsmon.cli  # noqa: F401 (loads the command modules in their order)
    from vpsmon.cli_fleet import LinePrinter

    out, err = io.BytesIO(), io.BytesIO()
    printer = LinePrinter(out, err, {1: "web1", 2: "evil\x1b[2J"}, prefix=True)
    printer.write(1, "stdout", b"hel")
    printer.write(2, "stdout", b"one\ntw")
    printer.write(1, "stdout", b"lo\n")
    printer.write(1, "stderr", b"oops\n")
    printer.finish(2)  # the last line had no newline
    assert out.getvalue().decode().splitlines() == [
        "evil?[2J | one",
        "web1     | hello",
        "evil?[2J | tw",
    ]
    assert err.getvalue() == b"web1     | oops\n"
