"""The charts on the dashboard's pages: store figures (``chartdata``, the usage page's
``stats_report``) turned into SVG (``charts``), and the activity page that charts one
account, user, key or project (``/dashboard/activity?account=acme``)."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from flask import Response
from markupsafe import Markup

from solverfleet.collector import accounts
from solverfleet.collector.context import current
from solverfleet.collector.dashboard import chartdata, charts
from solverfleet.collector.dashboard.base import bp, query_args, render
from solverfleet.collector.dashboard.chartdata import DAILY, HOURLY, SCOPES
from solverfleet.collector.store import Database
from solverfleet.money import format_micros


def activity(db: Database, now_ms: int, name: str, **scope: str) -> list[Markup]:
    """Solves and spend, hourly (48 h) and daily (30 days): four column charts."""
    out = []
    for grain, span in ((HOURLY, "last 48 hours"), (DAILY, "last 30 days")):
        buckets = chartdata.activity(db, grain, now_ms, **scope)
        solves = [charts.Point(b.label, b.solves, str(b.solves)) for b in buckets]
        spend = [
            charts.Point(b.label, b.cost_micros, format_micros(b.cost_micros)) for b in buckets
        ]
        total_solves = sum(b.solves for b in buckets)
        total_spend = sum(b.cost_micros for b in buckets)
        out.append(
            charts.column_chart(
                f"{name}-solves-{grain.name}",
                f"Solves per {'hour' if grain is HOURLY else 'day'}, {span}",
                solves,
                total=total_solves,
                total_shown=str(total_solves),
            )
        )
        out.append(
            charts.column_chart(
                f"{name}-spend-{grain.name}",
                f"Spend per {'hour' if grain is HOURLY else 'day'}, {span}",
                spend,
                total=total_spend,
                total_shown=format_micros(total_spend),
            )
        )
    return out


def balance(db: Database, key_id: str, now_ms: int) -> list[Markup]:
    """The key's balance at the end of each hour (48 h) and each day (30 days)."""
    out = []
    for grain, title in (
        (HOURLY, "Balance at the end of each hour, last 48 hours"),
        (DAILY, "Balance at the end of each day, last 30 days"),
    ):
        buckets = chartdata.balance_history(db, key_id, grain, now_ms)
        points = [
            charts.Point(b.label, b.cost_micros, format_micros(b.cost_micros)) for b in buckets
        ]
        out.append(charts.line_chart(f"key-balance-{grain.name}", title, points))
    return out


def per_type(stats: dict[str, Any]) -> list[Markup]:
    """Success rate (in hundredths of a percent: exact integers) and p50/p95 latency per
    captcha type, from the ``reports.stats_report`` the Usage page already reads: its
    percentiles are exact nearest-rank over a histogram SQL groups by (type, duration), so the
    rows read are the distinct durations, not the calls, and no second query runs."""
    rates, latency = [], []
    for row in stats["types"]:
        label = row["type"] or "(none)"
        if row["success_rate"] is not None:
            rates.append(
                charts.Point(label, _hundredths(row["success_rate"]), f"{row['success_rate']} %")
            )
        for pct in ("p50", "p95"):
            ms = row[f"{pct}_ms"]
            if ms is not None:
                latency.append(charts.Point(f"{label} {pct}", int(ms), f"{ms} ms"))
    overall = stats["total"]
    return [
        charts.bar_chart(
            "type-success",
            "Success rate by type (%)",
            rates,
            scale_max=100 * 100,
            total=_hundredths(overall["success_rate"] or "0"),
        ),
        # data-total: the p95 over every type's calls.
        charts.bar_chart(
            "type-latency",
            "Latency by type, p50 and p95 (ms)",
            latency,
            total=int(overall["p95_ms"] or 0),
        ),
    ]


def _hundredths(rate: str) -> int:
    """``"83.33"`` (percent, two decimals, as the reports give it) -> 8333, exactly."""
    return int(Decimal(rate) * 100)


@bp.get("/activity")
def activity_page() -> Response:
    c = current()
    scope = query_args(SCOPES)
    context: dict[str, Any] = {"title": "Activity", "page": "activity", "scopes": SCOPES}
    if len(scope) > 1:
        message = "Chart one of account, user, key or project at a time."
        return render("activity.html", 400, error=message, form=scope, charts=[], **context)
    if "key" in scope:
        accounts.get_key(c.db, scope["key"])  # 404 page for an unknown key
    what = next(iter(scope.items()), None)
    return render(
        "activity.html",
        error=None,
        form=scope,
        heading="the fleet" if what is None else f"{what[0]} {what[1]}",
        charts=activity(c.db, c.now_ms(), "scope", **scope),
        **context,
    )
