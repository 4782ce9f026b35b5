"""collector.yml is strict: unknown keys and wrong types are errors that name the key.

Every `*.bad.yml` fixture says on its first line which error it must produce
(`# expect: …`); `collector.good.yml` sets every setting to a non-default value.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from vpsmon.collector.config import SETTINGS, StaticTarget, TargetFiles, load_config
from vpsmon.collector.scrape.target import TLSSettings
from vpsmon.collector.scrape.targetconfig import TargetOptions
from vpsmon.config import ConfigError, HostPort, parse_duration, parse_hostport

FIXTURES = Path(__file__).parent / "fixtures"
BAD_FILES = sorted(FIXTURES.glob("*.bad.yml"))


def expected_error(path: Path) -> str:
    first = path.read_text(encoding="utf-8").splitlines()[0]
    match = re.fullmatch(r"# expect: (.+)", first)
    assert match, f"{path.name} must start with '# expect: <error substring>'"
    return match.group(1)


def test_the_bad_fixtures_are_found() -> None:
    assert len(BAD_FILES) >= 10


@pytest.mark.parametrize("path", BAD_FILES, ids=[p.name for p in BAD_FILES])
def test_each_bad_config_file_is_refused_with_its_expected_error(path: Path) -> None:
    with pytest.raises(ConfigError) as caught:
        load_config(path, env={})
    assert expected_error(path) in str(caught.value)


def test_the_good_config_file_sets_every_value() -> None:
    config = load_config(FIXTURES / "collector.good.yml", env={})
    assert config.listen == HostPort("::1", 9090)
    assert config.database_url == "postgresql://vpsmon:secret@db.example:5432/vpsmon"
    assert config.data_dir == Path("/var/lib/vpsmon-test")
    assert config.scrape_interval == 90.0
    assert config.scrape_timeout == 20.0
    assert config.body_size_limit == 1024 * 1024
    assert config.sample_limit == 5000
    assert config.job == "node"
    assert config.backfill is False
    assert config.backfill_max == 1800.0
    pin = "sha256:" + "abcdef0123456789" * 4
    assert config.targets == (
        StaticTarget("web-1", "http://10.0.0.5:9190/metrics", {"env": "prod"}),
        StaticTarget(
            "https://[2001:db8::7]:9190/metrics",
            "https://[2001:db8::7]:9190/metrics",
            {},
            TargetOptions(30.0, 5.0, {}, TLSSettings(fingerprint=pin), "s3cret"),
        ),
        StaticTarget(
            "db-1",
            "https://db-1.example:9100/metrics",
            {},
            TargetOptions(
                tls=TLSSettings(ca_file=Path("/etc/vpsmon/ca.pem"), server_name="db-1.internal"),
                bearer_token_file=Path("/etc/vpsmon/db-1.token"),
            ),
        ),
    )
    assert config.target_files == (
        TargetFiles(
            ("/etc/vpsmon/targets/*.yml", "/etc/vpsmon/more.json"),
            "https",
            "/probe/metrics",
            TargetOptions(
                interval=60.0,
                labels={"team": "ops"},
                tls=TLSSettings(insecure_skip_verify=True),
            ),
        ),
    )
    # the token never shows in a repr (logs, tracebacks)
    assert "s3cret" not in repr(config)
    assert config.session_ttl == 12 * 3600.0
    assert config.reauth_ttl == 600.0
    assert config.audit_retention == 90 * 86400.0
    assert config.terminal_recording_max_bytes == 8 * 1024 * 1024
    assert config.log_level == "debug"
    assert config.notify.resolve_timeout == 600.0
    assert config.notify.allowed_hosts == ("10.0.0.0/8", "alertmanager.lan")
    assert config.notify.traffic_thresholds == (50.0, 95.0)
    assert config.notify.expiry_days == (2.0, 14.0)
    assert config.notify.external_url == "https://vpsmon.example"
    assert config.promql.lookback_delta == 600.0
    assert config.promql.query_timeout == 30.0
    assert config.promql.max_samples == 1_000_000
    assert config.status_page is True
    assert config.status_title == "Fleet status"
    assert (config.retention_raw, config.retention_rollup_1m, config.retention_rollup_1h) == (
        7 * 86400.0,
        30 * 86400.0,
        365 * 86400.0,
    )
    assert config.spool_max_bytes == 5_000_000
    assert config.head_window == 1200.0
    assert config.storage_timescaledb == "auto"
    assert (config.fleet_exec_concurrency, config.fleet_exec_timeout) == (20, 120.0)
    assert config.upload_max_bytes == 0  # no limit


def test_the_good_config_file_touches_every_setting_in_the_table() -> None:
    import yaml

    from vpsmon.config import flatten

    document = yaml.safe_load((FIXTURES / "collector.good.yml").read_text(encoding="utf-8"))
    keys = set(flatten(document))
    # targets and target_files are list leaves; everything else is a dotted key
    assert keys == {s.name for s in SETTINGS}


def test_an_unknown_key_names_the_key_and_suggests_the_close_one(tmp_path: Path) -> None:
    path = tmp_path / "collector.yml"
    path.write_text("scrape:\n  intervall: 15s\n", encoding="utf-8")
    with pytest.raises(ConfigError) as caught:
        load_config(path, env={})
    message = str(caught.value)
    assert str(path) in message
    assert "unknown key 'scrape.intervall'" in message
    assert "did you mean 'scrape.interval'?" in message


def test_an_unknown_key_far_from_any_setting_gets_no_suggestion(tmp_path: Path) -> None:
    path = tmp_path / "collector.yml"
    path.write_text("frobnicate: true\n", encoding="utf-8")
    with pytest.raises(ConfigError, match="unknown key 'frobnicate'") as caught:
        load_config(path, env={})
    assert "did you mean" not in str(caught.value)


def test_a_wrong_type_names_the_key(tmp_path: Path) -> None:
    path = tmp_path / "collector.yml"
    path.write_text("scrape:\n  body_size_limit: -5\n", encoding="utf-8")
    with pytest.raises(ConfigError, match=r"scrape\.body_size_limit: expected a positive"):
        load_config(path, env={})


def test_the_environment_overrides_the_file(tmp_path: Path) -> None:
    path = tmp_path / "collector.yml"
    path.write_text("scrape:\n  interval: 1m\n  timeout: 30s\n", encoding="utf-8")
    assert load_config(path, env={}).scrape_interval == 60.0
    config = load_config(path, env={"VPSMON_SCRAPE_INTERVAL": "5s"})
    assert config.scrape_interval == 5.0
    # the timeout is capped at the (overridden) interval
    assert config.scrape_timeout == 5.0


def test_a_bad_environment_value_names_the_variable() -> None:
    with pytest.raises(ConfigError, match="environment VPSMON_SCRAPE_INTERVAL: expected a dur"):
        load_config(None, env={"VPSMON_SCRAPE_INTERVAL": "soon"})


def test_the_database_url_can_come_from_a_secret_file(tmp_path: Path) -> None:
    secret = tmp_path / "database_url"
    secret.write_text("postgresql://vpsmon:s3cret@db:5432/vpsmon\n", encoding="utf-8")
    config = load_config(None, env={"VPSMON_DATABASE_URL_FILE": str(secret)})
    assert config.database_url == "postgresql://vpsmon:s3cret@db:5432/vpsmon"


def test_the_database_url_variable_wins_over_its_file(tmp_path: Path) -> None:
    secret = tmp_path / "database_url"
    secret.write_text("postgresql://from-file/vpsmon\n", encoding="utf-8")
    env = {
        "VPSMON_DATABASE_URL": "postgresql://from-env/vpsmon",
        "VPSMON_DATABASE_URL_FILE": str(secret),
    }
    assert load_config(None, env=env).database_url == "postgresql://from-env/vpsmon"


def test_an_unreadable_secret_file_is_an_error_naming_the_variable(tmp_path: Path) -> None:
    missing = tmp_path / "nope"
    with pytest.raises(ConfigError, match="environment VPSMON_DATABASE_URL_FILE: cannot read"):
        load_config(None, env={"VPSMON_DATABASE_URL_FILE": str(missing)})


def test_a_non_secret_setting_is_not_read_from_a_file_variable(tmp_path: Path) -> None:
    value = tmp_path / "job"
    value.write_text("from-file\n", encoding="utf-8")
    assert load_config(None, env={"VPSMON_SCRAPE_JOB_FILE": str(value)}).job == "vpsmon"


def test_targets_cannot_be_set_from_the_environment() -> None:
    config = load_config(None, env={"VPSMON_TARGETS": "http://10.0.0.5:9190/metrics"})
    assert config.targets == ()


def test_defaults_apply_without_a_file() -> None:
    config = load_config(None, env={})
    assert config.listen == HostPort("127.0.0.1", 8080)
    assert config.database_url is None
    assert config.scrape_interval == 15.0
    assert config.scrape_timeout == 10.0
    assert config.job == "vpsmon"


def test_an_empty_file_means_all_defaults(tmp_path: Path) -> None:
    path = tmp_path / "collector.yml"
    path.write_text("# nothing set\n", encoding="utf-8")
    assert load_config(path, env={}).scrape_interval == 15.0


def test_a_missing_file_is_an_error_naming_it(tmp_path: Path) -> None:
    path = tmp_path / "absent.yml"
    with pytest.raises(ConfigError, match=re.escape(f"{path}: cannot read")):
        load_config(path, env={})


def test_invalid_yaml_reports_the_line_number(tmp_path: Path) -> None:
    path = tmp_path / "collector.yml"
    path.write_text("listen: 127.0.0.1:8080\nscrape:\n  interval: [15s\n", encoding="utf-8")
    with pytest.raises(ConfigError) as caught:
        load_config(path, env={})
    assert re.search(r"line \d+: invalid YAML", str(caught.value))
    assert str(path) in str(caught.value)


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("15s", 15.0),
        ("1m30s", 90.0),
        ("500ms", 0.5),
        ("1h", 3600.0),
        ("2d", 172800.0),
        ("1.5s", 1.5),
        (" 10s ", 10.0),
        (30, 30.0),
        (0.25, 0.25),
    ],
)
def test_durations_are_read_in_prometheus_style(text: object, seconds: float) -> None:
    assert parse_duration(text) == pytest.approx(seconds)


@pytest.mark.parametrize(
    "text", ["", "15", "15 s", "fast", "s", "-5s", "1m-30s", "10x", "0s", 0, "1m1m", "30s1m"]
)
def test_a_malformed_or_non_positive_duration_is_refused(text: object) -> None:
    with pytest.raises(ValueError):
        parse_duration(text)


def test_a_boolean_is_not_a_duration() -> None:
    with pytest.raises(ValueError, match="expected a duration"):
        parse_duration(True)


@pytest.mark.parametrize(
    ("text", "host", "port", "shown"),
    [
        ("127.0.0.1:8080", "127.0.0.1", 8080, "127.0.0.1:8080"),
        ("[::1]:9190", "::1", 9190, "[::1]:9190"),
        (":9190", "0.0.0.0", 9190, "0.0.0.0:9190"),
        ("collector.example:443", "collector.example", 443, "collector.example:443"),
        (9190, "0.0.0.0", 9190, "0.0.0.0:9190"),
    ],
)
def test_listen_addresses_are_host_and_port(text: object, host: str, port: int, shown: str) -> None:
    parsed = parse_hostport(text)
    assert (parsed.host, parsed.port) == (host, port)
    assert str(parsed) == shown


@pytest.mark.parametrize(
    "text", ["localhost", "127.0.0.1", "::1:9190", "[::1]", "[nonsense]:80", "host:99999", "h:p"]
)
def test_a_malformed_listen_address_is_refused(text: str) -> None:
    with pytest.raises(ValueError):
        parse_hostport(text)
