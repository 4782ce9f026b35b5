"""`vpsmon exec`, `vpsmon shell` and `vpsmon login`: the fleet from a terminal (issue #7).

They talk to the collector's Fleet gRPC service (proto/vpsmon/v1/fleet_service.proto) with an
API token, over TLS pinned to the collector's certificate fingerprint (vpsmon/fleet_client.py).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import sys
from collections.abc import Callable, Coroutine, Iterator
from pathlib import Path
from typing import Any, BinaryIO

import click

from vpsmon.cli import UserError

# Exit codes of `vpsmon exec`: 0 every server exited 0; 1 some server failed or could not run.
EXIT_SOME_FAILED = 1
# `vpsmon shell` when the remote side gives no exit status (cut off), as ssh does.
EXIT_NO_STATUS = 255
EXIT_INTERRUPTED = 130  # 128 + SIGINT, as shells report it
MAX_STDIN_BYTES = 1024 * 1024  # the collector's limit (collector/fleet/service.py)


def connection_options(fn: Callable[..., Any]) -> Callable[..., Any]:
    options = [
        click.option(
            "--collector",
            metavar="HOST:PORT",
            help="The collector's gRPC address [VPSMON_COLLECTOR, or the login file; port 8081].",
        ),
        click.option(
            "--token",
            metavar="TOKEN",
            help="API token (vpsmon_…) [VPSMON_TOKEN, or the login file]. Prefer the variable:"
            " options are visible to other users in `ps`.",
        ),
        click.option(
            "--fingerprint",
            metavar="sha256:HEX",
            help="The collector's pinned certificate fingerprint [VPSMON_FINGERPRINT, or the"
            " login file]; print it on the collector with `vpsmon collector fingerprint`.",
        ),
        click.option(
            "--client-config",
            "client_config",
            type=click.Path(dir_okay=False, path_type=Path),
            help="The file `vpsmon login` writes [VPSMON_CLIENT_CONFIG, or"
            " ~/.config/vpsmon/client.yml].",
        ),
    ]
    for option in reversed(options):
        fn = option(fn)
    return fn


def _settings(
    collector: str | None, token: str | None, fingerprint: str | None, client_config: Path | None
) -> Any:
    from vpsmon.fleet_client import ClientError, resolve_settings

    try:
        return resolve_settings(
            collector=collector, token=token, fingerprint=fingerprint, config_path=client_config
        )
    except ClientError as err:
        raise UserError(str(err)) from None


def _run_client(main: Callable[[], Coroutine[Any, Any, int]]) -> int:
    """Run a client coroutine; connection and call failures become one-line errors."""
    try:
        import grpc
    except ImportError:
        raise UserError(
            "grpcio is not installed; install vpsmon[command] to use the fleet commands"
        ) from None
    from vpsmon.fleet_client import ClientError, describe_rpc_error

    try:
        return asyncio.run(main())
    except KeyboardInterrupt:
        # Closing the call cancels it on the collector, which stops the commands.
        click.echo("vpsmon: interrupted: the commands still running were stopped", err=True)
        return EXIT_INTERRUPTED
    except ClientError as err:
        raise UserError(str(err)) from None
    except grpc.aio.AioRpcError as err:
        raise UserError(describe_rpc_error(err)) from None


# ---------------------------------------------------------------- exec


def _parse_env(values: tuple[str, ...]) -> dict[str, str]:
    env = {}
    for item in values:
        name, sep, value = item.partition("=")
        if not sep or not name:
            raise click.BadParameter(f"expected NAME=VALUE, got {item!r}", param_hint="--env")
        env[name] = value
    return env


def printable(text: str) -> str:
    """A server name or message as shown on a terminal: control characters (escape sequences
    that could rewrite the screen) become "?". The commands' own output is passed as it is,
    as ssh does."""
    return "".join("?" if (ord(c) < 32 or 127 <= ord(c) < 160) else c for c in text)


class LinePrinter:
    """Writes each server's output line by line with its name in front, so the lines of
    servers running at once never mix mid-line."""

    def __init__(self, out: BinaryIO, err: BinaryIO, names: dict[int, str], prefix: bool) -> None:
        self.streams = {"stdout": out, "stderr": err}
        self.names = {server_id: printable(name) for server_id, name in names.items()}
        self.prefix = prefix
        self.width = max((len(n) for n in names.values()), default=0)
        self.partial: dict[tuple[int, str], bytes] = {}

    def _label(self, server_id: int) -> bytes:
        if not self.prefix:
            return b""
        name = self.names.get(server_id, str(server_id))
        return f"{name.ljust(self.width)} | ".encode()

    def write(self, server_id: int, stream: str, data: bytes) -> None:
        key = (server_id, stream)
        text = self.partial.pop(key, b"") + data
        *lines, rest = text.split(b"\n")
        out = self.streams[stream]
        if lines:
            label = self._label(server_id)
            out.write(b"".join(label + line + b"\n" for line in lines))
            out.flush()
        if rest:
            self.partial[key] = rest

    def finish(self, server_id: int) -> None:
        for stream in ("stdout", "stderr"):
            rest = self.partial.pop((server_id, stream), b"")
            if rest:
                out = self.streams[stream]
                out.write(self._label(server_id) + rest + b"\n")
                out.flush()


def _result_line(result: Any) -> str:
    name = printable(result.server.name)
    took = f"{result.duration_seconds:.1f} s"
    if result.error:
        return f"{name}: error {result.error_code}: {printable(result.error)} ({took})"
    status = result.exit
    if status.timed_out:
        return f"{name}: timed out, killed ({took})"
    if status.signal:
        return f"{name}: killed by signal {status.signal} ({took})"
    return f"{name}: exit {status.code} ({took})"


@click.command("exec", context_settings={"ignore_unknown_options": False})
@click.argument("target", metavar="TARGET|GROUP")
@click.argument("command", nargs=-1, required=True, metavar="-- COMMAND [ARG]...")
@click.option("-g", "--group", "as_group", is_flag=True, help="TARGET is a group name.")
@click.option(
    "-j",
    "--concurrency",
    type=click.IntRange(1, 10_000),
    help="Servers running at once (at most the collector's fleet.exec_concurrency).",
)
@click.option(
    "--timeout",
    type=click.FloatRange(min=0, min_open=True),
    help="Per-server timeout in seconds; the command is killed there [collector's"
    " fleet.exec_timeout].",
)
@click.option("--cwd", metavar="DIR", help="Working directory [the run-as user's home].")
@click.option("-e", "--env", "env", multiple=True, metavar="NAME=VALUE", help="Add a variable.")
@click.option(
    "--stdin",
    "send_stdin",
    is_flag=True,
    help="Send this command's standard input (at most 1 MiB) to the command on every server.",
)
@click.option("--no-prefix", is_flag=True, help="Print output lines without the server name.")
@click.option("-q", "--quiet", is_flag=True, help="No per-server results or summary on stderr.")
@connection_options
def exec_(
    target: str,
    command: tuple[str, ...],
    as_group: bool,
    concurrency: int | None,
    timeout: float | None,
    cwd: str | None,
    env: tuple[str, ...],
    send_stdin: bool,
    no_prefix: bool,
    quiet: bool,
    collector: str | None,
    token: str | None,
    fingerprint: str | None,
    client_config: Path | None,
) -> None:
    """Run a command on a server, or on every server of a group, through the collector.

    TARGET is a server name or id, or a group name (-g to say it is one). The command runs
    without a shell on each server (as the exporter's run-as user); use `sh -c '…'` for one.
    Each output line is printed with its server's name in front; per-server results and a
    summary go to stderr. The exit status is 0 when every server exited 0, else 1. Servers of
    the group that are not granted to you are skipped and counted.

    Needs an API token of an operator or admin (VPSMON_TOKEN) and the collector's pinned
    fingerprint (or a `vpsmon login` before).

    \b
    Examples:
      export VPSMON_TOKEN=vpsmon_… VPSMON_COLLECTOR=collector.example:8081
      vpsmon exec web1 -- uptime
      vpsmon exec -g web -j 10 --timeout 60 -- sh -c 'apt-get -qq update && apt-get -qy upgrade'
      vpsmon exec -g web --stdin -- sh -s < check.sh
      vpsmon exec --fingerprint sha256:3f… --collector 10.0.0.2:8081 db -- df -h /
    """
    settings = _settings(collector, token, fingerprint, client_config)
    variables = _parse_env(env)
    given = b""
    if send_stdin:
        given = sys.stdin.buffer.read(MAX_STDIN_BYTES + 1)
        if len(given) > MAX_STDIN_BYTES:
            raise UserError("--stdin: standard input is more than 1 MiB")

    async def main() -> int:
        from vpsmon.fleet_client import auth_metadata, open_channel
        from vpsmon.v1 import agent_pb2 as pb
        from vpsmon.v1 import fleet_service_pb2 as fpb
        from vpsmon.v1 import fleet_service_pb2_grpc

        selector = fpb.FleetSelector(group=target) if as_group else fpb.FleetSelector(target=target)
        request = fpb.FleetExecRequest(
            selector=selector,
            exec=pb.ExecRequest(
                argv=list(command),
                cwd=cwd or "",
                env=variables,
                timeout_seconds=timeout or 0,
                stdin=given,
            ),
            concurrency=concurrency or 0,
        )
        channel = await open_channel(settings)
        async with channel:
            stub = fleet_service_pb2_grpc.FleetStub(channel)
            printer: LinePrinter | None = None
            failed = False
            async for event in stub.Exec(request, metadata=auth_metadata(settings)):
                kind = event.WhichOneof("kind")
                if kind == "plan":
                    names = {s.id: s.name for s in event.plan.servers}
                    printer = LinePrinter(
                        sys.stdout.buffer, sys.stderr.buffer, names, prefix=not no_prefix
                    )
                    if not quiet and event.plan.not_granted:
                        _note(
                            f"{event.plan.not_granted} server(s) of the group not granted to"
                            " you: skipped"
                        )
                elif kind == "output" and printer is not None:
                    output = event.output
                    stream = output.WhichOneof("kind")
                    if stream is not None:
                        printer.write(output.server_id, stream, getattr(output, stream))
                elif kind == "result":
                    result = event.result
                    if printer is not None:
                        printer.finish(result.server.id)
                    ok = not result.error and result.exit.code == 0 and not result.exit.timed_out
                    failed = failed or not ok
                    if not quiet:
                        _note(_result_line(result))
                elif kind == "summary" and not quiet:
                    s = event.summary
                    line = (
                        f"{s.servers} server(s): {s.succeeded} ok, {s.failed} failed,"
                        f" {s.errors} error(s)"
                    )
                    if s.not_granted:
                        line += f", {s.not_granted} not granted (skipped)"
                    _note(line + f" in {s.duration_seconds:.1f} s")
            return EXIT_SOME_FAILED if failed else 0

    sys.exit(_run_client(main))


def _note(line: str) -> None:
    click.echo(line, err=True)


# ---------------------------------------------------------------- shell


def _terminal_size(fd: int) -> tuple[int, int]:
    try:
        size = os.get_terminal_size(fd)
        return size.lines, size.columns
    except OSError:
        return 24, 80


@contextlib.contextmanager
def raw_terminal(fd: int) -> Iterator[bool]:
    """Raw mode on a terminal for the session; restored however it ends. Yields whether it is
    one (input from a pipe is passed through as it is)."""
    import termios
    import tty

    if not os.isatty(fd):
        yield False
        return
    saved = termios.tcgetattr(fd)
    tty.setraw(fd, termios.TCSANOW)
    try:
        yield True
    finally:
        termios.tcsetattr(fd, termios.TCSAFLUSH, saved)


@click.command("shell")
@click.argument("target")
@click.argument("command", nargs=-1, metavar="[-- COMMAND [ARG]...]")
@click.option("--term", help="TERM for the remote terminal [$TERM, else xterm-256color].")
@connection_options
def shell(
    target: str,
    command: tuple[str, ...],
    term: str | None,
    collector: str | None,
    token: str | None,
    fingerprint: str | None,
    client_config: Path | None,
) -> None:
    """Open an interactive terminal on one server, through the collector.

    TARGET is a server name or id. Runs the run-as user's login shell unless a command is
    given. The local terminal is in raw mode for the session (every key goes to the server,
    Ctrl-C included), follows window resizes, and is restored when the session ends. The
    exit status is the remote shell's.

    \b
    Examples:
      vpsmon shell web1
      vpsmon shell 12 -- htop
      VPSMON_TOKEN=vpsmon_… vpsmon shell --collector 10.0.0.2:8081 --fingerprint sha256:3f… db
    """
    settings = _settings(collector, token, fingerprint, client_config)
    fd_in = sys.stdin.fileno()
    fd_out = sys.stdout.fileno()

    async def main() -> int:
        from vpsmon.fleet_client import auth_metadata, open_channel
        from vpsmon.v1 import agent_pb2 as pb
        from vpsmon.v1 import fleet_service_pb2 as fpb
        from vpsmon.v1 import fleet_service_pb2_grpc

        channel = await open_channel(settings)
        loop = asyncio.get_running_loop()
        async with channel:
            call = fleet_service_pb2_grpc.FleetStub(channel).Pty(metadata=auth_metadata(settings))
            rows, cols = _terminal_size(fd_in)
            await call.write(
                fpb.FleetPtyClientMessage(
                    open=fpb.FleetPtyOpen(
                        target=target,
                        start=pb.PtyStart(
                            argv=list(command),
                            size=pb.PtySize(rows=rows, cols=cols),
                            term=term or os.environ.get("TERM") or "",
                        ),
                    )
                )
            )
            outgoing: asyncio.Queue[fpb.FleetPtyClientMessage | None] = asyncio.Queue(64)

            def on_input() -> None:
                try:
                    data = os.read(fd_in, 4096)
                except OSError:
                    data = b""
                if not data:
                    loop.remove_reader(fd_in)
                    outgoing.put_nowait(None)
                    return
                try:
                    outgoing.put_nowait(fpb.FleetPtyClientMessage(data=data))
                except asyncio.QueueFull:
                    # Pasting faster than the network takes it: wait before reading more.
                    loop.remove_reader(fd_in)
                    loop.create_task(_requeue(outgoing, fpb.FleetPtyClientMessage(data=data)))

            async def _requeue(
                queue: asyncio.Queue[fpb.FleetPtyClientMessage | None],
                message: fpb.FleetPtyClientMessage,
            ) -> None:
                await queue.put(message)
                loop.add_reader(fd_in, on_input)

            def on_resize() -> None:
                r, c = _terminal_size(fd_in)
                with contextlib.suppress(asyncio.QueueFull):
                    outgoing.put_nowait(
                        fpb.FleetPtyClientMessage(resize=pb.PtySize(rows=r, cols=c))
                    )

            async def send() -> None:
                while True:
                    message = await outgoing.get()
                    if message is None:
                        return  # local input ended: the session goes on until the remote ends
                    await call.write(message)

            status: int | None = None
            with raw_terminal(fd_in) as is_tty:
                loop.add_reader(fd_in, on_input)
                if is_tty:
                    loop.add_signal_handler(signal.SIGWINCH, on_resize)
                for sig in (signal.SIGTERM, signal.SIGHUP):
                    loop.add_signal_handler(sig, call.cancel)
                sender = asyncio.create_task(send())
                try:
                    async for message in call:
                        kind = message.WhichOneof("kind")
                        if kind == "data":
                            await asyncio.to_thread(_write_all, fd_out, message.data)
                        elif kind == "exit":
                            status = (
                                message.exit.code
                                if not message.exit.signal
                                else (128 + message.exit.signal)
                            )
                except asyncio.CancelledError:
                    status = EXIT_NO_STATUS
                finally:
                    loop.remove_reader(fd_in)
                    if is_tty:
                        loop.remove_signal_handler(signal.SIGWINCH)
                    sender.cancel()
                    with contextlib.suppress(BaseException):
                        await sender
            return EXIT_NO_STATUS if status is None else status

    sys.exit(_run_client(main))


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        written = os.write(fd, view)
        view = view[written:]


# ---------------------------------------------------------------- login


@click.command("login")
@click.option(
    "--collector",
    metavar="HOST:PORT",
    required=True,
    help="The collector's gRPC address (port 8081 unless given).",
)
@click.option(
    "--fingerprint",
    metavar="sha256:HEX",
    help="The collector's certificate fingerprint, from `vpsmon collector fingerprint` on it."
    " Without it, the fingerprint is shown and must be confirmed on a terminal.",
)
@click.option(
    "--token-file",
    type=click.File("r"),
    help="Read the API token from the first line of this file (- for stdin) [VPSMON_TOKEN, or"
    " asked for].",
)
@click.option(
    "--client-config",
    "client_config",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Where to write [VPSMON_CLIENT_CONFIG, or ~/.config/vpsmon/client.yml].",
)
def login(
    collector: str, fingerprint: str | None, token_file: Any, client_config: Path | None
) -> None:
    """Check and save the collector's address, its pinned fingerprint and your API token.

    `vpsmon exec` and `vpsmon shell` then need no options. The file is written mode 0600,
    only after the collector accepted the token over the pinned connection.

    \b
    Examples:
      vpsmon login --collector collector.example:8081 --fingerprint sha256:3f…
      vpsmon token create --user alice | tail -n1 | vpsmon login --collector 127.0.0.1:8081 \\
          --fingerprint "$(vpsmon collector fingerprint)" --token-file -
    """
    from vpsmon.fleet_client import (
        ClientError,
        ClientSettings,
        certificate_fingerprint,
        client_file,
        fetch_certificate,
        normalize_address,
        normalize_fingerprint,
        write_client_file,
    )

    try:
        address = normalize_address(collector)
        if fingerprint:
            pinned = normalize_fingerprint(fingerprint)
        else:
            seen = certificate_fingerprint(fetch_certificate(address))
            if not sys.stdin.isatty():
                raise ClientError(
                    f"the collector at {address} presents {seen}; compare it with"
                    " `vpsmon collector fingerprint` on the collector and pass --fingerprint"
                )
            click.echo(f"The collector at {address} presents certificate {seen}.", err=True)
            click.echo("Compare it with `vpsmon collector fingerprint` on the collector.", err=True)
            if not click.confirm("Is it the same?", err=True):
                raise ClientError("not trusted: nothing saved")
            pinned = seen
    except ClientError as err:
        raise UserError(str(err)) from None
    if token_file is not None:
        secret = token_file.readline().strip()
    elif os.environ.get("VPSMON_TOKEN"):
        secret = os.environ["VPSMON_TOKEN"].strip()
    elif sys.stdin.isatty():
        secret = click.prompt("API token", hide_input=True, err=True).strip()
    else:
        raise UserError("no token: pass --token-file FILE (or -), or set VPSMON_TOKEN")
    if not secret:
        raise UserError("the token is empty")
    settings = ClientSettings(address, pinned, secret)
    path = client_config or client_file()

    async def main() -> int:
        from vpsmon.fleet_client import auth_metadata, open_channel
        from vpsmon.v1 import fleet_service_pb2 as fpb
        from vpsmon.v1 import fleet_service_pb2_grpc

        channel = await open_channel(settings)
        async with channel:
            me = await fleet_service_pb2_grpc.FleetStub(channel).WhoAmI(
                fpb.WhoAmIRequest(), metadata=auth_metadata(settings), timeout=30
            )
        try:
            write_client_file(path, settings)
        except OSError as err:
            raise UserError(f"cannot write {path}: {err.strerror or err}") from None
        click.echo(f"logged in to {address} as {me.username} ({me.role}); saved in {path}")
        return 0

    _run_client(main)
