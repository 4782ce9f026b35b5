"""docker: per-container CPU, memory, network and block I/O with cAdvisor's names (issue #3).

Reads through the docker SDK: the container list, then for every running or paused container
a one-shot stats call (`stream=False, one_shot=True`: without one_shot dockerd waits for a
second sample, ~1-2 s per container) and an inspect for its start time, several containers at
once on a small thread pool. Names, types and labels follow cAdvisor's Prometheus collector
(`container_cpu_usage_seconds_total{cpu="total"}` etc., labels id, image, name), so container
dashboards and rules written for cAdvisor work; `vpsmon_container_info` adds every container
(also stopped ones) with its state and status.

Never holding up the collection: a refresh runs on the collector's own thread and the
collection waits for it at most `docker.timeout`; past that this collector reports failure
for the round and the refresh may finish for the next one. A dead, stopped or restarting
dockerd is a failure with one clear log line (vpsmon_collector_success{collector="docker"}
is 0), never a broken payload, and the next collection tries again.

The docker SDK (and requests under it, ~10 MiB resident) is imported only once a docker
socket exists, so a host without Docker pays nothing for this collector.
"""

from __future__ import annotations

import concurrent.futures
import logging
import os
import re
import sys
import threading
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from vpsmon.config import Setting, parse_duration, parse_optional_str, parse_positive_int
from vpsmon.exporter.collectors.base import CollectorSpec, Context
from vpsmon.exporter.metrics import MetricFamily, counter, gauge

if TYPE_CHECKING:
    import docker

log = logging.getLogger("vpsmon.exporter")

DEFAULT_HOST = "unix:///var/run/docker.sock"
LABELS = ("id", "image", "name")

# Docker's status text ends with an age ("Up 2 hours (healthy)", "Exited (0) 3 minutes ago",
# from go-units HumanDuration); a label must not change every collection, so it is cut off.
_AGE = re.compile(
    r"\s+(?:less than a second|about an? (?:minute|hour)|\d+ (?:second|minute|hour|day|week"
    r"|month|year)s?)(?: ago)?",
    re.IGNORECASE,
)


class DockerUnavailable(RuntimeError):
    """dockerd cannot be reached or did not answer; the message says where and why."""


# ---------------------------------------------------------------- parsing (pure)


@dataclass(frozen=True, slots=True)
class Container:
    """One container from the list, with its stats and start time when it runs."""

    id: str
    name: str
    image: str
    state: str
    status: str
    started_at: float | None = None
    stats: Mapping[str, Any] | None = None


@dataclass(slots=True)
class Usage:
    cpu_seconds: float | None = None
    memory_usage: float | None = None
    working_set: float | None = None
    networks: dict[str, tuple[float, float]] = field(default_factory=dict)
    io: dict[tuple[int, int], tuple[float, float]] = field(default_factory=dict)


def stable_status(status: str) -> str:
    """Docker's status text without its age: "Up 2 hours (healthy)" → "Up (healthy)"."""
    return _AGE.sub("", status).strip()


def parse_time(text: str | None) -> float | None:
    """UNIX seconds from Docker's RFC 3339 time with nanoseconds; None for the zero time."""
    if not text or text.startswith("0001-01-01"):
        return None
    match = re.fullmatch(r"(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d)(?:\.(\d+))?(Z|[+-]\d\d:\d\d)", text)
    if match is None:
        raise ValueError(f"unexpected time {text!r} from dockerd")
    whole, fraction, zone = match.groups()
    stamp = datetime.fromisoformat(whole + ("+00:00" if zone == "Z" else zone)).timestamp()
    return stamp + (float("0." + fraction) if fraction else 0.0)


def parse_listing(entry: Mapping[str, Any]) -> Container:
    """A container from GET /containers/json (the SDK's `containers.list(all=True)` attrs)."""
    names = entry.get("Names") or []
    name = names[0].lstrip("/") if names else entry["Id"][:12]
    return Container(
        id=entry["Id"],
        name=name,
        image=str(entry.get("Image", "")),
        state=str(entry.get("State", "")),
        status=stable_status(str(entry.get("Status", ""))),
    )


def parse_stats(stats: Mapping[str, Any]) -> Usage:
    """The numbers we export from one /containers/{id}/stats answer (cgroup v1 or v2)."""
    usage = Usage()
    cpu = (stats.get("cpu_stats") or {}).get("cpu_usage") or {}
    if "total_usage" in cpu:
        usage.cpu_seconds = cpu["total_usage"] / 1e9
    memory = stats.get("memory_stats") or {}
    if "usage" in memory:
        usage.memory_usage = float(memory["usage"])
        detail = memory.get("stats") or {}
        # cAdvisor's working set: usage minus inactive file cache, never below 0
        # (cgroup v1 names it total_inactive_file, v2 inactive_file).
        inactive = detail.get("total_inactive_file", detail.get("inactive_file", 0))
        usage.working_set = max(float(memory["usage"]) - float(inactive), 0.0)
    for interface, counters in (stats.get("networks") or {}).items():
        usage.networks[interface] = (float(counters["rx_bytes"]), float(counters["tx_bytes"]))
    for entry in (stats.get("blkio_stats") or {}).get("io_service_bytes_recursive") or []:
        op = str(entry.get("op", "")).lower()
        if op not in ("read", "write"):
            continue
        device = (int(entry["major"]), int(entry["minor"]))
        read, written = usage.io.get(device, (0.0, 0.0))
        if op == "read":
            read += float(entry["value"])
        else:
            written += float(entry["value"])
        usage.io[device] = (read, written)
    return usage


def device_name(sys: Path, major: int, minor: int) -> str:
    """/dev/NAME for a block device number, as cAdvisor labels it; MAJOR:MINOR if unknown."""
    try:
        for line in (sys / "dev" / "block" / f"{major}:{minor}" / "uevent").read_text().split():
            if line.startswith("DEVNAME="):
                return "/dev/" + line.removeprefix("DEVNAME=")
    except OSError:
        pass
    return f"{major}:{minor}"


def container_families(
    containers: Sequence[Container], now: float, sys: Path = Path("/sys")
) -> list[MetricFamily]:
    cpu = counter(
        "container_cpu_usage_seconds_total",
        "Cumulative cpu time consumed in seconds.",
        *LABELS,
        "cpu",
    )
    mem = gauge(
        "container_memory_usage_bytes",
        "Current memory usage in bytes, including all memory regardless of when it was accessed",
        *LABELS,
    )
    working = gauge("container_memory_working_set_bytes", "Current working set in bytes.", *LABELS)
    rx = counter(
        "container_network_receive_bytes_total",
        "Cumulative count of bytes received",
        *LABELS,
        "interface",
    )
    tx = counter(
        "container_network_transmit_bytes_total",
        "Cumulative count of bytes transmitted",
        *LABELS,
        "interface",
    )
    reads = counter(
        "container_fs_reads_bytes_total",
        "Cumulative count of bytes read",
        *LABELS,
        "device",
    )
    writes = counter(
        "container_fs_writes_bytes_total",
        "Cumulative count of bytes written",
        *LABELS,
        "device",
    )
    start = gauge(
        "container_start_time_seconds",
        "Start time of the container since unix epoch in seconds.",
        *LABELS,
    )
    seen = gauge("container_last_seen", "Last time a container was seen by the exporter", *LABELS)
    info = gauge(
        "vpsmon_container_info",
        "Every container dockerd knows, running or not; value is 1.",
        *LABELS,
        "state",
        "status",
    )
    devices: dict[tuple[int, int], str] = {}
    for c in containers:
        labels = (f"/docker/{c.id}", c.image, c.name)
        info.add(1, *labels, c.state, c.status)
        if c.stats is None:
            continue
        seen.add(now, *labels)
        if c.started_at is not None:
            start.add(c.started_at, *labels)
        usage = parse_stats(c.stats)
        if usage.cpu_seconds is not None:
            cpu.add(usage.cpu_seconds, *labels, "total")
        if usage.memory_usage is not None and usage.working_set is not None:
            mem.add(usage.memory_usage, *labels)
            working.add(usage.working_set, *labels)
        for interface, (received, sent) in sorted(usage.networks.items()):
            rx.add(received, *labels, interface)
            tx.add(sent, *labels, interface)
        for number, (read, written) in sorted(usage.io.items()):
            if number not in devices:
                devices[number] = device_name(sys, *number)
            reads.add(read, *labels, devices[number])
            writes.add(written, *labels, devices[number])
    return [cpu, mem, working, rx, tx, reads, writes, start, seen, info]


# ---------------------------------------------------------------- reading (dockerd)


def resolve_host(configured: str | None, env: Mapping[str, str] | None = None) -> str:
    """docker.host, else DOCKER_HOST (as the docker CLI), else the default socket."""
    env = os.environ if env is None else env
    return configured or env.get("DOCKER_HOST") or DEFAULT_HOST


def _reason(err: BaseException) -> str:
    """A short why for a log line, from the SDK's (or requests') nested exceptions."""
    text = str(err)
    for known, say in (
        ("No such file or directory", "no such socket"),
        ("Connection refused", "connection refused"),
        ("Permission denied", "permission denied (is the exporter's user in the docker group?)"),
        ("timed out", "timed out"),
        ("Connection aborted", "connection aborted"),
    ):
        if known in text:
            return say
    return text.splitlines()[0][:200] if text else type(err).__name__


class DockerCollector:
    """The collector object the table's `create` returns; one per exporter."""

    def __init__(self, context: Context) -> None:
        self.host = resolve_host(context.option("docker", "host"))
        self.timeout = float(context.option("docker", "timeout"))
        self.parallel = int(context.option("docker", "parallel"))
        self.sys = context.sys
        self._client: docker.DockerClient | None = None
        self._lock = threading.Lock()  # one refresh at a time owns the client
        self._refresher: concurrent.futures.ThreadPoolExecutor | None = None
        self._fetchers: concurrent.futures.ThreadPoolExecutor | None = None
        self._pending: concurrent.futures.Future[list[Container]] | None = None

    def __call__(self) -> list[MetricFamily]:
        import time

        self._check_socket()
        if self._refresher is None:
            self._refresher = concurrent.futures.ThreadPoolExecutor(1, "docker-refresh")
        # A refresh still hanging from an earlier round is waited on again rather than
        # doubled: at most one is ever in flight, however long dockerd stays stuck.
        if self._pending is None or self._pending.done():
            self._pending = self._refresher.submit(self.refresh)
        try:
            containers = self._pending.result(timeout=self.timeout)
        except concurrent.futures.TimeoutError:
            raise DockerUnavailable(
                f"dockerd at {self.host} did not answer within {self.timeout:g}s"
            ) from None
        return container_families(containers, time.time(), self.sys)

    def _check_socket(self) -> None:
        # Without a socket there is nothing to talk to: say so without importing the SDK.
        if self.host.startswith("unix://"):
            path = Path(self.host.removeprefix("unix://"))
            if not path.exists():
                raise DockerUnavailable(
                    f"cannot reach dockerd at {self.host}: no such socket (is dockerd running?)"
                )

    def refresh(self) -> list[Container]:
        """List the containers and fetch stats and start times of the running ones."""
        with self._lock:
            try:
                return self._refresh()
            except DockerUnavailable:
                self._drop_client()
                raise
            except Exception as err:
                # dockerd stopped or restarted under us: reconnect (and renegotiate the API
                # version, which may have changed) on the next collection.
                self._drop_client()
                raise DockerUnavailable(
                    f"cannot reach dockerd at {self.host}: {_reason(err)}"
                ) from err

    def _refresh(self) -> list[Container]:
        client = self._connect()
        listing = [parse_listing(entry) for entry in client.api.containers(all=True)]
        live = [c for c in listing if c.state in ("running", "paused")]
        if self._fetchers is None:
            self._fetchers = concurrent.futures.ThreadPoolExecutor(self.parallel, "docker-stats")
        answers = self._fetchers.map(self._fetch, live)
        fetched = dict(zip((c.id for c in live), answers, strict=True))
        result = []
        for c in listing:
            got = fetched.get(c.id)
            if got is None:
                result.append(c)  # not running, or removed since the listing
            else:
                stats, started_at = got
                result.append(
                    Container(c.id, c.name, c.image, c.state, c.status, started_at, stats)
                )
        return result

    def _fetch(self, container: Container) -> tuple[Mapping[str, Any], float | None] | None:
        import docker.errors

        client = self._client
        assert client is not None
        try:
            stats = client.api.stats(container.id, stream=False, one_shot=True)
            state = client.api.inspect_container(container.id).get("State") or {}
        except docker.errors.NotFound:
            return None  # removed between the listing and now: it simply is gone
        except docker.errors.APIError as err:
            # dockerd answered but not for this container (being removed, dead): report the
            # others rather than fail them all; a daemon-wide problem fails the listing.
            log.debug("docker stats skipped container=%s error=%s", container.name, err)
            return None
        return stats, parse_time(state.get("StartedAt"))

    def _connect(self) -> docker.DockerClient:
        if self._client is None:
            import_sdk()
            import docker

            try:
                # version="auto" asks dockerd which API it speaks: newer engines refuse old ones.
                self._client = docker.DockerClient(
                    base_url=self.host, version="auto", timeout=max(1, round(self.timeout))
                )
            except docker.errors.DockerException as err:
                raise DockerUnavailable(
                    f"cannot reach dockerd at {self.host}: {_reason(err)}"
                ) from None
        return self._client

    def _drop_client(self) -> None:
        client, self._client = self._client, None
        if client is not None:
            try:
                client.close()
            except Exception as err:  # closing a dead connection must not mask the real error
                log.debug("closing docker client failed error=%r", err)

    def close(self) -> None:
        """Stop the threads and the connection (on exporter shutdown); never waits on dockerd."""
        for pool in (self._refresher, self._fetchers):
            if pool is not None:
                pool.shutdown(wait=False, cancel_futures=True)
        self._drop_client()


def import_sdk() -> None:
    """Import the docker SDK, leaving out requests' character-set detector when we can.

    requests imports charset_normalizer (~3 MiB resident) only to guess the encoding of
    responses that do not name one; dockerd's API answers JSON, which requests decodes without
    it (`Response.json()` detects UTF-8/16/32 itself), and requests supports running without a
    detector. The exporter's memory budget (docs/benchmarks.md) is tight enough for this to
    matter. Only done when requests is not loaded yet (it is not in the exporter process; in
    `vpsmon up` something else may have loaded it, and then we change nothing); the blocks
    are lifted right after, so a later importer still gets the real packages.
    """
    if "docker" in sys.modules or "requests" in sys.modules:
        return
    blocked = [m for m in ("charset_normalizer", "chardet") if m not in sys.modules]
    for name in blocked:
        sys.modules[name] = None  # type: ignore[assignment]  # makes `import name` fail
    try:
        with warnings.catch_warnings():
            # requests warns that no detector is installed: that is the point here.
            warnings.filterwarnings("ignore", message=".*character detection dependency.*")
            import docker  # noqa: F401
    finally:
        for name in blocked:
            if sys.modules.get(name, False) is None:
                del sys.modules[name]


def create(context: Context) -> DockerCollector:
    return DockerCollector(context)


SPEC = CollectorSpec(
    name="docker",
    help=(
        "Docker containers with cAdvisor's names (container_*) and vpsmon_container_info,"
        " through the docker SDK. Needs read access to the docker socket (the docker group)."
    ),
    create=create,
    settings=(
        Setting(
            "host",
            parse_optional_str,
            None,
            "dockerd's address (unix:///PATH or tcp://HOST:PORT); unset means DOCKER_HOST,"
            f" else {DEFAULT_HOST}.",
        ),
        Setting(
            "timeout",
            parse_duration,
            3.0,
            "How long a collection waits for dockerd before reporting the docker collector"
            " failed for that round (the rest of the payload is not held up longer).",
        ),
        Setting(
            "parallel",
            parse_positive_int,
            4,
            "How many containers' stats are fetched at once.",
        ),
    ),
)
