"""Docker control for the command channel, through the docker SDK (blocking calls; the service
runs them in threads). Errors dockerd reports become the exceptions the service maps to gRPC
statuses: an unknown container is NOT_FOUND, anything else dockerd refuses FAILED_PRECONDITION.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import struct
import threading
from collections.abc import AsyncIterator, Callable, Iterator
from typing import TYPE_CHECKING, Any

from vpsmon.exporter.collectors.docker import import_sdk, stable_status

if TYPE_CHECKING:
    import docker


class DockerControl:
    def __init__(self, host: str) -> None:
        self.host = host

    @contextlib.contextmanager
    def _client(self, timeout: int = 60) -> Iterator[docker.DockerClient]:
        import_sdk()
        import docker
        import docker.errors

        try:
            client = docker.DockerClient(base_url=self.host, version="auto", timeout=timeout)
        except docker.errors.DockerException as err:
            raise ConnectionError(f"cannot reach dockerd at {self.host}: {err}") from None
        try:
            yield client
        except docker.errors.NotFound as err:
            raise FileNotFoundError(_explain(err)) from None
        except docker.errors.APIError as err:
            raise OSError(_explain(err)) from None
        finally:
            client.close()

    def list(self, all: bool) -> list[dict[str, Any]]:
        with self._client() as client:
            return [summary(c) for c in client.api.containers(all=all)]

    def inspect(self, ref: str) -> dict[str, Any]:
        with self._client() as client:
            document: dict[str, Any] = client.api.inspect_container(ref)
            return document

    def start(self, ref: str) -> dict[str, Any]:
        with self._client() as client:
            client.api.start(ref)
            return self._summary(client, ref)

    def stop(self, ref: str, timeout: int | None) -> dict[str, Any]:
        with self._client(timeout=(timeout or 10) + 30) as client:
            client.api.stop(ref, timeout=timeout)
            return self._summary(client, ref)

    def restart(self, ref: str, timeout: int | None) -> dict[str, Any]:
        with self._client(timeout=(timeout or 10) + 30) as client:
            client.api.restart(ref, timeout=timeout or 10)
            return self._summary(client, ref)

    def stats(self, ref: str) -> dict[str, Any]:
        with self._client() as client:
            document: dict[str, Any] = client.api.stats(ref, stream=False, one_shot=True)
            return document

    def _summary(self, client: docker.DockerClient, ref: str) -> dict[str, Any]:
        document = client.api.inspect_container(ref)
        full_id = document["Id"]
        for entry in client.api.containers(all=True, filters={"id": full_id}):
            return summary(entry)
        raise FileNotFoundError(f"{ref}: no such container")

    async def logs(
        self, ref: str, *, follow: bool, tail: int, since: float, timestamps: bool
    ) -> AsyncIterator[tuple[str, bytes]]:
        """(stream, bytes) as dockerd sends them; with follow, until the caller goes away."""
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue[tuple[str, bytes] | BaseException | None] = asyncio.Queue(16)
        stop = threading.Event()
        holder: dict[str, Any] = {}

        def produce() -> None:
            def put(item: tuple[str, bytes] | BaseException | None) -> None:
                # Blocks while the queue is full: a slow reader slows dockerd, not our memory.
                if not stop.is_set():
                    asyncio.run_coroutine_threadsafe(queue.put(item), loop).result()

            try:
                with self._client(timeout=3600 if follow else 60) as client:
                    holder["client"] = client
                    pieces = demuxed_logs(
                        client, ref, follow, tail, since, timestamps, holder.__setitem__
                    )
                    for out, err in pieces:
                        if stop.is_set():
                            break
                        if out:
                            put(("stdout", out))
                        if err:
                            put(("stderr", err))
                put(None)
            except BaseException as error:  # handed to the reader, which raises it
                with contextlib.suppress(BaseException):
                    put(error)

        worker = threading.Thread(target=produce, name="docker-logs", daemon=True)
        worker.start()
        try:
            while (item := await queue.get()) is not None:
                if isinstance(item, BaseException):
                    raise item
                yield item
        finally:
            stop.set()
            # A follow waiting for output sits in a blocking read of dockerd's socket: shut
            # the socket down to end it now (closing the client alone leaves that read
            # blocked, and the thread with it, until the container prints again).
            response = holder.get("response")
            if response is not None:
                with contextlib.suppress(Exception):
                    response_socket(response).shutdown(socket.SHUT_RDWR)
            client = holder.get("client")
            if client is not None:
                with contextlib.suppress(Exception):
                    client.close()
            while not queue.empty():
                queue.get_nowait()


def demuxed_logs(
    client: docker.DockerClient,
    ref: str,
    follow: bool,
    tail: int,
    since: float,
    timestamps: bool,
    opened: Callable[[str, Any], None] | None = None,
) -> Iterator[tuple[bytes | None, bytes | None]]:
    """(stdout, stderr) pieces of a container's log.

    The SDK's public `logs()` merges the two streams; the UI shows stderr apart, so this asks
    the same endpoint and reads its frames as the SDK does (an 8-byte header: stream type, then
    the length; docs.docker.com "Attach to a container", stream format), keeping the type.
    """
    api = client.api
    tty = bool(api.inspect_container(ref)["Config"].get("Tty"))
    params: dict[str, Any] = {
        "stdout": 1,
        "stderr": 1,
        "follow": int(follow),
        "timestamps": int(timestamps),
        "tail": str(tail) if tail else "all",
    }
    if since:
        params["since"] = int(since)
    response = api._get(api._url("/containers/{0}/logs", ref), params=params, stream=True)
    api._raise_for_status(response)
    if opened is not None:
        opened("response", response)
    try:
        if tty:  # one stream, no frames
            while chunk := response.raw.read1(64 * 1024) if hasattr(response.raw, "read1") else b"":
                yield chunk, None
            return
        while header := response.raw.read(8):
            if len(header) < 8:
                return
            kind, length = struct.unpack(">BxxxL", header)
            data = response.raw.read(length) if length else b""
            if length and not data:
                return
            yield (data, None) if kind != 2 else (None, data)
    finally:
        response.close()


def response_socket(response: Any) -> socket.socket:
    """The socket under a streamed docker SDK response (unix socket or TCP), as the SDK's
    own `_get_raw_response_socket` finds it for attach."""
    raw = response.raw._fp.fp.raw
    sock: socket.socket = getattr(raw, "_sock", raw)
    return sock


def summary(entry: dict[str, Any]) -> dict[str, Any]:
    names = entry.get("Names") or []
    return {
        "id": entry["Id"],
        "name": names[0].lstrip("/") if names else entry["Id"][:12],
        "image": str(entry.get("Image", "")),
        "state": str(entry.get("State", "")),
        "status": stable_status(str(entry.get("Status", ""))),
        "created": float(entry.get("Created", 0)),
    }


def _explain(err: Exception) -> str:
    explanation = getattr(err, "explanation", None)
    return str(explanation or err)
