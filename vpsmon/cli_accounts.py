"""`vpsmon user …` and `vpsmon token …`: accounts and API tokens from the command line.

They work on VPSMON_DATABASE_URL, or on the embedded database in the data directory, also
while `vpsmon up` runs there (they attach to its server and leave it running).
"""

from __future__ import annotations

import asyncio
import contextlib
import getpass
import sys
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, TypeVar

import click

from vpsmon.cli import UserError, config_option, data_dir_option, guarded, setup_logging

T = TypeVar("T")

ROLE_CHOICE = click.Choice(["admin", "operator", "viewer"])


def _who() -> str:
    """How the audit log names someone acting from the command line."""
    try:
        return f"cli:{getpass.getuser()}"
    except (KeyError, OSError):
        return "cli"


@contextlib.asynccontextmanager
async def _database(config: Any, *, create: bool) -> AsyncIterator[Any]:
    """A migrated pool on the configured database, or on the embedded one in the data dir.

    Without `create`, a data dir that holds no database is an error (a mistyped --data-dir
    must not quietly make a new, empty one).
    """
    from vpsmon.collector.storage.db import connect_pool
    from vpsmon.collector.storage.embedded import EmbeddedPostgres
    from vpsmon.collector.storage.migrate import migrate

    embedded = None
    url = config.database_url
    if url is None:
        pgdata = config.data_dir / "pgdata"
        if not create and not (pgdata / "PG_VERSION").exists():
            raise UserError(
                f"no database in {pgdata}: start `vpsmon up` once, pass the --data-dir it "
                "uses, or set VPSMON_DATABASE_URL"
            )
        embedded = EmbeddedPostgres(pgdata)
        url = await asyncio.to_thread(embedded.start)
    try:
        pool = await connect_pool(url, max_size=2)
        try:
            await migrate(pool)
            yield pool
        finally:
            await pool.close()
    finally:
        if embedded is not None:
            await asyncio.to_thread(embedded.stop)


def _run(
    config_path: Path | None,
    data_dir: Path | None,
    work: Callable[[Any], Awaitable[T]],
    *,
    create: bool = False,
) -> None:
    """Load the config, open the database, run `work(pool)`; errors become one line."""
    from vpsmon.collector.accounts import AccountError

    def run() -> None:
        from vpsmon.collector.config import load_config

        config = load_config(
            config_path, overrides={"data_dir": str(data_dir) if data_dir else None}
        )
        setup_logging("warning")

        async def main() -> None:
            async with _database(config, create=create) as pool:
                await work(pool)

        try:
            asyncio.run(main())
        except AccountError as err:
            raise UserError(str(err)) from None

    guarded(run)


def _read_password(password_file: Path | None) -> str:
    if password_file is not None:
        try:
            text = sys.stdin.read() if str(password_file) == "-" else password_file.read_text()
        except OSError as err:
            raise UserError(f"cannot read {password_file}: {err.strerror or err}") from None
        lines = text.splitlines()
        if not lines or not lines[0]:
            raise UserError(f"{password_file} is empty: its first line is the password")
        return lines[0]
    if not sys.stdin.isatty():
        raise UserError("no terminal to ask for the password on: use --password-file FILE (or -)")
    password: str = click.prompt(
        "Password", hide_input=True, confirmation_prompt="Repeat the password"
    )
    return password


password_file_option = click.option(
    "--password-file",
    type=click.Path(dir_okay=False, allow_dash=True, path_type=Path),
    help="Read the password from the first line of FILE ('-': standard input) instead of asking.",
)


def _row(cells: tuple[str, ...], widths: list[int]) -> str:
    padded = [c.ljust(w) for c, w in zip(cells, widths, strict=False)]
    return "  ".join(padded + list(cells[len(widths) :])).rstrip()


# ---------------------------------------------------------------- user


@click.group()
def user() -> None:
    """Manage user accounts (also in the web UI under Users, for admins).

    \b
    Examples:
      vpsmon user add alice --role operator
      vpsmon user list --data-dir /var/lib/vpsmon
    """


@user.command("add")
@click.argument("name")
@click.option("--role", type=ROLE_CHOICE, required=True, help="admin, operator or viewer.")
@password_file_option
@config_option("collector.yml")
@data_dir_option("Data directory of the embedded database (when no database URL is set).")
def user_add(
    name: str,
    role: str,
    password_file: Path | None,
    config_path: Path | None,
    data_dir: Path | None,
) -> None:
    """Create a user. The password is asked for twice, or read with --password-file.

    Operators and viewers see no server until an admin grants servers or groups in the web
    UI (Users → the user → Access).

    \b
    Examples:
      vpsmon user add alice --role operator
      printf '%s\\n' "$PW" | vpsmon user add ci --role viewer --password-file -
    """
    from vpsmon.collector import accounts, audit

    password = _read_password(password_file)

    async def work(pool: Any) -> None:
        created = await accounts.create_user(pool, name, password, role)
        await audit.record(
            pool,
            "user.create",
            username=_who(),
            detail={"user": created.username, "role": created.role, "via": "cli"},
        )
        click.echo(f"created user {created.username} (role {created.role})")

    _run(config_path, data_dir, work, create=True)


@user.command("passwd")
@click.argument("name")
@password_file_option
@config_option("collector.yml")
@data_dir_option("Data directory of the embedded database (when no database URL is set).")
def user_passwd(
    name: str, password_file: Path | None, config_path: Path | None, data_dir: Path | None
) -> None:
    """Set a user's password; their sessions end (API tokens keep working).

    \b
    Examples:
      vpsmon user passwd admin
      vpsmon user passwd admin --password-file /run/secrets/admin --data-dir /var/lib/vpsmon
    """
    from vpsmon.collector import accounts, audit

    password = _read_password(password_file)

    async def work(pool: Any) -> None:
        found = await accounts.find_user(pool, name)
        await accounts.set_password(pool, found.id, password)
        await audit.record(
            pool, "user.password", username=_who(), detail={"user": name, "via": "cli"}
        )
        click.echo(f"password of {name} changed; their sessions ended")

    _run(config_path, data_dir, work)


@user.command("list")
@config_option("collector.yml")
@data_dir_option("Data directory of the embedded database (when no database URL is set).")
def user_list(config_path: Path | None, data_dir: Path | None) -> None:
    """List users: name, role, state, second factor and server access.

    \b
    Example:
      vpsmon user list
    """
    from vpsmon.collector import access, accounts

    async def work(pool: Any) -> None:
        rows = [("USER", "ROLE", "STATE", "2FA", "SERVERS")]
        for info in await accounts.list_users(pool):
            if info.role == "admin" or info.all_servers:
                servers = "all"
            else:
                g = await access.get_grants(pool, info.id)
                parts = [f"{len(g.server_ids)} granted"] + [f"group {x}" for x in sorted(g.groups)]
                servers = ", ".join(parts)
            rows.append(
                (
                    info.username,
                    info.role,
                    "disabled" if info.disabled else "active",
                    "totp" if info.totp_enabled else "-",
                    servers,
                )
            )
        widths = [max(len(r[i]) for r in rows) for i in range(4)]
        for r in rows:
            click.echo(_row(r, widths))

    _run(config_path, data_dir, work)


@user.command("role")
@click.argument("name")
@click.argument("role", type=ROLE_CHOICE)
@config_option("collector.yml")
@data_dir_option("Data directory of the embedded database (when no database URL is set).")
def user_role(name: str, role: str, config_path: Path | None, data_dir: Path | None) -> None:
    """Change a user's role (the last enabled admin stays an admin).

    \b
    Example:
      vpsmon user role alice viewer
    """
    from vpsmon.collector import accounts, audit

    async def work(pool: Any) -> None:
        found = await accounts.find_user(pool, name)
        await accounts.set_role(pool, found.id, role)
        await audit.record(
            pool,
            "user.role",
            username=_who(),
            detail={"user": name, "from": found.role, "to": role, "via": "cli"},
        )
        click.echo(f"{name} is now {role}")

    _run(config_path, data_dir, work)


@user.command("reset-totp")
@click.argument("name")
@config_option("collector.yml")
@data_dir_option("Data directory of the embedded database (when no database URL is set).")
def user_reset_totp(name: str, config_path: Path | None, data_dir: Path | None) -> None:
    """Turn off a user's two-factor authentication (a lost phone); they may enrol again.

    \b
    Example:
      vpsmon user reset-totp admin
    """
    from vpsmon.collector import accounts, audit

    async def work(pool: Any) -> None:
        found = await accounts.find_user(pool, name)
        await accounts.disable_totp(pool, found.id)
        await audit.record(
            pool, "totp.disable", username=_who(), detail={"user": name, "via": "cli"}
        )
        click.echo(f"two-factor authentication of {name} is off")

    _run(config_path, data_dir, work)


def _set_disabled_command(disabled: bool) -> Callable[..., None]:
    verb = "disable" if disabled else "enable"

    @config_option("collector.yml")
    @data_dir_option("Data directory of the embedded database (when no database URL is set).")
    @click.argument("name")
    def command(name: str, config_path: Path | None, data_dir: Path | None) -> None:
        from vpsmon.collector import accounts, audit

        async def work(pool: Any) -> None:
            found = await accounts.find_user(pool, name)
            await accounts.set_disabled(pool, found.id, disabled)
            await audit.record(
                pool, f"user.{verb}", username=_who(), detail={"user": name, "via": "cli"}
            )
            click.echo(f"{name} is {verb}d")

        _run(config_path, data_dir, work)

    command.__doc__ = (
        "Disable a user: their sessions end, they cannot log in and their API tokens stop "
        "working.\n\n    \b\n    Example:\n      vpsmon user disable alice"
        if disabled
        else "Enable a disabled user again.\n\n    \b\n    Example:\n      vpsmon user enable alice"
    )
    return command


user.command("disable")(_set_disabled_command(True))
user.command("enable")(_set_disabled_command(False))


# ---------------------------------------------------------------- token


@click.group()
def token() -> None:
    """API tokens for scripts and Grafana: `Authorization: Bearer TOKEN` on /api/*.

    \b
    Examples:
      vpsmon token create --user grafana --name dashboards
      vpsmon token list
    """


def _parse_expiry(value: str | None) -> datetime | None:
    if value is None:
        return None
    from vpsmon.config import parse_duration

    try:
        seconds = parse_duration(value)
    except ValueError as err:
        raise UserError(f"--expires: {err}") from None
    if seconds <= 0:
        raise UserError("--expires: must be longer than 0s")
    return datetime.now(UTC) + timedelta(seconds=seconds)


@token.command("create")
@click.option("--user", "username", required=True, help="The user the token acts as.")
@click.option("--name", help="A name to tell the token apart [cli-DATE-TIME].")
@click.option(
    "--expires", metavar="DURATION", help="Expire after DURATION (30d, 12h); default never."
)
@config_option("collector.yml")
@data_dir_option("Data directory of the embedded database (when no database URL is set).")
def token_create(
    username: str,
    name: str | None,
    expires: str | None,
    config_path: Path | None,
    data_dir: Path | None,
) -> None:
    """Create an API token for USER and print it once, alone on the last line.

    The token has the user's role and server access. Only its hash is stored: keep it now.

    \b
    Examples:
      vpsmon token create --user admin
      TOKEN=$(vpsmon token create --user grafana --name grafana --expires 365d | tail -n1)
      curl -H "Authorization: Bearer $TOKEN" http://127.0.0.1:8080/api/servers
    """
    from vpsmon.collector import accounts, audit, tokens

    expires_at = _parse_expiry(expires)
    token_name = name or datetime.now(UTC).strftime("cli-%Y%m%d-%H%M%S")

    async def work(pool: Any) -> None:
        found = await accounts.find_user(pool, username)
        if found.disabled:
            raise UserError(f"user {username!r} is disabled")
        created, secret = await tokens.create_token(pool, found.id, token_name, expires_at)
        await audit.record(
            pool,
            "token.create",
            username=_who(),
            detail={"user": username, "token_id": created.id, "name": token_name, "via": "cli"},
        )
        until = created.expires_at.isoformat() if created.expires_at else "never"
        click.echo(
            f"token {created.id} {token_name!r} for {username} (role {found.role}), "
            f"expires {until}; shown once:",
            err=True,
        )
        click.echo(secret)

    _run(config_path, data_dir, work)


@token.command("list")
@click.option("--user", "username", help="Only this user's tokens.")
@config_option("collector.yml")
@data_dir_option("Data directory of the embedded database (when no database URL is set).")
def token_list(username: str | None, config_path: Path | None, data_dir: Path | None) -> None:
    """List API tokens (never their secrets): id, user, name, state, last use.

    \b
    Example:
      vpsmon token list --user grafana
    """
    from vpsmon.collector import accounts, tokens

    async def work(pool: Any) -> None:
        user_id = (await accounts.find_user(pool, username)).id if username else None
        now = datetime.now(UTC)
        rows = [("ID", "USER", "NAME", "STATE", "LAST USED")]
        for t in await tokens.list_tokens(pool, user_id):
            if t.revoked_at:
                state = "revoked"
            elif t.expires_at and t.expires_at <= now:
                state = "expired"
            elif t.expires_at:
                state = f"expires {t.expires_at:%Y-%m-%d}"
            else:
                state = "active"
            used = f"{t.last_used_at:%Y-%m-%d %H:%M}" if t.last_used_at else "never"
            rows.append((str(t.id), t.username, t.name, state, used))
        widths = [max(len(r[i]) for r in rows) for i in range(4)]
        for r in rows:
            click.echo(_row(r, widths))

    _run(config_path, data_dir, work)


@token.command("revoke")
@click.argument("token_id", type=int)
@config_option("collector.yml")
@data_dir_option("Data directory of the embedded database (when no database URL is set).")
def token_revoke(token_id: int, config_path: Path | None, data_dir: Path | None) -> None:
    """Revoke the token with id TOKEN_ID (see `vpsmon token list`); it stops working at once.

    \b
    Example:
      vpsmon token revoke 3
    """
    from vpsmon.collector import audit, tokens

    async def work(pool: Any) -> None:
        found = await tokens.get_token(pool, token_id)
        if found is None or not await tokens.revoke_token(pool, token_id):
            raise UserError(f"no active token with id {token_id}")
        await audit.record(
            pool,
            "token.revoke",
            username=_who(),
            detail={"user": found.username, "token_id": token_id, "via": "cli"},
        )
        click.echo(f"token {token_id} of {found.username} revoked")

    _run(config_path, data_dir, work)
