"""The command channel's gRPC server: mutual TLS with the exporter's own key pair, the
enrolled collector's certificate as the only trust root, and the Agent service."""

from __future__ import annotations

import logging
from pathlib import Path

import grpc

from vpsmon.config import ConfigError
from vpsmon.exporter.collectors.docker import resolve_host
from vpsmon.exporter.command.guard import Guard, fingerprint_of_pem
from vpsmon.exporter.command.identity import resolve_run_as
from vpsmon.exporter.command.policy import load_policy
from vpsmon.exporter.command.service import AgentService
from vpsmon.exporter.config import ExporterConfig
from vpsmon.exporter.security import CertificatePaths
from vpsmon.v1 import agent_pb2_grpc

log = logging.getLogger("vpsmon.exporter.command")

# Big enough for a 256 KiB file chunk with room to spare; small enough that no message can
# make us buffer much.
MAX_MESSAGE = 4 * 1024 * 1024
# The HTTP/2 receive window of a call: how much of an upload the transport takes in ahead of
# the file writes. Fixed, because gRPC's default BDP probing grows the window from measured
# bandwidth x ping time, and when this host is busy the pings answer late, the estimate and
# the window grow, and a fast sender fills it: a 100 MiB upload held 15-100 MiB in the
# exporter at load 7 (5-7 MiB with a fixed window). 1 MiB still moves ~10 MiB/s at 100 ms RTT.
RECEIVE_WINDOW = 1024 * 1024


def _read(path: Path, what: str) -> bytes:
    try:
        return path.read_bytes()
    except OSError as err:
        raise ConfigError(f"{what}: cannot read {path}: {err.strerror or err}") from None


async def start_command_server(
    config: ExporterConfig, identity: CertificatePaths
) -> grpc.aio.Server:
    """Listening on command.listen, or a ConfigError / OSError saying why not."""
    command = config.command
    assert command.collector_cert and command.collector_fingerprint and command.token
    collector_pem = _read(command.collector_cert, "command.collector_cert")
    try:
        actual = fingerprint_of_pem(collector_pem)
    except ValueError:
        raise ConfigError(f"command.collector_cert: {command.collector_cert} is not PEM") from None
    if actual != command.collector_fingerprint:
        raise ConfigError(
            f"command.collector_cert ({actual}) does not match command.collector_fingerprint"
            f" ({command.collector_fingerprint}): enrol again"
        )
    run_as = resolve_run_as(command.run_as)
    policy = load_policy(command.policy_file, run_as.home)
    service = AgentService(
        Guard(command.collector_fingerprint, command.token, command.features),
        run_as,
        policy,
        command.exec_timeout,
        resolve_host(config.options.get("docker.host")),
    )
    server = grpc.aio.server(
        options=[
            ("grpc.max_receive_message_length", MAX_MESSAGE),
            ("grpc.max_send_message_length", MAX_MESSAGE),
            ("grpc.so_reuseport", 0),  # a busy port must be an error, not a shared listener
            ("grpc.http2.bdp_probe", 0),
            ("grpc.http2.lookahead_bytes", RECEIVE_WINDOW),
        ]
    )
    agent_pb2_grpc.add_AgentServicer_to_server(service, server)
    credentials = grpc.ssl_server_credentials(
        [(_read(identity.key, "TLS key"), _read(identity.cert, "TLS certificate"))],
        root_certificates=collector_pem,
        require_client_auth=True,
    )
    address = f"{command.listen.host}:{command.listen.port}"
    if ":" in command.listen.host:
        address = f"[{command.listen.host}]:{command.listen.port}"
    try:
        port = server.add_secure_port(address, credentials)
    except RuntimeError as err:
        raise OSError(f"cannot listen on {command.listen} (command channel): {err}") from None
    if port == 0:
        raise OSError(f"cannot listen on {command.listen} (command channel)")
    await server.start()
    server.agent_service = service  # closed with the server (exporter/server.py)
    log.info(
        "command channel listening address=%s features=%s run_as=%s",
        command.listen,
        ",".join(sorted(command.features)),
        run_as.name,
    )
    return server
