"""The client side of the collector's Fleet service (`vpsmon exec`, `vpsmon shell`, `vpsmon login`).

Where to connect and as whom comes from, first to last: the command's options, the
environment (VPSMON_COLLECTOR, VPSMON_TOKEN, VPSMON_FINGERPRINT), and the client file
`vpsmon login` writes (~/.config/vpsmon/client.yml, mode 0600; VPSMON_CLIENT_CONFIG moves it).

The collector's certificate is self-signed, so it is trusted by its pinned SHA-256
fingerprint, as exporters trust it: the client reads the certificate the collector presents,
refuses it unless its fingerprint is the pinned one, and then opens the gRPC channel with that
certificate as the only trust root (a server without the collector's private key cannot
complete that handshake, so the check cannot be raced).
"""

from __future__ import annotations

import hashlib
import os
import socket
import ssl
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml

from vpsmon.config import parse_hostport

if TYPE_CHECKING:
    import grpc

DEFAULT_PORT = 8081
# A name the collector's own certificate holds (collector/fleet/identity.py makes it with
# localhost among its names); the pin, not the name, is what authenticates the collector.
SERVER_NAME = "localhost"
CONNECT_TIMEOUT = 10.0
KEYS = ("collector", "fingerprint", "token")


class ClientError(Exception):
    """Something a person must fix (no address, wrong pin, unreachable); the message says what."""


def default_client_file() -> Path:
    import platformdirs

    return Path(platformdirs.user_config_dir("vpsmon")) / "client.yml"


def client_file(env: Mapping[str, str] | None = None) -> Path:
    env = os.environ if env is None else env
    return (
        Path(env["VPSMON_CLIENT_CONFIG"])
        if env.get("VPSMON_CLIENT_CONFIG")
        else (default_client_file())
    )


def normalize_fingerprint(value: str) -> str:
    """ "sha256:AB:CD…" or bare hex (with or without colons) -> "sha256:abcd…"."""
    text = value.strip().lower().removeprefix("sha256:").replace(":", "")
    if len(text) != 64 or any(c not in "0123456789abcdef" for c in text):
        raise ClientError(f"{value!r} is not a SHA-256 fingerprint (sha256:64 hex digits)")
    return "sha256:" + text


def normalize_address(value: str) -> str:
    text = value.strip()
    if "://" in text:
        raise ClientError(f"collector address {value!r}: give HOST:PORT, without a scheme")
    if ":" not in text or text.endswith("]"):
        text = f"{text}:{DEFAULT_PORT}"
    try:
        hostport = parse_hostport(text)
    except ValueError as err:
        raise ClientError(f"collector address {value!r}: {err}") from None
    if not hostport.host or hostport.port == 0:
        raise ClientError(f"collector address {value!r}: give HOST:PORT")
    return str(hostport)


@dataclass(frozen=True)
class ClientSettings:
    collector: str
    fingerprint: str
    token: str


def read_client_file(path: Path) -> dict[str, str]:
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return {}
    except OSError as err:
        raise ClientError(f"{path}: {err.strerror or err}") from None
    try:
        data = yaml.safe_load(text) or {}
    except yaml.YAMLError as err:
        raise ClientError(f"{path}: not YAML: {err}") from None
    if not isinstance(data, dict):
        raise ClientError(f"{path}: expected a mapping of {', '.join(KEYS)}")
    unknown = sorted(set(data) - set(KEYS))
    if unknown:
        raise ClientError(f"{path}: unknown key {unknown[0]!r} (known: {', '.join(KEYS)})")
    for key, value in data.items():
        if not isinstance(value, str):
            raise ClientError(f"{path}: {key} must be a string")
    return dict(data)


def write_client_file(path: Path, settings: ClientSettings) -> None:
    """Write the file 0600 (it holds the token), atomically."""
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as out:
        out.write(
            "# Written by `vpsmon login`: the collector, its pinned fingerprint, your token.\n"
        )
        yaml.safe_dump(
            {
                "collector": settings.collector,
                "fingerprint": settings.fingerprint,
                "token": settings.token,
            },
            out,
            sort_keys=False,
        )
    os.chmod(tmp, 0o600)
    os.replace(tmp, path)


def resolve_settings(
    *,
    collector: str | None,
    token: str | None,
    fingerprint: str | None,
    config_path: Path | None,
    env: Mapping[str, str] | None = None,
) -> ClientSettings:
    env = os.environ if env is None else env
    path = config_path or client_file(env)
    saved = read_client_file(path)
    chosen = {
        "collector": collector or env.get("VPSMON_COLLECTOR") or saved.get("collector"),
        "token": token or env.get("VPSMON_TOKEN") or saved.get("token"),
        "fingerprint": fingerprint or env.get("VPSMON_FINGERPRINT") or saved.get("fingerprint"),
    }
    if not chosen["collector"]:
        raise ClientError(
            "no collector address: pass --collector HOST:PORT, set VPSMON_COLLECTOR, or run"
            " `vpsmon login`"
        )
    if not chosen["token"]:
        raise ClientError(
            "no API token: set VPSMON_TOKEN (make one with `vpsmon token create` or on your"
            " account page), pass --token, or run `vpsmon login`"
        )
    if not chosen["fingerprint"]:
        raise ClientError(
            "the collector's fingerprint is not pinned: pass --fingerprint sha256:… (print it"
            " on the collector with `vpsmon collector fingerprint`), or run `vpsmon login`"
        )
    return ClientSettings(
        normalize_address(chosen["collector"]),
        normalize_fingerprint(chosen["fingerprint"]),
        chosen["token"].strip(),
    )


def fetch_certificate(address: str, timeout: float = CONNECT_TIMEOUT) -> bytes:
    """The PEM certificate the server at `address` presents (not verified: we pin it)."""
    hostport = parse_hostport(address)
    try:
        with socket.create_connection((hostport.host, hostport.port), timeout=timeout) as sock:
            context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
            context.check_hostname = False
            context.verify_mode = ssl.CERT_NONE  # noqa: S503 (pinned by fingerprint below)
            context.set_alpn_protocols(["h2"])
            with context.wrap_socket(sock, server_hostname=SERVER_NAME) as tls:
                der = tls.getpeercert(binary_form=True)
    except OSError as err:
        raise ClientError(
            f"cannot reach the collector at {address}: {err.strerror or err}"
        ) from None
    if not der:
        raise ClientError(f"the collector at {address} presented no certificate")
    return ssl.DER_cert_to_PEM_cert(der).encode("ascii")


def certificate_fingerprint(pem: bytes) -> str:
    return "sha256:" + hashlib.sha256(ssl.PEM_cert_to_DER_cert(pem.decode("ascii"))).hexdigest()


def pinned_certificate(address: str, fingerprint: str) -> bytes:
    pem = fetch_certificate(address)
    actual = certificate_fingerprint(pem)
    if actual != fingerprint:
        raise ClientError(
            f"the collector at {address} presented certificate {actual}, not the pinned"
            f" {fingerprint}: refusing to send the token (a different server, or the collector's"
            " identity changed: check `vpsmon collector fingerprint` on it)"
        )
    return pem


async def open_channel(settings: ClientSettings) -> grpc.aio.Channel:
    """A channel to the collector, after its certificate passed the pin check."""
    import asyncio

    import grpc

    pem = await asyncio.to_thread(pinned_certificate, settings.collector, settings.fingerprint)
    credentials = grpc.ssl_channel_credentials(root_certificates=pem)
    return grpc.aio.secure_channel(
        settings.collector,
        credentials,
        options=[
            ("grpc.ssl_target_name_override", SERVER_NAME),
            ("grpc.max_receive_message_length", 8 * 1024 * 1024),
        ],
    )


def auth_metadata(settings: ClientSettings) -> tuple[tuple[str, str], ...]:
    return (("authorization", f"Bearer {settings.token}"),)


def describe_rpc_error(err: Any) -> str:
    """One line for a failed call (grpc.aio.AioRpcError)."""
    code = err.code()
    details = err.details() or code.name
    name = code.name
    if name == "UNAUTHENTICATED":
        return f"the collector refused the token: {details}"
    if name == "PERMISSION_DENIED":
        return f"not allowed: {details}"
    if name == "NOT_FOUND":
        return details
    if name == "UNAVAILABLE":
        return f"cannot reach the collector's gRPC service: {details}"
    return f"{details} ({name})"
