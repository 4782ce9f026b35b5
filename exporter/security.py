"""The exporter's own TLS identity and who may read its metrics.

- TLS: a configured certificate and key, or (`tls.auto`) a key pair and self-signed
  certificate the exporter makes on first start in its state directory. The collector pins
  the certificate's SHA-256 fingerprint at enrolment, so no CA is involved (DESIGN.md
  "Security model"); `vpsmon exporter fingerprint` prints it.
- Access: bearer tokens and/or allow-listed networks. With neither configured the exporter
  is open, as node_exporter is, so existing Prometheus setups keep working.
"""

from __future__ import annotations

import fcntl
import hashlib
import hmac
import ipaddress
import os
import shutil
import socket
import ssl
import subprocess
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network
IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

CERT_NAME = "exporter.crt"
KEY_NAME = "exporter.key"
# Ten years: the certificate is pinned by fingerprint, so expiry would only break enrolment
# without adding safety; rotating means enrolling again.
CERT_DAYS = 3650


class CertificateError(OSError):
    """The exporter's certificate cannot be made or read; the message says why.

    An OSError, as the failures are about files and a command, so the CLI reports it as one
    line like any other I/O failure."""


def default_state_dir() -> Path:
    """The user's data dir + /vpsmon-exporter (~/.local/share/vpsmon-exporter on Linux)."""
    try:
        import platformdirs
    except ImportError:
        # platformdirs comes with the collector extras, not the light exporter install; follow
        # the XDG rule it would apply on Linux.
        base = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
        return Path(base) / "vpsmon-exporter"
    return Path(platformdirs.user_data_dir("vpsmon-exporter", appauthor=False))


# ---------------------------------------------------------------- TLS


@dataclass(frozen=True)
class CertificatePaths:
    cert: Path
    key: Path


def auto_paths(state_dir: Path, stem: str = "exporter") -> CertificatePaths:
    return CertificatePaths(state_dir / f"{stem}.crt", state_dir / f"{stem}.key")


def ensure_self_signed(
    state_dir: Path, hostname: str | None = None, *, stem: str = "exporter"
) -> CertificatePaths:
    """The certificate `stem`.crt/.key in `state_dir`, made on the first call (EC P-256).

    The collector makes its own identity with the same function (stem "collector",
    collector/fleet/identity.py). Uses the `openssl` command: the `cryptography` package is
    not part of the light exporter install, and every distribution we target ships openssl.
    """
    paths = auto_paths(state_dir, stem)
    if paths.cert.exists() and paths.key.exists():
        return paths
    openssl = shutil.which("openssl")
    if openssl is None:
        raise CertificateError(
            "tls.auto needs the openssl command to make a certificate; install openssl or set"
            " tls.cert_file and tls.key_file"
        )
    try:
        state_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    except OSError as err:
        raise CertificateError(f"cannot create {state_dir}: {err.strerror or err}") from None
    # Two processes starting at once (a collector and a CLI command) must not each write half
    # of a pair: the second waits for the first and then finds the files.
    with open(state_dir / f".{stem}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if paths.cert.exists() and paths.key.exists():
            return paths
        _make_self_signed(openssl, state_dir, paths, hostname)
    return paths


def _make_self_signed(
    openssl: str, state_dir: Path, paths: CertificatePaths, hostname: str | None
) -> None:
    name = hostname or socket.gethostname() or "localhost"
    alt_names = [f"DNS:{name}", "DNS:localhost", "IP:127.0.0.1", "IP:::1"]
    # Write into a temp dir beside the final files and rename, so a crash halfway never
    # leaves a key without its certificate (or the reverse) for the next start to trust.
    with tempfile.TemporaryDirectory(dir=state_dir, prefix=".new-cert-") as tmp:
        cert, key = Path(tmp) / paths.cert.name, Path(tmp) / paths.key.name
        cmd = [
            openssl,
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
            "-keyout",
            str(key),
            "-out",
            str(cert),
            "-days",
            str(CERT_DAYS),
            "-subj",
            f"/CN={name[:64]}",
            "-addext",
            "subjectAltName=" + ",".join(alt_names),
        ]
        old_umask = os.umask(0o077)  # the key must never be readable by others, not even briefly
        try:
            done = subprocess.run(cmd, capture_output=True, text=True, timeout=60, check=False)
        finally:
            os.umask(old_umask)
        if done.returncode != 0:
            detail = done.stderr.strip().splitlines()[-1:] or ["no output"]
            raise CertificateError(f"openssl could not make a certificate: {detail[0]}")
        os.replace(key, paths.key)
        os.replace(cert, paths.cert)


def server_ssl_context(paths: CertificatePaths) -> ssl.SSLContext:
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    try:
        context.load_cert_chain(paths.cert, paths.key)
    except (OSError, ssl.SSLError) as err:
        raise CertificateError(
            f"cannot load certificate {paths.cert} with key {paths.key}: {err}"
        ) from None
    return context


def fingerprint(cert_path: Path) -> str:
    """`sha256:<hex>` of the certificate's DER bytes, the form the collector pins."""
    try:
        pem = cert_path.read_text(encoding="ascii")
    except OSError as err:
        raise CertificateError(f"cannot read {cert_path}: {err.strerror or err}") from None
    try:
        der = ssl.PEM_cert_to_DER_cert(pem)
    except ValueError:
        raise CertificateError(f"{cert_path} is not a PEM certificate") from None
    return "sha256:" + hashlib.sha256(der).hexdigest()


# ---------------------------------------------------------------- access


@dataclass(frozen=True)
class Decision:
    status: int  # 200 to serve, else the HTTP status to refuse with
    reason: str

    @property
    def allowed(self) -> bool:
        return self.status == 200


ALLOWED = Decision(200, "")


class AccessPolicy:
    """Who may read /metrics and /history.

    Neither tokens nor networks configured: everyone (node_exporter's behaviour). Otherwise a
    request passes when its address is in an allowed network OR it carries a valid bearer
    token. A refusal is 401 when a token would have let it in, else 403.
    """

    def __init__(self, tokens: Sequence[str], allow: Sequence[IPNetwork]) -> None:
        self._tokens = tuple(t.encode() for t in tokens)
        self._allow = tuple(allow)

    @property
    def open(self) -> bool:
        return not self._tokens and not self._allow

    def check(self, remote: str | None, authorization: str | None) -> Decision:
        if self.open:
            return ALLOWED
        address = _address(remote)
        if address is not None and any(address in net for net in self._allow):
            return ALLOWED
        if self._tokens:
            presented = _bearer(authorization)
            if presented is None:
                return Decision(401, "a bearer token is required")
            if self._token_matches(presented.encode()):
                return ALLOWED
            return Decision(401, "the bearer token is not valid")
        return Decision(403, f"address {remote or 'unknown'} is not allowed")

    def _token_matches(self, presented: bytes) -> bool:
        # Compare against every token without stopping early, each in constant time, so the
        # response time says nothing about which token or how much of it matched.
        matched = False
        for token in self._tokens:
            matched |= hmac.compare_digest(presented, token)
        return matched


def _bearer(authorization: str | None) -> str | None:
    if not authorization:
        return None
    scheme, _, value = authorization.partition(" ")
    if scheme.lower() != "bearer" or not value.strip():
        return None
    return value.strip()


def _address(remote: str | None) -> IPAddress | None:
    if not remote:
        return None
    try:
        address = ipaddress.ip_address(remote.split("%", 1)[0])
    except ValueError:
        return None
    # A dual-stack socket reports IPv4 clients as ::ffff:a.b.c.d; allow lists are written
    # with the IPv4 form.
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address


class RefusalLog:
    """Decides whether to log a refused request: at most once per `every` seconds per address,
    so a misconfigured scraper hitting every 15 s cannot flood the log. Bounded: entries older
    than `every` are forgotten when the table grows past `max_addresses`."""

    def __init__(self, every: float = 60.0, max_addresses: int = 10_000) -> None:
        self.every = every
        self.max_addresses = max_addresses
        self._last: dict[str, float] = {}

    def should_log(self, address: str, now: float) -> bool:
        last = self._last.get(address)
        if last is not None and now - last < self.every:
            return False
        if len(self._last) >= self.max_addresses:
            self._last = {a: t for a, t in self._last.items() if now - t < self.every}
            if len(self._last) >= self.max_addresses:
                return False  # a flood from many addresses: stay quiet rather than grow
        self._last[address] = now
        return True
