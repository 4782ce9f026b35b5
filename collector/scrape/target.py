"""What the collector scrapes."""

from __future__ import annotations

import hashlib
import urllib.parse
from collections.abc import Mapping
from dataclasses import dataclass, field

Labels = tuple[tuple[str, str], ...]


@dataclass(frozen=True)
class Target:
    server_id: int
    name: str
    url: str
    interval: float
    timeout: float
    labels: Mapping[str, str] = field(default_factory=dict)

    @property
    def instance(self) -> str:
        """host:port, as Prometheus sets the instance label."""
        parts = urllib.parse.urlsplit(self.url)
        port = parts.port or (443 if parts.scheme == "https" else 80)
        host = parts.hostname or ""
        return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"

    def offset(self) -> float:
        """A stable offset within the interval, so scrapes of many targets spread out."""
        digest = hashlib.sha256(self.url.encode()).digest()
        return int.from_bytes(digest[:8], "big") / 2**64 * self.interval

    def target_labels(self, job: str) -> Labels:
        merged = {"job": job, "instance": self.instance, **self.labels}
        return tuple(sorted(merged.items()))
