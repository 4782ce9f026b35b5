"""Each chat service's documented payload, received by a local server that checks it as the
service would (DingTalk's and Feishu's signatures recomputed here from their docs)."""

from __future__ import annotations

import base64
import hashlib
import hmac
import time
from typing import Any, cast

import asyncpg
import pytest
from aiohttp import web

from tests.notify.receiver import Receiver
from vpsmon.collector.notify.channels import dingtalk_sign, feishu_sign
from vpsmon.collector.notify.outbox import OutboxWorker, Outcome
from vpsmon.collector.notify.store import Channel
from vpsmon.collector.notify.templates import sample_payload
from vpsmon.collector.notify.urlguard import UrlGuard

HOSTILE = "<script>alert(1)</script> & @everyone"


def payload() -> dict[str, Any]:
    p = sample_payload(time.time(), "chat")
    p["alerts"][0]["annotations"]["summary"] = HOSTILE
    return p


async def send(kind: str, settings: dict[str, str], language: str = "en") -> Outcome:
    guard = UrlGuard.from_list(["127.0.0.1"])
    async with OutboxWorker(cast(asyncpg.Pool, None), guard, timeout=5) as worker:
        channel = Channel(1, "chat", kind, settings, language=language)
        return await worker.send(channel, payload(), time.time())


async def test_telegram_gets_send_message_with_escaped_html() -> None:
    async def api(request: web.Request, body: Any) -> web.StreamResponse:
        ok = request.path == "/bot123:ABC/sendMessage" and isinstance(body.get("chat_id"), str)
        return web.json_response({"ok": ok, "result": {"message_id": 1}}, status=200 if ok else 404)

    async with Receiver(api) as tg:
        outcome = await send(
            "telegram", {"bot_token": "123:ABC", "chat_id": "-100200", "api_url": tg.url}
        )
        assert outcome.ok, outcome.error
        body = tg.requests[0].body
        assert body["parse_mode"] == "HTML" and body["chat_id"] == "-100200"
        assert body["text"].startswith("<b>[FIRING:1] VpsmonTest web-1:9190</b>")
        assert "&lt;script&gt;" in body["text"] and "<script>" not in body["text"]
        assert len(body["text"]) <= 4096


async def test_telegram_error_answer_fails_without_retry() -> None:
    async def api(request: web.Request, body: Any) -> web.StreamResponse:
        return web.json_response(
            {"ok": False, "error_code": 400, "description": "Bad Request: chat not found"},
            status=400,
        )

    async with Receiver(api) as tg:
        outcome = await send("telegram", {"bot_token": "1:x", "chat_id": "1", "api_url": tg.url})
    assert not outcome.ok and not outcome.retry
    assert "chat not found" in (outcome.error or "")


async def test_slack_gets_text_with_mrkdwn_escaping() -> None:
    async def api(request: web.Request, body: Any) -> web.StreamResponse:
        return web.Response(text="ok")

    async with Receiver(api) as slack:
        outcome = await send("slack", {"webhook_url": slack.url + "/services/T0/B0/XYZ"})
        assert outcome.ok, outcome.error
        req = slack.requests[0]
        assert req.path == "/services/T0/B0/XYZ"
        assert set(req.body) == {"text"}
        assert req.body["text"].startswith("*[FIRING:1] VpsmonTest")
        assert "&lt;script&gt;alert(1)&lt;/script&gt; &amp;" in req.body["text"]


async def test_discord_gets_an_embed_and_cannot_mention_everyone() -> None:
    async def api(request: web.Request, body: Any) -> web.StreamResponse:
        return web.Response(status=204)

    async with Receiver(api) as discord:
        outcome = await send("discord", {"webhook_url": discord.url + "/api/webhooks/1/tok"})
        assert outcome.ok, outcome.error
        body = discord.requests[0].body
        embed = body["embeds"][0]
        assert embed["title"].startswith("[FIRING:1]") and len(embed["title"]) <= 256
        assert "@everyone" in embed["description"] and len(embed["description"]) <= 4096
        assert body["allowed_mentions"] == {"parse": []}
        assert isinstance(embed["color"], int)


def dingtalk_expected_sign(secret: str, timestamp: str) -> str:
    # The algorithm from DingTalk's "customize robot security settings" page, written out
    # independently of the sender.
    string_to_sign = f"{timestamp}\n{secret}"
    code = hmac.new(secret.encode("utf-8"), string_to_sign.encode("utf-8"), hashlib.sha256)
    return base64.b64encode(code.digest()).decode()


@pytest.mark.parametrize("language", ["en", "zh-CN"])
async def test_dingtalk_robot_checks_timestamp_and_signature(language: str) -> None:
    secret = "SEC0123456789abcdef"

    async def robot(request: web.Request, body: Any) -> web.StreamResponse:
        stamp, sign = request.query.get("timestamp", ""), request.query.get("sign", "")
        fresh = stamp.isdigit() and abs(int(stamp) / 1000 - time.time()) < 3600
        if request.query.get("access_token") != "TOKEN" or not fresh:
            return web.json_response({"errcode": 310000, "errmsg": "keywords not in content"})
        if sign != dingtalk_expected_sign(secret, stamp):
            return web.json_response({"errcode": 310000, "errmsg": "sign not match"})
        if body.get("msgtype") != "markdown" or not {"title", "text"} <= set(body["markdown"]):
            return web.json_response({"errcode": 40035, "errmsg": "bad message"})
        return web.json_response({"errcode": 0, "errmsg": "ok"})

    async with Receiver(robot) as ding:
        url = ding.url + "/robot/send?access_token=TOKEN"
        outcome = await send("dingtalk", {"webhook_url": url, "secret": secret}, language)
        assert outcome.ok, outcome.error
        text = ding.requests[0].body["markdown"]["text"]
        assert ("告警" if language == "zh-CN" else "FIRING") in text
        # A wrong secret is refused by the robot, and that is not retried.
        outcome = await send("dingtalk", {"webhook_url": url, "secret": "wrong"}, language)
        assert not outcome.ok and not outcome.retry and "sign not match" in (outcome.error or "")


def test_dingtalk_sign_is_url_encoded() -> None:
    sign = dingtalk_sign("secret", 1700000000000)
    assert "%" in sign or sign.isalnum()
    assert "+" not in sign and "/" not in sign and "=" not in sign


async def test_feishu_bot_checks_the_signature_in_the_body() -> None:
    secret = "feishu-secret"

    async def bot(request: web.Request, body: Any) -> web.StreamResponse:
        stamp = body.get("timestamp", "")
        key = f"{stamp}\n{secret}".encode()
        expected = base64.b64encode(hmac.new(key, digestmod=hashlib.sha256).digest()).decode()
        if (
            not stamp.isdigit()
            or abs(int(stamp) - time.time()) > 3600
            or body.get("sign") != expected
        ):
            return web.json_response(
                {"code": 19021, "msg": "sign match fail or timestamp is not within one hour"}
            )
        post = body["content"]["post"]
        lang = next(iter(post))
        if body["msg_type"] != "post" or not post[lang]["title"] or not post[lang]["content"]:
            return web.json_response({"code": 9499, "msg": "Bad Request"})
        return web.json_response({"code": 0, "msg": "success", "data": {}})

    async with Receiver(bot) as feishu:
        url = feishu.url + "/open-apis/bot/v2/hook/abc"
        outcome = await send("feishu", {"webhook_url": url, "secret": secret}, "zh-CN")
        assert outcome.ok, outcome.error
        post = feishu.requests[0].body["content"]["post"]["zh_cn"]
        assert post["title"].startswith("[告警:1]")
        assert all(item[0]["tag"] == "text" for item in post["content"])
        outcome = await send("feishu", {"webhook_url": url, "secret": "nope"})
        assert not outcome.ok and "19021" in (outcome.error or "")
    assert feishu_sign(secret, 1) != feishu_sign("other", 1)


async def test_wecom_robot_gets_markdown_within_4096_bytes() -> None:
    async def robot(request: web.Request, body: Any) -> web.StreamResponse:
        ok = body.get("msgtype") == "markdown" and request.query.get("key") == "KEY"
        return web.json_response({"errcode": 0 if ok else 93000, "errmsg": "ok"})

    async with Receiver(robot) as wecom:
        outcome = await send("wecom", {"webhook_url": wecom.url + "/cgi-bin/webhook/send?key=KEY"})
        assert outcome.ok, outcome.error
        content = wecom.requests[0].body["markdown"]["content"]
        assert content.startswith("**[FIRING:1]") and len(content.encode()) <= 4096


async def test_ntfy_gotify_and_bark_get_their_json_shapes() -> None:
    async def bark_api(request: web.Request, body: Any) -> web.StreamResponse:
        return web.json_response({"code": 200, "message": "success", "timestamp": 1})

    async with Receiver() as ntfy, Receiver() as gotify, Receiver(bark_api) as bark:
        ok = await send("ntfy", {"server_url": ntfy.url, "topic": "alerts", "token": "tk_1"})
        assert ok.ok, ok.error
        req = ntfy.requests[0]
        assert req.path == "/" and req.headers["Authorization"] == "Bearer tk_1"
        assert req.body["topic"] == "alerts" and req.body["priority"] == 4
        assert req.body["title"].startswith("[FIRING:1]") and req.body["tags"] == ["rotating_light"]

        ok = await send("gotify", {"server_url": gotify.url, "app_token": "AbC"})
        assert ok.ok, ok.error
        req = gotify.requests[0]
        assert req.path == "/message" and req.headers["X-Gotify-Key"] == "AbC"
        assert {"title", "message", "priority"} <= set(req.body)

        ok = await send("bark", {"server_url": bark.url, "device_key": "dev"}, "zh-CN")
        assert ok.ok, ok.error
        req = bark.requests[0]
        assert req.path == "/push" and req.body["device_key"] == "dev"
        assert req.body["title"].startswith("[告警:1]") and "开始时间" in req.body["body"]


async def test_a_host_name_that_resolves_to_loopback_is_refused_by_default() -> None:
    async with Receiver() as hook:
        guard = UrlGuard.from_list([])  # nothing private allowed
        async with OutboxWorker(cast(asyncpg.Pool, None), guard, timeout=5) as worker:
            channel = Channel(1, "hook", "webhook", {"url": f"http://localhost:{hook.port}/"})
            outcome = await worker.send(channel, payload(), time.time())
        assert not outcome.ok and outcome.status == "blocked" and not outcome.retry
        assert "localhost resolves to" in (outcome.error or "")
        assert hook.requests == []


def test_templates_run_sandboxed_and_cannot_reach_python_internals() -> None:
    from vpsmon.collector.notify.templates import TemplateError, render

    with pytest.raises(TemplateError, match="cannot render"):
        render(
            payload(),
            fmt="text",
            body_template="{{ ''.__class__.__mro__[1].__subclasses__() }}",
        )
    with pytest.raises(TemplateError, match="line 1"):
        render(payload(), fmt="text", title_template="{% if %}")
    html = render(payload(), fmt="html").body
    assert "&lt;script&gt;" in html and "<script>" not in html
