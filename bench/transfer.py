"""File transfer through the collector (issue #7): upload and download throughput on loopback.

A real exporter (`vpsmon exporter run` with the files feature) and a real collector
(`vpsmon collector run`), each in its own process, enrolled as the enrol flow leaves them (the
agents row is written directly). curl, a third process, moves one file up
(PUT /api/servers/ID/files/upload: HTTP into the collector, gRPC stream to the exporter, atomic
write with fsync there) and down (GET …/files/download: FileRead stream back through the
collector) with an admin's API token. The budget is 50 MB/s each way. Also reported: the
collector's resident memory before the transfers and its peak (VmHWM) after, the exporter's
peak, and that every copy has the source's SHA-256.

    VPSMON_BENCH_DATABASE_URL=postgresql://postgres@127.0.0.1:5432/postgres \
        python bench/transfer.py [--size-mib 256] [--runs 3] [--dir /dev/shm]

Needs a PostgreSQL server where it may create and drop a database.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import os
import secrets
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.parse
import urllib.request
from pathlib import Path

import asyncpg

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.conftest import free_port  # noqa: E402  (the bench reuses the tests' helper)
from tests.e2e.procs import Proc, base_env, wait_http  # noqa: E402
from vpsmon.collector import tokens  # noqa: E402
from vpsmon.collector.fleet.agents import record_agent  # noqa: E402
from vpsmon.collector.fleet.identity import ensure_identity  # noqa: E402
from vpsmon.collector.fleet.tokenkey import TokenKey  # noqa: E402
from vpsmon.exporter.security import ensure_self_signed, fingerprint  # noqa: E402

MB = 1_000_000
MIB = 1024 * 1024
BUDGET_MB_S = 50.0


def status_kib(pid: int, field: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise KeyError(field)


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process so far (/proc/PID/stat fields 14 and 15)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def write_random(path: Path, size: int) -> str:
    digest = hashlib.sha256()
    with path.open("wb") as f:
        left = size
        while left:
            chunk = os.urandom(min(left, 4 * MIB))
            digest.update(chunk)
            f.write(chunk)
            left -= len(chunk)
    return digest.hexdigest()


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        while chunk := f.read(4 * MIB):
            digest.update(chunk)
    return digest.hexdigest()


def curl(args: list[str], output: Path = Path("/dev/null")) -> float:
    """Run curl; returns its total time in seconds."""
    done = subprocess.run(
        ["curl", "-sS", "--fail-with-body", "-o", str(output), "-w", "%{time_total}", *args],
        capture_output=True,
        text=True,
        check=False,
    )
    if done.returncode != 0:
        raise SystemExit(f"curl failed: {done.stderr.strip()} {done.stdout.strip()}")
    return float(done.stdout.strip())


async def make_database(admin_url: str) -> str:
    name = f"vpsmon_bench_{secrets.token_hex(4)}"
    conn = await asyncpg.connect(admin_url)
    try:
        await conn.execute(f'CREATE DATABASE "{name}"')
    finally:
        await conn.close()
    return urllib.parse.urlunsplit(urllib.parse.urlsplit(admin_url)._replace(path="/" + name))


async def drop_database(admin_url: str, url: str) -> None:
    name = urllib.parse.urlsplit(url).path.lstrip("/")
    conn = await asyncpg.connect(admin_url)
    try:
        await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await conn.close()


async def enrol(
    url: str, address: str, exporter_cert: bytes, token: str, data_dir: Path
) -> tuple[int, str]:
    """The server row, its agents row and an admin API token; (server id, token secret)."""
    pool = await asyncpg.create_pool(url, min_size=1, max_size=2)
    try:
        server_id: int = await pool.fetchval(
            "INSERT INTO servers (name, url) VALUES ('bench', 'http://127.0.0.1:9/metrics')"
            " RETURNING id"
        )
        await record_agent(
            pool,
            server_id,
            TokenKey.in_data_dir(data_dir),  # the running collector's key file
            address=address,
            exporter_cert=exporter_cert,
            features=("files",),
            token=token,
        )
        admin_id: int = await pool.fetchval("SELECT id FROM users WHERE username = 'admin'")
        _, secret = await tokens.create_token(pool, admin_id, "bench-transfer")
        return server_id, secret
    finally:
        await pool.close()


def run(admin_url: str, size: int, runs: int, where: Path | None) -> int:
    url = asyncio.run(make_database(admin_url))
    tmp = Path(tempfile.mkdtemp(prefix="vpsmon-transfer-", dir=where))
    procs: list[Proc] = []
    try:
        files = tmp / "files"
        files.mkdir()
        collector_id = ensure_identity(tmp / "collector-data")
        token = secrets.token_urlsafe(32)
        command_port, metrics_port, web_port = free_port(), free_port(), free_port()
        (tmp / "policy.yml").write_text(f"file_roots: [{files}]\n")
        (tmp / "exporter.yml").write_text(
            f"listen: 127.0.0.1:{metrics_port}\n"
            f"state_dir: {tmp / 'exporter-state'}\n"
            "command:\n"
            f"  listen: 127.0.0.1:{command_port}\n"
            "  files: true\n"
            f"  collector_cert: {collector_id.cert}\n"
            f"  collector_fingerprint: '{fingerprint(collector_id.cert)}'\n"
            f"  token: '{token}'\n"
            f"  policy_file: {tmp / 'policy.yml'}\n"
            # As root the exporter insists on a run-as user (files are written as root and
            # handed to it).
            + ("  run_as: nobody\n" if os.geteuid() == 0 else "")
            + "collectors:\n  docker: false\n  hwmon: false\n"
        )
        exporter = Proc(
            ["exporter", "run", "-c", str(tmp / "exporter.yml")], base_env(), tmp / "exporter.log"
        )
        procs.append(exporter)
        wait_http(f"http://127.0.0.1:{metrics_port}/metrics", exporter)
        exporter_cert = ensure_self_signed(tmp / "exporter-state").cert.read_bytes()
        collector = Proc(
            [
                "collector",
                "run",
                "--listen",
                f"127.0.0.1:{web_port}",
                "--data-dir",
                str(tmp / "collector-data"),
            ],
            base_env(VPSMON_DATABASE_URL=url, VPSMON_ADMIN_PASSWORD=secrets.token_hex(12)),
            tmp / "collector.log",
        )
        procs.append(collector)
        base = f"http://127.0.0.1:{web_port}"
        wait_http(f"{base}/healthz", collector)
        server_id, secret = asyncio.run(
            enrol(url, f"127.0.0.1:{command_port}", exporter_cert, token, tmp / "collector-data")
        )
        auth = ["-H", f"Authorization: Bearer {secret}"]
        source = tmp / "source.bin"
        digest = write_random(source, size)
        target = files / "copy.bin"
        api = f"{base}/api/servers/{server_id}/files"
        up_query = urllib.parse.urlencode({"path": str(target), "overwrite": "1"})
        down_query = urllib.parse.urlencode({"path": str(target)})
        # One small round first: the collector's channel to the exporter is made on first use.
        with urllib.request.urlopen(  # noqa: S310 (our own local collector)
            urllib.request.Request(f"{api}/list", headers={"Authorization": f"Bearer {secret}"})
        ) as resp:
            resp.read()
        rss_before = status_kib(collector.popen.pid, "VmRSS")
        hwm_before = status_kib(collector.popen.pid, "VmHWM")
        ups: list[float] = []
        downs: list[float] = []
        cpu = {"up": [0.0, 0.0], "down": [0.0, 0.0]}  # collector, exporter CPU seconds
        pids = (collector.popen.pid, exporter.popen.pid)
        for i in range(runs):
            before = [cpu_seconds(p) for p in pids]
            ups.append(
                curl(
                    [
                        *auth,
                        "-H",
                        "Content-Type: application/octet-stream",
                        "-H",
                        "Expect:",
                        "-T",
                        str(source),
                        f"{api}/upload?{up_query}",
                    ]
                )
            )
            after = [cpu_seconds(p) for p in pids]
            cpu["up"] = [c + a - b for c, a, b in zip(cpu["up"], after, before, strict=True)]
            if sha256_file(target) != digest:
                raise SystemExit("the uploaded copy differs from the source")
            before = [cpu_seconds(p) for p in pids]
            out = tmp / "down.bin" if i == 0 else Path("/dev/null")
            downs.append(curl([*auth, f"{api}/download?{down_query}"], out))
            after = [cpu_seconds(p) for p in pids]
            cpu["down"] = [c + a - b for c, a, b in zip(cpu["down"], after, before, strict=True)]
            if i == 0:
                if sha256_file(out) != digest:
                    raise SystemExit("the downloaded copy differs from the source")
                out.unlink()
        hwm_after = status_kib(collector.popen.pid, "VmHWM")
        exporter_hwm = status_kib(exporter.popen.pid, "VmHWM")
    finally:
        for proc in reversed(procs):
            proc.stop()
        asyncio.run(drop_database(admin_url, url))
        shutil.rmtree(tmp, ignore_errors=True)

    def rate(seconds: float) -> float:
        return size / MB / seconds

    up_rate, down_rate = rate(statistics.median(ups)), rate(statistics.median(downs))
    print(f"file transfer through the collector, {size / MIB:.0f} MiB, {runs} runs, loopback")
    print(f"files in {where or tempfile.gettempdir()}; every copy's SHA-256 matched")
    print()
    print(
        "| direction | median | best | collector CPU per 100 MB | exporter CPU per 100 MB"
        " | budget |"
    )
    print("|---|---|---|---|---|---|")
    moved = runs * size / MB / 100  # hundreds of MB per direction
    for name, key, times, median in (
        ("upload", "up", ups, up_rate),
        ("download", "down", downs, down_rate),
    ):
        verdict = "pass" if median >= BUDGET_MB_S else "FAIL"
        print(
            f"| {name} | {median:.0f} MB/s | {rate(min(times)):.0f} MB/s |"
            f" {cpu[key][0] / moved:.2f} s | {cpu[key][1] / moved:.2f} s |"
            f" ≥ {BUDGET_MB_S:.0f} MB/s: {verdict} |"
        )
    print()
    print(
        f"collector RSS {rss_before / 1024:.0f} MiB before; peak {hwm_before / 1024:.0f} MiB"
        f" before → {hwm_after / 1024:.0f} MiB after moving {2 * runs * size / MIB:.0f} MiB"
        f" (+{(hwm_after - hwm_before) / 1024:.1f} MiB); exporter peak"
        f" {exporter_hwm / 1024:.0f} MiB"
    )
    return 0 if min(up_rate, down_rate) >= BUDGET_MB_S else 1


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--database-url", default=os.environ.get("VPSMON_BENCH_DATABASE_URL"))
    parser.add_argument("--size-mib", type=int, default=256)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--dir", type=Path, default=None, help="where the files go [TMPDIR]")
    args = parser.parse_args(argv)
    if not args.database_url:
        print("transfer: skipped (set VPSMON_BENCH_DATABASE_URL or --database-url)")
        return 0
    if shutil.which("curl") is None:
        print("transfer: skipped (curl is not installed)")
        return 0
    started = time.monotonic()
    code = run(args.database_url, args.size_mib * MIB, args.runs, args.dir)
    print(f"({time.monotonic() - started:.0f} s)")
    return code


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
