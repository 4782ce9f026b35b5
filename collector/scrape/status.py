"""What the targets list shows: every target's last scrape, and every target source's health.

The web UI's /api/targets and the Prometheus-compatible /api/v1/targets both read this
through `TargetStatusProvider`, never through the scraper's own classes.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Literal, Protocol

Health = Literal["up", "down", "unknown"]


def _iso(ts: float | None) -> str | None:
    return datetime.fromtimestamp(ts, UTC).isoformat().replace("+00:00", "Z") if ts else None


@dataclass(frozen=True)
class BackfillStatus:
    """The last backfill of a target's gap from its exporter's /history."""

    started: float
    since: float
    until: float
    samples: int = 0
    error: str | None = None
    done: bool = False

    def as_json(self) -> dict[str, Any]:
        return {
            "started": _iso(self.started),
            "since": _iso(self.since),
            "until": _iso(self.until),
            "samples": self.samples,
            "error": self.error,
            "done": self.done,
        }


@dataclass(frozen=True)
class TargetStatus:
    server_id: int
    name: str
    url: str
    source: str  # "static", "file" or "api"
    labels: dict[str, str]  # the labels given to its series: job, instance and the target's
    interval: float
    timeout: float
    health: Health = "unknown"
    last_scrape: float | None = None
    last_duration: float | None = None
    last_error: str | None = None
    samples: int = 0
    backfill: BackfillStatus | None = None

    def as_json(self) -> dict[str, Any]:
        return {
            "server_id": self.server_id,
            "name": self.name,
            "url": self.url,
            "source": self.source,
            "labels": self.labels,
            "interval": self.interval,
            "timeout": self.timeout,
            "health": self.health,
            "last_scrape": _iso(self.last_scrape),
            "last_scrape_duration": self.last_duration,
            "last_error": self.last_error,
            "samples": self.samples,
            "backfill": self.backfill.as_json() if self.backfill else None,
        }


@dataclass(frozen=True)
class SourceStatus:
    """One place targets come from: collector.yml, one target file, or the database."""

    kind: Literal["static", "file", "database"]
    path: str | None = None
    targets: int = 0
    error: str | None = None
    updated_at: float | None = None  # when its targets were last read successfully

    def as_json(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "path": self.path,
            "targets": self.targets,
            "error": self.error,
            "updated_at": _iso(self.updated_at),
        }


class TargetStatusProvider(Protocol):
    def target_status(self) -> list[TargetStatus]: ...

    def source_status(self) -> list[SourceStatus]: ...
