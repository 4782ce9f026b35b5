"""Import of exposition text with timestamps: the parser, `vpsmon import`, and the engine
reading the imported samples back through the storage reader (issue #8)."""

from __future__ import annotations

import asyncio
import math
import subprocess
from pathlib import Path

import asyncpg
import pytest

from tests.e2e.procs import VPSMON, base_env
from vpsmon.collector.promql import Engine
from vpsmon.collector.promql.importer import InvalidImport, parse_import
from vpsmon.collector.storage.reader import StorageReader


def test_the_parser_reads_labels_escapes_special_values_and_skips_comments() -> None:
    text = (
        "# HELP m a metric\n"
        "# TYPE m gauge\n"
        'm{path="C:\\\\x",quote="say \\"hi\\"",nl="a\\nb",empty=""} NaN 1700000000000\n'
        "m{} +Inf 1700000001000\n"
        "  m -Inf 1700000002000  \n"
        'm{path="C:\\\\x",quote="say \\"hi\\"",nl="a\\nb"} 1.5e3 1700000000500\n'
    )
    parsed = parse_import(text)
    assert parsed.samples == 4
    by_labels = {s.labels: s for s in parsed.series}
    odd = by_labels[(("nl", "a\nb"), ("path", "C:\\x"), ("quote", 'say "hi"'))]
    assert odd.timestamps == [1700000000.0, 1700000000.5]
    assert math.isnan(odd.values[0]) and odd.values[1] == 1500
    plain = by_labels[()]
    assert plain.values == [math.inf, -math.inf]


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ("1m 1 1", "invalid metric name"),
        ('m{a="1" 1 1', "expected , or }"),
        ('m{a="\\x"} 1 1', "invalid escape"),
        ("m 1 -5", "out of range"),
        ("m 1 1 2", "a value and a timestamp"),
        ('m{1a="x"} 1 1', "invalid label name"),
    ],
)
def test_the_parser_names_the_line_of_each_error(line: str, message: str) -> None:
    with pytest.raises(InvalidImport, match=message) as info:
        parse_import(f"ok 1 1\n{line}\n")
    assert str(info.value).startswith("line 2:")


def test_the_parser_enforces_its_limits() -> None:
    with pytest.raises(InvalidImport, match="more than 2 samples"):
        parse_import("m 1 1\nm 1 2\nm 1 3\n", max_samples=2)
    with pytest.raises(InvalidImport, match="more than 1 series"):
        parse_import('m{a="1"} 1 1\nm{a="2"} 1 1\n', max_series=1)


def run_import(path: Path, database_url: str, *args: str) -> subprocess.CompletedProcess[str]:
    env = base_env()
    env["VPSMON_DATABASE_URL"] = database_url
    return subprocess.run(
        [VPSMON, "import", str(path), *args],
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
        check=False,
    )


async def test_vpsmon_import_stores_samples_the_engine_reads_back(
    tmp_path: Path, database_url: str, pool: asyncpg.Pool
) -> None:
    lines = [
        f'disk_used{{mount="/"}} {i * 100} {1_700_000_000_000 + i * 60_000}' for i in range(11)
    ]
    good = tmp_path / "good.prom"
    good.write_text("\n".join(lines) + "\n")
    result = await asyncio.to_thread(run_import, good, database_url)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "imported 11 samples of 1 series"
    again = await asyncio.to_thread(run_import, good, database_url)
    assert "0 samples" in again.stdout and "11 already stored" in again.stdout

    engine = Engine(StorageReader(pool))
    got = await engine.instant_query("rate(disk_used[10m])", 1_700_000_600)
    assert len(got) == 1 and got[0].value == pytest.approx(100 / 60)  # type: ignore[union-attr]
    matrix = await engine.range_query("disk_used", 1_700_000_000, 1_700_000_600, 300)
    assert matrix[0].values == [0, 500, 1000]

    bad = tmp_path / "bad.prom"
    bad.write_text("fine 1 1700000000000\nbroken{ 1 1700000000000\n")
    result = await asyncio.to_thread(run_import, bad, database_url)
    assert result.returncode == 1
    assert result.stderr.strip().startswith("vpsmon: error:")
    assert "line 2" in result.stderr
    assert await pool.fetchval("SELECT count(*) FROM series WHERE metric = 'fine'") == 0
