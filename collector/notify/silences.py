"""Silences: matchers, a time window, who made it and why (Alertmanager's silence model)."""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from vpsmon.collector.notify.alerts import AlertError, format_time, parse_time
from vpsmon.collector.notify.matchers import Matcher, MatcherError, matches_all

MAX_COMMENT = 2000
SERVER_LABELS = ("instance", "server_id")
"""The labels that say which server an alert is about (Dispatcher.server_of)."""


class SilenceError(ValueError):
    """A silence that cannot be stored; the message names the field."""


@dataclass(frozen=True)
class Silence:
    id: str
    matchers: tuple[Matcher, ...]
    starts_at: float
    ends_at: float
    created_by: str
    comment: str = ""
    updated_at: float = 0.0

    def state(self, now: float) -> str:
        if now < self.starts_at:
            return "pending"
        return "active" if now < self.ends_at else "expired"

    def mutes(self, labels: Mapping[str, str], now: float) -> bool:
        return self.state(now) == "active" and matches_all(self.matchers, labels)

    def accepts_any_server(self, identities: Iterable[Mapping[str, str]]) -> bool:
        """Whether this silence's instance/server_id matchers accept one of `identities` (the
        label sets a server's alerts carry). A silence with no such matcher is fleet-wide: True.
        """
        pinned = [m for m in self.matchers if m.name in SERVER_LABELS]
        return not pinned or any(matches_all(pinned, labels) for labels in identities)

    def to_json(self, now: float) -> dict[str, Any]:
        """Alertmanager API v2 gettable silence shape."""
        return {
            "id": self.id,
            "matchers": [m.to_json() for m in self.matchers],
            "startsAt": format_time(self.starts_at),
            "endsAt": format_time(self.ends_at),
            "updatedAt": format_time(self.updated_at or self.starts_at),
            "createdBy": self.created_by,
            "comment": self.comment,
            "status": {"state": self.state(now)},
        }


def new_silence(
    matchers: Sequence[Matcher],
    starts_at: float,
    ends_at: float,
    created_by: str,
    comment: str,
    now: float,
    silence_id: str | None = None,
) -> Silence:
    if not matchers:
        raise SilenceError("matchers: a silence needs at least one matcher")
    # As Alertmanager: a silence that matches everything (only empty-matching matchers) is
    # refused; it would mute every alert.
    if all(m.matches({}) for m in matchers):
        raise SilenceError("matchers: at least one matcher must not match the empty string")
    if ends_at <= starts_at:
        raise SilenceError("endsAt: must be after startsAt")
    if ends_at <= now:
        raise SilenceError("endsAt: must be in the future")
    if not created_by:
        raise SilenceError("createdBy: is required")
    if len(comment) > MAX_COMMENT:
        raise SilenceError(f"comment: longer than {MAX_COMMENT} characters")
    return Silence(
        silence_id or str(uuid.uuid4()),
        tuple(matchers),
        max(starts_at, now) if silence_id is None else starts_at,
        ends_at,
        created_by,
        comment,
        now,
    )


def parse_postable_silence(data: Any, now: float, created_by: str) -> Silence:
    """An Alertmanager API v2 postable silence; createdBy is the logged-in user, not the body."""
    if not isinstance(data, Mapping):
        raise SilenceError("expected a JSON object with matchers, startsAt, endsAt, comment")
    raw = data.get("matchers")
    if not isinstance(raw, list):
        raise SilenceError("matchers: expected a list of {name, value, isRegex, isEqual}")
    try:
        matchers = [Matcher.from_json(m) for m in raw]
        starts = parse_time(data.get("startsAt"), "startsAt") or now
        ends = parse_time(data.get("endsAt"), "endsAt")
    except (MatcherError, AlertError) as err:
        raise SilenceError(str(err)) from None
    if ends is None:
        raise SilenceError("endsAt: is required")
    comment = data.get("comment", "")
    if not isinstance(comment, str):
        raise SilenceError("comment: expected a string")
    return new_silence(matchers, starts, ends, created_by, comment.strip(), now)
