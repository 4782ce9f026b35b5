"""`vpsmon exporter enrol`: join this exporter to a collector (issue #7, docs/security.md).

1. Check everything local first (arguments, exporter.yml, run_as, that the files can be
   written), because the one-time token is spent by the collector on the first valid call.
2. Connect to the collector's gRPC port and check that its certificate has the fingerprint
   given on the command line (pinning: no CA is trusted); the gRPC channel then trusts
   exactly that certificate.
3. Send the token, this exporter's certificate and the command address; receive the
   collector's certificate, a long-lived command token and the features to enable.
4. Write the collector's certificate into state_dir and the command.* settings into
   exporter.yml, atomically, keeping every other setting (and the comments outside the
   command block). Nothing is written when any step fails.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import socket
import ssl
import tempfile
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from vpsmon.config import ConfigError, HostPort, flatten, parse_hostport
from vpsmon.exporter.config import FEATURES, ExporterConfig, load_config, parse_fingerprint
from vpsmon.exporter.security import CertificatePaths

COLLECTOR_CERT_NAME = "enrolled-collector.crt"
TIMEOUT = 15.0


class EnrolError(Exception):
    """Enrolment refused or impossible; the message says why. Nothing was changed."""


@dataclass(frozen=True)
class Enrolled:
    server_id: int
    address: str
    features: tuple[str, ...]
    config_path: Path
    collector_cert: Path


def parse_features(text: str | None) -> tuple[str, ...] | None:
    if text is None:
        return None
    chosen = [part.strip() for part in text.split(",") if part.strip()]
    unknown = [f for f in chosen if f not in FEATURES]
    if unknown:
        raise EnrolError(f"--features: unknown {', '.join(unknown)}; choose from {FEATURES}")
    return tuple(dict.fromkeys(chosen))


def pinned_certificate(collector: HostPort, pin: str, timeout: float = TIMEOUT) -> str:
    """The collector's certificate (PEM) after checking it has the fingerprint `pin`."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    # Trust comes from the pin below, not from a CA or a name.
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.set_alpn_protocols(["h2"])  # gRPC servers expect it
    try:
        with (
            socket.create_connection((collector.host, collector.port), timeout=timeout) as raw,
            context.wrap_socket(raw, server_hostname=None) as tls,
        ):
            der = tls.getpeercert(binary_form=True)
    except (OSError, ssl.SSLError) as err:
        raise EnrolError(f"cannot reach the collector at {collector} over TLS: {err}") from None
    if not der:
        raise EnrolError(f"the collector at {collector} presented no certificate")
    pem = ssl.DER_cert_to_PEM_cert(der)
    actual = _pem_fingerprint(pem)
    if actual != pin:
        raise EnrolError(
            f"the collector at {collector} presented certificate {actual}, not the pinned {pin}:"
            " check the address and the fingerprint (`vpsmon collector fingerprint` on the"
            " collector); nothing was changed"
        )
    return pem


def _pem_fingerprint(pem: str) -> str:
    import hashlib

    return "sha256:" + hashlib.sha256(ssl.PEM_cert_to_DER_cert(pem)).hexdigest()


async def request_enrolment(
    collector: HostPort,
    collector_pem: str,
    *,
    token: str,
    exporter_cert_pem: str,
    command_port: int,
    advertise: str | None,
    features: Iterable[str] | None,
    timeout: float = TIMEOUT,  # noqa: ASYNC109 (the gRPC deadline, sent to the server)
) -> Any:
    """The collector's EnrolResponse, or EnrolError with the collector's reason."""
    import grpc

    from vpsmon.v1 import fleet_pb2 as pb
    from vpsmon.v1 import fleet_pb2_grpc

    credentials = grpc.ssl_channel_credentials(root_certificates=collector_pem.encode())
    # The collector's self-signed certificate always names localhost; the pin authenticates it.
    options = [("grpc.ssl_target_name_override", "localhost")]
    async with grpc.aio.secure_channel(str(collector), credentials, options=options) as channel:
        stub = fleet_pb2_grpc.EnrolStub(channel)
        try:
            return await stub.Enrol(
                pb.EnrolRequest(
                    token=token,
                    exporter_cert_pem=exporter_cert_pem,
                    address=advertise or "",
                    command_port=command_port,
                    features=list(features or ()),
                    hostname=socket.gethostname(),
                ),
                timeout=timeout,
            )
        except grpc.aio.AioRpcError as err:
            if err.code() in {grpc.StatusCode.PERMISSION_DENIED, grpc.StatusCode.INVALID_ARGUMENT}:
                raise EnrolError(f"the collector refused: {err.details()}") from None
            raise EnrolError(
                f"enrolment with {collector} failed: {err.code().name} {err.details()}"
            ) from None


# ---------------------------------------------------------------- exporter.yml


def command_settings(
    collector_cert: Path,
    collector_fingerprint: str,
    token: str,
    features: Iterable[str],
    run_as: str | None,
) -> dict[str, Any]:
    enabled = set(features)
    values: dict[str, Any] = {
        "collector_cert": str(collector_cert),
        "collector_fingerprint": collector_fingerprint,
        "token": token,
        **{feature: feature in enabled for feature in FEATURES},
    }
    if run_as is not None:
        values["run_as"] = run_as
    return values


_TOP_COMMAND = re.compile(r"^command(\.[^\s:]*)?\s*:")


def updated_yaml(text: str, command: Mapping[str, Any]) -> str:
    """`text` with the command block replaced by the old command settings updated with
    `command`; everything else kept as it was (comments included when possible)."""
    document = yaml.safe_load(text) if text.strip() else {}
    if document is None:
        document = {}
    if not isinstance(document, dict):
        raise EnrolError("exporter.yml: the top level must be a mapping of settings")
    flat = flatten(document)
    old_command = {k[len("command.") :]: v for k, v in flat.items() if k.startswith("command.")}
    merged = {**old_command, **command}
    expected = {k: v for k, v in flat.items() if not k.startswith("command.")}
    expected.update({f"command.{k}": v for k, v in merged.items()})
    block = yaml.safe_dump({"command": merged}, sort_keys=False, default_flow_style=False)

    kept: list[str] = []
    skipping = False
    for line in text.splitlines():
        if _TOP_COMMAND.match(line):
            skipping = True
            continue
        if skipping and (not line.strip() or line[:1] in {" ", "\t"}):
            continue
        skipping = False
        kept.append(line)
    candidate = "\n".join(kept).rstrip("\n")
    candidate = (candidate + "\n\n" if candidate else "") + block
    try:
        parsed = yaml.safe_load(candidate) or {}
        same = isinstance(parsed, dict) and flatten(parsed) == expected
    except yaml.YAMLError:
        same = False
    if same:
        return candidate
    # The line edit did not give exactly the settings wanted (an unusual layout): write the
    # settings themselves, without the comments.
    others = {k: v for k, v in document.items() if k != "command" and not k.startswith("command.")}
    return yaml.safe_dump({**others, "command": merged}, sort_keys=False)


def write_atomically(
    path: Path, data: bytes, *, like: Path | None = None, mode: int = 0o600
) -> None:
    """Replace `path` with `data` in one rename: readers see the old or the new file, never
    half of one. Keeps the owner and group of `like` (the file replaced) and its mode minus
    any access for others, as the file holds a secret."""
    path.parent.mkdir(parents=True, exist_ok=True)
    st = like.stat() if like is not None and like.exists() else None
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "wb") as out:
            out.write(data)
            out.flush()
            os.fsync(out.fileno())
        os.chmod(tmp, (st.st_mode & 0o770) if st else mode)
        if st is not None and os.geteuid() == 0:
            os.chown(tmp, st.st_uid, st.st_gid)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def _check_loads(text: str) -> None:
    """The new exporter.yml must load (strictly) before it replaces the old one."""
    with tempfile.TemporaryDirectory() as tmp:
        candidate = Path(tmp) / "exporter.yml"
        candidate.write_text(text, encoding="utf-8")
        try:
            load_config(candidate, env={})
        except ConfigError as err:
            raise EnrolError(
                f"the new exporter.yml would not load ({err}); nothing changed"
            ) from None


def _check_writable(path: Path) -> None:
    directory = path.parent
    probe = directory
    while not probe.exists():
        probe = probe.parent
    if not os.access(probe, os.W_OK) or (path.exists() and not os.access(path, os.W_OK)):
        raise EnrolError(f"cannot write {path}: run as the user that owns it (or root)")


# ---------------------------------------------------------------- the whole flow


def enrol(
    config_path: Path,
    *,
    collector: str,
    pin: str,
    token: str,
    features: str | None = None,
    advertise: str | None = None,
    run_as: str | None = None,
    file_roots: Sequence[str] = (),
    identity: CertificatePaths | None = None,
) -> Enrolled:
    """Enrol with the collector and write the settings; EnrolError (nothing changed) else."""
    try:
        collector_addr = parse_hostport(collector)
    except ValueError as err:
        raise EnrolError(f"--collector: {err}") from None
    if collector_addr.host in {"", "0.0.0.0"} or collector_addr.port == 0:
        raise EnrolError("--collector: give the collector's host and gRPC port (HOST:8081)")
    try:
        wanted_pin = parse_fingerprint(pin)
    except ValueError as err:
        raise EnrolError(f"--fingerprint: {err}") from None
    assert wanted_pin is not None
    if advertise:
        try:
            advertise = str(parse_hostport(advertise))
        except ValueError as err:
            raise EnrolError(f"--advertise: {err}") from None
    token = token.strip()
    if not token:
        raise EnrolError("--token is empty: copy the command from the add-server dialog")
    asked = parse_features(features)
    config = _current_config(config_path)
    run_as = run_as or config.command.run_as
    if run_as is None and os.geteuid() == 0:
        raise EnrolError(
            "the exporter runs as root here: pass --run-as USER for the user commands and"
            " terminals run as (--run-as root to allow root on purpose)"
        )
    if run_as is not None:
        from vpsmon.exporter.command.identity import resolve_run_as

        try:
            resolve_run_as(run_as)
        except ConfigError as err:
            raise EnrolError(f"--run-as: {err}") from None
    roots = checked_file_roots(file_roots)
    policy_path = config.command.policy_file or config_path.with_name("policy.yml")
    policy_text = updated_policy(policy_path, roots) if roots else None
    state_dir = config.resolved_state_dir()
    collector_cert_path = state_dir / COLLECTOR_CERT_NAME
    _check_writable(config_path)
    _check_writable(collector_cert_path)
    if policy_text is not None:
        _check_writable(policy_path)

    collector_pem = pinned_certificate(collector_addr, wanted_pin)
    if identity is None:
        from vpsmon.exporter.server import identity as exporter_identity

        identity = exporter_identity(config)
    response = asyncio.run(
        request_enrolment(
            collector_addr,
            collector_pem,
            token=token,
            exporter_cert_pem=identity.cert.read_text(encoding="ascii"),
            command_port=config.command.listen.port,
            advertise=advertise,
            features=asked,
        )
    )
    returned_pem = str(response.collector_cert_pem)
    if (
        _pem_fingerprint(returned_pem) != wanted_pin
        or str(response.collector_fingerprint) != wanted_pin
    ):
        raise EnrolError("the collector answered with another certificate than the pinned one")
    enabled = tuple(f for f in FEATURES if f in set(response.features))
    text = config_path.read_text(encoding="utf-8") if config_path.exists() else ""
    settings = command_settings(
        collector_cert_path, wanted_pin, response.command_token, enabled, run_as
    )
    if policy_text is not None:
        settings["policy_file"] = str(policy_path)
    new_text = updated_yaml(text, settings)
    _check_loads(new_text)
    write_atomically(collector_cert_path, returned_pem.encode("ascii"), mode=0o644)
    if policy_text is not None:  # before exporter.yml names it
        write_atomically(policy_path, policy_text.encode("utf-8"), like=policy_path, mode=0o644)
    write_atomically(config_path, new_text.encode("utf-8"), like=config_path)
    _hand_to_state_owner(state_dir, [identity.cert, identity.key, collector_cert_path])
    return Enrolled(
        int(response.server_id),
        str(response.address),
        enabled,
        config_path,
        collector_cert_path,
    )


def checked_file_roots(values: Sequence[str]) -> list[str]:
    """--file-root values: absolute paths of existing directories, in order, once each."""
    roots: list[str] = []
    for value in values:
        if not value.startswith("/"):
            raise EnrolError(f"--file-root {value!r}: give an absolute path such as /srv/www")
        if not os.path.isdir(value):
            raise EnrolError(f"--file-root {value}: no such directory")
        if value not in roots:
            roots.append(value)
    return roots


def updated_policy(path: Path, roots: Sequence[str]) -> str:
    """The policy file at `path` (made if missing) with file_roots set to `roots`, the other
    keys (commands) kept."""
    try:
        document = yaml.safe_load(path.read_text(encoding="utf-8")) if path.exists() else {}
    except (OSError, yaml.YAMLError) as err:
        raise EnrolError(f"{path}: {err}") from None
    if document is None:
        document = {}
    if not isinstance(document, dict):
        raise EnrolError(f"{path}: the top level must be a mapping (commands, file_roots)")
    document["file_roots"] = list(roots)
    head = "# The exporter's command policy (docs/security.md); file_roots set by enrol\n"
    return head + yaml.safe_dump(document, default_flow_style=False, sort_keys=False)


def _hand_to_state_owner(state_dir: Path, made: list[Path]) -> None:
    """Root enrolling an exporter that runs as its own user (the systemd unit's User=vpsmon):
    the key pair, lock and collector certificate made here in state_dir go to state_dir's
    owner, or the restarted exporter could not read its own key."""
    if os.geteuid() != 0:
        return
    try:
        owner = state_dir.stat()
    except OSError:
        return
    if owner.st_uid == 0:
        return
    for path in [*made, *state_dir.glob(".*.lock")]:
        if path.parent != state_dir or not path.exists() or path.stat().st_uid != 0:
            continue
        os.chown(path, owner.st_uid, owner.st_gid)


def _current_config(path: Path) -> ExporterConfig:
    try:
        return load_config(path if path.exists() else None, env={})
    except ConfigError as err:
        raise EnrolError(f"{path}: {err}") from None


__all__ = ["EnrolError", "Enrolled", "enrol", "updated_yaml"]
