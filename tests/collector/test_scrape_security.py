"""Scraping a real vpsmon exporter over TLS (pinned fingerprint or CA) with bearer tokens."""

from __future__ import annotations

import dataclasses
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from tests.conftest import require_binary
from vpsmon.collector.scrape.loop import ScrapeResult, scrape_once
from vpsmon.collector.scrape.security import ssl_for
from vpsmon.collector.scrape.target import Target, TLSSettings
from vpsmon.config import HostPort
from vpsmon.exporter.config import ExporterConfig, load_config
from vpsmon.exporter.security import ensure_self_signed, fingerprint
from vpsmon.exporter.server import serve

TOKEN = "scrape-token-0123456789abcdef"


def exporter_config(**overrides: Any) -> ExporterConfig:
    switches = {"collectors.hwmon": False, "collectors.filesystem": False}
    return load_config(None, env={}, overrides={**switches, **overrides})


@asynccontextmanager
async def running(cfg: ExporterConfig) -> AsyncIterator[str]:
    exporter = await serve(dataclasses.replace(cfg, listen=HostPort("127.0.0.1", 0)))
    scheme = "https" if cfg.tls.enabled else "http"
    try:
        yield f"{scheme}://127.0.0.1:{exporter.port}/metrics"
    finally:
        await exporter.close()


@pytest.fixture
def tls_exporter(tmp_path: Path) -> ExporterConfig:
    require_binary("openssl")
    ensure_self_signed(tmp_path)  # what tls.auto makes on the first start
    return exporter_config(
        **{"tls.auto": True, "state_dir": str(tmp_path), "auth.bearer_tokens": [TOKEN]}
    )


async def scrape(target: Target) -> ScrapeResult:
    async with aiohttp.ClientSession() as session:
        return await scrape_once(
            session,
            target,
            1_700_000_000.0,
            body_size_limit=10 * 1024 * 1024,
            sample_limit=50_000,
            ssl_setting=ssl_for(target.tls),
        )


def target(url: str, **changes: Any) -> Target:
    return dataclasses.replace(Target(1, "web-1", url, 15.0, 5.0), **changes)


async def test_a_pinned_fingerprint_and_a_token_scrape_a_tls_exporter(
    tls_exporter: ExporterConfig, tmp_path: Path
) -> None:
    pin = fingerprint(tmp_path / "exporter.crt")
    async with running(tls_exporter) as url:
        assert url.startswith("https://")
        result = await scrape(target(url, tls=TLSSettings(fingerprint=pin), bearer_token=TOKEN))
    assert result.error is None
    assert any(s.name == "node_load1" for s in result.samples)


async def test_a_token_from_a_file_is_read_and_a_missing_file_fails_the_scrape_clearly(
    tls_exporter: ExporterConfig, tmp_path: Path
) -> None:
    pin = fingerprint(tmp_path / "exporter.crt")
    token_file = tmp_path / "token"
    token_file.write_text(TOKEN + "\n", encoding="utf-8")
    tls = TLSSettings(fingerprint=pin)
    async with running(tls_exporter) as url:
        good = await scrape(target(url, tls=tls, bearer_token_file=token_file))
        token_file.unlink()
        missing = await scrape(target(url, tls=tls, bearer_token_file=token_file))
    assert good.error is None
    assert missing.error == f"cannot read bearer_token_file {token_file}: No such file or directory"


async def test_a_wrong_fingerprint_fails_the_scrape_before_the_token_is_sent(
    tls_exporter: ExporterConfig, tmp_path: Path
) -> None:
    actual = fingerprint(tmp_path / "exporter.crt")
    wrong = "sha256:" + "00" * 32
    async with running(tls_exporter) as url:
        result = await scrape(target(url, tls=TLSSettings(fingerprint=wrong), bearer_token=TOKEN))
    assert result.error == (
        "TLS certificate does not match the pinned fingerprint: expected"
        f" {wrong}, the server presented {actual}"
    )
    assert not result.up


async def test_a_self_signed_exporter_without_a_pin_is_not_trusted(
    tls_exporter: ExporterConfig,
) -> None:
    async with running(tls_exporter) as url:
        result = await scrape(target(url, bearer_token=TOKEN))
    assert result.error is not None
    assert result.error.startswith("TLS certificate not trusted")


async def test_a_ca_file_that_signed_the_certificate_is_trusted(
    tls_exporter: ExporterConfig, tmp_path: Path
) -> None:
    # The self-signed certificate is its own CA; its names include 127.0.0.1.
    tls = TLSSettings(ca_file=tmp_path / "exporter.crt")
    async with running(tls_exporter) as url:
        result = await scrape(target(url, tls=tls, bearer_token=TOKEN))
    assert result.error is None


async def test_a_missing_ca_file_is_a_clear_setup_error() -> None:
    from vpsmon.collector.scrape.security import ScrapeSetupError

    with pytest.raises(ScrapeSetupError) as caught:
        ssl_for(TLSSettings(ca_file=Path("/nonexistent/ca.pem")))
    assert str(caught.value).startswith("cannot load tls.ca_file /nonexistent/ca.pem")


async def test_a_wrong_token_fails_the_scrape_with_the_exporters_status(
    tls_exporter: ExporterConfig, tmp_path: Path
) -> None:
    pin = fingerprint(tmp_path / "exporter.crt")
    async with running(tls_exporter) as url:
        result = await scrape(target(url, tls=TLSSettings(fingerprint=pin), bearer_token="nope"))
    assert result.error == "server returned HTTP status 401 Unauthorized"


async def test_the_bearer_token_never_appears_in_a_targets_repr() -> None:
    t = target("https://10.0.0.5:9190/metrics", bearer_token=TOKEN)
    assert TOKEN not in repr(t)
    assert TOKEN not in str(t)
