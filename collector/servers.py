"""Server records: what the UI lists and edits, and what the collector scrapes.

A record holds the scrape address (kept as one URL in ``servers.url``, which the scrape loop
reads, and as address/port/scheme/path for the edit form), grouping (group, tags, labels) and
what VPS owners track: provider, location, price and billing cycle, expiry, notes, route, and
the monthly traffic plan (collector/traffic.py).

`validate` turns untrusted input (a JSON body or a form) into a `ServerInput` or a list of
`FieldError`s; nothing is written unless every field is valid.
"""

from __future__ import annotations

import ipaddress
import json
import re
import urllib.parse
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass
from dataclasses import field as dc_field
from datetime import date
from decimal import Decimal, InvalidOperation
from typing import Any

import asyncpg

from vpsmon.collector.config import StaticTarget
from vpsmon.collector.scrape.target import Target, parse_fingerprint
from vpsmon.config import parse_duration

BILLING_CYCLES = ("monthly", "quarterly", "semiannual", "yearly", "biennial", "triennial", "once")
TRAFFIC_MODES = ("in", "out", "sum", "max")
DEFAULT_METRICS_PORT = 9190
# Prometheus label names (https://prometheus.io/docs/concepts/data_model/); names starting
# with __ are reserved, and job/instance are set by the collector.
LABEL_NAME = re.compile(r"[a-zA-Z_][a-zA-Z0-9_]*")
RESERVED_LABELS = {"job", "instance"}
HOSTNAME = re.compile(r"(?=.{1,253}\Z)([A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?\.?)+", re.ASCII)

_COLUMNS = (
    "id, name, url, group_name, tags, labels, address, metrics_port, command_port, scheme,"
    " metrics_path, provider, country_code, region, purchase_url, price, currency,"
    " billing_cycle, expires_on, notes, route, public, traffic_quota_bytes,"
    " traffic_reset_day, traffic_mode, extract(epoch FROM last_seen_at) AS last_seen,"
    " scrape_interval, scrape_timeout, tls_fingerprint, bearer_token IS NOT NULL AS has_token"
)
# Longest per-server scrape interval accepted (Prometheus allows any; a day is plenty).
MAX_SCRAPE_INTERVAL = 86400.0
# Marks "leave the stored bearer token as it is" (a form left empty, a JSON body without it).
KEEP = "\x00keep"


@dataclass(frozen=True)
class Server:
    id: int
    name: str
    url: str
    group_name: str = ""
    tags: tuple[str, ...] = ()
    labels: Mapping[str, str] = dc_field(default_factory=dict)
    address: str = ""
    metrics_port: int | None = None
    command_port: int | None = None
    scheme: str = "http"
    metrics_path: str = "/metrics"
    provider: str = ""
    country_code: str = ""
    region: str = ""
    purchase_url: str = ""
    price: Decimal | None = None
    currency: str = ""
    billing_cycle: str = ""
    expires_on: date | None = None
    notes: str = ""
    route: str = ""
    public: bool = False
    traffic_quota_bytes: int | None = None
    traffic_reset_day: int = 1
    traffic_mode: str = "sum"
    last_seen: float | None = None
    # Scrape settings of the metrics endpoint (sql/020); None: the collector's defaults.
    scrape_interval: float | None = None
    scrape_timeout: float | None = None
    tls_fingerprint: str | None = None
    has_bearer_token: bool = False  # the token itself is never read back out

    def as_json(self) -> dict[str, Any]:
        address, port, scheme, path = self.scrape_parts()
        return {
            "id": self.id,
            "name": self.name,
            "url": self.url,
            "address": address,
            "metrics_port": port,
            "command_port": self.command_port,
            "scheme": scheme,
            "metrics_path": path,
            "group": self.group_name,
            "tags": list(self.tags),
            "labels": dict(self.labels),
            "provider": self.provider,
            "country_code": self.country_code,
            "region": self.region,
            "purchase_url": self.purchase_url,
            "price": str(self.price) if self.price is not None else None,
            "currency": self.currency,
            "billing_cycle": self.billing_cycle,
            "expires_on": self.expires_on.isoformat() if self.expires_on else None,
            "notes": self.notes,
            "route": self.route,
            "public": self.public,
            "traffic_quota_bytes": self.traffic_quota_bytes,
            "traffic_reset_day": self.traffic_reset_day,
            "traffic_mode": self.traffic_mode,
            "last_seen": self.last_seen,
            "scrape_interval": self.scrape_interval,
            "scrape_timeout": self.scrape_timeout,
            "tls_fingerprint": self.tls_fingerprint,
            "bearer_token_set": self.has_bearer_token,
        }

    def scrape_parts(self) -> tuple[str, int, str, str]:
        """address, port, scheme, path: stored ones, or read from the URL (static targets)."""
        if self.address:
            return (
                self.address,
                self.metrics_port or DEFAULT_METRICS_PORT,
                self.scheme,
                self.metrics_path,
            )
        parts = urllib.parse.urlsplit(self.url)
        port = parts.port or (443 if parts.scheme == "https" else 80)
        return parts.hostname or "", port, parts.scheme or "http", parts.path or "/metrics"


@dataclass(frozen=True)
class FieldError:
    """``code`` is a message key (web/messages/dashboard.yml) taking ``params``."""

    field: str
    code: str
    params: Mapping[str, Any] = dc_field(default_factory=dict)


class InvalidServer(ValueError):
    def __init__(self, errors: list[FieldError]) -> None:
        super().__init__("; ".join(f"{e.field}: {e.code}" for e in errors))
        self.errors = errors


@dataclass(frozen=True)
class ServerInput:
    """A validated record, ready to store."""

    name: str
    address: str
    metrics_port: int
    command_port: int | None
    scheme: str
    metrics_path: str
    group_name: str
    tags: tuple[str, ...]
    labels: Mapping[str, str]
    provider: str
    country_code: str
    region: str
    purchase_url: str
    price: Decimal | None
    currency: str
    billing_cycle: str
    expires_on: date | None
    notes: str
    route: str
    public: bool
    traffic_quota_bytes: int | None
    traffic_reset_day: int
    traffic_mode: str
    scrape_interval: float | None = None
    scrape_timeout: float | None = None
    tls_fingerprint: str | None = None
    # A new token, None to remove it, or KEEP (the stored one, if any, stays).
    bearer_token: str | None = KEEP

    @property
    def url(self) -> str:
        host = f"[{self.address}]" if ":" in self.address else self.address
        return f"{self.scheme}://{host}:{self.metrics_port}{self.metrics_path}"


class _Checker:
    def __init__(self, data: Mapping[str, Any]) -> None:
        self.data = data
        self.errors: list[FieldError] = []

    def fail(self, field_name: str, code: str, /, **params: Any) -> None:
        self.errors.append(FieldError(field_name, code, params))

    def text(self, name: str, max_len: int, *, required: bool = False, default: str = "") -> str:
        value = self.data.get(name, default)
        if value is None:
            value = default
        if not isinstance(value, str):
            self.fail(name, "server.err.type_text")
            return default
        value = value.strip()
        if "\x00" in value:
            self.fail(name, "server.err.control")
            return default
        if required and not value:
            self.fail(name, "server.err.required")
        elif len(value) > max_len:
            self.fail(name, "server.err.too_long", max=max_len)
        return value

    def integer(self, name: str, low: int, high: int, *, default: int | None = None) -> int | None:
        value = self.data.get(name, default)
        if value is None or value == "":
            return default
        if isinstance(value, bool):
            self.fail(name, "server.err.integer", low=low, high=high)
            return default
        try:
            number = int(value) if isinstance(value, str | int) else None
        except ValueError:
            number = None
        if number is None or not low <= number <= high:
            self.fail(name, "server.err.integer", low=low, high=high)
            return default
        return number

    def choice(self, name: str, options: Iterable[str], default: str) -> str:
        value = self.data.get(name, default)
        if value is None or value == "":
            return default
        options = tuple(options)
        if value not in options:
            self.fail(name, "server.err.choice", options=", ".join(o for o in options if o))
            return default
        return str(value)


def _check_address(c: _Checker) -> str:
    address = c.text("address", 253, required=True)
    if not address:
        return address
    candidate = address[1:-1] if address.startswith("[") and address.endswith("]") else address
    try:
        return str(ipaddress.ip_address(candidate))
    except ValueError:
        pass
    if not HOSTNAME.fullmatch(candidate) or candidate.replace(".", "").isdigit():
        c.fail("address", "server.err.address")
    return candidate


def _check_tags(c: _Checker) -> tuple[str, ...]:
    raw = c.data.get("tags", [])
    if raw is None:
        raw = []
    if isinstance(raw, str):  # the form: comma separated
        raw = [part for part in raw.split(",")]
    if not isinstance(raw, list) or not all(isinstance(t, str) for t in raw):
        c.fail("tags", "server.err.tags")
        return ()
    tags: list[str] = []
    for tag in (t.strip() for t in raw):
        if not tag or tag in tags:
            continue
        if len(tag) > 40 or "," in tag or "\x00" in tag:
            c.fail("tags", "server.err.tag", tag=tag[:40])
            return ()
        tags.append(tag)
    if len(tags) > 20:
        c.fail("tags", "server.err.too_many", max=20)
        return ()
    return tuple(tags)


def _check_labels(c: _Checker) -> dict[str, str]:
    raw = c.data.get("labels", {})
    if raw is None:
        raw = {}
    if isinstance(raw, str):  # the form: one name=value per line
        parsed: dict[str, Any] = {}
        for number, line in enumerate(raw.splitlines(), 1):
            if not line.strip():
                continue
            name, sep, value = line.partition("=")
            if not sep:
                c.fail("labels", "server.err.label_line", line=number)
                return {}
            parsed[name.strip()] = value.strip()
        raw = parsed
    if not isinstance(raw, Mapping):
        c.fail("labels", "server.err.labels")
        return {}
    labels: dict[str, str] = {}
    for name, value in raw.items():
        if not isinstance(name, str) or not isinstance(value, str):
            c.fail("labels", "server.err.labels")
            return {}
        if not LABEL_NAME.fullmatch(name) or name.startswith("__") or name in RESERVED_LABELS:
            c.fail("labels", "server.err.label_name", name=name[:60])
            return {}
        if len(value) > 200 or "\x00" in value:
            c.fail("labels", "server.err.too_long", max=200)
            return {}
        labels[name] = value
    if len(labels) > 30:
        c.fail("labels", "server.err.too_many", max=30)
    return labels


def _check_price(c: _Checker) -> Decimal | None:
    value = c.data.get("price")
    if value is None or value == "":
        return None
    if isinstance(value, bool) or not isinstance(value, str | int | float):
        c.fail("price", "server.err.price")
        return None
    try:
        price = Decimal(str(value).strip())
    except InvalidOperation:
        c.fail("price", "server.err.price")
        return None
    if not price.is_finite() or price < 0 or price >= Decimal("1e10"):
        c.fail("price", "server.err.price")
        return None
    return price.quantize(Decimal("0.01"))


def _check_date(c: _Checker, name: str) -> date | None:
    value = c.data.get(name)
    if value is None or value == "":
        return None
    try:
        if not isinstance(value, str):
            raise ValueError
        return date.fromisoformat(value.strip())
    except ValueError:
        c.fail(name, "server.err.date")
        return None


def _check_bool(c: _Checker, name: str) -> bool:
    value = c.data.get(name, False)
    if isinstance(value, bool):
        return value
    if value in ("on", "true", "1", 1):
        return True
    if value in ("", "off", "false", "0", 0, None):
        return False
    c.fail(name, "server.err.boolean")
    return False


def _check_duration(c: _Checker, name: str) -> float | None:
    value = c.data.get(name)
    if value is None or value == "":
        return None
    try:
        seconds = parse_duration(value)
    except ValueError:
        c.fail(name, "server.err.duration")
        return None
    if seconds > MAX_SCRAPE_INTERVAL:
        c.fail(name, "server.err.duration")
        return None
    return seconds


def _check_fingerprint(c: _Checker, scheme: str) -> str | None:
    value = c.data.get("tls_fingerprint")
    if value is None or value == "":
        return None
    if not isinstance(value, str):
        c.fail("tls_fingerprint", "server.err.fingerprint")
        return None
    try:
        fingerprint = parse_fingerprint(value)
    except ValueError:
        c.fail("tls_fingerprint", "server.err.fingerprint")
        return None
    if scheme != "https":
        c.fail("tls_fingerprint", "server.err.fingerprint_https")
    return fingerprint


def _check_token(c: _Checker) -> str | None:
    if "bearer_token" not in c.data:
        return KEEP
    value = c.data["bearer_token"]
    if value is None:
        return None
    if not isinstance(value, str):
        c.fail("bearer_token", "server.err.token")
        return KEEP
    value = value.strip()
    if not value:
        return KEEP
    if len(value) > 4096 or any(ch in value for ch in "\r\n\x00"):
        c.fail("bearer_token", "server.err.token")
        return KEEP
    return value


def validate(data: Mapping[str, Any]) -> ServerInput:
    """Check every field of ``data`` (JSON names); raise `InvalidServer` listing all errors."""
    c = _Checker(data)
    unknown = sorted(set(data) - set(ServerInput.__dataclass_fields__) - _ALIASES)
    for name in unknown:
        c.fail(name, "server.err.unknown")
    name = c.text("name", 200, required=True)
    address = _check_address(c)
    scheme = c.choice("scheme", ("http", "https"), "http")
    metrics_port = c.integer("metrics_port", 1, 65535, default=DEFAULT_METRICS_PORT)
    command_port = c.integer("command_port", 1, 65535)
    path = c.text("metrics_path", 200, default="/metrics") or "/metrics"
    if not path.startswith("/") or any(ch.isspace() or ch in "?#" for ch in path):
        c.fail("metrics_path", "server.err.path")
    group = c.text("group", 100)
    tags = _check_tags(c)
    labels = _check_labels(c)
    provider = c.text("provider", 100)
    country = c.text("country_code", 2).upper()
    if country and not re.fullmatch(r"[A-Z]{2}", country):
        c.fail("country_code", "server.err.country")
    region = c.text("region", 100)
    purchase_url = c.text("purchase_url", 2000)
    if purchase_url:
        parts = urllib.parse.urlsplit(purchase_url)
        if parts.scheme not in ("http", "https") or not parts.netloc:
            c.fail("purchase_url", "server.err.link")
    price = _check_price(c)
    currency = c.text("currency", 3).upper()
    if currency and not re.fullmatch(r"[A-Z]{3}", currency):
        c.fail("currency", "server.err.currency")
    cycle = c.choice("billing_cycle", ("", *BILLING_CYCLES), "")
    expires = _check_date(c, "expires_on")
    notes = c.text("notes", 5000)
    route = c.text("route", 200)
    public = _check_bool(c, "public")
    quota = c.integer("traffic_quota_bytes", 1, 2**62)
    if "traffic_quota_gib" in data and data["traffic_quota_gib"] not in (None, ""):
        gib = data["traffic_quota_gib"]
        try:
            amount = Decimal(str(gib).strip())
            if not amount.is_finite() or amount <= 0 or amount > 10**9:
                raise InvalidOperation
            quota = int(amount * 2**30)
        except InvalidOperation:
            c.fail("traffic_quota_gib", "server.err.quota")
    reset_day = c.integer("traffic_reset_day", 1, 31, default=1)
    mode = c.choice("traffic_mode", TRAFFIC_MODES, "sum")
    interval = _check_duration(c, "scrape_interval")
    timeout = _check_duration(c, "scrape_timeout")
    if timeout is not None and interval is not None and timeout > interval:
        c.fail("scrape_timeout", "server.err.timeout")
    fingerprint = _check_fingerprint(c, scheme)
    token = _check_token(c)
    if c.errors:
        raise InvalidServer(c.errors)
    return ServerInput(
        name=name,
        address=address,
        metrics_port=metrics_port or DEFAULT_METRICS_PORT,
        command_port=command_port,
        scheme=scheme,
        metrics_path=path,
        group_name=group,
        tags=tags,
        labels=labels,
        provider=provider,
        country_code=country,
        region=region,
        purchase_url=purchase_url,
        price=price,
        currency=currency,
        billing_cycle=cycle,
        expires_on=expires,
        notes=notes,
        route=route,
        public=public,
        traffic_quota_bytes=quota,
        traffic_reset_day=reset_day or 1,
        traffic_mode=mode,
        scrape_interval=interval,
        scrape_timeout=timeout,
        tls_fingerprint=fingerprint,
        bearer_token=token,
    )


# Input names that are not stored columns: "group" is group_name in the table; the form sends
# the quota in GiB.
_ALIASES = {"group", "traffic_quota_gib"}


def input_fields(server: Server) -> dict[str, Any]:
    """A stored record as validate() input: a partial update starts from this."""
    out = server.as_json()
    for key in ("id", "url", "last_seen", "bearer_token_set"):
        out.pop(key)
    return out


def _row(row: asyncpg.Record) -> Server:
    return Server(
        id=row["id"],
        name=row["name"],
        url=row["url"],
        group_name=row["group_name"],
        tags=tuple(row["tags"]),
        labels=json.loads(row["labels"]),
        address=row["address"],
        metrics_port=row["metrics_port"],
        command_port=row["command_port"],
        scheme=row["scheme"],
        metrics_path=row["metrics_path"],
        provider=row["provider"],
        country_code=row["country_code"],
        region=row["region"],
        purchase_url=row["purchase_url"],
        price=row["price"],
        currency=row["currency"],
        billing_cycle=row["billing_cycle"],
        expires_on=row["expires_on"],
        notes=row["notes"],
        route=row["route"],
        public=row["public"],
        traffic_quota_bytes=row["traffic_quota_bytes"],
        traffic_reset_day=row["traffic_reset_day"],
        traffic_mode=row["traffic_mode"],
        last_seen=float(row["last_seen"]) if row["last_seen"] is not None else None,
        scrape_interval=row["scrape_interval"],
        scrape_timeout=row["scrape_timeout"],
        tls_fingerprint=row["tls_fingerprint"],
        has_bearer_token=row["has_token"],
    )


async def list_servers(pool: asyncpg.Pool, ids: Iterable[int] | None = None) -> list[Server]:
    """Every server (or those in ``ids``), by name."""
    if ids is None:
        rows = await pool.fetch(f"SELECT {_COLUMNS} FROM servers ORDER BY name, id")  # noqa: S608 (constant column lists)
    else:
        rows = await pool.fetch(
            f"SELECT {_COLUMNS} FROM servers WHERE id = ANY($1::int[]) ORDER BY name, id",  # noqa: S608 (constant column lists)
            list(ids),
        )
    return [_row(r) for r in rows]


async def get_server(pool: asyncpg.Pool, server_id: int) -> Server | None:
    row = await pool.fetchrow(f"SELECT {_COLUMNS} FROM servers WHERE id = $1", server_id)  # noqa: S608 (constant column lists)
    return _row(row) if row else None


def _values(record: ServerInput) -> list[Any]:
    d = asdict(record)
    return [
        d["name"],
        record.url,
        d["group_name"],
        list(d["tags"]),
        json.dumps(d["labels"]),
        d["address"],
        d["metrics_port"],
        d["command_port"],
        d["scheme"],
        d["metrics_path"],
        d["provider"],
        d["country_code"],
        d["region"],
        d["purchase_url"],
        d["price"],
        d["currency"],
        d["billing_cycle"],
        d["expires_on"],
        d["notes"],
        d["route"],
        d["public"],
        d["traffic_quota_bytes"],
        d["traffic_reset_day"],
        d["traffic_mode"],
        d["scrape_interval"],
        d["scrape_timeout"],
        d["tls_fingerprint"],
    ]


_WRITE_COLUMNS = (
    "name, url, group_name, tags, labels, address, metrics_port, command_port, scheme,"
    " metrics_path, provider, country_code, region, purchase_url, price, currency,"
    " billing_cycle, expires_on, notes, route, public, traffic_quota_bytes,"
    " traffic_reset_day, traffic_mode, scrape_interval, scrape_timeout, tls_fingerprint"
)
_PLACEHOLDERS = ", ".join(
    f"${i}::jsonb" if i == 5 else f"${i}" for i in range(1, _WRITE_COLUMNS.count(",") + 2)
)


def _duplicate() -> InvalidServer:
    return InvalidServer([FieldError("address", "server.err.duplicate")])


async def create_server(pool: asyncpg.Pool, record: ServerInput) -> Server:
    token = None if record.bearer_token == KEEP else record.bearer_token
    try:
        async with pool.acquire() as conn, conn.transaction():
            row = await conn.fetchrow(
                f"INSERT INTO servers ({_WRITE_COLUMNS}) VALUES ({_PLACEHOLDERS}) RETURNING id",  # noqa: S608 (constant column lists)
                *_values(record),
            )
            await conn.execute(
                "UPDATE servers SET bearer_token = $2 WHERE id = $1", row["id"], token
            )
    except asyncpg.UniqueViolationError:
        raise _duplicate() from None
    server = await get_server(pool, row["id"])
    assert server is not None
    return server


async def update_server(pool: asyncpg.Pool, server_id: int, record: ServerInput) -> Server | None:
    sets = ", ".join(
        f"{col.strip()} = ${i}" + ("::jsonb" if i == 5 else "")
        for i, col in enumerate(_WRITE_COLUMNS.split(","), 1)
    )
    n = _WRITE_COLUMNS.count(",") + 2
    try:
        async with pool.acquire() as conn, conn.transaction():
            row = await conn.fetchrow(
                f"UPDATE servers SET {sets}, updated_at = now() WHERE id = ${n} RETURNING id",  # noqa: S608 (constant column lists)
                *_values(record),
                server_id,
            )
            if row is not None and record.bearer_token != KEEP:
                await conn.execute(
                    "UPDATE servers SET bearer_token = $2 WHERE id = $1",
                    server_id,
                    record.bearer_token,
                )
    except asyncpg.UniqueViolationError:
        raise _duplicate() from None
    return await get_server(pool, server_id) if row else None


async def delete_server(pool: asyncpg.Pool, server_id: int) -> bool:
    """Delete the record; its series rows go with it (ON DELETE CASCADE), samples age out."""
    async with pool.acquire() as conn, conn.transaction():
        deleted = await conn.fetchval("DELETE FROM servers WHERE id = $1 RETURNING id", server_id)
    return deleted is not None


async def upsert_static(pool: asyncpg.Pool, targets: Iterable[StaticTarget]) -> None:
    """Static targets from collector.yml become server records (matched by URL)."""
    async with pool.acquire() as conn, conn.transaction():
        for t in targets:
            await conn.execute(
                "INSERT INTO servers (name, url, labels) VALUES ($1, $2, $3::jsonb)"
                " ON CONFLICT (url) DO UPDATE SET name = EXCLUDED.name, labels = EXCLUDED.labels",
                t.name,
                t.url,
                json.dumps(dict(t.labels)),
            )


def to_targets(servers: Iterable[Server], interval: float, timeout: float) -> list[Target]:
    return [Target(s.id, s.name, s.url, interval, timeout, dict(s.labels)) for s in servers]
