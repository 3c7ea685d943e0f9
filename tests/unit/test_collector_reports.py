"""Solve log and reports: filters, cursor paging, totals, exact money, percentiles, bad input
(both stores, in-process collector)."""

from __future__ import annotations

import datetime as dt

import pytest

from solverfleet.collector.problems import Invalid
from solverfleet.collector.reporting import reports, solvelog
from solverfleet.collector.reporting.timerange import (
    DAY_MS,
    TimeRange,
    iso,
    parse_range,
    parse_time,
)
from solverfleet.collector.store import Tx, migrations, schema
from tests.support.collector import T0, AppHarness, event, key_config, team_config, user_config
from tests.support.openapi import Spec

pytest_plugins = ["tests.support.collector", "tests.support.mariadb"]

NOW_MS = int(T0 * 1000)  # 2025-12-12T16:05:55Z, the harness clock
SPEC = Spec.of("solverfleet.collector")


def _team() -> dict:
    return team_config(
        [
            user_config(
                "alice",
                [
                    key_config("alice-web", project="web", environment="prod"),
                    key_config("alice-stg", project="web", environment="staging"),
                ],
                daily_limit=100,
            ),
            user_config("bob", [key_config("bob-scraper", project="scraper", environment="prod")]),
            user_config("carol", [key_config("carol-idle")]),
        ]
    )


def _ev(key: str, user: str, status: str, cost: int, ago_s: float, **extra) -> dict:
    project, environment = {
        "alice-web": ("web", "prod"),
        "alice-stg": ("web", "staging"),
        "bob-scraper": ("scraper", "prod"),
    }[key]
    return event(
        key, user_id=user, status=status, cost=cost, ts=T0 - ago_s,
        project=project, environment=environment, **extra,
    )  # fmt: skip


@pytest.fixture
def h(collector_app: AppHarness) -> AppHarness:
    """Six calls: alice's successes (one 2 days ago), a timeout, bob's solve of yesterday and
    his 2captcha report_bad verdict. Costs chosen so that float sums would show."""
    collector_app.apply(_team())
    calls = [
        _ev("alice-web", "alice", "success", 100_000, 3600, duration_ms=100),
        _ev("alice-web", "alice", "success", 200_000, 60, type="recaptcha-v2", duration_ms=200),
        _ev(
            "alice-stg",
            "alice",
            "failed",
            0,
            30,
            error="worker_timeout",
            message="no answer in 30 s",
            duration_ms=3000,
        ),
        _ev("bob-scraper", "bob", "success", 3, 86_400, duration_ms=50),
        _ev("bob-scraper", "bob", "report_bad", 0, 10, duration_ms=0),
        _ev("alice-web", "alice", "success", 1, 2 * 86_400, duration_ms=400),
    ]
    collector_app.usage(calls)  # one batch: stored in event_id order, listed in time order
    return collector_app


def _log(h: AppHarness, **query) -> dict:
    response = h.admin("GET", "/admin/v1/log", query_string=query)
    assert response.status_code == 200, response.get_json()
    SPEC.check("GET", "/admin/v1/log", response)  # the answer is the documented one
    return response.get_json()


def _report(h: AppHarness, name: str, **query) -> dict:
    response = h.admin("GET", f"/admin/v1/reports/{name}", query_string=query)
    assert response.status_code == 200, response.get_json()
    SPEC.check("GET", f"/admin/v1/reports/{name}", response)
    return response.get_json()


def _keys(page: dict) -> list[tuple[str, str]]:
    return [(e["key_id"], e["status"]) for e in page["events"]]


# --- solve log ---------------------------------------------------------------------------------


def test_log_shows_every_call_newest_first_with_every_field(h: AppHarness) -> None:
    page = _log(h)
    assert page["count"] == 6 and page["next_cursor"] is None
    times = [e["ts_ms"] for e in page["events"]]
    assert times == sorted(times, reverse=True)
    failed = next(e for e in page["events"] if e["status"] == "failed")
    assert failed["ts"] == iso(NOW_MS - 30_000) == "2025-12-12T16:05:25.000Z"
    assert {k: failed[k] for k in failed if k not in ("id", "event_id", "request_id")} == {
        "ts": "2025-12-12T16:05:25.000Z",
        "ts_ms": NOW_MS - 30_000,
        "agent_id": "a1",
        "key_id": "alice-stg",
        "user_id": "alice",
        "user_email": "alice@example.com",
        "account": "acme",
        "project": "web",
        "environment": "staging",
        "type": "turnstile",
        "url": "https://example.com/login",
        "status": "failed",
        "error": "worker_timeout",
        "message": "no answer in 30 s",
        "source_ip": "203.0.113.9",
        "duration_ms": 3000,
        "cost": "0.00",
        "soft_id": None,
    }
    assert len(failed["event_id"]) == 32 and failed["request_id"]
    solved = next(e for e in page["events"] if e["cost"] == "0.000003")
    assert (solved["key_id"], solved["status"], solved["error"]) == ("bob-scraper", "success", None)


WEB_OK = ("alice-web", "success")
STG_FAILED = ("alice-stg", "failed")
BOB_OK = ("bob-scraper", "success")
BOB_BAD = ("bob-scraper", "report_bad")


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        ({"user": "bob"}, [BOB_BAD, BOB_OK]),
        ({"key": "alice-stg"}, [STG_FAILED]),
        ({"project": "scraper", "status": "success"}, [BOB_OK]),
        ({"environment": "staging"}, [STG_FAILED]),
        ({"type": "recaptcha-v2"}, [WEB_OK]),
        ({"status": "report_bad"}, [BOB_BAD]),
        ({"user": "alice", "status": "success", "since": "2025-12-12"}, [WEB_OK, WEB_OK]),
        ({"until": "2025-12-11"}, [BOB_OK, WEB_OK]),  # a date alone: through its end
        ({"since": "2025-12-11", "until": "2025-12-11"}, [BOB_OK]),
        ({"since": "2m"}, [BOB_BAD, STG_FAILED, WEB_OK]),
        ({"since": "2025-12-12T16:05:25Z", "until": "2025-12-12T17:05:45+01:00"}, [STG_FAILED]),
        ({"user": "carol"}, []),
        ({"project": "nope"}, []),
    ],
)
def test_log_filters(h: AppHarness, query: dict, expected: list) -> None:
    assert _keys(_log(h, **query)) == expected


def test_user_scope_narrows_every_filter(h: AppHarness) -> None:
    db = h.db
    scoped = solvelog.solve_log(db, user_id="bob")
    assert {e["user_id"] for e in scoped["events"]} == {"bob"}
    assert solvelog.solve_log(db, solvelog.LogFilter(user="alice"), user_id="bob")["count"] == 0
    assert solvelog.solve_log(db, solvelog.LogFilter(key="alice-web"), user_id="bob")["count"] == 0


def test_cursor_pages_are_stable_while_calls_keep_arriving(collector_app: AppHarness) -> None:
    h = collector_app
    h.apply(team_config())
    h.usage([event(ts=T0 + i) for i in range(25)])
    h.usage([event(ts=T0 + 7) for _ in range(3)])  # same time: the row id breaks the tie
    first = _log(h, limit=10)
    seen = [e["event_id"] for e in first["events"]]
    cursor = first["next_cursor"]
    new, late = [], []
    while cursor:
        # Between two page requests: a new call, and an old one shipped late (agent spool).
        fresh, old = event(ts=T0 + 100 + len(new)), event(ts=T0 - 1 - len(late))
        new.append(fresh["event_id"])
        late.append(old["event_id"])
        h.usage([fresh, old])
        page = _log(h, limit=10, cursor=cursor)
        seen += [e["event_id"] for e in page["events"]]
        cursor = page["next_cursor"]
    assert len(seen) == len(set(seen)) == 28 + len(late)  # no row twice, none skipped
    assert set(late) <= set(seen) and not set(new) & set(seen)
    everything = _log(h, limit=1000)["events"]
    order = [(e["ts_ms"], e["id"]) for e in everything]
    assert order == sorted(order, reverse=True) and len(order) == len(set(order))
    assert [e["event_id"] for e in everything[: len(new)]] == new[::-1]


def test_last_page_exactly_full_has_no_cursor(collector_app: AppHarness) -> None:
    h = collector_app
    h.apply(team_config())
    h.usage([event() for _ in range(4)])
    first = _log(h, limit=2)
    second = _log(h, limit=2, cursor=first["next_cursor"])
    assert (first["count"], second["count"], second["next_cursor"]) == (2, 2, None)


def test_cursor_is_opaque_and_checked() -> None:
    cursor = solvelog.encode_cursor(1_765_555_555_123, 41)
    assert "41" not in cursor and solvelog.decode_cursor(cursor) == (1_765_555_555_123, 41)
    for bad in (
        "", "41", "abc", "djE6", cursor + "=", cursor + "!", "djE6MToxOjE",
        solvelog.encode_cursor(1, 2**63), solvelog.encode_cursor(1, 0),
    ):  # fmt: skip
        with pytest.raises(Invalid) as err:
            solvelog.decode_cursor(bad)
        assert err.value.code == "invalid_cursor"


# --- reports -----------------------------------------------------------------------------------


def test_team_report_with_total_today_and_exact_money(h: AppHarness) -> None:
    report = _report(h, "team", since="all")
    assert (report["since"], report["until"], report["today"]) == (None, None, "2025-12-12")
    assert report["users"] == [
        {"user_id": "alice", "email": "alice@example.com", "solves": 3, "failed": 1,
         "cost": "0.300001", "today": 2, "daily_limit": 100, "active": True},
        {"user_id": "bob", "email": "bob@example.com", "solves": 1, "failed": 0,
         "cost": "0.000003", "today": 0, "daily_limit": None, "active": True},
        {"user_id": "carol", "email": "carol@example.com", "solves": 0, "failed": 0,
         "cost": "0.00", "today": 0, "daily_limit": None, "active": True},
    ]  # fmt: skip
    assert report["total"] == {"solves": 4, "failed": 1, "cost": "0.300004", "today": 2}

    ranged = _report(h, "team", since="2h")
    assert ranged["since"] == iso(NOW_MS - 7_200_000)
    alice = ranged["users"][0]
    assert (alice["solves"], alice["failed"], alice["cost"], alice["today"]) == (2, 1, "0.30", 2)
    assert ranged["total"] == {"solves": 2, "failed": 1, "cost": "0.30", "today": 2}


def test_team_report_today_follows_the_clock(h: AppHarness) -> None:
    h.clock.advance(86_400)  # tomorrow: nothing solved yet today
    report = _report(h, "team", since="all")
    assert report["today"] == "2025-12-13"
    assert report["total"]["today"] == 0 and report["total"]["solves"] == 4


def test_reports_cover_today_unless_told(h: AppHarness) -> None:
    today = _report(h, "team")
    assert (today["since"], today["until"]) == ("2025-12-12T00:00:00.000Z", None)
    assert today["total"] == {"solves": 2, "failed": 1, "cost": "0.30", "today": 2}
    until = _report(h, "keys", until="2025-12-11")  # an end alone: from the beginning
    assert (until["since"], until["total"]["cost"]) == (None, "0.000004")
    assert _report(h, "stats", since="all")["total"]["calls"] == 5


def test_projects_report(h: AppHarness) -> None:
    report = _report(h, "projects", since="all")
    assert report["projects"] == [
        {"project": "scraper", "solves": 1, "failed": 0, "cost": "0.000003"},
        {"project": "web", "solves": 3, "failed": 1, "cost": "0.300001"},
    ]
    assert report["environments"] == [
        {"environment": "prod", "solves": 4, "failed": 0, "cost": "0.300004"},
        {"environment": "staging", "solves": 0, "failed": 1, "cost": "0.00"},
    ]
    assert [(p["project"], p["environment"]) for p in report["pairs"]] == [
        ("scraper", "prod"),
        ("web", "prod"),
        ("web", "staging"),
    ]
    assert report["total"] == {"solves": 4, "failed": 1, "cost": "0.300004"}


def test_keys_report_lists_idle_keys_and_current_balances(h: AppHarness) -> None:
    report = _report(h, "keys", since="all")
    rows = {k["key_id"]: k for k in report["keys"]}
    assert list(rows) == ["alice-stg", "alice-web", "bob-scraper", "carol-idle"]
    assert rows["alice-web"] == {
        "key_id": "alice-web", "user_id": "alice", "project": "web", "environment": "prod",
        "solves": 3, "failed": 0, "cost": "0.300001", "balance": "9.699999", "active": True,
    }  # fmt: skip
    assert (rows["carol-idle"]["solves"], rows["carol-idle"]["balance"]) == (0, "10.00")
    assert report["total"] == {"solves": 4, "failed": 1, "cost": "0.300004"}


def test_stats_report_rates_percentiles_and_hours(h: AppHarness) -> None:
    report = _report(h, "stats", since="all")
    assert report["types"] == [
        {"type": "recaptcha-v2", "calls": 1, "solves": 1, "failed": 0, "success_rate": "100.00",
         "p50_ms": 200, "p95_ms": 200},
        {"type": "turnstile", "calls": 4, "solves": 3, "failed": 1, "success_rate": "75.00",
         "p50_ms": 100, "p95_ms": 3000},
    ]  # fmt: skip
    # report_bad is a verdict, not a call: in no count, no duration.
    assert report["total"] == {
        "calls": 5, "solves": 4, "failed": 1, "success_rate": "80.00", "p50_ms": 200,
        "p95_ms": 3000,
    }  # fmt: skip
    assert report["hourly"] == [
        {"hour": "2025-12-10T16:00:00.000Z", "solves": 1, "failed": 0},
        {"hour": "2025-12-11T16:00:00.000Z", "solves": 1, "failed": 0},
        {"hour": "2025-12-12T15:00:00.000Z", "solves": 1, "failed": 0},
        {"hour": "2025-12-12T16:00:00.000Z", "solves": 1, "failed": 1},
    ]


def test_percentiles_are_exact_nearest_rank(collector_app: AppHarness) -> None:
    h = collector_app
    h.apply(team_config())
    durations = list(range(1, 102))  # 101 calls: p50 is rank 51, p95 rank ceil(95.95) = 96
    h.usage([event(duration_ms=d, status="failed" if d % 3 == 0 else "success") for d in durations])
    stats = _report(h, "stats")["types"][0]
    assert (stats["calls"], stats["p50_ms"], stats["p95_ms"]) == (101, 51, 96)
    assert stats["success_rate"] == "67.33"  # 68 of 101 = 67.326…%


def test_nearest_rank() -> None:
    assert reports.nearest_rank({}, 50) is None
    assert reports.nearest_rank({7: 1}, 95) == 7
    assert reports.nearest_rank({1: 1, 2: 1, 3: 1, 4: 1}, 50) == 2  # rank 2 of 4
    assert reports.nearest_rank({1: 1, 2: 1, 3: 1, 4: 1}, 51) == 3  # ceil(2.04) = 3
    assert reports.nearest_rank({10: 95, 1000: 5}, 95) == 10
    assert reports.nearest_rank({10: 94, 1000: 6}, 95) == 1000
    assert reports.nearest_rank({5: 2, 9: 1}, 100) == 9
    with pytest.raises(ValueError):
        reports.nearest_rank({1: 1}, 0)


def test_reports_scoped_to_one_user(h: AppHarness) -> None:
    db, scope = h.db, {"user_id": "bob"}
    team = reports.team_report(db, now_ms=NOW_MS, **scope)
    assert [u["user_id"] for u in team["users"]] == ["bob"]
    assert team["total"]["cost"] == "0.000003"
    assert [k["key_id"] for k in reports.keys_report(db, **scope)["keys"]] == ["bob-scraper"]
    assert reports.projects_report(db, **scope)["total"]["cost"] == "0.000003"
    assert reports.stats_report(db, **scope)["total"]["calls"] == 1
    empty = reports.stats_report(db, TimeRange(0, 1), **scope)
    assert (empty["types"], empty["total"]["success_rate"], empty["hourly"]) == ([], None, [])


# --- bad input: a clear 400, nothing changed ---------------------------------------------------


@pytest.mark.parametrize(
    ("path", "query", "code", "needle"),
    [
        ("/admin/v1/log", "since=yesterday-ish", "invalid_time", "since: not a time"),
        ("/admin/v1/log", "until=2025-13-01", "invalid_time", "until: not a time"),
        ("/admin/v1/log", "since=0001-01-01", "invalid_time", "out of range"),
        ("/admin/v1/log", "since=2025-12-02&until=2025-12-01", "invalid_time", "before until"),
        ("/admin/v1/log", "status=done", "invalid_status", "unknown status 'done'"),
        ("/admin/v1/log", "cursor=bm90LWEtY3Vyc29y", "invalid_cursor", "not a cursor"),
        ("/admin/v1/log", "limit=0", "invalid_limit", "1 to 1000"),
        ("/admin/v1/log", "limit=1001", "invalid_limit", "1 to 1000"),
        ("/admin/v1/log", "limit=ten", "invalid_limit", "1 to 1000"),
        ("/admin/v1/log", "usr=alice", "unknown_parameter", "usr"),
        ("/admin/v1/log", "status=failed&status=success", "invalid", "given twice: status"),
        ("/admin/v1/reports/team", "since=soon", "invalid_time", "since: not a time"),
        ("/admin/v1/reports/stats", "limit=5", "unknown_parameter", "limit"),
        ("/admin/v1/reports/keys", "until=1e9", "invalid_time", "until: not a time"),
        ("/admin/v1/reports/projects", "since=9999999d", "invalid_time", "out of range"),
    ],
)
def test_bad_input_is_a_clear_400(h: AppHarness, path: str, query: str, code: str, needle: str):
    before = h.summary()
    response = h.admin("GET", f"{path}?{query}")
    body = response.get_json()
    assert response.status_code == 400, body
    assert body["error"] == code and needle in body["message"], body
    SPEC.check("GET", path, response)
    assert h.summary() == before


def test_reports_need_the_admin_token(h: AppHarness) -> None:
    for path in ("/admin/v1/log", "/admin/v1/reports/team", "/admin/v1/reports/stats"):
        for token in (None, "nope"):
            response = h.call("GET", path, token)
            assert response.status_code == 401 and response.get_json()["error"] == "unauthorized"
        # The fleet token is a service credential: known, but not for the admin API.
        response = h.call("GET", path, h.fleet_token)
        assert response.status_code == 403 and response.get_json()["error"] == "forbidden"
    assert h.admin("GET", "/admin/v1/reports/nope").status_code == 404


def test_time_forms() -> None:
    def parse(text: str, end: bool = False) -> str:
        return iso(parse_time(text, NOW_MS, name="t", end=end))

    assert parse("2025-12-01") == "2025-12-01T00:00:00.000Z"
    assert parse("2025-12-01", end=True) == "2025-12-02T00:00:00.000Z"  # the whole day
    assert parse("2025-12-01T10:00:00Z", end=True) == "2025-12-01T10:00:00.000Z"
    assert parse("2025-12-01T12:00:00.250+02:00") == "2025-12-01T10:00:00.250Z"
    assert parse("2025-12-01 10:00") == "2025-12-01T10:00:00.000Z"  # no offset: UTC
    assert parse("30m") == "2025-12-12T15:35:55.000Z"
    assert parse("24h") == parse("1d") == "2025-12-11T16:05:55.000Z"
    assert parse("today") == "2025-12-12T00:00:00.000Z"
    assert parse("today", end=True) == "2025-12-13T00:00:00.000Z"
    assert parse(" NOW ") == iso(NOW_MS)
    assert parse_range(None, "", NOW_MS) == TimeRange()
    whole_day = parse_range("2025-12-01", "2025-12-01", NOW_MS)
    assert whole_day.until_ms - whole_day.since_ms == DAY_MS
    assert dt.datetime.fromisoformat(iso(0)) == dt.datetime(1970, 1, 1, tzinfo=dt.UTC)
    for bad in ("", "yesterday", "12", "-1h", "1w", "2025-02-30", "1e9"):
        with pytest.raises(Invalid):
            parse_time(bad, NOW_MS, name="t")


# --- schema: migration 2 -----------------------------------------------------------------------


def test_migration_2_builds_its_indexes_and_can_run_again(collector_app: AppHarness) -> None:
    db = collector_app.db
    names = {name for _, name, _ in schema.V2_INDEXES}
    built = db.read(lambda tx: tx.index_names("usage_events"))
    assert names <= built and "usage_events_key" not in built  # replaced by usage_events_key_ts
    db.transaction(migrations._v2_report_indexes)  # a half-done MySQL run is finished, not failed
    assert 2 in db.read(lambda tx: {r[0] for r in tx.all("SELECT version FROM schema_migrations")})


def test_every_query_reads_an_index_in_order(h: AppHarness, monkeypatch) -> None:
    """On SQLite, each usage_events query of the log and the reports walks an index (covering
    for reports; in time order, without a sort, for log pages), never the bare table."""
    if h.db.is_mysql:
        pytest.skip("EXPLAIN QUERY PLAN is SQLite's; the MariaDB plans are in the benchmark")
    plans: dict[str, str] = {}
    real_all = Tx.all

    def spy(tx: Tx, sql: str, params=()):
        if "usage_events" in sql and "sqlite_master" not in sql and "EXPLAIN" not in sql:
            plan = real_all(tx, "EXPLAIN QUERY PLAN " + sql, params)
            plans[sql] = " | ".join(str(row[-1]) for row in plan)
        return real_all(tx, sql, params)

    monkeypatch.setattr(Tx, "all", spy)
    day = TimeRange(NOW_MS - DAY_MS, NOW_MS)
    for period in (TimeRange(), day):
        reports.team_report(h.db, period, now_ms=NOW_MS)
        reports.projects_report(h.db, period)
        reports.keys_report(h.db, period, user_id="alice")
        reports.stats_report(h.db, period)
    for filters in (
        solvelog.LogFilter(),
        solvelog.LogFilter(project="web", status="failed", range=day),
        solvelog.LogFilter(user="alice", type="turnstile"),
        solvelog.LogFilter(key="alice-web", user="alice"),
    ):
        page = solvelog.solve_log(h.db, filters, limit=1)
        solvelog.solve_log(h.db, filters, limit=1, cursor=page["next_cursor"])
    assert len(plans) >= 12
    for sql, plan in plans.items():
        if sql.startswith("SELECT id FROM"):  # a log page's ids
            assert "INDEX usage_events_" in plan and "TEMP B-TREE" not in plan, (sql, plan)
        elif "WHERE id IN" not in sql:  # a report
            assert "COVERING INDEX usage_events_report" in plan, (sql, plan)


def test_queries_still_run_without_the_indexes(h: AppHarness) -> None:
    """An operator who dropped an index gets slower answers, not errors."""
    expected = (_log(h, status="success"), _report(h, "team", since="all"), _report(h, "stats"))
    drop = "DROP INDEX {name} ON usage_events" if h.db.is_mysql else "DROP INDEX {name}"
    try:
        for _, name, _ in schema.V2_INDEXES:
            h.db.transaction(lambda tx, name=name: tx.execute(drop.format(name=name)))
        again = (_log(h, status="success"), _report(h, "team", since="all"), _report(h, "stats"))
        assert again == expected
    finally:
        h.db.transaction(migrations._v2_report_indexes)
