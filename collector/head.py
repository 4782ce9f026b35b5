"""The head: the most recent scrapes of every server, in memory, for the live view.

Bounded by construction: two snapshots per server (the latest and the one before, so rates
can be computed). Issue #4 grows this into a recent window of every series for rules.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from vpsmon.collector.scrape.loop import ScrapeResult
from vpsmon.collector.scrape.target import Labels


@dataclass(frozen=True, slots=True)
class Snapshot:
    timestamp: float
    values: dict[tuple[str, Labels], float] = field(default_factory=dict)

    def get(self, name: str, **labels: str) -> float | None:
        want = tuple(sorted(labels.items()))
        return self.values.get((name, want))

    def matching(self, name: str) -> list[tuple[Labels, float]]:
        return [(lbl, v) for (n, lbl), v in self.values.items() if n == name]


@dataclass(slots=True)
class ServerState:
    server_id: int
    up: bool = False
    last_scrape: float | None = None
    last_seen: float | None = None
    error: str | None = None
    current: Snapshot | None = None
    previous: Snapshot | None = None


class Head:
    def __init__(self) -> None:
        self._servers: dict[int, ServerState] = {}
        self._listeners: list[Callable[[ServerState], None]] = []

    def subscribe(self, listener: Callable[[ServerState], None]) -> None:
        self._listeners.append(listener)

    def state(self, server_id: int) -> ServerState | None:
        return self._servers.get(server_id)

    def forget(self, server_id: int) -> None:
        self._servers.pop(server_id, None)

    async def append(self, result: ScrapeResult) -> None:
        sid = result.target.server_id
        state = self._servers.get(sid) or ServerState(sid)
        self._servers[sid] = state
        state.last_scrape = result.timestamp
        state.up = result.up
        state.error = result.error
        if result.up:
            state.last_seen = result.timestamp
            values = {(s.name, s.labels): s.value for s in result.samples}
            # An exporter serves the same pre-rendered payload until its next collection; a
            # scrape that sees it again is not a new point for rates, so keep the pair.
            if state.current is None or state.current.values != values:
                state.previous = state.current
                state.current = Snapshot(result.timestamp, values)
        for listener in self._listeners:
            listener(state)
