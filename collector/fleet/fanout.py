"""Fan-out: which servers a target or group means for a user, and running one job on each.

`resolve` turns a selector into the servers the user may reach. It reads only the user's
visible servers (collector/access.py `visible_server_ids`), so a server not granted behaves
exactly like one that does not exist, whether it is named by id, by name or through a group;
of a group, the servers not granted are only counted (`not_granted`), never named or run.

`fan_out` runs a per-server job at most `concurrency` at a time, each under its own deadline,
and merges what the jobs emit into one stream, in the order it happens. The stream is bounded:
a slow reader slows the jobs down (and through gRPC flow control, the exporters), it never
makes the collector buffer a fleet's output. A job that fails or passes its deadline becomes
that server's error result; the others go on.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass

import asyncpg

from vpsmon.collector.access import visible_server_ids
from vpsmon.collector.accounts import User

# Events buffered between the jobs and the reader.
QUEUE_SIZE = 256
MAX_SELECTOR_LENGTH = 200


class SelectorError(ValueError):
    """The selector names nothing the user may reach, or is ambiguous; the message says which."""


class TargetNotFound(SelectorError):
    pass


class AmbiguousTarget(SelectorError):
    pass


@dataclass(frozen=True, order=True)
class Server:
    name: str
    id: int


@dataclass(frozen=True)
class Plan:
    servers: tuple[Server, ...]
    not_granted: int = 0
    group: str | None = None  # set when the selector meant a group


@dataclass(frozen=True)
class Selector:
    """Exactly one of `target` (a server name or id, else a group name) and `group`."""

    target: str | None = None
    group: str | None = None

    def __post_init__(self) -> None:
        given = [v for v in (self.target, self.group) if v is not None]
        if len(given) != 1 or not given[0].strip():
            raise SelectorError("name one target (a server name or id) or one group")
        if len(given[0]) > MAX_SELECTOR_LENGTH:
            raise SelectorError(f"a target or group is at most {MAX_SELECTOR_LENGTH} characters")

    def describe(self) -> str:
        return f"group {self.group}" if self.group is not None else str(self.target)


async def _group(
    db: asyncpg.Pool | asyncpg.Connection, group: str, visible: frozenset[int] | None
) -> Plan:
    rows = await db.fetch(
        "SELECT id, name FROM servers WHERE group_name = $1 ORDER BY name, id", group
    )
    servers = tuple(Server(r["name"], r["id"]) for r in rows if _visible(visible, r["id"]))
    return Plan(servers, len(rows) - len(servers), group)


def _visible(visible: frozenset[int] | None, server_id: int) -> bool:
    return visible is None or server_id in visible


async def resolve(db: asyncpg.Pool | asyncpg.Connection, user: User, selector: Selector) -> Plan:
    """The servers `selector` reaches for `user`; TargetNotFound / AmbiguousTarget otherwise.

    A group of which the user may reach no server is "not found", like a group that does not
    exist, so group names cannot be probed either.
    """
    visible = await visible_server_ids(db, user)
    if selector.group is not None:
        plan = await _group(db, selector.group.strip(), visible)
        if not plan.servers:
            raise TargetNotFound(f"no group {selector.group.strip()!r} with servers of yours")
        return plan
    assert selector.target is not None
    target = selector.target.strip()
    if target.isdigit() and len(target) < 10:
        row = await db.fetchrow("SELECT id, name FROM servers WHERE id = $1", int(target))
        if row is None or not _visible(visible, row["id"]):
            raise TargetNotFound(f"no server {target!r}")
        return Plan((Server(row["name"], row["id"]),))
    rows = await db.fetch("SELECT id, name FROM servers WHERE name = $1 ORDER BY id", target)
    named = [Server(r["name"], r["id"]) for r in rows if _visible(visible, r["id"])]
    group = await _group(db, target, visible)
    if len(named) > 1:
        ids = ", ".join(str(s.id) for s in named)
        raise AmbiguousTarget(f"{len(named)} servers are named {target!r} (ids {ids}): use an id")
    if named and group.servers:
        raise AmbiguousTarget(
            f"{target!r} is a server (id {named[0].id}) and a group: use the id, or the group"
            " option"
        )
    if named:
        return Plan((named[0],))
    if group.servers:
        return group
    raise TargetNotFound(f"no server or group {target!r}")


# ---------------------------------------------------------------- running


@dataclass(frozen=True)
class Output:
    server: Server
    stream: str  # "stdout" or "stderr"
    data: bytes


@dataclass(frozen=True)
class Outcome:
    """How one server's job ended: an exit status, or an error (code and message)."""

    server: Server
    exit_code: int | None = None
    signal: int = 0
    timed_out: bool = False
    error: str = ""
    error_code: str = ""
    duration: float = 0.0

    @property
    def ok(self) -> bool:
        return not self.error and self.exit_code == 0 and not self.timed_out


@dataclass(frozen=True)
class Summary:
    servers: int
    succeeded: int
    failed: int
    errors: int
    not_granted: int
    duration: float


class JobError(Exception):
    """A job's failure with a status name for the result (e.g. NOT_ENROLLED, UNAVAILABLE)."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code


# A job: given its server and a function to emit output, returns the outcome (exit status).
Emit = Callable[[str, bytes], Awaitable[None]]
Job = Callable[[Server, Emit], Awaitable[Outcome]]


def summarize(outcomes: Sequence[Outcome], not_granted: int, duration: float) -> Summary:
    return Summary(
        servers=len(outcomes),
        succeeded=sum(1 for o in outcomes if o.ok),
        failed=sum(1 for o in outcomes if not o.ok and not o.error),
        errors=sum(1 for o in outcomes if o.error),
        not_granted=not_granted,
        duration=duration,
    )


async def fan_out(
    servers: Sequence[Server],
    job: Job,
    *,
    concurrency: int,
    server_timeout: float,
    clock: Callable[[], float] = time.monotonic,
) -> AsyncIterator[Output | Outcome]:
    """Run `job` on every server, `concurrency` at a time, each within `server_timeout` s.

    Yields Output events as the jobs emit them and one Outcome per server as each ends.
    Closing the iterator early (the client went away) cancels the jobs still running.
    """
    if concurrency < 1:
        raise ValueError("concurrency must be at least 1")
    queue: asyncio.Queue[Output | Outcome] = asyncio.Queue(QUEUE_SIZE)
    slots = asyncio.Semaphore(concurrency)

    async def one(server: Server) -> None:
        async with slots:
            started = clock()

            async def emit(stream: str, data: bytes) -> None:
                await queue.put(Output(server, stream, data))

            try:
                async with asyncio.timeout(server_timeout):
                    outcome = await job(server, emit)
            except TimeoutError:
                outcome = Outcome(
                    server,
                    error=f"no answer within {server_timeout:g} s",
                    error_code="DEADLINE_EXCEEDED",
                )
            except JobError as err:
                outcome = Outcome(server, error=str(err), error_code=err.code)
            except Exception as err:  # one server's failure must not stop the others
                outcome = Outcome(
                    server, error=str(err) or type(err).__name__, error_code="INTERNAL"
                )
            await queue.put(dataclasses.replace(outcome, duration=clock() - started))

    tasks = [asyncio.create_task(one(s), name=f"fan-out {s.id}") for s in servers]
    remaining = len(tasks)
    try:
        while remaining:
            event = await queue.get()
            if isinstance(event, Outcome):
                remaining -= 1
            yield event
    finally:
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
