"""The collector's gRPC port (`grpc.listen`, 8081; issue #7): TLS with the collector's own
certificate, which clients pin by fingerprint, and the services registered on it.

    server = await start_grpc_server(config.grpc_listen, identity, [enrol_service(pool, ...)])

A service is registered by a callable that adds its servicer to the server (the generated
`add_<Service>Servicer_to_server`); collector/app.py builds the list (`_grpc_services`). No
client certificate is asked for: each service authenticates its calls (Enrol: the one-time
token; Fleet: its own credentials).
"""

from __future__ import annotations

import ipaddress
import logging
import re
from collections.abc import Callable, Sequence

import asyncpg
import grpc

from vpsmon.collector import audit
from vpsmon.collector.fleet.agents import (
    EnrolmentError,
    TokenRefused,
    check_features,
    redeem_enrolment_token,
)
from vpsmon.collector.fleet.tokenkey import TokenKey
from vpsmon.config import HostPort
from vpsmon.exporter.security import CertificatePaths, fingerprint
from vpsmon.v1 import fleet_pb2 as pb
from vpsmon.v1 import fleet_pb2_grpc

log = logging.getLogger("vpsmon.collector.grpc")

GrpcService = Callable[[grpc.aio.Server], None]
MAX_MESSAGE = 4 * 1024 * 1024
DEFAULT_COMMAND_PORT = 9191


async def start_grpc_server(
    listen: HostPort, identity: CertificatePaths, services: Sequence[GrpcService]
) -> grpc.aio.Server:
    """Listening on `listen` with every service added; OSError when the port is taken."""
    server = grpc.aio.server(
        options=[
            ("grpc.max_receive_message_length", MAX_MESSAGE),
            ("grpc.max_send_message_length", MAX_MESSAGE),
            ("grpc.so_reuseport", 0),  # a busy port must be an error, not a shared listener
        ]
    )
    for add in services:
        add(server)
    credentials = grpc.ssl_server_credentials(
        [(identity.key.read_bytes(), identity.cert.read_bytes())], require_client_auth=False
    )
    try:
        port = server.add_secure_port(str(listen), credentials)
    except RuntimeError as err:
        raise OSError(f"cannot listen on {listen} (collector gRPC): {err}") from None
    if port == 0:
        raise OSError(f"cannot listen on {listen} (collector gRPC): address in use?")
    await server.start()
    log.info("collector gRPC listening address=%s services=%d", listen, len(services))
    return server


def peer_host(peer: str) -> str | None:
    """The address part of a gRPC peer string ("ipv4:10.0.0.5:51234", "ipv6:[::1]:5")."""
    match = re.fullmatch(r"ipv4:([0-9.]+):\d+|ipv6:\[([0-9a-fA-F:.%\w]+)\]:\d+", peer)
    if not match:
        return None
    host = match.group(1) or match.group(2)
    try:
        address = ipaddress.ip_address(host.split("%", 1)[0])
    except ValueError:
        return None
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return str(address.ipv4_mapped)
    return str(address)


class EnrolService(fleet_pb2_grpc.EnrolServicer):
    """Trades a one-time enrolment token for the collector's certificate and a command token."""

    # A re-enrolled server with a new certificate gets a new pooled channel (the pool's key is
    # address + pinned fingerprint); the old one is closed by the pool's LRU bound.

    def __init__(self, db: asyncpg.Pool, identity: CertificatePaths, token_key: TokenKey) -> None:
        self.db = db
        self.identity = identity
        self.token_key = token_key

    async def Enrol(  # noqa: N802 (the gRPC method name)
        self, request: pb.EnrolRequest, context: grpc.aio.ServicerContext
    ) -> pb.EnrolResponse:
        peer = peer_host(context.peer())
        address = request.address.strip()
        if not address:
            if peer is None:
                await context.abort(
                    grpc.StatusCode.INVALID_ARGUMENT,
                    "cannot tell this server's address: pass --advertise HOST:PORT",
                )
            host = f"[{peer}]" if peer and ":" in peer else peer
            address = f"{host}:{request.command_port or DEFAULT_COMMAND_PORT}"
        try:
            features = check_features(request.features) if request.features else None
            record = await redeem_enrolment_token(
                self.db,
                request.token,
                self.token_key,
                exporter_cert=request.exporter_cert_pem,
                address=address,
                features=features,
            )
        except TokenRefused as err:
            await self._audit(None, False, peer, {"reason": str(err)})
            await context.abort(grpc.StatusCode.PERMISSION_DENIED, str(err))
        except EnrolmentError as err:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(err))
        await self._audit(
            record.server_id,
            True,
            peer,
            {
                "fingerprint": record.target.exporter_fingerprint,
                "address": record.target.address,
                "features": sorted(record.features),
                "hostname": request.hostname[:200],
            },
        )
        log.info(
            "server enrolled server_id=%d address=%s fingerprint=%s features=%s",
            record.server_id,
            record.target.address,
            record.target.exporter_fingerprint,
            ",".join(sorted(record.features)),
        )
        cert = self.identity.cert.read_text(encoding="ascii")
        return pb.EnrolResponse(
            collector_cert_pem=cert,
            collector_fingerprint=fingerprint(self.identity.cert),
            command_token=record.target.token,
            features=sorted(record.features),
            server_id=record.server_id,
            address=record.target.address,
        )

    async def _audit(
        self, server_id: int | None, success: bool, peer: str | None, detail: dict[str, object]
    ) -> None:
        try:
            await audit.record(
                self.db,
                "agent.enrol",
                username="(enrolment token)",
                server_id=server_id,
                address=peer,
                success=success,
                detail=detail,
            )
        except Exception:  # the audit log must not turn a refusal into another error
            log.exception("cannot write the enrolment audit entry")


def enrol_service(db: asyncpg.Pool, identity: CertificatePaths, token_key: TokenKey) -> GrpcService:
    service = EnrolService(db, identity, token_key)

    def add(server: grpc.aio.Server) -> None:
        fleet_pb2_grpc.add_EnrolServicer_to_server(service, server)

    return add
