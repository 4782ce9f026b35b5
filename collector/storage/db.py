"""Connecting to PostgreSQL with errors a person can act on."""

from __future__ import annotations

import asyncio
import re
from typing import Any

import asyncpg


class DatabaseUnavailable(Exception):
    """The database could not be reached; the message names the (redacted) URL and the reason."""


def redact(url: str) -> str:
    """postgresql://user:secret@host/db → postgresql://user:***@host/db."""
    return re.sub(r"(://[^:/@]+):[^@]*@", r"\1:***@", url)


async def connect_pool(
    url: str, *, min_size: int = 1, max_size: int = 8, connect_timeout: float = 10.0
) -> asyncpg.Pool:
    try:
        pool = await asyncpg.create_pool(
            url, min_size=min_size, max_size=max_size, timeout=connect_timeout, command_timeout=60
        )
    except (TimeoutError, OSError, asyncpg.PostgresError, ValueError) as err:
        raise DatabaseUnavailable(
            f"cannot connect to database {redact(url)}: {_reason(err)}"
        ) from err
    except asyncpg.InterfaceError as err:
        raise DatabaseUnavailable(f"cannot connect to database {redact(url)}: {err}") from err
    assert pool is not None
    return pool


def _reason(err: BaseException) -> str:
    if isinstance(err, asyncio.TimeoutError):
        return "timed out"
    text = str(err) or type(err).__name__
    return text.splitlines()[0]


async def fetch_one(pool: asyncpg.Pool, query: str, *args: Any) -> asyncpg.Record | None:
    async with pool.acquire() as conn:
        row: asyncpg.Record | None = await conn.fetchrow(query, *args)
        return row
