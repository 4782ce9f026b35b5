"""Who may call the command channel: checked at the start of every call, before anything runs.

Three locks, all required (DESIGN.md "Security model"):
1. TLS both ways: the gRPC server only completes a handshake with a client presenting the
   enrolled collector's certificate (it is the only trust root), and
2. that certificate's SHA-256 fingerprint must equal the pinned one (so a CA certificate put
   in its place could not vouch for others), and
3. the call carries the enrolment token: `authorization: Bearer TOKEN` metadata.
Then the feature the call belongs to must be enabled in exporter.yml.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import ssl
import time
from collections.abc import Iterable

import grpc

from vpsmon.exporter.security import RefusalLog

log = logging.getLogger("vpsmon.exporter.command")


def fingerprint_of_pem(pem: bytes) -> str:
    return "sha256:" + hashlib.sha256(ssl.PEM_cert_to_DER_cert(pem.decode("ascii"))).hexdigest()


class Guard:
    def __init__(self, fingerprint: str, token: str, features: Iterable[str]) -> None:
        self.fingerprint = fingerprint
        self._token = token.encode()
        self.features = frozenset(features)
        self._refusals = RefusalLog()

    async def check(self, context: grpc.aio.ServicerContext, feature: str | None) -> None:
        """Abort the call (UNAUTHENTICATED / PERMISSION_DENIED) unless every lock opens."""
        peer = context.peer()
        certs = context.auth_context().get("x509_pem_cert") or []
        if not certs or fingerprint_of_pem(certs[0]) != self.fingerprint:
            await self._refuse(context, peer, grpc.StatusCode.UNAUTHENTICATED, "unknown client")
        presented = b""
        for key, value in context.invocation_metadata() or ():
            if key == "authorization" and isinstance(value, str):
                scheme, _, token = value.partition(" ")
                if scheme.lower() == "bearer":
                    presented = token.strip().encode()
        if not hmac.compare_digest(presented, self._token):
            await self._refuse(context, peer, grpc.StatusCode.UNAUTHENTICATED, "bad token")
        if feature is not None and feature not in self.features:
            await self._refuse(
                context,
                peer,
                grpc.StatusCode.PERMISSION_DENIED,
                f"{feature} is not enabled on this exporter (command.{feature} in exporter.yml)",
            )

    async def _refuse(
        self, context: grpc.aio.ServicerContext, peer: str, code: grpc.StatusCode, why: str
    ) -> None:
        if self._refusals.should_log(peer, time.monotonic()):
            log.warning("refused command call peer=%s code=%s reason=%r", peer, code.name, why)
        await context.abort(code, why)
