"""Usage ingest: exactly-once, charging, failed writes, group commit (both stores)."""

from __future__ import annotations

import threading

import pytest

from solverfleet.collector import ingest
from solverfleet.collector.store import StoreError
from tests.support.collector import AppHarness, event, key_config, team_config, user_config

pytest_plugins = ["tests.support.collector", "tests.support.mariadb"]


def stored(h: AppHarness) -> int:
    return h.summary()["events"]


def balance(h: AppHarness, key: str = "alice-web") -> int:
    return h.summary()["keys"][key]["balance_micros"]


def test_replays_are_stored_and_charged_once(collector_app: AppHarness) -> None:
    h = collector_app
    h.apply(team_config())
    batch = [event(cost=2000) for _ in range(50)]
    assert h.usage(batch) == {"accepted": 50, "duplicates": 0}
    assert h.usage(batch) == {"accepted": 0, "duplicates": 50}
    # a retry that overlaps: half old, half new
    more = [event(cost=3000) for _ in range(10)]
    assert h.usage(batch[:10] + more) == {"accepted": 10, "duplicates": 10}
    s = h.summary()
    assert (s["events"], s["successes"], s["usage_micros"]) == (60, 60, 130_000)
    assert balance(h) == 10_000_000 - 130_000


def test_large_mixed_batch_spanning_chunks(collector_app: AppHarness) -> None:
    h = collector_app
    h.apply(team_config())
    old = [event(cost=1) for _ in range(1500)]
    h.usage(old)
    new = [event(cost=1) for _ in range(1500)]
    mixed = [e for pair in zip(old, new, strict=True) for e in pair]  # interleaved
    assert h.usage(mixed[:5000]) == {"accepted": 1500, "duplicates": 1500}
    assert stored(h) == 3000
    assert balance(h) == 10_000_000 - 3000


def test_duplicates_inside_one_batch(collector_app: AppHarness) -> None:
    h = collector_app
    h.apply(team_config())
    e = event(cost=2000)
    assert h.usage([e, dict(e), dict(e)]) == {"accepted": 1, "duplicates": 2}
    assert balance(h) == 10_000_000 - 2000


def test_failures_cost_nothing(collector_app: AppHarness) -> None:
    h = collector_app
    h.apply(team_config())
    bad = event(status="failed")
    bad["cost_micros"] = 5000  # a buggy agent; failures are never charged
    h.usage([bad])
    h.usage([event(cost=2000)])
    s = h.summary()
    assert (s["events"], s["successes"], s["usage_micros"]) == (2, 1, 2000)
    assert balance(h) == 10_000_000 - 2000
    logged = h.admin("GET", "/admin/v1/usage?key_id=alice-web").get_json()
    assert logged["count"] == 2
    assert logged["events"][0]["status"] == "success"  # newest first
    assert logged["events"][1]["cost"] == "0.00"
    assert logged["events"][1]["error"] == "worker_error"


def test_report_events_are_logged_never_charged_and_idempotent(collector_app: AppHarness) -> None:
    h = collector_app
    h.apply(team_config())
    ok = event(cost=2000)
    bad, good = event(status="report_bad"), event(status="report_good")
    bad["cost_micros"] = 2000  # a report never charges, whatever was sent
    assert h.usage([ok, bad, good]) == {"accepted": 3, "duplicates": 0}
    assert h.usage([bad, good]) == {"accepted": 0, "duplicates": 2}
    s = h.summary()
    assert (s["events"], s["successes"], s["usage_micros"]) == (3, 1, 2000)
    assert balance(h) == 10_000_000 - 2000
    logged = h.admin("GET", "/admin/v1/usage?key_id=alice-web").get_json()["events"]
    assert sorted(e["status"] for e in logged) == ["report_bad", "report_good", "success"]


def test_unknown_key_is_logged_not_charged(collector_app: AppHarness) -> None:
    h = collector_app
    h.apply(team_config())
    assert h.usage([event("ghost", user_id=None)]) == {"accepted": 1, "duplicates": 0}
    assert stored(h) == 1
    assert balance(h) == 10_000_000


def test_events_from_many_keys_and_agents(collector_app: AppHarness) -> None:
    h = collector_app
    keys = [key_config(f"k{i}", balance="1.00") for i in range(5)]
    h.apply(team_config([user_config("alice", keys)]))
    for i in range(5):
        h.sync(f"a{i}", [{"kind": "balance", "key_id": f"k{i}", "want_micros": 100_000}])
    batch = [event(f"k{i % 5}", agent_id=f"a{i % 3}", cost=1000) for i in range(30)]
    h.usage(batch)
    keys_now = h.summary()["keys"]
    assert all(keys_now[f"k{i}"]["balance_micros"] == 1_000_000 - 6000 for i in range(5))
    # only a0, a1, a2 sent usage, each for its own lease on the key it holds
    assert keys_now["k0"]["leased_micros"] == 100_000 - 2000
    assert keys_now["k3"]["leased_micros"] == 100_000  # held by a3, which sent nothing


def test_text_is_truncated_and_sanitized_not_refused(collector_app: AppHarness) -> None:
    h = collector_app
    h.apply(team_config())
    e = event(url="https://x/" + "a" * 5000, message="\ud800 lone surrogate", error="é" * 300)
    assert h.usage([e])["accepted"] == 1
    row = h.admin("GET", "/admin/v1/usage").get_json()["events"][0]
    assert len(row["url"]) == 2048 and len(row["error"]) == 128
    assert row["message"].endswith("lone surrogate")


@pytest.mark.parametrize(
    ("body", "fragment"),
    [
        ({"agent_id": "a1", "events": "nope"}, "events"),
        ({"events": []}, "agent_id"),
        ({"agent_id": "a1", "events": [{"event_id": "x"}]}, "event_id"),
        ({"agent_id": "a1", "events": [{**event(), "status": "ok"}]}, "status"),
        ({"agent_id": "a1", "events": [{**event(), "cost_micros": -1}]}, "cost_micros"),
        ({"agent_id": "a1", "events": [{**event(), "cost_micros": 1.5}]}, "cost_micros"),
        ({"agent_id": "a1", "events": [{**event(), "ts_ms": "now"}]}, "ts_ms"),
        ({"agent_id": "a1", "events": [{**event(), "key_id": None}]}, "key_id"),
        ({"agent_id": "a1", "events": [{**event(), "url": 5}]}, "url"),
        ({"agent_id": "a1", "events": [event()] * 5001}, "at most 5000"),
    ],
)
def test_malformed_batch_stores_nothing(collector_app: AppHarness, body: dict, fragment: str):
    h = collector_app
    h.apply(team_config())
    if isinstance(body.get("events"), list) and len(body["events"]) == 1:
        body["events"] = [event(), *body["events"]]  # a good event first: still all refused
    response = h.agent("POST", "/agent/v1/usage", json=body)
    assert response.status_code == 400
    assert fragment in response.get_json()["message"]
    assert stored(h) == 0


def test_failed_write_commits_nothing_and_retry_counts_once(
    collector_app: AppHarness, monkeypatch: pytest.MonkeyPatch
) -> None:
    """OpenMeter 5118: the event rows and the charge share one transaction, so a failure
    after the insert leaves no claim behind that would make the retry a 'duplicate'."""
    h = collector_app
    h.apply(team_config())
    real_charge = ingest._charge
    calls = {"n": 0}

    def failing_charge(tx, rows):
        calls["n"] += 1
        real_charge(tx, rows)
        raise StoreError("disk full (injected)")

    monkeypatch.setattr(ingest, "_charge", failing_charge)
    batch = [event(cost=2000) for _ in range(20)]
    response = h.agent("POST", "/agent/v1/usage", json={"agent_id": "a1", "events": batch})
    assert response.status_code == 503
    assert response.get_json()["error"] == "store_error"
    assert calls["n"] == 1
    assert stored(h) == 0 and balance(h) == 10_000_000

    monkeypatch.setattr(ingest, "_charge", real_charge)
    assert h.usage(batch) == {"accepted": 20, "duplicates": 0}
    assert balance(h) == 10_000_000 - 40_000


def test_concurrent_same_batches_group_commit(collector_app: AppHarness) -> None:
    """Many threads send overlapping batches at once: each event accepted exactly once."""
    h = collector_app
    h.apply(team_config())
    shared = [event(cost=1000) for _ in range(200)]
    own = [[event(cost=1000) for _ in range(50)] for _ in range(8)]
    results: list[ingest.IngestResult] = []
    errors: list[BaseException] = []
    barrier = threading.Barrier(8)
    writer = h.state.writer

    def send(i: int) -> None:
        try:
            rows = ingest.parse_batch({"agent_id": "a1", "events": shared + own[i]})[1]
            barrier.wait()
            results.append(writer.submit(rows))
        except BaseException as exc:
            errors.append(exc)
        finally:
            h.db.close()

    threads = [threading.Thread(target=send, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not errors
    assert sum(r.accepted for r in results) == 200 + 8 * 50
    assert sum(r.duplicates for r in results) == 7 * 200
    assert stored(h) == 600
    assert balance(h) == 10_000_000 - 600 * 1000
    assert writer.groups_written <= 8


def test_group_failure_is_isolated_per_batch(
    collector_app: AppHarness, monkeypatch: pytest.MonkeyPatch
) -> None:
    h = collector_app
    h.apply(team_config())
    poison = event(cost=1000)
    real_store = ingest.store_events

    def picky_store(db, rows, *, now_ms):
        if any(r[0] == poison["event_id"] for r in rows):
            raise RuntimeError("this batch breaks the write")
        return real_store(db, rows, now_ms=now_ms)

    monkeypatch.setattr(ingest, "store_events", picky_store)
    good = [event(cost=1000) for _ in range(5)]
    rows_good = ingest.parse_batch({"agent_id": "a1", "events": good})[1]
    rows_bad = ingest.parse_batch({"agent_id": "a1", "events": [poison]})[1]
    results = ingest.write_batches(h.db, [rows_good, rows_bad], now_ms=0)
    assert isinstance(results[1], RuntimeError)
    assert results[0] == ingest.IngestResult(5, 0)
    assert stored(h) == 5
