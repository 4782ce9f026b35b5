"""Alerts as the notify stage keeps them: parsed, validated, fingerprinted by label set.

Semantics follow Alertmanager (https://prometheus.io/docs/alerting/latest/clients/):
an alert without `endsAt` stays firing for `resolve_timeout` after it was last received;
one whose `endsAt` is in the past is resolved. The fingerprint is Prometheus' label-set
fingerprint (FNV-1a 64 over the sorted names and values), so it matches what Alertmanager
shows for the same alert.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import Any

from vpsmon.collector.notify.api import PostableAlert

LABEL_NAME_RE = re.compile(r"^[a-zA-Z_][a-zA-Z0-9_]*$")
MAX_LABELS = 64
MAX_VALUE_LENGTH = 4096
MAX_ANNOTATION_LENGTH = 16384

_FNV_OFFSET = 14695981039346656037
_FNV_PRIME = 1099511628211
_SEPARATOR = 0xFF


class AlertError(ValueError):
    """A postable alert that cannot be accepted; the message says which field and why."""


def fingerprint(labels: Mapping[str, str]) -> str:
    """Prometheus' LabelSet.Fingerprint(), as 16 hex digits."""
    h = _FNV_OFFSET
    for name in sorted(labels):
        for part in (name.encode(), labels[name].encode()):
            for byte in part:
                h = ((h ^ byte) * _FNV_PRIME) & 0xFFFFFFFFFFFFFFFF
            h = ((h ^ _SEPARATOR) * _FNV_PRIME) & 0xFFFFFFFFFFFFFFFF
    if not labels:
        h = 0xCBF29CE484222325  # emptyLabelSignature: the FNV offset itself
    return f"{h:016x}"


_FRACTION_RE = re.compile(r"(\.\d{1,6})\d*")


def parse_time(value: Any, field_name: str) -> float | None:
    """Seconds since the epoch from an RFC 3339 string; None for missing or Go's zero time."""
    if value is None or value == "":
        return None
    if isinstance(value, datetime):
        return value.timestamp()
    if not isinstance(value, str):
        raise AlertError(f"{field_name}: expected an RFC 3339 time string, got {value!r}")
    text = _FRACTION_RE.sub(lambda m: m.group(1), value.strip(), count=1)
    try:
        parsed = datetime.fromisoformat(text.replace("z", "Z"))
    except ValueError:
        raise AlertError(f"{field_name}: not an RFC 3339 time: {value!r}") from None
    if parsed.tzinfo is None:
        raise AlertError(f"{field_name}: the time needs a zone (Z or +hh:mm): {value!r}")
    if parsed.year <= 1:
        return None  # Go's time.Time{} marshals as 0001-01-01T00:00:00Z: "unset"
    return parsed.timestamp()


def format_time(seconds: float) -> str:
    """RFC 3339 in UTC with milliseconds, as Alertmanager's API prints."""
    moment = datetime.fromtimestamp(seconds, UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"


def _string_map(value: Any, field_name: str, *, names: bool, limit: int) -> dict[str, str]:
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise AlertError(f"{field_name}: expected a mapping of strings")
    if len(value) > MAX_LABELS:
        raise AlertError(f"{field_name}: more than {MAX_LABELS} entries")
    out: dict[str, str] = {}
    for key, item in value.items():
        if not isinstance(key, str) or (names and not LABEL_NAME_RE.match(key)):
            raise AlertError(f"{field_name}: invalid name {key!r}")
        if not isinstance(item, str):
            raise AlertError(f"{field_name}.{key}: expected a string, got {type(item).__name__}")
        if len(item) > limit:
            raise AlertError(f"{field_name}.{key}: longer than {limit} characters")
        out[key] = item
    return out


@dataclass(frozen=True)
class Alert:
    labels: Mapping[str, str]
    annotations: Mapping[str, str] = field(default_factory=dict)
    starts_at: float = 0.0
    ends_at: float = 0.0
    generator_url: str = ""
    # When the sink last received it; with resolve_timeout this bounds an alert sent without
    # endsAt.
    updated_at: float = 0.0
    # Whether endsAt came from the sender (True) or from resolve_timeout (False).
    ends_given: bool = True

    @property
    def name(self) -> str:
        return self.labels.get("alertname", "")

    @property
    def fingerprint(self) -> str:
        return fingerprint(self.labels)

    def resolved(self, now: float) -> bool:
        return self.ends_at <= now

    def status(self, now: float) -> str:
        return "resolved" if self.resolved(now) else "firing"

    def merge(self, newer: Alert, now: float) -> Alert:
        """Alertmanager's store Put + Alert.Merge: combine overlapping episodes.

        Without an overlap in activity range the newer alert replaces this one (a new
        episode). With one: the earliest start wins, and the latest explicit end.
        """
        overlap = (self.starts_at < newer.ends_at < self.ends_at) or (
            self.starts_at < newer.starts_at < self.ends_at
        )
        if not overlap:
            return newer
        old, young = (self, newer) if newer.updated_at >= self.updated_at else (newer, self)
        starts = min(old.starts_at, young.starts_at)
        ends = young.ends_at
        if young.resolved(now):
            if old.resolved(now) and old.ends_at > young.ends_at:
                ends = old.ends_at
        elif old.ends_at > young.ends_at and old.ends_given:
            ends = old.ends_at
        return replace(young, starts_at=starts, ends_at=ends)

    def to_json(self, now: float) -> dict[str, Any]:
        """Alertmanager's webhook alert shape."""
        return {
            "status": self.status(now),
            "labels": dict(self.labels),
            "annotations": dict(self.annotations),
            "startsAt": format_time(self.starts_at),
            "endsAt": format_time(self.ends_at) if self.resolved(now) else "0001-01-01T00:00:00Z",
            "generatorURL": self.generator_url,
            "fingerprint": self.fingerprint,
        }

    def to_postable(self) -> dict[str, Any]:
        """Back into API v2 postable form (for forwarding to an Alertmanager)."""
        return {
            "labels": dict(self.labels),
            "annotations": dict(self.annotations),
            "startsAt": format_time(self.starts_at),
            "endsAt": format_time(self.ends_at),
            "generatorURL": self.generator_url,
        }


def parse_alert(raw: PostableAlert, now: float, resolve_timeout: float) -> Alert:
    """Validate one postable alert (Alertmanager's rules: alertname required, names valid)."""
    if not isinstance(raw, Mapping):
        raise AlertError(f"expected an alert object, got {type(raw).__name__}")
    unknown = set(raw) - {"labels", "annotations", "startsAt", "endsAt", "generatorURL"}
    if unknown:
        raise AlertError(f"unknown field {sorted(unknown)[0]!r}")
    labels = _string_map(raw.get("labels"), "labels", names=True, limit=MAX_VALUE_LENGTH)
    labels = {k: v for k, v in labels.items() if v != ""}  # empty value = label absent
    if not labels.get("alertname"):
        raise AlertError("labels: alertname is required")
    annotations = _string_map(
        raw.get("annotations"), "annotations", names=True, limit=MAX_ANNOTATION_LENGTH
    )
    starts = parse_time(raw.get("startsAt"), "startsAt")
    ends = parse_time(raw.get("endsAt"), "endsAt")
    generator = raw.get("generatorURL") or ""
    if not isinstance(generator, str) or len(generator) > MAX_VALUE_LENGTH:
        raise AlertError("generatorURL: expected a string URL")
    # As Alertmanager's API: no start = now (or the end, if that is earlier); no end = now +
    # resolve_timeout, refreshed while the sender keeps sending.
    if starts is None:
        starts = now if ends is None or ends > now else ends
    ends_given = ends is not None
    if ends is None:
        ends = now + resolve_timeout
    if ends < starts:
        raise AlertError("endsAt is before startsAt")
    return Alert(labels, annotations, starts, ends, generator, now, ends_given)
