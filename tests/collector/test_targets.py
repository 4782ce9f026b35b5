"""Targets from collector.yml, target files (Prometheus file_sd) and the database."""

from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path

import asyncpg
import pytest

from vpsmon.collector.config import load_config
from vpsmon.collector.scrape.sources import (
    TargetFileError,
    TargetFileWatcher,
    TargetSources,
    parse_target_file,
)
from vpsmon.collector.scrape.target import Target, TLSSettings
from vpsmon.collector.scrape.targetconfig import TargetFiles, TargetOptions

PIN = "sha256:" + "0123456789abcdef" * 4

ENTRY = TargetFiles(("unused",), "http", "/metrics", TargetOptions(labels={"team": "ops"}))

GOOD_FILE = """\
- targets: [10.0.0.5:9190, "[2001:db8::7]:9100"]
  labels:
    region: eu
- targets: [db-1.example:9443]
  labels:
    instance: db-1
    __scheme__: https
    __metrics_path__: /probe/metrics
    __scrape_interval__: 30s
    __meta_ignored: x
"""


def test_a_target_file_gives_urls_labels_and_the_special_labels() -> None:
    specs = parse_target_file(GOOD_FILE, "/etc/t.yml", ENTRY)
    assert [s.url for s in specs] == [
        "http://10.0.0.5:9190/metrics",
        "http://[2001:db8::7]:9100/metrics",
        "https://db-1.example:9443/probe/metrics",
    ]
    assert specs[0].name == "10.0.0.5:9190"
    assert specs[0].labels == {"team": "ops", "region": "eu"}
    # instance names the target; __ labels never reach the series
    assert specs[2].name == "db-1"
    assert specs[2].labels == {"team": "ops", "instance": "db-1"}
    assert specs[2].options.interval == 30.0
    assert all(s.source == "file" for s in specs)


def test_a_json_target_file_is_read_too() -> None:
    text = json.dumps([{"targets": ["10.0.0.9:9100"], "labels": {"job": "node"}}])
    specs = parse_target_file(text, "/etc/t.json", ENTRY)
    assert [(s.url, dict(s.labels)) for s in specs] == [
        ("http://10.0.0.9:9100/metrics", {"team": "ops", "job": "node"})
    ]


@pytest.mark.parametrize(
    ("text", "error"),
    [
        ("- targets: [a:1\n", "invalid YAML/JSON"),
        ("targets: [a:1]\n", "expected a list of {targets"),
        ("- hosts: [a:1]\n", "[0]: unknown key 'hosts'"),
        ("- targets: a:1\n", "[0].targets: expected a list of HOST:PORT strings"),
        ("- targets: [a:1]\n  labels: {env: 1}\n", "[0].labels: expected a mapping of strings"),
        ("- targets: [a:1]\n  labels: {bad-name: x}\n", "'bad-name' is not a valid label name"),
        ("- targets: [http://a:1/metrics]\n", "expected HOST:PORT"),
        ("- targets: [a:1]\n  labels: {__scheme__: ftp}\n", "__scheme__: expected http or https"),
        ("- targets: [a:1]\n  labels: {__scrape_interval__: soon}\n", "expected a duration"),
    ],
)
def test_a_malformed_target_file_is_refused_naming_the_file_and_the_problem(
    text: str, error: str
) -> None:
    with pytest.raises(TargetFileError) as caught:
        parse_target_file(text, "/etc/t.yml", ENTRY)
    assert str(caught.value).startswith("/etc/t.yml:")
    assert error in str(caught.value)


def _touch_later(path: Path, text: str) -> None:
    """Write and make sure the mtime moves even on a coarse-grained file system."""
    before = path.stat().st_mtime_ns if path.exists() else 0
    path.write_text(text, encoding="utf-8")
    os.utime(path, ns=(before + 1_000_000_000, before + 1_000_000_000))


def test_the_watcher_rereads_a_changed_file_and_keeps_the_last_good_targets_of_a_broken_one(
    tmp_path: Path,
) -> None:
    path = tmp_path / "fleet.yml"
    _touch_later(path, "- targets: [10.0.0.1:9190]\n")
    watcher = TargetFileWatcher([dataclasses.replace(ENTRY, files=(str(tmp_path / "*.yml"),))])
    assert [s.url for s in watcher.poll(1.0)] == ["http://10.0.0.1:9190/metrics"]
    [status] = watcher.status()
    assert (status.path, status.targets, status.error) == (str(path), 1, None)

    _touch_later(path, "- targets: [10.0.0.1:9190, 10.0.0.2:9190]\n")
    assert len(watcher.poll(2.0)) == 2

    _touch_later(path, "- targets: [10.0.0.3:9190\n")  # broken mid-edit
    assert len(watcher.poll(3.0)) == 2
    [status] = watcher.status()
    assert status.error is not None and "invalid YAML/JSON" in status.error
    assert status.targets == 2
    assert status.updated_at == 2.0

    _touch_later(path, "- targets: [10.0.0.3:9190]\n")
    assert [s.url for s in watcher.poll(4.0)] == ["http://10.0.0.3:9190/metrics"]
    assert watcher.status()[0].error is None

    # a new file matching the glob joins; a deleted one takes its targets with it
    _touch_later(tmp_path / "more.yml", "- targets: [10.0.0.4:9190]\n")
    assert len(watcher.poll(5.0)) == 2
    path.unlink()
    assert [s.url for s in watcher.poll(6.0)] == ["http://10.0.0.4:9190/metrics"]


def test_a_named_file_that_is_missing_is_reported_and_read_once_it_appears(
    tmp_path: Path,
) -> None:
    path = tmp_path / "later.json"
    watcher = TargetFileWatcher([dataclasses.replace(ENTRY, files=(str(path),))])
    assert watcher.poll(1.0) == []
    [status] = watcher.status()
    assert status.error == f"{path}: cannot read: No such file or directory"
    _touch_later(path, '[{"targets": ["10.0.0.1:9190"]}]')
    assert len(watcher.poll(2.0)) == 1
    assert watcher.status()[0].error is None


def _write_config(tmp_path: Path, targets_file: Path) -> Path:
    config = tmp_path / "collector.yml"
    config.write_text(
        f"""\
scrape:
  interval: 15s
  timeout: 10s
targets:
  - name: web-1
    url: https://10.0.0.5:9190/metrics
    interval: 5s
    labels: {{env: prod}}
    tls:
      fingerprint: {PIN}
    bearer_token: tok
target_files:
  - files: [{targets_file}]
    interval: 1m
    timeout: 20s
    bearer_token_file: /etc/vpsmon/token
""",
        encoding="utf-8",
    )
    return config


async def test_static_file_and_database_targets_are_merged_with_their_settings(
    pool: asyncpg.Pool, tmp_path: Path
) -> None:
    targets_file = tmp_path / "fleet.yml"
    _touch_later(targets_file, "- targets: [10.0.0.6:9100]\n  labels: {role: db}\n")
    config = load_config(_write_config(tmp_path, targets_file), env={})
    api_id = await pool.fetchval(
        "INSERT INTO servers (name, url, scrape_interval, tls_fingerprint, bearer_token)"
        " VALUES ('added-in-ui', 'https://10.0.0.7:9190/metrics', 30, $1, 'ui-token')"
        " RETURNING id",
        PIN,
    )
    sources = TargetSources(config)
    targets = {t.name: t for t in await sources.targets(pool, now=100.0)}
    assert set(targets) == {"web-1", "10.0.0.6:9100", "added-in-ui"}

    web = targets["web-1"]
    assert (web.interval, web.timeout) == (5.0, 5.0)  # the default timeout is capped
    assert web.tls == TLSSettings(fingerprint=PIN)
    assert web.bearer_token == "tok"
    assert web.labels == {"env": "prod"}
    assert web.source == "static"

    db = targets["10.0.0.6:9100"]
    assert db.url == "http://10.0.0.6:9100/metrics"
    assert (db.interval, db.timeout) == (60.0, 20.0)
    assert db.bearer_token_file == Path("/etc/vpsmon/token")
    assert db.labels == {"role": "db"}
    assert db.source == "file"

    ui = targets["added-in-ui"]
    assert ui == Target(
        api_id,
        "added-in-ui",
        "https://10.0.0.7:9190/metrics",
        30.0,
        10.0,
        {},
        TLSSettings(fingerprint=PIN),
        "ui-token",
        None,
        "api",
    )

    # every target has a server record, marked with its source
    rows = await pool.fetch("SELECT name, source FROM servers ORDER BY name")
    assert [(r["name"], r["source"]) for r in rows] == [
        ("10.0.0.6:9100", "file"),
        ("added-in-ui", "api"),
        ("web-1", "static"),
    ]
    statuses = {(s.kind, s.path): s for s in sources.status()}
    assert statuses[("file", str(targets_file))].targets == 1
    assert statuses[("database", None)].targets == 1
    assert statuses[("static", None)].targets == 1


async def test_a_target_dropped_from_its_file_stops_being_scraped_but_keeps_its_record(
    pool: asyncpg.Pool, tmp_path: Path
) -> None:
    targets_file = tmp_path / "fleet.yml"
    _touch_later(targets_file, "- targets: [10.0.0.6:9100, 10.0.0.8:9100]\n")
    sources = TargetSources(load_config(_write_config(tmp_path, targets_file), env={}))
    assert len(await sources.targets(pool, now=1.0)) == 3
    _touch_later(targets_file, "- targets: [10.0.0.6:9100]\n")
    names = {t.name for t in await sources.targets(pool, now=2.0)}
    assert names == {"web-1", "10.0.0.6:9100"}
    assert await pool.fetchval("SELECT count(*) FROM servers WHERE name = '10.0.0.8:9100'") == 1


async def test_a_config_target_deleted_in_the_ui_comes_back(
    pool: asyncpg.Pool, tmp_path: Path
) -> None:
    targets_file = tmp_path / "fleet.yml"
    _touch_later(targets_file, "[]\n")
    sources = TargetSources(load_config(_write_config(tmp_path, targets_file), env={}))
    [first] = await sources.targets(pool, now=1.0)
    await pool.execute("DELETE FROM servers WHERE id = $1", first.server_id)
    assert await sources.targets(pool, now=2.0) == []  # noticed gone: registered next round
    [again] = await sources.targets(pool, now=3.0)
    assert again.name == "web-1"
    assert again.server_id != first.server_id


async def test_the_database_refuses_a_malformed_pin_or_a_pin_on_plain_http(
    pool: asyncpg.Pool,
) -> None:
    with pytest.raises(asyncpg.CheckViolationError):
        await pool.execute(
            "INSERT INTO servers (name, url, tls_fingerprint) VALUES ('a', 'https://a/', 'x')"
        )
    with pytest.raises(asyncpg.CheckViolationError):
        await pool.execute(
            "INSERT INTO servers (name, url, tls_fingerprint) VALUES ('a', 'http://a/', $1)", PIN
        )
    with pytest.raises(asyncpg.CheckViolationError):
        await pool.execute(
            "INSERT INTO servers (name, url, bearer_token) VALUES ('a', 'http://a/', $1)",
            "two\nlines",
        )
