"""What the collector scrapes: a `Target` and how to reach it safely (`TLSSettings`, bearer)."""

from __future__ import annotations

import functools
import hashlib
import re
import urllib.parse
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

Labels = tuple[tuple[str, str], ...]

_HEX64 = re.compile(r"[0-9a-f]{64}")


def parse_fingerprint(text: str) -> str:
    """`sha256:HEX` as `vpsmon exporter fingerprint` prints it; also accepts upper case and
    the colon-separated form openssl prints (`AB:CD:…`). Returns the canonical form."""
    raw = text.strip()
    if raw.lower().startswith("sha256:"):
        raw = raw[len("sha256:") :]
    digest = raw.replace(":", "").lower()
    if not _HEX64.fullmatch(digest):
        raise ValueError(
            "expected a SHA-256 fingerprint such as sha256:3f5a… (64 hex digits), as printed"
            f" by `vpsmon exporter fingerprint`, got {text[:80]!r}"
        )
    return "sha256:" + digest


@dataclass(frozen=True)
class TLSSettings:
    """How to check an https target.

    `fingerprint` pins the exporter's own certificate (its SHA-256 over the DER bytes), as the
    collector does for vpsmon exporters with `tls.auto` (DESIGN.md "Security model"): no CA and
    no host name are involved, the certificate must be exactly that one. Otherwise the
    certificate is verified against `ca_file` or the system's CAs, with the URL's host name
    (or `server_name`) checked.
    """

    ca_file: Path | None = None
    fingerprint: str | None = None
    cert_file: Path | None = None
    key_file: Path | None = None
    server_name: str | None = None
    insecure_skip_verify: bool = False

    def __post_init__(self) -> None:
        if self.fingerprint is not None and (
            self.ca_file or self.insecure_skip_verify or self.cert_file or self.server_name
        ):
            # A pin replaces every other check; mixing them would leave it unclear which holds.
            raise ValueError(
                "tls.fingerprint cannot be combined with ca_file, cert_file, server_name"
                " or insecure_skip_verify"
            )
        if (self.cert_file is None) != (self.key_file is None):
            raise ValueError("tls.cert_file and tls.key_file must be set together")


NO_TLS_SETTINGS = TLSSettings()


@dataclass(frozen=True)
class Target:
    server_id: int
    name: str
    url: str
    interval: float
    timeout: float
    labels: Mapping[str, str] = field(default_factory=dict)
    tls: TLSSettings = NO_TLS_SETTINGS
    # Never in reprs or logs.
    bearer_token: str | None = field(default=None, repr=False)
    bearer_token_file: Path | None = None
    # Where the target was defined: "static" (collector.yml), "file" (a target file) or
    # "api" (a server added in the UI or API). Shown in the targets list.
    source: str = "api"

    @functools.cached_property
    def instance(self) -> str:
        """host:port, as Prometheus sets the instance label. Cached (the instance's __dict__,
        which a frozen dataclass leaves writable for this): every scrape's labels ask it."""
        parts = urllib.parse.urlsplit(self.url)
        port = parts.port or (443 if parts.scheme == "https" else 80)
        host = parts.hostname or ""
        return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"

    @property
    def history_url(self) -> str:
        """The exporter's /history beside its /metrics (issue #3): the last path segment
        replaced, so a target behind a reverse-proxy prefix keeps its prefix."""
        parts = urllib.parse.urlsplit(self.url)
        path = parts.path or "/"
        base = path.rsplit("/", 1)[0]
        return urllib.parse.urlunsplit(parts._replace(path=base + "/history", query=""))

    def offset(self) -> float:
        """A stable offset within the interval, so scrapes of many targets spread out."""
        digest = hashlib.sha256(self.url.encode()).digest()
        return int.from_bytes(digest[:8], "big") / 2**64 * self.interval

    def target_labels(self, job: str) -> Labels:
        merged = {"job": job, "instance": self.instance, **self.labels}
        return tuple(sorted(merged.items()))
