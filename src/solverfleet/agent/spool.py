"""Durable usage spool: append-only JSON lines on disk, an ack cursor, replay after a crash.

Layout (one directory): segments ``000000000001.jsonl``, ``000000000002.jsonl``, ... and
``cursor`` (``{"segment": n, "offset": bytes}``: everything before it is acknowledged).

- ``append`` is one ``write()`` of one complete line on an ``O_APPEND`` descriptor: once it
  returns the bytes are in the kernel, so ``kill -9`` of this process cannot lose them (a power
  cut can; that would need an fsync per call).
- The cursor moves only after the collector acknowledged a batch, by writing a temp file and
  ``os.replace`` (atomic). A crash between ack and cursor write re-sends a batch; the
  collector ignores known ``event_id``s, so nothing counts twice.
- Opening replays: everything after the cursor is pending again. A torn last line (no
  newline: the write never completed) is cut off; a line that does not parse is skipped and
  logged, so one bad record never blocks the rest.
- Segments roll over at ``segment_bytes``; fully acknowledged ones are deleted.
"""

from __future__ import annotations

import json
import logging
import os
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

Pos = tuple[int, int]  # (segment number, byte offset)
_SUFFIX = ".jsonl"


class SpoolError(OSError):
    """An append that did not reach the spool file; the event is not recorded."""


@dataclass(slots=True)
class Entry:
    event: dict[str, Any]
    end: Pos  # position just after this line
    lines: int  # lines consumed from the batch start through this entry
    legacy: bool  # written by an earlier process (replayed)


@dataclass(slots=True)
class Batch:
    entries: list[Entry] = field(default_factory=list)
    end: Pos = (0, 0)
    lines: int = 0  # includes skipped corrupt lines


class Spool:
    def __init__(self, directory: str | os.PathLike[str], *, segment_bytes: int = 16 << 20):
        self.dir = Path(directory)
        self.dir.mkdir(parents=True, exist_ok=True)
        self.segment_bytes = segment_bytes
        self._lock = threading.Lock()
        self._fd = -1
        self.rejected_path = self.dir / "rejected.jsonl"
        self._recover()

    # ---- opening ----------------------------------------------------------------------------

    def _segment_path(self, number: int) -> Path:
        return self.dir / f"{number:012d}{_SUFFIX}"

    def _segments(self) -> list[int]:
        numbers = []
        for path in self.dir.glob(f"*{_SUFFIX}"):
            if path.stem.isdigit():
                numbers.append(int(path.stem))
        return sorted(numbers)

    def _recover(self) -> None:
        self.cursor = self._read_cursor()
        for number in self._segments():
            if number < self.cursor[0]:
                self._segment_path(number).unlink(missing_ok=True)
        segments = self._segments()
        active = segments[-1] if segments else max(self.cursor[0], 1)
        if not segments or self.cursor[0] > active:
            self.cursor = (active, 0)
        path = self._segment_path(active)
        self._cut_torn_tail(path)
        self._fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        self._active = active
        self._size = os.fstat(self._fd).st_size
        self.legacy_end: Pos = (active, self._size)
        self.pending = self._count_lines(self.cursor)

    def _read_cursor(self) -> Pos:
        try:
            data = json.loads((self.dir / "cursor").read_text())
            return int(data["segment"]), int(data["offset"])
        except FileNotFoundError:
            segments = self._segments()
            return (segments[0] if segments else 1), 0
        except (ValueError, KeyError, TypeError):
            # A cursor we cannot read: replay everything; the collector dedups by event_id.
            log.error("spool cursor unreadable; replaying all segments")
            segments = self._segments()
            return (segments[0] if segments else 1), 0

    @staticmethod
    def _cut_torn_tail(path: Path) -> None:
        try:
            with open(path, "rb+") as fh:
                data = fh.read()
                keep = data.rfind(b"\n") + 1
                if keep != len(data):
                    log.warning(
                        "spool %s: cutting a torn last line (%d bytes)", path.name, len(data) - keep
                    )
                    fh.truncate(keep)
        except FileNotFoundError:
            pass

    def _count_lines(self, start: Pos) -> int:
        count = 0
        for number in self._segments():
            if number < start[0]:
                continue
            with open(self._segment_path(number), "rb") as fh:
                if number == start[0]:
                    fh.seek(start[1])
                for chunk in iter(lambda fh=fh: fh.read(1 << 20), b""):
                    count += chunk.count(b"\n")
        return count

    # ---- writing ----------------------------------------------------------------------------

    def append(self, event: dict[str, Any]) -> None:
        """Record one event durably (against process death) before the caller answers."""
        data = (json.dumps(event, separators=(",", ":")) + "\n").encode()
        with self._lock:
            if self._size >= self.segment_bytes:
                self._roll()
            try:
                written = os.write(self._fd, data)
                while written < len(data):  # short write (disk nearly full): finish or fail
                    written += os.write(self._fd, data[written:])
            except OSError as exc:
                # Leave no half line behind: the next append would glue onto it.
                os.ftruncate(self._fd, self._size)
                raise SpoolError(exc.errno, f"spool write failed: {exc.strerror}") from None
            self._size += len(data)
            self.pending += 1

    def _roll(self) -> None:
        os.close(self._fd)
        self._active += 1
        self._fd = os.open(
            self._segment_path(self._active), os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600
        )
        self._size = 0

    def reject(self, entry: Entry, reason: str) -> None:
        """Keep an event the collector refused as malformed, for a human to look at."""
        line = json.dumps({"reason": reason, "event": entry.event}, separators=(",", ":"))
        with open(self.rejected_path, "a", encoding="utf-8") as fh:
            fh.write(line + "\n")

    # ---- reading and acknowledging ----------------------------------------------------------

    def read_batch(self, max_events: int = 1000, max_bytes: int = 4 << 20) -> Batch:
        """Up to ``max_events`` complete, unacknowledged lines from the cursor on."""
        batch = Batch(end=self.cursor)
        segment, offset = self.cursor
        while len(batch.entries) < max_events:
            active = self._active  # read first: once the writer rolled, `segment` is final
            try:
                with open(self._segment_path(segment), "rb") as fh:
                    fh.seek(offset)
                    data = fh.read(max_bytes)
            except FileNotFoundError:
                data = b""
            consumed = self._parse(data, segment, offset, max_events, batch)
            if segment < active and consumed < len(data) and b"\n" not in data[consumed:]:
                # A finished segment ending without a newline: skip the fragment.
                log.error("spool %012d: skipping a torn line", segment)
                consumed = len(data)
                batch.lines += 1
                batch.end = (segment, offset + consumed)
            if consumed < len(data) or len(data) == max_bytes or segment >= active:
                break  # event limit, byte budget, or the live end of the spool
            segment, offset = segment + 1, 0
            batch.end = (segment, 0)
        return batch

    def _parse(self, data: bytes, segment: int, offset: int, max_events: int, batch: Batch) -> int:
        consumed = 0
        while len(batch.entries) < max_events:
            newline = data.find(b"\n", consumed)
            if newline < 0:
                break  # no complete line left (a concurrent append in progress)
            line = data[consumed:newline]
            consumed = newline + 1
            end = (segment, offset + consumed)
            batch.end = end
            batch.lines += 1
            try:
                event = json.loads(line)
                if not isinstance(event, dict):
                    raise ValueError("not an object")
            except ValueError:
                log.error("spool %012d@%d: skipping a corrupt line", segment, end[1])
                continue
            batch.entries.append(Entry(event, end, batch.lines, end <= self.legacy_end))
        return consumed

    def ack(self, end: Pos, lines: int) -> None:
        """Everything before ``end`` is acknowledged by the collector."""
        with self._lock:
            self.cursor = end  # in memory first: this process never re-sends an acked batch
            self.pending -= lines
            try:
                tmp = self.dir / "cursor.tmp"
                tmp.write_text(json.dumps({"segment": end[0], "offset": end[1]}))
                os.replace(tmp, self.dir / "cursor")
            except OSError as exc:
                # The next ack retries; a crash before then re-sends, and the collector dedups.
                log.error("spool cursor not saved: %s", exc.strerror)
                return
            for number in self._segments():
                if number < end[0]:
                    self._segment_path(number).unlink(missing_ok=True)

    def close(self) -> None:
        with self._lock:
            if self._fd >= 0:
                os.close(self._fd)
                self._fd = -1
