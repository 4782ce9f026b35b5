"""`vpsmon rules check`: promtool check rules' report and exit codes for our reader.

Exit codes as promtool: 0 all files valid (lint findings are printed but do not fail),
1 any file invalid, 3 only lint findings and ``lint_fatal``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TextIO

from vpsmon.collector.rules.rulefile import (
    ExprCheck,
    RuleFileError,
    duplicate_rules,
    load_rule_file,
)

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_LINT = 3


@dataclass(frozen=True)
class FileReport:
    path: str
    rules: int
    errors: tuple[str, ...]
    lint: tuple[str, ...]


def check_file(path: str, lint: bool = True, check_expr: ExprCheck | None = None) -> FileReport:
    try:
        rule_file = load_rule_file(path, check_expr)
    except RuleFileError as err:
        return FileReport(path, 0, tuple(err.errors), ())
    findings: tuple[str, ...] = ()
    if lint:
        dups = duplicate_rules(rule_file)
        if dups:
            text = f"lint error {len(dups)} duplicate rule(s) found.\n"
            for name, labels in dups:
                text += f"Metric: {name}\nLabel(s):\n"
                text += "".join(f"\t{k}: {v}\n" for k, v in labels.items())
            text += "Might cause inconsistency while recording expressions"
            findings = (text,)
    return FileReport(path, rule_file.rule_count, (), findings)


def check_files(
    paths: Sequence[str],
    out: TextIO,
    err: TextIO,
    *,
    lint: bool = True,
    lint_fatal: bool = False,
    check_expr: ExprCheck | None = None,
) -> int:
    failed = linted = False
    for path in paths:
        print(f"Checking {path}", file=out)
        report = check_file(path, lint, check_expr)
        if report.errors or report.lint:
            print("  FAILED:", file=err)
            for line in report.errors or report.lint:
                print(line, file=err)
            failed = failed or bool(report.errors)
            linted = linted or bool(report.lint)
        else:
            print(f"  SUCCESS: {report.rules} rules found", file=out)
        print(file=out)
    if failed:
        return EXIT_FAILED
    if linted and lint_fatal:
        return EXIT_LINT
    return EXIT_OK
