"""Notification channels: one table of kinds, each with its settings and its sender.

Every sender speaks the service's documented wire format; base URLs are settings, so a
self-hosted server (ntfy, Gotify, Bark, a Telegram Bot API server) or a test on 127.0.0.1
works the same way. All HTTP goes through the SSRF guard (urlguard.py).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import html
import json
import time
import urllib.parse
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import aiohttp

from vpsmon.collector.notify.store import Channel
from vpsmon.collector.notify.templates import Message, render
from vpsmon.collector.notify.urlguard import BlockedTarget, UrlGuard


class DeliveryError(Exception):
    """A failed send. `retry` is False for errors a retry cannot fix (HTTP 4xx, bad config)."""

    def __init__(self, message: str, *, retry: bool = True, status: str = "") -> None:
        super().__init__(message)
        self.retry = retry
        self.status = status


class SettingsError(ValueError):
    """Channel settings that cannot be saved; the message names the field."""


@dataclass(frozen=True)
class Field:
    name: str
    required: bool = True
    secret: bool = False
    default: str = ""
    kind: str = "str"  # str, url, int, bool, choice, emails
    choices: tuple[str, ...] = ()


@dataclass
class Delivery:
    channel: Channel
    payload: Mapping[str, Any]
    session: aiohttp.ClientSession
    guard: UrlGuard
    timeout: float
    now: float = field(default_factory=time.time)

    @property
    def settings(self) -> Mapping[str, Any]:
        return self.channel.settings

    def message(self, fmt: str) -> Message:
        return render(
            self.payload,
            fmt=fmt,
            language=self.channel.language,
            title_template=self.channel.title_template,
            body_template=self.channel.body_template,
        )

    @property
    def firing(self) -> bool:
        return self.payload.get("status") == "firing"


Sender = Callable[[Delivery], Awaitable[str]]


@dataclass(frozen=True)
class Kind:
    name: str
    label: str
    fields: tuple[Field, ...]
    send: Sender
    fmt: str = "text"  # what the preview shows


async def post_json(
    d: Delivery,
    url: str,
    body: Any,
    headers: Mapping[str, str] | None = None,
    *,
    auth: aiohttp.BasicAuth | None = None,
) -> tuple[int, Any]:
    """POST JSON; raise DeliveryError on a refused target, a network error or HTTP >= 400."""
    try:
        d.guard.check_url(url)
    except BlockedTarget as err:
        raise DeliveryError(str(err), retry=False, status="blocked") from None
    try:
        async with d.session.post(
            url,
            json=body,
            headers=headers,
            auth=auth,
            allow_redirects=False,  # a redirect could lead past the SSRF guard
            timeout=aiohttp.ClientTimeout(total=d.timeout),
        ) as response:
            text = (await response.content.read(65536)).decode("utf-8", "replace")
            status = response.status
    except BlockedTarget as err:
        raise DeliveryError(str(err), retry=False, status="blocked") from None
    except TimeoutError:
        raise DeliveryError(f"no answer within {d.timeout:g}s", status="timeout") from None
    except aiohttp.ClientError as err:
        cause = err.__cause__ or err.__context__
        if isinstance(cause, BlockedTarget):
            raise DeliveryError(str(cause), retry=False, status="blocked") from None
        raise DeliveryError(f"{type(err).__name__}: {err}", status="network") from None
    if status >= 300:
        # As Alertmanager: 5xx and 429 are worth retrying; other 4xx will fail again.
        raise DeliveryError(
            f"HTTP {status}: {text[:300]}",
            retry=status >= 500 or status == 429,
            status=f"HTTP {status}",
        )
    try:
        parsed = json.loads(text) if text.strip() else None
    except ValueError:
        parsed = text
    return status, parsed


def _check_code(parsed: Any, key: str, ok: Any, status: int) -> str:
    """Chat APIs answer HTTP 200 with an error code in the body."""
    if isinstance(parsed, Mapping) and key in parsed and parsed[key] != ok:
        message = parsed.get("errmsg") or parsed.get("msg") or parsed.get("message") or parsed
        raise DeliveryError(
            f"{key}={parsed[key]}: {message}", retry=False, status=f"{key} {parsed[key]}"
        )
    return f"HTTP {status}"


def _bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"} if token else {}


# -- senders ---------------------------------------------------------------------------------


async def send_webhook(d: Delivery) -> str:
    status, _ = await post_json(
        d, d.settings["url"], dict(d.payload), _bearer(d.settings.get("bearer_token", ""))
    )
    return f"HTTP {status}"


def postable_alerts(payload: Mapping[str, Any]) -> list[dict[str, Any]]:
    if "forward" in payload:
        return list(payload["forward"])
    out = []
    for a in payload.get("alerts", []):
        item = {k: a[k] for k in ("labels", "annotations", "startsAt", "generatorURL") if k in a}
        if a.get("status") == "resolved":
            item["endsAt"] = a.get("endsAt")
        out.append(item)
    return out


async def send_alertmanager(d: Delivery) -> str:
    base = d.settings["url"].rstrip("/")
    user, password = d.settings.get("username", ""), d.settings.get("password", "")
    auth = aiohttp.BasicAuth(user, password) if user else None
    status, _ = await post_json(
        d,
        f"{base}/api/v2/alerts",
        postable_alerts(d.payload),
        _bearer(d.settings.get("bearer_token", "")),
        auth=auth,
    )
    return f"HTTP {status}"


async def send_telegram(d: Delivery) -> str:
    m = d.message("html")
    text = f"<b>{html.escape(m.title)}</b>\n\n{m.body}"
    base = d.settings.get("api_url") or "https://api.telegram.org"
    url = f"{base.rstrip('/')}/bot{d.settings['bot_token']}/sendMessage"
    body = {
        "chat_id": d.settings["chat_id"],
        "text": _cut(text, 4096),
        "parse_mode": "HTML",
        "disable_web_page_preview": True,
    }
    status, parsed = await post_json(d, url, body)
    return _check_code(parsed, "ok", True, status)


async def send_slack(d: Delivery) -> str:
    m = d.message("slack")
    title = m.title.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
    body: dict[str, Any] = {"text": _cut(f"*{title}*\n{m.body}", 40000)}
    channel = d.settings.get("channel", "")
    if channel:
        body["channel"] = channel
    status, _ = await post_json(d, d.settings["webhook_url"], body)
    return f"HTTP {status}"


async def send_discord(d: Delivery) -> str:
    m = d.message("markdown")
    body: dict[str, Any] = {
        "username": d.settings.get("username") or "vpsmon",
        "embeds": [
            {
                "title": _cut(m.title, 256),
                "description": _cut(m.body, 4096),
                "color": 0xD83B3B if d.firing else 0x2E9E5B,
            }
        ],
        # Never let alert text ping @everyone or roles.
        "allowed_mentions": {"parse": []},
    }
    status, _ = await post_json(d, d.settings["webhook_url"], body)
    return f"HTTP {status}"


def dingtalk_sign(secret: str, timestamp_ms: int) -> str:
    """https://open.dingtalk.com/document/robots/customize-robot-security-settings"""
    string_to_sign = f"{timestamp_ms}\n{secret}".encode()
    digest = hmac.new(secret.encode(), string_to_sign, hashlib.sha256).digest()
    return urllib.parse.quote_plus(base64.b64encode(digest).decode())


async def send_dingtalk(d: Delivery) -> str:
    m = d.message("markdown")
    url = d.settings["webhook_url"]
    secret = d.settings.get("secret", "")
    if secret:
        stamp = int(d.now * 1000)
        sep = "&" if "?" in url else "?"
        url = f"{url}{sep}timestamp={stamp}&sign={dingtalk_sign(secret, stamp)}"
    text = f"### {m.title}\n\n" + m.body.replace("\n", "  \n")
    body = {"msgtype": "markdown", "markdown": {"title": _cut(m.title, 64), "text": text}}
    status, parsed = await post_json(d, url, body)
    return _check_code(parsed, "errcode", 0, status)


def feishu_sign(secret: str, timestamp: int) -> str:
    """https://open.feishu.cn/document/client-docs/bot-v3/add-custom-bot (signature check)"""
    key = f"{timestamp}\n{secret}".encode()
    return base64.b64encode(hmac.new(key, b"", hashlib.sha256).digest()).decode()


async def send_feishu(d: Delivery) -> str:
    m = d.message("text")
    body: dict[str, Any] = {
        "msg_type": "post",
        "content": {
            "post": {
                "zh_cn" if d.channel.language == "zh-CN" else "en_us": {
                    "title": m.title,
                    "content": [[{"tag": "text", "text": line}] for line in m.body.splitlines()],
                }
            }
        },
    }
    secret = d.settings.get("secret", "")
    if secret:
        stamp = int(d.now)
        body = {"timestamp": str(stamp), "sign": feishu_sign(secret, stamp), **body}
    status, parsed = await post_json(d, d.settings["webhook_url"], body)
    if isinstance(parsed, Mapping) and "StatusCode" in parsed and "code" not in parsed:
        return _check_code(parsed, "StatusCode", 0, status)
    return _check_code(parsed, "code", 0, status)


async def send_wecom(d: Delivery) -> str:
    m = d.message("markdown")
    content = _cut_bytes(f"**{m.title}**\n{m.body}", 4096)
    body = {"msgtype": "markdown", "markdown": {"content": content}}
    status, parsed = await post_json(d, d.settings["webhook_url"], body)
    return _check_code(parsed, "errcode", 0, status)


async def send_ntfy(d: Delivery) -> str:
    m = d.message("text")
    body: dict[str, Any] = {
        "topic": d.settings["topic"],
        "title": m.title,
        "message": _cut(m.body, 4000),
        "priority": int(d.settings.get("priority") or 4) if d.firing else 3,
        "tags": ["rotating_light"] if d.firing else ["white_check_mark"],
    }
    base = d.settings.get("server_url") or "https://ntfy.sh"
    status, _ = await post_json(d, base, body, _bearer(d.settings.get("token", "")))
    return f"HTTP {status}"


async def send_gotify(d: Delivery) -> str:
    m = d.message("text")
    body = {
        "title": m.title,
        "message": m.body,
        "priority": int(d.settings.get("priority") or 8),
    }
    url = d.settings["server_url"].rstrip("/") + "/message"
    status, _ = await post_json(d, url, body, {"X-Gotify-Key": d.settings["app_token"]})
    return f"HTTP {status}"


async def send_bark(d: Delivery) -> str:
    m = d.message("text")
    body = {
        "device_key": d.settings["device_key"],
        "title": m.title,
        "body": m.body,
        "group": "vpsmon",
        "level": "timeSensitive" if d.firing else "active",
    }
    base = d.settings.get("server_url") or "https://api.day.app"
    status, parsed = await post_json(d, base.rstrip("/") + "/push", body)
    return _check_code(parsed, "code", 200, status)


async def send_email(d: Delivery) -> str:
    from vpsmon.collector.notify.smtp import send_email as smtp_send

    return await smtp_send(d)


def _cut(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _cut_bytes(text: str, limit: int) -> str:
    data = text.encode()
    if len(data) <= limit:
        return text
    return data[: limit - 3].decode("utf-8", "ignore") + "…"


URL = "url"
KINDS: dict[str, Kind] = {
    k.name: k
    for k in (
        Kind(
            "email",
            "Email (SMTP)",
            (
                Field("host"),
                Field("port", default="587", kind="int"),
                Field(
                    "security",
                    default="starttls",
                    kind="choice",
                    choices=("starttls", "tls", "none"),
                ),
                Field("username", required=False),
                Field("password", required=False, secret=True),
                Field("from"),
                Field("to", kind="emails"),
                Field("tls_ca_file", required=False),
                Field("tls_verify", required=False, default="true", kind="bool"),
            ),
            send_email,
            "html",
        ),
        Kind(
            "webhook",
            "Webhook (Alertmanager format)",
            (Field("url", kind=URL), Field("bearer_token", required=False, secret=True)),
            send_webhook,
            "text",
        ),
        Kind(
            "telegram",
            "Telegram bot",
            (
                Field("bot_token", secret=True),
                Field("chat_id"),
                Field("api_url", required=False, default="https://api.telegram.org", kind=URL),
            ),
            send_telegram,
            "html",
        ),
        Kind(
            "slack",
            "Slack webhook",
            (Field("webhook_url", secret=True, kind=URL), Field("channel", required=False)),
            send_slack,
            "slack",
        ),
        Kind(
            "discord",
            "Discord webhook",
            (Field("webhook_url", secret=True, kind=URL), Field("username", required=False)),
            send_discord,
            "markdown",
        ),
        Kind(
            "dingtalk",
            "DingTalk robot",
            (
                Field("webhook_url", secret=True, kind=URL),
                Field("secret", required=False, secret=True),
            ),
            send_dingtalk,
            "markdown",
        ),
        Kind(
            "feishu",
            "Feishu / Lark bot",
            (
                Field("webhook_url", secret=True, kind=URL),
                Field("secret", required=False, secret=True),
            ),
            send_feishu,
            "text",
        ),
        Kind(
            "wecom",
            "WeCom robot",
            (Field("webhook_url", secret=True, kind=URL),),
            send_wecom,
            "markdown",
        ),
        Kind(
            "ntfy",
            "ntfy",
            (
                Field("server_url", required=False, default="https://ntfy.sh", kind=URL),
                Field("topic"),
                Field("token", required=False, secret=True),
                Field("priority", required=False, default="4", kind="int"),
            ),
            send_ntfy,
        ),
        Kind(
            "gotify",
            "Gotify",
            (
                Field("server_url", kind=URL),
                Field("app_token", secret=True),
                Field("priority", required=False, default="8", kind="int"),
            ),
            send_gotify,
        ),
        Kind(
            "bark",
            "Bark",
            (
                Field("server_url", required=False, default="https://api.day.app", kind=URL),
                Field("device_key", secret=True),
            ),
            send_bark,
        ),
        Kind(
            "alertmanager",
            "Alertmanager",
            (
                Field("url", kind=URL),
                Field("bearer_token", required=False, secret=True),
                Field("username", required=False),
                Field("password", required=False, secret=True),
            ),
            send_alertmanager,
        ),
    )
}


def validate_settings(
    kind_name: str, raw: Mapping[str, Any], old: Mapping[str, Any] | None = None
) -> dict[str, Any]:
    """Check a channel's settings; a blank secret on edit keeps the stored one."""
    kind = KINDS.get(kind_name)
    if kind is None:
        raise SettingsError(f"kind: unknown channel kind {kind_name!r}")
    known = {f.name for f in kind.fields}
    unknown = set(raw) - known
    if unknown:
        raise SettingsError(f"{sorted(unknown)[0]}: not a setting of {kind_name} channels")
    out: dict[str, Any] = {}
    for f in kind.fields:
        value = raw.get(f.name, "")
        value = "" if value is None else value
        if not isinstance(value, str | int | bool):
            raise SettingsError(f"{f.name}: expected a string")
        value = str(value).strip()
        if f.secret and value == "" and old and old.get(f.name):
            value = str(old[f.name])
        if value == "":
            value = f.default
        if value == "":
            if f.required:
                raise SettingsError(f"{f.name}: is required")
            continue
        if len(value) > 4096:
            raise SettingsError(f"{f.name}: too long")
        if f.kind == URL:
            parts = urllib.parse.urlsplit(value)
            if parts.scheme not in {"http", "https"} or not parts.hostname:
                raise SettingsError(f"{f.name}: expected an http:// or https:// URL")
        elif f.kind == "int":
            if not value.isdigit() or not 0 < int(value) < 65536:
                raise SettingsError(f"{f.name}: expected a whole number")
        elif f.kind == "choice" and value not in f.choices:
            raise SettingsError(f"{f.name}: expected one of {', '.join(f.choices)}")
        elif f.kind == "bool" and value.lower() not in {"true", "false"}:
            raise SettingsError(f"{f.name}: expected true or false")
        elif f.kind == "emails":
            addresses = [a.strip() for a in value.split(",") if a.strip()]
            if not addresses or not all("@" in a and "\n" not in a for a in addresses):
                raise SettingsError(f"{f.name}: expected e-mail addresses separated by commas")
            value = ", ".join(addresses)
        if "\n" in value or "\r" in value:
            raise SettingsError(f"{f.name}: must be one line")
        out[f.name] = value
    return out


def public_settings(kind_name: str, settings: Mapping[str, Any]) -> dict[str, Any]:
    """Settings with secrets replaced by a mark, for the UI and API."""
    kind = KINDS.get(kind_name)
    secret = {f.name for f in kind.fields if f.secret} if kind else set(settings)
    return {k: ("••••••" if k in secret and v else v) for k, v in settings.items()}
