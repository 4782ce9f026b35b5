"""The head: the most recent scrapes of every server, in memory.

Two parts, both bounded:
- per server, the latest two snapshots (so the live view can compute rates) and the state of
  the last scrape: `ServerState`, for the overview and its WebSocket;
- `RecentSamples`: every series' samples of the last `window` seconds, which the storage
  reader (collector/storage/reader.py) serves recent queries from (rules, the Prometheus API,
  live charts) without asking the database.
"""

from __future__ import annotations

import bisect
import math
import struct
from array import array
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from vpsmon.collector.scrape.loop import ScrapeResult
from vpsmon.collector.scrape.target import Labels
from vpsmon.collector.storage.query import Matcher
from vpsmon.collector.storage.reader import SeriesRef
from vpsmon.collector.storage.writer import merge_labels

# A NaN with a payload of our own marks "this series was not in that scrape" in a row of the
# window; it is neither Prometheus' staleness marker nor the NaN a target may send.
_ABSENT_BITS = 0x7FF4000000A85E17
_ABSENT: float = struct.unpack("<d", struct.pack("<Q", _ABSENT_BITS))[0]


def _absent(value: float) -> bool:
    return math.isnan(value) and struct.pack("<d", value) == struct.pack("<d", _ABSENT)


DEFAULT_WINDOW = 600.0


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


class _ServerWindow:
    """One server's recent scrapes: a row of values per scrape, a column per series."""

    __slots__ = ("server_id", "columns", "keys", "labels", "times", "rows", "appends")

    def __init__(self, server_id: int) -> None:
        self.server_id = server_id
        self.columns: dict[tuple[str, Labels], int] = {}  # (name, scraped labels) → column
        self.keys: list[tuple[tuple[str, str], ...]] = []  # column → its full label set
        self.labels: list[dict[str, str]] = []  # column → labels incl. __name__, job, instance
        self.times: list[float] = []  # oldest first
        self.rows: list[array[float]] = []  # per time: values by column (shorter = absent)
        self.appends = 0


class RecentSamples:
    """Every series' samples of the last ``window`` seconds, indexed by name and label set.

    Memory: 8 bytes per sample plus one label set per series (a scrape's samples share its
    timestamp); series that vanish are dropped once they have no sample in the window.
    """

    def __init__(self, job: str = "vpsmon", window: float = DEFAULT_WINDOW) -> None:
        self.job = job
        self.window = window
        self._servers: dict[int, _ServerWindow] = {}
        self._by_name: dict[str, list[tuple[_ServerWindow, int]]] = {}
        self._by_key: dict[tuple[tuple[str, str], ...], tuple[_ServerWindow, int]] = {}
        self._started: float | None = None
        self._latest: float | None = None

    # -- writing ------------------------------------------------------------------------

    def add(self, result: ScrapeResult) -> None:
        """Take one scrape (in any order: backfilled scrapes may come late)."""
        ts = round(result.timestamp, 3)
        sid = result.target.server_id
        server = self._servers.get(sid)
        if server is None:
            server = self._servers[sid] = _ServerWindow(sid)
        if self._started is None:
            self._started = ts
        self._latest = ts if self._latest is None else max(self._latest, ts)
        if ts < self._latest - self.window:
            return  # older than the window: only the database keeps it
        base: Labels | None = None
        row = array("d")
        for sample in result.with_synthetic():
            col = server.columns.get((sample.name, sample.labels))
            if col is None:
                if base is None:
                    base = result.target.target_labels(self.job)
                col = self._add_column(server, sample.name, merge_labels(sample.labels, base))
                server.columns[(sample.name, sample.labels)] = col
            if col >= len(row):
                row.extend([_ABSENT] * (col + 1 - len(row)))
            row[col] = sample.value
        i = bisect.bisect_right(server.times, ts)
        if i > 0 and server.times[i - 1] == ts:
            server.rows[i - 1] = row  # the same scrape again (a replay): keep one
        else:
            server.times.insert(i, ts)
            server.rows.insert(i, row)
        self._trim(server)

    def _add_column(self, server: _ServerWindow, name: str, labels: Labels) -> int:
        full = {"__name__": name, **dict(labels)}
        key = tuple(sorted(full.items()))
        col = len(server.keys)
        server.keys.append(key)
        server.labels.append(full)
        self._by_name.setdefault(name, []).append((server, col))
        self._by_key[key] = (server, col)
        return col

    def _trim(self, server: _ServerWindow) -> None:
        assert self._latest is not None
        cut = bisect.bisect_left(server.times, self._latest - self.window)
        if cut:
            del server.times[:cut]
            del server.rows[:cut]
        server.appends += 1
        if server.appends % 64 == 0:
            self._drop_vanished(server)

    def _drop_vanished(self, server: _ServerWindow) -> None:
        """Forget the columns of series with no sample left in the window (churn)."""
        width = len(server.keys)
        alive = [False] * width
        for row in server.rows:
            for col, value in enumerate(row):
                if not alive[col] and not _absent(value):
                    alive[col] = True
        if all(alive):
            return
        self._unindex(server)
        keep = [c for c in range(width) if alive[c]]
        remap = {old: new for new, old in enumerate(keep)}
        server.keys = [server.keys[c] for c in keep]
        server.labels = [server.labels[c] for c in keep]
        server.columns = {k: remap[c] for k, c in server.columns.items() if c in remap}
        server.rows = [
            array("d", (row[c] if c < len(row) else _ABSENT for c in keep)) for row in server.rows
        ]
        for col, labels in enumerate(server.labels):
            self._by_name.setdefault(labels["__name__"], []).append((server, col))
            self._by_key[server.keys[col]] = (server, col)

    def _unindex(self, server: _ServerWindow) -> None:
        for col, labels in enumerate(server.labels):
            name = labels["__name__"]
            entries = [e for e in self._by_name.get(name, []) if e[0] is not server]
            if entries:
                self._by_name[name] = entries
            else:
                self._by_name.pop(name, None)
            if self._by_key.get(server.keys[col], (None,))[0] is server:
                del self._by_key[server.keys[col]]

    def forget(self, server_id: int) -> None:
        server = self._servers.pop(server_id, None)
        if server is not None:
            self._unindex(server)

    # -- reading (collector/storage/reader.py RecentWindow) ------------------------------

    def covered_from(self) -> float | None:
        """Every sample taken at or after this time is here (None: nothing yet)."""
        if self._started is None or self._latest is None:
            return None
        return max(self._started, self._latest - self.window)

    def _candidates(self, matchers: Sequence[Matcher]) -> list[tuple[_ServerWindow, int]]:
        for m in matchers:
            if m.name == "__name__" and m.op == "=":
                return list(self._by_name.get(m.value, []))
        return [entry for entries in self._by_name.values() for entry in entries]

    def _values(
        self, server: _ServerWindow, col: int, start: float, end: float
    ) -> tuple[list[float], list[float]]:
        i = bisect.bisect_left(server.times, start)
        j = bisect.bisect_right(server.times, end)
        ts: list[float] = []
        vs: list[float] = []
        for k in range(i, j):
            row = server.rows[k]
            if col < len(row):
                value = row[col]
                if not _absent(value):
                    ts.append(server.times[k])
                    vs.append(value)
        return ts, vs

    def series_refs(self, matchers: Sequence[Matcher], start: float, end: float) -> list[SeriesRef]:
        out = []
        for server, col in self._candidates(matchers):
            labels = server.labels[col]
            if (
                all(m.matches(labels) for m in matchers)
                and self._values(server, col, start, end)[0]
            ):
                out.append(SeriesRef(-1, server.server_id, dict(labels)))
        return out

    def samples(
        self, series: SeriesRef, start: float, end: float
    ) -> tuple[list[float], list[float]]:
        found = self._by_key.get(tuple(sorted(series.labels.items())))
        if found is None:
            return [], []
        return self._values(found[0], found[1], start, end)

    @property
    def series_count(self) -> int:
        return len(self._by_key)

    @property
    def sample_count(self) -> int:
        return sum(len(row) for s in self._servers.values() for row in s.rows)


class Head:
    def __init__(self, *, job: str = "vpsmon", window: float = DEFAULT_WINDOW) -> None:
        self._servers: dict[int, ServerState] = {}
        self._listeners: list[Callable[[ServerState], None]] = []
        self.recent = RecentSamples(job, window)

    def subscribe(self, listener: Callable[[ServerState], None]) -> None:
        self._listeners.append(listener)

    def state(self, server_id: int) -> ServerState | None:
        return self._servers.get(server_id)

    def forget(self, server_id: int) -> None:
        self._servers.pop(server_id, None)
        self.recent.forget(server_id)

    async def append(self, result: ScrapeResult) -> None:
        self.recent.add(result)
        if result.kind != "scrape":
            return  # backfilled samples or a removed target's stale markers: not its state now
        sid = result.target.server_id
        state = self._servers.get(sid) or ServerState(sid)
        self._servers[sid] = state
        if state.last_scrape is not None and result.timestamp < state.last_scrape:
            return  # a backfilled scrape: the live state stays at the newest one
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
