"""Strict configuration: one table of settings, YAML files, and `VPSMON_…` env overrides.

Every component (exporter, collector) declares its settings as a table of `Setting` rows:
the dotted YAML key, how the value is parsed, its default and a help line. The docs are
tested against these tables, so a setting cannot exist without being documented.

Rules (STYLE.md "Configuration is strict"):
- an unknown key or a value of the wrong type is a `ConfigError` naming the key;
- an env var `PREFIX` + the key upper-cased with `.` → `_` overrides the file;
- a secret may be read from a file named by the same env var with a `_FILE` suffix.
"""

from __future__ import annotations

import ipaddress
import os
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml


class ConfigError(Exception):
    """A configuration problem; the message names the key or file and says what is wrong."""


Parser = Callable[[Any], Any]


@dataclass(frozen=True)
class Setting:
    name: str
    parse: Parser
    default: Any
    help: str
    secret: bool = False
    # Whether the value may come as a string from an environment variable.
    from_env: bool = True

    def env_name(self, prefix: str) -> str:
        return prefix + self.name.upper().replace(".", "_")


_DURATION_RE = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h|d|w|y)")
_UNIT_ORDER = ("y", "w", "d", "h", "m", "s", "ms")
_DURATION_UNITS = {
    "ms": 0.001,
    "s": 1.0,
    "m": 60.0,
    "h": 3600.0,
    "d": 86400.0,
    "w": 7 * 86400.0,
    "y": 365 * 86400.0,
}


def parse_duration(value: Any) -> float:
    """Seconds from a Prometheus-style duration ("15s", "1m30s", "500ms") or a number."""
    if isinstance(value, bool):
        raise ValueError("expected a duration such as 15s or 1m")
    if isinstance(value, int | float):
        if value <= 0:
            raise ValueError("a duration must be positive")
        return float(value)
    text = str(value).strip()
    pos = 0
    total = 0.0
    order = list(_UNIT_ORDER)
    for match in _DURATION_RE.finditer(text):
        if match.start() != pos:
            break
        unit = match.group(2)
        # As Prometheus: each unit at most once, largest first ("1h30m", not "30m1h" or "1m1m").
        if unit not in order:
            raise ValueError(f"expected units from largest to smallest, each once, got {text!r}")
        order = order[order.index(unit) + 1 :]
        total += float(match.group(1)) * _DURATION_UNITS[unit]
        pos = match.end()
    if pos != len(text) or not text:
        raise ValueError(f"expected a duration such as 15s or 1m, got {text!r}")
    if total <= 0:
        raise ValueError("a duration must be positive")
    return total


def format_duration(seconds: float) -> str:
    """The shortest Prometheus-style duration for a whole number of units: 15d, 90s, 1h30m."""
    if seconds != int(seconds) or seconds <= 0:
        return f"{seconds:g}s"
    rest = int(seconds)
    parts = []
    for unit in ("d", "h", "m", "s"):
        size = int(_DURATION_UNITS[unit])
        if rest >= size:
            parts.append(f"{rest // size}{unit}")
            rest %= size
    return "".join(parts)


def parse_bool(value: Any) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.lower() in {"true", "yes", "on", "1"}:
        return True
    if isinstance(value, str) and value.lower() in {"false", "no", "off", "0"}:
        return False
    raise ValueError(f"expected true or false, got {value!r}")


def parse_str(value: Any) -> str:
    if not isinstance(value, str):
        raise ValueError(f"expected a string, got {type(value).__name__}")
    return value


def parse_optional_str(value: Any) -> str | None:
    if value is None or value == "":
        return None
    return parse_str(value)


def _parse_whole(value: Any, minimum: int, wanted: str) -> int:
    if isinstance(value, bool):
        raise ValueError("expected a whole number")
    try:
        number = int(value)
    except (TypeError, ValueError):
        raise ValueError(f"expected a whole number, got {value!r}") from None
    if number < minimum or (isinstance(value, float) and value != number):
        raise ValueError(f"expected {wanted}, got {value!r}")
    return number


def parse_positive_int(value: Any) -> int:
    return _parse_whole(value, 1, "a positive whole number")


def parse_nonnegative_int(value: Any) -> int:
    """A whole number >= 0 (limits where 0 means none)."""
    return _parse_whole(value, 0, "a whole number of 0 or more")


def parse_regex(value: Any) -> re.Pattern[str]:
    text = parse_str(value)
    try:
        return re.compile(text)
    except re.error as err:
        raise ValueError(f"invalid regular expression {text!r}: {err}") from None


def parse_path(value: Any) -> Path:
    return Path(parse_str(value)).expanduser()


def parse_optional_path(value: Any) -> Path | None:
    if value is None or value == "":
        return None
    return parse_path(value)


@dataclass(frozen=True)
class HostPort:
    host: str
    port: int

    def __str__(self) -> str:
        return f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"


def parse_hostport(value: Any) -> HostPort:
    """HOST:PORT, [IPv6]:PORT or :PORT (all interfaces)."""
    text = parse_str(value) if not isinstance(value, int) else f":{value}"
    match = re.fullmatch(r"\[([0-9A-Fa-f:.]+)\]:(\d+)|([^:\[\]]*):(\d+)", text.strip())
    if not match:
        raise ValueError(f"expected HOST:PORT such as 127.0.0.1:8080, got {text!r}")
    host = match.group(1) if match.group(1) is not None else match.group(3)
    port = int(match.group(2) or match.group(4))
    if not 0 <= port <= 65535:
        raise ValueError(f"port {port} is out of range")
    if match.group(1) is not None:
        ipaddress.IPv6Address(host)
    return HostPort(host or "0.0.0.0", port)


def flatten(document: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """{"a": {"b": 1}} → {"a.b": 1}; lists and scalars are leaves."""
    flat: dict[str, Any] = {}
    for key, value in document.items():
        if not isinstance(key, str):
            raise ConfigError(f"{prefix}{key!r}: keys must be strings")
        dotted = f"{prefix}{key}"
        if isinstance(value, Mapping) and value:
            flat.update(flatten(value, dotted + "."))
        else:
            flat[dotted] = value
    return flat


def read_yaml(path: Path) -> dict[str, Any]:
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as err:
        raise ConfigError(f"{path}: cannot read: {err.strerror or err}") from None
    try:
        document = yaml.safe_load(text)
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f" line {mark.line + 1}" if mark is not None else ""
        problem = getattr(err, "problem", None) or str(err)
        raise ConfigError(f"{path}:{where}: invalid YAML: {problem}") from None
    if document is None:
        return {}
    if not isinstance(document, Mapping):
        raise ConfigError(f"{path}: the top level must be a mapping of settings")
    return dict(document)


def load(
    settings: Iterable[Setting],
    *,
    path: Path | None = None,
    env: Mapping[str, str] | None = None,
    env_prefix: str = "VPSMON_",
    overrides: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """Resolve every setting: default < file < environment < overrides (CLI flags).

    Returns a flat dict keyed by the dotted setting name.
    """
    table = {s.name: s for s in settings}
    env = os.environ if env is None else env
    source = str(path) if path else "config"
    values: dict[str, Any] = {name: s.default for name, s in table.items()}

    if path is not None:
        raw = flatten(read_yaml(path))
        # A mapping-valued setting (e.g. labels) is a leaf even though flatten() split it.
        for key, value in list(raw.items()):
            if key in table:
                continue
            parent = next((name for name in table if key.startswith(name + ".")), None)
            if parent is not None:
                raw.pop(key)
                nested = raw.setdefault(parent, {})
                if isinstance(nested, dict):
                    nested[key[len(parent) + 1 :]] = value
                continue
            close = _closest(key, table)
            hint = f" (did you mean {close!r}?)" if close else ""
            raise ConfigError(f"{source}: unknown key {key!r}{hint}")
        for key, value in raw.items():
            values[key] = _parse(table[key], value, f"{source}: {key}")

    for name, setting in table.items():
        if not setting.from_env:
            continue
        var = setting.env_name(env_prefix)
        if var in env:
            values[name] = _parse(setting, env[var], f"environment {var}")
        elif setting.secret and var + "_FILE" in env:
            secret_path = Path(env[var + "_FILE"])
            try:
                secret = secret_path.read_text(encoding="utf-8").strip()
            except OSError as err:
                raise ConfigError(
                    f"environment {var}_FILE: cannot read {secret_path}: {err}"
                ) from None
            values[name] = _parse(setting, secret, f"environment {var}_FILE")

    for name, value in (overrides or {}).items():
        if value is None:
            continue
        if name not in table:
            raise ConfigError(f"unknown setting {name!r}")
        values[name] = _parse(table[name], value, f"option {name}")
    return values


def _parse(setting: Setting, value: Any, where: str) -> Any:
    try:
        return setting.parse(value)
    except (ValueError, TypeError) as err:
        raise ConfigError(f"{where}: {err}") from None


def _closest(key: str, table: Mapping[str, Setting]) -> str | None:
    import difflib

    match = difflib.get_close_matches(key, list(table), n=1, cutoff=0.7)
    return match[0] if match else None


def reference_markdown(title: str, settings: Iterable[Setting], env_prefix: str) -> str:
    """A Markdown table of the settings, used by docs/configuration.md and its test."""
    lines = [
        f"### {title}",
        "",
        "| key | environment | default | description |",
        "|---|---|---|---|",
    ]
    for s in settings:
        if s.secret and s.default is not None:
            default = "(secret)"
        elif s.parse is parse_duration and isinstance(s.default, float):
            default = f"`{format_duration(s.default)}`"
        else:
            default = _show_default(s.default)
        env = f"`{s.env_name(env_prefix)}`" if s.from_env else "—"
        # A | inside a cell (regex defaults) would end the cell.
        cells = [f"`{s.name}`", env, default, s.help]
        lines.append("| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |")
    return "\n".join(lines) + "\n"


def _show_default(value: Any) -> str:
    if value is None:
        return "unset"
    if isinstance(value, re.Pattern):
        return f"`{value.pattern}`"
    if isinstance(value, bool):
        return f"`{str(value).lower()}`"
    if isinstance(value, list | dict | tuple) and not value:
        return "empty"
    return f"`{value}`"
