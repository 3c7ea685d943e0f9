"""Time bounds for the solve log and reports: text from a query string, UTC epoch ms inside.

Accepted forms, for ``since`` (inclusive) and ``until`` (exclusive):

- ``2026-11-23``: that UTC day. As ``since`` its first instant; as ``until`` the end of it, so
  ``since=2026-11-01&until=2026-11-30`` covers all of November.
- ``2026-11-23T10:00:00Z``, ``2026-11-23T12:00+02:00``, ``2026-11-23 10:00``: an instant; no
  offset means UTC.
- ``30m``, ``24h``, ``7d``: that long before now.
- ``today`` (like today's date) and ``now``.
- ``all``, as ``since`` only: no lower bound (the reports' default is today).
"""

from __future__ import annotations

import datetime as dt
import re
from dataclasses import dataclass

from solverfleet.collector.problems import Invalid

DAY_MS = 86_400_000
HOUR_MS = 3_600_000
MAX_MS = 10**14  # what ingest accepts as ts_ms (year 5138)
_UNITS = {"m": 60_000, "h": HOUR_MS, "d": DAY_MS}
_RELATIVE = re.compile(r"([0-9]{1,7})([mhd])").fullmatch
_DATE = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}").fullmatch
HELP = "use a date (2026-11-23), a UTC time (2026-11-23T10:00:00Z), 30m, 24h, 7d, today or now"


@dataclass(frozen=True)
class TimeRange:
    """``since_ms <= ts_ms < until_ms``; ``None`` leaves that side open."""

    since_ms: int | None = None
    until_ms: int | None = None

    def where(self, column: str = "ts_ms") -> tuple[list[str], list[int]]:
        clauses: list[str] = []
        params: list[int] = []
        if self.since_ms is not None:
            clauses.append(f"{column} >= ?")
            params.append(self.since_ms)
        if self.until_ms is not None:
            clauses.append(f"{column} < ?")
            params.append(self.until_ms)
        return clauses, params

    def as_dict(self) -> dict[str, str | None]:
        return {
            "since": None if self.since_ms is None else iso(self.since_ms),
            "until": None if self.until_ms is None else iso(self.until_ms),
        }


def iso(ms: int) -> str:
    """``1765555555123 -> "2025-12-12T16:05:55.123Z"`` (UTC, milliseconds)."""
    moment = dt.datetime.fromtimestamp(ms // 1000, dt.UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%S") + f".{ms % 1000:03d}Z"


def day_start(ms: int) -> int:
    return ms - ms % DAY_MS


def parse_time(text: str, now_ms: int, *, name: str, end: bool = False) -> int:
    """One bound as epoch ms; ``end`` makes a whole day (a date, ``today``) run to its end."""
    value = text.strip().lower()
    whole_day = DAY_MS if end else 0
    if value == "now":
        return now_ms
    if value == "today":
        return day_start(now_ms) + whole_day
    relative = _RELATIVE(value)
    if relative:
        ms = now_ms - int(relative.group(1)) * _UNITS[relative.group(2)]
    else:
        ms = _absolute(text.strip(), name) + (whole_day if _DATE(value) else 0)
    if not 0 <= ms <= MAX_MS:
        raise Invalid(f"{name}: {text!r} is out of range", "invalid_time")
    return ms


def _absolute(text: str, name: str) -> int:
    try:
        moment = dt.datetime.fromisoformat(text)
    except ValueError:
        raise Invalid(f"{name}: not a time: {text!r} ({HELP})", "invalid_time") from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=dt.UTC)
    delta = moment - dt.datetime(1970, 1, 1, tzinfo=dt.UTC)
    return (delta.days * 86_400 + delta.seconds) * 1000 + delta.microseconds // 1000


def parse_range(
    since: str | None, until: str | None, now_ms: int, *, default_since: int | None = None
) -> TimeRange:
    """Both bounds from query text; 400 when since is not before until.

    A missing or empty bound is open, except that ``default_since`` is the start when neither
    bound is given; ``since=all`` asks for an open start explicitly.
    """
    if not since and not until:
        return TimeRange(default_since, None)
    if since and since.strip().lower() == "all":
        since = None
    start = parse_time(since, now_ms, name="since") if since else None
    stop = parse_time(until, now_ms, name="until", end=True) if until else None
    if start is not None and stop is not None and start >= stop:
        raise Invalid(
            f"since must be before until: since {since!r} is {iso(start)},"
            f" until {until!r} is {iso(stop)}",
            "invalid_time",
        )
    return TimeRange(start, stop)
