"""`vpsmon exec`, `vpsmon shell` and `vpsmon login` as real processes against the collector's
Fleet service and real exporters (issue #7 item 3). The shell runs on a pseudo-terminal the
test holds, as a person's terminal would be."""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import os
import signal
import stat
import struct
import termios
from pathlib import Path

import pytest

from tests.e2e.procs import VPSMON, base_env
from tests.fleet_fixtures import Fleet, fleet_fixture  # noqa: F401 (the fixture)


def client_env(fleet: Fleet, who: str, tmp: Path, **extra: str) -> dict[str, str]:
    values = {
        "VPSMON_COLLECTOR": fleet.address,
        "VPSMON_FINGERPRINT": fleet.fingerprint,
        "VPSMON_TOKEN": fleet.tokens[who],
        "VPSMON_CLIENT_CONFIG": str(tmp / "no-login.yml"),
    }
    return base_env(**{**values, **extra})


async def vpsmon(
    *args: str, env: dict[str, str], stdin: bytes | None = None
) -> tuple[int, str, str]:
    # Async: the Fleet service under test runs on this event loop.
    process = await asyncio.create_subprocess_exec(
        VPSMON,
        *args,
        env=env,
        stdin=asyncio.subprocess.PIPE if stdin is not None else asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    async with asyncio.timeout(120):
        out, err = await process.communicate(stdin)
    assert process.returncode is not None
    return process.returncode, out.decode(), err.decode()


async def test_exec_on_a_group_prints_each_servers_output_with_its_name(
    fleet: Fleet, tmp_path: Path
) -> None:
    code, out, err = await vpsmon(
        "exec", "-g", "web", "--", "id", "-un", env=client_env(fleet, "boss", tmp_path)
    )
    assert code == 0, err
    assert sorted(out.splitlines()) == ["web1 | nobody", "web2 | daemon"]
    assert "web1: exit 0" in err and "web2: exit 0" in err
    assert "2 server(s): 2 ok, 0 failed, 0 error(s)" in err


async def test_exec_exits_non_zero_when_a_server_fails_and_says_which(
    fleet: Fleet, tmp_path: Path
) -> None:
    code, out, err = await vpsmon(
        "exec",
        "web",
        "--",
        "sh",
        "-c",
        'echo "on $(id -un)"; test "$(id -un)" = nobody',
        env=client_env(fleet, "boss", tmp_path),
    )
    assert code == 1
    assert sorted(out.splitlines()) == ["web1 | on nobody", "web2 | on daemon"]
    assert "web2: exit 1" in err and "1 ok, 1 failed" in err


async def test_an_operator_runs_only_where_granted_and_hears_about_the_rest(
    fleet: Fleet, tmp_path: Path
) -> None:
    env = client_env(fleet, "op", tmp_path)
    code, out, err = await vpsmon("exec", "web", "--", "id", "-un", env=env)
    assert code == 0, err
    assert out.splitlines() == ["web1 | nobody"]
    assert "1 server(s) of the group not granted to you: skipped" in err
    code, out, err = await vpsmon("exec", "web2", "--", "id", "-un", env=env)
    assert code == 1 and out == ""
    assert err.strip() == "vpsmon: error: no server or group 'web2'"


@pytest.mark.parametrize(
    ("who", "message"),
    [
        ("looker", "vpsmon: error: not allowed: exec needs the operator role"),
        ("nobody-at-all", "vpsmon: error: the collector refused the token"),
    ],
)
async def test_a_viewer_or_a_wrong_token_gets_a_one_line_refusal(
    fleet: Fleet, tmp_path: Path, who: str, message: str
) -> None:
    fleet.tokens.setdefault("nobody-at-all", "vpsmon_" + "A" * 43)
    code, out, err = await vpsmon(
        "exec", "web1", "--", "touch", "/tmp/x", env=client_env(fleet, who, tmp_path)
    )
    assert code == 1 and out == ""
    assert len(err.strip().splitlines()) == 1 and err.startswith(message), err


async def test_a_collector_with_another_fingerprint_is_refused_before_the_token_is_sent(
    fleet: Fleet, tmp_path: Path
) -> None:
    env = client_env(fleet, "boss", tmp_path, VPSMON_FINGERPRINT="sha256:" + "ab" * 32)
    code, _, err = await vpsmon("exec", "web1", "--", "true", env=env)
    assert code == 1 and "not the pinned sha256:abab" in err
    assert "Traceback" not in err


async def test_login_saves_a_private_file_that_exec_then_uses(fleet: Fleet, tmp_path: Path) -> None:
    saved = tmp_path / "conf" / "client.yml"
    env = base_env(VPSMON_CLIENT_CONFIG=str(saved))
    code, out, err = await vpsmon(
        "login",
        "--collector",
        fleet.address,
        "--fingerprint",
        fleet.fingerprint.upper().replace("SHA256:", ""),
        "--token-file",
        "-",
        env=env,
        stdin=fleet.tokens["op"].encode() + b"\n",
    )
    assert code == 0, err
    assert f"as op (operator); saved in {saved}" in out
    assert stat.S_IMODE(saved.stat().st_mode) == 0o600
    code, out, err = await vpsmon("exec", "web1", "--", "id", "-un", env=env)
    assert (code, out) == (0, "web1 | nobody\n"), err


async def test_login_with_a_wrong_token_saves_nothing(fleet: Fleet, tmp_path: Path) -> None:
    saved = tmp_path / "client.yml"
    code, _, err = await vpsmon(
        "login",
        "--collector",
        fleet.address,
        "--fingerprint",
        fleet.fingerprint,
        "--token-file",
        "-",
        env=base_env(VPSMON_CLIENT_CONFIG=str(saved)),
        stdin=b"vpsmon_wrong-wrong-wrong-wrong\n",
    )
    assert code == 1 and "refused the token" in err
    assert not saved.exists()


async def test_ctrl_c_on_exec_stops_the_remote_command(fleet: Fleet, tmp_path: Path) -> None:
    process = await asyncio.create_subprocess_exec(
        VPSMON,
        "exec",
        "web1",
        "--",
        "sh",
        "-c",
        "echo $$; exec sleep 60",
        env=client_env(fleet, "boss", tmp_path),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    assert process.stdout is not None and process.stderr is not None
    async with asyncio.timeout(60):
        line = await process.stdout.readline()
        pid = int(line.split(b"|")[1])
        assert alive(pid)
        process.send_signal(signal.SIGINT)
        assert await process.wait() == 130
        assert b"interrupted" in await process.stderr.read()
        while alive(pid):  # noqa: ASYNC110 (polls the process table)
            await asyncio.sleep(0.1)


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


# ---------------------------------------------------------------- shell on a pty


class Terminal:
    """The master side of a pseudo-terminal, read without blocking the event loop."""

    def __init__(self) -> None:
        self.master, self.slave = os.openpty()
        self.seen = b""
        self._data = asyncio.Event()
        asyncio.get_running_loop().add_reader(self.master, self._read)

    def _read(self) -> None:
        try:
            chunk = os.read(self.master, 65536)
        except OSError:
            chunk = b""
        if not chunk:
            asyncio.get_running_loop().remove_reader(self.master)
        self.seen += chunk
        self._data.set()

    async def expect(self, needle: bytes) -> None:
        async with asyncio.timeout(30):
            while needle not in self.seen:
                self._data.clear()
                await self._data.wait()

    async def ask_until(self, command: bytes, needle: bytes) -> None:
        """Type `command` again each second until `needle` shows (30 s at most): the client
        reads its signals and its input in one event loop, so a resize signalled as the
        command is typed may reach the remote pty just after the command."""
        async with asyncio.timeout(30):
            while needle not in self.seen:
                self.type(command)
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(1):
                        while needle not in self.seen:
                            self._data.clear()
                            await self._data.wait()

    def type(self, text: bytes) -> None:
        os.write(self.master, text)

    def resize(self, rows: int, cols: int) -> None:
        fcntl.ioctl(self.master, termios.TIOCSWINSZ, struct.pack("HHHH", rows, cols, 0, 0))

    def close(self) -> None:
        asyncio.get_running_loop().remove_reader(self.master)
        os.close(self.master)
        os.close(self.slave)


async def test_shell_is_raw_echoes_typed_input_follows_resizes_and_restores_the_terminal(
    fleet: Fleet, tmp_path: Path
) -> None:
    terminal = Terminal()
    try:
        terminal.resize(24, 80)
        before = termios.tcgetattr(terminal.slave)
        assert before[3] & termios.ECHO and before[3] & termios.ICANON  # a cooked terminal
        process = await asyncio.create_subprocess_exec(
            VPSMON,
            "shell",
            "web1",
            "--",
            "/bin/sh",
            env=client_env(fleet, "op", tmp_path, TERM="xterm"),
            stdin=terminal.slave,
            stdout=terminal.slave,
            stderr=terminal.slave,
            start_new_session=True,
        )
        terminal.type(b"echo hel''lo\n")
        await terminal.expect(b"hello\r\n")
        during = termios.tcgetattr(terminal.slave)
        assert not during[3] & termios.ECHO and not during[3] & termios.ICANON  # raw
        terminal.resize(50, 120)
        process.send_signal(signal.SIGWINCH)
        await terminal.ask_until(b"stty size\n", b"50 120")
        terminal.type(b"exit 3\n")
        async with asyncio.timeout(30):
            code = await process.wait()
        assert code == 3
        assert termios.tcgetattr(terminal.slave) == before  # restored
    finally:
        terminal.close()
    opened = [e for e in await _audit(fleet, "pty.open") if e.username == "op"]
    assert [e.server_name for e in opened] == ["web1"]


async def test_shell_cut_off_by_sigterm_still_restores_the_terminal(
    fleet: Fleet, tmp_path: Path
) -> None:
    terminal = Terminal()
    try:
        before = termios.tcgetattr(terminal.slave)
        process = await asyncio.create_subprocess_exec(
            VPSMON,
            "shell",
            "web1",
            "--",
            "/bin/sh",
            env=client_env(fleet, "boss", tmp_path),
            stdin=terminal.slave,
            stdout=terminal.slave,
            stderr=terminal.slave,
            start_new_session=True,
        )
        terminal.type(b"echo rea''dy\n")
        await terminal.expect(b"ready\r\n")
        process.terminate()
        async with asyncio.timeout(30):
            code = await process.wait()
        assert code == 255
        assert termios.tcgetattr(terminal.slave) == before
    finally:
        terminal.close()


async def _audit(fleet: Fleet, action: str) -> list:  # type: ignore[type-arg]
    from vpsmon.collector.audit import AuditQuery, search

    return await search(fleet.pool, AuditQuery(action=action))


async def test_exec_sends_standard_input_to_every_server_when_asked(
    fleet: Fleet, tmp_path: Path
) -> None:
    env = client_env(fleet, "boss", tmp_path)
    script = b'echo "$(id -un) got it"\n'
    code, out, err = await vpsmon(
        "exec", "-g", "web", "--stdin", "--", "sh", "-s", env=env, stdin=script
    )
    assert code == 0, err
    assert sorted(out.splitlines()) == ["web1 | nobody got it", "web2 | daemon got it"]
    code, out, err = await vpsmon(
        "exec", "web1", "--stdin", "--", "true", env=env, stdin=b"x" * (1024 * 1024 + 1)
    )
    assert code == 1 and "more than 1 MiB" in err
