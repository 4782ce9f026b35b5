"""The disk spool: scrapes the database could not take, kept in order until it can.

Layout: a directory of segment files ``000000000001.spool``, ``…2.spool``, oldest first. A
segment is a sequence of records, each ``<length u32><crc32 u32><zlib(JSON)>``; a record is one
scrape as the writer stores it (server id, time, error, target labels, samples). Values are
kept as their IEEE-754 bits, so a staleness marker comes back as a staleness marker.

Durability: every `append` ends with fsync, and a new segment's directory entry is synced
too, so what `append` returned for survives a crash of the collector or the machine. A crash
in the middle of an append leaves a torn last record, which `read` detects (length or CRC)
and skips; records before it are intact. This process never appends to a segment an earlier
process wrote, so a torn tail is always the end of its file.

Bounded: when the next record would pass `max_bytes`, it is refused and counted, never
written; the oldest data stays (the exporters' /history can backfill the newest hour).
"""

from __future__ import annotations

import base64
import json
import logging
import os
import struct
import threading
import zlib
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from vpsmon.collector.scrape.parse import Sample
from vpsmon.collector.scrape.target import Labels

log = logging.getLogger("vpsmon.spool")

_HEADER = struct.Struct("<II")
SEGMENT_BYTES = 1024 * 1024  # small: a segment is read whole when it is replayed


@dataclass(frozen=True, slots=True)
class StoredScrape:
    """One scrape reduced to what the writer stores; what the spool keeps."""

    server_id: int
    url: str
    timestamp: float
    error: str | None
    base: Labels  # the target's labels (job, instance, …), merged into every series
    samples: tuple[Sample, ...]  # including the synthetic up, scrape_duration_seconds, …
    # False for what is stored but is not a scrape (backfilled samples, a removed target's
    # stale markers): it must not change the server's last_seen_at/last_error.
    status: bool = True


def encode(scrape: StoredScrape) -> bytes:
    n = len(scrape.samples)
    values = struct.pack(f"<{n}d", *(s.value for s in scrape.samples))
    doc = {
        "s": scrape.server_id,
        "u": scrape.url,
        "t": scrape.timestamp,
        "e": scrape.error,
        "b": scrape.base,
        "n": [s.name for s in scrape.samples],
        "l": [s.labels for s in scrape.samples],
        "v": base64.b64encode(values).decode(),
    }
    if not scrape.status:
        doc["k"] = 0  # only when set: spools written before this field read as scrapes
    return zlib.compress(json.dumps(doc, separators=(",", ":")).encode(), 1)


def decode(payload: bytes) -> StoredScrape:
    doc = json.loads(zlib.decompress(payload))
    raw = base64.b64decode(doc["v"])
    values = struct.unpack(f"<{len(raw) // 8}d", raw)
    samples = tuple(
        Sample(name, tuple((k, v) for k, v in labels), value)
        for name, labels, value in zip(doc["n"], doc["l"], values, strict=True)
    )
    base = tuple((k, v) for k, v in doc["b"])
    return StoredScrape(doc["s"], doc["u"], doc["t"], doc["e"], base, samples, doc.get("k", 1) == 1)


class Spool:
    def __init__(self, directory: Path, max_bytes: int) -> None:
        self.directory = directory
        self.max_bytes = max_bytes
        directory.mkdir(parents=True, exist_ok=True, mode=0o700)
        self._sizes: dict[Path, int] = {p: p.stat().st_size for p in self._existing()}
        self._next = max((int(p.stem) for p in self._sizes), default=0) + 1
        self._active: Path | None = None  # the segment this process appends to
        self.dropped = 0  # scrapes refused because the spool was full
        self.torn = 0  # torn records skipped on read (a crash in the middle of an append)
        # Appends run in a worker thread (asyncio.to_thread) and go on when the task that
        # started one is cancelled, so a replay may come while one is half written: reading,
        # then removing, that segment would lose the rest of the append. Both wait here.
        self._io = threading.Lock()

    def _existing(self) -> list[Path]:
        return sorted(
            (p for p in self.directory.glob("*.spool") if p.stem.isdigit()),
            key=lambda p: int(p.stem),
        )

    @property
    def size(self) -> int:
        return sum(self._sizes.values())

    @property
    def empty(self) -> bool:
        return not self._sizes

    @property
    def full(self) -> bool:
        return self.size >= self.max_bytes

    def segments(self) -> list[Path]:
        """Segments oldest first (appends go on at the end of the newest, in order)."""
        return sorted(self._sizes, key=lambda p: int(p.stem))

    def append(self, scrapes: Iterable[StoredScrape]) -> int:
        """Write scrapes durably, in order; returns how many were refused (spool full)."""
        records = []
        for scrape in scrapes:
            payload = encode(scrape)
            records.append(_HEADER.pack(len(payload), zlib.crc32(payload)) + payload)
        total = self.size
        refused = 0
        out: list[bytes] = []
        for record in records:
            if total + len(record) > self.max_bytes:
                refused += 1
                continue
            out.append(record)
            total += len(record)
        if out:
            with self._io:
                self._write(out)
        self.dropped += refused
        return refused

    def _write(self, records: list[bytes]) -> None:
        path = self._active
        if path is None or self._sizes.get(path, 0) >= SEGMENT_BYTES:
            path = self.directory / f"{self._next:012d}.spool"
            self._next += 1
            self._active = path
            new = True
        else:
            new = False
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        try:
            data = b"".join(records)
            written = 0
            while written < len(data):
                written += os.write(fd, data[written:])
            os.fsync(fd)
        finally:
            os.close(fd)
        if new:
            _fsync_dir(self.directory)
        self._sizes[path] = self._sizes.get(path, 0) + len(data)

    def read(self, path: Path) -> list[StoredScrape]:
        """Every intact record of a segment, in order; a torn tail is skipped and counted."""
        with self._io:
            data = path.read_bytes()
        out = []
        pos = 0
        while pos < len(data):
            if pos + _HEADER.size > len(data):
                break
            length, crc = _HEADER.unpack_from(data, pos)
            payload = data[pos + _HEADER.size : pos + _HEADER.size + length]
            if len(payload) != length or zlib.crc32(payload) != crc:
                break
            try:
                out.append(decode(payload))
            except (ValueError, KeyError, TypeError, zlib.error, struct.error):
                break
            pos += _HEADER.size + length
        if pos < len(data):
            self.torn += 1
            log.warning(
                "spool segment has a torn record (a crash while writing); skipping its last "
                "%d bytes segment=%s",
                len(data) - pos,
                path.name,
            )
        return out

    def remove(self, path: Path) -> None:
        """Forget a segment whose every record is stored in the database."""
        with self._io:
            path.unlink(missing_ok=True)
            self._sizes.pop(path, None)
            if self._active == path:
                self._active = None
        _fsync_dir(self.directory)


def _fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
