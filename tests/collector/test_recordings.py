"""Terminal session recordings (collector/fleet/recordings.py, sql/081): asciicast v2 events,
the size cap, keystrokes counted but never stored, chunks read back in order."""

from __future__ import annotations

import json

import asyncpg
import pytest

from vpsmon.collector import accounts
from vpsmon.collector.fleet import recordings
from vpsmon.collector.fleet.recordings import Recorder


def events(text: str) -> list[list[object]]:
    return [json.loads(line) for line in text.splitlines()]


def test_output_and_resizes_become_asciicast_v2_events_with_their_times() -> None:
    recorder = Recorder()
    recorder.output(b"$ echo hello\r\n", 0.5)
    recorder.resize(120, 40, 1.25)
    recorder.output(b"hello\r\n", 2.0000004)
    assert events(recorder.take()) == [
        [0.5, "o", "$ echo hello\r\n"],
        [1.25, "r", "120x40"],
        [2.0, "o", "hello\r\n"],
    ]
    assert recorder.take() == ""
    assert recorder.bytes_out == len(b"$ echo hello\r\nhello\r\n")


def test_a_character_split_between_two_reads_is_recorded_whole() -> None:
    recorder = Recorder()
    word = "你好".encode()
    recorder.output(word[:2], 0.1)
    recorder.output(word[2:], 0.2)
    assert "".join(str(e[2]) for e in events(recorder.take())) == "你好"


def test_keystrokes_are_counted_but_not_recorded() -> None:
    recorder = Recorder()
    recorder.typed(b"hunter2\r")
    assert recorder.take() == ""
    assert recorder.bytes_in == 8


def test_output_past_the_cap_is_recorded_up_to_the_cap_and_marks_the_recording_truncated() -> None:
    recorder = Recorder(max_bytes=100)
    recorder.output(b"a" * 50, 0.0)  # a line of 65 bytes, 35 left
    recorder.output("b你".encode() * 20, 1.0)  # would pass 100 bytes: its start is kept
    recorder.output(b"c", 2.0)  # nothing more after the cap, even if it would fit
    recorder.resize(10, 10, 3.0)
    text = recorder.take()
    assert events(text) == [[0.0, "o", "a" * 50], [1.0, "o", "b你" * 5]]
    assert recorder.truncated and recorder.bytes_out == 50 + 80 + 1
    assert recorder.recorded_bytes == len(text.encode()) == 100


async def test_a_stored_recording_reads_back_as_one_asciicast_document(
    pool: asyncpg.Pool,
) -> None:
    user = await accounts.create_user(pool, "olga", "correct horse battery", "operator")
    server_id = await pool.fetchval(
        "INSERT INTO servers (name, url) VALUES ('web<1>', 'http://10.0.0.1:9190/metrics')"
        " RETURNING id"
    )
    recording_id = await recordings.start(pool, user=user, server_id=server_id, cols=5000, rows=0)
    recorder = Recorder()
    for seq in range(70):  # more chunks than one read of cast_lines
        recorder.output(f"line {seq}\r\n".encode(), seq / 10)
        await recordings.append(pool, recording_id, seq, recorder.take())
    recorder.typed(b"exit\r")
    await recordings.finish(pool, recording_id, recorder, exit_code=0, exit_signal=0)

    found = await recordings.get(pool, recording_id)
    assert found is not None
    assert (found.username, found.server_name, found.cols, found.rows) == (
        "olga",
        "web<1>",
        1000,
        1,
    )
    assert (found.exit_code, found.bytes_in, found.truncated) == (0, 5, False)
    assert found.ended_at is not None
    lines = [line async for line in recordings.cast_lines(pool, found)]
    header, *rest = "".join(lines).splitlines()
    assert json.loads(header)["version"] == 2 and json.loads(header)["width"] == 1000
    assert [json.loads(e)[2] for e in rest] == [f"line {i}\r\n" for i in range(70)]
    assert await recordings.get(pool, recording_id + 1) is None


async def test_recordings_older_than_the_retention_are_deleted_with_their_chunks(
    pool: asyncpg.Pool,
) -> None:
    user = await accounts.create_user(pool, "olga", "correct horse battery", "operator")
    old = await recordings.start(pool, user=user, server_id=1, cols=80, rows=24)
    new = await recordings.start(pool, user=user, server_id=1, cols=80, rows=24)
    await recordings.append(pool, old, 0, '[0.1, "o", "x"]\n')
    await pool.execute(
        "UPDATE pty_recordings SET started_at = now() - interval '2 days' WHERE id = $1", old
    )
    assert await recordings.delete_older_than(pool, 86400) == 1
    assert await recordings.get(pool, old) is None and await recordings.get(pool, new) is not None
    assert await pool.fetchval("SELECT count(*) FROM pty_recording_chunks") == 0


async def test_a_session_recording_keeps_its_events_while_the_database_refuses_them(
    pool: asyncpg.Pool,
) -> None:
    user = await accounts.create_user(pool, "olga", "correct horse battery", "operator")
    recording = await recordings.SessionRecording.begin(
        pool, user=user, server_id=1, cols=80, rows=24
    )
    recording.output(b"before ")
    await recording.flush()
    await pool.execute("ALTER TABLE pty_recording_chunks RENAME TO away")
    recording.output(b"during ")
    with pytest.raises(asyncpg.UndefinedTableError):
        await recording.flush()
    await pool.execute("ALTER TABLE away RENAME TO pty_recording_chunks")
    recording.output(b"after")
    recording.typed(b"x")
    await recording.end(exit_code=0, exit_signal=0)

    found = await recordings.get(pool, recording.id)
    assert found is not None and found.exit_code == 0 and found.bytes_in == 1
    text = "".join([line async for line in recordings.cast_lines(pool, found)])
    assert "".join(json.loads(e)[2] for e in text.splitlines()[1:]) == "before during after"
    assert recording.summary()["recording"] == recording.id
