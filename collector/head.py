"""The head: the most recent scrapes of every server, in memory.

Two parts, both bounded:
- per server, the latest two snapshots (so the live view can compute rates) and the state of
  the last scrape: `ServerState`, for the overview and its WebSocket;
- `RecentSamples`: every series' samples of the last `window` seconds, which the storage
  reader (collector/storage/reader.py) serves recent queries from (rules, the Prometheus API,
  live charts) without asking the database.

How `RecentSamples` keeps the samples (issue #8: a rule cycle reads 200 selections over
1,000 servers and must not take a Python step per server or series to do it): fleet-wide
numpy matrices, so a selection is a few fancy-indexing calls whatever its size.

- ``_ts`` (servers × C, float64): a row per server, its scrapes' times, ascending and
  right-aligned (the newest in column C-1); an empty cell is -inf, so a row stays sorted and
  `searchsorted` finds a time in it.
- ``_v`` (series × C, float64): a row per series, the value of its server's scrape in the same
  column; "not in that scrape" is our own NaN payload (`_ABSENT`), so a read tells it from a
  NaN or a staleness marker the target sent. Unused cells and rows hold `_ABSENT` too.
- A server's series rows are one contiguous block of ``_v`` (``_base[server row]`` + the
  series' index in its server, with spare rows): a new scrape shifts the block and the time
  row left by one column with one slice copy each and writes the new column with one
  assignment (by the column map of the remembered layout, `ScrapeResult.layout`). A block
  that outgrows its capacity moves elsewhere (``_base`` changes; nothing cached holds rows).
  Freed blocks and server rows are reused.
- A scrape that is not the newest (backfill, late) is inserted at its time, the older
  columns shifting left; a replay of a time replaces that column.
- C grows (a right-aligned copy of both matrices) when a server would shift out a sample
  still inside the window, up to a budget of cells (`MAX_CELLS`, at least `MIN_MAX_COLUMNS`
  columns): C is fleet-wide, so one server scraped far more often than the rest widens every
  row. Past it, the oldest sample is dropped and `covered_from` moves after it, so the storage
  reader asks the database for that part instead.
- Samples older than the window are cleared when their server is next written (as the
  per-server trim did), and series with no sample left are forgotten every 64 scrapes of
  their server, their rows reused.

A selection's matched series (server rows, series indices, label sets) are cached per matchers
while the index of its metric name is unchanged; `select_block` then gathers the rows' cells
with fancy indexing, and `select` turns the same matrices into lists with one `tolist` each.

Garbage collection (collector/gcpolicy.py, issue #5): samples live in numpy arrays (no
container the cyclic collector walks), labels in tuples of strings and dicts of strings;
per server one small object, per cached selection a few.
"""

from __future__ import annotations

import math
import operator
import struct
from array import array
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

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
_ABSENT_U64 = np.uint64(_ABSENT_BITS)
_EMPTY = -math.inf  # a time cell with no scrape


def _absent(value: float) -> bool:
    return math.isnan(value) and struct.pack("<d", value) == struct.pack("<d", _ABSENT)


DEFAULT_WINDOW = 600.0

Key = tuple[tuple[str, str], ...]


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
    """One server's series: their labels and where their samples are in the fleet's matrices
    (`RecentSamples`): time row ``srow`` of ``_ts``, series rows ``_base[srow]`` + column
    (its index here, 0..n-1) of ``_v``, ``capacity`` rows reserved.

    Only containers Python's cyclic garbage collector does not walk, or walks in one step,
    hold the labels: tuples of strings, dicts of strings (collector/gcpolicy.py).
    """

    __slots__ = (
        "server_id",
        "srow",
        "capacity",
        "columns",
        "keys",
        "labels",
        "appends",
        "layout",
        "layout_columns",
    )

    def __init__(self, server_id: int, srow: int) -> None:
        self.server_id = server_id
        self.srow = srow
        self.capacity = 0
        self.columns: dict[tuple[str, Labels], int] = {}  # (name, scraped labels) → column
        self.keys: tuple[Key, ...] = ()  # column → its full label set
        self.labels: tuple[dict[str, str], ...] = ()  # column → labels incl. __name__, job, …
        self.appends = 0
        # The series layout of the last scrape added the long way (`ScrapeResult.layout`)
        # and the columns of its samples, then its synthetic series: a scrape with the same
        # layout object is written by these without a lookup per sample. None when the
        # columns move (`_drop_vanished`) or a line was duplicated; columns in order 0..n-1
        # are kept as None.
        self.layout: tuple[tuple[str, Labels], ...] | None = None
        self.layout_columns: Any = None  # numpy intp array


_name = operator.itemgetter(0)  # a Sample's name
_labels = operator.itemgetter(1)  # its labels
_value = operator.itemgetter(2)  # its value


class _Match:
    """What a selection's matchers matched, in label-set order (cached, `_matching`)."""

    __slots__ = ("flat", "srows", "columns", "keys", "full", "whole", "labels", "block_keys")

    def __init__(
        self,
        flat: array[int],
        srows: Any,
        columns: Any,
        full: tuple[Key, ...],
        whole: tuple[bool, ...],
        labels: tuple[dict[str, str], ...],
        block_keys: tuple[Key, ...],
    ) -> None:
        self.flat = flat  # server id, column, 1 if no label value is empty; laid flat
        self.srows = srows  # numpy intp: each row's server row in _ts
        self.columns = columns  # numpy intp: each row's column in its server's block
        self.full = full  # label sets as the head keeps them (empty values included)
        self.whole = whole  # no empty label value: the full label set is the engine's key
        self.labels = labels
        self.block_keys = block_keys  # the engine's keys (`RangeBlock.keys`)


class RecentSamples:
    """Every series' samples of the last ``window`` seconds, indexed by name and label set.

    Memory: 8 bytes per cell of ``_v`` (series rows with spare capacity × columns for the
    window) plus one label set per series; series that vanish are dropped once they have no
    sample in the window.
    """

    # C is fleet-wide: it may grow past MIN_MAX_COLUMNS only while the value matrix stays under
    # MAX_CELLS cells (8 bytes each); a sample that would need more is dropped (covered_from).
    MAX_CELLS = 48 * 2**20
    MIN_MAX_COLUMNS = 256

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
        self._by_key: dict[Key, tuple[int, int]] = {}
        # What a selection's matchers matched, kept while the index of its metric name (or,
        # for a selection without one, the whole index) is unchanged: a rule reads the same
        # selection every cycle, and a regular expression costs microseconds per series.
        self._changes: dict[str, int] = {}  # per metric name, and "" for any: index changes
        self._matched: dict[tuple[Matcher, ...], tuple[int, _Match]] = {}
        # The matrices (module docstring).
        self._columns = 16
        self._ts = np.full((64, self._columns), _EMPTY)
        self._base = np.zeros(64, dtype=np.intp)
        self._free_srows: list[int] = []
        self._srows_top = 0
        self._v = np.full((1024, self._columns), _ABSENT)
        self._vbits = self._v.view(np.uint64)
        self._free_blocks: list[tuple[int, int]] = []  # (first row, rows)
        self._rows_top = 0
        self._started: float | None = None
        self._latest: float | None = None
        self._dropped: float | None = None  # the newest in-window sample C had no room for
        # Writes so far (scrapes, forgotten servers): what `_times_in` keeps is valid until the
        # next one.
        self._writes = 0
        self._range_writes = 0
        self._ranges: dict[tuple[float, float], tuple[int, Any]] = {}

    # -- the matrices ---------------------------------------------------------------------

    def _new_srow(self) -> int:
        if self._free_srows:
            return self._free_srows.pop()
        srow = self._srows_top
        if srow == len(self._ts):
            ts = np.full((2 * len(self._ts), self._columns), _EMPTY)
            ts[:srow] = self._ts
            self._ts = ts
            base = np.zeros(2 * len(self._base), dtype=np.intp)
            base[:srow] = self._base
            self._base = base
        self._srows_top += 1
        return srow

    def _reserve(self, server: _ServerWindow, need: int) -> None:
        """Give ``server`` a block of at least ``need`` rows, moving its series there."""
        capacity = need + need // 8 + 4  # spare rows: a few new series do not move it
        first = -1
        for k, (at, size) in enumerate(self._free_blocks):
            if size >= capacity:  # first fit; the rest stays free
                first = at
                if size > capacity:
                    self._free_blocks[k] = (at + capacity, size - capacity)
                else:
                    del self._free_blocks[k]
                break
        if first < 0:
            first = self._rows_top
            if first + capacity > len(self._v):
                rows = max(len(self._v) * 5 // 4, first + capacity)
                v = np.full((rows, self._columns), _ABSENT)
                v[:first] = self._v[:first]
                self._v, self._vbits = v, v.view(np.uint64)
            self._rows_top += capacity
        n = len(server.keys)
        if server.capacity:
            old = int(self._base[server.srow])
            self._v[first : first + n] = self._v[old : old + n]
            self._free(old, server.capacity)
        server.capacity = capacity
        self._base[server.srow] = first

    def _free(self, first: int, rows: int) -> None:
        self._vbits[first : first + rows] = _ABSENT_U64
        self._free_blocks.append((first, rows))

    def _widen(self) -> bool:
        """Grow C (both matrices copied right-aligned); False if at the cap."""
        cap = max(self.MIN_MAX_COLUMNS, self.MAX_CELLS // max(len(self._v), 1))
        old = self._columns
        if old >= cap:
            return False
        new = min(cap, -(-(old + max(old // 4, 8)) // 8) * 8)
        ts = np.full((len(self._ts), new), _EMPTY)
        ts[:, new - old :] = self._ts
        v = np.full((len(self._v), new), _ABSENT)
        v[:, new - old :] = self._v
        self._ts, self._v, self._vbits, self._columns = ts, v, v.view(np.uint64), new
        return True

    # -- writing ------------------------------------------------------------------------

    def add(self, result: ScrapeResult) -> None:
        """Take one scrape (in any order: backfilled scrapes may come late)."""
        ts = round(result.timestamp, 3)
        sid = result.target.server_id
        self._writes += 1
        server = self._servers.get(sid)
        if server is None:
            server = self._servers[sid] = _ServerWindow(sid, self._new_srow())
        if self._started is None:
            self._started = ts
        self._latest = ts if self._latest is None else max(self._latest, ts)
        cutoff = self._latest - self.window
        if ts < cutoff:
            return  # older than the window: only the database keeps it
        if (
            result.layout is not None
            and result.layout is server.layout
            and not result.stale
            and result.kind == "scrape"
        ):
            columns = server.layout_columns
            values = [*map(_value, result.samples), *map(_value, result.synthetic())]
        else:
            columns, values = self._place(server, result)
        self._put(server, ts, cutoff, columns, values)
        server.appends += 1
        if server.appends % 64 == 0:
            self._drop_vanished(server)

    def _place(self, server: _ServerWindow, result: ScrapeResult) -> tuple[Any, list[float]]:
        """A scrape's columns (None: 0..n-1) and values, each sample's column looked up (new
        series get new columns); the layout of a plain scrape is remembered for the next one."""
        base: Labels | None = None
        samples = result.with_synthetic()
        columns = server.columns
        series = list(zip(map(_name, samples), map(_labels, samples), strict=True))
        cols: list[int] = list(map(columns.get, series))  # type: ignore[arg-type]
        width = len(server.keys)
        new_keys: list[Key] = []
        new_labels: list[dict[str, str]] = []
        if None in cols:
            for n, col in enumerate(cols):
                if col is not None:
                    continue
                name, scraped = series[n]
                col = columns.get(series[n])  # a new series twice in one scrape
                if col is None:
                    if base is None:
                        base = result.target.target_labels(self.job)
                    full = {"__name__": name, **dict(merge_labels(scraped, base))}
                    key = tuple(sorted(full.items()))
                    col = width + len(new_keys)
                    new_keys.append(key)
                    new_labels.append(full)
                    columns[series[n]] = col
                cols[n] = col
        if new_keys:  # one copy per scrape that brings new series, not one per series
            if width + len(new_keys) > server.capacity:
                self._reserve(server, width + len(new_keys))
            for k, key in enumerate(new_keys):
                self._index(server.server_id, width + k, key)
            server.keys += tuple(new_keys)
            server.labels += tuple(new_labels)
        values = list(map(_value, samples))
        unique = len(set(cols)) == len(cols)
        if not unique:  # a duplicated line: the last one wins
            last = dict(zip(cols, values, strict=True))
            cols, values = list(last), list(last.values())
        in_order = cols == list(range(len(cols)))
        placed = None if in_order else np.array(cols, dtype=np.intp)
        if result.layout is not None and not result.stale and result.kind == "scrape":
            server.layout = result.layout if unique else None
            server.layout_columns = placed
        return placed, values

    def _put(
        self, server: _ServerWindow, ts: float, cutoff: float, columns: Any, values: list[float]
    ) -> None:
        """Write a scrape's column at its time: shift the older ones left (or replace a scrape
        of the same time), clearing samples that left the window."""
        srow, n = server.srow, len(server.keys)
        times = self._ts[srow]
        first = int(self._base[srow])
        block = self._v[first : first + n]
        expired = int(times.searchsorted(cutoff))
        if expired and times[expired - 1] != _EMPTY:
            times[:expired] = _EMPTY
            block.view(np.uint64)[:, :expired] = _ABSENT_U64
        width = self._columns
        if ts > times[width - 1]:
            at = width  # the newest: the common case
        else:
            at = int(times.searchsorted(ts))
            if times[at] == ts:  # the same scrape again (a replay): keep one
                self._write(block, at, columns, values)
                return
        if times[0] != _EMPTY:  # no free column on the left; what is there is in the window
            if self._widen():
                at += self._columns - width
                times = self._ts[srow]
                block = self._v[first : first + n]
            else:  # at the cap: the oldest sample goes (covered_from moves past it)
                dropped = float(times[0]) if at else ts
                self._dropped = dropped if self._dropped is None else max(self._dropped, dropped)
                if not at:
                    return  # the new sample is that oldest one
        if at > 1:
            times[: at - 1] = times[1:at]
            block[:, : at - 1] = block[:, 1:at]
        times[at - 1] = ts
        self._write(block, at - 1, columns, values)

    @staticmethod
    def _write(block: Any, at: int, columns: Any, values: list[float]) -> None:
        if columns is None:
            k = len(values)
            block[:k, at] = values
            if k < len(block):
                block[k:, at].view(np.uint64)[:] = _ABSENT_U64
        else:
            block[:, at].view(np.uint64)[:] = _ABSENT_U64
            block[columns, at] = values

    def _changed(self, name: str) -> None:
        self._changes[name] = self._changes.get(name, 0) + 1
        self._changes[""] = self._changes.get("", 0) + 1

    def _index(self, server_id: int, col: int, key: Key) -> None:
        name = dict(key)["__name__"]
        self._changed(name)
        entries = self._by_name.get(name)
        if entries is None:
            entries = self._by_name[name] = array("q")
        entries.append(server_id)
        entries.append(col)
        self._by_key[key] = (server_id, col)

    def _drop_vanished(self, server: _ServerWindow) -> None:
        """Forget the columns of series with no sample left in the window (churn)."""
        n = len(server.keys)
        first = int(self._base[server.srow])
        alive = (self._vbits[first : first + n] != _ABSENT_U64).any(axis=1)
        if alive.all():
            return
        self._unindex(server)
        keep = np.flatnonzero(alive)
        remap = {int(old): new for new, old in enumerate(keep)}
        self._v[first : first + len(keep)] = self._v[first + keep]
        self._vbits[first + len(keep) : first + n] = _ABSENT_U64
        server.keys = tuple(server.keys[c] for c in remap)
        server.labels = tuple(server.labels[c] for c in remap)
        server.columns = {k: remap[c] for k, c in server.columns.items() if c in remap}
        server.layout = server.layout_columns = None
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
            self._writes += 1
            self._unindex(server)
            if server.capacity:
                self._free(int(self._base[server.srow]), server.capacity)
            self._ts[server.srow] = _EMPTY
            self._free_srows.append(server.srow)

    # -- reading (collector/storage/reader.py RecentWindow) ------------------------------

    def covered_from(self) -> float | None:
        """Every sample taken at or after this time is here (None: nothing yet)."""
        if self._started is None or self._latest is None:
            return None
        since = max(self._started, self._latest - self.window)
        if self._dropped is not None:  # C had no room for it (`MAX_CELLS`)
            since = max(since, math.nextafter(self._dropped, math.inf))
        return since

    def _matching(self, matchers: Sequence[Matcher]) -> _Match:
        """The series ``matchers`` match, in label-set order."""
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
                matched.append((server.keys[col], server.server_id, col, server.srow, labels))
        # Label-set order; two targets given the same instance label can hold the same label
        # set: then server id and column decide, as before.
        matched.sort(key=operator.itemgetter(0, 1, 2))
        flat = array("q")
        whole = tuple(all(v for _, v in row[0]) for row in matched)
        for (_, sid, col, _, _), w in zip(matched, whole, strict=True):
            flat.extend((sid, col, 1 if w else 0))
        full = tuple(row[0] for row in matched)
        block_keys = tuple(
            k if w else tuple(kv for kv in k if kv[1]) for k, w in zip(full, whole, strict=True)
        )
        if found is not None and found[1].block_keys == block_keys:
            # Matched again after a change elsewhere under the name: still the same series,
            # so the engine's caches keyed on the keys object stay valid.
            block_keys = found[1].block_keys
        match = _Match(
            flat,
            np.array([row[3] for row in matched], dtype=np.intp),
            np.array([row[2] for row in matched], dtype=np.intp),
            full,
            whole,
            tuple(row[4] for row in matched),
            block_keys,
        )
        if len(self._matched) >= 4096:  # bounded: selections no rule reads any more go
            self._matched.clear()
        self._matched[key] = (version, match)
        return match

    def _candidates(self, matchers: Sequence[Matcher]) -> list[tuple[_ServerWindow, int]]:
        servers = self._servers
        for m in matchers:
            if m.name == "__name__" and m.op == "=":
                return [(servers[s], c) for s, c in _pairs(self._by_name.get(m.value, array("q")))]
        return [(servers[s], c) for entries in self._by_name.values() for s, c in _pairs(entries)]

    def _times_in(self, start: float, end: float) -> tuple[int, Any]:
        """Every server's times in [start, end] (NaN outside) in the columns some server has
        one in, and the first of those columns; kept per range until the next write, as the
        selections of a rule cycle share a few ranges."""
        if self._range_writes != self._writes or len(self._ranges) >= 64:
            self._ranges.clear()
            self._range_writes = self._writes
        found = self._ranges.get((start, end))
        if found is None:
            ts_all = self._ts
            inside = (ts_all >= start) & (ts_all <= end)
            used = np.flatnonzero(inside.any(axis=0))
            if len(used):
                lo, hi = int(used[0]), int(used[-1]) + 1
                found = lo, np.where(inside[:, lo:hi], ts_all[:, lo:hi], np.nan)
            else:
                found = 0, np.empty((len(ts_all), 0))
            self._ranges[(start, end)] = found
        return found

    def _cells(self, srows: Any, columns: Any, start: float, end: float) -> tuple[Any, Any]:
        """The ts and vs matrices of these series in [start, end] (`RangeBlock`), trimmed to
        the columns that hold a time in range for some server: a few numpy calls whatever
        the number of series (issue #8)."""
        lo, times = self._times_in(start, end)
        width = times.shape[1]
        rows = self._base[srows] + columns
        vs = self._v[rows, lo : lo + width]
        ts = times[srows]
        np.copyto(ts, np.nan, where=vs.view(np.uint64) == _ABSENT_U64)
        return ts, vs

    def _has_samples(self, srows: Any, columns: Any, start: float, end: float) -> Any:
        ts, _ = self._cells(srows, columns, start, end)
        return ~np.isnan(ts).all(axis=1)

    def _values(
        self, server: _ServerWindow, col: int, start: float, end: float
    ) -> tuple[list[float], list[float]]:
        times = self._ts[server.srow]
        values = self._v[int(self._base[server.srow]) + col]
        keep = (times >= start) & (times <= end) & (values.view(np.uint64) != _ABSENT_U64)
        return times[keep].tolist(), values[keep].tolist()

    def series_refs(
        self,
        matchers: Sequence[Matcher],
        start: float,
        end: float,
        *,
        server_id: int | None = None,
    ) -> list[SeriesRef]:
        if server_id is None:
            candidates = self._candidates(matchers)
        else:
            # One server's columns only: a chart of one server must not walk the fleet's.
            one = self._servers.get(server_id)
            candidates = [] if one is None else [(one, c) for c in range(len(one.labels))]
        found = [
            (server, col)
            for server, col in candidates
            if all(m.matches(server.labels[col]) for m in matchers)
        ]
        if not found:
            return []
        has = self._has_samples(
            np.array([server.srow for server, _ in found], dtype=np.intp),
            np.array([col for _, col in found], dtype=np.intp),
            start,
            end,
        ).tolist()
        return [
            SeriesRef(-1, server.server_id, dict(server.labels[col]))
            for (server, col), yes in zip(found, has, strict=True)
            if yes
        ]

    def samples(
        self, series: SeriesRef, start: float, end: float
    ) -> tuple[list[float], list[float]]:
        found = self._by_key.get(tuple(sorted(series.labels.items())))
        if found is None:
            return [], []
        return self._values(self._servers[found[0]], found[1], start, end)

    def select(
        self, matchers: Sequence[Matcher], start: float, end: float
    ) -> list[tuple[Key | None, dict[str, str], list[float], list[float]]]:
        """Series matching ``matchers`` with their samples in ``[start, end]``, in one pass,
        in label-set order: (sorted label set, or None if a label value is empty; labels, the
        head's own dict, not to be changed; timestamps; values)."""
        match = self._matching(matchers)
        ts, vs = self._cells(match.srows, match.columns, start, end)
        present = ~np.isnan(ts)
        counts = np.count_nonzero(present, axis=1).tolist()
        # One tolist per matrix, then slices: no numpy call per series.
        flat_ts, flat_vs = ts[present].tolist(), vs[present].tolist()
        out = []
        at = 0
        for k, count in enumerate(counts):
            if count:
                out.append(
                    (
                        match.full[k] if match.whole[k] else None,
                        match.labels[k],
                        flat_ts[at : at + count],
                        flat_vs[at : at + count],
                    )
                )
                at += count
        return out

    def select_block(self, matchers: Sequence[Matcher], start: float, end: float) -> RangeBlock:
        """Every series ``matchers`` match (even with no sample in range) as rows of a
        `RangeBlock` in label-set order; ``keys`` is the same object while they are unchanged.

        A selection matched before costs a few numpy calls, whatever its size (issue #8)."""
        match = self._matching(matchers)
        ts, vs = self._cells(match.srows, match.columns, start, end)
        return RangeBlock(match.block_keys, ts, vs)

    @property
    def series_count(self) -> int:
        return len(self._by_key)

    @property
    def sample_count(self) -> int:
        return int(np.count_nonzero(self._vbits[: self._rows_top] != _ABSENT_U64))


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
