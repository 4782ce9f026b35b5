"""Messages from jinja2 templates: a title and a body per notification, per channel.

Templates run in jinja2's immutable sandbox: an admin-written template can format values but
not reach Python internals. Where the target renders HTML (Telegram, the HTML part of an
email) the environment autoescapes; Slack's mrkdwn gets its own escaping of & < >. The
built-in templates exist in English and Simplified Chinese; the same body template serves
every format through the `strong()` helper (bold in HTML and Markdown, plain in text).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import jinja2
from jinja2.sandbox import ImmutableSandboxedEnvironment
from markupsafe import Markup, escape

from vpsmon.collector.notify.alerts import parse_time

FORMATS = ("text", "markdown", "html", "slack")

TITLE = {
    "en": (
        "[{{ 'FIRING' if status == 'firing' else 'RESOLVED' }}"
        "{% if firing %}:{{ firing|length }}{% endif %}] "
        "{{ group_labels.alertname or common_labels.alertname or alerts[0].labels.alertname }}"
        "{% if common_labels.instance %} {{ common_labels.instance }}{% endif %}"
    ),
    "zh-CN": (
        "[{{ '告警' if status == 'firing' else '已恢复' }}"
        "{% if firing %}:{{ firing|length }}{% endif %}] "
        "{{ group_labels.alertname or common_labels.alertname or alerts[0].labels.alertname }}"
        "{% if common_labels.instance %} {{ common_labels.instance }}{% endif %}"
    ),
}

BODY = {
    "en": """\
{% for a in alerts -%}
{{ strong(("🔥 FIRING" if a.status == "firing" else "✅ RESOLVED") ~ ": " ~ a.labels.alertname) }}\
{% if a.labels.instance %} on {{ a.labels.instance }}{% endif %}
{% if a.annotations.summary %}{{ a.annotations.summary }}
{% endif %}{% if a.annotations.description %}{{ a.annotations.description }}
{% endif %}Severity: {{ a.labels.severity or "none" }}
Started: {{ a.starts_at }}{% if a.status == "resolved" %}
Resolved: {{ a.ends_at }}{% endif %}
Labels: {{ a.labels_text }}
{% if not loop.last %}
{% endif %}{% endfor %}""",
    "zh-CN": """\
{% for a in alerts -%}
{{ strong(("🔥 告警" if a.status == "firing" else "✅ 已恢复") ~ "：" ~ a.labels.alertname) }}\
{% if a.labels.instance %}（{{ a.labels.instance }}）{% endif %}
{% if a.annotations.summary %}{{ a.annotations.summary }}
{% endif %}{% if a.annotations.description %}{{ a.annotations.description }}
{% endif %}级别：{{ a.labels.severity or "无" }}
开始时间：{{ a.starts_at }}{% if a.status == "resolved" %}
恢复时间：{{ a.ends_at }}{% endif %}
标签：{{ a.labels_text }}
{% if not loop.last %}
{% endif %}{% endfor %}""",
}


class TemplateError(ValueError):
    """A template that does not compile or fails to render; the message says where."""


@dataclass(frozen=True)
class Message:
    title: str
    body: str


def _slack_escape(value: Any) -> Any:
    # https://api.slack.com/reference/surfaces/formatting#escaping
    if isinstance(value, str):
        return value.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
    return value


def _strong(fmt: str) -> Callable[[Any], Any]:
    def strong(text: Any) -> Any:
        if fmt == "html":
            return Markup("<b>%s</b>") % text
        if fmt in ("markdown", "slack"):
            return f"**{text}**" if fmt == "markdown" else f"*{text}*"
        return text

    return strong


def environment(fmt: str) -> jinja2.Environment:
    if fmt not in FORMATS:
        raise ValueError(f"unknown message format {fmt!r}")
    env = ImmutableSandboxedEnvironment(
        autoescape=fmt == "html",
        undefined=jinja2.ChainableUndefined,
        finalize=_slack_escape if fmt == "slack" else None,
        trim_blocks=False,
        keep_trailing_newline=False,
    )
    env.globals["strong"] = _strong(fmt)
    return env


def _when(value: str) -> str:
    seconds = parse_time(value, "time")
    if seconds is None:
        return ""
    return datetime.fromtimestamp(seconds, UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def context(payload: Mapping[str, Any], language: str) -> dict[str, Any]:
    """What a template sees: the webhook payload, with times formatted for people."""
    alerts = []
    for raw in payload.get("alerts", []):
        labels = dict(raw.get("labels", {}))
        alerts.append(
            {
                "status": raw.get("status", "firing"),
                "labels": labels,
                "annotations": dict(raw.get("annotations", {})),
                "starts_at": _when(raw.get("startsAt", "")),
                "ends_at": _when(raw.get("endsAt", "")),
                "generator_url": raw.get("generatorURL", ""),
                "fingerprint": raw.get("fingerprint", ""),
                "labels_text": ", ".join(
                    f"{k}={v}" for k, v in sorted(labels.items()) if k != "alertname"
                ),
            }
        )
    return {
        "status": payload.get("status", "firing"),
        "receiver": payload.get("receiver", ""),
        "group_labels": dict(payload.get("groupLabels", {})),
        "common_labels": dict(payload.get("commonLabels", {})),
        "common_annotations": dict(payload.get("commonAnnotations", {})),
        "external_url": payload.get("externalURL", ""),
        "alerts": alerts,
        "firing": [a for a in alerts if a["status"] == "firing"],
        "resolved": [a for a in alerts if a["status"] == "resolved"],
        "lang": language,
    }


def compile_template(source: str, fmt: str = "text") -> jinja2.Template:
    try:
        return environment(fmt).from_string(source)
    except jinja2.TemplateSyntaxError as err:
        raise TemplateError(f"line {err.lineno}: {err.message}") from None


def render_one(source: str, fmt: str, ctx: Mapping[str, Any]) -> str:
    template = compile_template(source, fmt)
    try:
        return template.render(**ctx).strip()
    except jinja2.TemplateError as err:  # includes SecurityError from the sandbox
        raise TemplateError(f"cannot render: {err}") from None
    except (TypeError, ValueError, KeyError, AttributeError, ZeroDivisionError) as err:
        raise TemplateError(f"cannot render: {type(err).__name__}: {err}") from None


def render(
    payload: Mapping[str, Any],
    *,
    fmt: str,
    language: str = "en",
    title_template: str | None = None,
    body_template: str | None = None,
) -> Message:
    lang = language if language in TITLE else "en"
    ctx = context(payload, lang)
    title = render_one(title_template or TITLE[lang], "text", ctx)
    body = render_one(body_template or BODY[lang], fmt, ctx)
    return Message(" ".join(title.split()), body)


def sample_payload(now: float, receiver: str = "preview") -> dict[str, Any]:
    """A firing and a resolved alert, for "send test" and the template preview."""
    from vpsmon.collector.notify.alerts import format_time

    def alert(name: str, status: str, severity: str, summary: str) -> dict[str, Any]:
        return {
            "status": status,
            "labels": {"alertname": name, "instance": "web-1:9190", "severity": severity},
            "annotations": {"summary": summary},
            "startsAt": format_time(now - 600),
            "endsAt": format_time(now) if status == "resolved" else "0001-01-01T00:00:00Z",
            "generatorURL": "",
            "fingerprint": "",
        }

    alerts: Sequence[dict[str, Any]] = [
        alert("VpsmonTest", "firing", "warning", "Test notification from vpsmon"),
        alert("HighLoad", "resolved", "critical", "Load average above 4 for 5 minutes"),
    ]
    return {
        "version": "4",
        "groupKey": "test",
        "truncatedAlerts": 0,
        "status": "firing",
        "receiver": receiver,
        "groupLabels": {"alertname": "VpsmonTest"},
        "commonLabels": {"instance": "web-1:9190"},
        "commonAnnotations": {},
        "externalURL": "",
        "alerts": list(alerts),
    }


__all__ = ["Message", "TemplateError", "escape", "render", "sample_payload"]
