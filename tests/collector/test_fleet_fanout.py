"""Fan-out core (issue #7 item 3): which servers a target or group means for a user, and
running a job on many servers at once with a concurrency limit and per-server timeouts."""

from __future__ import annotations

import asyncio

import asyncpg
import pytest

from vpsmon.collector.access import grant_group, grant_server
from vpsmon.collector.accounts import User, create_user
from vpsmon.collector.fleet.fanout import (
    AmbiguousTarget,
    Emit,
    JobError,
    Outcome,
    Output,
    Selector,
    SelectorError,
    Server,
    TargetNotFound,
    fan_out,
    resolve,
    summarize,
)


async def add_server(pool: asyncpg.Pool, name: str, group: str = "") -> int:
    server_id: int = await pool.fetchval(
        "INSERT INTO servers (name, url, group_name) VALUES ($1, $2, $3) RETURNING id",
        name,
        f"http://{name}-{group or 'none'}-{id(name)}.invalid:9190/metrics",
        group,
    )
    return server_id


@pytest.fixture
async def fleet(pool: asyncpg.Pool) -> dict[str, int]:
    return {
        "web1": await add_server(pool, "web1", "web"),
        "web2": await add_server(pool, "web2", "web"),
        "web3": await add_server(pool, "web3", "web"),
        "db1": await add_server(pool, "db1", "db"),
        "lonely": await add_server(pool, "lonely"),
    }


async def operator(pool: asyncpg.Pool, name: str = "op") -> User:
    return await create_user(pool, name, "a long password", "operator")


async def names(pool: asyncpg.Pool, user: User, **selector: str) -> list[str]:
    plan = await resolve(pool, user, Selector(**selector))
    return [s.name for s in plan.servers]


# ---------------------------------------------------------------- resolving


async def test_an_admin_reaches_a_server_by_name_by_id_and_a_whole_group(
    pool: asyncpg.Pool, fleet: dict[str, int]
) -> None:
    admin = await create_user(pool, "boss", "a long password", "admin")
    assert await names(pool, admin, target="db1") == ["db1"]
    assert await names(pool, admin, target=str(fleet["web2"])) == ["web2"]
    assert await names(pool, admin, target="web") == ["web1", "web2", "web3"]
    plan = await resolve(pool, admin, Selector(group="web"))
    assert (plan.group, plan.not_granted) == ("web", 0)


async def test_an_operator_reaches_only_granted_servers_by_id_name_or_group(
    pool: asyncpg.Pool, fleet: dict[str, int]
) -> None:
    user = await operator(pool)
    await grant_server(pool, user.id, fleet["web1"])
    assert await names(pool, user, target="web1") == ["web1"]
    for target in ("web2", str(fleet["web2"]), "db1", str(fleet["db1"]), "db"):
        with pytest.raises(TargetNotFound):
            await resolve(pool, user, Selector(target=target))
    # Fan-out: of the group only the granted server; the rest are counted, not named.
    plan = await resolve(pool, user, Selector(group="web"))
    assert [s.name for s in plan.servers] == ["web1"]
    assert plan.not_granted == 2


async def test_a_group_of_which_nothing_is_granted_is_not_found_like_a_missing_group(
    pool: asyncpg.Pool, fleet: dict[str, int]
) -> None:
    user = await operator(pool)
    await grant_server(pool, user.id, fleet["web1"])
    with pytest.raises(TargetNotFound) as granted_none:
        await resolve(pool, user, Selector(group="db"))
    with pytest.raises(TargetNotFound) as missing:
        await resolve(pool, user, Selector(group="nope"))
    assert str(granted_none.value).replace("db", "X") == str(missing.value).replace("nope", "X")


async def test_a_group_grant_covers_servers_added_to_the_group_later(
    pool: asyncpg.Pool, fleet: dict[str, int]
) -> None:
    user = await operator(pool)
    await grant_group(pool, user.id, "db")
    await add_server(pool, "db2", "db")
    assert await names(pool, user, group="db") == ["db1", "db2"]


async def test_a_name_shared_by_servers_or_by_a_server_and_a_group_is_ambiguous(
    pool: asyncpg.Pool, fleet: dict[str, int]
) -> None:
    admin = await create_user(pool, "boss", "a long password", "admin")
    await add_server(pool, "db1", "other")
    with pytest.raises(AmbiguousTarget, match="use an id"):
        await resolve(pool, admin, Selector(target="db1"))
    await add_server(pool, "web", "")
    with pytest.raises(AmbiguousTarget, match="a server .* and a group"):
        await resolve(pool, admin, Selector(target="web"))
    assert await names(pool, admin, group="web") == ["web1", "web2", "web3"]


async def test_servers_not_granted_never_make_a_name_ambiguous(
    pool: asyncpg.Pool, fleet: dict[str, int]
) -> None:
    user = await operator(pool)
    await grant_server(pool, user.id, fleet["db1"])
    await add_server(pool, "db1", "other")  # same name, not granted: invisible
    assert await names(pool, user, target="db1") == ["db1"]


async def test_a_disabled_user_reaches_nothing(pool: asyncpg.Pool, fleet: dict[str, int]) -> None:
    admin = await create_user(pool, "boss", "a long password", "admin")
    await pool.execute("UPDATE users SET disabled = true WHERE id = $1", admin.id)
    with pytest.raises(TargetNotFound):
        await resolve(pool, admin, Selector(target="db1"))


def test_a_selector_needs_exactly_one_target_or_group() -> None:
    for bad in ({}, {"target": "a", "group": "b"}, {"target": " "}, {"group": "x" * 201}):
        with pytest.raises(SelectorError):
            Selector(**bad)


# ---------------------------------------------------------------- running


SERVERS = [Server(f"s{i}", i) for i in range(1, 9)]


async def collect(**kwargs: object) -> list[Output | Outcome]:
    return [event async for event in fan_out(**kwargs)]  # type: ignore[arg-type]


async def test_every_server_runs_once_and_ends_with_its_own_outcome_after_its_output() -> None:
    async def job(server: Server, emit: Emit) -> Outcome:
        await emit("stdout", f"hello from {server.name}\n".encode())
        await emit("stderr", b"warn\n")
        return Outcome(server, exit_code=server.id % 2)

    events = await collect(servers=SERVERS, job=job, concurrency=3, server_timeout=10)
    outcomes = [e for e in events if isinstance(e, Outcome)]
    assert sorted(o.server.id for o in outcomes) == [s.id for s in SERVERS]
    for server in SERVERS:
        mine = [e for e in events if e.server == server]
        assert isinstance(mine[-1], Outcome) and len(mine) == 3
        assert mine[0] == Output(server, "stdout", f"hello from {server.name}\n".encode())
    summary = summarize(outcomes, not_granted=2, duration=1.0)
    assert (summary.servers, summary.succeeded, summary.failed, summary.errors) == (8, 4, 4, 0)
    assert summary.not_granted == 2


async def test_no_more_than_the_concurrency_limit_run_at_once() -> None:
    running, peak = 0, 0

    async def job(server: Server, emit: Emit) -> Outcome:
        nonlocal running, peak
        running += 1
        peak = max(peak, running)
        await asyncio.sleep(0.02)
        running -= 1
        return Outcome(server, exit_code=0)

    await collect(servers=SERVERS, job=job, concurrency=3, server_timeout=10)
    assert peak == 3
    await collect(servers=SERVERS, job=job, concurrency=1, server_timeout=10)
    assert peak == 3  # never above the earlier peak with a limit of one


async def test_a_hanging_or_failing_server_gets_an_error_and_the_others_finish() -> None:
    async def job(server: Server, emit: Emit) -> Outcome:
        if server.id == 1:
            await asyncio.Event().wait()  # never answers
        if server.id == 2:
            raise JobError("UNAVAILABLE", "connection refused")
        if server.id == 3:
            raise RuntimeError("boom")
        return Outcome(server, exit_code=0)

    events = await collect(servers=SERVERS[:4], job=job, concurrency=4, server_timeout=0.2)
    by_id = {e.server.id: e for e in events if isinstance(e, Outcome)}
    assert by_id[1].error_code == "DEADLINE_EXCEEDED" and "0.2 s" in by_id[1].error
    assert (by_id[2].error_code, by_id[2].error) == ("UNAVAILABLE", "connection refused")
    assert (by_id[3].error_code, by_id[3].error) == ("INTERNAL", "boom")
    assert by_id[4].ok and not by_id[1].ok
    summary = summarize(list(by_id.values()), 0, 0.0)
    assert (summary.succeeded, summary.failed, summary.errors) == (1, 0, 3)


async def test_closing_the_stream_early_cancels_the_jobs_still_running() -> None:
    cancelled: list[int] = []

    async def job(server: Server, emit: Emit) -> Outcome:
        try:
            await emit("stdout", b"x")
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            cancelled.append(server.id)
            raise
        return Outcome(server, exit_code=0)

    stream = fan_out(SERVERS, job, concurrency=8, server_timeout=10)
    first = await anext(stream)
    assert isinstance(first, Output)
    await stream.aclose()  # type: ignore[attr-defined]
    assert sorted(cancelled) == [s.id for s in SERVERS]


async def test_a_slow_reader_holds_the_jobs_back_instead_of_buffering_everything() -> None:
    emitted = 0

    async def job(server: Server, emit: Emit) -> Outcome:
        nonlocal emitted
        for _ in range(10_000):
            await emit("stdout", b"y")
            emitted += 1
        return Outcome(server, exit_code=0)

    stream = fan_out(SERVERS[:2], job, concurrency=2, server_timeout=10)
    await anext(stream)
    await asyncio.sleep(0.05)
    assert emitted < 1_000  # bounded by the queue, not by the output
    await stream.aclose()  # type: ignore[attr-defined]
