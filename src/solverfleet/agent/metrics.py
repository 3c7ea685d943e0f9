"""The agent's hot-path counters (state gauges are computed at scrape time: gauges.py).

Counters are module singletons in NO registry: a solve pays one ``labels().inc()`` (a dict
lookup and a locked add). This module imports nothing of the agent, so any part of it can
count without an import circle. Each app's registry (gauges.registry_for) holds these shared
counters: tests build many apps in one process and assert on deltas.

Import this module inside the worker only (create_app): gunicorn's master must not load it
before gevent patches threading.
"""

from __future__ import annotations

from typing import Any

from prometheus_client import Counter, Histogram

# One per usage event written to the spool (a call that reached the worker). type is a
# configured captcha type (admission refuses unknown ones, so the label set stays bounded);
# status is the event's: success, failed, report_good, report_bad.
SOLVES = Counter(
    "solverfleet_agent_solves",
    "Worker calls recorded as usage events, by captcha type and status.",
    ["type", "status"],
    registry=None,
)
SOLVE_SECONDS = Histogram(
    "solverfleet_agent_solve_seconds",
    "Time from request to the worker's answer, by captcha type (reports excluded).",
    ["type"],
    buckets=(0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 15, 20, 30, 60, 120),
    registry=None,
)
SPOOL_ERRORS = Counter(
    "solverfleet_agent_spool_errors",
    "Usage events the disk refused (the call was not charged).",
    registry=None,
)
# endpoint is the Flask endpoint name (bounded; "unmatched" for 404s), so pre-check refusals
# (401, 402, 403, 429) show here by status code without a per-code counter on the hot path.
HTTP_REQUESTS = Counter(
    "solverfleet_agent_http_requests",
    "HTTP requests answered, by endpoint and status code.",
    ["endpoint", "code"],
    registry=None,
)
IP_BANS = Counter(
    "solverfleet_agent_ip_bans",
    "Client addresses banned for presenting too many unknown keys (bans.py).",
    registry=None,
)
# A call refused after waiting lease_wait for a lease a sync might still have brought (limit:
# insufficient_balance, cpm_exceeded, daily_limit_reached): the collector was slow or granted
# too little, not the key out of credit. Refusals that need no wait are not counted here.
LEASE_WAIT_TIMEOUTS = Counter(
    "solverfleet_agent_lease_wait_timeouts",
    "Calls refused because the lease they waited for did not arrive in time, by limit.",
    ["limit"],
    registry=None,
)
# res.php / getTaskResult requests for another agent's task (agent/compat/forward.py), by
# outcome: answered (the owner's answer passed on) or unreachable (the client polls again).
FORWARDS = Counter(
    "solverfleet_agent_compat_forwards",
    "Requests for another agent's task sent to that agent, by outcome.",
    ["outcome"],
    registry=None,
)
SHARED = (
    SOLVES,
    SOLVE_SECONDS,
    SPOOL_ERRORS,
    HTTP_REQUESTS,
    IP_BANS,
    LEASE_WAIT_TIMEOUTS,
    FORWARDS,
)
_REPORTS = frozenset(("report_good", "report_bad"))
# (type, status) -> (counter child, histogram child or None): labels() costs a lock and a
# tuple build per call; this cache is a dict hit. Bounded by configured types x statuses.
_CHILDREN: dict[tuple[str, str], tuple[Any, Any]] = {}


def count_event(event: dict[str, Any]) -> None:
    """Count one spooled usage event (the single place every surface passes through)."""
    labels = (event["type"], event["status"])
    children = _CHILDREN.get(labels)
    if children is None:
        timed = labels[1] not in _REPORTS
        children = (SOLVES.labels(*labels), SOLVE_SECONDS.labels(labels[0]) if timed else None)
        _CHILDREN[labels] = children
    children[0].inc()
    if children[1] is not None:
        children[1].observe(event["duration_ms"] / 1000)
