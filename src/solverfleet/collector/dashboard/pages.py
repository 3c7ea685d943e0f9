"""The dashboard's read pages. Each is a thin view over the admin API's own query functions
(``accounts``, ``keys``, ``reports``, ``solvelog``, ``notifications``), so a page shows what the
API answers. Query strings are strict like the API's: an unknown or repeated parameter is a
400, and a bad filter value shows the form again with the reason and a 400."""

from __future__ import annotations

from flask import Response, url_for

from solverfleet.collector import accounts, audit, keys
from solverfleet.collector.context import current
from solverfleet.collector.dashboard import chartviews, queries
from solverfleet.collector.dashboard.base import bp, query_args, refreshing, render
from solverfleet.collector.ingest import STATUSES
from solverfleet.collector.notify import notifications
from solverfleet.collector.problems import Invalid
from solverfleet.collector.reporting import reports, solvelog
from solverfleet.collector.reporting.timerange import day_start, parse_range, parse_time

REFRESH_S = 5  # live pages re-read their tables this often (dashboard.js)
LOG_PAGE = 50
KEY_RECENT = 20
NOTIFICATIONS = 100
RANGE = ("since", "until")
LOG_PARAMS = (*solvelog.FILTERS, *RANGE, "cursor")
NOTIFY_PARAMS = ("account", "since")
AUDIT_PARAMS = (*audit.FILTERS, *RANGE, "cursor")
AUDIT_PAGE = 50


@bp.get("/")
def overview() -> Response:
    c = current()
    db = c.db
    found = accounts.list_keys(db)
    return render(
        "overview.html",
        title="Accounts and keys",
        page="overview",
        refresh=REFRESH_S,
        accounts=queries.accounts(db),
        keys=found,
        flags=queries.key_flags(db, found),
        leased=queries.leased_by_key(db),
        users=accounts.list_users(db),
        newest_usage_ms=queries.newest_usage_ms(db),
        # A re-read every 5 s leaves the charts as they are: no 30-day scan each time.
        charts=None if refreshing() else chartviews.activity(db, c.now_ms(), "fleet"),
    )


@bp.get("/keys/<key_id>")
def key(key_id: str) -> Response:
    c = current()
    db = c.db
    found = accounts.get_key(db, key_id)  # 404 page for an unknown key
    recent = solvelog.solve_log(db, solvelog.LogFilter(key=key_id), limit=KEY_RECENT)
    charts = None  # as on the overview: not on a re-read
    if not refreshing():
        now_ms = c.now_ms()
        charts = chartviews.balance(db, key_id, now_ms)
        charts += chartviews.activity(db, now_ms, "key", key=key_id)
    return render(
        "key.html",
        title=f"Key {key_id}",
        page="overview",
        refresh=REFRESH_S,
        key=found,
        flags=queries.key_flags(db, [found])[key_id],
        transactions=keys.transactions(db, key_id, limit=KEY_RECENT),
        events=recent["events"],
        newest_usage_ms=queries.newest_usage_ms(db),
        charts=charts,
    )


@bp.get("/usage")
def usage() -> Response:
    args = query_args(RANGE)
    c = current()
    now_ms = c.now_ms()
    context = {"title": "Usage", "page": "usage", "form": args}
    try:
        # Like the admin API's reports: today (UTC) unless a range is asked for.
        period = parse_range(
            args.get("since"), args.get("until"), now_ms, default_since=day_start(now_ms)
        )
    except Invalid as exc:
        return render("usage.html", 400, error=exc.message, **context)
    stats = reports.stats_report(c.db, period)
    return render(
        "usage.html",
        error=None,
        team=reports.team_report(c.db, period, now_ms=now_ms),
        projects=reports.projects_report(c.db, period),
        key_report=reports.keys_report(c.db, period),
        # A key of a deactivated user is refused by agents: not shown as "active".
        inactive_users={u["id"] for u in accounts.list_users(c.db) if not u["active"]},
        stats=stats,
        type_charts=chartviews.per_type(stats),
        **context,
    )


@bp.get("/solves")
def solves() -> Response:
    args = query_args(LOG_PARAMS)
    c = current()
    context = {
        "title": "Recent solves",
        "page": "solves",
        "form": args,
        "statuses": STATUSES,
        "filtered": any(name in args for name in (*solvelog.FILTERS, *RANGE)),
    }
    try:
        filters = solvelog.LogFilter(
            **{name: args.get(name) for name in solvelog.FILTERS},
            range=parse_range(args.get("since"), args.get("until"), c.now_ms()),
        )
        found = solvelog.solve_log(c.db, filters, limit=LOG_PAGE, cursor=args.get("cursor"))
    except Invalid as exc:
        return render("solves.html", 400, error=exc.message, events=[], older=None, **context)
    older = None
    if found["next_cursor"]:
        kept = {name: value for name, value in args.items() if name != "cursor"}
        older = url_for("dashboard.solves", **kept, cursor=found["next_cursor"])
    first = url_for("dashboard.solves", **{n: v for n, v in args.items() if n != "cursor"})
    return render(
        "solves.html",
        error=None,
        events=found["events"],
        older=older,
        first=first if "cursor" in args else None,
        refresh=None if "cursor" in args else REFRESH_S,
        **context,
    )


@bp.get("/audit")
def audit_page() -> Response:
    args = query_args(AUDIT_PARAMS)
    c = current()
    context = {
        "title": "Audit log",
        "page": "audit",
        "form": args,
        "filtered": any(name in args for name in (*audit.FILTERS, *RANGE)),
    }
    try:
        filters = audit.AuditFilter(
            **{name: args.get(name) for name in audit.FILTERS},
            range=parse_range(args.get("since"), args.get("until"), c.now_ms()),
        )
        found = audit.list_entries(c.db, filters, limit=AUDIT_PAGE, cursor=args.get("cursor"))
    except Invalid as exc:
        return render("audit.html", 400, error=exc.message, entries=[], older=None, **context)
    kept = {name: value for name, value in args.items() if name != "cursor"}
    older = None
    if found["next_cursor"]:
        older = url_for("dashboard.audit_page", **kept, cursor=found["next_cursor"])
    return render(
        "audit.html",
        error=None,
        entries=found["entries"],
        older=older,
        first=url_for("dashboard.audit_page", **kept) if "cursor" in args else None,
        refresh=None if "cursor" in args else REFRESH_S,
        **context,
    )


@bp.get("/notifications")
def notifications_page() -> Response:
    args = query_args(NOTIFY_PARAMS)
    c = current()
    context = {"title": "Notifications", "page": "notifications", "form": args}
    try:
        since_ms = parse_time(args["since"], c.now_ms(), name="since") if "since" in args else None
    except Invalid as exc:
        return render("notifications.html", 400, error=exc.message, **context)
    account = args.get("account")
    return render(
        "notifications.html",
        error=None,
        refresh=REFRESH_S,
        limit=NOTIFICATIONS,
        notifications=notifications.list_notifications(
            c.db, account=account, since_ms=since_ms, limit=NOTIFICATIONS
        ),
        deferred=notifications.deferred(c.db, account=account),
        **context,
    )


@bp.get("/fleet")
def fleet() -> Response:
    c = current()
    agents = reports.agents(c.db)
    now_ms = c.now_ms()
    for agent in agents:
        agent["last_seen_ms"] = round(agent["last_seen"] * 1000)
        agent.update(queries.agent_health(agent, now_ms=now_ms, lease_ttl=c.settings.lease_ttl))
    return render(
        "fleet.html",
        title="Fleet",
        page="fleet",
        refresh=REFRESH_S,
        agents=agents,
        lease_ttl=c.settings.lease_ttl,
        ok_within=queries.OK_WITHIN_S,
    )
