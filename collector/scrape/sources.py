"""Where targets come from: collector.yml, target files (Prometheus file_sd) and the database.

Every target becomes a server record (matched by URL), so its series belong to a server the UI
shows; static and file targets are marked with their source. A target removed from
collector.yml or from a target file stops being scraped; its record and data stay until the
server is deleted in the UI.

Target files follow https://prometheus.io/docs/prometheus/latest/configuration/configuration/#file_sd_config:
a YAML or JSON list of {targets: [HOST:PORT, ...], labels: {...}}. `__scheme__`,
`__metrics_path__`, `__scrape_interval__` and `__scrape_timeout__` labels override the file
entry's settings; other labels starting with `__` are dropped, as Prometheus drops them after
relabelling. A file that cannot be read or parsed keeps its last good targets and reports the
error in the targets list.
"""

from __future__ import annotations

import glob
import json
import logging
import os
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

import asyncpg
import yaml

from vpsmon.collector.config import CollectorConfig
from vpsmon.collector.scrape.status import SourceStatus
from vpsmon.collector.scrape.target import Target, TLSSettings, parse_fingerprint
from vpsmon.collector.scrape.targetconfig import (
    LABEL_NAME,
    TargetFiles,
    TargetOptions,
)
from vpsmon.config import parse_duration

log = logging.getLogger("vpsmon.scrape")

# A target file bigger than this is refused rather than read into memory.
MAX_TARGET_FILE_BYTES = 16 * 1024 * 1024


class TargetFileError(ValueError):
    """A target file that cannot be used; the message names the file and the problem."""


@dataclass(frozen=True)
class TargetSpec:
    """A target before it has a server id: what the config or a file says."""

    name: str
    url: str
    labels: Mapping[str, str]
    options: TargetOptions
    source: str  # "static" or "file"


def _address_url(scheme: str, address: str, path: str) -> str:
    if not address or any(c in address for c in "/?#@ \t") or address.startswith(":"):
        raise ValueError(f"expected HOST:PORT, got {address!r}")
    return f"{scheme}://{address}{path}"


def parse_target_file(text: str, path: str, entry: TargetFiles) -> list[TargetSpec]:
    """The targets of one file_sd file (YAML, which includes JSON)."""
    try:
        document = json.loads(text) if path.endswith(".json") else yaml.safe_load(text)
    except (yaml.YAMLError, ValueError) as err:
        mark = getattr(err, "problem_mark", None)
        where = f" line {mark.line + 1}" if mark is not None else ""
        problem = getattr(err, "problem", None) or str(err)
        raise TargetFileError(f"{path}:{where}: invalid YAML/JSON: {problem}") from None
    if document is None:
        return []
    if not isinstance(document, list):
        raise TargetFileError(f"{path}: expected a list of {{targets: [...], labels: {{...}}}}")
    out: list[TargetSpec] = []
    for i, group in enumerate(document):
        where = f"{path}: [{i}]"
        if not isinstance(group, Mapping):
            raise TargetFileError(f"{where}: expected a mapping with targets and labels")
        unknown = set(group) - {"targets", "labels"}
        if unknown:
            raise TargetFileError(f"{where}: unknown key {sorted(map(str, unknown))[0]!r}")
        addresses = group.get("targets") or []
        if not isinstance(addresses, list) or not all(isinstance(a, str) for a in addresses):
            raise TargetFileError(f"{where}.targets: expected a list of HOST:PORT strings")
        labels = group.get("labels") or {}
        if not isinstance(labels, Mapping) or not all(
            isinstance(k, str) and isinstance(v, str) for k, v in labels.items()
        ):
            raise TargetFileError(f"{where}.labels: expected a mapping of strings to strings")
        for name in labels:
            if not LABEL_NAME.fullmatch(name):
                raise TargetFileError(f"{where}.labels: {name!r} is not a valid label name")
        try:
            options, scheme, metrics_path = _group_options(entry, labels)
            public = {k: v for k, v in labels.items() if not k.startswith("__")}
            merged = {**entry.options.labels, **public}
            for address in addresses:
                url = _address_url(scheme, address.strip(), metrics_path)
                name = merged.get("instance") or address.strip()
                out.append(TargetSpec(name, url, merged, options, "file"))
        except ValueError as err:
            raise TargetFileError(f"{where}: {err}") from None
    return out


def _group_options(entry: TargetFiles, labels: Mapping[str, str]) -> tuple[TargetOptions, str, str]:
    scheme = labels.get("__scheme__", entry.scheme)
    if scheme not in ("http", "https"):
        raise ValueError(f"__scheme__: expected http or https, got {scheme!r}")
    path = labels.get("__metrics_path__", entry.metrics_path)
    if not path.startswith("/"):
        raise ValueError(f"__metrics_path__: expected a path starting with /, got {path!r}")
    options = entry.options
    if "__scrape_interval__" in labels:
        interval = parse_duration(labels["__scrape_interval__"])
        options = TargetOptions(
            interval, options.timeout, options.labels, options.tls,
            options.bearer_token, options.bearer_token_file,
        )  # fmt: skip
    if "__scrape_timeout__" in labels:
        timeout = parse_duration(labels["__scrape_timeout__"])
        options = TargetOptions(
            options.interval, timeout, options.labels, options.tls,
            options.bearer_token, options.bearer_token_file,
        )  # fmt: skip
    return options, scheme, path


@dataclass
class _FileState:
    signature: tuple[int, int, int] | None = None  # (inode, size, mtime_ns) last read
    targets: tuple[TargetSpec, ...] = ()
    error: str | None = None
    updated_at: float | None = None


class TargetFileWatcher:
    """Re-reads target files when they change (checked on every `poll`)."""

    def __init__(self, entries: Iterable[TargetFiles]) -> None:
        self._entries = tuple(entries)
        self._files: dict[tuple[int, str], _FileState] = {}

    def poll(self, now: float) -> list[TargetSpec]:
        seen: set[tuple[int, str]] = set()
        for index, entry in enumerate(self._entries):
            for pattern in entry.files:
                for path in sorted(glob.glob(pattern)) if glob.has_magic(pattern) else [pattern]:
                    key = (index, path)
                    seen.add(key)
                    self._check(key, entry, now)
        for key in set(self._files) - seen:
            del self._files[key]  # a deleted file takes its targets with it, as in Prometheus
        return [t for state in self._files.values() for t in state.targets]

    def _check(self, key: tuple[int, str], entry: TargetFiles, now: float) -> None:
        path = key[1]
        state = self._files.setdefault(key, _FileState())
        try:
            st = os.stat(path)
        except OSError as err:
            self._fail(state, path, f"{path}: cannot read: {err.strerror or err}")
            return
        signature = (st.st_ino, st.st_size, st.st_mtime_ns)
        if signature == state.signature:
            return
        state.signature = signature
        try:
            if st.st_size > MAX_TARGET_FILE_BYTES:
                raise TargetFileError(f"{path}: larger than {MAX_TARGET_FILE_BYTES} bytes")
            try:
                text = Path(path).read_text(encoding="utf-8")
            except (OSError, UnicodeDecodeError) as err:
                reason = err.strerror if isinstance(err, OSError) else "not UTF-8"
                raise TargetFileError(f"{path}: cannot read: {reason or err}") from None
            state.targets = tuple(parse_target_file(text, path, entry))
        except TargetFileError as err:
            self._fail(state, path, str(err))
            return
        if state.error is not None:
            log.info("target file usable again path=%s targets=%d", path, len(state.targets))
        state.error = None
        state.updated_at = now

    def _fail(self, state: _FileState, path: str, error: str) -> None:
        if error != state.error:
            log.warning(
                "target file refused, keeping its last good targets path=%s kept=%d error=%s",
                path,
                len(state.targets),
                error,
            )
        state.error = error
        # A file that is back after failing must be read again even if it looks unchanged.
        if error.endswith("cannot read: No such file or directory"):
            state.signature = None

    def status(self) -> list[SourceStatus]:
        return [
            SourceStatus("file", path, len(s.targets), s.error, s.updated_at)
            for (_, path), s in sorted(self._files.items())
        ]


def resolve(
    server_id: int,
    name: str,
    url: str,
    labels: Mapping[str, str],
    options: TargetOptions,
    default_interval: float,
    default_timeout: float,
    source: str,
) -> Target:
    """A target with every default filled in; the timeout never exceeds the interval."""
    interval = options.interval or default_interval
    timeout = min(options.timeout or default_timeout, interval)
    return Target(
        server_id,
        name,
        url,
        interval,
        timeout,
        dict(labels),
        options.tls,
        options.bearer_token,
        options.bearer_token_file,
        source,
    )


SELECT_SERVERS = (
    "SELECT id, name, url, labels, source, scrape_interval, scrape_timeout, tls_fingerprint,"
    " bearer_token FROM servers ORDER BY id"
)


class TargetSources:
    """Merges the three sources into the list of targets to scrape."""

    def __init__(self, config: CollectorConfig) -> None:
        self._config = config
        self._files = TargetFileWatcher(config.target_files)
        self._synced: dict[str, tuple[str, str, str]] = {}
        self._ids: dict[str, int] = {}
        self._database_error: str | None = None
        self._database_updated: float | None = None
        self._database_count = 0

    def _config_specs(self, now: float) -> list[TargetSpec]:
        specs = [
            TargetSpec(t.name, t.url, {**t.options.labels, **t.labels}, t.options, "static")
            for t in self._config.targets
        ]
        by_url = {s.url: s for s in specs}
        for spec in self._files.poll(now):
            by_url.setdefault(spec.url, spec)  # collector.yml wins over a file naming the same URL
        return list(by_url.values())

    async def targets(self, pool: asyncpg.Pool, now: float | None = None) -> list[Target]:
        """Every target to scrape now. Raises when the database is unreachable (the caller
        keeps scraping the targets it has)."""
        now = time.time() if now is None else now
        specs = self._config_specs(now)
        try:
            await self._register(pool, specs)
            rows = await pool.fetch(SELECT_SERVERS)
        except Exception as err:
            self._database_error = str(err).splitlines()[0] if str(err) else type(err).__name__
            raise
        self._database_error = None
        self._database_updated = now
        cfg = self._config
        out = []
        wanted = {s.url: s for s in specs}
        # A config target whose record was deleted in the UI is registered again next time:
        # collector.yml and the target files are the truth for their targets.
        for url in set(wanted) - {row["url"] for row in rows}:
            self._synced.pop(url, None)
        for row in rows:
            spec = wanted.get(row["url"])
            if spec is not None:
                out.append(
                    resolve(
                        row["id"],
                        spec.name,
                        spec.url,
                        spec.labels,
                        spec.options,
                        cfg.scrape_interval,
                        cfg.scrape_timeout,
                        spec.source,
                    )  # fmt: skip
                )
                continue
            if row["source"] != "api":
                continue  # removed from collector.yml or its target file
            out.append(self._from_row(row))
        self._database_count = sum(1 for t in out if t.source == "api")
        return out

    def _from_row(self, row: asyncpg.Record) -> Target:
        fingerprint = row["tls_fingerprint"]
        tls = TLSSettings(fingerprint=parse_fingerprint(fingerprint)) if fingerprint else None
        options = TargetOptions(
            interval=row["scrape_interval"],
            timeout=row["scrape_timeout"],
            tls=tls or TLSSettings(),
            bearer_token=row["bearer_token"],
        )
        labels = json.loads(row["labels"]) if isinstance(row["labels"], str) else row["labels"]
        cfg = self._config
        return resolve(
            row["id"], row["name"], row["url"], labels, options,
            cfg.scrape_interval, cfg.scrape_timeout, "api",
        )  # fmt: skip

    async def _register(self, pool: asyncpg.Pool, specs: list[TargetSpec]) -> None:
        """Upsert the config and file targets as server records, only when they changed."""
        rows = {
            s.url: (s.name, json.dumps(dict(s.labels), sort_keys=True), s.source) for s in specs
        }
        changed = [(url, *v) for url, v in rows.items() if self._synced.get(url) != v]
        if not changed:
            return
        await pool.executemany(
            "INSERT INTO servers (url, name, labels, source) VALUES ($1, $2, $3::jsonb, $4)"
            " ON CONFLICT (url) DO UPDATE SET name = EXCLUDED.name, labels = EXCLUDED.labels,"
            " source = EXCLUDED.source",
            changed,
        )
        self._synced = rows

    def status(self) -> list[SourceStatus]:
        static = SourceStatus("static", None, len(self._config.targets), None, None)
        database = SourceStatus(
            "database", None, self._database_count, self._database_error, self._database_updated
        )
        return [static, *self._files.status(), database]


async def last_stored(pool: asyncpg.Pool, server_id: int) -> float | None:
    """When the writer last stored a successful scrape of this server (servers.last_seen_at)."""
    value = await pool.fetchval(
        "SELECT extract(epoch FROM last_seen_at)::float8 FROM servers WHERE id = $1", server_id
    )
    return float(value) if value is not None else None
