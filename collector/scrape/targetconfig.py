"""The `targets` and `target_files` settings of collector.yml, parsed strictly.

Both take the same per-target options, named as in Prometheus' scrape_config where one
exists: interval, timeout, labels, tls {ca_file, fingerprint, cert_file, key_file,
server_name, insecure_skip_verify}, bearer_token, bearer_token_file.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from vpsmon.collector.scrape.target import NO_TLS_SETTINGS, TLSSettings, parse_fingerprint
from vpsmon.config import parse_bool, parse_duration, parse_str

_OPTION_KEYS = {"interval", "timeout", "labels", "tls", "bearer_token", "bearer_token_file"}
_TLS_KEYS = {
    "ca_file",
    "fingerprint",
    "cert_file",
    "key_file",
    "server_name",
    "insecure_skip_verify",
}
# Prometheus' label name syntax; names starting with __ are reserved for its internal labels.
LABEL_NAME = re.compile(r"[a-zA-Z_][a-zA-Z0-9_]*")


@dataclass(frozen=True)
class TargetOptions:
    """Per-target scrape options; None means the collector-wide default (`scrape.*`)."""

    interval: float | None = None
    timeout: float | None = None
    labels: Mapping[str, str] = field(default_factory=dict)
    tls: TLSSettings = NO_TLS_SETTINGS
    bearer_token: str | None = field(default=None, repr=False)
    bearer_token_file: Path | None = None


@dataclass(frozen=True)
class StaticTarget:
    name: str
    url: str
    labels: Mapping[str, str] = field(default_factory=dict)
    options: TargetOptions = TargetOptions()


@dataclass(frozen=True)
class TargetFiles:
    """Target files in Prometheus' file_sd format and the options their targets share."""

    files: tuple[str, ...]
    scheme: str = "http"
    metrics_path: str = "/metrics"
    options: TargetOptions = TargetOptions()


def _unknown(item: Mapping[str, Any], allowed: set[str], where: str) -> None:
    unknown = set(item) - allowed
    if unknown:
        raise ValueError(f"{where}: unknown key {sorted(map(str, unknown))[0]!r}")


def parse_labels(value: Any, where: str) -> dict[str, str]:
    labels = value or {}
    if not isinstance(labels, Mapping) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in labels.items()
    ):
        raise ValueError(f"{where}: expected a mapping of strings to strings")
    for name in labels:
        if not LABEL_NAME.fullmatch(name):
            raise ValueError(f"{where}: {name!r} is not a valid label name")
    return dict(labels)


def _duration(value: Any, where: str) -> float | None:
    if value is None:
        return None
    try:
        return parse_duration(value)
    except ValueError as err:
        raise ValueError(f"{where}: {err}") from None


def _path(value: Any, where: str) -> Path | None:
    if value is None or value == "":
        return None
    try:
        return Path(parse_str(value)).expanduser()
    except ValueError as err:
        raise ValueError(f"{where}: {err}") from None


def parse_tls(value: Any, where: str) -> TLSSettings:
    if value is None:
        return NO_TLS_SETTINGS
    if not isinstance(value, Mapping):
        raise ValueError(f"{where}: expected a mapping such as {{fingerprint: sha256:…}}")
    _unknown(value, _TLS_KEYS, where)
    fingerprint = value.get("fingerprint")
    if fingerprint:
        try:
            fingerprint = parse_fingerprint(parse_str(fingerprint))
        except ValueError as err:
            raise ValueError(f"{where}.fingerprint: {err}") from None
    try:
        return TLSSettings(
            ca_file=_path(value.get("ca_file"), f"{where}.ca_file"),
            fingerprint=fingerprint or None,
            cert_file=_path(value.get("cert_file"), f"{where}.cert_file"),
            key_file=_path(value.get("key_file"), f"{where}.key_file"),
            server_name=parse_str(value["server_name"]) if value.get("server_name") else None,
            insecure_skip_verify=parse_bool(value.get("insecure_skip_verify", False)),
        )
    except ValueError as err:
        message = str(err)
        raise ValueError(message if message.startswith(where) else f"{where}: {message}") from None


def parse_options(item: Mapping[str, Any], where: str) -> TargetOptions:
    interval = _duration(item.get("interval"), f"{where}.interval")
    timeout = _duration(item.get("timeout"), f"{where}.timeout")
    if interval is not None and timeout is not None and timeout > interval:
        raise ValueError(f"{where}.timeout: {timeout:g}s is longer than the interval {interval:g}s")
    token = item.get("bearer_token")
    token_file = _path(item.get("bearer_token_file"), f"{where}.bearer_token_file")
    if token is not None and token_file is not None:
        raise ValueError(f"{where}: bearer_token and bearer_token_file are exclusive")
    if token is not None and (not isinstance(token, str) or not token.strip()):
        raise ValueError(f"{where}.bearer_token: expected a non-empty string")
    return TargetOptions(
        interval=interval,
        timeout=timeout,
        labels=parse_labels(item.get("labels"), f"{where}.labels"),
        tls=parse_tls(item.get("tls"), f"{where}.tls"),
        bearer_token=token.strip() if isinstance(token, str) else None,
        bearer_token_file=token_file,
    )


def parse_targets(value: Any) -> tuple[StaticTarget, ...]:
    """A list of {name, url, labels, …options}: targets scraped besides the database's servers."""
    if value is None:
        return ()
    if not isinstance(value, list):
        raise ValueError("expected a list of targets, each with name and url")
    out = []
    for i, item in enumerate(value):
        where = f"[{i}]"
        if not isinstance(item, Mapping):
            raise ValueError(f"{where}: expected a mapping with name and url")
        _unknown(item, {"name", "url"} | _OPTION_KEYS, where)
        if "url" not in item:
            raise ValueError(f"{where}: url is required")
        url = parse_str(item["url"])
        if not url.startswith(("http://", "https://")):
            raise ValueError(f"{where}.url: expected an http:// or https:// URL, got {url!r}")
        options = parse_options(item, where)
        if url.startswith("http://") and options.tls != NO_TLS_SETTINGS:
            raise ValueError(f"{where}.tls: TLS settings need an https:// URL")
        labels = dict(options.labels)
        out.append(
            StaticTarget(
                parse_str(item.get("name", url)),
                url,
                labels,
                TargetOptions(
                    options.interval,
                    options.timeout,
                    {},
                    options.tls,
                    options.bearer_token,
                    options.bearer_token_file,
                ),
            )
        )
    return tuple(out)


def parse_target_files(value: Any) -> tuple[TargetFiles, ...]:
    """A list of {files, scheme, metrics_path, …options}; `files` are paths or globs."""
    if value is None:
        return ()
    if not isinstance(value, list):
        raise ValueError("expected a list of {files: [...]} entries")
    out = []
    for i, item in enumerate(value):
        where = f"[{i}]"
        if not isinstance(item, Mapping):
            raise ValueError(f"{where}: expected a mapping with files")
        _unknown(item, {"files", "scheme", "metrics_path"} | _OPTION_KEYS, where)
        files = item.get("files")
        if isinstance(files, str):
            files = [files]
        if not isinstance(files, list) or not files or not all(isinstance(f, str) for f in files):
            raise ValueError(f"{where}.files: expected a list of file paths or globs")
        scheme = item.get("scheme", "http")
        if scheme not in ("http", "https"):
            raise ValueError(f"{where}.scheme: expected http or https, got {scheme!r}")
        path = item.get("metrics_path", "/metrics")
        if not isinstance(path, str) or not path.startswith("/"):
            raise ValueError(f"{where}.metrics_path: expected a path starting with /")
        out.append(
            TargetFiles(
                tuple(str(Path(f).expanduser()) for f in files),
                scheme,
                path,
                parse_options(item, where),
            )
        )
    return tuple(out)
