"""Alert states in PostgreSQL (sql/070), and restoring them after a restart.

After each evaluation a group writes the alerts whose state changed (new, pending, firing,
resolved, sent, gone) and its evaluation time, in one transaction; value and annotation
updates alone are not written (they are recomputed at the next evaluation anyway).

On start, `restore` puts the saved alerts back before the first evaluation, following
Prometheus' for-state restore (rules/group.go RestoreForState) with the saved state in place
of the ALERTS_FOR_STATE series:

- a firing alert stays firing with its original start, so it is not announced again;
- a resolved alert still waiting to be sent stays so;
- a pending alert keeps the time it had already spent pending: its activeAt moves forward by
  the time the collector was away, and if less than the grace period (10 min) would remain,
  it gets the grace period, as Prometheus does; after an outage longer than the outage
  tolerance (1 h) pending alerts start afresh.
"""

from __future__ import annotations

import hashlib
import json
import logging
from datetime import UTC, datetime
from typing import Any

import asyncpg

from vpsmon.collector.rules.alerting import Alert, AlertingRule, AlertState
from vpsmon.collector.rules.group import RuleGroup
from vpsmon.collector.rules.model import Labels

log = logging.getLogger("vpsmon.rules")

FOR_OUTAGE_TOLERANCE = 3600.0  # Prometheus' --rules.alert.for-outage-tolerance
FOR_GRACE_PERIOD = 600.0  # Prometheus' --rules.alert.for-grace-period


def _hash(labels: dict[str, str]) -> bytes:
    return hashlib.sha256(json.dumps(sorted(labels.items())).encode()).digest()


def _dt(seconds: float | None) -> datetime | None:
    return None if seconds is None else datetime.fromtimestamp(seconds, UTC)


def _ts(value: datetime | None) -> float | None:
    return None if value is None else value.timestamp()


def _signature(alert: Alert) -> tuple[Any, ...]:
    return (
        alert.state,
        alert.active_at,
        alert.fired_at,
        alert.resolved_at,
        alert.last_sent_at,
        alert.keep_firing_since,
    )


def restore_alert(alert: Alert, hold: float, down_at: float, now: float) -> Alert | None:
    """The alert to resume with after the collector was away from ``down_at`` to ``now``."""
    if alert.state != AlertState.PENDING:
        return alert
    if now - down_at > FOR_OUTAGE_TOLERANCE:
        return None
    spent = down_at - alert.active_at
    remaining = hold - spent
    if remaining <= 0:
        return alert  # was due to fire: the next evaluation fires it if still true
    if remaining < FOR_GRACE_PERIOD and hold >= FOR_GRACE_PERIOD:
        alert.active_at = now + FOR_GRACE_PERIOD - hold
    else:
        alert.active_at += now - down_at
    return alert


def _owner(rules: list[AlertingRule], labels: dict[str, str]) -> AlertingRule:
    """Of the rules sharing a name, the one whose fixed labels the alert carries."""
    for rule in rules:
        fixed = {k: v for k, v in rule.labels.items() if "{{" not in v}
        if all(labels.get(k) == v for k, v in fixed.items()):
            return rule
    return rules[0]


class AlertStore:
    def __init__(self, pool: asyncpg.Pool) -> None:
        self.pool = pool
        self._saved: dict[str, dict[tuple[str, bytes], tuple[Any, ...]]] = {}
        # Per group, the labels hash of each alert by its key in rule.active (labels_key of its
        # labels, which never change): saved after every evaluation, an alert storm would
        # otherwise hash ~100,000 label sets each time (issue #8).
        self._digests: dict[str, dict[Labels, bytes]] = {}

    async def restore(self, group: RuleGroup, now: float) -> int:
        """Put saved alerts back into ``group``'s rules; returns how many."""
        async with self.pool.acquire() as conn:
            last = await conn.fetchval(
                "SELECT last_evaluation FROM rule_group_state WHERE group_key = $1", group.key
            )
            rows = await conn.fetch("SELECT * FROM rule_alerts WHERE group_key = $1", group.key)
        rules: dict[str, list[AlertingRule]] = {}
        for each in group.alerting_rules():
            rules.setdefault(each.name, []).append(each)
        down_at = _ts(last) or now
        restored = 0
        saved: dict[tuple[str, bytes], tuple[Any, ...]] = {}
        for row in rows:
            candidates = rules.get(row["rule_name"])
            if not candidates:
                continue
            labels = json.loads(row["labels"])
            rule = _owner(candidates, labels)
            alert = Alert(
                labels=labels,
                annotations=json.loads(row["annotations"]),
                state=AlertState(row["state"]),
                active_at=row["active_at"].timestamp(),
                value=row["value"],
                fired_at=_ts(row["fired_at"]),
                resolved_at=_ts(row["resolved_at"]),
                last_sent_at=_ts(row["last_sent_at"]),
                keep_firing_since=_ts(row["keep_firing_since"]),
            )
            resumed = restore_alert(alert, rule.hold, down_at, now)
            if resumed is None:
                continue
            rule.active[tuple(sorted(labels.items()))] = resumed
            saved[(rule.name, bytes(row["labels_hash"]))] = _signature(resumed)
            restored += 1
        for rule in group.alerting_rules():
            rule.restored = True
        self._saved[group.key] = saved
        if restored:
            log.info("restored alert states group=%s alerts=%d", group.name, restored)
        return restored

    async def save(self, group: RuleGroup) -> None:
        """Write what changed since the last save (nothing when nothing did)."""
        before = self._saved.get(group.key, {})
        digests = self._digests.get(group.key, {})
        digests_now: dict[Labels, bytes] = {}
        # One pass over the alerts (issue #8: it runs after every evaluation of a storm).
        saved: dict[tuple[str, bytes], tuple[Any, ...]] = {}
        changed: list[tuple[tuple[str, bytes], Alert]] = []
        count = 0
        for rule in group.alerting_rules():
            name = rule.name
            for key, alert in rule.active.items():
                digest = digests.get(key)
                if digest is None:
                    digest = _hash(alert.labels)
                digests_now[key] = digest
                row = (name, digest)
                saved[row] = signature = _signature(alert)
                count += 1
                if before.get(row) != signature:
                    changed.append((row, alert))
        self._digests[group.key] = digests_now
        if count != len(saved):  # alerts of same-named rules on one row: the last one counts
            last: dict[tuple[str, bytes], Alert] = {}
            for rule in group.alerting_rules():
                for key, alert in rule.active.items():
                    last[(rule.name, digests_now[key])] = alert
            changed = [(row, alert) for row, alert in last.items() if before.get(row) != saved[row]]
        gone = [row for row in before if row not in saved]
        async with self.pool.acquire() as conn, conn.transaction():
            if changed:
                await conn.executemany(
                    "INSERT INTO rule_alerts (group_key, rule_name, labels_hash, labels,"
                    " annotations, state, active_at, fired_at, resolved_at, last_sent_at,"
                    " keep_firing_since, value)"
                    " VALUES ($1, $2, $3, $4::jsonb, $5::jsonb, $6, $7, $8, $9, $10, $11, $12)"
                    " ON CONFLICT (group_key, rule_name, labels_hash) DO UPDATE SET"
                    " annotations = EXCLUDED.annotations, state = EXCLUDED.state,"
                    " active_at = EXCLUDED.active_at, fired_at = EXCLUDED.fired_at,"
                    " resolved_at = EXCLUDED.resolved_at, last_sent_at = EXCLUDED.last_sent_at,"
                    " keep_firing_since = EXCLUDED.keep_firing_since, value = EXCLUDED.value",
                    [
                        (
                            group.key,
                            name,
                            digest,
                            json.dumps(alert.labels),
                            json.dumps(alert.annotations),
                            alert.state.value,
                            _dt(alert.active_at),
                            _dt(alert.fired_at),
                            _dt(alert.resolved_at),
                            _dt(alert.last_sent_at),
                            _dt(alert.keep_firing_since),
                            alert.value,
                        )
                        for (name, digest), alert in changed
                    ],
                )
            if gone:
                await conn.executemany(
                    "DELETE FROM rule_alerts WHERE group_key = $1 AND rule_name = $2"
                    " AND labels_hash = $3",
                    [(group.key, name, digest) for name, digest in gone],
                )
            if group.last_evaluation is not None:
                await conn.execute(
                    "INSERT INTO rule_group_state (group_key, last_evaluation) VALUES ($1, $2)"
                    " ON CONFLICT (group_key) DO UPDATE SET last_evaluation = $2",
                    group.key,
                    _dt(group.last_evaluation),
                )
        self._saved[group.key] = saved

    async def forget(self, group_key: str) -> None:
        """A group that is gone from the rule files takes its saved alerts with it."""
        async with self.pool.acquire() as conn, conn.transaction():
            await conn.execute("DELETE FROM rule_alerts WHERE group_key = $1", group_key)
            await conn.execute("DELETE FROM rule_group_state WHERE group_key = $1", group_key)
        self._saved.pop(group_key, None)
        self._digests.pop(group_key, None)
