"""TLS, the exporter's own certificate and fingerprint, and who may read /metrics and /history.

HTTP tests run against the real aiohttp server on 127.0.0.1.
"""

from __future__ import annotations

import ipaddress
import logging
import ssl
import subprocess
import sys
from collections.abc import AsyncIterator, Callable, Mapping
from contextlib import asynccontextmanager
from dataclasses import replace
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from tests.conftest import require_binary
from vpsmon.config import ConfigError, HostPort
from vpsmon.exporter.config import ExporterConfig, load_config
from vpsmon.exporter.security import AccessPolicy, RefusalLog, ensure_self_signed, fingerprint
from vpsmon.exporter.server import serve, ssl_context

VPSMON = str(Path(sys.executable).with_name("vpsmon"))
TOKEN = "s3cret-token-0123456789abcdef"
OTHER_TOKEN = "another-token-0123456789abcdef"


def config(**overrides: Any) -> ExporterConfig:
    # Only cheap collectors: these tests are about the door, not the rooms.
    switches = {"collectors.hwmon": False, "collectors.filesystem": False}
    return load_config(None, env={}, overrides={**switches, **overrides})


@asynccontextmanager
async def running(cfg: ExporterConfig) -> AsyncIterator[str]:
    """The exporter app on 127.0.0.1 (HTTPS when cfg configures TLS); yields its base URL."""
    exporter = await serve(replace(cfg, listen=HostPort("127.0.0.1", 0)))
    scheme = "https" if cfg.tls.enabled else "http"
    try:
        yield f"{scheme}://127.0.0.1:{exporter.port}"
    finally:
        await exporter.close()


async def get(
    url: str, headers: Mapping[str, str] | None = None, ssl_ctx: ssl.SSLContext | None = None
) -> tuple[int, str, Mapping[str, str]]:
    async with aiohttp.ClientSession() as session:
        async with session.get(url, headers=headers, ssl=ssl_ctx or True) as response:
            return response.status, await response.text(), response.headers


# ---------------------------------------------------------------- access control


async def test_with_no_tokens_and_no_allow_list_metrics_are_open_like_node_exporter() -> None:
    async with running(config()) as base:
        status, body, _ = await get(f"{base}/metrics")
    assert status == 200
    assert "node_load1" in body


@pytest.mark.parametrize("path", ["/metrics", "/history?since=0"])
async def test_a_request_without_a_token_is_refused_with_401_when_tokens_are_set(
    path: str,
) -> None:
    async with running(config(**{"auth.bearer_tokens": [TOKEN]})) as base:
        status, body, headers = await get(base + path)
    assert status == 401
    assert body == "a bearer token is required\n"
    assert headers["WWW-Authenticate"].startswith("Bearer")


async def test_a_wrong_token_is_refused_and_a_right_one_reads_metrics_and_history() -> None:
    async with running(config(**{"auth.bearer_tokens": [OTHER_TOKEN, TOKEN]})) as base:
        wrong = await get(f"{base}/metrics", {"Authorization": f"Bearer {TOKEN}x"})
        metrics = await get(f"{base}/metrics", {"Authorization": f"Bearer {TOKEN}"})
        history = await get(f"{base}/history?since=0", {"Authorization": f"bearer {TOKEN}"})
    assert (wrong[0], wrong[1]) == (401, "the bearer token is not valid\n")
    assert metrics[0] == 200 and "node_load1" in metrics[1]
    assert history[0] == 200 and "node_load1" in history[1]


async def test_an_allow_listed_address_reads_without_a_token() -> None:
    cfg = config(**{"auth.allow": ["10.0.0.0/8", "127.0.0.0/8"], "auth.bearer_tokens": [TOKEN]})
    async with running(cfg) as base:
        status, _, _ = await get(f"{base}/metrics")
    assert status == 200


async def test_an_address_outside_the_allow_list_is_refused_with_403() -> None:
    async with running(config(**{"auth.allow": ["10.0.0.0/8"]})) as base:
        status, body, _ = await get(f"{base}/metrics")
    assert status == 403
    assert body == "address 127.0.0.1 is not allowed\n"


async def test_a_valid_token_passes_even_from_an_address_outside_the_allow_list() -> None:
    cfg = config(**{"auth.allow": ["192.0.2.0/24"], "auth.bearer_tokens": [TOKEN]})
    async with running(cfg) as base:
        refused = await get(f"{base}/metrics")
        allowed = await get(f"{base}/metrics", {"Authorization": f"Bearer {TOKEN}"})
    assert refused[0] == 401  # a token would have let it in, so 401 rather than 403
    assert allowed[0] == 200


async def test_refused_requests_from_one_address_are_logged_once_a_minute(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.WARNING, logger="vpsmon.exporter")
    async with running(config(**{"auth.allow": ["10.0.0.0/8"]})) as base:
        for _ in range(5):
            assert (await get(f"{base}/metrics"))[0] == 403
    refusals = [r for r in caplog.records if "refused request" in r.getMessage()]
    assert len(refusals) == 1
    assert "address=127.0.0.1" in refusals[0].getMessage()


def test_the_refusal_log_speaks_again_after_a_minute_and_per_address() -> None:
    refusals = RefusalLog(every=60)
    assert refusals.should_log("192.0.2.1", now=1000)
    assert not refusals.should_log("192.0.2.1", now=1059)
    assert refusals.should_log("192.0.2.2", now=1059)
    assert refusals.should_log("192.0.2.1", now=1060)


def test_the_refusal_log_stays_bounded_under_a_flood_of_addresses() -> None:
    refusals = RefusalLog(every=60, max_addresses=3)
    assert [refusals.should_log(f"192.0.2.{i}", now=0) for i in range(5)] == [
        True,
        True,
        True,
        False,
        False,
    ]
    assert refusals.should_log("192.0.2.9", now=61)  # the old entries have expired


def test_an_ipv4_client_on_a_dual_stack_socket_matches_an_ipv4_allow_list() -> None:
    policy = AccessPolicy([], [ipaddress.ip_network("192.0.2.0/24")])
    assert policy.check("::ffff:192.0.2.7", None).allowed
    assert policy.check("::ffff:198.51.100.7", None).status == 403


def test_tokens_come_from_the_file_named_by_the_env_var_one_per_line(tmp_path: Path) -> None:
    secret = tmp_path / "tokens"
    secret.write_text(f"{TOKEN}\n{OTHER_TOKEN}\n")
    cfg = load_config(None, env={"VPSMON_EXPORTER_AUTH_BEARER_TOKENS_FILE": str(secret)})
    assert cfg.bearer_tokens == (TOKEN, OTHER_TOKEN)


def test_a_short_token_is_a_config_error_that_does_not_echo_it() -> None:
    expected = "VPSMON_EXPORTER_AUTH_BEARER_TOKENS: each token must be"
    with pytest.raises(ConfigError, match=expected) as err:
        load_config(None, env={"VPSMON_EXPORTER_AUTH_BEARER_TOKENS": "hunter2"})
    assert "hunter2" not in str(err.value)


def test_a_bad_allow_entry_is_a_config_error_naming_the_key(tmp_path: Path) -> None:
    path = tmp_path / "exporter.yml"
    path.write_text("auth:\n  allow: [10.0.0.0/8, not-a-network]\n")
    with pytest.raises(ConfigError, match="auth.allow: expected addresses or CIDRs"):
        load_config(path, env={})


def test_a_certificate_without_its_key_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="tls.cert_file and tls.key_file must be set together"):
        load_config(None, env={}, overrides={"tls.cert_file": str(tmp_path / "c.pem")})


# ---------------------------------------------------------------- TLS and fingerprint


@pytest.fixture
def auto_tls(tmp_path: Path) -> Callable[..., ExporterConfig]:
    require_binary("openssl")
    return lambda **more: config(**{"tls.auto": True, "state_dir": str(tmp_path / "state"), **more})


def trusting(cert: Path) -> ssl.SSLContext:
    return ssl.create_default_context(cafile=str(cert))


async def test_tls_auto_serves_https_with_the_certificate_it_made(
    auto_tls: Callable[..., ExporterConfig], tmp_path: Path
) -> None:
    cfg = auto_tls()
    async with running(cfg) as base:
        cert = tmp_path / "state" / "exporter.crt"
        assert base.startswith("https://")
        status, body, _ = await get(f"{base}/metrics", ssl_ctx=trusting(cert))
        assert status == 200 and "node_load1" in body
        # A client that does not trust the self-signed certificate must not get through.
        with pytest.raises(aiohttp.ClientConnectorCertificateError):
            await get(f"{base}/metrics", ssl_ctx=ssl.create_default_context())
    assert (tmp_path / "state" / "exporter.key").stat().st_mode & 0o077 == 0


async def test_tls_and_a_token_together_protect_metrics(
    auto_tls: Callable[..., ExporterConfig], tmp_path: Path
) -> None:
    async with running(auto_tls(**{"auth.bearer_tokens": [TOKEN]})) as base:
        ctx = trusting(tmp_path / "state" / "exporter.crt")
        refused = await get(f"{base}/metrics", ssl_ctx=ctx)
        allowed = await get(f"{base}/metrics", {"Authorization": f"Bearer {TOKEN}"}, ctx)
    assert (refused[0], allowed[0]) == (401, 200)


def test_the_key_pair_is_made_once_and_kept_across_starts(tmp_path: Path) -> None:
    require_binary("openssl")
    first = fingerprint(ensure_self_signed(tmp_path).cert)
    second = fingerprint(ensure_self_signed(tmp_path).cert)
    assert first == second
    assert first.startswith("sha256:") and len(first) == len("sha256:") + 64


def test_configured_cert_and_key_files_are_served_instead_of_a_generated_pair(
    tmp_path: Path,
) -> None:
    require_binary("openssl")
    paths = ensure_self_signed(tmp_path / "elsewhere")
    cfg = config(
        **{
            "tls.cert_file": str(paths.cert),
            "tls.key_file": str(paths.key),
            "state_dir": str(tmp_path / "state"),
        }
    )
    assert ssl_context(cfg) is not None
    assert not (tmp_path / "state").exists()


def test_the_fingerprint_command_prints_the_sha256_of_the_certificate(tmp_path: Path) -> None:
    openssl = require_binary("openssl")
    state = tmp_path / "state"
    cert = ensure_self_signed(state).cert
    path = tmp_path / "exporter.yml"
    path.write_text(f"state_dir: {state}\ntls:\n  auto: true\n")
    done = subprocess.run(
        [VPSMON, "exporter", "fingerprint", "--config", str(path)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    # Computed independently of our code: openssl prints AA:BB:... in upper case.
    expected = subprocess.run(
        [openssl, "x509", "-in", str(cert), "-noout", "-fingerprint", "-sha256"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    hex_digits = expected.strip().split("=", 1)[1].replace(":", "").lower()
    assert done.stdout == f"sha256:{hex_digits}\n"


def test_the_fingerprint_command_explains_when_there_is_no_certificate_yet(
    tmp_path: Path,
) -> None:
    path = tmp_path / "exporter.yml"
    path.write_text(f"state_dir: {tmp_path / 'empty'}\n")
    done = subprocess.run(
        [VPSMON, "exporter", "fingerprint", "-c", str(path)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 1
    assert done.stderr.startswith("vpsmon: error: no certificate at ")
    assert "tls.auto" in done.stderr
