"""Web terminal keystroke round trip (issue #7 budget: under 50 ms on loopback).

Starts a real exporter (`vpsmon exporter run`, terminal enabled, pinned to the collector's
identity) and a real collector (`vpsmon collector run`) as separate processes on 127.0.0.1,
enrols the exporter in the collector's database, logs in as a browser would and opens the
terminal WebSocket. In the shell it runs `cat > /dev/null`, then types one character at a time
and waits for its echo (the pty's line discipline echoes it), so each sample is:

    WebSocket client → collector (bridge) → gRPC Agent.Pty (mTLS) → exporter → pty
    → echo → exporter → collector → WebSocket client

The same keystrokes also go straight to the exporter's Pty over gRPC from this process (no
collector, no WebSocket), to show what the bridge adds. Prints a Markdown table for
docs/benchmarks.md; needs a PostgreSQL to create a database on (VPSMON_BENCH_DATABASE_URL).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import pwd
import re
import secrets
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.parse
import urllib.request
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import aiohttp
import asyncpg
import psutil

from vpsmon.collector.fleet.agents import record_agent
from vpsmon.collector.fleet.identity import ensure_identity
from vpsmon.collector.fleet.pool import AgentPool, AgentTarget
from vpsmon.collector.fleet.tokenkey import TokenKey
from vpsmon.exporter.config import load_config as load_exporter_config
from vpsmon.exporter.security import fingerprint
from vpsmon.exporter.server import identity
from vpsmon.v1 import agent_pb2 as pb

VPSMON = str(Path(sys.executable).with_name("vpsmon"))
PASSWORD = "bench-terminal-password"
BUDGET_MS = 50.0
CSRF_FIELD = re.compile(r'name="csrf_token" value="([^"]+)"')


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def start(args: list[str], env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("VPSMON_")}
    return subprocess.Popen(
        [VPSMON, *args],
        env={**clean, **env},
        stdout=log.open("wb"),
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )


def stop(popen: subprocess.Popen[bytes]) -> None:
    if popen.poll() is None:
        popen.send_signal(signal.SIGTERM)
        try:
            popen.wait(20)
        except subprocess.TimeoutExpired:
            os.killpg(popen.pid, signal.SIGKILL)
            popen.wait()


def wait_http(url: str, popen: subprocess.Popen[bytes], log: Path, timeout: float = 90) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if popen.poll() is not None:
            raise RuntimeError(f"{url}: process exited:\n{log.read_text(errors='replace')}")
        try:
            with urllib.request.urlopen(url, timeout=2):  # noqa: S310 (our own local server)
                return
        except OSError:
            time.sleep(0.2)
    raise RuntimeError(f"{url} did not answer within {timeout}s:\n{log.read_text()}")


def machine() -> str:
    model = "unknown CPU"
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            model = line.split(":", 1)[1].strip()
            break
    mem = psutil.virtual_memory().total / 2**30
    load = ", ".join(f"{v:.1f}" for v in os.getloadavg())
    return (
        f"{os.cpu_count()} cores ({model}), {mem:.1f} GiB RAM, Linux {platform.release()},"
        f" Python {platform.python_version()}; load average {load}"
    )


def summary(name: str, samples: list[float], budgeted: bool = True) -> str:
    ms = sorted(s * 1000 for s in samples)
    q = statistics.quantiles(ms, n=100, method="inclusive")
    verdict = "PASS" if q[98] < BUDGET_MS else "FAIL"
    if not budgeted:
        return (
            f"| {name} | {len(ms)} | {q[49]:.2f} ms | {q[94]:.2f} ms | {q[98]:.2f} ms"
            f" | {ms[-1]:.2f} ms | – |"
        )
    return (
        f"| {name} | {len(ms)} | {q[49]:.2f} ms | {q[94]:.2f} ms | {q[98]:.2f} ms"
        f" | {ms[-1]:.2f} ms | {verdict} (p99 < {BUDGET_MS:.0f} ms) |"
    )


Send = Callable[[bytes], Awaitable[None]]
Receive = Callable[[], Awaitable[bytes]]


async def keystrokes(send: Send, receive: Receive, count: int, pause: float) -> list[float]:
    """Type `count` characters into `cat > /dev/null`; the time until each one's echo."""
    await send(b"cat > /dev/null\r")
    await drain_until(receive, b"cat > /dev/null")
    await asyncio.sleep(0.5)
    samples = []
    alphabet = b"abcdefghijklmnopqrstuvwxyz0123456789"
    for i in range(count):
        key = alphabet[i % len(alphabet) : i % len(alphabet) + 1]
        t0 = time.perf_counter()
        await send(key)
        await drain_until(receive, key)
        samples.append(time.perf_counter() - t0)
        if i % 60 == 59:  # a new line now and then, as people type
            await send(b"\r")
            await drain_until(receive, b"\n")
        await asyncio.sleep(pause)
    await send(b"\x04")  # end cat
    return samples


async def drain_until(receive: Receive, wanted: bytes) -> None:
    seen = b""
    async with asyncio.timeout(10):
        while wanted not in seen:
            seen = seen[-64:] + await receive()


async def through_the_web(base: str, server_id: int, count: int, pause: float) -> list[float]:
    jar = aiohttp.CookieJar(unsafe=True)
    async with aiohttp.ClientSession(base_url=base, cookie_jar=jar) as client:
        page = await (await client.get("/login")).text()
        match = CSRF_FIELD.search(page)
        assert match, page[:200]
        resp = await client.post(
            "/login",
            data={"username": "admin", "password": PASSWORD, "csrf_token": match.group(1)},
            allow_redirects=False,
        )
        assert resp.status == 302, await resp.text()
        ws = await client.ws_connect(
            f"/ws/servers/{server_id}/pty?cols=120&rows=40", origin=base, autoping=True
        )

        async def send(data: bytes) -> None:
            await ws.send_bytes(data)

        async def receive() -> bytes:
            while True:
                msg = await ws.receive()
                if msg.type == aiohttp.WSMsgType.BINARY:
                    return bytes(msg.data)
                if msg.type != aiohttp.WSMsgType.TEXT:
                    raise RuntimeError(f"terminal socket ended: {msg.type} {msg.data}")

        try:
            return await keystrokes(send, receive, count, pause)
        finally:
            await ws.close()


async def straight_to_the_exporter(
    agents: AgentPool, target: AgentTarget, count: int, pause: float
) -> list[float]:
    queue: asyncio.Queue[pb.PtyClientMessage] = asyncio.Queue()
    start_msg = pb.PtyStart(size=pb.PtySize(rows=40, cols=120), term="xterm-256color")
    await queue.put(pb.PtyClientMessage(start=start_msg))

    async def requests() -> AsyncIterator[pb.PtyClientMessage]:
        while True:
            yield await queue.get()

    call = agents.stub(target).Pty(requests(), metadata=agents.metadata(target))
    replies = call.__aiter__()

    async def send(data: bytes) -> None:
        await queue.put(pb.PtyClientMessage(data=data))

    async def receive() -> bytes:
        while True:
            message = await anext(replies)
            if message.WhichOneof("kind") == "data":
                return bytes(message.data)

    try:
        return await keystrokes(send, receive, count, pause)
    finally:
        call.cancel()


async def create_database(admin_url: str) -> str:
    name = f"vpsmon_bench_terminal_{os.getpid()}"
    conn = await asyncpg.connect(admin_url)
    try:
        await conn.execute(f'CREATE DATABASE "{name}"')
    finally:
        await conn.close()
    parts = urllib.parse.urlsplit(admin_url)
    return urllib.parse.urlunsplit(parts._replace(path="/" + name))


async def drop_database(admin_url: str, url: str) -> None:
    name = urllib.parse.urlsplit(url).path.lstrip("/")
    conn = await asyncpg.connect(admin_url)
    try:
        await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await conn.close()


async def run(args: argparse.Namespace) -> int:
    tmp = Path(tempfile.mkdtemp(prefix="vpsmon-bench-terminal-"))
    tmp.chmod(0o755)  # noqa: ASYNC240 (set-up, before anything is timed; commands run as nobody)
    run_as = "nobody" if os.geteuid() == 0 else pwd.getpwuid(os.getuid()).pw_name
    database = await create_database(args.database_url)
    procs: list[subprocess.Popen[bytes]] = []
    try:
        collector_identity = ensure_identity(tmp / "collector-data")
        token = secrets.token_urlsafe(32)
        command_port, metrics_port, web_port = free_port(), free_port(), free_port()
        exporter_yml = tmp / "exporter.yml"
        exporter_yml.write_text(
            f"listen: 127.0.0.1:{metrics_port}\nstate_dir: {tmp / 'exporter-state'}\n"
            "collectors: {hwmon: false, docker: false, filesystem: false}\n"
            f"command:\n  listen: 127.0.0.1:{command_port}\n  pty: true\n"
            f"  collector_cert: {collector_identity.cert}\n"
            f"  collector_fingerprint: '{fingerprint(collector_identity.cert)}'\n"
            f"  token: '{token}'\n  run_as: {run_as}\n"
        )
        exporter_config = load_exporter_config(exporter_yml, env={})
        exporter_cert = identity(exporter_config).cert
        exporter_log = tmp / "exporter.log"
        procs.append(start(["exporter", "run", "-c", str(exporter_yml)], {}, exporter_log))
        wait_http(f"http://127.0.0.1:{metrics_port}/metrics", procs[-1], exporter_log)

        collector_yml = tmp / "collector.yml"
        collector_yml.write_text(
            f"data_dir: {tmp / 'collector-data'}\ngrpc:\n  listen: 127.0.0.1:{free_port()}\n"
        )
        collector_log = tmp / "collector.log"
        env = {"VPSMON_DATABASE_URL": database, "VPSMON_ADMIN_PASSWORD": PASSWORD}
        procs.append(
            start(
                ["collector", "run", "-c", str(collector_yml), "--listen", f"127.0.0.1:{web_port}"],
                env,
                collector_log,
            )
        )
        base = f"http://127.0.0.1:{web_port}"
        wait_http(f"{base}/healthz", procs[-1], collector_log)

        pool = await asyncpg.connect(database)
        try:
            server_id = await pool.fetchval(
                "INSERT INTO servers (name, url) VALUES ('bench', $1) RETURNING id",
                f"http://127.0.0.1:{metrics_port}/metrics",
            )
            record = await record_agent(
                pool,
                server_id,
                TokenKey.in_data_dir(tmp / "collector-data"),
                address=f"127.0.0.1:{command_port}",
                exporter_cert=exporter_cert.read_bytes(),
                features=["pty"],
                token=token,
            )
        finally:
            await pool.close()

        agents = AgentPool(collector_identity)
        try:
            await straight_to_the_exporter(agents, record.target, 20, args.pause)  # warm up
            direct = await straight_to_the_exporter(agents, record.target, args.count, args.pause)
        finally:
            await agents.close()
        await through_the_web(base, server_id, 20, args.pause)  # warm up
        bridged = await through_the_web(base, server_id, args.count, args.pause)

        print(f"\n### Keystroke round trip, {args.count} keystrokes, loopback\n")
        print("| path | keystrokes | p50 | p95 | p99 | max | budget |")
        print("|---|---|---|---|---|---|---|")
        print(summary("WebSocket → collector → gRPC → exporter pty echo → back", bridged))
        print(summary("gRPC → exporter pty echo → back (no collector, for scale)", direct, False))
        print(f"\nMachine: {machine()}")
        q = statistics.quantiles([s * 1000 for s in bridged], n=100, method="inclusive")
        return 0 if q[98] < BUDGET_MS else 1
    finally:
        for popen in reversed(procs):
            stop(popen)
        await drop_database(args.database_url, database)
        if args.keep:
            print(f"kept {tmp}")
        else:
            shutil.rmtree(tmp, ignore_errors=True)


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=500, help="keystrokes per path")
    parser.add_argument("--pause", type=float, default=0.01, help="seconds between keystrokes")
    parser.add_argument(
        "--database-url",
        default=os.environ.get("VPSMON_BENCH_DATABASE_URL")
        or os.environ.get("VPSMON_TEST_DATABASE_URL"),
        help="a PostgreSQL server to create the benchmark database on",
    )
    parser.add_argument("--keep", action="store_true", help="keep the temp dir (logs, configs)")
    args = parser.parse_args(argv)
    if not args.database_url:
        print(
            "terminal: skipped, set VPSMON_BENCH_DATABASE_URL (a PostgreSQL to create a"
            " database on)"
        )
        return 0
    return asyncio.run(run(args))


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
