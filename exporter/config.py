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
    parse_optional_str,
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

FEATURES = ("exec", "pty", "files", "docker")

# Enrolment tokens are long random strings (`vpsmon` makes 43-character ones).
MIN_COMMAND_TOKEN_LENGTH = 32


def parse_fingerprint(value: Any) -> str | None:
    """`sha256:` + 64 hex digits (as `vpsmon exporter fingerprint` prints), or unset."""
    if value is None or value == "":
        return None
    text = str(value).strip().lower()
    digits = text.removeprefix("sha256:").replace(":", "")
    if len(digits) != 64 or any(c not in "0123456789abcdef" for c in digits):
        raise ValueError(f"expected sha256: and 64 hex digits, got {str(value)[:80]!r}")
    return "sha256:" + digits


def parse_command_token(value: Any) -> str | None:
    if value is None or value == "":
        return None
    token = str(value).strip()
    if len(token) < MIN_COMMAND_TOKEN_LENGTH or any(c.isspace() for c in token):
        raise ValueError(
            f"must be at least {MIN_COMMAND_TOKEN_LENGTH} characters without spaces"
            " (the enrolment token; e.g. from `openssl rand -hex 32`)"
        )
    return token


COMMAND_SETTINGS: tuple[Setting, ...] = (
    Setting(
        "command.listen",
        parse_hostport,
        parse_hostport("0.0.0.0:9191"),
        "Address of the command channel (gRPC over mutual TLS); it listens only when a"
        " feature below is enabled.",
    ),
    *(
        Setting(
            f"command.{feature}",
            parse_bool,
            False,
            help,
        )
        for feature, help in (
            ("exec", "Allow the enrolled collector to run commands (Exec)."),
            ("pty", "Allow interactive terminals (Pty)."),
            (
                "files",
                "Allow the file manager (FileStat/List/Read/Write/...), in the policy's"
                " file roots.",
            ),  # fmt: skip
            ("docker", "Allow Docker control (list, inspect, start, stop, restart, logs, stats)."),
        )
    ),
    Setting(
        "command.collector_cert",
        parse_optional_path,
        None,
        "The enrolled collector's certificate (PEM); only a client presenting it is accepted.",
    ),
    Setting(
        "command.collector_fingerprint",
        parse_fingerprint,
        None,
        "sha256:HEX of the collector's certificate, pinned at enrolment; must match"
        " command.collector_cert.",
    ),
    Setting(
        "command.token",
        parse_command_token,
        None,
        "The enrolment token every call must carry (`authorization: Bearer TOKEN`); or"
        " VPSMON_EXPORTER_COMMAND_TOKEN_FILE.",
        secret=True,
    ),
    Setting(
        "command.run_as",
        parse_optional_str,
        None,
        "User that commands, terminals and new files belong to; unset means the exporter's own"
        " user, which must then not be root (set `root` to allow that explicitly).",
    ),
    Setting(
        "command.policy_file",
        parse_optional_path,
        None,
        "YAML policy: `commands` (programs Exec may run; unset: any) and `file_roots`"
        " (directories the file manager may touch; unset: run_as's home).",
    ),
    Setting(
        "command.exec_timeout",
        parse_duration,
        3600.0,
        "Longest an Exec may run; a request asking for more (or for 0) gets this.",
    ),
)

# Settings that are the exporter's own rather than options of a collector.
_OWN = frozenset(s.name for s in (*BASE_SETTINGS, *COMMAND_SETTINGS))


def settings(specs: Sequence[CollectorSpec] = COLLECTORS) -> tuple[Setting, ...]:
    rows = [*BASE_SETTINGS, *COMMAND_SETTINGS]
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
class CommandConfig:
    """The command channel (issue #7); `features` empty means it does not listen."""

    listen: HostPort = HostPort("0.0.0.0", 9191)
    features: frozenset[str] = frozenset()
    collector_cert: Path | None = None
    collector_fingerprint: str | None = None
    token: str | None = None
    run_as: str | None = None
    policy_file: Path | None = None
    exec_timeout: float = 3600.0

    @property
    def enabled(self) -> bool:
        return bool(self.features)


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
    command: CommandConfig = CommandConfig()

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
        command=_command_config(values),
    )


def _command_config(values: Mapping[str, Any]) -> CommandConfig:
    features = frozenset(f for f in FEATURES if values[f"command.{f}"])
    command = CommandConfig(
        listen=values["command.listen"],
        features=features,
        collector_cert=values["command.collector_cert"],
        collector_fingerprint=values["command.collector_fingerprint"],
        token=values["command.token"],
        run_as=values["command.run_as"],
        policy_file=values["command.policy_file"],
        exec_timeout=values["command.exec_timeout"],
    )
    if features:
        # Management without its locks is refused outright rather than half-protected.
        missing = [
            name
            for name, value in (
                ("command.collector_cert", command.collector_cert),
                ("command.collector_fingerprint", command.collector_fingerprint),
                ("command.token", command.token),
            )
            if value is None
        ]
        if missing:
            raise ConfigError(
                f"command.{sorted(features)[0]} is enabled but {', '.join(missing)} is not set:"
                " enrol the exporter with the collector first"
            )
    return command
