"""Label matchers as Alertmanager writes them: `name="value"`, `!=`, `=~`, `!~`.

Regular expressions are fully anchored, as in Alertmanager and PromQL. A matcher list may be
given as strings (`severity=~"critical|warning"`), optionally wrapped in braces
(`{alertname="Down", instance!=""}`) — the forms Alertmanager's `matchers:` config and
amtool accept (https://prometheus.io/docs/alerting/latest/configuration/#matcher).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

OPS = ("=~", "!~", "!=", "=")

_MATCHER_RE = re.compile(
    r"""\s*([a-zA-Z_][a-zA-Z0-9_]*|"(?:[^"\\]|\\.)*")\s*(=~|!~|!=|=)\s*"""
    r"""("(?:[^"\\]|\\.)*"|[^,}"]*?)\s*(?:,|$)"""
)


class MatcherError(ValueError):
    """A matcher that cannot be parsed; the message quotes it."""


@dataclass(frozen=True)
class Matcher:
    name: str
    op: str
    value: str

    def __post_init__(self) -> None:
        if self.op not in OPS:
            raise MatcherError(f"unknown operator {self.op!r} (use =, !=, =~ or !~)")
        if self.op in ("=~", "!~"):
            try:
                object.__setattr__(self, "_regex", re.compile(f"(?:{self.value})\\Z", re.DOTALL))
            except re.error as err:
                raise MatcherError(f"{self}: invalid regular expression: {err}") from None

    def matches(self, labels: Mapping[str, str]) -> bool:
        value = labels.get(self.name, "")  # an absent label matches as the empty string
        if self.op == "=":
            return value == self.value
        if self.op == "!=":
            return value != self.value
        hit = self._regex.match(value) is not None  # type: ignore[attr-defined]
        return hit if self.op == "=~" else not hit

    def __str__(self) -> str:
        escaped = self.value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")
        return f'{self.name}{self.op}"{escaped}"'

    def to_json(self) -> dict[str, Any]:
        """Alertmanager API v2 matcher shape."""
        return {
            "name": self.name,
            "value": self.value,
            "isRegex": self.op in ("=~", "!~"),
            "isEqual": self.op in ("=", "=~"),
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Matcher:
        if not isinstance(data, Mapping):
            raise MatcherError(f"expected a matcher object, got {data!r}")
        name, value = data.get("name"), data.get("value")
        if not isinstance(name, str) or not re.fullmatch(r"[a-zA-Z_][a-zA-Z0-9_]*", name):
            raise MatcherError(f"invalid label name {name!r}")
        if not isinstance(value, str):
            raise MatcherError(f"matcher {name}: value must be a string")
        regex, equal = bool(data.get("isRegex", False)), bool(data.get("isEqual", True))
        op = {(False, True): "=", (False, False): "!=", (True, True): "=~", (True, False): "!~"}
        return cls(name, op[(regex, equal)], value)


def _unquote(text: str) -> str:
    if len(text) >= 2 and text[0] == text[-1] == '"':
        body = text[1:-1]
        return re.sub(r"\\(.)", lambda m: "\n" if m.group(1) == "n" else m.group(1), body)
    return text


def parse_matchers(text: str) -> list[Matcher]:
    """`a="1", b=~"x|y"` or `{a="1"}` → matchers; an empty string gives none."""
    body = text.strip()
    if body.startswith("{"):
        if not body.endswith("}"):
            raise MatcherError(f"missing closing brace in {text!r}")
        body = body[1:-1].strip()
    out: list[Matcher] = []
    pos = 0
    while pos < len(body):
        match = _MATCHER_RE.match(body, pos)
        if match is None or match.end() == pos:
            raise MatcherError(f'cannot parse matcher at {body[pos:]!r} (expected name="value")')
        name, op, value = match.groups()
        out.append(Matcher(_unquote(name), op, _unquote(value.strip())))
        pos = match.end()
    return out


def parse_matcher_list(value: Any, where: str) -> list[Matcher]:
    """A YAML `matchers:` value: a list of matcher strings (each may hold several)."""
    if value is None:
        return []
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, list):
        raise MatcherError(f'{where}: expected a list of matchers such as severity="critical"')
    out: list[Matcher] = []
    for item in value:
        if isinstance(item, Mapping):
            out.append(Matcher.from_json(item))
            continue
        if not isinstance(item, str):
            raise MatcherError(f"{where}: expected a matcher string, got {item!r}")
        try:
            out.extend(parse_matchers(item))
        except MatcherError as err:
            raise MatcherError(f"{where}: {err}") from None
    return out


def matches_all(matchers: Iterable[Matcher], labels: Mapping[str, str]) -> bool:
    return all(m.matches(labels) for m in matchers)
