"""agents.command_token encrypted at rest (sql/082, collector/fleet/tokenkey.py): against a real
PostgreSQL, the row holds no plaintext, a row written before 082 is sealed when first read, and
a replaced or missing key file is an error naming it, not a crash or a wrong token."""

from __future__ import annotations

from pathlib import Path

import asyncpg
import pytest

from tests.conftest import require_binary
from vpsmon.collector.fleet.agents import (
    agent_enrolment,
    agent_target,
    list_agents,
    record_agent,
)
from vpsmon.collector.fleet.tokenkey import TokenKey, TokenKeyError

TOKEN = "t" * 20 + "-legacy-plaintext-token-0123"


async def enrolled(pool: asyncpg.Pool, tmp_path: Path, key: TokenKey, name: str = "box") -> int:
    require_binary("openssl")
    from vpsmon.exporter.security import ensure_self_signed

    server_id: int = await pool.fetchval(
        "INSERT INTO servers (name, url) VALUES ($1, $2) RETURNING id",
        name,
        f"http://10.0.0.1:9190/{name}/metrics",
    )
    cert = ensure_self_signed(tmp_path / f"exporter-{name}").cert
    await record_agent(
        pool,
        server_id,
        key,
        address="10.0.0.1:9191",
        exporter_cert=cert.read_bytes(),
        features=["exec"],
        token=TOKEN,
    )
    return server_id


async def stored(pool: asyncpg.Pool, server_id: int) -> bytes:
    value: bytes = await pool.fetchval(
        "SELECT command_token FROM agents WHERE server_id = $1", server_id
    )
    return value


async def test_the_stored_token_is_sealed_and_reads_back(
    pool: asyncpg.Pool, tmp_path: Path
) -> None:
    key = TokenKey.in_data_dir(tmp_path / "data")
    server_id = await enrolled(pool, tmp_path, key)
    row = await stored(pool, server_id)
    assert row[:1] == b"\x01" and TOKEN.encode() not in row
    assert key.path == tmp_path / "data" / "command-token.key"
    assert key.path.stat().st_mode & 0o777 == 0o600 and len(key.path.read_bytes()) == 32
    record = await agent_target(pool, server_id, TokenKey.in_data_dir(tmp_path / "data"))
    assert record is not None and record.target.token == TOKEN


async def test_a_plaintext_row_from_before_082_is_sealed_when_first_read(
    pool: asyncpg.Pool, tmp_path: Path
) -> None:
    key = TokenKey.in_data_dir(tmp_path)
    first = await enrolled(pool, tmp_path, key, "one")
    second = await enrolled(pool, tmp_path, key, "two")
    # What 082's USING convert_to(...) leaves for a row recorded before it.
    await pool.execute("UPDATE agents SET command_token = convert_to($1, 'UTF8')", TOKEN)
    assert await stored(pool, first) == TOKEN.encode()

    record = await agent_target(pool, first, key)
    assert record is not None and record.target.token == TOKEN
    row = await stored(pool, first)
    assert row[:1] == b"\x01" and TOKEN.encode() not in row
    assert await stored(pool, second) == TOKEN.encode()  # not read yet

    records = await list_agents(pool, key)
    assert [r.target.token for r in records] == [TOKEN, TOKEN]
    assert (await stored(pool, second))[:1] == b"\x01"
    assert await stored(pool, first) == row  # a sealed row is not rewritten


async def test_a_replaced_key_file_is_an_error_naming_it(
    pool: asyncpg.Pool, tmp_path: Path
) -> None:
    key = TokenKey.in_data_dir(tmp_path)
    server_id = await enrolled(pool, tmp_path, key)
    key.path.unlink()  # lost: a new key is made, which does not open the old token
    with pytest.raises(TokenKeyError, match="does not decrypt with the key file") as err:
        await agent_target(pool, server_id, TokenKey.in_data_dir(tmp_path))
    assert str(tmp_path / "command-token.key") in str(err.value)
    assert f"server {server_id}" in str(err.value)
    shown = await agent_enrolment(pool, server_id)  # the pages that show or revoke it still work
    assert shown is not None and shown.features == {"exec"} and shown.target.token == ""

    key.path.write_bytes(b"short")
    with pytest.raises(TokenKeyError, match="holds 5 bytes"):
        await list_agents(pool, TokenKey.in_data_dir(tmp_path))


async def test_a_sealed_token_copied_to_another_server_does_not_open(
    pool: asyncpg.Pool, tmp_path: Path
) -> None:
    key = TokenKey.in_data_dir(tmp_path)
    first = await enrolled(pool, tmp_path, key, "one")
    second = await enrolled(pool, tmp_path, key, "two")
    await pool.execute(
        "UPDATE agents SET command_token = $2 WHERE server_id = $1",
        second,
        await stored(pool, first),
    )
    with pytest.raises(TokenKeyError, match=f"server {second} does not decrypt"):
        await agent_target(pool, second, key)
