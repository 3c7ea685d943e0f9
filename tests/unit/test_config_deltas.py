"""Config deltas: the change log, the collector's delta answers and the agent applying them."""

from __future__ import annotations

import json

import pytest

from solverfleet.agent.keystore import SnapshotError, SnapshotPages, apply_delta, parse_snapshot
from solverfleet.collector import configdelta
from tests.support.collector import AppHarness, key_config, team_config, user_config

pytest_plugins = ["tests.support.collector", "tests.support.mariadb"]


def two_keys(**web: object) -> dict:
    keys = [key_config("alice-web", **web), key_config("alice-ci", "5.00")]
    return team_config([user_config("alice", keys), user_config("bob", [])])


def without_ci(prices: dict) -> dict:
    users = [user_config("alice", [key_config("alice-web")]), user_config("bob", [])]
    return team_config(users, prices=prices)


def delta_sync(h: AppHarness, version: int | None) -> dict:
    return h.sync("a1", config_version=version, deltas=True)


def log_rows(h: AppHarness) -> int:
    return h.db.read(lambda tx: int(tx.scalar("SELECT COUNT(*) FROM config_changes")))


def test_a_top_up_ships_only_that_key(collector_app: AppHarness) -> None:
    h = collector_app
    h.apply(two_keys())
    first = delta_sync(h, None)
    assert len(first["config"]["keys"]) == 2 and "delta" not in first  # first sync: snapshot
    assert delta_sync(h, first["config_version"])["config"] is None
    h.admin("POST", "/admin/v1/keys/alice-web/topup", json={"amount": "1.50"})
    answer = delta_sync(h, first["config_version"])
    assert answer["config"] is None
    assert answer["config_version"] == first["config_version"] + 1
    delta = answer["delta"]
    assert [k["id"] for k in delta["keys"]] == ["alice-web"]
    assert delta["keys"][0]["balance_micros"] == 11_500_000
    assert (delta["users"], delta["deleted_keys"], delta["deleted_users"]) == ([], [], [])
    assert "pricing" not in delta


def test_an_old_agent_gets_the_full_snapshot(collector_app: AppHarness) -> None:
    h = collector_app
    h.apply(two_keys())
    version = h.sync("a1")["config_version"]
    h.admin("POST", "/admin/v1/keys/alice-web/topup", json={"amount": "1.00"})
    answer = h.sync("a1", config_version=version)  # no "deltas": an agent from before them
    assert len(answer["config"]["keys"]) == 2 and "delta" not in answer


def test_deleted_keys_users_and_prices_in_a_delta(collector_app: AppHarness) -> None:
    h = collector_app
    h.apply(two_keys())
    version = delta_sync(h, None)["config_version"]
    h.admin("DELETE", "/admin/v1/keys/alice-ci")
    h.apply(without_ci({"turnstile": "0.004", "recaptcha-v2": "0.003"}))
    h.admin("POST", "/admin/v1/users/bob/deactivate")
    delta = delta_sync(h, version)["delta"]
    assert delta["deleted_keys"] == ["alice-ci"]
    assert [(u["id"], u["active"]) for u in delta["users"]] == [("bob", False)]
    assert delta["pricing"]["account_prices"]["acme"]["turnstile"] == 4000
    assert delta["keys"] == []


@pytest.mark.parametrize("behind", ["pruned", "too_many", "newer_than_collector"])
def test_falls_back_to_the_snapshot(
    collector_app: AppHarness, monkeypatch: pytest.MonkeyPatch, behind: str
) -> None:
    h = collector_app
    h.apply(two_keys())
    version = delta_sync(h, None)["config_version"]
    if behind == "pruned":
        monkeypatch.setattr(configdelta, "KEEP_VERSIONS", 2)
        monkeypatch.setattr(configdelta, "PRUNE_EVERY", 1)
        for _ in range(4):
            h.admin("POST", "/admin/v1/keys/alice-web/topup", json={"amount": "1.00"})
        assert log_rows(h) == 2  # bounded: only the last KEEP_VERSIONS versions
    elif behind == "too_many":
        monkeypatch.setattr(configdelta, "MAX_DELTA", 1)
        h.admin("POST", "/admin/v1/keys/alice-web/topup", json={"amount": "1.00"})
        h.admin("POST", "/admin/v1/keys/alice-ci/topup", json={"amount": "1.00"})
    else:
        version += 5  # the collector's database was restored from an older backup
    answer = delta_sync(h, version)
    assert len(answer["config"]["keys"]) == 2 and "delta" not in answer
    if behind == "pruned":  # one still inside the log gets a delta
        recent = delta_sync(h, answer["config_version"] - 1)
        assert recent["config"] is None and len(recent["delta"]["keys"]) == 1


def test_a_change_too_big_to_log_is_not_logged(
    collector_app: AppHarness, monkeypatch: pytest.MonkeyPatch
) -> None:
    h = collector_app
    monkeypatch.setattr(configdelta, "MAX_DELTA", 2)
    h.apply(two_keys())  # two keys, two users: four changes
    assert log_rows(h) == 0
    version = delta_sync(h, None)["config_version"]
    assert delta_sync(h, version - 1)["config"] is not None


def test_an_agent_following_deltas_holds_what_a_snapshot_holds(
    collector_app: AppHarness,
) -> None:
    """Every kind of change, applied as deltas one sync at a time, gives the same Snapshot as
    a fresh full snapshot after each step."""
    h = collector_app
    h.apply(two_keys())
    first = delta_sync(h, None)
    snap = parse_snapshot(first["config_version"], first["config"])
    steps = [
        lambda: h.admin("POST", "/admin/v1/keys", json={"user_id": "bob", "id": "bob-new"}),
        lambda: h.admin("POST", "/admin/v1/keys/alice-web/topup", json={"amount": "2.00"}),
        lambda: h.admin("PATCH", "/admin/v1/keys/alice-web", json={"cpm": 30}),
        lambda: h.admin("POST", "/admin/v1/keys/alice-ci/deactivate"),
        lambda: h.admin("POST", "/admin/v1/keys/alice-web/rotate", json={"grace_seconds": 60}),
        lambda: h.admin("DELETE", "/admin/v1/keys/alice-ci"),
        lambda: h.admin("POST", "/admin/v1/users/alice/deactivate"),
        lambda: h.admin("POST", "/admin/v1/apply", json=without_ci({"x": "0.1"})),
    ]
    for step in steps:
        assert step().status_code in (200, 201)
        answer = delta_sync(h, snap.version)
        assert answer["config"] is None
        snap = apply_delta(snap, answer["config_version"], answer["delta"])
        full = h.sync("a1", config_version=None)
        assert snap == parse_snapshot(full["config_version"], full["config"])
    assert "alice-ci" not in snap.keys and "bob-new" in snap.keys
    old_hash = parse_snapshot(first["config_version"], first["config"]).keys["alice-web"]
    assert snap.by_hash[old_hash.secret_hash].id == "alice-web"  # rotated out, in grace


def test_a_malformed_delta_leaves_the_snapshot_alone(collector_app: AppHarness) -> None:
    h = collector_app
    h.apply(two_keys())
    first = delta_sync(h, None)
    snap = parse_snapshot(first["config_version"], first["config"])
    with pytest.raises(SnapshotError):
        apply_delta(snap, snap.version + 1, {"keys": [{"id": "x"}]})
    assert set(snap.keys) == {"alice-web", "alice-ci"}


def test_keys_share_their_repeated_strings() -> None:
    raw = [
        {"id": f"k{i}", "secret_hash": f"{i:064x}", "user_id": "alice", "account": "acme",
         "project": "web", "environment": "prod"}
        for i in range(2)
    ]  # fmt: skip
    one, two = parse_snapshot(1, json.loads(json.dumps({"keys": raw}))).keys.values()
    for field in ("user_id", "account", "project", "environment"):
        assert getattr(one, field) is getattr(two, field)  # one object, not one per key


def test_a_snapshot_comes_in_pages(
    collector_app: AppHarness, monkeypatch: pytest.MonkeyPatch
) -> None:
    h = collector_app
    monkeypatch.setattr(configdelta, "PAGE_KEYS", 1)
    h.apply(two_keys())
    old_agent = h.sync("a1", config_version=None)  # no "deltas": one body, as before
    assert len(old_agent["config"]["keys"]) == 2 and "keys_after" not in old_agent
    first = delta_sync(h, None)
    assert [k["id"] for k in first["config"]["keys"]] == ["alice-ci"]
    pages = SnapshotPages(first["config_version"], first["config"], first["keys_after"])
    h.admin("POST", "/admin/v1/keys/alice-web/topup", json={"amount": "1.00"})  # meanwhile
    answer = h.sync("a1", config_version=None, deltas=True, snapshot_after=pages.after)
    assert answer["config"] is None and "delta" not in answer
    snap = pages.add(answer["snapshot_page"])
    assert snap is not None and snap.version == first["config_version"]  # the first page's
    assert snap.keys["alice-web"].balance_micros == 11_000_000  # read at its page
    delta = delta_sync(h, snap.version)["delta"]  # what changed meanwhile comes again
    assert [k["id"] for k in delta["keys"]] == ["alice-web"]


def test_snapshot_pages_must_advance() -> None:
    key = {"id": "k1", "secret_hash": "ab" * 32, "user_id": "u"}
    pages = SnapshotPages(3, {"keys": [key]}, "k1")
    with pytest.raises(SnapshotError):
        pages.add({"keys": [], "keys_after": "k1"})


def test_pingback_changes_ship_the_pingback_section(collector_app: AppHarness) -> None:
    h = collector_app
    h.apply(two_keys())
    version = delta_sync(h, None)["config_version"]

    def change(action: str, url: str | None = None, owner: str = "u:alice"):
        body = {"agent_id": "a1", "owner": owner, "action": action, "url": url}
        return h.agent("POST", "/agent/v1/pingbacks", json=body)

    assert change("add", "https://a.test/cb").get_json() == {"urls": ["https://a.test/cb"]}
    answer = delta_sync(h, version)
    assert answer["delta"]["pingbacks"] == {"u:alice": ["https://a.test/cb"]}
    assert answer["delta"]["keys"] == [] and "pricing" not in answer["delta"]
    version = answer["config_version"]
    assert change("add", "https://a.test/cb").status_code == 200  # again: no new version
    assert delta_sync(h, version)["config"] is None and "delta" not in delta_sync(h, version)
    for n in range(19):
        assert change("add", f"https://a.test/{n}").status_code == 200
    full = change("add", "https://a.test/21st")
    assert full.status_code == 409 and full.get_json()["error"] == "too_many_pingbacks"
    assert change("add", "https://b.test/", owner="a:other").status_code == 200  # per owner
    for bad in ({"action": "add", "url": "ftp://x/"}, {"action": "add"}, {"action": "nope"},
                {"action": "del_all", "owner": "alice"}):  # fmt: skip
        body = {"agent_id": "a1", "owner": "u:alice", **bad}
        assert h.agent("POST", "/agent/v1/pingbacks", json=body).status_code == 400
    assert change("del", "https://a.test/cb").get_json()["urls"][0] == "https://a.test/0"
    assert change("del_all").get_json() == {"urls": []}
    snapshot = h.sync("a1")["config"]  # an agent without deltas: the snapshot has them
    assert snapshot["pingbacks"] == {"a:other": ["https://b.test/"]}


def test_a_changes_delta_is_built_once_for_every_agent(
    collector_app: AppHarness, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Agents at the same version get one delta, read and built once (configdelta.DeltaCache);
    an agent at another version gets its own."""
    h = collector_app
    h.apply(two_keys())
    version = delta_sync(h, None)["config_version"]
    built = []
    real = configdelta._delta
    monkeypatch.setattr(configdelta, "_delta", lambda tx, ch: built.append(ch) or real(tx, ch))
    h.admin("POST", "/admin/v1/keys/alice-web/topup", json={"amount": "2.00"})
    answers = [h.sync(agent, config_version=version, deltas=True) for agent in ("a1", "a2", "a3")]
    assert len(built) == 1 and answers[0]["delta"] == answers[2]["delta"]
    assert [k["id"] for k in answers[1]["delta"]["keys"]] == ["alice-web"]
    h.admin("POST", "/admin/v1/keys/alice-ci/topup", json={"amount": "1.00"})
    newer = h.sync("a1", config_version=answers[0]["config_version"], deltas=True)["delta"]
    older = h.sync("a2", config_version=version, deltas=True)["delta"]
    assert len(built) == 3
    assert [k["id"] for k in newer["keys"]] == ["alice-ci"]
    assert sorted(k["id"] for k in older["keys"]) == ["alice-ci", "alice-web"]
