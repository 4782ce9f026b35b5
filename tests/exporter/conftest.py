"""Fixtures for the exporter's collector tests."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import pytest
from collector_testkit import FIXTURES, default_options

from vpsmon.exporter.collectors.base import Context


@pytest.fixture
def fixture_context() -> Callable[..., Context]:
    """A Context over tests/exporter/fixtures, with options at their defaults plus overrides."""

    def make(options: Mapping[str, Any] | None = None, **paths: Path) -> Context:
        return Context(
            proc=paths.get("proc", FIXTURES / "proc"),
            sys=paths.get("sys", FIXTURES / "sys"),
            rootfs=paths.get("rootfs", FIXTURES / "rootfs"),
            options=default_options(**(options or {})),
        )

    return make
