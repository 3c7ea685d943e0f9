"""The collector's Prometheus metrics.

Counters and histograms are module singletons registered in NO registry: code anywhere in the
collector updates them cheaply (``from solverfleet.collector.metrics import NOTIFICATIONS_SENT``).
Each app builds its own ``CollectorRegistry`` when created (``registry_for``) holding these
shared objects plus a collector that reads that app's database, so tests can create many apps
in one process without "Duplicated timeseries" errors. In a tests process the counters are
shared by all apps there: assert on deltas.

Counters are per gunicorn worker process (the collector runs one, see gunicorn_conf.py).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Iterator
from typing import TYPE_CHECKING

from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector as _PromCollector

if TYPE_CHECKING:
    from solverfleet.collector.store import Database

# result: "stored" = new event recorded (and charged if a success); "duplicate" = event_id
# seen before (a re-ship, changes nothing); "failed" = batch not committed, shipped again.
USAGE_EVENTS = Counter(
    "solverfleet_collector_usage_events",
    "Usage events received from agents, by outcome; rate() of stored is the ingest rate.",
    ["result"],
    registry=None,
)
# reason: why a bound agent's event was refused (ingest: not_leased, wrong_cost, over_grant).
# Refused events are not stored or charged; a rising count means a misbehaving or forged host.
USAGE_REFUSED = Counter(
    "solverfleet_collector_usage_refused",
    "Usage events of agent-bound credentials refused by the grant checks, by reason.",
    ["reason"],
    registry=None,
)
INGEST_BATCH_EVENTS = Histogram(
    "solverfleet_collector_ingest_batch_events",
    "Events per /agent/v1/usage batch.",
    buckets=(1, 5, 10, 50, 100, 250, 500, 1000, 2500, 5000),
    registry=None,
)
INGEST_SECONDS = Histogram(
    "solverfleet_collector_ingest_seconds",
    "Time to store and charge one usage batch (queueing for the group writer included).",
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5),
    registry=None,
)
# Per committed batch: the collector's clock minus the oldest new event's ts_ms (when the agent
# recorded it), i.e. how late usage reaches the store. Agents' clocks skew it by their offset.
INGEST_LAG_SECONDS = Histogram(
    "solverfleet_collector_ingest_lag_seconds",
    "Age of the oldest event of each stored usage batch when it was stored.",
    buckets=(1, 5, 15, 30, 60, 120, 300, 600, 1800, 3600, 21600, 86400),
    registry=None,
)
# kind: what the notification is about (notify/rules.py: zero, threshold); result: the delivery
# attempt's outcome as notify_sender records it.
NOTIFICATIONS_SENT = Counter(
    "solverfleet_collector_notifications",
    "Notification deliveries attempted, by kind and result.",
    ["kind", "result"],
    registry=None,
)
# kind as on the protocol: "balance" (credit lease), "cpm" (calls this minute), "daily".
LEASES_GRANTED = Counter(
    "solverfleet_collector_leases_granted",
    "Non-zero grants handed to agents by /agent/v1/sync, by kind.",
    ["kind"],
    registry=None,
)
LEASE_MICROS_GRANTED = Counter(
    "solverfleet_collector_lease_granted_micros",
    "Credit granted to agents as balance leases, in micros.",
    registry=None,
)
# endpoint is the Flask endpoint name (bounded; "unmatched" for unknown paths).
HTTP_REQUESTS = Counter(
    "solverfleet_collector_http_requests",
    "HTTP requests answered, by endpoint and status code.",
    ["endpoint", "code"],
    registry=None,
)
SHARED = (
    USAGE_EVENTS,
    USAGE_REFUSED,
    INGEST_BATCH_EVENTS,
    INGEST_SECONDS,
    INGEST_LAG_SECONDS,
    NOTIFICATIONS_SENT,
    LEASES_GRANTED,
    LEASE_MICROS_GRANTED,
    HTTP_REQUESTS,
)


_STORED, _DUPLICATE, _FAILED = (USAGE_EVENTS.labels(r) for r in ("stored", "duplicate", "failed"))


def ingested(accepted: int, duplicates: int, seconds: float, lag: float | None = None) -> None:
    """One usage batch committed; ``lag``: its oldest event's age (None: nothing new)."""
    if lag is not None:
        INGEST_LAG_SECONDS.observe(max(0.0, lag))
    _STORED.inc(accepted)
    _DUPLICATE.inc(duplicates)
    INGEST_BATCH_EVENTS.observe(accepted + duplicates)
    INGEST_SECONDS.observe(seconds)


def ingest_failed(events: int) -> None:
    """One usage batch not committed (the agent ships it again)."""
    _FAILED.inc(events)


def usage_refused(reasons: Iterable[str]) -> None:
    """Events refused by the grant checks (committed batch: they were not stored)."""
    for reason in reasons:
        USAGE_REFUSED.labels(reason).inc()


def count_grants(answer: dict) -> None:
    """Count the grants of one /agent/v1/sync answer."""
    for grant in answer.get("grants", ()):
        kind = grant.get("kind")
        amount = grant.get("granted_micros" if kind == "balance" else "granted") or 0
        if amount > 0:
            LEASES_GRANTED.labels(kind).inc()
            if kind == "balance":
                LEASE_MICROS_GRANTED.inc(amount)


class StoreCollector(_PromCollector):
    """Gauges read from the database when scraped (the hot path does no work for them).

    ``solverfleet_collector_report_lag_seconds``: now minus the ``received`` time of the newest
    stored usage event, i.e. how stale reports built from the store are. It grows while agents
    ship nothing (idle fleet or broken shipping); alert on it together with traffic.

    ``solverfleet_collector_low_balance_keys{account, level}``: usable keys (key and user
    active) at or below zero (``level="zero"``) or above zero and at or below the account's
    enabled alert threshold (``level="threshold"``); one aggregate query per scrape.
    """

    def __init__(self, db: Database, clock: Callable[[], float] = time.time) -> None:
        self._db = db
        self._clock = clock

    def collect(self) -> Iterator[Metric]:
        up = GaugeMetricFamily(
            "solverfleet_collector_store_up", "1 when the database answered this scrape."
        )
        lag = GaugeMetricFamily(
            "solverfleet_collector_report_lag_seconds",
            "Seconds since the newest stored usage event was received (absent before any).",
        )
        low = GaugeMetricFamily(
            "solverfleet_collector_low_balance_keys",
            "Active keys at or below zero or their account's alert threshold, by account.",
            labels=["account", "level"],
        )
        try:
            newest = self._db.read(_newest_received_ms)
            counts = self._db.read(_low_balance_counts)
        except Exception:  # any database failure: the rest of the scrape must still answer
            up.add_metric([], 0)
            yield up
            return
        up.add_metric([], 1)
        yield up
        if newest is not None:
            lag.add_metric([], max(0.0, self._clock() - newest / 1000))
            yield lag
        for account, zero, threshold in counts:
            low.add_metric([account, "zero"], zero)
            low.add_metric([account, "threshold"], threshold)
        yield low


def _newest_received_ms(tx) -> int | None:
    # The primary key, not MAX(received_ms): one index probe even with millions of rows.
    row = tx.one("SELECT received_ms FROM usage_events ORDER BY id DESC LIMIT 1")
    return None if row is None else int(row[0])


def _low_balance_counts(tx) -> list[tuple[str, int, int]]:
    # Accounts with no low key are left out (an absent series, not a 0 per account).
    rows = tx.all(
        "SELECT k.account,"
        " SUM(CASE WHEN k.balance_micros <= 0 THEN 1 ELSE 0 END),"
        " SUM(CASE WHEN k.balance_micros > 0 AND a.low_balance_enabled <> 0"
        " AND k.balance_micros <= a.low_balance_threshold_micros THEN 1 ELSE 0 END)"
        " FROM api_keys k JOIN users u ON u.id = k.user_id"
        " LEFT JOIN accounts a ON a.id = k.account"
        " WHERE k.active <> 0 AND u.active <> 0 GROUP BY k.account ORDER BY k.account"
    )
    return [(r[0], int(r[1] or 0), int(r[2] or 0)) for r in rows if r[1] or r[2]]


def registry_for(db: Database, clock: Callable[[], float] = time.time) -> CollectorRegistry:
    """A registry for one app: the shared counters plus this app's store gauges."""
    registry = CollectorRegistry()
    for metric in SHARED:
        registry.register(metric)
    registry.register(StoreCollector(db, clock))
    return registry
