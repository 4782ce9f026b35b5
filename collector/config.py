"""collector.yml: the collector's settings table (env prefix `VPSMON_`).

`VPSMON_DATABASE_URL` selects PostgreSQL; unset means the embedded server in `data_dir`.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from vpsmon.collector.scrape.targetconfig import (
    StaticTarget,
    TargetFiles,
    parse_target_files,
    parse_targets,
)
from vpsmon.collector.storage.timescale import Mode
from vpsmon.collector.storage.timescale import parse_mode as parse_timescaledb_mode
from vpsmon.config import (
    ConfigError,
    HostPort,
    Setting,
    load,
    parse_bool,
    parse_duration,
    parse_hostport,
    parse_nonnegative_int,
    parse_optional_str,
    parse_path,
    parse_positive_int,
    parse_str,
)

__all__ = ["CollectorConfig", "StaticTarget", "TargetFiles", "load_config", "SETTINGS"]

ENV_PREFIX = "VPSMON_"


def default_data_dir() -> Path:
    """The user's data dir; /var/lib/vpsmon for root.

    As root the embedded PostgreSQL runs as an unprivileged system user, which must be able to
    reach its data directory; under /root that would mean opening /root to everyone.
    """
    import os

    if os.geteuid() == 0:
        return Path("/var/lib/vpsmon")
    import platformdirs

    return Path(platformdirs.user_data_dir("vpsmon"))


def parse_str_list(value: Any) -> tuple[str, ...]:
    """A YAML list of strings, or a comma-separated string (from the environment)."""
    if value is None or value == "":
        return ()
    if isinstance(value, str):
        return tuple(part.strip() for part in value.split(",") if part.strip())
    if isinstance(value, list | tuple) and all(isinstance(x, str | int) for x in value):
        return tuple(str(x).strip() for x in value)
    raise ValueError("expected a list of strings or a comma-separated string")


def parse_rule_files(value: Any) -> tuple[str, ...] | None:
    """A list of paths or globs (a comma-separated string from the environment)."""
    if value is None:
        return None
    if isinstance(value, str):
        value = [part.strip() for part in value.split(",") if part.strip()]
    if not isinstance(value, list) or not all(isinstance(v, str) and v for v in value):
        raise ValueError("expected a list of rule file paths or globs")
    return tuple(value)


def parse_label_list(value: Any) -> dict[str, str]:
    """Labels as a list of "name=value" (comma-separated from the environment)."""
    if value is None:
        return {}
    if isinstance(value, str):
        value = [part.strip() for part in value.split(",") if part.strip()]
    if not isinstance(value, list):
        raise ValueError('expected a list of "name=value" labels')
    labels = {}
    for item in value:
        name, sep, text = str(item).partition("=")
        if not sep or not re.fullmatch(r"[a-zA-Z_][a-zA-Z0-9_]*", name.strip()):
            raise ValueError(f'expected "name=value" with a valid label name, got {item!r}')
        labels[name.strip()] = text.strip()
    return labels


def default_rule_files() -> tuple[str, ...]:
    """The rules/ folder next to the package (a source checkout or `make up`), if present."""
    shipped = Path(__file__).resolve().parent.parent / "rules"
    return (str(shipped / "*.yml"),) if shipped.is_dir() else ()


SETTINGS: tuple[Setting, ...] = (
    Setting(
        "listen",
        parse_hostport,
        parse_hostport("127.0.0.1:8080"),
        "Address of the web UI and HTTP APIs.",
    ),
    Setting(
        "database_url",
        parse_optional_str,
        None,
        "PostgreSQL URL (postgresql://user:pass@host:5432/db). Unset: embedded PostgreSQL "
        "in data_dir.",
        secret=True,
    ),
    Setting(
        "data_dir",
        parse_path,
        None,
        "Where the embedded database and local state live (default: the user's data dir, "
        "e.g. ~/.local/share/vpsmon; /var/lib/vpsmon for root).",
    ),
    Setting("scrape.interval", parse_duration, 15.0, "Default scrape interval per target."),
    Setting(
        "scrape.timeout", parse_duration, 10.0, "Default scrape timeout; capped at the interval."
    ),
    Setting(
        "scrape.body_size_limit",
        parse_positive_int,
        10 * 1024 * 1024,
        "Largest accepted /metrics body in bytes (after decompression).",
    ),
    Setting(
        "scrape.sample_limit",
        parse_positive_int,
        50_000,
        "Most samples accepted from one scrape; more fails the scrape.",
    ),
    Setting("scrape.job", parse_str, "vpsmon", "The job label given to scraped series."),
    Setting(
        "scrape.backfill",
        parse_bool,
        True,
        "After a gap (collector restarted, target unreachable), read the missed samples from"
        " each vpsmon exporter's /history and store them.",
    ),
    Setting(
        "scrape.backfill_max",
        parse_duration,
        3600.0,
        "Longest gap that is backfilled (the exporter keeps history.retention, 1h by default).",
    ),
    Setting(
        "targets",
        parse_targets,
        (),
        "Static targets: a list of {name, url, labels, interval, timeout, tls, bearer_token,"
        " bearer_token_file}; see docs/configuration.md#targets.",
        from_env=False,
    ),
    Setting(
        "target_files",
        parse_target_files,
        (),
        "Target files in Prometheus file_sd format (YAML or JSON), re-read on change: a list"
        " of {files, scheme, metrics_path, interval, timeout, labels, tls, bearer_token,"
        " bearer_token_file}; see docs/configuration.md#target-files.",
        from_env=False,
    ),
    Setting(
        "storage.retention.raw",
        parse_duration,
        15 * 86400.0,
        "How long raw samples are kept (compacted into hourly chunks after the hour closes).",
    ),
    Setting(
        "storage.retention.rollup_1m",
        parse_duration,
        90 * 86400.0,
        "How long the 1-minute rollups (min, max, avg, last, counter increase) are kept.",
    ),
    Setting(
        "storage.retention.rollup_1h",
        parse_duration,
        730 * 86400.0,
        "How long the 1-hour rollups are kept.",
    ),
    Setting(
        "storage.timescaledb",
        parse_timescaledb_mode,
        "off",
        "Sample store in TimescaleDB hypertables (compressed, retention policies): off (plain"
        " PostgreSQL partitions and chunks: smaller and faster, see docs/benchmarks.md), auto"
        " (when the extension is usable and the database holds no samples yet) or on (required;"
        " converts a plain store). A store in hypertables stays so. See docs/storage.md.",
    ),
    Setting(
        "storage.head.window",
        parse_duration,
        600.0,
        "How much of every series the head keeps in memory; queries within it (rules, the "
        "live view, recent API queries) do not touch the database. About 8–12 bytes per sample"
        " (numpy matrices shared by the fleet, with spare rows and columns; a target scraped"
        " much more often than the rest widens every server's rows, up to a budget past which"
        " the oldest samples of the window are read from the database), plus each series'"
        " labels.",
    ),
    Setting(
        "storage.spool.max_bytes",
        parse_positive_int,
        1024**3,
        "Disk space for scrapes waiting while the database is away (data_dir/spool); when "
        "full, new scrapes are dropped and counted.",
    ),
    Setting(
        "rules.files",
        parse_rule_files,
        None,
        "Rule files to evaluate (paths or globs, relative to this file); unset: the default "
        "rules shipped in rules/ when present.",
    ),
    Setting(
        "rules.evaluation_interval",
        parse_duration,
        15.0,
        "How often rule groups are evaluated unless a group sets its own interval.",
    ),
    Setting(
        "rules.external_url",
        parse_optional_str,
        None,
        "URL of this collector in alert links (generatorURL); unset: http://LISTEN/.",
    ),
    Setting(
        "rules.external_labels",
        parse_label_list,
        {},
        'Labels added to every alert sent to the notifiers, as ["name=value", ...] '
        "($externalLabels in templates).",
    ),
    Setting(
        "grpc.listen",
        parse_hostport,
        parse_hostport("127.0.0.1:8081"),
        "Address of the collector's gRPC port (TLS with the collector's own certificate):"
        " exporters enrol here, and the fleet service answers the CLI. Use 0.0.0.0:8081 for"
        " servers elsewhere to enrol. A busy port is logged and the rest of the collector runs.",
    ),
    Setting(
        "grpc.advertise",
        parse_optional_str,
        None,
        "HOST:PORT exporters dial to enrol, written into the add-server command; unset: the"
        " host name the browser used and the port of grpc.listen.",
    ),
    Setting(
        "enrol.token_ttl",
        parse_duration,
        3600.0,
        "How long a one-time enrolment token from the add-server dialog stays valid (at most 7d).",
    ),
    Setting("web.session_ttl", parse_duration, 7 * 86400.0, "How long a login session lasts."),
    Setting(
        "web.reauth_ttl",
        parse_duration,
        300.0,
        "How long a step-up re-authentication (password or TOTP again) is remembered before "
        "a terminal, command or other sensitive action asks again.",
    ),
    Setting(
        "web.audit_retention",
        parse_duration,
        365 * 86400.0,
        "How long audit log entries are kept; older ones are deleted once an hour (terminal "
        "recordings too).",
    ),
    Setting(
        "web.terminal_recording_max_bytes",
        parse_positive_int,
        16 * 1024 * 1024,
        "Most bytes recorded of one terminal session (asciicast events of its output); past "
        "it the session goes on and its recording stops, marked truncated.",
    ),
    Setting(
        "web.upload_max_bytes",
        parse_nonnegative_int,
        2 * 1024**3,
        "Largest file the file manager accepts in one upload, in bytes (0: no limit); a larger "
        "upload is refused with 413 before anything is written on the server.",
    ),
    Setting(
        "status_page.enabled",
        parse_bool,
        False,
        "Serve the public status page at /status (no login): the servers marked public, "
        "read-only, without addresses.",
    ),
    Setting("status_page.title", parse_str, "Status", "Heading of the public status page."),
    Setting(
        "promql.lookback_delta",
        parse_duration,
        300.0,
        "How far back an instant PromQL selector looks for a sample (Prometheus' 5m).",
    ),
    Setting(
        "promql.query_timeout",
        parse_duration,
        60.0,
        "Longest a /api/v1 query may run; a request's timeout parameter may only shorten it.",
    ),
    Setting(
        "promql.max_samples",
        parse_positive_int,
        20_000_000,
        "Most samples one PromQL query may load before it is refused.",
    ),
    Setting("log.level", parse_str, "info", "Log level: debug, info, warning or error."),
    Setting(
        "fleet.exec_concurrency",
        parse_positive_int,
        50,
        "Most servers one fan-out (`vpsmon exec` on a group, the Fleet gRPC service) runs at "
        "once; a request may ask for fewer.",
    ),
    Setting(
        "fleet.exec_timeout",
        parse_duration,
        600.0,
        "Per-server timeout of a fan-out command unless the request gives its own (the "
        "exporter's command.exec_timeout caps it).",
    ),
    Setting(
        "notify.resolve_timeout",
        parse_duration,
        300.0,
        "An alert received without endsAt counts as resolved this long after it was last sent.",
    ),
    Setting(
        "notify.allowed_hosts",
        parse_str_list,
        (),
        "Private or local addresses (CIDRs, IPs or host names) channels may deliver to; all "
        "others are refused (SSRF guard, docs/notifications.md).",
    ),
    Setting("notify.timeout", parse_duration, 15.0, "Timeout of one delivery attempt."),
    Setting(
        "notify.max_attempts",
        parse_positive_int,
        10,
        "Delivery attempts before a notification is marked failed (backoff 10 s doubling to 10 m).",
    ),
    Setting(
        "notify.offline_after",
        parse_duration,
        60.0,
        "The built-in ServerDown alert fires once a server has failed its scrapes this long.",
    ),
    Setting(
        "notify.traffic_thresholds",
        parse_str_list,
        ("80", "90", "100"),
        "Percentages of the monthly traffic quota at which TrafficQuota alerts fire.",
    ),
    Setting(
        "notify.expiry_days",
        parse_str_list,
        ("7", "3", "1"),
        "Days before a server's expiry date at which ServerExpiring alerts fire.",
    ),
    Setting(
        "notify.external_url",
        parse_optional_str,
        None,
        "The UI's address as people reach it, used in links in notifications.",
    ),
)


def _numbers(name: str, values: tuple[str, ...]) -> tuple[float, ...]:
    try:
        numbers = tuple(sorted({float(v) for v in values}))
    except ValueError:
        raise ConfigError(f"{name}: expected numbers, got {list(values)}") from None
    if any(n <= 0 for n in numbers):
        raise ConfigError(f"{name}: expected positive numbers")
    return numbers


@dataclass(frozen=True)
class NotifyConfig:
    resolve_timeout: float = 300.0
    allowed_hosts: tuple[str, ...] = ()
    timeout: float = 15.0
    max_attempts: int = 10
    offline_after: float = 60.0
    traffic_thresholds: tuple[float, ...] = (80.0, 90.0, 100.0)
    expiry_days: tuple[float, ...] = (1.0, 3.0, 7.0)
    external_url: str | None = None


@dataclass(frozen=True)
class PromQLConfig:
    lookback_delta: float = 300.0
    query_timeout: float = 60.0
    max_samples: int = 20_000_000


@dataclass(frozen=True)
class CollectorConfig:
    listen: HostPort
    database_url: str | None
    data_dir: Path
    scrape_interval: float
    scrape_timeout: float
    body_size_limit: int
    sample_limit: int
    job: str
    targets: tuple[StaticTarget, ...]
    session_ttl: float
    log_level: str
    reauth_ttl: float = 300.0
    audit_retention: float = 365 * 86400.0
    terminal_recording_max_bytes: int = 16 * 1024 * 1024
    upload_max_bytes: int = 2 * 1024**3
    notify: NotifyConfig = field(default_factory=NotifyConfig)
    promql: PromQLConfig = field(default_factory=PromQLConfig)
    status_page: bool = False
    status_title: str = "Status"
    retention_raw: float = 15 * 86400.0
    retention_rollup_1m: float = 90 * 86400.0
    retention_rollup_1h: float = 730 * 86400.0
    spool_max_bytes: int = 1024**3
    head_window: float = 600.0
    storage_timescaledb: Mode = "off"
    target_files: tuple[TargetFiles, ...] = ()
    backfill: bool = True
    backfill_max: float = 3600.0
    rule_files: tuple[str, ...] = ()
    rule_interval: float = 15.0
    external_url: str | None = None
    external_labels: Mapping[str, str] = field(default_factory=dict)
    fleet_exec_concurrency: int = 50
    fleet_exec_timeout: float = 600.0
    grpc_listen: HostPort = HostPort("127.0.0.1", 8081)
    grpc_advertise: str | None = None
    enrol_token_ttl: float = 3600.0


def load_config(
    path: Path | None,
    overrides: Mapping[str, Any] | None = None,
    env: Mapping[str, str] | None = None,
) -> CollectorConfig:
    v = load(SETTINGS, path=path, env=env, env_prefix=ENV_PREFIX, overrides=overrides)
    level = v["log.level"].lower()
    if level not in {"debug", "info", "warning", "error"}:
        raise ConfigError(f"log.level: expected debug, info, warning or error, got {level!r}")
    return CollectorConfig(
        listen=v["listen"],
        database_url=v["database_url"],
        data_dir=v["data_dir"] or default_data_dir(),
        scrape_interval=v["scrape.interval"],
        scrape_timeout=min(v["scrape.timeout"], v["scrape.interval"]),
        body_size_limit=v["scrape.body_size_limit"],
        sample_limit=v["scrape.sample_limit"],
        job=v["scrape.job"],
        targets=v["targets"],
        session_ttl=v["web.session_ttl"],
        log_level=level,
        reauth_ttl=v["web.reauth_ttl"],
        audit_retention=v["web.audit_retention"],
        terminal_recording_max_bytes=v["web.terminal_recording_max_bytes"],
        upload_max_bytes=v["web.upload_max_bytes"],
        notify=NotifyConfig(
            resolve_timeout=v["notify.resolve_timeout"],
            allowed_hosts=v["notify.allowed_hosts"],
            timeout=v["notify.timeout"],
            max_attempts=v["notify.max_attempts"],
            offline_after=v["notify.offline_after"],
            traffic_thresholds=_numbers(
                "notify.traffic_thresholds", v["notify.traffic_thresholds"]
            ),
            expiry_days=_numbers("notify.expiry_days", v["notify.expiry_days"]),
            external_url=v["notify.external_url"],
        ),
        promql=PromQLConfig(
            lookback_delta=v["promql.lookback_delta"],
            query_timeout=v["promql.query_timeout"],
            max_samples=v["promql.max_samples"],
        ),
        status_page=v["status_page.enabled"],
        status_title=v["status_page.title"],
        retention_raw=v["storage.retention.raw"],
        retention_rollup_1m=v["storage.retention.rollup_1m"],
        retention_rollup_1h=v["storage.retention.rollup_1h"],
        spool_max_bytes=v["storage.spool.max_bytes"],
        head_window=v["storage.head.window"],
        storage_timescaledb=v["storage.timescaledb"],
        target_files=v["target_files"],
        backfill=v["scrape.backfill"],
        backfill_max=v["scrape.backfill_max"],
        rule_files=_rule_files(v["rules.files"], path),
        rule_interval=v["rules.evaluation_interval"],
        external_url=v["rules.external_url"],
        external_labels=v["rules.external_labels"],
        fleet_exec_concurrency=v["fleet.exec_concurrency"],
        fleet_exec_timeout=v["fleet.exec_timeout"],
        grpc_listen=v["grpc.listen"],
        grpc_advertise=_advertise(v["grpc.advertise"]),
        enrol_token_ttl=_token_ttl(v["enrol.token_ttl"]),
    )


def _advertise(value: str | None) -> str | None:
    if value is None:
        return None
    try:
        hostport = parse_hostport(value)
    except ValueError as err:
        raise ConfigError(f"grpc.advertise: {err}") from None
    if hostport.port == 0 or hostport.host in {"0.0.0.0", "::", ""}:
        raise ConfigError("grpc.advertise: give the host and port exporters can reach")
    return str(hostport)


def _token_ttl(seconds: float) -> float:
    if seconds > 7 * 86400:
        raise ConfigError("enrol.token_ttl: at most 7d")
    return seconds


def _rule_files(files: tuple[str, ...] | None, config_path: Path | None) -> tuple[str, ...]:
    if files is None:
        return default_rule_files()
    base = config_path.parent if config_path is not None else Path.cwd()
    return tuple(str(base / f) if not Path(f).is_absolute() else f for f in files)
