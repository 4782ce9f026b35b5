"""Label sets as the engine keeps them: sorted tuples of (name, value), hashable and ordered
the way Prometheus compares label sets (labels.Compare)."""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping

Labels = tuple[tuple[str, str], ...]

METRIC_NAME = "__name__"
LABEL_NAME_RE = re.compile(r"[a-zA-Z_][a-zA-Z0-9_]*\Z")


def from_mapping(labels: Mapping[str, str]) -> Labels:
    return tuple(sorted((k, v) for k, v in labels.items() if v != ""))


def from_pairs(pairs: Iterable[tuple[str, str]]) -> Labels:
    return tuple(sorted((k, v) for k, v in pairs if v != ""))


def drop_name(labels: Labels) -> Labels:
    if not labels:
        return labels
    if labels[0][0] == METRIC_NAME:  # the usual place: "_" sorts before lowercase names
        return labels[1:]
    for k, _ in labels:
        if k == METRIC_NAME:
            return tuple(p for p in labels if p[0] != METRIC_NAME)
    return labels


def get(labels: Labels, name: str) -> str:
    for k, v in labels:
        if k == name:
            return v
    return ""


def keep(labels: Labels, names: frozenset[str]) -> Labels:
    return tuple(p for p in labels if p[0] in names)


_ONLY_NAME = frozenset({METRIC_NAME})


def without(labels: Labels, names: frozenset[str]) -> Labels:
    if names == _ONLY_NAME:
        return drop_name(labels)
    return tuple(p for p in labels if p[0] not in names)


def with_label(labels: Labels, name: str, value: str) -> Labels:
    rest = [p for p in labels if p[0] != name]
    if value != "":
        rest.append((name, value))
    return tuple(sorted(rest))


def to_dict(labels: Labels) -> dict[str, str]:
    return dict(labels)


def format_labels(labels: Labels) -> str:
    inner = ", ".join(f'{k}="{v}"' for k, v in labels)
    return "{" + inner + "}"


def valid_label_name(name: str) -> bool:
    return LABEL_NAME_RE.match(name) is not None
