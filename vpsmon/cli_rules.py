"""`vpsmon rules check|test`: promtool's rule commands, with promtool's output and exit codes."""

from __future__ import annotations

import sys

import click


@click.group()
def rules() -> None:
    """Check and test Prometheus-format rule files (as promtool does).

    \b
    Examples:
      vpsmon rules check rules/*.yml
      vpsmon rules test rules/tests/*.test.yml
    """


@rules.command("check")
@click.argument("files", nargs=-1, required=True)
@click.option(
    "--lint",
    type=click.Choice(["duplicate-rules", "all", "none"]),
    default="duplicate-rules",
    show_default=True,
    help="Lint checks to apply.",
)
@click.option("--lint-fatal", is_flag=True, help="Exit with code 3 on lint findings.")
def rules_check(files: tuple[str, ...], lint: str, lint_fatal: bool) -> None:
    """Check that rule files are valid: YAML, fields, durations, PromQL and templates.

    Exit code 0 when every file is valid, 1 when any is not, 3 for lint findings only with
    --lint-fatal (as `promtool check rules`).

    \b
    Examples:
      vpsmon rules check rules/*.yml
      vpsmon rules check --lint-fatal my-rules.yml
    """
    from vpsmon.collector.rules.check import check_files

    code = check_files(
        list(files), sys.stdout, sys.stderr, lint=lint != "none", lint_fatal=lint_fatal
    )
    sys.exit(code)


@rules.command("test")
@click.argument("files", nargs=-1, required=True)
def rules_test(files: tuple[str, ...]) -> None:
    """Run rule unit tests written in promtool's format.

    Input series in expanding notation (0+10x100, _, stale), alert_rule_test and
    promql_expr_test, evaluated with vpsmon's PromQL engine. Exit code 0 when every test
    passes, 1 otherwise (as `promtool test rules`).

    \b
    Examples:
      vpsmon rules test rules/tests/*.test.yml
    """
    import asyncio
    import logging

    from vpsmon.collector.rules.ruletest import run_test_files

    # Failed evaluations are reported in the test output; no log lines in between.
    logging.getLogger("vpsmon.rules").setLevel(logging.CRITICAL)

    sys.exit(asyncio.run(run_test_files(list(files), sys.stdout, sys.stderr)))
