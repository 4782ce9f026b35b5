"""The collector's own CPU per scrape, without PostgreSQL: fetch, parse, staleness, head.

    .venv/bin/python bench/scrape.py [--targets 100] [--rounds 20] [--profile FILE]

One child process serves a real vpsmon exporter payload (bench/fleet.py's, rendered on this
machine) on N paths of 127.0.0.1, its values changed on every request as an exporter's are
between collections (8 variants in turn). This process then scrapes the N paths round after
round through the collector's own code: `scrape_once` (aiohttp, gzip, the parser with the
target's cache), the scraper's bookkeeping (`Scraper._record`: stale markers) and the head
(`Head.append`: the recent window and the live state). The writer is left out (it has its
own benchmark, bench/storage.py): this is the part of "CPU per scrape handled" in
bench/fleet.py that is not the writer's. Prints CPU time of this process per scrape (first
round excluded: it creates the series). Not a test: the figures depend on the machine.
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import gzip
import http.server
import os
import random
import re
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import aiohttp

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

VARIANTS = 8
_VALUE = re.compile(rb"^([a-zA-Z_:][^ \n]*(?:\{[^\n]*\})?) ([0-9.e+-]+)$", re.M)


def _variants(body: bytes) -> list[bytes]:
    """The payload with its numeric values moved a little, as successive collections."""
    rng = random.Random(7)
    out = []
    for _ in range(VARIANTS):

        def move(m: re.Match[bytes]) -> bytes:
            value = float(m.group(2)) * (1 + rng.random() / 1000) + rng.random()
            return m.group(1) + b" " + repr(value).encode()

        out.append(_VALUE.sub(move, body))
    return out


def serve(port: int, payload_file: str) -> None:
    variants = [gzip.compress(v, 6) for v in _variants(Path(payload_file).read_bytes())]
    counter = iter(range(2**62))

    class Handler(http.server.BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_GET(self) -> None:  # noqa: N802 — http.server's name
            data = variants[next(counter) % VARIANTS]
            self.send_response(200)
            self.send_header("Content-Type", "text/plain; version=0.0.4; charset=utf-8")
            self.send_header("Content-Encoding", "gzip")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, format: str, *args: object) -> None:  # noqa: A002
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", port), Handler)
    server.daemon_threads = True
    server.serve_forever()


async def run(targets: int, rounds: int, port: int, profile: str | None) -> dict[str, float]:
    from vpsmon.collector.head import Head
    from vpsmon.collector.live import summarize
    from vpsmon.collector.scrape.loop import Scraper, TargetState, scrape_once
    from vpsmon.collector.scrape.target import Target
    from vpsmon.collector.traffic import readings_from
    from vpsmon.web.charts import live_point

    head = Head(window=600.0)
    # The web app's per-scrape listeners with no page open: traffic accounting reads the
    # counters of every scrape (collector/traffic.py).
    head.subscribe(lambda state: readings_from(state))
    scraper = Scraper([], body_size_limit=10_000_000, sample_limit=50_000)
    states = [
        TargetState(
            Target(
                server_id=i + 1,
                name=f"fake-{i}",
                url=f"http://127.0.0.1:{port}/t/{i}/metrics",
                interval=15.0,
                timeout=10.0,
                labels={"instance": f"fake-{i}"},
            )
        )
        for i in range(targets)
    ]
    profiler = cProfile.Profile() if profile else None
    cpu = user = 0.0
    scrapes = 0
    now = 1_800_000_000.0
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=256)) as session:
        for r in range(rounds):
            if r == 1 and profiler is not None:
                profiler.enable()
            started, started_user = time.process_time(), os.times().user
            for state in states:
                result = await scrape_once(
                    session,
                    state.target,
                    now,
                    body_size_limit=10_000_000,
                    sample_limit=50_000,
                    cache=state.cache,
                )
                assert result.up, result.error
                result = scraper._record(state, result)
                await head.append(result)
            if r:
                cpu += time.process_time() - started
                user += os.times().user - started_user
                scrapes += targets
            now += 15.0
        if profiler is not None:
            profiler.disable()
            profiler.dump_stats(profile)
    # What a page asks per server (not per scrape; checked to run, not timed).
    state = head.state(1)
    assert state is not None
    summarize(state)
    live_point(state)
    return {
        "ms_per_scrape": 1000 * cpu / scrapes,
        "user_ms_per_scrape": 1000 * user / scrapes,
        "scrapes": scrapes,
    }


def _wait_for(port: int) -> None:
    deadline = time.monotonic() + 30
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.1)


def main(argv: list[str]) -> None:
    if argv[:1] == ["--serve"]:
        serve(int(argv[1]), argv[2])
        return
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--targets", type=int, default=100)
    parser.add_argument("--rounds", type=int, default=20)
    parser.add_argument("--profile", help="write cProfile stats of rounds 2.. to this file")
    args = parser.parse_args(argv)
    sys.path.insert(0, str(HERE))
    import fleet

    with tempfile.TemporaryDirectory(prefix="vpsmon-bench-scrape-") as tmp:
        payload = Path(tmp) / "payload.txt"
        payload.write_bytes(fleet.render_payload())
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            port = sock.getsockname()[1]
        child = subprocess.Popen([sys.executable, __file__, "--serve", str(port), str(payload)])
        try:
            _wait_for(port)
            result: dict[str, Any] = asyncio.run(run(args.targets, args.rounds, port, args.profile))
        finally:
            child.terminate()
            child.wait()
    load = os.getloadavg()[0]
    print(
        f"{args.targets} targets x {args.rounds - 1} rounds: "
        f"{result['ms_per_scrape']:.2f} ms CPU per scrape, of which"
        f" {result['user_ms_per_scrape']:.2f} ms user (load average {load:.1f})"
    )


if __name__ == "__main__":
    main(sys.argv[1:])
