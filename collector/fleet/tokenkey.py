"""The key that encrypts agents.command_token at rest (sql/082_command_token_sealed.sql).

A dump of the database alone must not give command access to the enrolled servers, so the
token the collector presents to each exporter is stored AES-256-GCM encrypted with a 32-byte key
kept beside the collector's identity, `DATA_DIR/command-token.key` (0600, made atomically on
first use), with the server id as associated data (a sealed token copied onto another server's
row does not open). Stored form: VERSION (1 byte) + nonce (12) + ciphertext and tag.

Rows written before 082 hold the plaintext token's bytes (printable ASCII, never VERSION first);
`agents.py` seals and rewrites them when it reads them. Losing the key file means enrolling
every server again, like losing identity/.
"""

from __future__ import annotations

import os
import secrets
from pathlib import Path

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

VERSION = b"\x01"
KEY_BYTES = 32
NONCE_BYTES = 12


def token_key_path(data_dir: Path) -> Path:
    return data_dir / "command-token.key"


class TokenKeyError(RuntimeError):
    """A stored command token cannot be opened with the key file; the message names the file."""


def is_sealed(stored: bytes) -> bool:
    return stored[:1] == VERSION


class TokenKey:
    """Seals and opens command tokens; the key file is read (or made) on first use."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._aead: AESGCM | None = None

    @classmethod
    def in_data_dir(cls, data_dir: Path) -> TokenKey:
        return cls(token_key_path(data_dir))

    def seal(self, server_id: int, token: str) -> bytes:
        nonce = secrets.token_bytes(NONCE_BYTES)
        sealed = self._cipher().encrypt(nonce, token.encode(), _associated(server_id))
        return VERSION + nonce + sealed

    def open(self, server_id: int, stored: bytes) -> str:
        if not is_sealed(stored):
            raise TokenKeyError(
                f"the command token of server {server_id} is stored in an unknown format"
                f" (version byte {stored[:1]!r}); enrol the server again"
            )
        nonce, sealed = stored[1 : 1 + NONCE_BYTES], stored[1 + NONCE_BYTES :]
        try:
            return self._cipher().decrypt(nonce, sealed, _associated(server_id)).decode()
        except (InvalidTag, UnicodeDecodeError):
            raise TokenKeyError(
                f"the command token of server {server_id} does not decrypt with the key file"
                f" {self.path}: the file was replaced or lost since the server was enrolled;"
                " restore it from a backup or enrol the server again"
            ) from None

    def _cipher(self) -> AESGCM:
        if self._aead is None:
            self._aead = AESGCM(self._read_or_make())
        return self._aead

    def _read_or_make(self) -> bytes:
        try:
            key = self.path.read_bytes()
        except FileNotFoundError:
            key = _make(self.path)
        except OSError as err:
            raise TokenKeyError(f"cannot read the key file {self.path}: {err}") from None
        if len(key) != KEY_BYTES:
            raise TokenKeyError(
                f"the key file {self.path} holds {len(key)} bytes, not {KEY_BYTES}:"
                " restore it from a backup"
            )
        return key


def _associated(server_id: int) -> bytes:
    return b"vpsmon agents.command_token server_id=%d" % server_id


def _make(path: Path) -> bytes:
    """A new random key written 0600 under a temporary name and linked into place, so two
    processes starting together end up with one key (the loser reads the winner's)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    key = secrets.token_bytes(KEY_BYTES)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(key)
            f.flush()
            os.fsync(f.fileno())
        try:
            os.link(tmp, path)  # fails if another process made it first
        except FileExistsError:
            return path.read_bytes()
    finally:
        tmp.unlink(missing_ok=True)
    return key
