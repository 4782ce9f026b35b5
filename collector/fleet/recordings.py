"""Recordings of web terminal sessions (issue #7), in asciicast v2.

Every PTY session the browser bridge opens (web/terminal.py) is recorded: a row in
pty_recordings (sql/081) made before the shell starts, then the session's events appended
about once a second as chunks, then the exit status and byte counts when it ends. A
recording is read back as an asciicast v2 document (https://docs.asciinema.org/manual/
asciicast/v2/): a header line, then one ``[seconds, "o" | "r", text]`` line per event, which
the playback page replays in xterm.js and which `asciinema play` also understands.

What is recorded: the terminal's output ("o") and its size changes ("r"), not the keystrokes.
Everything typed that the terminal shows (commands, their arguments) is in the output as its
echo; what is typed but not echoed is, by design of the programs asking, secret: passwords at
sudo, ssh, passwd or mysql prompts. Recording input would put those into a table many admins
read, so only the number of bytes typed is kept (asciinema makes the same choice by default).

Each recording is capped (`max_bytes` of event text): past the cap the session goes on, the
recording stops and is marked truncated, so a `cat` of a huge file cannot fill the database.

A bridge (the web terminal, or any other PTY bridge) records a session with:

    recording = await SessionRecording.begin(db, user=user, server_id=sid, cols=80, rows=24)
    flusher = asyncio.create_task(recording.flush_periodically())
    recording.output(data) / recording.typed(data) / recording.resize(cols, rows)
    flusher.cancel(); await recording.end(exit_code=0, exit_signal=0)
"""

from __future__ import annotations

import asyncio
import codecs
import json
import logging
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import datetime

import asyncpg

from vpsmon.collector.accounts import User

log = logging.getLogger("vpsmon.collector.fleet.recordings")

DEFAULT_MAX_BYTES = 16 * 1024 * 1024
FLUSH_SECONDS = 1.0
MAX_SIZE = 1000  # rows and columns, as sql/081 checks


class Recorder:
    """A session's events as asciicast v2 lines, waiting to be stored.

    Pure state: the caller passes the time of each event (seconds since the session started)
    and takes the pending lines with `take()`.
    """

    def __init__(self, max_bytes: int = DEFAULT_MAX_BYTES) -> None:
        self.max_bytes = max_bytes
        # A UTF-8 character split across two reads is decoded whole (ill-formed bytes → U+FFFD).
        self._decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        self._pending: list[str] = []
        self.recorded_bytes = 0
        self.truncated = False
        self.bytes_out = 0
        self.bytes_in = 0

    def output(self, data: bytes, at: float) -> None:
        self.bytes_out += len(data)
        text = self._decoder.decode(data)
        if text:
            self._event(at, "o", text)

    def typed(self, data: bytes) -> None:
        """Keystrokes are counted, never recorded (see the module's docstring)."""
        self.bytes_in += len(data)

    def resize(self, cols: int, rows: int, at: float) -> None:
        self._event(at, "r", f"{cols}x{rows}")

    def _event(self, at: float, kind: str, text: str) -> None:
        if self.truncated:
            return
        when = round(max(at, 0.0), 6)
        line = _line(when, kind, text)
        room = self.max_bytes - self.recorded_bytes
        if len(line.encode()) > room:
            # The output up to the cap is kept (one big read must not lose all of it).
            self.truncated = True
            if kind != "o":
                return
            fits, over = 0, len(text)  # binary search: the longest prefix whose line fits
            while fits < over:
                mid = (fits + over + 1) // 2
                if len(_line(when, kind, text[:mid]).encode()) <= room:
                    fits = mid
                else:
                    over = mid - 1
            if not fits:
                return
            line = _line(when, kind, text[:fits])
        self.recorded_bytes += len(line.encode())
        self._pending.append(line)

    def take(self) -> str:
        """The lines recorded since the last call."""
        text, self._pending = "".join(self._pending), []
        return text


def _line(at: float, kind: str, text: str) -> str:
    return json.dumps([at, kind, text], ensure_ascii=False) + "\n"


@dataclass(frozen=True)
class Recording:
    id: int
    user_id: int | None
    username: str
    server_id: int | None
    server_name: str | None
    started_at: datetime
    ended_at: datetime | None
    cols: int
    rows: int
    exit_code: int | None
    exit_signal: int | None
    bytes_out: int
    bytes_in: int
    truncated: bool

    def header(self) -> dict[str, object]:
        """The asciicast v2 header line."""
        return {
            "version": 2,
            "width": self.cols,
            "height": self.rows,
            "timestamp": int(self.started_at.timestamp()),
            "env": {"TERM": "xterm-256color"},
            "title": f"{self.username}@{self.server_name or self.server_id}",
        }

    def as_json(self) -> dict[str, object]:
        return {
            "id": self.id,
            "user_id": self.user_id,
            "username": self.username,
            "server_id": self.server_id,
            "server_name": self.server_name,
            "started_at": self.started_at.isoformat(),
            "ended_at": self.ended_at.isoformat() if self.ended_at else None,
            "cols": self.cols,
            "rows": self.rows,
            "exit_code": self.exit_code,
            "exit_signal": self.exit_signal,
            "bytes_out": self.bytes_out,
            "bytes_in": self.bytes_in,
            "truncated": self.truncated,
        }


def clamp_size(cols: int, rows: int) -> tuple[int, int]:
    return min(max(cols, 1), MAX_SIZE), min(max(rows, 1), MAX_SIZE)


async def start(
    db: asyncpg.Pool | asyncpg.Connection, *, user: User, server_id: int, cols: int, rows: int
) -> int:
    """A new recording row (before the shell starts); returns its id."""
    cols, rows = clamp_size(cols, rows)
    recording_id: int = await db.fetchval(
        "INSERT INTO pty_recordings (user_id, username, server_id, server_name, cols, rows)"
        " VALUES ($1, $2, $3, (SELECT name FROM servers WHERE id = $3), $4, $5) RETURNING id",
        user.id,
        user.username,
        server_id,
        cols,
        rows,
    )
    return recording_id


async def append(
    db: asyncpg.Pool | asyncpg.Connection, recording_id: int, seq: int, events: str
) -> None:
    await db.execute(
        "INSERT INTO pty_recording_chunks (recording_id, seq, events) VALUES ($1, $2, $3)",
        recording_id,
        seq,
        events.replace("\x00", "\ufffd"),  # json.dumps escapes NUL; belt and braces for text
    )


async def finish(
    db: asyncpg.Pool | asyncpg.Connection,
    recording_id: int,
    recorder: Recorder,
    *,
    exit_code: int | None,
    exit_signal: int | None,
) -> None:
    await db.execute(
        "UPDATE pty_recordings SET ended_at = now(), exit_code = $2, exit_signal = $3,"
        " bytes_out = $4, bytes_in = $5, truncated = $6 WHERE id = $1",
        recording_id,
        exit_code,
        exit_signal,
        recorder.bytes_out,
        recorder.bytes_in,
        recorder.truncated,
    )


async def get(db: asyncpg.Pool | asyncpg.Connection, recording_id: int) -> Recording | None:
    row = await db.fetchrow(
        "SELECT id, user_id, username, server_id, server_name, started_at, ended_at, cols, rows,"
        " exit_code, exit_signal, bytes_out, bytes_in, truncated"
        " FROM pty_recordings WHERE id = $1",
        recording_id,
    )
    return Recording(**dict(row)) if row else None


async def cast_lines(pool: asyncpg.Pool, recording: Recording) -> AsyncIterator[str]:
    """The asciicast v2 document: the header line, then the stored chunks in order (read a few
    at a time, so a long recording is not held in memory at once)."""
    yield json.dumps(recording.header(), ensure_ascii=False) + "\n"
    seq = -1
    while True:
        rows = await pool.fetch(
            "SELECT seq, events FROM pty_recording_chunks WHERE recording_id = $1 AND seq > $2"
            " ORDER BY seq LIMIT 64",
            recording.id,
            seq,
        )
        if not rows:
            return
        for row in rows:
            yield row["events"]
        seq = rows[-1]["seq"]


class SessionRecording:
    """A recording being made: a Recorder timed from the session's start, its events appended
    to the database as numbered chunks. Storage errors are logged and the events kept for the
    next flush, so a database hiccup never ends a terminal session."""

    def __init__(
        self, db: asyncpg.Pool, recording_id: int, recorder: Recorder, started: float
    ) -> None:
        self.db = db
        self.id = recording_id
        self.recorder = recorder
        self.started = started
        self._seq = 0
        self._unsaved = ""

    @classmethod
    async def begin(
        cls,
        db: asyncpg.Pool,
        *,
        user: User,
        server_id: int,
        cols: int,
        rows: int,
        max_bytes: int = DEFAULT_MAX_BYTES,
    ) -> SessionRecording:
        recording_id = await start(db, user=user, server_id=server_id, cols=cols, rows=rows)
        return cls(db, recording_id, Recorder(max_bytes), time.monotonic())

    def elapsed(self) -> float:
        return time.monotonic() - self.started

    def output(self, data: bytes) -> None:
        self.recorder.output(data, self.elapsed())

    def typed(self, data: bytes) -> None:
        self.recorder.typed(data)

    def resize(self, cols: int, rows: int) -> None:
        self.recorder.resize(cols, rows, self.elapsed())

    async def flush(self) -> None:
        self._unsaved += self.recorder.take()
        if self._unsaved:
            await append(self.db, self.id, self._seq, self._unsaved)
            self._seq += 1
            self._unsaved = ""

    async def flush_periodically(self, seconds: float = FLUSH_SECONDS) -> None:
        """Run as a task while the session lasts; cancel it before `end`."""
        while True:
            await asyncio.sleep(seconds)
            try:
                await self.flush()
            except Exception as err:  # database away: keep the events, try again
                log.warning("cannot store terminal recording id=%s error=%s", self.id, err)

    async def end(self, *, exit_code: int | None, exit_signal: int | None) -> None:
        """Store what is left and the outcome; errors are logged, not raised."""
        try:
            await self.flush()
            await finish(
                self.db, self.id, self.recorder, exit_code=exit_code, exit_signal=exit_signal
            )
        except Exception as err:
            log.warning("cannot finish terminal recording id=%s error=%s", self.id, err)

    def summary(self) -> dict[str, object]:
        """For the audit entry that closes the session."""
        found: dict[str, object] = {
            "recording": self.id,
            "seconds": round(self.elapsed(), 1),
            "bytes_out": self.recorder.bytes_out,
            "bytes_in": self.recorder.bytes_in,
        }
        if self.recorder.truncated:
            found["truncated"] = True
        return found


async def delete_older_than(db: asyncpg.Pool, seconds: float) -> int:
    """Recordings follow the audit log's retention (web.audit_retention)."""
    result: str = await db.execute(
        "DELETE FROM pty_recordings WHERE started_at < now() - make_interval(secs => $1)",
        seconds,
    )
    return int(result.split()[-1])
