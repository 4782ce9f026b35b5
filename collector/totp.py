"""Time-based one-time passwords: HOTP (RFC 4226) and TOTP (RFC 6238), as authenticator apps
(Google Authenticator, Aegis, 1Password …) compute them: HMAC-SHA1, 6 digits, 30 s steps.

Small enough to own, and tested against the RFCs' own test vectors.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
import struct
import urllib.parse

STEP_SECONDS = 30
DIGITS = 6
# Codes one step either side of now are accepted, for clocks a little apart (RFC 6238 §5.2).
WINDOW = 1


def new_secret() -> str:
    """A 160-bit random secret in base32 without padding (RFC 4226 §4 recommends 160 bits)."""
    return base64.b32encode(secrets.token_bytes(20)).decode().rstrip("=")


def decode_secret(secret: str) -> bytes:
    cleaned = secret.replace(" ", "").upper()
    return base64.b32decode(cleaned + "=" * (-len(cleaned) % 8))


def hotp(key: bytes, counter: int, digits: int = DIGITS, digest: str = "sha1") -> str:
    """RFC 4226 §5.3: HMAC of the 8-byte counter, dynamic truncation, modulo 10^digits."""
    mac = hmac.new(key, struct.pack(">Q", counter), getattr(hashlib, digest)).digest()
    offset = mac[-1] & 0x0F
    code = struct.unpack(">I", mac[offset : offset + 4])[0] & 0x7FFFFFFF
    return str(code % 10**digits).zfill(digits)


def time_step(t: float, step: int = STEP_SECONDS) -> int:
    return int(t // step)


def totp(
    key: bytes, t: float, digits: int = DIGITS, digest: str = "sha1", step: int = STEP_SECONDS
) -> str:
    """RFC 6238 §4: HOTP with the counter T = floor((t - T0) / X), T0 = 0."""
    return hotp(key, time_step(t, step), digits, digest)


def match_step(secret: str, code: str, t: float, after_step: int = 0) -> int | None:
    """The time step whose code is `code`, within WINDOW steps of t and later than
    `after_step` (a code once accepted is never accepted again); else None."""
    code = code.strip().replace(" ", "")
    if len(code) != DIGITS or not code.isdigit():
        return None
    key = decode_secret(secret)
    now = time_step(t)
    found = None
    for candidate in range(now - WINDOW, now + WINDOW + 1):
        # Compare every candidate in constant time, and do not stop early.
        if hmac.compare_digest(hotp(key, candidate), code) and candidate > after_step:
            found = candidate
    return found


def provisioning_uri(secret: str, account: str, issuer: str = "vpsmon") -> str:
    """The otpauth:// URI authenticator apps read from a QR code (Key Uri Format)."""
    label = urllib.parse.quote(f"{issuer}:{account}")
    query = urllib.parse.urlencode(
        {
            "secret": secret,
            "issuer": issuer,
            "algorithm": "SHA1",
            "digits": DIGITS,
            "period": STEP_SECONDS,
        }
    )
    return f"otpauth://totp/{label}?{query}"
