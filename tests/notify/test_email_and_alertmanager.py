"""E-mail reaches a real SMTP server (aiosmtpd) over STARTTLS with a certificate made here;
Debian's Alertmanager receives forwarded alerts, shows them in its API, and sees them resolve."""

from __future__ import annotations

import asyncio
import email
import email.policy
import json
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any, cast

import aiohttp
import asyncpg
import pytest

from tests.conftest import free_port, require_binary
from tests.notify.helpers import add_channel, alert
from tests.notify.receiver import Receiver
from vpsmon.collector.notify.dispatch import Dispatcher
from vpsmon.collector.notify.outbox import OutboxWorker
from vpsmon.collector.notify.store import Channel
from vpsmon.collector.notify.templates import sample_payload
from vpsmon.collector.notify.urlguard import UrlGuard

GUARD = UrlGuard.from_list(["127.0.0.1"])


@pytest.fixture(scope="module")
def certificate(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    openssl = shutil.which("openssl")
    assert openssl, "openssl is needed to make the test certificate"
    d = tmp_path_factory.mktemp("smtp-tls")
    cert, key = d / "cert.pem", d / "key.pem"
    subprocess.run(
        [
            openssl,
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "1",
            "-keyout",
            str(key),
            "-out",
            str(cert),
            "-subj",
            "/CN=localhost",
            "-addext",
            "subjectAltName=IP:127.0.0.1,DNS:localhost",
        ],
        check=True,
        capture_output=True,
    )
    return cert, key


class Mailbox:
    def __init__(self) -> None:
        self.messages: list[tuple[Any, email.message.EmailMessage]] = []

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:  # noqa: N802
        parsed = email.message_from_bytes(envelope.content, policy=email.policy.default)
        self.messages.append((envelope, cast(email.message.EmailMessage, parsed)))
        return "250 Message accepted for delivery"


@pytest.fixture
def smtp_server(certificate: tuple[Path, Path]) -> Iterator[tuple[int, Mailbox]]:
    import ssl

    from aiosmtpd.controller import Controller
    from aiosmtpd.smtp import AuthResult, LoginPassword

    cert, key = certificate
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert, key)

    def authenticator(
        server: Any, session: Any, envelope: Any, mechanism: str, data: Any
    ) -> AuthResult:
        ok = isinstance(data, LoginPassword) and (data.login, data.password) == (b"alerts", b"pw")
        return AuthResult(success=ok)

    mailbox = Mailbox()
    port = free_port()
    controller = Controller(
        mailbox,
        hostname="127.0.0.1",
        port=port,
        tls_context=context,
        require_starttls=True,  # plain MAIL FROM is refused: the client must upgrade
        authenticator=authenticator,
        auth_require_tls=True,
    )
    controller.start()
    try:
        yield port, mailbox
    finally:
        controller.stop()


@pytest.mark.parametrize(
    ("language", "subject", "lines"),
    [
        (
            "en",
            "[FIRING:1] VpsmonTest web-1:9190",
            ["FIRING: VpsmonTest on web-1:9190", "Started:"],
        ),
        (
            "zh-CN",
            "[告警:1] VpsmonTest web-1:9190",
            ["告警：VpsmonTest（web-1:9190）", "开始时间："],
        ),
    ],
)
async def test_email_arrives_over_starttls_with_subject_and_body_in_both_languages(
    smtp_server: tuple[int, Mailbox],
    certificate: tuple[Path, Path],
    language: str,
    subject: str,
    lines: list[str],
) -> None:
    port, mailbox = smtp_server
    settings = {
        "host": "127.0.0.1",
        "port": str(port),
        "security": "starttls",
        "username": "alerts",
        "password": "pw",
        "from": "vpsmon@example.org",
        "to": "ops@example.org, boss@example.org",
        "tls_ca_file": str(certificate[0]),
    }
    async with OutboxWorker(cast(asyncpg.Pool, None), GUARD, timeout=10) as worker:
        channel = Channel(1, "mail", "email", settings, language=language)
        outcome = await worker.send(channel, sample_payload(time.time(), "mail"), time.time())
    assert outcome.ok, outcome.error
    assert outcome.status.startswith("SMTP 250")
    envelope, message = mailbox.messages[0]
    assert envelope.rcpt_tos == ["ops@example.org", "boss@example.org"]
    assert message["Subject"] == subject
    assert message["From"] == "vpsmon@example.org"
    text = message.get_body(("plain",)).get_content()
    for line in lines:
        assert line in text
    html = message.get_body(("html",)).get_content()
    assert "<b>" in html and "VpsmonTest" in html


async def test_email_to_a_server_with_an_untrusted_certificate_is_not_sent(
    smtp_server: tuple[int, Mailbox], certificate: tuple[Path, Path]
) -> None:
    port, mailbox = smtp_server
    base = {
        "host": "127.0.0.1",
        "port": str(port),
        "security": "starttls",
        "username": "alerts",
        "from": "vpsmon@example.org",
        "to": "ops@example.org",
    }
    async with OutboxWorker(cast(asyncpg.Pool, None), GUARD, timeout=10) as worker:
        untrusted = Channel(1, "mail", "email", {**base, "password": "pw"})
        outcome = await worker.send(untrusted, sample_payload(time.time()), time.time())
        assert not outcome.ok and "CERTIFICATE_VERIFY_FAILED" in (outcome.error or "")
    assert mailbox.messages == []


# -- Alertmanager ------------------------------------------------------------------------------


@pytest.fixture
async def alertmanager(tmp_path: Path) -> Any:
    binary = require_binary("prometheus-alertmanager")
    hook = Receiver()
    await hook.__aenter__()
    port = free_port()
    config = tmp_path / "alertmanager.yml"
    config.write_text(
        json.dumps(
            {
                "route": {
                    "receiver": "hook",
                    "group_by": ["alertname"],
                    "group_wait": "1s",
                    "group_interval": "1s",
                    "repeat_interval": "1h",
                },
                "receivers": [
                    {
                        "name": "hook",
                        "webhook_configs": [{"url": hook.url + "/am", "send_resolved": True}],
                    }
                ],
            }
        )
    )
    proc = await asyncio.create_subprocess_exec(
        binary,
        f"--config.file={config}",
        f"--storage.path={tmp_path / 'data'}",
        f"--web.listen-address=127.0.0.1:{port}",
        "--cluster.listen-address=",
        stdout=asyncio.subprocess.DEVNULL,
        stderr=(tmp_path / "am.log").open("wb"),
    )
    url = f"http://127.0.0.1:{port}"
    try:
        async with aiohttp.ClientSession() as session:
            for _ in range(100):
                try:
                    async with session.get(url + "/-/ready") as resp:
                        if resp.status == 200:
                            break
                except aiohttp.ClientError:
                    pass
                await asyncio.sleep(0.1)
            else:
                raise AssertionError(
                    "alertmanager did not start: " + (tmp_path / "am.log").read_text()
                )
        yield url, hook
    finally:
        proc.terminate()
        await proc.wait()
        await hook.__aexit__(None, None, None)


async def am_alerts(url: str) -> list[dict[str, Any]]:
    async with aiohttp.ClientSession() as session, session.get(url + "/api/v2/alerts") as resp:
        assert resp.status == 200
        return cast(list[dict[str, Any]], await resp.json())


async def test_alertmanager_shows_the_forwarded_alert_and_its_resolution(
    pool: asyncpg.Pool, alertmanager: tuple[str, Receiver]
) -> None:
    url, hook = alertmanager
    await add_channel(pool, "am", "alertmanager", {"url": url})
    dispatcher = Dispatcher(pool)  # real time: Alertmanager judges endsAt by its own clock
    await dispatcher.start()
    async with OutboxWorker(pool, GUARD, timeout=5) as worker:
        firing = alert("DiskFull", "db-1:9190", ends=time.time() + 600, severity="critical")
        await dispatcher.submit([firing])
        await dispatcher.tick(time.time())
        await worker.poll()
        await worker.idle()
        shown = await am_alerts(url)
        assert [a["labels"]["alertname"] for a in shown] == ["DiskFull"]
        assert shown[0]["labels"]["instance"] == "db-1:9190"
        assert shown[0]["status"]["state"] == "active"
        assert shown[0]["annotations"]["summary"] == "DiskFull on db-1:9190"
        await hook.wait_for(1, within=15)
        assert hook.requests[0].body["status"] == "firing"

        await dispatcher.submit(
            [alert("DiskFull", "db-1:9190", ends=time.time() - 1, severity="critical")]
        )
        await dispatcher.tick(time.time())
        await worker.poll()
        await worker.idle()
    assert await am_alerts(url) == [], "Alertmanager no longer lists it as active"
    await hook.wait_for(2, within=15)
    resolved = hook.requests[-1].body
    assert resolved["status"] == "resolved"
    assert resolved["alerts"][0]["labels"]["alertname"] == "DiskFull"
