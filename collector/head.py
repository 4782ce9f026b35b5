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
import operator
import struct
from array import array
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from operator import itemgetter

import numpy as np

from vpsmon.collector.scrape.loop import ScrapeResult
from vpsmon.collector.scrape.target import Labels
from vpsmon.collector.storage.query import Matcher, RangeBlock
from vpsmon.collector.storage.reader import SeriesRef
from vpsmon.collector.storage.writer import merge_labels

# A NaN with a payload of our own marks "this series was not in that scrape" in a row of the
# window; it is neither Prometheus' staleness marker nor the NaN a target may send.
_ABSENT_BITS = 0x7FF4000000A85E17
_ABSENT: float = struct.unpack("<d", struct.pack("<Q", _ABSENT_BITS))[0]


def _absent(value: float) -> bool:
    return math.isnan(value) and struct.pack("<d", value) == struct.pack("<d", _ABSENT)


DEFAULT_WINDOW = 600.0


def _pairs(flat: array[int]) -> zip[tuple[int, int]]:
    """(server id, column) pairs of an index entry laid flat."""
    it = iter(flat)
    return zip(it, it, strict=True)


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
    """One server's recent scrapes: a row of values per scrape, a column per series.

    Only containers Python's cyclic garbage collector does not walk, or walks in one step,
    hold the samples and labels: arrays of floats, tuples of strings, dicts of strings (the
    collector freezes its start-up objects, collector/gcpolicy.py; a full collection then
    walks little more than what requests allocate).
    """

    __slots__ = (
        "server_id",
        "columns",
        "keys",
        "labels",
        "times",
        "rows",
        "appends",
        "layout",
        "layout_columns",
        "layout_width",
    )

    def __init__(self, server_id: int) -> None:
        self.server_id = server_id
        self.columns: dict[tuple[str, Labels], int] = {}  # (name, scraped labels) → column
        self.keys: tuple[tuple[tuple[str, str], ...], ...] = ()  # column → its full label set
        self.labels: tuple[dict[str, str], ...] = ()  # column → labels incl. __name__, job, …
        self.times = array("d")  # oldest first
        self.rows: list[array[float]] = []  # per time: values by column (shorter = absent)
        self.appends = 0
        # The series layout of the last scrape added the long way (`ScrapeResult.layout`)
        # and where its samples, then its synthetic series, went: a scrape with the same
        # layout object fills its row from these without a lookup per sample. None when
        # the columns move (`_drop_vanished`). Columns in order 0..n-1 are kept as None.
        self.layout: tuple[tuple[str, Labels], ...] | None = None
        self.layout_columns: array[int] | None = None
        self.layout_width = 0


_value = operator.itemgetter(2)  # a Sample's value


def _column(
    server: _ServerWindow, col: int, i: int, j: int, narrowest: int
) -> tuple[list[float], list[float]]:
    """A column's samples in rows i..j; ``narrowest`` is the shortest of those rows."""
    rows = server.rows
    if col < narrowest:  # every row has the column: take it whole, then drop absent values
        vs = list(map(itemgetter(col), rows[i:j]))
        ts = list(server.times[i:j])
        if any(map(math.isnan, vs)):  # NaN: absent values, or markers and NaNs to keep
            keep = [k for k, v in enumerate(vs) if not _absent(v)]
            ts, vs = [ts[k] for k in keep], [vs[k] for k in keep]
        return ts, vs
    ts, vs = [], []
    times = server.times
    for k in range(i, j):
        row = rows[k]
        if col < len(row):
            value = row[col]
            if not _absent(value):
                ts.append(times[k])
                vs.append(value)
    return ts, vs


def _row_of_layout(server: _ServerWindow, result: ScrapeResult) -> array[float]:
    """The row of a scrape whose series are those of the server's remembered layout, in the
    same order: the values go to the columns found last time, without a lookup each."""
    values = [*map(_value, result.samples), *map(_value, result.synthetic())]
    cols = server.layout_columns
    if cols is None:
        return array("d", values)
    row = array("d", [_ABSENT]) * server.layout_width
    for col, value in zip(cols, values, strict=True):
        row[col] = value
    return row


class RecentSamples:
    """Every series' samples of the last ``window`` seconds, indexed by name and label set.

    Memory: 8 bytes per sample plus one label set per series (a scrape's samples share its
    timestamp); series that vanish are dropped once they have no sample in the window.
    """

    def __init__(self, job: str = "vpsmon", window: float = DEFAULT_WINDOW) -> None:
        self.job = job
        self.window = window
        self._servers: dict[int, _ServerWindow] = {}
        # Index entries are server ids and columns, never the _ServerWindow itself: by name an
        # array of (server id, column) pairs laid flat, by label set a tuple of two ints. The
        # garbage collector walks neither (an array is no container; a tuple of ints stops being
        # tracked), whereas one tuple per series pointing at its window kept 300,000 objects in
        # every full collection of a large fleet, in the middle of requests (issue #5).
        self._by_name: dict[str, array[int]] = {}
        self._by_key: dict[tuple[tuple[str, str], ...], tuple[int, int]] = {}
        # What a selection's matchers matched, kept while the index of its metric name (or,
        # for a selection without one, the whole index) is unchanged: a rule reads the same
        # selection every cycle, and a regular expression costs microseconds per series.
        self._changes: dict[str, int] = {}  # per metric name, and "" for any: index changes
        self._matched: dict[tuple[Matcher, ...], tuple[int, array[int]]] = {}
        self._block_keys_cache: dict[
            tuple[Matcher, ...], tuple[array[int], tuple[tuple[tuple[str, str], ...], ...]]
        ] = {}
        # Per server, its rows turned into columns (one array per series, NaN-free columns
        # only) while it has no new scrape: a rule cycle reads each series several times
        # (different selections, ranges, offsets), and a column of a row-major window costs a
        # Python step per row. Built once a server has been read TRANSPOSE_AFTER times since
        # its last scrape; as large as the server's window (8 bytes a sample).
        self._transposed: dict[int, tuple[int, int, list[array[float] | None] | None]] = {}
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
        if (
            result.layout is not None
            and result.layout is server.layout
            and not result.stale
            and result.kind == "scrape"
        ):
            row = _row_of_layout(server, result)
        else:
            row = self._row(server, result)
        i = bisect.bisect_right(server.times, ts)
        if i > 0 and server.times[i - 1] == ts:
            server.rows[i - 1] = row  # the same scrape again (a replay): keep one
        else:
            server.times.insert(i, ts)
            server.rows.insert(i, row)
        self._trim(server)

    def _row(self, server: _ServerWindow, result: ScrapeResult) -> array[float]:
        """A scrape's row, each sample's column looked up (new series get new columns); the
        layout of a plain scrape is remembered for the next one (`_row_of_layout`)."""
        base: Labels | None = None
        samples = result.with_synthetic()
        cols = array("q", bytes(8 * len(samples)))
        width = len(server.keys)
        new_keys: list[tuple[tuple[str, str], ...]] = []
        new_labels: list[dict[str, str]] = []
        columns = server.columns
        for n, sample in enumerate(samples):
            col = columns.get((sample.name, sample.labels))
            if col is None:
                if base is None:
                    base = result.target.target_labels(self.job)
                full = {"__name__": sample.name, **dict(merge_labels(sample.labels, base))}
                key = tuple(sorted(full.items()))
                col = width + len(new_keys)
                new_keys.append(key)
                new_labels.append(full)
                self._index(server.server_id, col, key)
                columns[(sample.name, sample.labels)] = col
            cols[n] = col
        if new_keys:  # one copy per scrape that brings new series, not one per series
            server.keys += tuple(new_keys)
            server.labels += tuple(new_labels)
        row_width = max(cols) + 1 if cols else 0
        row = array("d", [_ABSENT]) * row_width
        for col, sample in zip(cols, samples, strict=True):
            row[col] = sample.value  # a duplicated line: the last one wins
        if result.layout is not None and not result.stale and result.kind == "scrape":
            server.layout = result.layout
            in_order = all(c == n for n, c in enumerate(cols))
            server.layout_columns = None if in_order else cols
            server.layout_width = row_width
        return row

    def _changed(self, name: str) -> None:
        self._changes[name] = self._changes.get(name, 0) + 1
        self._changes[""] = self._changes.get("", 0) + 1

    def _index(self, server_id: int, col: int, key: tuple[tuple[str, str], ...]) -> None:
        name = dict(key)["__name__"]
        self._changed(name)
        entries = self._by_name.get(name)
        if entries is None:
            entries = self._by_name[name] = array("q")
        entries.append(server_id)
        entries.append(col)
        self._by_key[key] = (server_id, col)

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
        server.keys = tuple(server.keys[c] for c in keep)
        server.labels = tuple(server.labels[c] for c in keep)
        server.columns = {k: remap[c] for k, c in server.columns.items() if c in remap}
        server.layout = server.layout_columns = None
        server.rows = [
            array("d", (row[c] if c < len(row) else _ABSENT for c in keep)) for row in server.rows
        ]
        for col, key in enumerate(server.keys):
            self._index(server.server_id, col, key)

    def _unindex(self, server: _ServerWindow) -> None:
        sid = server.server_id
        for name in {labels["__name__"] for labels in server.labels}:
            self._changed(name)
            pairs = _pairs(self._by_name.get(name, array("q")))
            entries = array("q", (x for s, c in pairs if s != sid for x in (s, c)))
            if entries:
                self._by_name[name] = entries
            else:
                self._by_name.pop(name, None)
        for key in server.keys:
            if self._by_key.get(key, (None,))[0] == sid:
                del self._by_key[key]

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

    def _matching(self, matchers: Sequence[Matcher]) -> array[int]:
        """The series ``matchers`` match in label-set order, laid flat: server id, column, and
        1 if no label value is empty (the label set is then the engine's key as it is)."""
        key = tuple(matchers)
        name = next((m.value for m in key if m.name == "__name__" and m.op == "="), "")
        version = self._changes.get(name, 0)
        found = self._matched.get(key)
        if found is not None and found[0] == version:
            return found[1]
        matched = []
        for server, col in self._candidates(matchers):
            labels = server.labels[col]
            if all(m.matches(labels) for m in key):
                matched.append((server.keys[col], server.server_id, col))
        matched.sort()  # a label set is in one column only: ids never decide
        flat = array("q")
        for labels_key, sid, col in matched:
            flat.extend((sid, col, 1 if all(v for _, v in labels_key) else 0))
        if len(self._matched) >= 4096:  # bounded: selections no rule reads any more go
            self._matched.clear()
        self._matched[key] = (version, flat)
        return flat

    TRANSPOSE_AFTER = 16

    def _columns(self, server: _ServerWindow) -> list[array[float] | None] | None:
        """The server's whole window as columns (None for one with a NaN), or None if not yet
        worth building; valid until its next scrape."""
        token = server.appends
        found = self._transposed.get(server.server_id)
        reads = 1
        if found is not None and found[0] == token:
            if found[2] is not None:
                return found[2]
            reads = found[1] + 1
        if reads < self.TRANSPOSE_AFTER:
            self._transposed[server.server_id] = (token, reads, None)
            return None
        # zip stops at the narrowest row: wider columns keep the row by row path.
        columns: list[array[float] | None] = [
            None if any(map(math.isnan, c)) else array("d", c)
            for c in zip(*server.rows, strict=False)
        ]
        self._transposed[server.server_id] = (token, reads, columns)
        return columns

    def _candidates(self, matchers: Sequence[Matcher]) -> list[tuple[_ServerWindow, int]]:
        servers = self._servers
        for m in matchers:
            if m.name == "__name__" and m.op == "=":
                return [(servers[s], c) for s, c in _pairs(self._by_name.get(m.value, array("q")))]
        return [(servers[s], c) for entries in self._by_name.values() for s, c in _pairs(entries)]

    def _values(
        self, server: _ServerWindow, col: int, start: float, end: float
    ) -> tuple[list[float], list[float]]:
        i = bisect.bisect_left(server.times, start)
        j = bisect.bisect_right(server.times, end)
        return _column(server, col, i, j, min(map(len, server.rows[i:j]), default=0))

    def series_refs(
        self,
        matchers: Sequence[Matcher],
        start: float,
        end: float,
        *,
        server_id: int | None = None,
    ) -> list[SeriesRef]:
        out = []
        if server_id is None:
            candidates = self._candidates(matchers)
        else:
            # One server's columns only: a chart of one server must not walk the fleet's.
            one = self._servers.get(server_id)
            candidates = [] if one is None else [(one, c) for c in range(len(one.labels))]
        for server, col in candidates:
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
        return self._values(self._servers[found[0]], found[1], start, end)

    def select(
        self, matchers: Sequence[Matcher], start: float, end: float
    ) -> list[tuple[tuple[tuple[str, str], ...] | None, dict[str, str], list[float], list[float]]]:
        """Series matching ``matchers`` with their samples in ``[start, end]``, in one pass,
        in label-set order: (sorted label set, or None if a label value is empty; labels, the
        head's own dict, not to be changed; timestamps; values)."""
        out = []
        servers = self._servers
        # Per server: rows in range, the narrowest of them (-1: not yet needed), its columns
        # and their timestamps.
        spans: dict[int, tuple[int, int, int, list[array[float] | None] | None, list[float]]] = {}
        flat = iter(self._matching(matchers))
        for sid, col, whole in zip(flat, flat, flat, strict=True):
            server = servers[sid]
            span = spans.get(sid)
            if span is None:
                i = bisect.bisect_left(server.times, start)
                j = bisect.bisect_right(server.times, end)
                columns = self._columns(server) if i < j else None
                span = spans[sid] = (i, j, -1, columns, server.times[i:j].tolist())
            i, j, narrowest, columns, times = span
            column = columns[col] if columns is not None and col < len(columns) else None
            if column is not None:
                # Every series of the server in this range shares one list of timestamps: the
                # engine never changes a fetched list in place.
                ts, vs = times, column[i:j].tolist()
            else:
                if narrowest < 0:
                    narrowest = min(map(len, server.rows[i:j]), default=0)
                    spans[sid] = (i, j, narrowest, columns, times)
                ts, vs = _column(server, col, i, j, narrowest)
            if ts:
                out.append((server.keys[col] if whole else None, server.labels[col], ts, vs))
        return out

    def select_block(self, matchers: Sequence[Matcher], start: float, end: float) -> RangeBlock:
        """Every series ``matchers`` match (even with no sample in range) as rows of a
        `RangeBlock` in label-set order; ``keys`` is the same object while they are unchanged."""
        flat = self._matching(matchers)
        keys = self._block_keys(matchers, flat)
        servers = self._servers
        it = iter(flat)
        cells: list[tuple[list[float], list[float]]] = []
        for sid, col, _whole in zip(it, it, it, strict=True):
            cells.append(self._values(servers[sid], col, start, end))
        width = max((len(ts) for ts, _ in cells), default=0)
        ts_m = np.full((len(cells), width), np.nan)
        vs_m = np.full((len(cells), width), np.nan)
        for r, (ts, vs) in enumerate(cells):
            ts_m[r, width - len(ts) :] = ts
            vs_m[r, width - len(vs) :] = vs
        return RangeBlock(keys, ts_m, vs_m)

    def _block_keys(
        self, matchers: Sequence[Matcher], flat: array[int]
    ) -> tuple[tuple[tuple[str, str], ...], ...]:
        """The rows' keys in the engine's form, the same tuple while ``flat`` (the matched
        series, itself cached while they are unchanged) is the same object."""
        key = tuple(matchers)
        found = self._block_keys_cache.get(key)
        if found is not None and found[0] is flat:
            return found[1]
        servers = self._servers
        it = iter(flat)
        keys = tuple(
            servers[sid].keys[col] if whole else tuple(kv for kv in servers[sid].keys[col] if kv[1])
            for sid, col, whole in zip(it, it, it, strict=True)
        )
        if found is not None and found[1] == keys:
            keys = found[1]  # matched again after a change elsewhere: still the same series
        if len(self._block_keys_cache) >= 4096:
            self._block_keys_cache.clear()
        self._block_keys_cache[key] = (flat, keys)
        return keys

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
            if result.layout is not None:
                values = dict(zip(result.layout, map(_value, result.samples), strict=True))
            else:
                values = {(s.name, s.labels): s.value for s in result.samples}
            # An exporter serves the same pre-rendered payload until its next collection; a
            # scrape that sees it again is not a new point for rates, so keep the pair.
            if state.current is None or state.current.values != values:
                state.previous = state.current
                state.current = Snapshot(result.timestamp, values)
        for listener in self._listeners:
            listener(state)
