"""Exec and Pty: processes started as the run-as user, streamed without buffering them whole."""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import os
import signal
import struct
import termios
from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import dataclass

from vpsmon.exporter.command.identity import RunAs
from vpsmon.exporter.command.policy import Policy, PolicyError

CHUNK = 64 * 1024
# Environment a caller may not set: they would let an allowed program run other code.
FORBIDDEN_ENV_PREFIXES = ("LD_",)
FORBIDDEN_ENV = frozenset({"BASH_ENV", "ENV", "PATH", "PYTHONPATH", "PYTHONSTARTUP", "PERL5OPT"})


@dataclass(frozen=True, slots=True)
class Exit:
    code: int
    signal: int
    timed_out: bool


def checked_env(run_as: RunAs, extra: Mapping[str, str]) -> dict[str, str]:
    for name in extra:
        if not name or "=" in name or "\x00" in name:
            raise PolicyError(f"invalid environment variable name {name!r}")
        if name in FORBIDDEN_ENV or name.startswith(FORBIDDEN_ENV_PREFIXES):
            raise PolicyError(f"{name} cannot be set by the caller")
    return run_as.environment(dict(extra))


def working_dir(run_as: RunAs, requested: str) -> str:
    if requested:
        if not os.path.isdir(requested):
            raise FileNotFoundError(f"{requested}: no such directory")
        return requested
    return str(run_as.home) if run_as.home.is_dir() else "/"


def exit_of(returncode: int, timed_out: bool) -> Exit:
    if returncode < 0:
        return Exit(-1, -returncode, timed_out)
    return Exit(returncode, 0, timed_out)


def kill_group(pid: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, signal.SIGKILL)


async def run(
    argv: Sequence[str],
    *,
    run_as: RunAs,
    policy: Policy,
    cwd: str,
    env: Mapping[str, str],
    stdin: bytes,
    limit_seconds: float,
) -> AsyncIterator[tuple[str, bytes] | Exit]:
    """Yield ("stdout"|"stderr", chunk) as the command writes, then its Exit.

    Output is read in 64 KiB chunks into a queue of 8: a slow reader of the stream slows the
    command down (pipe back-pressure) instead of growing our memory.
    """
    environment = checked_env(run_as, env)
    program = policy.program(argv[0] if argv else "", environment["PATH"])
    process = await asyncio.create_subprocess_exec(
        program,
        *argv[1:],
        stdin=asyncio.subprocess.PIPE if stdin else asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        cwd=working_dir(run_as, cwd),
        env=environment,
        start_new_session=True,  # its own process group, so a timeout kills its children too
        **run_as.process_options(),  # type: ignore[arg-type]
    )
    queue: asyncio.Queue[tuple[str, bytes] | None] = asyncio.Queue(maxsize=8)

    async def pump(name: str, stream: asyncio.StreamReader | None) -> None:
        assert stream is not None
        while chunk := await stream.read(CHUNK):
            await queue.put((name, chunk))
        await queue.put(None)

    async def feed() -> None:
        assert process.stdin is not None
        with contextlib.suppress(ConnectionError):
            process.stdin.write(stdin)
            await process.stdin.drain()
        process.stdin.close()

    tasks = [
        asyncio.create_task(pump("stdout", process.stdout)),
        asyncio.create_task(pump("stderr", process.stderr)),
    ]
    if stdin:
        tasks.append(asyncio.create_task(feed()))
    timed_out = False
    loop = asyncio.get_running_loop()
    deadline = loop.time() + limit_seconds
    try:
        open_streams = 2
        while open_streams:
            remaining = deadline - loop.time()
            try:
                item = await asyncio.wait_for(queue.get(), max(remaining, 0))
            except TimeoutError:
                timed_out = True
                kill_group(process.pid)
                break
            if item is None:
                open_streams -= 1
            else:
                yield item
        returncode = await process.wait()
        yield exit_of(returncode, timed_out)
    finally:
        # Also when the caller went away mid-stream: nothing keeps running on our behalf.
        if process.returncode is None:
            kill_group(process.pid)
            await process.wait()
        for task in tasks:
            task.cancel()


class Terminal:
    """A process on a pseudo-terminal: `output()` yields what it prints, `write` types."""

    def __init__(self, master: int, process: asyncio.subprocess.Process) -> None:
        self.master = master
        self.process = process

    @classmethod
    async def start(
        cls,
        argv: Sequence[str],
        *,
        run_as: RunAs,
        policy: Policy,
        env: Mapping[str, str],
        term: str,
        rows: int,
        cols: int,
    ) -> Terminal:
        environment = checked_env(run_as, {"TERM": term or "xterm-256color", **env})
        program = policy.program(argv[0], environment["PATH"])
        master, slave = os.openpty()
        try:
            resize(master, rows, cols)
            # `setsid --ctty` makes the terminal the session's controlling tty (job control,
            # Ctrl-C) without a preexec_fn, which is unsafe in a threaded process (gRPC).
            process = await asyncio.create_subprocess_exec(
                "setsid",
                "--ctty",
                "--wait",
                program,
                *argv[1:],
                stdin=slave,
                stdout=slave,
                stderr=slave,
                cwd=working_dir(run_as, ""),
                env=environment,
                **run_as.process_options(),  # type: ignore[arg-type]
            )
        except BaseException:
            os.close(master)
            raise
        finally:
            os.close(slave)
        os.set_blocking(master, False)
        return cls(master, process)

    async def output(self) -> AsyncIterator[bytes]:
        """What the terminal shows, until the process closed it."""
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue[bytes | None] = asyncio.Queue(maxsize=16)

        def readable() -> None:
            try:
                data = os.read(self.master, CHUNK)
            except BlockingIOError:
                return
            except OSError:  # EIO: the other side is closed, the process has exited
                data = b""
            queue.put_nowait(data or None)
            if queue.full() or not data:
                loop.remove_reader(self.master)  # resumed once the queue drains

        loop.add_reader(self.master, readable)
        try:
            while (data := await queue.get()) is not None:
                yield data
                if queue.empty():
                    loop.add_reader(self.master, readable)
        finally:
            loop.remove_reader(self.master)

    async def write(self, data: bytes) -> None:
        view = memoryview(data)
        while view:
            try:
                written = os.write(self.master, view)
            except BlockingIOError:
                await asyncio.sleep(0.01)  # the terminal's input buffer is full for a moment
                continue
            view = view[written:]

    def resize(self, rows: int, cols: int) -> None:
        resize(self.master, rows, cols)

    async def wait(self) -> Exit:
        return exit_of(await self.process.wait(), False)

    async def close(self) -> None:
        if self.process.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                # setsid made the child a session (and group) leader: hang up all of it.
                os.killpg(self.process.pid, signal.SIGHUP)
            try:
                await asyncio.wait_for(self.process.wait(), 5)
            except TimeoutError:
                kill_group(self.process.pid)
                await self.process.wait()
        with contextlib.suppress(OSError):
            os.close(self.master)


def resize(fd: int, rows: int, cols: int) -> None:
    rows = min(max(rows, 1), 1000) if rows else 24
    cols = min(max(cols, 1), 1000) if cols else 80
    fcntl.ioctl(fd, termios.TIOCSWINSZ, struct.pack("HHHH", rows, cols, 0, 0))
