"""exporter.yml: the exporter's settings table (env prefix `VPSMON_EXPORTER_`).

The per-collector switches (`collectors.<name>`) and options (`<name>.<option>`) are made
from the collector table, so a new collector is configurable and documented by being listed.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from vpsmon.config import (
    ConfigError,
    HostPort,
    Setting,
    load,
    parse_bool,
    parse_duration,
    parse_hostport,
    parse_optional_path,
    parse_positive_int,
)
from vpsmon.exporter.collectors import COLLECTORS
from vpsmon.exporter.collectors.base import CollectorSpec
from vpsmon.exporter.security import IPNetwork, default_state_dir

ENV_PREFIX = "VPSMON_EXPORTER_"

# Shorter tokens can be guessed; peers shipped predictable tokens (DESIGN.md).
MIN_TOKEN_LENGTH = 16


def _items(value: Any) -> list[Any]:
    """A YAML list, or a string from the environment or a _FILE: one item per line or comma."""
    if isinstance(value, str):
        return [part.strip() for part in re.split(r"[\n,]", value) if part.strip()]
    if isinstance(value, list | tuple):
        return list(value)
    raise ValueError(f"expected a list, got {type(value).__name__}")


def parse_tokens(value: Any) -> tuple[str, ...]:
    tokens = []
    for item in _items(value):
        if not isinstance(item, str):
            raise ValueError(f"expected a list of strings, got {type(item).__name__}")
        token = item.strip()
        if len(token) < MIN_TOKEN_LENGTH or any(c.isspace() for c in token):
            # Never echo a secret back, not even a bad one.
            raise ValueError(
                f"each token must be at least {MIN_TOKEN_LENGTH} characters without spaces"
                " (e.g. from `openssl rand -hex 32`)"
            )
        tokens.append(token)
    return tuple(tokens)


def parse_networks(value: Any) -> tuple[IPNetwork, ...]:
    networks = []
    for item in _items(value):
        try:
            # strict=False: 192.168.1.5/24 means that host's network, as in most firewalls.
            networks.append(ipaddress.ip_network(str(item).strip(), strict=False))
        except ValueError:
            raise ValueError(
                f"expected addresses or CIDRs such as 10.0.0.0/8 or ::1, got {item!r}"
            ) from None
    return tuple(networks)


BASE_SETTINGS: tuple[Setting, ...] = (
    Setting(
        "listen",
        parse_hostport,
        parse_hostport("0.0.0.0:9190"),
        "Address for /metrics (HOST:PORT, [IPv6]:PORT or :PORT).",
    ),
    Setting(
        "interval",
        parse_duration,
        5.0,
        "How often the collectors run; scrapes are served from the last result.",
    ),
    Setting(
        "history.retention",
        parse_duration,
        3600.0,
        "How far back /history?since=UNIX_SECONDS can answer, at the collection interval.",
    ),
    Setting(
        "history.max_samples",
        parse_positive_int,
        1_000_000,
        "Upper bound on samples held for /history (8 bytes each); the oldest are dropped first.",
    ),
    Setting(
        "state_dir",
        parse_optional_path,
        None,
        "Where the exporter keeps its key pair and certificate; unset means the user's data"
        " dir + /vpsmon-exporter (e.g. ~/.local/share/vpsmon-exporter).",
    ),
    Setting(
        "tls.auto",
        parse_bool,
        False,
        "Serve HTTPS with a key pair and self-signed certificate made in state_dir on first"
        " start; `vpsmon exporter fingerprint` prints what to pin.",
    ),
    Setting(
        "tls.cert_file",
        parse_optional_path,
        None,
        "PEM certificate to serve HTTPS with (needs tls.key_file); wins over tls.auto.",
    ),
    Setting(
        "tls.key_file",
        parse_optional_path,
        None,
        "PEM private key of tls.cert_file.",
    ),
    Setting(
        "auth.bearer_tokens",
        parse_tokens,
        None,
        "Tokens that may read /metrics and /history (`Authorization: Bearer TOKEN`); one per"
        " line in VPSMON_EXPORTER_AUTH_BEARER_TOKENS_FILE. Empty with empty auth.allow: open.",
        secret=True,
    ),
    Setting(
        "auth.allow",
        parse_networks,
        (),
        "Addresses or CIDRs that may read without a token. Empty with no tokens: open.",
    ),
)

# Settings that are the exporter's own rather than options of a collector.
_OWN = frozenset(s.name for s in BASE_SETTINGS)


def settings(specs: Sequence[CollectorSpec] = COLLECTORS) -> tuple[Setting, ...]:
    rows = list(BASE_SETTINGS)
    for spec in specs:
        rows.append(
            Setting(
                f"collectors.{spec.name}",
                parse_bool,
                spec.default_enabled,
                f"Enable the {spec.name} collector: {spec.help}",
            )
        )
        rows.extend(replace(s, name=f"{spec.name}.{s.name}") for s in spec.settings)
    return tuple(rows)


@dataclass(frozen=True)
class TLSConfig:
    auto: bool
    cert_file: Path | None
    key_file: Path | None

    @property
    def enabled(self) -> bool:
        return self.auto or self.cert_file is not None


@dataclass(frozen=True)
class ExporterConfig:
    listen: HostPort
    interval: float
    enabled: tuple[str, ...]
    options: Mapping[str, Any]
    history_retention: float = 3600.0
    history_max_samples: int = 1_000_000
    state_dir: Path | None = None
    tls: TLSConfig = TLSConfig(False, None, None)
    bearer_tokens: tuple[str, ...] = ()
    allow: tuple[IPNetwork, ...] = ()

    def resolved_state_dir(self) -> Path:
        return self.state_dir if self.state_dir is not None else default_state_dir()


def load_config(
    path: Path | None,
    overrides: Mapping[str, Any] | None = None,
    env: Mapping[str, str] | None = None,
) -> ExporterConfig:
    values = load(settings(), path=path, env=env, env_prefix=ENV_PREFIX, overrides=overrides)
    enabled = tuple(s.name for s in COLLECTORS if values[f"collectors.{s.name}"])
    options = {k: v for k, v in values.items() if k not in _OWN and not k.startswith("collectors.")}
    cert_file, key_file = values["tls.cert_file"], values["tls.key_file"]
    if (cert_file is None) != (key_file is None):
        raise ConfigError("tls.cert_file and tls.key_file must be set together")
    return ExporterConfig(
        values["listen"],
        values["interval"],
        enabled,
        options,
        history_retention=values["history.retention"],
        history_max_samples=values["history.max_samples"],
        state_dir=values["state_dir"],
        tls=TLSConfig(values["tls.auto"], cert_file, key_file),
        bearer_tokens=values["auth.bearer_tokens"] or (),
        allow=values["auth.allow"],
    )
