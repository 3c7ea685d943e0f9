"""monitoring/: every alert has a promtool unit test that fires it, the Grafana dashboard is
well formed, and every metric the rules, their tests and the dashboard name is one the agent or
the collector exports (read from the /metrics of an in-process agent and collector). promtool
itself runs in tests/integration/test_monitoring_rules.py."""

from __future__ import annotations

import json
import re
from pathlib import Path

import yaml
from prometheus_client.parser import text_string_to_metric_families

from solverfleet.agent import agent_of
from solverfleet.agent import create_app as create_agent
from solverfleet.process import wait_until
from tests.support.collector import event, make_app, sqlite_url, team_config
from tests.support.fake_collector import (  # noqa: F401
    agent_settings,
    fake_collector,
    fake_worker,
    standard_setup,
)

pytest_plugins = ["tests.support.collector"]
MONITORING = Path(__file__).resolve().parents[2] / "monitoring"
RULES = MONITORING / "prometheus" / "solverfleet-alerts.yml"
RULE_TESTS = sorted((MONITORING / "tests").glob("*.yml"))
DASHBOARD = MONITORING / "grafana" / "solverfleet-dashboard.json"
# Series Prometheus makes itself, not the services.
SYNTHETIC = {"up"}
PROMQL_WORDS = {
    *("sum", "min", "max", "avg", "count", "topk", "bottomk", "quantile", "stddev"),
    *("rate", "irate", "increase", "deriv", "delta", "histogram_quantile", "abs", "clamp_min"),
    *("absent", "time", "vector", "scalar", "and", "or", "unless", "bool", "offset"),
}
_SUFFIXES = {"counter": ("_total",), "histogram": ("_bucket", "_sum", "_count"), "gauge": ("",)}


def test_every_alert_has_a_unit_test_that_fires_it():
    alerts = {r["alert"] for g in yaml.safe_load(RULES.read_text())["groups"] for r in g["rules"]}
    fired = {
        case["alertname"]
        for path in RULE_TESTS
        for test in yaml.safe_load(path.read_text())["tests"]
        for case in test.get("alert_rule_test", ())
        if case.get("exp_alerts")
    }
    assert alerts - fired == set()
    assert fired - alerts == set()


def test_the_dashboard_is_grafana_json_with_a_query_in_every_panel():
    dashboard = json.loads(DASHBOARD.read_text())
    panels = dashboard["panels"]
    assert dashboard["uid"] and len({p["id"] for p in panels}) == len(panels)
    for panel in panels:
        if panel["type"] != "row":
            assert panel["targets"] and all(t["expr"].strip() for t in panel["targets"]), panel
            assert panel["datasource"]["uid"] == "${datasource}"


def test_every_metric_named_in_monitoring_is_exported(tmp_path, fake_collector, fake_worker):  # noqa: F811
    exported = _agent_metrics(tmp_path, fake_collector, fake_worker) | _collector_metrics(tmp_path)
    assert "solverfleet_agent_lease_wait_timeouts_total" in exported  # the reading works
    named = _monitoring_metric_names()
    assert {n for n in named if n.startswith("solverfleet_")}, named
    assert named - exported - SYNTHETIC == set()


# ---- what monitoring/ names -------------------------------------------------------------------


def _monitoring_metric_names() -> set[str]:
    exprs = [r["expr"] for g in yaml.safe_load(RULES.read_text())["groups"] for r in g["rules"]]
    panels = json.loads(DASHBOARD.read_text())["panels"]
    exprs += [t["expr"] for p in panels for t in p.get("targets", ())]
    names = {n for e in exprs for n in metric_names(e)}
    for path in RULE_TESTS:  # the synthetic series of the unit tests
        for test in yaml.safe_load(path.read_text())["tests"]:
            names |= {metric_names(s["series"]).pop() for s in test.get("input_series", ())}
    return names


def metric_names(expr: str) -> set[str]:
    """The metric names of a PromQL expression: identifiers left once strings, label
    matchers, ranges, grouping clauses and function or operator words are taken out."""
    expr = re.sub(r'"(?:[^"\\]|\\.)*"', "", expr)
    expr = re.sub(r"\{[^}]*\}|\[[^\]]*\]", "", expr)
    expr = re.sub(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", "", expr)
    words = set(re.findall(r"(?<![\w.])[A-Za-z_:][\w:]*", expr))
    return words - PROMQL_WORDS


def test_metric_names_reads_promql():
    expr = (
        'histogram_quantile(0.95, sum by (le, type) (rate(a_bucket{x="by (y)"}[$__rate_interval])))'
        " > 3 unless on (i) b_total and max without (le) (c) > 1e6"
    )
    assert metric_names(expr) == {"a_bucket", "b_total", "c"}


# ---- what the services export ------------------------------------------------------------------


def _families(text: str) -> set[str]:
    """Sample names of an exposition, counters and histograms by type (a labelled family shows
    no sample before its first use)."""
    return {
        family.name + suffix
        for family in text_string_to_metric_families(text)
        for suffix in _SUFFIXES.get(family.type, ("",))
    }


def _agent_metrics(tmp_path, collector, worker) -> set[str]:
    standard_setup(collector)
    app = create_agent(agent_settings(tmp_path / "agent", collector.url, worker.url))
    client = app.test_client()
    try:
        # Ready means synced once: the sync-age gauge is there from then on.
        wait_until(lambda: client.get("/readyz").status_code == 200, timeout=10, what="ready")
        return _families(client.get("/metrics").get_data(as_text=True))
    finally:
        agent = agent_of(app)
        agent.shutdown(drain_grace=0, ship_timeout=1)
        agent.close()


def _collector_metrics(tmp_path) -> set[str]:
    h = make_app(sqlite_url(tmp_path / "c.db"))
    h.apply(team_config())
    h.usage([event()])  # the report-lag gauge needs a stored event
    return _families(h.app.test_client().get("/metrics").get_data(as_text=True))
