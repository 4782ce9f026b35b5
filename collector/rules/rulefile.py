"""Rule files in Prometheus' format, read strictly.

The format is Prometheus' rulefmt
(https://prometheus.io/docs/prometheus/latest/configuration/recording_rules/):

    groups:
      - name: <string>                 # unique in the file
        interval: <duration>           # default: the manager's evaluation interval
        query_offset: <duration>       # evaluate at now - offset (Prometheus 2.53+)
        limit: <int>                   # 0 = no limit on series / alerts per rule
        labels: {<name>: <value>}      # added to every rule's results (Prometheus 3.0+)
        rules:
          - record: <metric name>      # or
            alert: <string>
            expr: <PromQL>
            for: <duration>            # alerting rules only
            keep_firing_for: <duration>
            labels: {<name>: <template>}
            annotations: {<name>: <template>}

Every problem in a file is reported, each naming the file, the line and column, the group and
the rule, as ``promtool check rules`` does; a file with any error yields no rules.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import yaml

from vpsmon.collector.rules.durations import parse_duration
from vpsmon.collector.rules.template import TemplateError, parse_alert_template

METRIC_NAME = re.compile(r"^[a-zA-Z_:][a-zA-Z0-9_:]*$")
LABEL_NAME = re.compile(r"^[a-zA-Z_][a-zA-Z0-9_]*$")

GROUP_KEYS = ("name", "interval", "query_offset", "limit", "labels", "rules")
RULE_KEYS = ("record", "alert", "expr", "for", "keep_firing_for", "labels", "annotations")

ExprCheck = Callable[[str], None]  # raises ValueError with a message for a bad expression


def check_promql_syntax(expr: str) -> None:
    """Parse ``expr`` as the PromQL engine would; unsupported constructs are errors too."""
    try:
        from vpsmon.collector.promql import Engine, PromQLError
    except ImportError:  # the engine lands separately (issue #8); until then, syntax only
        import promql_parser

        try:
            promql_parser.parse(expr)
        except ValueError as err:
            raise ValueError(f"parse error: {err}") from None
        return
    try:
        Engine.check(expr)
    except PromQLError as err:
        raise ValueError(str(err)) from None


@dataclass(frozen=True)
class RuleSpec:
    """One recording or alerting rule as written in the file."""

    kind: Literal["record", "alert"]
    name: str
    expr: str
    for_: float = 0.0
    keep_firing_for: float = 0.0
    labels: dict[str, str] = field(default_factory=dict)
    annotations: dict[str, str] = field(default_factory=dict)
    index: int = 1  # 1-based position in its group, as promtool counts
    line: int = 0


@dataclass(frozen=True)
class GroupSpec:
    file: str
    name: str
    rules: tuple[RuleSpec, ...]
    interval: float | None = None
    query_offset: float | None = None
    limit: int = 0
    labels: dict[str, str] = field(default_factory=dict)
    line: int = 0

    @property
    def key(self) -> str:
        """Prometheus' group key: file and name (GroupKey)."""
        return f"{self.file};{self.name}"


@dataclass(frozen=True)
class RuleFile:
    path: str
    groups: tuple[GroupSpec, ...]

    @property
    def rule_count(self) -> int:
        return sum(len(g.rules) for g in self.groups)


class RuleFileError(ValueError):
    """A rule file that cannot be used; ``errors`` lists every problem, one line each."""

    def __init__(self, path: str, errors: list[str]) -> None:
        self.path = path
        self.errors = errors
        super().__init__("\n".join(errors))


def _at(node: yaml.Node) -> str:
    return f"{node.start_mark.line + 1}:{node.start_mark.column + 1}"


class _Reader:
    """Walks the YAML node tree, so every error can say where it is."""

    def __init__(self, path: str, check_expr: ExprCheck) -> None:
        self.path = path
        self.check_expr = check_expr
        self.errors: list[str] = []

    def fail(self, message: str, node: yaml.Node | None = None) -> None:
        where = f"{_at(node)}: " if node is not None else ""
        self.errors.append(f"{self.path}: {where}{message}")

    def mapping(self, node: yaml.Node, what: str, context: str) -> list[tuple[str, yaml.Node]]:
        if isinstance(node, yaml.ScalarNode) and node.tag == "tag:yaml.org,2002:null":
            return []
        if not isinstance(node, yaml.MappingNode):
            self.fail(f"{context}{what} must be a mapping", node)
            return []
        seen: dict[str, yaml.Node] = {}
        items = []
        for key_node, value in node.value:
            key = str(key_node.value)
            if key in seen:
                self.fail(
                    f'{context}mapping key "{key}" already defined at line '
                    f"{seen[key].start_mark.line + 1}",
                    key_node,
                )
                continue
            seen[key] = key_node
            items.append((key, value))
        return items

    def string(self, node: yaml.Node, what: str, context: str) -> str | None:
        if isinstance(node, yaml.ScalarNode):
            if node.tag == "tag:yaml.org,2002:null":
                return ""
            return str(node.value)
        self.fail(f"{context}{what} must be a string", node)
        return None

    def duration(self, node: yaml.Node, what: str, context: str) -> float | None:
        text = self.string(node, what, context)
        if text is None:
            return None
        try:
            return parse_duration(text)
        except ValueError as err:
            self.fail(f"{context}{what}: {err}", node)
            return None

    def string_map(self, node: yaml.Node, what: str, context: str) -> dict[str, str]:
        out = {}
        for key, value in self.mapping(node, what, context):
            text = self.string(value, f"{what}.{key}", context)
            if text is not None:
                out[key] = text
        return out

    # -- the file
    def read(self, text: str) -> tuple[GroupSpec, ...]:
        try:
            root = yaml.compose(text, Loader=yaml.SafeLoader)
        except yaml.YAMLError as err:
            self.fail(f"invalid YAML: {_yaml_message(err)}")
            return ()
        if root is None:
            return ()  # an empty file has no groups, like promtool
        items = self.mapping(root, "the file", "")
        groups_node = None
        for key, value in items:
            if key == "groups":
                groups_node = value
            else:
                self.fail(f'unknown field "{key}" at the top level (expected "groups")', root)
        if groups_node is None:
            return ()
        if isinstance(groups_node, yaml.ScalarNode) and groups_node.value in ("", "null", "~"):
            return ()
        if not isinstance(groups_node, yaml.SequenceNode):
            self.fail("groups must be a list of groups", groups_node)
            return ()
        groups = []
        names: set[str] = set()
        for group_node in groups_node.value:
            group = self.group(group_node, names)
            if group is not None:
                groups.append(group)
        return tuple(groups)

    def group(self, node: yaml.Node, names: set[str]) -> GroupSpec | None:
        values: dict[str, yaml.Node] = {}
        for key, value in self.mapping(node, "a group", ""):
            values[key] = value
        name = self.string(values["name"], "name", "") if "name" in values else ""
        name = name or ""
        context = f'group "{name}": '
        for key in values:
            if key not in GROUP_KEYS:
                self.fail(
                    f'{context}unknown field "{key}" (allowed: {", ".join(GROUP_KEYS)})', node
                )
        if not name:
            self.fail("Groupname must not be empty", node)
        elif name in names:
            self.fail(f'groupname: "{name}" is repeated in the same file', node)
        names.add(name)
        interval = query_offset = None
        if "interval" in values:
            interval = self.duration(values["interval"], "interval", context)
            if interval == 0:
                interval = None
        if "query_offset" in values:
            query_offset = self.duration(values["query_offset"], "query_offset", context)
        limit = 0
        if "limit" in values:
            limit_node = values["limit"]
            try:
                limit = int(str(limit_node.value)) if isinstance(limit_node, yaml.ScalarNode) else 0
            except ValueError:
                self.fail(f"{context}limit must be an integer", limit_node)
        labels: dict[str, str] = {}
        if "labels" in values:
            labels_node = values["labels"]
            labels = self.string_map(labels_node, "labels", context)
            for key, text in labels.items():
                self.label_problems(key, text, lambda m: self.fail(context + m, labels_node))
        rules: list[RuleSpec] = []
        rules_node = values.get("rules")
        if rules_node is not None and not (
            isinstance(rules_node, yaml.ScalarNode) and rules_node.value in ("", "null", "~")
        ):
            if not isinstance(rules_node, yaml.SequenceNode):
                self.fail(f"{context}rules must be a list", rules_node)
            else:
                for index, rule_node in enumerate(rules_node.value, start=1):
                    rule = self.rule(rule_node, name, index)
                    if rule is not None:
                        rules.append(rule)
        return GroupSpec(
            file=self.path,
            name=name,
            rules=tuple(rules),
            interval=interval,
            query_offset=query_offset,
            limit=limit,
            labels=labels,
            line=node.start_mark.line + 1,
        )

    def label_problems(self, key: str, value: str, fail: Callable[[str], None]) -> None:
        if not LABEL_NAME.match(key) or key == "__name__":
            fail(f"invalid label name: {key}")
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            fail(f"invalid label value: {value}")

    def rule(self, node: yaml.Node, group: str, index: int) -> RuleSpec | None:
        values: dict[str, yaml.Node] = dict(self.mapping(node, "a rule", f'group "{group}": '))
        record = self.string(values["record"], "record", "") if "record" in values else ""
        alert = self.string(values["alert"], "alert", "") if "alert" in values else ""
        record, alert = record or "", alert or ""
        name = alert or record
        context = f'group "{group}", rule {index}, "{name}": '
        errors_before = len(self.errors)

        def fail(message: str, at: yaml.Node | None = None) -> None:
            where = f"{_at(at)}: " if at is not None else ""
            self.errors.append(f"{self.path}: {where}{context}{message}")

        for key in values:
            if key not in RULE_KEYS:
                fail(f'unknown field "{key}" (allowed: {", ".join(RULE_KEYS)})', values[key])
        if record and alert:
            fail("only one of 'record' and 'alert' must be set", values["record"])
        if not record and not alert:
            fail("one of 'record' or 'alert' must be set", node)
        expr_node = values.get("expr")
        expr = (self.string(expr_node, "expr", context) if expr_node is not None else "") or ""
        if not expr.strip():
            fail("field 'expr' must be set in rule", expr_node or node)
        else:
            try:
                self.check_expr(expr)
            except ValueError as err:
                fail(f"could not parse expression: {err}", expr_node)
        for_ = keep = 0.0
        if "for" in values:
            for_ = self.duration(values["for"], "for", context) or 0.0
        if "keep_firing_for" in values:
            keep = self.duration(values["keep_firing_for"], "keep_firing_for", context) or 0.0
        labels = self.string_map(values["labels"], "labels", context) if "labels" in values else {}
        annotations = (
            self.string_map(values["annotations"], "annotations", context)
            if "annotations" in values
            else {}
        )
        if record:
            at = values["record"]
            if annotations:
                fail("invalid field 'annotations' in recording rule", at)
            if for_:
                fail("invalid field 'for' in recording rule", at)
            if keep:
                fail("invalid field 'keep_firing_for' in recording rule", at)
            if not METRIC_NAME.match(record):
                fail(f"invalid recording rule name: {record}", at)
        for key, value in labels.items():
            self.label_problems(key, value, fail)
        for key in annotations:
            if not LABEL_NAME.match(key):
                fail(f"invalid annotation name: {key}")
        if alert:
            for what, texts in (("label", labels), ("annotation", annotations)):
                for key, text in texts.items():
                    try:
                        parse_alert_template(text, alert)
                    except TemplateError as err:
                        fail(f'{what} "{key}": {err}')
        if len(self.errors) > errors_before:
            return None
        return RuleSpec(
            kind="record" if record else "alert",
            name=name,
            expr=expr,
            for_=for_,
            keep_firing_for=keep,
            labels=labels,
            annotations=annotations,
            index=index,
            line=node.start_mark.line + 1,
        )


def _yaml_message(err: yaml.YAMLError) -> str:
    mark = getattr(err, "problem_mark", None)
    problem = getattr(err, "problem", None) or str(err)
    if mark is not None:
        return f"line {mark.line + 1}, column {mark.column + 1}: {problem}"
    return str(problem)


def parse_rule_file(text: str, path: str, check_expr: ExprCheck | None = None) -> RuleFile:
    """The groups of one rule file; raises RuleFileError listing every problem."""
    reader = _Reader(path, check_expr or check_promql_syntax)
    groups = reader.read(text)
    if reader.errors:
        raise RuleFileError(path, reader.errors)
    return RuleFile(path, groups)


def load_rule_file(path: str | Path, check_expr: ExprCheck | None = None) -> RuleFile:
    name = str(path)
    try:
        text = Path(path).read_text(encoding="utf-8")
    except FileNotFoundError:
        raise RuleFileError(name, [f"{name}: no such file"]) from None
    except (OSError, UnicodeDecodeError) as err:
        raise RuleFileError(name, [f"{name}: cannot read: {err}"]) from None
    return parse_rule_file(text, name, check_expr)


def duplicate_rules(rule_file: RuleFile) -> list[tuple[str, dict[str, str]]]:
    """Rules sharing a name and labels (promtool's duplicate-rules lint), sorted."""
    counts: dict[tuple[str, tuple[tuple[str, str], ...]], int] = {}
    for group in rule_file.groups:
        for rule in group.rules:
            key = (rule.name, tuple(sorted(rule.labels.items())))
            counts[key] = counts.get(key, 0) + 1
    return [(name, dict(labels)) for (name, labels), n in sorted(counts.items()) if n > 1]
