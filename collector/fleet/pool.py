"""Pooled, pinned gRPC connections from the collector to exporters' command channels.

One channel per exporter, kept open and shared by every call to it (gRPC multiplexes calls
over one HTTP/2 connection and reconnects by itself with backoff when the exporter restarts).
Each connection trusts exactly the certificate pinned at enrolment (it is the only root, and
its fingerprint must equal the pinned one) and presents the collector's own certificate; each
call carries the enrolment token and a deadline. The pool is bounded: past `max_channels` the
least recently used channel is closed.
"""

from __future__ import annotations

import asyncio
import hashlib
import ssl
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import grpc

from vpsmon.exporter.security import CertificatePaths
from vpsmon.v1 import agent_pb2 as pb
from vpsmon.v1 import agent_pb2_grpc

# How much of a call's incoming stream gRPC takes in ahead of the reader (see _channel).
RECEIVE_WINDOW = 1024 * 1024


class PinMismatch(ValueError):
    """The exporter certificate on record does not have the pinned fingerprint."""


def pem_fingerprint(pem: bytes) -> str:
    return "sha256:" + hashlib.sha256(ssl.PEM_cert_to_DER_cert(pem.decode("ascii"))).hexdigest()


@dataclass(frozen=True)
class AgentTarget:
    """How to reach one enrolled exporter's command channel."""

    address: str  # HOST:PORT or [IPv6]:PORT
    exporter_cert: bytes  # PEM, recorded at enrolment
    exporter_fingerprint: str  # sha256:HEX, pinned at enrolment
    token: str
    # A name the exporter's certificate holds; exporters' own certificates always hold
    # localhost. The pin, not the name, is what authenticates the exporter.
    server_name: str = "localhost"

    @property
    def key(self) -> tuple[str, str]:
        return (self.address, self.exporter_fingerprint)


class AgentPool:
    def __init__(
        self,
        identity: CertificatePaths | Callable[[], CertificatePaths],
        *,
        call_timeout: float = 30.0,
        max_channels: int = 1024,
    ) -> None:
        # A callable is called (and the key read) on the first connection: the web app builds
        # its pool at start, and a collector that never calls an exporter never needs a key.
        self._identity = identity
        self._key_pair: tuple[bytes, bytes] | None = None
        self.call_timeout = call_timeout
        self.max_channels = max_channels
        self._channels: OrderedDict[tuple[str, str], grpc.aio.Channel] = OrderedDict()
        self._closing: set[asyncio.Task[None]] = set()

    def stub(self, target: AgentTarget) -> agent_pb2_grpc.AgentStub:
        return agent_pb2_grpc.AgentStub(self._channel(target))

    def metadata(self, target: AgentTarget) -> tuple[tuple[str, str], ...]:
        return (("authorization", f"Bearer {target.token}"),)

    def call_options(self, target: AgentTarget, timeout: float | None = None) -> dict[str, Any]:
        """Keyword arguments for a unary call: the token and a deadline."""
        return {"metadata": self.metadata(target), "timeout": timeout or self.call_timeout}

    async def info(self, target: AgentTarget) -> pb.InfoResponse:
        response: pb.InfoResponse = await self.stub(target).Info(
            pb.InfoRequest(), **self.call_options(target)
        )
        return response

    def _channel(self, target: AgentTarget) -> grpc.aio.Channel:
        channel = self._channels.get(target.key)
        if channel is not None:
            self._channels.move_to_end(target.key)
            return channel
        if pem_fingerprint(target.exporter_cert) != target.exporter_fingerprint:
            raise PinMismatch(
                f"{target.address}: the recorded certificate is not the pinned"
                f" {target.exporter_fingerprint}; enrol the server again"
            )
        key, cert = self._own_key_pair()
        credentials = grpc.ssl_channel_credentials(
            root_certificates=target.exporter_cert, private_key=key, certificate_chain=cert
        )
        channel = grpc.aio.secure_channel(
            target.address,
            credentials,
            options=[
                ("grpc.ssl_target_name_override", target.server_name),
                # Keep idle connections alive through NAT and notice dead peers.
                ("grpc.keepalive_time_ms", 60_000),
                ("grpc.keepalive_timeout_ms", 20_000),
                ("grpc.max_receive_message_length", 4 * 1024 * 1024),
                # A fixed 1 MiB receive window per call, as the exporter's: with gRPC's BDP
                # probing the window grows and a download the browser takes slowly piles up
                # here (a test client reading 100 MiB at 64 MB/s: peak RSS +12-20 MiB; fixed: +3.5).
                ("grpc.http2.bdp_probe", 0),
                ("grpc.http2.lookahead_bytes", RECEIVE_WINDOW),
            ],
        )
        self._channels[target.key] = channel
        while len(self._channels) > self.max_channels:
            _, oldest = self._channels.popitem(last=False)
            # Closed in the background, letting calls already on it finish (grace).
            task = asyncio.get_running_loop().create_task(oldest.close(grace=30))
            self._closing.add(task)
            task.add_done_callback(self._closing.discard)
        return channel

    def _own_key_pair(self) -> tuple[bytes, bytes]:
        if self._key_pair is None:
            paths = self._identity() if callable(self._identity) else self._identity
            self._key_pair = (paths.key.read_bytes(), paths.cert.read_bytes())
        return self._key_pair

    async def evict(self, target: AgentTarget) -> None:
        """Close the channel to `target` (re-enrolled, removed)."""
        channel = self._channels.pop(target.key, None)
        if channel is not None:
            await channel.close()

    async def close(self) -> None:
        channels, self._channels = list(self._channels.values()), OrderedDict()
        for channel in channels:
            await channel.close()
        for task in list(self._closing):
            await task
