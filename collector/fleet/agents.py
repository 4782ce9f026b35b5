"""Enrolled servers and one-time enrolment tokens (issue #7, sql/080_agents.sql).

    record = await agent_target(db, server_id, key)  # None: the server is not enrolled
    record.target                                     # AgentTarget for AgentPool
    record.features                                   # frozenset({"exec", "pty", ...})

Enrolment: the "add server" dialog calls `create_enrolment_token` and shows the secret once;
the exporter's `vpsmon exporter enrol` sends it with its certificate to the collector's gRPC
port, where `redeem_enrolment_token` checks it (unknown, used or expired → EnrolmentError,
nothing changed), marks it used and records the agent in one transaction.
"""

from __future__ import annotations

import hashlib
import secrets
import ssl
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import TypeAlias

import asyncpg

from vpsmon.collector.fleet.pool import AgentTarget, pem_fingerprint
from vpsmon.collector.fleet.tokenkey import TokenKey, is_sealed
from vpsmon.config import parse_hostport

FEATURES = ("exec", "pty", "files", "docker")
ENROLMENT_PREFIX = "vpsmon-enrol_"
# Long enough to paste a command onto a new server, short enough not to linger.
DEFAULT_ENROLMENT_TTL = 3600.0
MAX_ENROLMENT_TTL = 7 * 86400.0

DB: TypeAlias = "asyncpg.Pool | asyncpg.Connection"


class EnrolmentError(ValueError):
    """An enrolment or agent record was refused; the message says why (nothing changed)."""


class TokenRefused(EnrolmentError):
    """The one-time enrolment token is unknown, used or expired."""


@dataclass(frozen=True)
class AgentRecord:
    server_id: int
    target: AgentTarget
    features: frozenset[str]
    enrolled_at: datetime
    enrolled_by: int | None

    def as_json(self) -> dict[str, object]:
        """What the UI/API may show: never the token."""
        return {
            "server_id": self.server_id,
            "address": self.target.address,
            "fingerprint": self.target.exporter_fingerprint,
            "features": sorted(self.features),
            "enrolled_at": self.enrolled_at.isoformat(),
        }


@dataclass(frozen=True)
class EnrolmentToken:
    id: int
    server_id: int
    features: frozenset[str]
    expires_at: datetime
    secret: str  # shown once; only its hash is stored


def check_features(features: Iterable[str]) -> frozenset[str]:
    chosen = frozenset(f.strip() for f in features if f.strip())
    unknown = sorted(chosen - set(FEATURES))
    if unknown:
        raise EnrolmentError(
            f"unknown feature {', '.join(unknown)}: choose from {', '.join(FEATURES)}"
        )
    return chosen


def check_address(address: str) -> str:
    try:
        hostport = parse_hostport(address)
    except ValueError as err:
        raise EnrolmentError(f"command address: {err}") from None
    if hostport.port == 0 or hostport.host in {"", "0.0.0.0", "::"}:
        raise EnrolmentError(
            f"command address {address!r}: give the host and port the collector can dial"
        )
    return str(hostport)


def check_certificate(pem: bytes | str) -> tuple[str, str]:
    """(PEM text, sha256 fingerprint) of one PEM certificate, or EnrolmentError."""
    text = pem.decode("ascii", "replace") if isinstance(pem, bytes) else pem
    text = text.strip() + "\n"
    if not text.startswith("-----BEGIN CERTIFICATE-----") or len(text) > 16_384:
        raise EnrolmentError("the exporter certificate is not one PEM certificate")
    try:
        ssl.PEM_cert_to_DER_cert(text)
        return text, pem_fingerprint(text.encode("ascii"))
    except (ValueError, UnicodeEncodeError):
        raise EnrolmentError("the exporter certificate is not one PEM certificate") from None


def new_command_token() -> str:
    return secrets.token_urlsafe(32)  # 43 characters, 256 bits


def _hash(secret: str) -> bytes:
    return hashlib.sha256(secret.encode()).digest()


async def _record(db: DB, row: asyncpg.Record, key: TokenKey | None) -> AgentRecord:
    server_id: int = row["server_id"]
    stored: bytes = row["command_token"]
    if key is None:
        token = ""  # agent_enrolment: not opened
    elif is_sealed(stored):
        token = key.open(server_id, stored)
    else:
        # Recorded before sql/082 (plaintext): seal it now. The WHERE keeps a concurrent
        # re-enrolment's new token.
        token = stored.decode()
        await db.execute(
            "UPDATE agents SET command_token = $2 WHERE server_id = $1 AND command_token = $3",
            server_id,
            key.seal(server_id, token),
            stored,
        )
    return AgentRecord(
        server_id=server_id,
        target=AgentTarget(
            address=row["address"],
            exporter_cert=row["exporter_cert"].encode("ascii"),
            exporter_fingerprint=row["exporter_fingerprint"],
            token=token,
        ),
        features=frozenset(row["features"]),
        enrolled_at=row["enrolled_at"],
        enrolled_by=row["enrolled_by"],
    )


async def agent_target(db: DB, server_id: int, key: TokenKey) -> AgentRecord | None:
    """The enrolment of `server_id`, or None when it is not enrolled.

    No access check here: callers in the web layer go through web/command.py open_agent."""
    row = await db.fetchrow("SELECT * FROM agents WHERE server_id = $1", server_id)
    return await _record(db, row, key) if row is not None else None


async def agent_enrolment(db: DB, server_id: int) -> AgentRecord | None:
    """The enrolment of `server_id` for pages that show or revoke it and never call the
    exporter: the command token is not opened (target.token is ""), so a lost key file
    (collector/fleet/tokenkey.py) does not stop anyone from seeing or revoking an enrolment."""
    row = await db.fetchrow("SELECT * FROM agents WHERE server_id = $1", server_id)
    return await _record(db, row, None) if row is not None else None


async def list_agents(
    db: DB, key: TokenKey, server_ids: Iterable[int] | None = None
) -> list[AgentRecord]:
    """Every enrolled server (or those of `server_ids`), by server id."""
    if server_ids is None:
        rows = await db.fetch("SELECT * FROM agents ORDER BY server_id")
    else:
        rows = await db.fetch(
            "SELECT * FROM agents WHERE server_id = ANY($1::int[]) ORDER BY server_id",
            list(server_ids),
        )
    return [await _record(db, r, key) for r in rows]


async def record_agent(
    db: DB,
    server_id: int,
    key: TokenKey,
    *,
    address: str,
    exporter_cert: bytes | str,
    features: Iterable[str],
    token: str | None = None,
    enrolled_by: int | None = None,
) -> AgentRecord:
    """Record (or replace) the enrolment of `server_id`; the token is made unless given.

    EnrolmentError for a bad address, certificate, feature, token or unknown server."""
    address = check_address(address)
    pem, fingerprint = check_certificate(exporter_cert)
    chosen = check_features(features)
    token = token or new_command_token()
    if len(token) < 32 or any(c.isspace() for c in token):
        raise EnrolmentError("the command token must be at least 32 characters without spaces")
    try:
        row = await db.fetchrow(
            """
            INSERT INTO agents (server_id, address, exporter_cert, exporter_fingerprint,
                                command_token, features, enrolled_by)
            VALUES ($1, $2, $3, $4, $5, $6, $7)
            ON CONFLICT (server_id) DO UPDATE SET
                address = EXCLUDED.address, exporter_cert = EXCLUDED.exporter_cert,
                exporter_fingerprint = EXCLUDED.exporter_fingerprint,
                command_token = EXCLUDED.command_token, features = EXCLUDED.features,
                enrolled_at = now(), enrolled_by = EXCLUDED.enrolled_by
            RETURNING *
            """,
            server_id,
            address,
            pem,
            fingerprint,
            key.seal(server_id, token),
            sorted(chosen),
            enrolled_by,
        )
    except asyncpg.ForeignKeyViolationError:
        raise EnrolmentError(f"no server with id {server_id}") from None
    assert row is not None
    return await _record(db, row, key)


async def revoke_agent(db: DB, server_id: int) -> bool:
    """Forget the enrolment (the exporter keeps refusing everyone until enrolled again).

    Callers holding an AgentPool should also `evict` the old target."""
    done = await db.execute("DELETE FROM agents WHERE server_id = $1", server_id)
    return bool(done.endswith(" 1"))


# ---------------------------------------------------------------- one-time enrolment tokens


async def create_enrolment_token(
    db: DB,
    server_id: int,
    features: Iterable[str],
    *,
    created_by: int | None,
    ttl: float = DEFAULT_ENROLMENT_TTL,
) -> EnrolmentToken:
    """A new one-time token for `server_id`; its secret is returned here and never again."""
    chosen = check_features(features)
    if not 0 < ttl <= MAX_ENROLMENT_TTL:
        raise EnrolmentError("an enrolment token lasts between a second and 7 days")
    secret = ENROLMENT_PREFIX + secrets.token_urlsafe(32)
    expires_at = datetime.now(UTC) + timedelta(seconds=ttl)
    try:
        row = await db.fetchrow(
            "INSERT INTO enrolment_tokens (token_hash, server_id, features, created_by,"
            " expires_at) VALUES ($1, $2, $3, $4, $5) RETURNING id",
            _hash(secret),
            server_id,
            sorted(chosen),
            created_by,
            expires_at,
        )
    except asyncpg.ForeignKeyViolationError:
        raise EnrolmentError(f"no server with id {server_id}") from None
    assert row is not None
    return EnrolmentToken(row["id"], server_id, chosen, expires_at, secret)


async def redeem_enrolment_token(
    pool: asyncpg.Pool,
    secret: str,
    key: TokenKey,
    *,
    exporter_cert: bytes | str,
    address: str,
    features: Iterable[str] | None = None,
) -> AgentRecord:
    """Use the one-time token `secret`: record the agent with its server and the token's
    features (only those also in `features`, what the exporter's owner agreed to, if given).

    In one transaction, so a refused enrolment changes nothing and a token works once even
    when two exporters race with it. TokenRefused (unknown, used, expired) or EnrolmentError
    (bad certificate, address, feature) says why it was refused."""
    pem, fingerprint = check_certificate(exporter_cert)
    address = check_address(address)
    agreed = check_features(features) if features is not None else None
    async with pool.acquire() as conn, conn.transaction():
        row = await conn.fetchrow(
            "UPDATE enrolment_tokens SET used_at = now(), used_by_fingerprint = $2"
            " WHERE token_hash = $1 AND used_at IS NULL AND expires_at > now()"
            " RETURNING server_id, features, created_by",
            _hash(secret.strip()),
            fingerprint,
        )
        if row is None:
            raise TokenRefused(await _why_refused(conn, secret))
        chosen = frozenset(row["features"])
        return await record_agent(
            conn,
            row["server_id"],
            key,
            address=address,
            exporter_cert=pem,
            features=chosen & agreed if agreed is not None else chosen,
            enrolled_by=row["created_by"],
        )


async def _why_refused(conn: asyncpg.Connection, secret: str) -> str:
    row = await conn.fetchrow(
        "SELECT used_at, expires_at <= now() AS expired FROM enrolment_tokens"
        " WHERE token_hash = $1",
        _hash(secret.strip()),
    )
    if row is None:
        return "unknown enrolment token: copy the command from the collector's add-server dialog"
    if row["used_at"] is not None:
        return "this enrolment token was already used: make a new one in the collector's UI"
    return "this enrolment token has expired: make a new one in the collector's UI"
