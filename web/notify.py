"""Notifications in the UI and the JSON API (issue #6): channels, routing, silences, alerts,
the notification log.

Who may do what (docs/notifications.md, "Security"): admins manage channels (each one is an
outbound request target: SSRF), the routing tree and subscriptions; operators and admins
create and expire silences, send tests, post alerts and read the log; every signed-in user
reads the alerts and silences of the servers they may see. Secrets in channel settings
are never sent back to the browser.

Pages: /notify/alerts, /notify/channels (+ /new, /{id}/edit, /{id}/test, /{id}/delete),
/notify/routing, /notify/silences (+ /{id}/expire), /notify/log.
API: GET/POST /api/notify/alerts, GET/POST /api/notify/silences,
DELETE /api/notify/silences/{id}, GET /api/notify/channels, POST /api/notify/channels/{id}/test,
GET /api/notify/log.
"""

from __future__ import annotations

import contextlib
import json
import logging
import re
from collections.abc import AsyncIterator, Mapping
from typing import Any, Literal

import asyncpg
from aiohttp import web

from vpsmon.collector.accounts import role_allows
from vpsmon.collector.notify import store
from vpsmon.collector.notify.alerts import format_time
from vpsmon.collector.notify.channels import (
    KINDS,
    SettingsError,
    public_settings,
    validate_settings,
)
from vpsmon.collector.notify.matchers import MatcherError, parse_matchers
from vpsmon.collector.notify.routing import RoutingError, check_receivers, parse_routing
from vpsmon.collector.notify.service import NotifyService
from vpsmon.collector.notify.silences import (
    Silence,
    SilenceError,
    new_silence,
    parse_postable_silence,
)
from vpsmon.collector.notify.store import Channel
from vpsmon.collector.notify.templates import TemplateError, compile_template, sample_payload
from vpsmon.collector.notify.templates import render as render_message
from vpsmon.config import parse_duration
from vpsmon.web import access
from vpsmon.web.keys import CONFIG, HEAD, POOL, TRAFFIC

log = logging.getLogger("vpsmon.web.notify")

NOTIFY = web.AppKey("notify", NotifyService)
NAME_CHARS = "A-Za-z0-9_.-"


def setup(app: web.Application, service: NotifyService | None) -> None:
    """Register the routes; without a service (web tests), run one for the app's lifetime."""
    if service is not None:
        app[NOTIFY] = service
    else:
        app.cleanup_ctx.append(_own_service)
    app.on_startup.append(_connect_traffic)
    r = app.router
    r.add_get("/notify", notify_home)
    r.add_get("/notify/alerts", alerts_page)
    r.add_get("/notify/channels", channels_page)
    r.add_get("/notify/channels/new", channel_form)
    r.add_post("/notify/channels/new", channel_submit)
    r.add_get(r"/notify/channels/{id:\d+}/edit", channel_form)
    r.add_post(r"/notify/channels/{id:\d+}/edit", channel_submit)
    r.add_post(r"/notify/channels/{id:\d+}/test", channel_test)
    r.add_post(r"/notify/channels/{id:\d+}/delete", channel_delete)
    r.add_get("/notify/routing", routing_page)
    r.add_post("/notify/routing", routing_submit)
    r.add_post("/notify/subscriptions", subscription_add)
    r.add_post(r"/notify/subscriptions/{id:\d+}/delete", subscription_delete)
    r.add_get("/notify/silences", silences_page)
    r.add_post("/notify/silences", silence_submit)
    r.add_post(r"/notify/silences/{id}/expire", silence_expire)
    r.add_get("/notify/log", log_page)
    r.add_get("/api/notify/alerts", api_alerts)
    r.add_post("/api/notify/alerts", api_post_alerts)
    r.add_get("/api/notify/silences", api_silences)
    r.add_post("/api/notify/silences", api_post_silence)
    r.add_delete(r"/api/notify/silences/{id}", api_delete_silence)
    r.add_get("/api/notify/channels", api_channels)
    r.add_post(r"/api/notify/channels/{id:\d+}/test", api_channel_test)
    r.add_get("/api/notify/log", api_log)


async def _own_service(app: web.Application) -> AsyncIterator[None]:
    service = NotifyService(app[POOL], app[CONFIG])
    app[NOTIFY] = service
    async with service.running(app[HEAD]):
        yield


async def _connect_traffic(app: web.Application) -> None:
    with contextlib.suppress(KeyError):
        app[NOTIFY].usage = app[TRAFFIC].usage


async def notify_home(request: web.Request) -> web.Response:
    raise web.HTTPFound("/notify/alerts")


def _render(request: web.Request, template: str, status: int = 200, **ctx: Any) -> web.Response:
    from vpsmon.web.app import render  # here: web.app imports this module

    return render(request, template, status, **ctx)


def _service(request: web.Request) -> NotifyService:
    return request.app[NOTIFY]


def _pool(request: web.Request) -> asyncpg.Pool:
    return request.app[POOL]


def _now(request: web.Request) -> float:
    return _service(request).clock()


def _id(request: web.Request) -> int:
    return int(request.match_info["id"])


def _json_error(status: type[web.HTTPException], message: str) -> web.HTTPException:
    return status(text=json.dumps({"error": message}), content_type="application/json")


# -- alerts -----------------------------------------------------------------------------------


async def _history(pool: asyncpg.Pool, limit: int = 200) -> list[dict[str, Any]]:
    rows = await pool.fetch(
        "SELECT fingerprint, starts_at, ends_at, alertname, labels, annotations"
        " FROM notify_alert_history ORDER BY starts_at DESC LIMIT $1",
        limit,
    )
    return [
        {
            "fingerprint": r["fingerprint"],
            "alertname": r["alertname"],
            "labels": json.loads(r["labels"]),
            "summary": json.loads(r["annotations"]).get("summary", ""),
            "startsAt": format_time(r["starts_at"].timestamp()),
            "endsAt": format_time(r["ends_at"].timestamp()) if r["ends_at"] else None,
        }
        for r in rows
    ]


async def _visible_alerts(request: web.Request) -> list[dict[str, Any]]:
    """Current alerts, only those about servers the user may see (per-server access)."""
    visible = await access.request_visible_ids(request)
    dispatcher = _service(request).dispatcher
    return [
        a
        for a in dispatcher.alert_states(_now(request))
        if dispatcher.visible_to(visible, a["labels"])
    ]


async def alerts_page(request: web.Request) -> web.Response:
    user = access.require_user(request)
    visible = await access.request_visible_ids(request)
    dispatcher = _service(request).dispatcher
    history = [
        h for h in await _history(_pool(request)) if dispatcher.visible_to(visible, h["labels"])
    ]
    return _render(
        request,
        "notify_alerts.html",
        tab="alerts",
        alerts=await _visible_alerts(request),
        history=history,
        can_silence=role_allows(user.role, "operator"),
    )


async def api_alerts(request: web.Request) -> web.Response:
    access.require_user(request)
    return web.json_response(await _visible_alerts(request))


async def api_post_alerts(request: web.Request) -> web.Response:
    """Alertmanager's POST /api/v2/alerts: scripts (or a Prometheus) can send alerts too."""
    access.require_role(request, "operator")
    try:
        body = await request.json()
    except ValueError:
        raise _json_error(web.HTTPBadRequest, "expected a JSON list of alerts") from None
    if not isinstance(body, list):
        raise _json_error(web.HTTPBadRequest, "expected a JSON list of alerts")
    await _service(request).submit(body)
    return web.json_response({"accepted": len(body)})


# -- channels ---------------------------------------------------------------------------------


async def _last_attempts(pool: asyncpg.Pool) -> dict[int, asyncpg.Record]:
    rows = await pool.fetch(
        "SELECT DISTINCT ON (channel_id) channel_id, started_at, ok, status, error"
        " FROM notify_attempts ORDER BY channel_id, id DESC"
    )
    return {r["channel_id"]: r for r in rows}


async def channels_page(
    request: web.Request, result: dict[str, Any] | None = None, status: int = 200
) -> web.Response:
    user = access.require_user(request)
    pool = _pool(request)
    channels = await store.list_channels(pool)
    return _render(
        request,
        "notify_channels.html",
        status,
        tab="channels",
        channels=channels,
        kinds=KINDS,
        last=await _last_attempts(pool),
        is_admin=user.role == "admin",
        can_test=role_allows(user.role, "operator"),
        result=result,
    )


def _form_channel(
    form: Mapping[str, Any], old: Channel | None, user: str
) -> tuple[Channel, dict[str, str]]:
    """A channel from the form, and the errors by field (nothing is saved when there are any)."""
    errors: dict[str, str] = {}
    kind = str(form.get("kind", old.kind if old else ""))
    name = str(form.get("name", "")).strip()
    if not re.fullmatch(f"[{NAME_CHARS}]{{1,64}}", name):
        errors["name"] = "1–64 letters, digits, _ . -"
    settings: dict[str, Any] = {}
    if kind not in KINDS:
        errors["kind"] = f"unknown kind {kind!r}"
    else:
        raw = {f.name: str(form.get(f"s_{f.name}", "")) for f in KINDS[kind].fields}
        try:
            settings = validate_settings(
                kind, raw, old.settings if old and old.kind == kind else None
            )
        except SettingsError as err:
            field, _, message = str(err).partition(": ")
            errors[f"s_{field}"] = message or str(err)
    language = str(form.get("language", "en"))
    if language not in ("en", "zh-CN"):
        errors["language"] = "en or zh-CN"
    templates: dict[str, str | None] = {}
    for key in ("title_template", "body_template"):
        text = str(form.get(key, "")).replace("\r\n", "\n").strip()
        if len(text) > 20000:
            errors[key] = "too long"
        elif text:
            try:
                compile_template(text)
            except TemplateError as err:
                errors[key] = str(err)
        templates[key] = text or None
    channel = Channel(
        id=old.id if old else 0,
        name=name,
        kind=kind,
        settings=settings,
        send_resolved=form.get("send_resolved") == "on",
        language=language,
        title_template=templates["title_template"],
        body_template=templates["body_template"],
        enabled=form.get("enabled") == "on",
        catch_all=form.get("catch_all") == "on",
        created_by=old.created_by if old else user,
    )
    return channel, errors


def _preview(channel: Channel, now: float) -> dict[str, str]:
    kind = KINDS.get(channel.kind)
    fmt = kind.fmt if kind else "text"
    try:
        message = render_message(
            sample_payload(now, channel.name or "preview"),
            fmt=fmt,
            language=channel.language,
            title_template=channel.title_template,
            body_template=channel.body_template,
        )
    except TemplateError as err:
        return {"error": str(err)}
    return {"title": message.title, "body": message.body, "format": fmt}


async def channel_form(
    request: web.Request,
    channel: Channel | None = None,
    errors: dict[str, str] | None = None,
    status: int = 200,
) -> web.Response:
    access.require_role(request, "admin")
    if channel is None:
        if "id" in request.match_info:
            channel = await store.get_channel(_pool(request), _id(request))
            if channel is None:
                raise web.HTTPNotFound(text="no such channel")
        else:
            kind = request.query.get("kind", "webhook")
            if kind not in KINDS:
                raise web.HTTPBadRequest(text=f"unknown channel kind {kind!r}")
            channel = Channel(
                0, "", kind, {f.name: f.default for f in KINDS[kind].fields if f.default}
            )
    shown = public_settings(channel.kind, channel.settings)
    return _render(
        request,
        "notify_channel_form.html",
        status,
        tab="channels",
        channel=channel,
        kind=KINDS[channel.kind],
        shown=shown,
        errors=errors or {},
        preview=_preview(channel, _now(request)),
    )


async def channel_submit(request: web.Request) -> web.Response:
    user = access.require_role(request, "admin")
    pool = _pool(request)
    old = None
    if "id" in request.match_info:
        old = await store.get_channel(pool, _id(request))
        if old is None:
            raise web.HTTPNotFound(text="no such channel")
    form = await request.post()
    channel, errors = _form_channel(form, old, user.username)
    if form.get("action") == "preview" or errors:
        return await channel_form(request, channel, errors, 400 if errors else 200)
    try:
        channel_id = await store.save_channel(pool, channel)
    except asyncpg.UniqueViolationError:
        return await channel_form(
            request, channel, {"name": "a channel with this name exists"}, 409
        )
    await access.audit(
        request,
        "notify.channel." + ("update" if old else "create"),
        detail={"channel": channel.name, "kind": channel.kind, "id": channel_id},
    )
    await _service(request).dispatcher.refresh()
    raise web.HTTPFound("/notify/channels")


async def _send_test(request: web.Request, channel_id: int) -> dict[str, Any]:
    access.require_role(request, "operator")
    channel = await store.get_channel(_pool(request), channel_id)
    if channel is None:
        raise web.HTTPNotFound(text="no such channel")
    service = _service(request)
    now = _now(request)
    outcome = await service.worker.send(channel, sample_payload(now, channel.name), now)
    await service.worker.record_attempt(None, channel.id, now, outcome)
    await access.audit(
        request, "notify.channel.test", detail={"channel": channel.name, "ok": outcome.ok}
    )
    return {
        "channel": channel.name,
        "ok": outcome.ok,
        "status": outcome.status,
        "error": outcome.error,
        "duration_ms": int(outcome.duration * 1000),
    }


async def channel_test(request: web.Request) -> web.Response:
    result = await _send_test(request, _id(request))
    return await channels_page(request, result)


async def api_channel_test(request: web.Request) -> web.Response:
    result = await _send_test(request, _id(request))
    return web.json_response(result, status=200 if result["ok"] else 502)


async def channel_delete(request: web.Request) -> web.Response:
    access.require_role(request, "admin")
    channel = await store.get_channel(_pool(request), _id(request))
    if channel is None:
        raise web.HTTPNotFound(text="no such channel")
    await store.delete_channel(_pool(request), channel.id)
    await access.audit(request, "notify.channel.delete", detail={"channel": channel.name})
    await _service(request).dispatcher.refresh()
    raise web.HTTPFound("/notify/channels")


async def api_channels(request: web.Request) -> web.Response:
    access.require_user(request)
    return web.json_response(
        [
            {
                "id": c.id,
                "name": c.name,
                "kind": c.kind,
                "enabled": c.enabled,
                "send_resolved": c.send_resolved,
                "catch_all": c.catch_all,
                "language": c.language,
                "settings": public_settings(c.kind, c.settings),
            }
            for c in await store.list_channels(_pool(request))
        ]
    )


# -- routing and subscriptions ------------------------------------------------------------------


async def routing_page(
    request: web.Request,
    document: str | None = None,
    error: str | None = None,
    probe: str = "",
    status: int = 200,
) -> web.Response:
    user = access.require_user(request)
    pool = _pool(request)
    service = _service(request)
    text = document if document is not None else await store.load_routing(pool)
    probe = probe or request.query.get("labels", "")
    reached: list[str] | None = None
    probe_error = None
    if probe:
        try:
            labels = {m.name: m.value for m in parse_matchers(probe) if m.op == "="}
            routes = service.dispatcher.routes_for(labels)
            reached = sorted(
                {c.name for r in routes for c in service.dispatcher.channels_for(r.receiver)}
            )
        except MatcherError as err:
            probe_error = str(err)
    return _render(
        request,
        "notify_routing.html",
        status,
        tab="routing",
        document=text,
        error=error,
        probe=probe,
        reached=reached,
        probe_error=probe_error,
        is_admin=user.role == "admin",
        subscriptions=await store.list_subscriptions(pool),
        channels=await store.list_channels(pool),
        users=await pool.fetch("SELECT id, username FROM users ORDER BY username"),
    )


async def routing_submit(request: web.Request) -> web.Response:
    user = access.require_role(request, "admin")
    form = await request.post()
    text = str(form.get("document", "")).replace("\r\n", "\n")
    if len(text) > 200_000:
        return await routing_page(request, text, "the document is too long", status=400)
    try:
        parse_routing(text)
    except RoutingError as err:
        return await routing_page(request, text, str(err), status=400)
    channels = await store.list_channels(_pool(request))
    unknown = check_receivers(parse_routing(text), [c.name for c in channels])
    if unknown:
        return await routing_page(
            request,
            text,
            f"unknown receiver(s): {', '.join(unknown)} (no such channel)",
            status=400,
        )
    await store.save_routing(_pool(request), text, user.username)
    await access.audit(request, "notify.routing.update")
    await _service(request).dispatcher.refresh()
    raise web.HTTPFound("/notify/routing?saved=1")


async def subscription_add(request: web.Request) -> web.Response:
    access.require_role(request, "admin")
    form = await request.post()
    try:
        user_id, channel_id = int(str(form.get("user_id"))), int(str(form.get("channel_id")))
        matchers = parse_matchers(str(form.get("matchers", "")))
    except (ValueError, MatcherError) as err:
        return await routing_page(request, error=f"subscription: {err}", status=400)
    try:
        await store.add_subscription(_pool(request), user_id, channel_id, matchers)
    except asyncpg.ForeignKeyViolationError:
        return await routing_page(
            request, error="subscription: no such user or channel", status=400
        )
    await access.audit(
        request, "notify.subscription.create", detail={"user_id": user_id, "channel_id": channel_id}
    )
    await _service(request).dispatcher.refresh()
    raise web.HTTPFound("/notify/routing")


async def subscription_delete(request: web.Request) -> web.Response:
    access.require_role(request, "admin")
    if not await store.delete_subscription(_pool(request), _id(request), None):
        raise web.HTTPNotFound(text="no such subscription")
    await access.audit(request, "notify.subscription.delete", detail={"id": _id(request)})
    await _service(request).dispatcher.refresh()
    raise web.HTTPFound("/notify/routing")


# -- silences ---------------------------------------------------------------------------------


async def silences_page(
    request: web.Request,
    error: str | None = None,
    values: Mapping[str, str] | None = None,
    status: int = 200,
) -> web.Response:
    user = access.require_user(request)
    now = _now(request)
    silences = await _visible_silences(request, since=now - 7 * 86400)
    visible = await access.request_visible_ids(request)
    dispatcher = _service(request).dispatcher
    return _render(
        request,
        "notify_silences.html",
        status,
        tab="silences",
        silences=[s.to_json(now) for s in silences],
        can_edit=role_allows(user.role, "operator"),
        # Silences this user may expire (the creation rule, _expire_permitted_silence); the
        # others get a disabled button saying why instead of one that answers 403.
        expirable={s.id for s in silences if dispatcher.silence_confined_to(visible, s)},
        error=error,
        values=values
        or {"matchers": request.query.get("matchers", ""), "duration": "2h", "comment": ""},
    )


async def _visible_silences(request: web.Request, since: float | None = None) -> list[Silence]:
    """Silences, only those that could mute an alert the user may see (per-server access): a
    silence pinning instance/server_id to servers the user was not granted is not listed."""
    visible = await access.request_visible_ids(request)
    dispatcher = _service(request).dispatcher
    return [
        s
        for s in await store.list_silences(_pool(request), since=since)
        if dispatcher.silence_visible_to(visible, s)
    ]


ExpireResult = Literal["expired", "missing", "forbidden"]


async def _expire_permitted_silence(request: web.Request, silence_id: str) -> ExpireResult:
    """Expire a silence if the user may. A user who does not see every server gets "missing"
    (a 404, as for an id that does not exist) for a silence they may not see, and "forbidden"
    (a 403, nothing changes) for a visible one they could not have created: fleet-wide or
    regex silences also mute alerts of servers not granted to them, and expiring one would
    un-mute those (the same rule as creating, Dispatcher.silence_confined_to)."""
    visible = await access.request_visible_ids(request)
    if visible is not None:
        silence = await store.get_silence(_pool(request), silence_id)
        dispatcher = _service(request).dispatcher
        if silence is None or not dispatcher.silence_visible_to(visible, silence):
            return "missing"
        if not dispatcher.silence_confined_to(visible, silence):
            return "forbidden"
    try:
        expired = await store.expire_silence(_pool(request), silence_id, _now(request))
    except asyncpg.DataError:
        expired = False
    return "expired" if expired else "missing"


CONFINED_ERROR = (
    'you may silence only servers granted to you: add a matcher server_id="ID" or'
    ' instance="HOST:PORT" naming one of them'
)
EXPIRE_CONFINED_ERROR = (
    "you may expire only silences pinned to a server granted to you (by a matcher"
    ' server_id="ID" or instance="HOST:PORT"): this one can also mute alerts of servers'
    " not granted to you; ask an admin to expire it"
)


async def _may_create(request: web.Request, silence: Silence) -> bool:
    """A user who does not see every server may only create silences pinned to one of theirs
    (an unpinned or regex silence could mute alerts of servers they were not granted)."""
    visible = await access.request_visible_ids(request)
    return _service(request).dispatcher.silence_confined_to(visible, silence)


async def _after_silence_change(request: web.Request) -> None:
    await _service(request).dispatcher.refresh()


async def silence_submit(request: web.Request) -> web.Response:
    user = access.require_role(request, "operator")
    form = await request.post()
    values = {k: str(form.get(k, "")) for k in ("matchers", "duration", "comment")}
    now = _now(request)
    try:
        matchers = parse_matchers(values["matchers"])
        duration = parse_duration(values["duration"])
        silence = new_silence(
            matchers, now, now + duration, user.username, values["comment"].strip(), now
        )
    except (MatcherError, ValueError) as err:
        return await silences_page(request, str(err), values, 400)
    if not await _may_create(request, silence):
        return await silences_page(request, CONFINED_ERROR, values, 403)
    await store.save_silence(_pool(request), silence)
    await access.audit(
        request, "notify.silence.create", detail={"id": silence.id, "matchers": values["matchers"]}
    )
    await _after_silence_change(request)
    raise web.HTTPFound("/notify/silences")


async def silence_expire(request: web.Request) -> web.Response:
    access.require_role(request, "operator")
    silence_id = request.match_info["id"]
    result = await _expire_permitted_silence(request, silence_id)
    if result == "forbidden":
        return await silences_page(request, EXPIRE_CONFINED_ERROR, status=403)
    if result == "missing":
        raise web.HTTPNotFound(text="no such active silence")
    await access.audit(request, "notify.silence.expire", detail={"id": silence_id})
    await _after_silence_change(request)
    raise web.HTTPFound("/notify/silences")


async def api_silences(request: web.Request) -> web.Response:
    access.require_user(request)
    now = _now(request)
    return web.json_response([s.to_json(now) for s in await _visible_silences(request)])


async def api_post_silence(request: web.Request) -> web.Response:
    """Alertmanager's POST /api/v2/silences body; createdBy is the authenticated user."""
    user = access.require_role(request, "operator")
    try:
        body = await request.json()
    except ValueError:
        raise _json_error(web.HTTPBadRequest, "expected a JSON silence") from None
    try:
        silence = parse_postable_silence(body, _now(request), user.username)
    except SilenceError as err:
        raise _json_error(web.HTTPBadRequest, str(err)) from None
    if not await _may_create(request, silence):
        raise _json_error(web.HTTPForbidden, CONFINED_ERROR)
    await store.save_silence(_pool(request), silence)
    await access.audit(request, "notify.silence.create", detail={"id": silence.id})
    await _after_silence_change(request)
    return web.json_response({"silenceID": silence.id})


async def api_delete_silence(request: web.Request) -> web.Response:
    access.require_role(request, "operator")
    silence_id = request.match_info["id"]
    result = await _expire_permitted_silence(request, silence_id)
    if result == "forbidden":
        raise _json_error(web.HTTPForbidden, EXPIRE_CONFINED_ERROR)
    if result == "missing":
        raise _json_error(web.HTTPNotFound, "no such active silence")
    await access.audit(request, "notify.silence.expire", detail={"id": silence_id})
    await _after_silence_change(request)
    return web.json_response({"expired": silence_id})


# -- the notification log -----------------------------------------------------------------------


async def _log_rows(pool: asyncpg.Pool, limit: int = 200) -> list[dict[str, Any]]:
    rows = await pool.fetch(
        "SELECT o.id, c.name AS channel, c.kind, o.state, o.attempts, o.created_at, o.sent_at,"
        " o.next_attempt_at, o.last_error, o.payload->>'status' AS status,"
        " jsonb_array_length(coalesce(o.payload->'alerts', o.payload->'forward')) AS alerts,"
        " o.payload->'groupLabels' AS group_labels"
        " FROM notify_outbox o JOIN notify_channels c ON c.id = o.channel_id"
        " ORDER BY o.id DESC LIMIT $1",
        limit,
    )
    return [
        {
            "id": r["id"],
            "channel": r["channel"],
            "kind": r["kind"],
            "state": r["state"],
            "attempts": r["attempts"],
            "created": format_time(r["created_at"].timestamp()),
            "sent": format_time(r["sent_at"].timestamp()) if r["sent_at"] else None,
            "next_attempt": format_time(r["next_attempt_at"].timestamp()),
            "error": r["last_error"],
            "status": r["status"] or "forward",
            "alerts": r["alerts"],
            "group": ", ".join(
                f"{k}={v}" for k, v in json.loads(r["group_labels"] or "{}").items()
            ),
        }
        for r in rows
    ]


async def _attempt_rows(pool: asyncpg.Pool, limit: int = 100) -> list[dict[str, Any]]:
    rows = await pool.fetch(
        "SELECT a.outbox_id, c.name AS channel, a.started_at, a.duration_ms, a.ok, a.status,"
        " a.error"
        " FROM notify_attempts a LEFT JOIN notify_channels c ON c.id = a.channel_id"
        " ORDER BY a.id DESC LIMIT $1",
        limit,
    )
    return [
        {
            "outbox_id": r["outbox_id"],
            "channel": r["channel"] or "?",
            "started": format_time(r["started_at"].timestamp()),
            "duration_ms": r["duration_ms"],
            "ok": r["ok"],
            "status": r["status"],
            "error": r["error"],
        }
        for r in rows
    ]


async def log_page(request: web.Request) -> web.Response:
    # The log shows every server's notifications: operators and admins only.
    access.require_role(request, "operator")
    pool = _pool(request)
    return _render(
        request,
        "notify_log.html",
        tab="log",
        rows=await _log_rows(pool),
        attempts=await _attempt_rows(pool),
    )


async def api_log(request: web.Request) -> web.Response:
    access.require_role(request, "operator")
    pool = _pool(request)
    return web.json_response(
        {"outbox": await _log_rows(pool), "attempts": await _attempt_rows(pool)}
    )
