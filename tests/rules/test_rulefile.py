"""Rule files: strict reading, errors naming file, line, group and rule; promtool agrees."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from tests.conftest import require_binary
from vpsmon.collector.rules.rulefile import RuleFileError, load_rule_file, parse_rule_file

FIXTURES = Path(__file__).parent / "fixtures"
GOOD = sorted(FIXTURES.glob("*.good.yml"))
BAD = sorted(FIXTURES.glob("*.bad.yml"))


def expected_error(path: Path) -> str:
    first = path.read_text().splitlines()[0]
    assert first.startswith("# error: "), f"{path.name} must start with '# error: ...'"
    return first.removeprefix("# error: ")


@pytest.mark.parametrize(
    "path", GOOD + sorted((FIXTURES / "newer").glob("*.yml")), ids=lambda p: p.name
)
def test_good_rule_file_loads(path: Path) -> None:
    load_rule_file(path)


@pytest.mark.parametrize("path", BAD, ids=lambda p: p.name)
def test_bad_rule_file_is_refused_with_the_expected_error(path: Path) -> None:
    with pytest.raises(RuleFileError) as info:
        load_rule_file(path)
    want = expected_error(path)
    assert any(want in line for line in info.value.errors), info.value.errors
    assert all(line.startswith(str(path) + ": ") for line in info.value.errors)


def test_rule_file_model_keeps_every_field() -> None:
    rf = load_rule_file(FIXTURES / "recording_and_alerting.good.yml")
    node, empty = rf.groups
    assert (node.name, node.interval, node.limit, empty.rules) == ("node", 30.0, 100, ())
    record, alert = node.rules
    assert record.kind == "record" and record.labels == {"source": "rules"}
    assert alert.kind == "alert" and alert.for_ == 300 and alert.keep_firing_for == 60
    assert alert.labels == {"severity": "critical", "team": "{{ $labels.job }}"}
    assert alert.annotations["summary"] == "{{ $labels.instance }} is down"
    assert (record.index, alert.index) == (1, 2)


def test_newer_group_fields_are_read() -> None:
    rf = load_rule_file(FIXTURES / "newer" / "group_labels_and_query_offset.good.yml")
    (group,) = rf.groups
    assert group.query_offset == 60 and group.labels == {"team": "infra"}


def test_every_problem_in_a_file_is_reported_at_once() -> None:
    text = """groups:
  - name: g
    rules:
      - record: a b
        expr: up
        for: 1m
      - alert: X
        expr: "rate(up"
"""
    with pytest.raises(RuleFileError) as info:
        parse_rule_file(text, "x.yml")
    assert len(info.value.errors) == 3
    assert 'x.yml: 8:15: group "g", rule 2, "X": could not parse expression' in str(info.value)


def test_duplicate_yaml_keys_are_an_error_not_silently_the_last_one() -> None:
    text = (
        "groups:\n  - name: g\n    rules:\n      - alert: A\n        expr: up\n        expr: down\n"
    )
    with pytest.raises(RuleFileError, match='mapping key "expr" already defined at line 5'):
        parse_rule_file(text, "x.yml")


def test_promtool_agrees_on_every_fixture() -> None:
    """The same fixtures pass and fail under Debian's `promtool check rules`."""
    promtool = require_binary("promtool")
    for path in GOOD + BAD:
        result = subprocess.run(
            [promtool, "check", "rules", str(path)], capture_output=True, text=True, timeout=60
        )
        assert (result.returncode == 0) == path.name.endswith(".good.yml"), (path, result.stderr)
