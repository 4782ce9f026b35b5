"""The input contract of the notify stage (COMMON.md team map, issue #6).

An alert is a dict in Alertmanager's API v2 "postable alert" shape
(https://prometheus.io/docs/alerting/latest/clients/)::

    {
      "labels": {"alertname": "HighLoad", "instance": "10.0.0.5:9190", ...},
      "annotations": {"summary": "...", "description": "..."},
      "startsAt": "2026-11-21T10:00:00Z",     # RFC 3339; optional
      "endsAt": "2026-11-21T10:05:00Z",       # optional; in the past = resolved
      "generatorURL": "http://collector/rules#HighLoad"   # optional
    }

Callers re-send every active alert on each evaluation (as Prometheus does), with `endsAt`
a little in the future while it fires, and once more with `endsAt` in the past when it
resolves. The sink deduplicates by label set; re-sending is what keeps an alert alive.
Invalid alerts are dropped with a log line naming the problem; the valid ones in the same
call are still accepted, so one bad rule never silences the others.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any, Protocol

PostableAlert = Mapping[str, Any]

NotifyFunction = Callable[[Sequence[PostableAlert]], Awaitable[None]]
"""What the rule manager is handed: `await notify([alert, ...])`."""


class AlertSink(Protocol):
    async def submit(self, alerts: Sequence[PostableAlert]) -> None:
        """Accept firing and just-resolved alerts (see the module docstring)."""
