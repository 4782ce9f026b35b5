"""The collector's own TLS identity (issue #7): a key pair and self-signed certificate made in
the data dir on first use, `identity/collector.key` (0600) and `identity/collector.crt`.

Exporters pin its fingerprint at enrolment and accept command connections only from it; the
collector presents it when it calls them (collector/fleet/pool.py) and serves its gRPC port
(collector/fleet/server.py) with it. Shown by `vpsmon collector fingerprint` and in the UI's
"add server" dialog. Losing the data dir means enrolling every server again.
"""

from __future__ import annotations

import socket
from pathlib import Path

from vpsmon.exporter.security import CertificatePaths, ensure_self_signed, fingerprint

STEM = "collector"


def identity_dir(data_dir: Path) -> Path:
    return data_dir / "identity"


def ensure_identity(data_dir: Path) -> CertificatePaths:
    """The collector's certificate and key, made on the first call (needs `openssl`)."""
    return ensure_self_signed(identity_dir(data_dir), socket.gethostname() or None, stem=STEM)


def identity_fingerprint(data_dir: Path) -> str:
    """`sha256:HEX` of the collector's certificate (made first if it does not exist)."""
    return fingerprint(ensure_identity(data_dir).cert)
