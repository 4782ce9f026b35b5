"""The rule manager: loading, reloading on change and on request, broken files keep old rules."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path
from typing import Any

from vpsmon.collector.promql import Engine, MemorySource
from vpsmon.collector.rules.api import RulesApi
from vpsmon.collector.rules.engine import engine_query
from vpsmon.collector.rules.manager import RuleManager, next_evaluation
from vpsmon.collector.rules.model import OutputSample
from vpsmon.collector.storage.query import is_stale_marker

ONE = """groups:
  - name: g
    rules:
      - alert: Down
        expr: up == 0
        labels: {severity: page}
"""
TWO = (
    ONE
    + """      - record: job:up:sum
        expr: sum by (job) (up)
"""
)


def manager(tmp_path: Path, source: MemorySource) -> tuple[RuleManager, list[OutputSample]]:
    written: list[OutputSample] = []

    async def append(samples: list[OutputSample]) -> None:
        written.extend(samples)
        for s in samples:
            source.add(s.labels, s.timestamp, s.value)

    async def notify(alerts: list[dict[str, Any]]) -> None:
        return None

    m = RuleManager(
        [str(tmp_path / "*.yml")],
        query=engine_query(Engine(source)),
        append=append,
        notify=notify,
        watch_interval=0.05,
    )
    return m, written


def touch(path: Path, text: str) -> None:
    path.write_text(text)
    st = path.stat()
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000_000))


async def test_a_broken_file_keeps_the_old_rules_and_reports_its_errors(tmp_path: Path) -> None:
    source = MemorySource()
    m, _ = manager(tmp_path, source)
    path = tmp_path / "a.yml"
    path.write_text(ONE)
    assert await m.reload()
    (group,) = m.groups.values()
    path.write_text("groups:\n  - name: g\n    rules:\n      - alert: X\n        expr: up ==\n")
    assert not await m.reload()
    assert list(m.groups.values()) == [group]  # the same group object keeps running
    (errors,) = m.errors().values()
    assert "could not parse expression" in errors[0]
    assert RulesApi(m).file_errors() == {str(path): errors}
    path.write_text(TWO)
    assert await m.reload()
    assert m.errors() == {} and len(next(iter(m.groups.values())).rules) == 2


async def test_a_changed_group_keeps_its_alerts_across_a_reload(tmp_path: Path) -> None:
    source = MemorySource()
    source.add({"__name__": "up", "job": "node", "instance": "a"}, 0, 0)
    m, _ = manager(tmp_path, source)
    (tmp_path / "a.yml").write_text(ONE)
    await m.reload()
    group = next(iter(m.groups.values()))
    await m.evaluate_group(group, 10)
    (tmp_path / "a.yml").write_text(TWO)
    await m.reload()
    new = next(iter(m.groups.values()))
    assert new is not group
    (alert,) = new.alerting_rules()[0].active.values()
    assert alert.active_at == 10


async def test_running_manager_reloads_when_a_file_changes_and_on_request(tmp_path: Path) -> None:
    source = MemorySource()
    m, written = manager(tmp_path, source)
    path = tmp_path / "a.yml"
    path.write_text(TWO)
    stop = asyncio.Event()
    task = asyncio.create_task(m.run(stop))
    try:
        for _ in range(100):
            if m.groups:
                break
            await asyncio.sleep(0.02)
        assert sum(len(g.rules) for g in m.groups.values()) == 2
        touch(path, ONE)
        for _ in range(200):
            if sum(len(g.rules) for g in m.groups.values()) == 1:
                break
            await asyncio.sleep(0.02)
        assert sum(len(g.rules) for g in m.groups.values()) == 1
        (tmp_path / "b.yml").write_text(TWO.replace("name: g", "name: h"))
        m.request_reload()  # what SIGHUP does
        for _ in range(200):
            if len(m.groups) == 2:
                break
            await asyncio.sleep(0.02)
        assert len(m.groups) == 2
    finally:
        stop.set()
        await asyncio.wait_for(task, 5)


async def test_a_removed_group_marks_its_series_stale(tmp_path: Path) -> None:
    source = MemorySource()
    source.add({"__name__": "up", "job": "node", "instance": "a"}, 0, 1)
    m, written = manager(tmp_path, source)
    path = tmp_path / "a.yml"
    path.write_text(TWO)
    await m.reload()
    await m.evaluate_group(next(iter(m.groups.values())), 5)
    path.unlink()
    await m.reload()
    assert m.groups == {}
    stale = [s for s in written if is_stale_marker(s.value)]
    assert [s.labels["__name__"] for s in stale] == ["job:up:sum"]


def test_evaluation_times_are_aligned_to_the_interval() -> None:
    assert next_evaluation(100.0, 15.0, 3.0) == 108.0
    assert next_evaluation(108.0, 15.0, 3.0) == 123.0
