"""`vpsmon rules check`: promtool's report and exit codes."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from tests.conftest import require_binary

FIXTURES = Path(__file__).parent / "fixtures"
REPO = Path(__file__).resolve().parent.parent.parent


def vpsmon(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [_vpsmon(), *args],
        capture_output=True,
        text=True,
        timeout=120,
    )


def _vpsmon() -> str:
    return str(Path(sys.executable).parent / "vpsmon")


def test_check_prints_success_with_the_rule_count_and_exits_0() -> None:
    result = vpsmon("rules", "check", str(FIXTURES / "recording_and_alerting.good.yml"))
    assert result.returncode == 0, result.stderr
    assert "  SUCCESS: 2 rules found" in result.stdout


def test_check_exits_1_and_lists_errors_when_any_file_is_bad() -> None:
    good = FIXTURES / "empty.good.yml"
    bad = FIXTURES / "record_with_for.bad.yml"
    result = vpsmon("rules", "check", str(good), str(bad))
    assert result.returncode == 1
    assert "  FAILED:" in result.stderr
    assert "invalid field 'for' in recording rule" in result.stderr


def test_duplicate_rules_are_a_lint_finding_fatal_only_with_lint_fatal(tmp_path: Path) -> None:
    path = tmp_path / "dup.yml"
    rule = "      - record: a\n        expr: up\n        labels: {x: y}\n"
    path.write_text("groups:\n  - name: g\n    rules:\n" + rule + rule)
    assert vpsmon("rules", "check", str(path)).returncode == 0
    lint = vpsmon("rules", "check", "--lint-fatal", str(path))
    assert lint.returncode == 3 and "1 duplicate rule(s) found" in lint.stderr
    assert vpsmon("rules", "check", "--lint=none", "--lint-fatal", str(path)).returncode == 0


def test_exit_codes_match_promtool_on_the_same_files(tmp_path: Path) -> None:
    promtool = require_binary("promtool")
    dup = tmp_path / "dup.yml"
    rule = "      - alert: A\n        expr: up\n"
    dup.write_text("groups:\n  - name: g\n    rules:\n" + rule + rule)
    cases = [
        [str(FIXTURES / "recording_and_alerting.good.yml")],
        [str(FIXTURES / "empty.good.yml"), str(FIXTURES / "bad_duration.bad.yml")],
        ["--lint-fatal", str(dup)],
        [str(dup)],
    ]
    for args in cases:
        ours = vpsmon("rules", "check", *args).returncode
        theirs = subprocess.run(
            [promtool, "check", "rules", *args], capture_output=True, timeout=60
        ).returncode
        assert ours == theirs, args


def test_the_shipped_rules_pass_our_check_and_promtools() -> None:
    files = sorted(str(p) for p in (REPO / "rules").glob("*.yml"))
    assert files, "rules/ ships rule files"
    assert vpsmon("rules", "check", *files).returncode == 0
    promtool = require_binary("promtool")
    result = subprocess.run([promtool, "check", "rules", *files], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
