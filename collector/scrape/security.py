"""How a scrape proves who it talks to (TLS, pinned fingerprint) and who it is (bearer token)."""

from __future__ import annotations

import ssl

import aiohttp

from vpsmon.collector.scrape.target import NO_TLS_SETTINGS, Target, TLSSettings

# What aiohttp takes as `ssl=`: a context, a pinned Fingerprint, or True for the default checks.
SSLSetting = ssl.SSLContext | aiohttp.Fingerprint | bool


class ScrapeSetupError(Exception):
    """A target's TLS or credential settings cannot be used; the message says which and why."""


def ssl_for(tls: TLSSettings) -> SSLSetting:
    """Build once per target (loading a CA file per scrape would be waste).

    With a fingerprint, aiohttp skips CA and host name checks and compares the SHA-256 of the
    certificate the server presents with the pinned one before any byte of the request is sent.
    """
    if tls.fingerprint is not None:
        return aiohttp.Fingerprint(bytes.fromhex(tls.fingerprint.removeprefix("sha256:")))
    if tls == NO_TLS_SETTINGS:
        return True
    try:
        context = ssl.create_default_context(cafile=str(tls.ca_file) if tls.ca_file else None)
    except (OSError, ssl.SSLError) as err:
        raise ScrapeSetupError(f"cannot load tls.ca_file {tls.ca_file}: {_reason(err)}") from None
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    if tls.insecure_skip_verify:
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    if tls.cert_file is not None and tls.key_file is not None:
        try:
            context.load_cert_chain(tls.cert_file, tls.key_file)
        except (OSError, ssl.SSLError) as err:
            raise ScrapeSetupError(
                f"cannot load tls.cert_file {tls.cert_file} with its key: {_reason(err)}"
            ) from None
    return context


def authorization(target: Target) -> str | None:
    """The Authorization header value; a token file is read on every scrape, as Prometheus
    does, so a rotated token is picked up without a restart."""
    if target.bearer_token is not None:
        return f"Bearer {target.bearer_token}"
    if target.bearer_token_file is None:
        return None
    try:
        token = target.bearer_token_file.read_text(encoding="utf-8").strip()
    except (OSError, UnicodeDecodeError) as err:
        raise ScrapeSetupError(
            f"cannot read bearer_token_file {target.bearer_token_file}: {_reason(err)}"
        ) from None
    if not token or "\n" in token or "\r" in token:
        raise ScrapeSetupError(
            f"bearer_token_file {target.bearer_token_file} must hold one token on one line"
        )
    return f"Bearer {token}"


def fingerprint_mismatch(err: aiohttp.ServerFingerprintMismatch) -> str:
    return (
        "TLS certificate does not match the pinned fingerprint: expected"
        f" sha256:{err.expected.hex()}, the server presented sha256:{err.got.hex()}"
    )


def _reason(err: BaseException) -> str:
    if isinstance(err, OSError) and err.strerror:
        return err.strerror
    return str(err) or type(err).__name__
