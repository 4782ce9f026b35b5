"""`vpsmon rules test`: promtool's rule unit test format, and the same verdicts as promtool."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import require_binary

HERE = Path(__file__).parent
REPO = HERE.parent.parent
OURS = sorted((HERE / "ruletests").glob("*.test.yml"))
SHIPPED = sorted((REPO / "rules" / "tests").glob("*.test.yml"))


def vpsmon_test(*files: Path) -> subprocess.CompletedProcess[str]:
    exe = str(Path(sys.executable).parent / "vpsmon")
    return subprocess.run(
        [exe, "rules", "test", *map(str, files)], capture_output=True, text=True, timeout=300
    )


def promtool_test(*files: Path) -> subprocess.CompletedProcess[str]:
    promtool = require_binary("promtool")
    return subprocess.run(
        [promtool, "test", "rules", *map(str, files)], capture_output=True, text=True, timeout=300
    )


@pytest.mark.parametrize("path", OURS + SHIPPED, ids=lambda p: p.name)
def test_vpsmon_and_promtool_give_the_same_verdict(path: Path) -> None:
    ours, theirs = vpsmon_test(path), promtool_test(path)
    assert ours.returncode == theirs.returncode, (ours.stdout + ours.stderr, theirs.stderr)
    want = 1 if path.name.startswith("fail_") else 0
    assert ours.returncode == want, ours.stdout + ours.stderr


def test_the_shipped_rule_tests_pass() -> None:
    assert SHIPPED, "rules/tests/ ships unit tests"
    result = vpsmon_test(*SHIPPED)
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.count("  SUCCESS") == len(SHIPPED)


def test_a_failed_alert_test_shows_expected_and_got_like_promtool() -> None:
    result = vpsmon_test(HERE / "ruletests" / "fail_wrong_alert.test.yml")
    assert result.returncode == 1
    assert "    alertname: InstanceDown, time: 5m, \n        exp:[" in result.stderr
    assert 'Labels:{alertname="InstanceDown", instance="b", job="api", severity="ticket"}' in (
        result.stderr
    )


def test_an_evaluation_error_stops_the_test_group_with_the_rule_and_time() -> None:
    result = vpsmon_test(HERE / "ruletests" / "fail_eval_error.test.yml")
    assert result.returncode == 1
    assert "    rule: same, time: 0s, err: vector contains metrics with the same labelset" in (
        result.stderr
    )


def test_a_missing_test_file_fails_cleanly(tmp_path: Path) -> None:
    result = vpsmon_test(tmp_path / "nope.yml")
    assert result.returncode == 1 and "Traceback" not in result.stderr
