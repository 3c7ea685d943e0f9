"""The durable spool: append, read, ack, replay after a crash, torn and corrupt lines."""

from __future__ import annotations

import errno
import json
import os

import pytest

from solverfleet.agent import spool as spool_module
from solverfleet.agent.spool import Spool, SpoolError


def ev(n: int) -> dict:
    return {"event_id": f"{n:032x}", "n": n}


def ids(batch) -> list[int]:
    return [entry.event["n"] for entry in batch.entries]


def test_append_read_ack(tmp_path):
    spool = Spool(tmp_path)
    for n in range(5):
        spool.append(ev(n))
    assert spool.pending == 5
    batch = spool.read_batch(3)
    assert ids(batch) == [0, 1, 2] and batch.lines == 3
    assert ids(spool.read_batch(3)) == [0, 1, 2]  # unacked: read again
    spool.ack(batch.end, batch.lines)
    assert spool.pending == 2
    rest = spool.read_batch(10)
    assert ids(rest) == [3, 4]
    spool.ack(rest.end, rest.lines)
    assert spool.pending == 0 and spool.read_batch(10).entries == []


def test_replay_after_crash_reopen_without_close(tmp_path):
    first = Spool(tmp_path)
    for n in range(5):
        first.append(ev(n))
    batch = first.read_batch(2)
    first.ack(batch.end, batch.lines)
    # "kill -9": the first object is simply abandoned, never closed or flushed.
    second = Spool(tmp_path)
    assert second.pending == 3
    replay = second.read_batch(10)
    assert ids(replay) == [2, 3, 4]
    assert all(entry.legacy for entry in replay.entries)
    second.append(ev(5))
    assert [e.legacy for e in second.read_batch(10).entries] == [True, True, True, False]


def test_torn_last_line_is_cut_and_appends_continue(tmp_path):
    spool = Spool(tmp_path)
    spool.append(ev(0))
    segment = next(tmp_path.glob("*.jsonl"))
    with open(segment, "ab") as fh:
        fh.write(b'{"event_id": "torn-in-the-midd')  # a write that never completed
    reopened = Spool(tmp_path)
    assert reopened.pending == 1
    reopened.append(ev(1))
    assert ids(reopened.read_batch(10)) == [0, 1]
    assert segment.read_bytes().count(b"\n") == 2 and b"torn" not in segment.read_bytes()


def test_corrupt_line_in_the_middle_is_skipped_not_blocking(tmp_path):
    spool = Spool(tmp_path)
    spool.append(ev(0))
    segment = next(tmp_path.glob("*.jsonl"))
    with open(segment, "ab") as fh:
        fh.write(b"\x00\x00garbage\n")  # e.g. a disk error, found on the next start
    spool = Spool(tmp_path)
    spool.append(ev(1))
    assert spool.pending == 3
    batch = spool.read_batch(10)
    assert ids(batch) == [0, 1] and batch.lines == 3
    spool.ack(batch.end, batch.lines)
    assert spool.pending == 0


def test_only_corrupt_lines_still_advance(tmp_path):
    Spool(tmp_path)
    next(tmp_path.glob("*.jsonl")).write_bytes(b"[1,2]\nnot json\n")
    spool = Spool(tmp_path)
    batch = spool.read_batch(10)
    assert batch.entries == [] and batch.lines == 2


def test_segments_roll_and_acked_ones_are_deleted(tmp_path):
    spool = Spool(tmp_path, segment_bytes=200)
    for n in range(20):
        spool.append(ev(n))
    assert len(list(tmp_path.glob("*.jsonl"))) > 3
    seen = []
    while True:
        batch = spool.read_batch(3)
        if not batch.lines:
            break
        seen += ids(batch)
        spool.ack(batch.end, batch.lines)
    assert seen == list(range(20)) and spool.pending == 0
    assert len(list(tmp_path.glob("*.jsonl"))) == 1  # only the live segment is left
    reopened = Spool(tmp_path, segment_bytes=200)
    assert reopened.pending == 0 and reopened.read_batch(10).entries == []


def test_cursor_survives_reopen(tmp_path):
    spool = Spool(tmp_path)
    for n in range(3):
        spool.append(ev(n))
    batch = spool.read_batch(2)
    spool.ack(batch.end, batch.lines)
    spool.close()
    assert json.loads((tmp_path / "cursor").read_text())["offset"] == batch.end[1]
    assert ids(Spool(tmp_path).read_batch(10)) == [2]


def test_unreadable_cursor_replays_everything(tmp_path):
    spool = Spool(tmp_path)
    for n in range(3):
        spool.append(ev(n))
    batch = spool.read_batch(2)
    spool.ack(batch.end, batch.lines)
    (tmp_path / "cursor").write_text("{not json")
    # Sending acked events again is safe: the collector ignores known event ids.
    assert ids(Spool(tmp_path).read_batch(10)) == [0, 1, 2]


def test_failed_write_leaves_no_half_line(tmp_path, monkeypatch):
    spool = Spool(tmp_path)
    spool.append(ev(0))
    real_write = os.write
    calls = []

    def short_then_full(fd, data):
        calls.append(len(data))
        if len(calls) == 1:
            return real_write(fd, data[:10])  # short write ...
        raise OSError(errno.ENOSPC, "No space left on device")  # ... then the disk is full

    monkeypatch.setattr(spool_module.os, "write", short_then_full)
    with pytest.raises(SpoolError):
        spool.append(ev(1))
    monkeypatch.setattr(spool_module.os, "write", real_write)
    spool.append(ev(2))
    assert ids(spool.read_batch(10)) == [0, 2] and spool.pending == 2


def test_rejected_events_are_kept_aside(tmp_path):
    spool = Spool(tmp_path)
    spool.append(ev(0))
    (entry,) = spool.read_batch(1).entries
    spool.reject(entry, "collector answered 400")
    kept = json.loads(spool.rejected_path.read_text())
    assert kept == {"reason": "collector answered 400", "event": ev(0)}
