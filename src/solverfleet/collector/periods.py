"""Refill periods: which period of a key's refill schedule a moment falls in.

A period is named by its first day (``YYYY-MM-DD``), the 00:00 UTC boundary that opened it:
every day for ``daily``; day ``day`` of each month for ``monthly``, clamped to the month's last
day (31 is the 30th in April, the 28th or 29th in February). Names sort in time order.
"""

from __future__ import annotations

import calendar
import datetime as dt

_UTC = dt.UTC


def _due(year: int, month: int, day: int) -> dt.date:
    return dt.date(year, month, min(day, calendar.monthrange(year, month)[1]))


def current_period(interval: str, day: int | None, now_ms: int) -> str:
    """The period under way at ``now_ms`` (unix ms): the latest boundary at or before it."""
    today = dt.datetime.fromtimestamp(now_ms // 1000, _UTC).date()
    if interval == "daily":
        return today.isoformat()
    if interval != "monthly" or day is None:
        raise ValueError(f"unknown refill schedule {interval!r} day {day!r}")
    due = _due(today.year, today.month, day)
    if today < due:
        year, month = (today.year, today.month - 1) if today.month > 1 else (today.year - 1, 12)
        due = _due(year, month, day)
    return due.isoformat()
