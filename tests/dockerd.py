"""A private, real dockerd for tests (DESIGN.md "How things are tested here").

Registered as a pytest plugin by tests/conftest.py, so any test can ask for:

- `dockerd` (session-scoped): one daemon shared by the whole run. Use it for containers; do
  not stop it. `dockerd.client()` is a docker SDK client on its socket, `dockerd.run(...)`
  starts a busybox container (no network), `dockerd.url` is `unix:///…/docker.sock` to hand
  to the code under test.
- `own_dockerd` (per test): a daemon of the test's own, for tests that stop and restart it.

Each daemon lives in a temp dir: `--storage-driver=vfs --iptables=false --bridge=none` and its
own data-root, exec-root (with its own containerd), pid file and socket, so it touches nothing
of the host's Docker and several can run at once. No registry is reachable, so the image
`vpsmon-test-busybox:latest` is made with `docker import` from a rootfs holding busybox and
its applet links. At the end the daemon's containers are removed and the daemon is stopped by
its PID, then its directory is deleted.

Without dockerd, busybox or root, the fixtures skip with the reason; under CI=true they fail
(tests/conftest.py `require`): .ci/run installs docker.io and busybox-static.
"""

from __future__ import annotations

import contextlib
import io
import os
import shutil
import signal
import subprocess
import tarfile
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from tests.conftest import require, require_binary

if TYPE_CHECKING:
    import docker
    from docker.models.containers import Container

IMAGE = "vpsmon-test-busybox:latest"
START_TIMEOUT = 60.0
STOP_TIMEOUT = 30.0


class Dockerd:
    """One dockerd process on a private directory; `start()` again after `stop()` restarts it
    on the same data, as a host's dockerd restarting would."""

    def __init__(self, directory: Path, binary: str) -> None:
        self.directory = directory
        self.binary = binary
        self.socket = directory / "docker.sock"
        self.url = f"unix://{self.socket}"
        self.log_path = directory / "dockerd.log"
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def pid(self) -> int | None:
        return self.process.pid if self.process is not None else None

    def start(self) -> None:
        if self.process is not None and self.process.poll() is None:
            return
        cmd = [
            self.binary,
            "--storage-driver=vfs",
            "--iptables=false",
            "--ip6tables=false",
            "--bridge=none",
            "--data-root",
            str(self.directory / "root"),
            "--exec-root",
            str(self.directory / "exec"),
            "--pidfile",
            str(self.directory / "dockerd.pid"),
            "-H",
            self.url,
        ]
        with self.log_path.open("ab") as log:
            # Its own session: a Ctrl-C meant for pytest must not kill it before we clean up.
            self.process = subprocess.Popen(
                cmd, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
            )
        self._wait_ready()

    def _wait_ready(self) -> None:
        deadline = time.monotonic() + START_TIMEOUT
        last: Exception | None = None
        while time.monotonic() < deadline:
            assert self.process is not None
            if self.process.poll() is not None:
                raise RuntimeError(
                    f"dockerd exited with {self.process.returncode}:\n{self.log_tail()}"
                )
            if self.socket.exists():
                try:
                    with contextlib.closing(self.client(timeout=5)) as client:
                        client.ping()
                    return
                except Exception as err:  # not answering yet
                    last = err
            time.sleep(0.2)
        raise RuntimeError(
            f"dockerd did not answer within {START_TIMEOUT:g}s ({last!r}):\n{self.log_tail()}"
        )

    def log_tail(self, lines: int = 20) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"

    def client(self, timeout: int = 30) -> docker.DockerClient:
        import docker

        return docker.DockerClient(base_url=self.url, timeout=timeout, version="auto")

    def ensure_image(self) -> str:
        """Import the busybox image once per daemon (its data-root keeps it across restarts)."""
        import docker.errors

        with contextlib.closing(self.client()) as client:
            try:
                client.images.get(IMAGE)
            except docker.errors.ImageNotFound:
                repository, tag = IMAGE.split(":")
                client.api.import_image_from_data(
                    busybox_rootfs_tar(),
                    repository=repository,
                    tag=tag,
                    # An imported image has no config: give it a PATH so `sh` and `sleep` resolve.
                    changes=["ENV PATH=/bin"],
                )
        return IMAGE

    def run(self, *command: str, name: str | None = None, **options: Any) -> Container:
        """Start a detached busybox container without network (default: sleep for an hour)."""
        with contextlib.closing(self.client()) as client:
            return client.containers.run(
                IMAGE,
                list(command) or ["sleep", "3600"],
                name=name,
                detach=True,
                network_mode="none",
                **options,
            )

    def remove_all_containers(self) -> None:
        with contextlib.suppress(Exception), contextlib.closing(self.client(timeout=60)) as client:
            for container in client.containers.list(all=True):
                with contextlib.suppress(Exception):
                    container.remove(force=True)

    def stop(self) -> None:
        """SIGTERM our dockerd by PID and wait for it (SIGKILL after STOP_TIMEOUT)."""
        process = self.process
        if process is None or process.poll() is not None:
            return
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()

    def close(self) -> None:
        """Remove the containers, stop the daemon, delete its directory."""
        if self.process is not None and self.process.poll() is None:
            self.remove_all_containers()
        self.stop()
        shutil.rmtree(self.directory, ignore_errors=True)


def busybox_rootfs_tar() -> bytes:
    """A tar of /bin/busybox and one symlink per applet: the whole image's filesystem."""
    busybox = shutil.which("busybox") or "/bin/busybox"
    applets = subprocess.run(
        [busybox, "--list"], capture_output=True, text=True, check=True
    ).stdout.split()
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        for folder in ("bin", "tmp", "etc", "proc", "sys", "dev"):
            info = tarfile.TarInfo(folder)
            info.type = tarfile.DIRTYPE
            info.mode = 0o1777 if folder == "tmp" else 0o755
            tar.addfile(info)
        tar.add(busybox, arcname="bin/busybox")
        for applet in applets:
            if applet == "busybox":  # would replace the binary with a link to itself
                continue
            info = tarfile.TarInfo(f"bin/{applet}")
            info.type = tarfile.SYMTYPE
            info.linkname = "busybox"
            tar.addfile(info)
    return buffer.getvalue()


def new_dockerd() -> Dockerd:
    """A started daemon with the busybox image, or a skip (a failure under CI=true)."""
    binary = require_binary("dockerd")
    require(
        shutil.which("busybox") is not None or Path("/bin/busybox").exists(),
        "busybox is not installed (apt-get install busybox-static)",
    )
    require(os.geteuid() == 0, "dockerd needs root")
    try:
        import docker  # noqa: F401
    except ImportError:
        require(False, "the docker Python package is not installed")
    # Short path under /tmp: a unix socket path must stay under 108 bytes.
    directory = Path(tempfile.mkdtemp(prefix="vpsmon-dockerd-", dir="/tmp"))
    daemon = Dockerd(directory, binary)
    try:
        daemon.start()
        daemon.ensure_image()
    except BaseException:
        daemon.close()
        raise
    return daemon


@pytest.fixture(scope="session")
def dockerd() -> Iterator[Dockerd]:
    """The run's shared private dockerd (do not stop it; use `own_dockerd` for that)."""
    daemon = new_dockerd()
    try:
        yield daemon
    finally:
        daemon.close()


@pytest.fixture
def own_dockerd() -> Iterator[Dockerd]:
    """A private dockerd for one test, which may stop and start it."""
    daemon = new_dockerd()
    try:
        yield daemon
    finally:
        daemon.close()
