"""The dashboard's charts: the SVG builders (pure functions) and the figures behind them
(``chartdata``) on both stores, down to the page's data attributes.

The browser test (tests/integration/test_dashboard_browser.py) reads the same attributes from
the DOM after real solves.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET

import pytest

from solverfleet.collector.dashboard import chartdata, charts
from solverfleet.collector.dashboard.chartdata import DAILY, HOURLY
from solverfleet.collector.reporting.timerange import DAY_MS, HOUR_MS
from tests.support.collector import AppHarness, event, key_config, team_config, user_config
from tests.unit.test_dashboard import Browser

pytest_plugins = ["tests.support.collector", "tests.support.mariadb"]
SVG = "{http://www.w3.org/2000/svg}"


def _svg(markup: str) -> ET.Element:
    """The chart parsed as XML: it must be well-formed to parse at all."""
    return ET.fromstring(str(markup))


def _marks(root: ET.Element) -> list[tuple[str, int]]:
    return [
        (el.get("data-label"), int(el.get("data-value")))
        for el in root.iter()
        if el.get("data-value") is not None
    ]


# --- the SVG builders -------------------------------------------------------------------------


@pytest.mark.parametrize(
    "build",
    [
        lambda: charts.column_chart("c", "Solves", [], total=0, total_shown="0"),
        lambda: charts.bar_chart("c", "Solves", []),
        lambda: charts.line_chart("c", "Solves", []),
    ],
)
def test_an_empty_chart_says_so_and_is_still_a_named_image(build):
    root = _svg(build())
    assert root.get("role") == "img" and root.get("data-total") == "0"
    assert root.find(f"{SVG}title").text == "Solves"
    assert _marks(root) == []
    assert "No data in this range." in "".join(root.itertext())


def test_one_point_fills_the_chart_and_carries_its_figures():
    point = charts.Point("2025-12-12 16:00", 3, "3")
    for markup in (
        charts.column_chart("one", "Solves", [point], total=3, total_shown="3"),
        charts.bar_chart("one", "Solves", [point]),
        charts.line_chart("one", "Solves", [point]),
    ):
        root = _svg(markup)
        assert root.get("data-chart") == "one" and root.get("data-total") == "3"
        assert _marks(root) == [("2025-12-12 16:00", 3)]
        (mark,) = [el for el in root.iter() if el.get("data-value")]
        assert mark.find(f"{SVG}title").text == "2025-12-12 16:00: 3"


def test_large_values_stay_exact_and_inside_the_drawing():
    huge = 9_007_199_254_740_993  # above 2**53: a float would round it
    points = [charts.Point("a", huge, "huge"), charts.Point("b", 1, "1"), charts.Point("c", 0, "0")]
    root = _svg(charts.column_chart("big", "Spend", points, total=huge + 1, total_shown="x"))
    assert root.get("data-total") == str(huge + 1)
    assert _marks(root) == [("a", huge), ("b", 1), ("c", 0)]
    for rect in root.iter(f"{SVG}rect"):
        y, h = float(rect.get("y")), float(rect.get("height"))
        assert y >= charts.PAD_TOP - 0.1 and y + h <= charts.HEIGHT - charts.PAD_BOTTOM + 0.1
    # A balance below zero: the zero line and every dot inside the drawing.
    line = _svg(
        charts.line_chart(
            "neg", "Balance", [charts.Point("d1", -5, "-5"), charts.Point("d2", huge, "huge")]
        )
    )
    assert line.get("data-total") == str(huge)
    for dot in line.iter(f"{SVG}circle"):
        assert (
            charts.PAD_TOP - 0.1 <= float(dot.get("cy")) <= charts.HEIGHT - charts.PAD_BOTTOM + 0.1
        )


def test_labels_and_names_are_escaped():
    nasty = "<script>alert(\"x\")</script> & 'quoted'"
    point = charts.Point(nasty, 1, f"{nasty} shown")
    for markup in (
        charts.column_chart(nasty, nasty, [point], total=1, total_shown=nasty),
        charts.bar_chart(nasty, nasty, [point]),
        charts.line_chart(nasty, nasty, [point]),
    ):
        assert "<script>" not in markup
        root = _svg(markup)  # parses: nothing broke out of an attribute or element
        assert root.get("data-chart") == nasty
        assert _marks(root) == [(nasty, 1)]
        assert root.get("id").startswith("chart-") and "<" not in root.get("id")


def test_long_labels_are_cut_on_the_drawing_and_kept_whole_in_the_tooltip():
    label = "recaptcha-v3-enterprise-with-a-very-long-name"
    root = _svg(charts.bar_chart("t", "Latency", [charts.Point(label, 5, "5 ms")]))
    texts = [el.text for el in root.iter(f"{SVG}text")]
    assert label not in texts and any(t and t.endswith("…") for t in texts)
    assert _marks(root) == [(label, 5)]


# --- the figures, on both stores --------------------------------------------------------------


@pytest.fixture
def h(collector_app: AppHarness) -> AppHarness:
    collector_app.apply(
        team_config(
            [
                user_config("alice", [key_config("alice-web", project="web")]),
                user_config("bob", [key_config("bob-api", project="api")]),
            ]
        )
    )
    collector_app.apply(
        team_config([user_config("carol", [key_config("carol-web")])], account="beta")
    )
    now = collector_app.clock.now
    collector_app.usage(
        [
            event("alice-web", cost=2000, ts=now, project="web"),
            event("alice-web", cost=2000, ts=now, project="web"),
            event("alice-web", status="failed", ts=now, project="web"),
            event("alice-web", cost=3000, ts=now - 3 * 3600, project="web"),
            event("alice-web", cost=5000, ts=now - 2 * 86400, project="web"),  # daily only
            event("alice-web", cost=9000, ts=now - 40 * 86400, project="web"),  # neither
            event("bob-api", user_id="bob", cost=7000, ts=now, project="api"),
            event("carol-web", user_id="carol", cost=11000, ts=now, account="beta"),
        ]
    )
    return collector_app


def _totals(buckets: list[chartdata.Bucket]) -> tuple[int, int]:
    return sum(b.solves for b in buckets), sum(b.cost_micros for b in buckets)


def test_activity_sums_solves_and_spend_per_bucket_for_every_scope(h: AppHarness):
    now_ms = int(h.clock.now * 1000)
    hourly = chartdata.activity(h.db, HOURLY, now_ms)
    assert len(hourly) == 48 and hourly[-1].start_ms == now_ms - now_ms % HOUR_MS
    assert hourly[-1].label == "2025-12-12 16:00"
    assert (hourly[-1].solves, hourly[-1].cost_micros) == (4, 22000)
    assert (hourly[-4].label, hourly[-4].solves, hourly[-4].cost_micros) == (
        "2025-12-12 13:00",
        1,
        3000,
    )
    assert _totals(hourly) == (5, 25000)
    daily = chartdata.activity(h.db, DAILY, now_ms)
    assert len(daily) == 30 and daily[-1].label == "2025-12-12"
    assert daily[-3] == chartdata.Bucket(
        now_ms - now_ms % DAY_MS - 2 * DAY_MS, "2025-12-10", 1, 5000
    )
    assert _totals(daily) == (6, 30000)  # 40 days ago is outside
    for scope, hourly_totals, daily_totals in [
        ({"account": "acme"}, (4, 14000), (5, 19000)),
        ({"account": "beta"}, (1, 11000), (1, 11000)),
        ({"user": "alice"}, (3, 7000), (4, 12000)),
        ({"key": "bob-api"}, (1, 7000), (1, 7000)),
        ({"project": "web"}, (3, 7000), (4, 12000)),
        ({"account": "nobody"}, (0, 0), (0, 0)),
    ]:
        assert _totals(chartdata.activity(h.db, HOURLY, now_ms, **scope)) == hourly_totals, scope
        assert _totals(chartdata.activity(h.db, DAILY, now_ms, **scope)) == daily_totals, scope
    with pytest.raises(ValueError, match="scope"):
        chartdata.activity(h.db, HOURLY, now_ms, agent="a1")


def test_balance_history_walks_back_from_the_balance_now(collector_app: AppHarness):
    h = collector_app
    h.apply(team_config())  # alice-web opens at 10.00 today (T0)
    h.clock.advance(86400)
    h.usage([event(cost=2000, ts=h.clock.now)])
    h.clock.advance(86400)
    assert (
        h.admin("POST", "/admin/v1/keys/alice-web/topup", json={"amount": "2.50"}).status_code
        == 200
    )
    h.usage([event(cost=3000, ts=h.clock.now)])
    now_ms = int(h.clock.now * 1000)
    history = chartdata.balance_history(h.db, "alice-web", DAILY, now_ms)
    # From the day the key opened (T0), not before: three points.
    assert [b.cost_micros for b in history] == [10_000_000, 9_998_000, 12_495_000]
    assert [b.label for b in history] == ["2025-12-12", "2025-12-13", "2025-12-14"]
    assert h.admin("GET", "/admin/v1/keys/alice-web").get_json()["balance"] == "12.495"
    assert chartdata.balance_history(h.db, "no-such-key", DAILY, now_ms) == []


def test_pages_carry_the_charts_figures(h: AppHarness):
    admin = Browser(h.app)
    assert admin.login(h.admin_token).status_code == 303
    overview = admin.get("/dashboard/").get_data(as_text=True)
    assert 'data-chart="fleet-solves-hourly" data-total="5"' in overview
    assert 'data-chart="fleet-spend-daily" data-total="30000"' in overview
    key = admin.get("/dashboard/keys/bob-api").get_data(as_text=True)
    assert 'data-chart="key-solves-daily" data-total="1"' in key
    assert 'data-chart="key-balance-daily"' in key
    # dashboard.js's re-read of a live page: the tables, no charts (the page keeps its own).
    for path in ("/dashboard/", "/dashboard/keys/bob-api"):
        reread = admin.get(path, headers={"X-Dashboard-Refresh": "1"}).get_data(as_text=True)
        assert "<svg" not in reread and 'id="as-of" data-live' in reread
    page = admin.get("/dashboard/activity?project=web")
    assert page.status_code == 200
    assert 'data-chart="scope-solves-daily" data-total="4"' in page.get_data(as_text=True)
    usage = admin.get("/dashboard/usage").get_data(as_text=True)
    # Today: alice 3 solves and 1 failed, bob and carol 1 solve each: 5 of 6 calls.
    assert 'data-label="turnstile" data-value="8333"' in usage  # 83.33 %
    assert 'data-label="turnstile p50" data-value="412"' in usage
    assert 'data-chart="type-success" data-total="8333"' in usage  # every type together
    assert 'data-chart="type-latency" data-total="412"' in usage
    for bad, status in [
        ("/dashboard/activity?account=acme&user=alice", 400),
        ("/dashboard/activity?agent=a1", 400),
        ("/dashboard/activity?key=nope", 404),
    ]:
        assert admin.get(bad).status_code == status, bad
