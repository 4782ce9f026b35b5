"""Notifications: alerts in, routed, grouped, silenced and delivered through an outbox.

The one entry point other stages use is a notify function (`AlertSink.submit`): the rule
manager calls it after every evaluation with its firing and just-resolved alerts, shaped as
Alertmanager API v2 postable alerts, exactly as Prometheus sends them to Alertmanager; the
built-in alerts (server offline, traffic quota, expiry) feed the same function.
See docs/notifications.md.
"""

from vpsmon.collector.notify.api import AlertSink, NotifyFunction, PostableAlert

__all__ = ["AlertSink", "NotifyFunction", "PostableAlert"]
