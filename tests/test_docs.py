"""Docs that cannot drift: settings, collectors, metrics and CLI commands must be documented."""

from __future__ import annotations

import re
from pathlib import Path

import click

from tools.configdocs import tables
from vpsmon.cli import cli
from vpsmon.exporter.collection import Collection
from vpsmon.exporter.collectors import COLLECTORS
from vpsmon.exporter.collectors.base import Context
from vpsmon.exporter.config import load_config

DOCS = Path(__file__).resolve().parent.parent / "docs"
README = Path(__file__).resolve().parent.parent / "README.md"


def test_configuration_reference_matches_the_settings_tables() -> None:
    text = (DOCS / "configuration.md").read_text()
    assert tables() in text, "docs/configuration.md is stale: paste `python tools/configdocs.py`"


def test_every_collector_and_every_series_it_emits_is_in_the_metrics_reference() -> None:
    text = (DOCS / "metrics.md").read_text()
    config = load_config(None, env={})
    payload = Collection(COLLECTORS, Context(options=config.options)).collect_once()
    missing = [f"### {s.name}" for s in COLLECTORS if f"### {s.name}\n" not in text]
    missing += sorted({f.name for f in payload.families if f"`{f.name}`" not in text})
    assert missing == []


def _commands(group: click.Group, prefix: str = "") -> list[str]:
    found = []
    for name, command in group.commands.items():
        path = f"{prefix}{name}"
        if isinstance(command, click.Group):
            found += _commands(command, path + " ")
        else:
            found.append(path)
    return found


def test_every_cli_command_is_in_the_cli_reference() -> None:
    text = (DOCS / "cli.md").read_text()
    missing = [c for c in _commands(cli) if f"vpsmon {c}" not in text]
    assert missing == []


def test_readme_starts_with_the_two_commands() -> None:
    text = README.read_text()
    blocks = re.findall(r"```(?:sh|bash)?\n(.*?)```", text, re.S)
    assert blocks and blocks[0].strip().splitlines() == ["make up"]
    assert blocks[1].strip().splitlines() == ["make test"]
